//! The mirror.
