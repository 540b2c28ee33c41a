//! `celeriac-worker`: parse the configuration (exit 64 when invalid), install
//! telemetry, build the App and run it until SIGTERM/SIGINT (warm shutdown);
//! a second signal forces a cold shutdown.

use std::process::ExitCode;

use anyhow::Context;
use celeriac_worker::app::{App, Shutdown};
use celeriac_worker::config::{Cli, Config};
use celeriac_worker::routing::Routing;
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};

/// mimalloc: the per-task path allocates many small JSON values; glibc's
/// malloc/free were ~15 % of the worker's CPU at full load (bench/RESULTS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// EX_USAGE: the configuration is invalid.
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let mut config = match Config::resolve(Cli::parse(), &|k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => return config_error(&e),
    };
    // Airflow task processes get the worker's AIRFLOW_* settings.
    config.airflow_settings = config
        .airflow_settings
        .map(|a| a.with_process_env(std::env::vars()));
    let routing = match config.config_file.as_deref().map(Routing::load).transpose() {
        Ok(r) => r.unwrap_or_default(),
        Err(e) => return config_error(&e),
    };
    let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    celeriac_worker::telemetry::init(&config.loglevel, json);
    // One thread: the worker only waits on I/O (tasks run in their own
    // processes or containers), and a single thread spares the cross-thread
    // wake-ups that cost more than the work itself at thousands of tasks/s
    // (bench/RESULTS.md: ~40 % less CPU per task than the multi-thread
    // runtime, and faster).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("celeriac-worker: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, routing)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn config_error(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("celeriac-worker: {e}");
    ExitCode::from(EXIT_CONFIG)
}

async fn run(config: Config, routing: Routing) -> anyhow::Result<()> {
    let app = App::build(config, routing).await?;
    tracing::info!(admin = %app.admin_addr()?, "admin server listening");
    let shutdown = Shutdown::default();
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let signals = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::warn!("signal received: warm shutdown (send it again for a cold shutdown)");
        signals.warm.cancel();
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::warn!("second signal: cold shutdown");
        signals.cold.cancel();
    });
    app.run(shutdown).await
}
