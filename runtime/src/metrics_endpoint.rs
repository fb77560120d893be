//! `GET /metrics` as every role serves it: on a port of its own, out of the
//! visitors' reach (a broker's visitors' port does not answer it).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::Router;
use axum::http::header;
use axum::routing::get;

use crate::metrics::Metrics;
use crate::queue::Store;

/// A router answering `GET /metrics` with `metrics` in Prometheus text, the
/// count of commands `store` sent included.
pub fn router(store: Arc<dyn Store>, metrics: Arc<Metrics>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            metrics.store_commands.store(store.commands_sent(), Relaxed);
            let text = metrics.render();
            async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text) }
        }),
    )
}
