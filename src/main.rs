//! The `esgate` binary: configuration, logging, the gateway, signals.

use std::process::ExitCode;

use esgate::config::{Config, LoadError, LogFormat};
use esgate::Gateway;

/// Exit code for an invalid configuration.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let (cli, config) = match Config::load() {
        Ok(loaded) => loaded,
        Err(LoadError::Usage(e)) => {
            // clap prints help and version to stdout with success, usage errors to stderr.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::SUCCESS
            };
        }
        Err(LoadError::Invalid(e)) => {
            eprintln!("esgate: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if cli.check_config {
        println!("esgate: configuration is valid\n{config:#?}");
        return ExitCode::SUCCESS;
    }
    init_tracing(&config);

    let gateway = match Gateway::start(config) {
        Ok(gateway) => gateway,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    wait_for_signal(&gateway);
    tracing::info!("shutting down");
    gateway.shutdown();
    ExitCode::SUCCESS
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Text => builder.with_ansi(false).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Blocks until SIGTERM or SIGINT; SIGHUP reopens the audit file.
fn wait_for_signal(gateway: &Gateway) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot wait for signals");
            return;
        }
    };
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => return tracing::info!(signal = "SIGTERM", "signal received"),
                _ = int.recv() => return tracing::info!(signal = "SIGINT", "signal received"),
                _ = hup.recv() => {
                    tracing::info!(signal = "SIGHUP", "signal received");
                    gateway.reopen_audit();
                }
            }
        }
    });
}
