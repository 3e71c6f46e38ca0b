//! Barrage subscriptions (temporary placeholder while the codec lands).
pub mod error {
    /// placeholder
    #[derive(Debug, thiserror::Error)]
    #[error("barrage error: {0}")]
    pub struct BarrageError(pub String);
}
