//! The `esgate` binary: configuration, logging, the gateway, signals.

use std::path::PathBuf;
use std::process::ExitCode;

use esgate::config::{Config, LoadError, LogFormat};
use esgate::Gateway;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// Exit code for an invalid configuration.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "verify") {
        args.remove(1);
        return verify(args);
    }
    let (cli, config) = match load(args) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    if cli.check_config {
        println!("esgate: configuration is valid\n{config:#?}");
        return ExitCode::SUCCESS;
    }
    init_tracing(&config);
    // Before the gateway starts (and says so): a SIGHUP right after the start-up line must
    // reload, not end the process with the signal's default action.
    let signals = match Signals::install() {
        Ok(signals) => signals,
        Err(e) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    };

    let gateway = match Gateway::start(config) {
        Ok(gateway) => gateway,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    let loaded = cli.config_text.clone().map(String::into_bytes);
    signals.wait(&gateway, cli.config.clone(), loaded);
    tracing::info!("shutting down");
    gateway.shutdown();
    ExitCode::SUCCESS
}

/// The configuration from `args` and the environment, or the exit code after saying why not.
fn load(args: Vec<std::ffi::OsString>) -> Result<(esgate::config::Cli, Config), ExitCode> {
    match Config::load_from(args) {
        Ok(loaded) => Ok(loaded),
        Err(LoadError::Usage(e)) => {
            // clap prints help and version to stdout with success, usage errors to stderr.
            let _ = e.print();
            Err(if e.use_stderr() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::SUCCESS
            })
        }
        Err(LoadError::Invalid(e)) => {
            eprintln!("esgate: {e}");
            Err(ExitCode::from(EXIT_CONFIG))
        }
    }
}

/// `esgate verify [--json] [settings]`: sends the verification suite to every configured node
/// (see `esgate::verify`); exit code 0 only when every call matched.
fn verify(mut args: Vec<std::ffi::OsString>) -> ExitCode {
    let before = args.len();
    args.retain(|a| a != "--json");
    let json = args.len() != before;
    let (_, config) = match load(args) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("esgate verify: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Paced: a few calls a second at most to each node.
    let report = runtime.block_on(esgate::verify::run(&config, std::time::Duration::from_millis(100)));
    if json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
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

/// SIGTERM, SIGINT and SIGHUP, caught from start-up on.
struct Signals {
    rt: tokio::runtime::Runtime,
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let _entered = rt.enter();
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            rt,
        })
    }

    /// Blocks until SIGTERM or SIGINT. SIGHUP reloads the configuration and reopens the audit
    /// file; the configuration file is also checked every `server.reload_interval` and reloaded
    /// when its content changed (a Kubernetes ConfigMap update swaps a symlink, which file
    /// watchers miss).
    /// `loaded`: the file's content the running configuration came from.
    fn wait(self, gateway: &Gateway, file: Option<PathBuf>, loaded: Option<Vec<u8>>) {
        let Signals {
            rt,
            mut term,
            mut int,
            mut hup,
        } = self;
        rt.block_on(async {
            // Compared with what was loaded, not with a read after start-up: a change between
            // the two would otherwise go unnoticed.
            let mut seen = loaded;
            let read = || file.as_deref().and_then(|f| std::fs::read(f).ok());
            loop {
                let interval = gateway.config().server.reload_interval;
                let check = async {
                    match (interval, &file) {
                        (Some(interval), Some(_)) => tokio::time::sleep(interval).await,
                        _ => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = term.recv() => return tracing::info!(signal = "SIGTERM", "signal received"),
                    _ = int.recv() => return tracing::info!(signal = "SIGINT", "signal received"),
                    _ = hup.recv() => {
                        tracing::info!(signal = "SIGHUP", "signal received");
                        gateway.reopen_audit();
                        let now = read();
                        seen = reload(gateway, "SIGHUP").or(now);
                    }
                    () = check => {
                        let now = read();
                        if now.is_some() && now != seen {
                            // A refused file is not tried again until it changes.
                            seen = reload(gateway, "the configuration file changed").or(now);
                        }
                    }
                }
            }
        });
    }
}

/// Loads the configuration again (same flags and environment, the file as it is now) and swaps
/// it in; an invalid one is refused and the running one stays. Returns the file's content that
/// was swapped in.
fn reload(gateway: &Gateway, why: &str) -> Option<Vec<u8>> {
    match Config::load() {
        Ok((cli, config)) => {
            let ignored = gateway.reload(config);
            if !ignored.is_empty() {
                tracing::warn!(keys = %ignored.join(","), "these settings cannot change while running; they apply after a restart");
            }
            tracing::info!(trigger = why, "configuration reloaded");
            cli.config_text.map(String::into_bytes)
        }
        Err(LoadError::Invalid(e)) => {
            tracing::error!(trigger = why, key = e.key(), error = %e, "configuration reload refused; the running configuration stays");
            None
        }
        Err(LoadError::Usage(e)) => {
            tracing::error!(trigger = why, error = %e, "configuration reload refused; the running configuration stays");
            None
        }
    }
}
