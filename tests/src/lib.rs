//! Shared helpers for celeriac integration tests.
