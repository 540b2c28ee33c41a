//! The tracing subscriber, installed once by `main`. `LOG_FORMAT=json` for
//! log shippers, text otherwise; the level comes from `--loglevel` (or `RUST_LOG`).

use tracing_subscriber::EnvFilter;

pub fn init(loglevel: &str, json: bool) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(loglevel.to_ascii_lowercase()))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}
