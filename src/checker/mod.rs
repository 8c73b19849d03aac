//! Repository verification (issue 5).
