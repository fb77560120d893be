//! Usher's Kubernetes operator: one `WaitingRoom` per sale event.

pub mod children;
pub mod controller;
pub mod crd;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod registry;
pub mod rules;
pub mod scaling;
pub mod status;
