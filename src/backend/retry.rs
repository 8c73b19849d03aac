//! Retries with exponential backoff and jitter around any backend.
