//! Usher's Kubernetes operator: one `WaitingRoom` per sale event.

pub mod children;
pub mod crd;
pub mod scaling;
pub mod status;
