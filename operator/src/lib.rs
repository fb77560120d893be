//! Usher's Kubernetes operator: one `WaitingRoom` per sale event.

pub mod crd;
