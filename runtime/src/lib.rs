//! Usher's runtime: the queue engine and the processes built on it.

pub mod queue;
#[doc(hidden)]
pub mod testing;
