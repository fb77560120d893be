//! The operator's errors.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("invalid WaitingRoom: {0}")]
    InvalidSpec(String),
    #[error("Redis: {0}")]
    Redis(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Finalizer(_) => "finalizer",
            Error::InvalidSpec(_) => "invalid_spec",
            Error::Redis(_) => "redis",
        }
    }
}
