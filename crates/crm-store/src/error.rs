//! The one error type of the store.

/// What went wrong in the CRM store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL: use sqlite:PATH or postgres://...")]
    UnsupportedUrl,
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("journal I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("the event writer is closed")]
    WriterClosed,
}

/// Result of the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
