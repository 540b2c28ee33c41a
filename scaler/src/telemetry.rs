//! The tracing subscriber (installed by `main` only).

use tracing_subscriber::EnvFilter;

/// `level`: a level or a full filter; `json`: one JSON object per line.
pub fn init(level: &str, json: bool) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
