//! Fresh names so tests never share a queue, key, vhost or database.

/// `<prefix>-<12 random hex digits>`.
pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..12])
}

/// A fresh Redis `global_keyprefix` (kombu convention: ends with `:`).
pub fn key_prefix() -> String {
    format!("{}:", unique("celeriac-test"))
}

/// A fresh task id in Celery's format (UUID4 text).
pub fn task_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
