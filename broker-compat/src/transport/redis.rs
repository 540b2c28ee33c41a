//! Redis transport, kombu layout (spec §2).
