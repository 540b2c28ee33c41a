//! `celeriac-scaler`: parse the configuration (exit 64 when invalid), install
//! telemetry, then run one tick (`--once`, one JSON line on stdout) or the
//! control loop until SIGTERM/SIGINT.

use std::process::ExitCode;

use anyhow::Context;
use celeriac_scaler::app::App;
use celeriac_scaler::config::{Cli, Config};
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// EX_USAGE: the configuration is invalid.
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print(); // --help, --version
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let config = match Config::resolve(cli, &|k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("celeriac-scaler: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    celeriac_scaler::telemetry::init(&config.loglevel, json);
    let result = tokio::runtime::Runtime::new()
        .context("starting the async runtime")
        .and_then(|rt| rt.block_on(run(config)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let once = config.once;
    let app = App::build(config)?;
    if once {
        let report = app.once().await?;
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let shutdown = CancellationToken::new();
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let stop = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::info!("signal received: stopping");
        stop.cancel();
    });
    app.run(shutdown).await
}
