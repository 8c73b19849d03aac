//! Fault injection for tests.
