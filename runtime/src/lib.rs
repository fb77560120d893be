//! Usher's runtime: the queue engine and the processes built on it.

pub mod auth;
pub mod broker;
pub mod clock;
pub mod config;
pub mod demo;
pub mod digest;
pub mod dispatcher;
pub mod metrics;
pub mod metrics_endpoint;
pub mod pow;
pub mod queue;
pub mod rules;
pub mod serve;
pub mod supervisor;
#[doc(hidden)]
pub mod testing;
pub mod tokens;
