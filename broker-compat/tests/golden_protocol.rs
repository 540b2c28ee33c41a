//! Golden tests: every Celery/kombu wire capture in `tests/fixtures` decodes,
//! and what we encode again is byte-for-byte what Celery wrote.

#[path = "golden/fixtures.rs"]
mod fixtures;
#[path = "golden/envelopes.rs"]
mod envelopes;
