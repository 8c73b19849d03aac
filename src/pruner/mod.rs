//! Retention and garbage collection (issue 4).
