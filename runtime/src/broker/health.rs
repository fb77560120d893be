//! Whether a broker can serve its room, for `/readyz`.

use axum::http::StatusCode;

use super::Broker;
use super::error::ApiError;

impl Broker {
    /// Ready when Redis answers, the room has rules (written again here if
    /// Redis lost them), and the line is loaded. Otherwise the 503 to answer.
    pub(super) async fn readiness(&self) -> Result<(), ApiError> {
        self.rules.ensure().await?;
        if !self.fanout.is_synced() {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the line is not loaded yet",
            ));
        }
        Ok(())
    }
}
