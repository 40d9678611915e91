//! Configuration: command-line flags, `ESGATE_*` environment variables and a TOML file.
//!
//! Every setting is declared once, in [`SETTINGS`]: its key in the file, its flag, its environment
//! variable, its value name, its default and its help. That table makes the command line
//! ([`Cli::command`]), says where each value is looked up, and gives the default, written as a user
//! writes a value and parsed like one. A value is taken from the first of flag, environment, file
//! and default that has one. Values are parsed and checked once, at start-up, into [`Config`]; an
//! invalid one stops start-up with a [`ConfigError`] that names the key and where the value came
//! from.
//!
//! esgate reads the environment itself, through a function ([`Config::load_with`]): the process's
//! for the binary, any other for a test, which then does not depend on the shell it runs in.

use std::cell::RefCell;
use std::env::VarError;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{value_parser, Arg, ArgAction, ArgMatches, Command};

use crate::elasticsearch::{Dialect, DialectSet, Knowledge, Version};
use crate::tls::{ClientSettings, ClientTls, ServerTls};

/// The environment variable of `--config`.
const CONFIG_ENV: &str = "ESGATE_CONFIG";

/// What the command line says besides the settings: which file, and whether only to check.
#[derive(Debug, Default)]
pub struct Cli {
    /// `--config FILE` (or `ESGATE_CONFIG`): the TOML configuration file (see config/esgate.toml).
    pub config: Option<PathBuf>,
    /// `--check-config`: validate the configuration, print a summary and exit.
    pub check_config: bool,
    /// The configuration file's content as it was loaded (not a flag): a reload compares the file
    /// with what is running, not with a later read of it.
    pub config_text: Option<String>,
}

impl Cli {
    /// The command line: `--config`, `--check-config`, `--help`, `--version` and one flag per
    /// entry of [`SETTINGS`]. Every value is read as text and parsed by [`Config`], so that one
    /// error message format covers flags, environment variables and the file alike.
    pub fn command() -> Command {
        let command = Command::new("esgate")
            .version(env!("CARGO_PKG_VERSION"))
            .about("A streaming reverse proxy for Elasticsearch")
            .arg(
                Arg::new("config")
                    .long("config")
                    .value_name("FILE")
                    .value_parser(value_parser!(PathBuf))
                    .help(format!("TOML configuration file (see config/esgate.toml) [env: {CONFIG_ENV}]")),
            )
            .arg(
                Arg::new("check_config")
                    .long("check-config")
                    .action(ArgAction::SetTrue)
                    .help("Validate the configuration, print a summary and exit"),
            );
        SETTINGS.iter().fold(command, |command, setting| command.arg(setting.arg()))
    }
}

/// One setting: its names, its value's shape, its default and its help.
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    /// Dotted key in the TOML file.
    pub key: &'static str,
    /// Command-line flag.
    pub flag: &'static str,
    /// Environment variable.
    pub env: &'static str,
    /// The value's placeholder in `--help` (`ADDR`, `DURATION`, `BOOL`).
    pub value_name: &'static str,
    /// How the flag takes its value.
    pub kind: Kind,
    /// The value when none is given.
    pub default: Builtin,
    /// One line for `--help`.
    pub help: &'static str,
}

/// How a setting's flag takes its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `--flag VALUE`, at most once.
    Single,
    /// `--flag [BOOL]`: a bare flag means `true`.
    Switch,
    /// `--flag URL`, repeatable, each also a comma-separated list (as is the environment variable).
    List,
}

/// A setting's value when none is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Builtin {
    /// This text, parsed the way a user's value is parsed.
    Value(&'static str),
    /// No value; the text says what that means (`off`, `none`, `system roots`).
    Unset(&'static str),
}

impl Setting {
    /// The default as a user writes it, if there is one.
    pub fn default_text(&self) -> Option<&'static str> {
        match self.default {
            Builtin::Value(text) => Some(text),
            Builtin::Unset(_) => None,
        }
    }

    fn arg(&self) -> Arg {
        let mut help = format!("{} [{}] [env: {}]", self.help, self.key, self.env);
        if let Some(default) = self.default_text() {
            help.push_str(&format!(" [default: {default}]"));
        }
        let arg = Arg::new(self.key)
            .long(self.flag.trim_start_matches("--"))
            .value_name(self.value_name)
            .help(help);
        match self.kind {
            Kind::Single => arg.action(ArgAction::Set),
            Kind::Switch => arg.action(ArgAction::Set).num_args(0..=1).default_missing_value("true"),
            Kind::List => arg.action(ArgAction::Append).value_delimiter(','),
        }
    }

    /// A value given as text (environment, default): a list is split at commas.
    fn raw(&self, text: &str) -> Raw {
        match self.kind {
            Kind::List => Raw::Toml(toml::Value::Array(
                text.split(',').map(|item| toml::Value::String(item.to_owned())).collect(),
            )),
            Kind::Single | Kind::Switch => Raw::Text(text.to_owned()),
        }
    }
}

/// Declares the settings, one row each:
///
/// ```text
/// NAME = "section.key", default "text" | unset "what that means",
///     "--flag" VALUE | "--flag" [BOOL] | "--flag" VALUE repeatable, "ESGATE_VARIABLE",
///     "One line of --help";
/// ```
///
/// `VALUE` is the value name in `--help`; `[BOOL]` marks a flag whose value may be left out (a
/// bare flag means `true`); `repeatable` a list (the flag repeated or comma-separated, the variable
/// comma-separated).
macro_rules! settings {
    (@name [$name:ident]) => { stringify!($name) };
    (@name $name:ident) => { stringify!($name) };
    (@kind [$name:ident]) => { Kind::Switch };
    (@kind $name:ident repeatable) => { Kind::List };
    (@kind $name:ident) => { Kind::Single };
    (@default default $text:expr) => { Builtin::Value($text) };
    (@default unset $what:expr) => { Builtin::Unset($what) };
    ($($name:ident = $key:literal, $builtin:ident $default:expr,
        $flag:literal $shape:tt $($many:ident)?, $env:literal,
        $help:literal;)*) => {
        $(const $name: Setting = Setting {
            key: $key,
            flag: $flag,
            env: $env,
            value_name: settings!(@name $shape),
            kind: settings!(@kind $shape $($many)?),
            default: settings!(@default $builtin $default),
            help: $help,
        };)*
        /// Every setting, in the order of `config/esgate.toml`.
        pub const SETTINGS: &[Setting] = &[$($name),*];
    };
}

settings! {
    // [server]
    LISTEN = "server.listen", default "127.0.0.1:8080",
        "--listen" ADDR, "ESGATE_LISTEN",
        "Address the gateway listens on";
    ADMIN_LISTEN = "server.admin_listen", unset "off",
        "--admin-listen" ADDR, "ESGATE_ADMIN_LISTEN",
        "Address of the admin listener; unset means none";
    WORKERS = "server.workers", default "0",
        "--workers" N, "ESGATE_WORKERS",
        "Runtime threads, one per core when 0";
    HEADER_READ_TIMEOUT = "server.header_read_timeout", default "30s",
        "--header-read-timeout" DURATION, "ESGATE_HEADER_READ_TIMEOUT",
        "Time a client has to send a request's headers";
    BODY_READ_TIMEOUT = "server.body_read_timeout", default "30s",
        "--body-read-timeout" DURATION, "ESGATE_BODY_READ_TIMEOUT",
        "Time a buffered request body may go without a byte before it is answered 408";
    MAX_CONNECTIONS = "server.max_connections", default "0",
        "--max-connections" N, "ESGATE_MAX_CONNECTIONS",
        "Client connections served at once; 0 derives it from the descriptor limit";
    LISTEN_BACKLOG = "server.listen_backlog", default "1024",
        "--listen-backlog" N, "ESGATE_LISTEN_BACKLOG",
        "Connections the kernel queues while esgate is at its limit";
    MAX_HEADER_SIZE = "server.max_header_size", default "64KiB",
        "--max-header-size" BYTES, "ESGATE_MAX_HEADER_SIZE",
        "Largest request head (request line and headers) accepted";
    SHUTDOWN_GRACE = "server.shutdown_grace", default "30s",
        "--shutdown-grace" DURATION, "ESGATE_SHUTDOWN_GRACE",
        "Time in-flight requests get to finish after SIGTERM/SIGINT";
    FORWARDED_HEADERS = "server.forwarded_headers", default "false",
        "--forwarded-headers" [BOOL], "ESGATE_FORWARDED_HEADERS",
        "Append X-Forwarded-For and X-Forwarded-Proto";
    TLS_CERT = "server.tls_cert_file", unset "off",
        "--tls-cert-file" FILE, "ESGATE_TLS_CERT_FILE",
        "PEM certificate chain of the listener; with the key, clients speak HTTPS";
    TLS_KEY = "server.tls_key_file", unset "off",
        "--tls-key-file" FILE, "ESGATE_TLS_KEY_FILE",
        "PEM private key of the listener's certificate";
    RELOAD_INTERVAL = "server.reload_interval", default "10s",
        "--reload-interval" DURATION, "ESGATE_RELOAD_INTERVAL",
        "How often the configuration file is checked for changes; 0: only on SIGHUP";

    // [upstream]
    NODES = "upstream.nodes", default "http://127.0.0.1:9200",
        "--upstream" URL repeatable, "ESGATE_UPSTREAM",
        "Elasticsearch node URL; repeat the flag or separate with commas";
    DEV = "upstream.dev", default "false",
        "--dev" [BOOL], "ESGATE_DEV",
        "Serve the built-in development upstream instead of real nodes";
    DEV_VERSION = "upstream.dev_version", default crate::dev::DEFAULT_VERSION,
        "--dev-version" VERSION, "ESGATE_DEV_VERSION",
        "The Elasticsearch version the development upstream reports in GET /";
    CONNECT_TIMEOUT = "upstream.connect_timeout", default "5s",
        "--connect-timeout" DURATION, "ESGATE_CONNECT_TIMEOUT",
        "Time to open a TCP connection to a node";
    // Off by default: a 504 from esgate is retried by the official clients, so esgate's own
    // timeout must not decide where the client's would not (see `upstream::timed`).
    RESPONSE_TIMEOUT = "upstream.response_timeout", default "0",
        "--response-timeout" DURATION, "ESGATE_RESPONSE_TIMEOUT",
        "Time a node has to start its answer to a GET, HEAD or OPTIONS (504 after); 0, the default, disables";
    POOL_IDLE_TIMEOUT = "upstream.pool_idle_timeout", default "50s",
        "--pool-idle-timeout" DURATION, "ESGATE_POOL_IDLE_TIMEOUT",
        "An idle upstream connection older than this is closed, not reused";
    POOL_MAX_IDLE = "upstream.pool_max_idle_per_node", default "32",
        "--pool-max-idle-per-node" N, "ESGATE_POOL_MAX_IDLE_PER_NODE",
        "Idle upstream connections kept per node and thread";
    DEAD_BACKOFF = "upstream.dead_node_backoff", default "1s",
        "--dead-node-backoff" DURATION, "ESGATE_DEAD_NODE_BACKOFF",
        "First retry delay for a node that refused a connection";
    MAX_DEAD_BACKOFF = "upstream.max_dead_node_backoff", default "30s",
        "--max-dead-node-backoff" DURATION, "ESGATE_MAX_DEAD_NODE_BACKOFF",
        "Longest retry delay for a dead node";
    REWRITE_HOST = "upstream.rewrite_host", default "false",
        "--rewrite-host" [BOOL], "ESGATE_REWRITE_HOST",
        "Send the node's own host:port as Host instead of the client's";
    CA_FILE = "upstream.ca_file", unset "system roots",
        "--upstream-ca-file" FILE, "ESGATE_UPSTREAM_CA_FILE",
        "PEM bundle of the CAs trusted for https:// nodes, instead of the system's";
    CLIENT_CERT = "upstream.client_cert_file", unset "none",
        "--upstream-client-cert-file" FILE, "ESGATE_UPSTREAM_CLIENT_CERT_FILE",
        "PEM client certificate presented to https:// nodes (mTLS)";
    CLIENT_KEY = "upstream.client_key_file", unset "none",
        "--upstream-client-key-file" FILE, "ESGATE_UPSTREAM_CLIENT_KEY_FILE",
        "PEM private key of the client certificate";
    TLS_INSECURE = "upstream.tls_insecure", default "false",
        "--upstream-tls-insecure" [BOOL], "ESGATE_UPSTREAM_TLS_INSECURE",
        "Accept any certificate from https:// nodes; for development only";
    HEALTH_CHECK_INTERVAL = "upstream.health_check_interval", default "5s",
        "--health-check-interval" DURATION, "ESGATE_HEALTH_CHECK_INTERVAL",
        "How often the admin listener's readiness probes each node";
    VERSION_CHECK_INTERVAL = "upstream.version_check_interval", default "60s",
        "--version-check-interval" DURATION, "ESGATE_VERSION_CHECK_INTERVAL",
        "How often each node's Elasticsearch version is asked again; 0: at start-up and when a node comes back only";
    UPSTREAM_USER = "upstream.username", unset "none",
        "--upstream-username" NAME, "ESGATE_UPSTREAM_USERNAME",
        "User name of esgate's own requests to the nodes (version and health probes), with the password";
    UPSTREAM_PASSWORD = "upstream.password", unset "none",
        "--upstream-password" PASSWORD, "ESGATE_UPSTREAM_PASSWORD",
        "Password of esgate's own requests to the nodes";
    UPSTREAM_API_KEY = "upstream.api_key", unset "none",
        "--upstream-api-key" KEY, "ESGATE_UPSTREAM_API_KEY",
        "API key (base64 `id:key`) of esgate's own requests to the nodes, instead of a user";
    PRESERVE_CASE = "upstream.preserve_header_case", default "false",
        "--preserve-header-case" [BOOL], "ESGATE_PRESERVE_HEADER_CASE",
        "Keep the letter case of header names on the wire";

    // [connector_error]
    // Elasticsearch's own default `http.max_content_length`: esgate refuses no body Elasticsearch
    // would take.
    MAX_ERROR_BODY = "connector_error.max_body_size", default "100MiB",
        "--max-error-body-size" BYTES, "ESGATE_MAX_ERROR_BODY_SIZE",
        "Largest Update-connector-error body read, after decompression; larger gets 413";
    MAX_BUFFERED = "connector_error.max_buffered_bytes", default "48MiB",
        "--max-buffered-bytes" BYTES, "ESGATE_MAX_BUFFERED_BYTES",
        "Bytes of all intercepted bodies held at once; beyond it a call gets 429";
    CHECK_AUTH = "connector_error.check_auth", default "false",
        "--check-auth" [BOOL], "ESGATE_CHECK_AUTH",
        "Ask the upstream who the caller is before a local rejection";
    AUTH_CACHE_TTL = "connector_error.auth_cache_ttl", default "30s",
        "--auth-cache-ttl" DURATION, "ESGATE_AUTH_CACHE_TTL",
        "How long a credential check is remembered";
    REPORT_ONLY = "connector_error.report_only", default "false",
        "--report-only" [BOOL], "ESGATE_REPORT_ONLY",
        "Validate and audit Update-connector-error calls but forward every one";
    ES_VERSION = "connector_error.es_version", unset "learned from each node",
        "--es-version" VERSION, "ESGATE_ES_VERSION",
        "The Elasticsearch version every node runs (or `serverless`); unset: learned from each node";
    CANARY_RATE = "connector_error.canary_rate", default "0",
        "--canary-rate" FRACTION, "ESGATE_CANARY_RATE",
        "Fraction of local rejections also sent to a node (random connector id) to compare answers";

    // [audit]
    AUDIT_STDOUT = "audit.stdout", default "false",
        "--audit-stdout" [BOOL], "ESGATE_AUDIT_STDOUT",
        "Write audit events to stdout, one JSON line each";
    AUDIT_FILE = "audit.file", unset "off",
        "--audit-file" FILE, "ESGATE_AUDIT_FILE",
        "Append audit events to this file; reopened on SIGHUP";
    AUDIT_ALL = "audit.all_requests", default "false",
        "--audit-all-requests" [BOOL], "ESGATE_AUDIT_ALL_REQUESTS",
        "Audit every request, not only Update-connector-error calls (access-log mode)";
    AUDIT_QUEUE = "audit.queue_size", default "8192",
        "--audit-queue-size" N, "ESGATE_AUDIT_QUEUE_SIZE",
        "Audit events waiting to be written; beyond it they are dropped and counted";
    AUDIT_MAX_ERROR = "audit.max_error_length", default "1024",
        "--audit-max-error-length" BYTES, "ESGATE_AUDIT_MAX_ERROR_LENGTH",
        "Longest connector error text kept in an audit event, in bytes";
    AUDIT_MAX_INSPECTED = "audit.max_inspected_body", default "64KiB",
        "--audit-max-inspected-body" BYTES, "ESGATE_AUDIT_MAX_INSPECTED_BODY",
        "Bytes of a connector or sync-job document write read along for its audit event";
    AUDIT_REDACT = "audit.redact_error_secrets", default "false",
        "--audit-redact-error-secrets" [BOOL], "ESGATE_AUDIT_REDACT_ERROR_SECRETS",
        "Mask passwords, tokens and URL credentials inside audited error texts";
    AUDIT_ES_URL = "audit.elasticsearch_url", unset "off",
        "--audit-elasticsearch-url" URL, "ESGATE_AUDIT_ELASTICSEARCH_URL",
        "Also write audit events to this Elasticsearch with _bulk";
    AUDIT_ES_STREAM = "audit.elasticsearch_data_stream", default "logs-esgate.audit-default",
        "--audit-elasticsearch-data-stream" NAME, "ESGATE_AUDIT_ELASTICSEARCH_DATA_STREAM",
        "Data stream the audit events go to";
    AUDIT_ES_API_KEY = "audit.elasticsearch_api_key", unset "none",
        "--audit-elasticsearch-api-key" KEY, "ESGATE_AUDIT_ELASTICSEARCH_API_KEY",
        "API key (base64 `id:key`, as Elasticsearch issues it) for the audit writes";
    AUDIT_ES_USER = "audit.elasticsearch_username", unset "none",
        "--audit-elasticsearch-username" NAME, "ESGATE_AUDIT_ELASTICSEARCH_USERNAME",
        "User name for the audit writes, with the password";
    AUDIT_ES_PASSWORD = "audit.elasticsearch_password", unset "none",
        "--audit-elasticsearch-password" PASSWORD, "ESGATE_AUDIT_ELASTICSEARCH_PASSWORD",
        "Password for the audit writes";
    AUDIT_ES_BATCH = "audit.elasticsearch_batch_size", default "500",
        "--audit-elasticsearch-batch-size" N, "ESGATE_AUDIT_ELASTICSEARCH_BATCH_SIZE",
        "Most audit events per _bulk request";
    AUDIT_ES_FLUSH = "audit.elasticsearch_flush_interval", default "1s",
        "--audit-elasticsearch-flush-interval" DURATION, "ESGATE_AUDIT_ELASTICSEARCH_FLUSH_INTERVAL",
        "Longest time an audit event waits for its batch";
    AUDIT_ES_BUFFER = "audit.elasticsearch_buffer", default "10000",
        "--audit-elasticsearch-buffer" N, "ESGATE_AUDIT_ELASTICSEARCH_BUFFER",
        "Audit events held while Elasticsearch is slow or down";

    // [log]
    // Without a value given, RUST_LOG comes before this default.
    LOG_LEVEL = "log.level", default "info",
        "--log-level" FILTER, "ESGATE_LOG_LEVEL",
        "Log filter: a level or tracing directives; RUST_LOG is used when none is set";
    LOG_FORMAT = "log.format", default "text",
        "--log-format" FORMAT, "ESGATE_LOG_FORMAT",
        "Log format: text or json";
}

/// The validated configuration of a gateway.
#[derive(Clone, Debug)]
pub struct Config {
    /// Client-facing listener settings.
    pub server: ServerConfig,
    /// Elasticsearch nodes and how esgate talks to them.
    pub upstream: UpstreamConfig,
    /// The checks of the Update connector error API.
    pub connector_error: ConnectorErrorConfig,
    /// The audit trail.
    pub audit: AuditConfig,
    /// Logging.
    pub log: LogConfig,
}

/// Client-facing listener settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// Health endpoints; kept on a separate port so no Elasticsearch path is ever shadowed.
    pub admin_listen: Option<SocketAddr>,
    /// Runtime threads; each runs its own accept loop and connections (0: one per core).
    pub workers: usize,
    /// Slow or stuck clients lose their connection when headers take longer than this.
    pub header_read_timeout: Duration,
    /// Time a buffered request body (the intercepted route's) may go without a byte; then 408.
    /// Zero: no limit.
    pub body_read_timeout: Duration,
    /// Client connections served at once; beyond it esgate stops accepting and the kernel's
    /// backlog holds new clients. Zero: derived from the descriptor limit at start-up.
    pub max_connections: usize,
    /// The listen backlog.
    pub listen_backlog: u32,
    /// Largest request head; larger ones get 431 from the HTTP layer.
    pub max_header_size: usize,
    /// Time in-flight requests get to finish on shutdown.
    pub shutdown_grace: Duration,
    /// Append `X-Forwarded-For` / `X-Forwarded-Proto`.
    pub forwarded_headers: bool,
    /// TLS on the listener (certificate and key loaded).
    pub tls: Option<ServerTls>,
    /// How often the configuration file is checked for changes (`None`: on SIGHUP only).
    pub reload_interval: Option<Duration>,
}

/// Elasticsearch nodes and how esgate talks to them.
#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    /// The nodes, tried round-robin. Empty only with `dev`.
    pub nodes: Vec<NodeUrl>,
    /// Serve the built-in development upstream on loopback and use it as the only node.
    pub dev: bool,
    /// The version the development upstream reports in `GET /` (checked with [`Version::parse`]).
    pub dev_version: String,
    /// TCP connect timeout per attempt.
    pub connect_timeout: Duration,
    /// Time a node has to start its answer to a GET, HEAD or OPTIONS once the whole request is
    /// sent (`None`, the default: no limit). It starts after the body so that slow uploads are not
    /// cut; other methods are never timed, since clients retry a 504 (see `upstream::timed`).
    pub response_timeout: Option<Duration>,
    /// Idle connections older than this are not reused: below the idle timeouts of the load
    /// balancers usually found in front of Elasticsearch, so a reused connection is still open.
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per node in each runtime thread.
    pub pool_max_idle_per_node: usize,
    /// A node that refused a connection is skipped for this long, doubled per failure.
    pub dead_node_backoff: Duration,
    /// Upper bound of the dead-node delay.
    pub max_dead_node_backoff: Duration,
    /// Send `Host: <node host:port>` instead of the client's `Host`.
    pub rewrite_host: bool,
    /// Keep header-name case as received (costs an allocation per header).
    pub preserve_header_case: bool,
    /// How often each node is probed for readiness (with an admin listener only).
    pub health_check_interval: Duration,
    /// How often each node's version is asked again (`GET /`), to follow rolling upgrades; zero:
    /// only at start-up and when a node comes back.
    pub version_check_interval: Duration,
    /// esgate's own credentials, for its own requests to the nodes (version and health probes);
    /// clients' requests always carry their own.
    pub credentials: Option<Credentials>,
    /// TLS to `https://` nodes (and an `https://` audit node): loaded when one is configured or a
    /// TLS setting is given.
    pub tls: Option<ClientTls>,
    /// Certificate verification is off (`upstream.tls_insecure`).
    pub tls_insecure: bool,
}

/// The checks of the Update connector error API.
#[derive(Clone, Debug)]
pub struct ConnectorErrorConfig {
    /// The largest body read on that route, before and after decompression. The default is
    /// Elasticsearch's own default `http.max_content_length` (100mb), so that esgate refuses no
    /// body Elasticsearch would take; lower it to bound the memory a request may hold.
    pub max_body_size: usize,
    /// Bytes of all intercepted bodies held at once (raw and decoded); a call that would pass it
    /// is answered as Elasticsearch's in-flight-requests circuit breaker answers (429).
    pub max_buffered_bytes: usize,
    /// Ask the upstream who the caller is before answering a rejection locally (secured clusters
    /// authenticate before they read the body, so an unauthenticated caller gets 401 there).
    pub check_auth: bool,
    /// How long a credential check is remembered.
    pub auth_cache_ttl: Duration,
    /// Check and audit, but forward every call: shows what esgate would refuse before it does.
    pub report_only: bool,
    /// The version every node is taken to run; `None`: learned from each node.
    pub es_version: Option<EsVersion>,
    /// Fraction of local rejections also sent to a node, with a random connector id, to compare
    /// its answer with esgate's (0: off).
    pub canary_rate: f64,
}

/// `connector_error.es_version`: one version pinned for every node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EsVersion {
    /// A release, `major.minor.patch`.
    Release(Version),
    /// Elastic's serverless offering: the newest dialect.
    Serverless,
}

impl EsVersion {
    /// Parses `9.2.1` (as [`Version::parse`] does) or `serverless`.
    pub fn parse(text: &str) -> Option<EsVersion> {
        if text.trim().eq_ignore_ascii_case("serverless") {
            return Some(EsVersion::Serverless);
        }
        Version::parse(text).map(EsVersion::Release)
    }

    /// The dialects a node of this version speaks.
    pub fn knowledge(self) -> Knowledge {
        match self {
            EsVersion::Release(v) => Knowledge::for_version(v),
            EsVersion::Serverless => Knowledge::Dialects(DialectSet::one(Dialect::NEWEST)),
        }
    }
}

impl fmt::Display for EsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EsVersion::Release(v) => v.fmt(f),
            EsVersion::Serverless => f.write_str("serverless"),
        }
    }
}

/// The audit trail: one JSON line per intercepted call (or per request, in access-log mode).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditConfig {
    /// Write events to stdout (logs go to stderr, so the two never mix).
    pub stdout: bool,
    /// Append events to this file, reopened on SIGHUP (log rotation).
    pub file: Option<PathBuf>,
    /// Audit every request, not only the intercepted route.
    pub all_requests: bool,
    /// Events waiting for the writer; when full, new events are dropped and counted rather than
    /// making a request wait.
    pub queue_size: usize,
    /// The connector error text is cut to this many bytes (at a character boundary).
    pub max_error_length: usize,
    /// Bytes of a document write on the connector or sync-job index read along for its audit
    /// event; a larger body is audited without its text.
    pub max_inspected_body: usize,
    /// Mask secrets (URL credentials, `password=…`, tokens) inside the error text.
    pub redact_error_secrets: bool,
    /// Also index events into Elasticsearch.
    pub elasticsearch: Option<AuditElasticsearch>,
}

impl AuditConfig {
    /// True when at least one sink is configured.
    pub fn enabled(&self) -> bool {
        self.stdout || self.file.is_some() || self.elasticsearch.is_some()
    }
}

/// Where and how audit events are indexed into Elasticsearch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditElasticsearch {
    /// The node the `_bulk` requests go to (directly, not through the gateway).
    pub url: NodeUrl,
    /// The data stream (`logs-esgate.audit-default`).
    pub data_stream: String,
    /// Credentials of the audit writer.
    pub credentials: Option<Credentials>,
    /// Most events per `_bulk` request.
    pub batch_size: usize,
    /// Longest time an event waits for its batch to fill.
    pub flush_interval: Duration,
    /// Events held while Elasticsearch is slow or down; beyond it they are dropped and counted.
    pub buffer: usize,
}

/// Credentials esgate itself uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// `Authorization: ApiKey <key>`.
    ApiKey(Secret),
    /// `Authorization: Basic …`.
    Basic {
        /// The user.
        username: String,
        /// Its password.
        password: Secret,
    },
}

impl Credentials {
    /// The `Authorization` header value, marked sensitive.
    pub fn header(&self) -> Option<http::HeaderValue> {
        let text = match self {
            Credentials::ApiKey(key) => format!("ApiKey {}", key.expose()),
            Credentials::Basic { username, password } => {
                use base64::Engine;
                let pair = format!("{username}:{}", password.expose());
                format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
            }
        };
        let mut value = http::HeaderValue::try_from(text).ok()?;
        value.set_sensitive(true);
        Some(value)
    }
}

/// A secret: printed as `[redacted]`, so that `--check-config` and debug logs never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// An upstream node's address, taken from an `http[s]://host[:port]` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeUrl {
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    /// TCP port (80 or 443 when the URL names none).
    pub port: u16,
    /// `https://`.
    pub tls: bool,
}

impl NodeUrl {
    /// `host:port` as written in a Host header (IPv6 in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for NodeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.authority())
    }
}

/// Logging settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// A tracing filter (`info`, `esgate=debug,hyper=warn`, …).
    pub filter: String,
    /// Output format.
    pub format: LogFormat,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A configuration that cannot be used; names the key and where its value came from.
#[derive(Debug)]
pub struct ConfigError {
    key: String,
    origin: String,
    message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, origin: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            origin: origin.into(),
            message: message.into(),
        }
    }

    /// The dotted key of the offending setting (`server.listen`), or the file for file errors.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid configuration: `{}` ({}): {}",
            self.key, self.origin, self.message
        )
    }
}

impl std::error::Error for ConfigError {}

/// A raw value before parsing, with where it came from.
#[derive(Debug)]
enum Raw {
    Text(String),
    Toml(toml::Value),
}

struct Value {
    raw: Raw,
    origin: Origin,
}

/// Where a value came from.
#[derive(Debug, PartialEq, Eq)]
enum Origin {
    /// The setting's flag.
    Flag(&'static str),
    /// The setting's environment variable.
    Env(&'static str),
    /// The configuration file (its name).
    File(String),
    /// The setting's default.
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(name) | Origin::Env(name) => write!(f, "from {name}"),
            Origin::File(name) => write!(f, "from {name}"),
            Origin::Default => f.write_str("the default"),
        }
    }
}

impl Value {
    fn err(&self, setting: Setting, message: impl fmt::Display) -> ConfigError {
        let shown = match &self.raw {
            Raw::Text(s) => format!("{s:?}"),
            Raw::Toml(v) => v.to_string(),
        };
        ConfigError::new(setting.key, self.origin.to_string(), format!("{message} (got {shown})"))
    }

    fn text(&self, setting: Setting) -> Result<&str, ConfigError> {
        match &self.raw {
            Raw::Text(s) => Ok(s),
            Raw::Toml(toml::Value::String(s)) => Ok(s),
            Raw::Toml(_) => Err(self.err(setting, "expected a string")),
        }
    }
}

/// Where values are looked up: the parsed flags, the environment, the file's table, the defaults.
struct Sources<'a> {
    matches: ArgMatches,
    env: &'a dyn Fn(&str) -> Option<String>,
    file: toml::Table,
    file_name: String,
}

impl Sources<'_> {
    /// The setting's value from the first of its flag, its environment variable, the file and its
    /// default that has one; `None` when none has (an unset setting).
    fn get(&mut self, setting: Setting) -> Option<Value> {
        // Always take the file's value, so that a key overridden by a flag is not "unknown".
        let from_file = self.take_file(setting);
        self.flag_value(setting)
            .or_else(|| self.env_value(setting))
            .or(from_file)
            .or_else(|| {
                setting.default_text().map(|text| Value {
                    raw: setting.raw(text),
                    origin: Origin::Default,
                })
            })
    }

    /// As [`Sources::get`], for a setting that has a default.
    fn value(&mut self, setting: Setting) -> Result<Value, ConfigError> {
        self.get(setting)
            .ok_or_else(|| ConfigError::new(setting.key, "the default", "the setting has no default"))
    }

    fn flag_value(&self, setting: Setting) -> Option<Value> {
        let raw = match setting.kind {
            Kind::List => Raw::Toml(toml::Value::Array(
                self.matches
                    .get_many::<String>(setting.key)?
                    .map(|s| toml::Value::String(s.clone()))
                    .collect(),
            )),
            Kind::Single | Kind::Switch => Raw::Text(self.matches.get_one::<String>(setting.key)?.clone()),
        };
        Some(Value {
            raw,
            origin: Origin::Flag(setting.flag),
        })
    }

    fn env_value(&self, setting: Setting) -> Option<Value> {
        (self.env)(setting.env).map(|text| Value {
            raw: setting.raw(&text),
            origin: Origin::Env(setting.env),
        })
    }

    fn take_file(&mut self, setting: Setting) -> Option<Value> {
        let (section, name) = setting.key.split_once('.')?;
        let table = self.file.get_mut(section)?.as_table_mut()?;
        let raw = table.remove(name)?;
        Some(Value {
            raw: Raw::Toml(raw),
            origin: Origin::File(self.file_name.clone()),
        })
    }

    /// Keys left in the file after every setting took its own are unknown.
    fn reject_leftovers(&self) -> Result<(), ConfigError> {
        for (section, value) in &self.file {
            match value.as_table() {
                Some(table) => {
                    if let Some(name) = table.keys().next() {
                        return Err(ConfigError::new(
                            format!("{section}.{name}"),
                            format!("from {}", self.file_name),
                            "unknown key",
                        ));
                    }
                }
                None => {
                    return Err(ConfigError::new(
                        section.as_str(),
                        format!("from {}", self.file_name),
                        "unknown key (settings live in the [server], [upstream], [connector_error], [audit] and [log] tables)",
                    ))
                }
            }
        }
        Ok(())
    }
}

impl Config {
    /// Parses the process's arguments and environment, reads the file they name, and validates.
    pub fn load() -> Result<(Cli, Config), LoadError> {
        Self::load_from(std::env::args_os())
    }

    /// As [`Config::load`], with explicit arguments (the environment is still the process's).
    pub fn load_from<I, T>(args: I) -> Result<(Cli, Config), LoadError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        // A variable that is not UTF-8 is refused, not taken as unset; RUST_LOG is then unset, as
        // tracing takes it.
        let refused = RefCell::new(None);
        let env = |name: &str| match std::env::var(name) {
            Ok(value) => Some(value),
            Err(VarError::NotPresent) => None,
            Err(VarError::NotUnicode(_)) => {
                let key = SETTINGS.iter().find(|s| s.env == name).map(|s| s.key);
                if name != "RUST_LOG" {
                    refused.borrow_mut().get_or_insert_with(|| {
                        ConfigError::new(key.unwrap_or("--config"), format!("from {name}"), "not valid UTF-8")
                    });
                }
                None
            }
        };
        let loaded = Self::load_with(args, &env);
        match refused.into_inner() {
            Some(e) => Err(e.into()),
            None => loaded,
        }
    }

    /// As [`Config::load_from`], with the environment given: `env` answers a variable's value
    /// (`|_| None`: an empty environment). esgate asks it for the variables of [`SETTINGS`],
    /// `ESGATE_CONFIG` and `RUST_LOG`.
    pub fn load_with<I, T>(args: I, env: &dyn Fn(&str) -> Option<String>) -> Result<(Cli, Config), LoadError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Cli::command().try_get_matches_from(args).map_err(LoadError::Usage)?;
        let config = match matches.get_one::<PathBuf>("config") {
            Some(path) => Some(path.clone()),
            None => match env(CONFIG_ENV) {
                Some(path) if path.is_empty() => {
                    return Err(ConfigError::new("--config", format!("from {CONFIG_ENV}"), "must not be empty").into())
                }
                path => path.map(PathBuf::from),
            },
        };
        let mut cli = Cli {
            config,
            check_config: matches.get_flag("check_config"),
            config_text: None,
        };
        let (file, file_name) = match &cli.config {
            Some(path) => {
                let (table, text) = read_file(path)?;
                cli.config_text = Some(text);
                (table, path.display().to_string())
            }
            None => (toml::Table::new(), String::new()),
        };
        let config = Self::from_sources(Sources {
            matches,
            env,
            file,
            file_name,
        })?;
        Ok((cli, config))
    }

    fn from_sources(mut src: Sources<'_>) -> Result<Config, ConfigError> {
        let mut server = ServerConfig {
            listen: parse_addr(&src.value(LISTEN)?, LISTEN)?,
            admin_listen: opt(src.get(ADMIN_LISTEN), ADMIN_LISTEN, parse_addr)?,
            workers: parse_count(&src.value(WORKERS)?, WORKERS)?,
            header_read_timeout: duration(&mut src, HEADER_READ_TIMEOUT)?,
            body_read_timeout: duration(&mut src, BODY_READ_TIMEOUT)?,
            max_connections: parse_count(&src.value(MAX_CONNECTIONS)?, MAX_CONNECTIONS)?,
            listen_backlog: u32::try_from(parse_count(&src.value(LISTEN_BACKLOG)?, LISTEN_BACKLOG)?)
                .unwrap_or(u32::MAX),
            max_header_size: parse_size(&src.value(MAX_HEADER_SIZE)?, MAX_HEADER_SIZE)?,
            shutdown_grace: duration(&mut src, SHUTDOWN_GRACE)?,
            forwarded_headers: flag(&mut src, FORWARDED_HEADERS)?,
            tls: None,
            reload_interval: None,
        };
        let tls_cert = path(&mut src, TLS_CERT)?;
        let tls_key = path(&mut src, TLS_KEY)?;
        server.tls = match (&tls_cert, &tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                Some(ServerTls::load(cert, key, [TLS_CERT.key, TLS_KEY.key]).map_err(tls_error)?)
            }
            (Some(_), None) => return Err(ConfigError::new(TLS_KEY.key, "checked", "a certificate needs its key")),
            (None, Some(_)) => return Err(ConfigError::new(TLS_CERT.key, "checked", "a key needs its certificate")),
        };
        let reload = duration(&mut src, RELOAD_INTERVAL)?;
        server.reload_interval = (!reload.is_zero()).then_some(reload);
        let nodes = parse_nodes(&src.value(NODES)?)?;
        let response_timeout = duration(&mut src, RESPONSE_TIMEOUT)?;
        let upstream = UpstreamConfig {
            nodes,
            dev: flag(&mut src, DEV)?,
            dev_version: {
                let v = src.value(DEV_VERSION)?;
                let text = v.text(DEV_VERSION)?.trim();
                if Version::parse(text).is_none() {
                    return Err(v.err(DEV_VERSION, "expected a version such as 9.5.0"));
                }
                text.to_owned()
            },
            connect_timeout: duration(&mut src, CONNECT_TIMEOUT)?,
            response_timeout: (!response_timeout.is_zero()).then_some(response_timeout),
            pool_idle_timeout: duration(&mut src, POOL_IDLE_TIMEOUT)?,
            pool_max_idle_per_node: parse_count(&src.value(POOL_MAX_IDLE)?, POOL_MAX_IDLE)?,
            dead_node_backoff: duration(&mut src, DEAD_BACKOFF)?,
            max_dead_node_backoff: duration(&mut src, MAX_DEAD_BACKOFF)?,
            rewrite_host: flag(&mut src, REWRITE_HOST)?,
            preserve_header_case: flag(&mut src, PRESERVE_CASE)?,
            health_check_interval: duration(&mut src, HEALTH_CHECK_INTERVAL)?,
            version_check_interval: duration(&mut src, VERSION_CHECK_INTERVAL)?,
            credentials: upstream_credentials(&mut src)?,
            tls: None,
            tls_insecure: false,
        };
        let ca_file = path(&mut src, CA_FILE)?;
        let client_cert = path(&mut src, CLIENT_CERT)?;
        let client_key = path(&mut src, CLIENT_KEY)?;
        let mut upstream = upstream;
        upstream.tls_insecure = flag(&mut src, TLS_INSECURE)?;
        let connector_error = ConnectorErrorConfig {
            max_body_size: parse_size(&src.value(MAX_ERROR_BODY)?, MAX_ERROR_BODY)?,
            max_buffered_bytes: parse_size(&src.value(MAX_BUFFERED)?, MAX_BUFFERED)?,
            check_auth: flag(&mut src, CHECK_AUTH)?,
            auth_cache_ttl: duration(&mut src, AUTH_CACHE_TTL)?,
            report_only: flag(&mut src, REPORT_ONLY)?,
            es_version: match src.get(ES_VERSION) {
                Some(v) => Some(
                    EsVersion::parse(v.text(ES_VERSION)?)
                        .ok_or_else(|| v.err(ES_VERSION, "expected a version such as 9.2.1, or serverless"))?,
                ),
                None => None,
            },
            canary_rate: {
                let v = src.value(CANARY_RATE)?;
                // A number in the file (`0.01`), text from a flag or the environment.
                let rate = match &v.raw {
                    Raw::Toml(toml::Value::Float(f)) => Some(*f),
                    Raw::Toml(toml::Value::Integer(i)) => Some(*i as f64),
                    _ => v.text(CANARY_RATE)?.trim().parse::<f64>().ok(),
                };
                match rate {
                    Some(rate) if (0.0..=1.0).contains(&rate) => rate,
                    _ => return Err(v.err(CANARY_RATE, "expected a fraction from 0 to 1, such as 0.01")),
                }
            },
        };
        let audit = audit(&mut src)?;
        let wants_tls = upstream.nodes.iter().any(|n| n.tls)
            || audit.elasticsearch.as_ref().is_some_and(|es| es.url.tls)
            || ca_file.is_some()
            || client_cert.is_some()
            || client_key.is_some()
            || upstream.tls_insecure;
        if wants_tls {
            let settings = ClientSettings {
                ca_file: ca_file.as_deref(),
                client_cert_file: client_cert.as_deref(),
                client_key_file: client_key.as_deref(),
                insecure: upstream.tls_insecure,
            };
            let keys = [CA_FILE.key, CLIENT_CERT.key, CLIENT_KEY.key];
            upstream.tls = Some(ClientTls::load(&settings, keys).map_err(tls_error)?);
        }
        let level = src.value(LOG_LEVEL)?;
        // Without a level given, RUST_LOG comes before the default (and is taken as it is, as
        // tracing takes it).
        let rust_log = match level.origin {
            Origin::Default => (src.env)("RUST_LOG"),
            _ => None,
        };
        let log = LogConfig {
            filter: match rust_log {
                Some(filter) => filter,
                None => {
                    let text = level.text(LOG_LEVEL)?.to_owned();
                    tracing_subscriber::EnvFilter::try_new(&text).map_err(|e| level.err(LOG_LEVEL, e))?;
                    text
                }
            },
            format: {
                let v = src.value(LOG_FORMAT)?;
                match v.text(LOG_FORMAT)? {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    _ => return Err(v.err(LOG_FORMAT, "expected `text` or `json`")),
                }
            },
        };
        src.reject_leftovers()?;
        let config = Config {
            server,
            upstream,
            connector_error,
            audit,
            log,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks relations between values that each parsed on their own.
    fn validate(&self) -> Result<(), ConfigError> {
        let u = &self.upstream;
        if u.max_dead_node_backoff < u.dead_node_backoff {
            return Err(ConfigError::new(
                MAX_DEAD_BACKOFF.key,
                "checked against upstream.dead_node_backoff",
                "must not be shorter than upstream.dead_node_backoff",
            ));
        }
        if self.server.max_header_size < 1024 {
            return Err(ConfigError::new(
                MAX_HEADER_SIZE.key,
                "checked",
                "must be at least 1KiB",
            ));
        }
        if u.health_check_interval.is_zero() {
            return Err(ConfigError::new(
                HEALTH_CHECK_INTERVAL.key,
                "checked",
                "must be longer than 0",
            ));
        }
        if u.connect_timeout.is_zero() {
            return Err(ConfigError::new(
                CONNECT_TIMEOUT.key,
                "checked",
                "must be longer than 0",
            ));
        }
        Ok(())
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    /// Bad command line (or `--help` / `--version`, which clap renders itself).
    Usage(clap::Error),
    /// A value or the file is invalid.
    Invalid(ConfigError),
}

impl From<ConfigError> for LoadError {
    fn from(e: ConfigError) -> Self {
        LoadError::Invalid(e)
    }
}

/// The file's table, and its text.
fn read_file(path: &Path) -> Result<(toml::Table, String), ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new("--config", format!("file {name}"), e.to_string()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::new("--config", format!("file {name}"), e.message().to_owned()))?;
    Ok((table, text))
}

/// `upstream.username` and `upstream.password`, or `upstream.api_key`.
fn upstream_credentials(src: &mut Sources<'_>) -> Result<Option<Credentials>, ConfigError> {
    let username = src.get(UPSTREAM_USER);
    let password = src.get(UPSTREAM_PASSWORD);
    let api_key = src.get(UPSTREAM_API_KEY);
    let (credentials, key) = match (api_key, username, password) {
        (None, None, None) => return Ok(None),
        (Some(key), None, None) => (
            Credentials::ApiKey(Secret(non_empty(&key, UPSTREAM_API_KEY)?.to_owned())),
            UPSTREAM_API_KEY,
        ),
        (None, Some(user), Some(password)) => {
            let username = non_empty(&user, UPSTREAM_USER)?;
            if username.contains(':') {
                return Err(user.err(UPSTREAM_USER, "a user name cannot contain `:`"));
            }
            (
                Credentials::Basic {
                    username: username.to_owned(),
                    password: Secret(password.text(UPSTREAM_PASSWORD)?.to_owned()),
                },
                UPSTREAM_PASSWORD,
            )
        }
        (Some(_), _, _) => {
            return Err(ConfigError::new(
                UPSTREAM_API_KEY.key,
                "checked against upstream.username",
                "give either an API key or a username and password, not both",
            ))
        }
        (None, Some(_), None) => {
            return Err(ConfigError::new(
                UPSTREAM_PASSWORD.key,
                "checked",
                "a username needs a password",
            ))
        }
        (None, None, Some(_)) => {
            return Err(ConfigError::new(
                UPSTREAM_USER.key,
                "checked",
                "a password needs a username",
            ))
        }
    };
    // Never echo the value: it is a secret.
    if credentials.header().is_none() {
        return Err(ConfigError::new(
            key.key,
            "checked",
            "not usable in an HTTP header (control characters?)",
        ));
    }
    Ok(Some(credentials))
}

/// The `[audit]` table.
fn audit(src: &mut Sources<'_>) -> Result<AuditConfig, ConfigError> {
    let stdout = flag(src, AUDIT_STDOUT)?;
    let file = match src.get(AUDIT_FILE) {
        Some(v) => match v.text(AUDIT_FILE)? {
            "" => return Err(v.err(AUDIT_FILE, "expected a file path")),
            path => Some(PathBuf::from(path)),
        },
        None => None,
    };
    let all_requests = flag(src, AUDIT_ALL)?;
    let queue_size = number(src, AUDIT_QUEUE, 1..=1 << 20)?;
    let max_error_length = parse_size(&src.value(AUDIT_MAX_ERROR)?, AUDIT_MAX_ERROR)?;
    let max_inspected_body = parse_size(&src.value(AUDIT_MAX_INSPECTED)?, AUDIT_MAX_INSPECTED)?;
    let redact_error_secrets = flag(src, AUDIT_REDACT)?;

    let url = src.get(AUDIT_ES_URL);
    let data_stream = {
        let v = src.value(AUDIT_ES_STREAM)?;
        let name = v.text(AUDIT_ES_STREAM)?;
        check_data_stream_name(name).map_err(|why| v.err(AUDIT_ES_STREAM, why))?;
        name.to_owned()
    };
    let api_key = src.get(AUDIT_ES_API_KEY);
    let username = src.get(AUDIT_ES_USER);
    let password = src.get(AUDIT_ES_PASSWORD);
    let credentials = match (api_key, username, password) {
        (None, None, None) => None,
        (Some(key), None, None) => Some(Credentials::ApiKey(Secret(
            non_empty(&key, AUDIT_ES_API_KEY)?.to_owned(),
        ))),
        (None, Some(user), Some(password)) => Some(Credentials::Basic {
            username: non_empty(&user, AUDIT_ES_USER)?.to_owned(),
            password: Secret(password.text(AUDIT_ES_PASSWORD)?.to_owned()),
        }),
        (Some(_), _, _) => {
            return Err(ConfigError::new(
                AUDIT_ES_API_KEY.key,
                "checked",
                "give either an API key or a username and password, not both",
            ))
        }
        (None, Some(_), None) => {
            return Err(ConfigError::new(
                AUDIT_ES_PASSWORD.key,
                "checked",
                "a username needs a password",
            ))
        }
        (None, None, Some(_)) => {
            return Err(ConfigError::new(
                AUDIT_ES_USER.key,
                "checked",
                "a password needs a username",
            ))
        }
    };
    let batch_size = number(src, AUDIT_ES_BATCH, 1..=100_000)?;
    let flush_interval = duration(src, AUDIT_ES_FLUSH)?;
    let buffer = number(src, AUDIT_ES_BUFFER, 1..=10_000_000)?;
    let elasticsearch = match url {
        None => None,
        Some(v) => {
            let url = parse_node_url(v.text(AUDIT_ES_URL)?.trim()).map_err(|why| v.err(AUDIT_ES_URL, why))?;
            if flush_interval.is_zero() {
                return Err(ConfigError::new(AUDIT_ES_FLUSH.key, "checked", "must be longer than 0"));
            }
            if buffer < batch_size {
                return Err(ConfigError::new(
                    AUDIT_ES_BUFFER.key,
                    "checked against audit.elasticsearch_batch_size",
                    "must hold at least one batch",
                ));
            }
            Some(AuditElasticsearch {
                url,
                data_stream,
                credentials,
                batch_size,
                flush_interval,
                buffer,
            })
        }
    };
    Ok(AuditConfig {
        stdout,
        file,
        all_requests,
        queue_size,
        max_error_length,
        max_inspected_body,
        redact_error_secrets,
        elasticsearch,
    })
}

fn tls_error(e: crate::tls::TlsError) -> ConfigError {
    ConfigError::new(e.key, "checked", e.message)
}

fn path(src: &mut Sources<'_>, setting: Setting) -> Result<Option<PathBuf>, ConfigError> {
    match src.get(setting) {
        None => Ok(None),
        Some(v) => Ok(Some(PathBuf::from(non_empty(&v, setting)?))),
    }
}

/// Elasticsearch's index-name rules, as far as a data stream name needs them.
fn check_data_stream_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 255 {
        return Err("expected a data stream name of 1 to 255 bytes");
    }
    if name.starts_with(['-', '_', '+', '.']) {
        return Err("a data stream name must not start with -, _, + or .");
    }
    if name.chars().any(|c| c.is_uppercase() || "\\/*?\"<>| ,#:".contains(c)) {
        return Err("a data stream name is lowercase, without spaces or any of \\/*?\"<>|,#:");
    }
    Ok(())
}

fn non_empty(v: &Value, setting: Setting) -> Result<&str, ConfigError> {
    match v.text(setting)? {
        "" => Err(v.err(setting, "must not be empty")),
        text => Ok(text),
    }
}

fn number(
    src: &mut Sources<'_>,
    setting: Setting,
    range: std::ops::RangeInclusive<usize>,
) -> Result<usize, ConfigError> {
    let v = src.value(setting)?;
    let n = match &v.raw {
        Raw::Toml(toml::Value::Integer(i)) => usize::try_from(*i).ok(),
        _ => v.text(setting)?.trim().parse().ok(),
    };
    match n.filter(|n| range.contains(n)) {
        Some(n) => Ok(n),
        None => Err(v.err(
            setting,
            format!("expected a whole number from {} to {}", range.start(), range.end()),
        )),
    }
}

fn opt<T>(
    value: Option<Value>,
    setting: Setting,
    parse: fn(&Value, Setting) -> Result<T, ConfigError>,
) -> Result<Option<T>, ConfigError> {
    value.map(|v| parse(&v, setting)).transpose()
}

fn duration(src: &mut Sources<'_>, setting: Setting) -> Result<Duration, ConfigError> {
    parse_duration_value(&src.value(setting)?, setting)
}

fn flag(src: &mut Sources<'_>, setting: Setting) -> Result<bool, ConfigError> {
    let v = src.value(setting)?;
    match &v.raw {
        Raw::Toml(toml::Value::Boolean(b)) => Ok(*b),
        _ => match v.text(setting)? {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(v.err(setting, "expected true or false")),
        },
    }
}

fn parse_addr(v: &Value, setting: Setting) -> Result<SocketAddr, ConfigError> {
    v.text(setting)?
        .parse()
        .map_err(|_| v.err(setting, "expected an IP address and port such as 127.0.0.1:8080"))
}

fn parse_count(v: &Value, setting: Setting) -> Result<usize, ConfigError> {
    let n = match &v.raw {
        Raw::Toml(toml::Value::Integer(i)) => usize::try_from(*i).ok(),
        _ => v.text(setting)?.parse().ok(),
    };
    n.filter(|n| *n <= 4096)
        .ok_or_else(|| v.err(setting, "expected a whole number from 0 to 4096"))
}

fn parse_size(v: &Value, setting: Setting) -> Result<usize, ConfigError> {
    let n = match &v.raw {
        Raw::Toml(toml::Value::Integer(i)) => usize::try_from(*i).ok(),
        _ => parse_size_text(v.text(setting)?),
    };
    n.ok_or_else(|| v.err(setting, "expected a size in bytes such as 65536, 64KiB or 1MiB"))
}

fn parse_duration_value(v: &Value, setting: Setting) -> Result<Duration, ConfigError> {
    let d = match &v.raw {
        Raw::Toml(toml::Value::Integer(i)) => u64::try_from(*i).ok().map(Duration::from_secs),
        _ => parse_duration(v.text(setting)?),
    };
    d.ok_or_else(|| v.err(setting, "expected a duration such as 30s, 500ms, 2m or 0"))
}

fn parse_nodes(v: &Value) -> Result<Vec<NodeUrl>, ConfigError> {
    let urls: Vec<&str> = match &v.raw {
        Raw::Toml(toml::Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().ok_or_else(|| v.err(NODES, "expected a list of URLs")))
            .collect::<Result<_, _>>()?,
        _ => vec![v.text(NODES)?],
    };
    if urls.is_empty() {
        return Err(v.err(NODES, "expected at least one node URL"));
    }
    urls.into_iter()
        .map(|url| parse_node_url(url.trim()).map_err(|why| v.err(NODES, format!("{url:?}: {why}"))))
        .collect()
}

/// Parses `http://host[:port][/]`: a node is a host and port, nothing more.
pub fn parse_node_url(url: &str) -> Result<NodeUrl, &'static str> {
    let uri: http::Uri = url.parse().map_err(|_| "not a URL")?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err("expected a URL starting with http:// or https://"),
    };
    let authority = uri.authority().ok_or("the URL names no host")?;
    if authority.as_str().contains('@') {
        return Err("credentials in the URL are not supported; clients send their own");
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err("a path prefix is not supported; give only scheme, host and port");
    }
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err("the URL names no host");
    }
    if tls && crate::tls::server_name(host).is_none() {
        return Err("the host is not a valid TLS server name");
    }
    Ok(NodeUrl {
        host: host.to_owned(),
        port: authority.port_u16().unwrap_or(if tls { 443 } else { 80 }),
        tls,
    })
}

/// Parses `0`, `250ms`, `30s`, `5m`, `1h`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let millis = match unit.trim() {
        "ms" => n,
        "s" => n.checked_mul(1000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        "" if n == 0 => 0,
        _ => return None,
    };
    Some(Duration::from_millis(millis))
}

/// Parses `65536`, `64KiB`, `1MiB` (also `KB`/`MB` as the same binary units).
pub fn parse_size_text(text: &str) -> Option<usize> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: usize = digits.parse().ok()?;
    let factor = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "KB" | "k" | "kb" => 1024,
        "MiB" | "MB" | "m" | "mb" => 1024 * 1024,
        "GiB" | "GB" | "g" | "gb" => 1024 * 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loads from `args` in an empty environment: the developer's shell stays out.
    fn load(args: &[&str]) -> Result<Config, LoadError> {
        load_env(args, &[])
    }

    /// Loads from `args` in an environment of only `env`.
    fn load_env(args: &[&str], env: &[(&str, &str)]) -> Result<Config, LoadError> {
        let env = |name: &str| env.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned());
        Config::load_with(std::iter::once("esgate").chain(args.iter().copied()), &env).map(|(_, c)| c)
    }

    fn invalid_env(args: &[&str], env: &[(&str, &str)]) -> ConfigError {
        match load_env(args, env) {
            Err(LoadError::Invalid(e)) => e,
            other => panic!("expected an invalid configuration, got {other:?}"),
        }
    }

    fn invalid(args: &[&str]) -> ConfigError {
        match load(args) {
            Err(LoadError::Invalid(e)) => e,
            other => panic!("expected an invalid configuration, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let c = load(&[]).expect("defaults are valid");
        assert_eq!(c.server.listen, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(
            c.upstream.nodes,
            vec![NodeUrl {
                host: "127.0.0.1".into(),
                port: 9200,
                tls: false,
            }]
        );
        assert_eq!(c.upstream.response_timeout, None);
        assert!(!c.upstream.dev);
    }

    #[test]
    fn flags_parse() {
        let c = load(&[
            "--listen=0.0.0.0:9000",
            "--upstream",
            "http://es1:9200",
            "--upstream=http://[::1]:9201,http://es3",
            "--dev",
            "--response-timeout=0",
            "--max-header-size=16KiB",
        ])
        .expect("valid");
        assert_eq!(c.server.listen.port(), 9000);
        let auths: Vec<_> = c.upstream.nodes.iter().map(NodeUrl::authority).collect();
        assert_eq!(auths, ["es1:9200", "[::1]:9201", "es3:80"]);
        assert!(c.upstream.dev);
        assert_eq!(c.upstream.response_timeout, None);
        assert_eq!(c.server.max_header_size, 16384);
    }

    #[test]
    fn bad_values_name_their_key_and_origin() {
        let e = invalid(&["--listen", "nowhere"]);
        assert_eq!(e.key(), "server.listen");
        assert!(e.to_string().contains("from --listen"), "{e}");
        assert_eq!(
            invalid(&["--connect-timeout=5 parsecs"]).key(),
            "upstream.connect_timeout"
        );
        assert_eq!(invalid(&["--upstream=ftp://x"]).key(), "upstream.nodes");
        assert_eq!(invalid(&["--upstream=http://x/prefix"]).key(), "upstream.nodes");
        assert_eq!(invalid(&["--dev=maybe"]).key(), "upstream.dev");
        assert_eq!(invalid(&["--log-format=xml"]).key(), "log.format");
        assert_eq!(
            invalid(&["--dead-node-backoff=1m"]).key(),
            "upstream.max_dead_node_backoff"
        );
    }

    /// A configuration file of `text` in a directory of its own, removed when dropped.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(text: &str) -> TempFile {
            static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("esgate-config-test-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            std::fs::write(dir.join("esgate.toml"), text).expect("write");
            TempFile(dir)
        }

        fn path(&self) -> PathBuf {
            self.0.join("esgate.toml")
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn with_file(text: &str, args: &[&str]) -> Result<Config, LoadError> {
        with_file_env(text, args, &[])
    }

    fn with_file_env(text: &str, args: &[&str], env: &[(&str, &str)]) -> Result<Config, LoadError> {
        let file = TempFile::new(text);
        let path_arg = format!("--config={}", file.path().display());
        let mut all = vec![path_arg.as_str()];
        all.extend_from_slice(args);
        load_env(&all, env)
    }

    #[test]
    fn file_values_apply_and_flags_win() {
        let text = "[server]\nlisten = \"127.0.0.1:7000\"\nshutdown_grace = 5\n[upstream]\nnodes = [\"http://a:1\", \"http://b:2\"]\nrewrite_host = true\n";
        let c = with_file(text, &[]).expect("valid");
        assert_eq!(c.server.listen.port(), 7000);
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(5));
        assert_eq!(c.upstream.nodes.len(), 2);
        assert!(c.upstream.rewrite_host);
        let c = with_file(text, &["--listen=127.0.0.1:7001"]).expect("valid");
        assert_eq!(c.server.listen.port(), 7001);
    }

    #[test]
    fn file_errors_name_the_key() {
        let e = match with_file("[server]\nlisten = 12\n", &[]) {
            Err(LoadError::Invalid(e)) => e,
            other => panic!("{other:?}"),
        };
        assert_eq!(e.key(), "server.listen");
        assert!(e.to_string().contains("esgate.toml"), "{e}");
        let e = match with_file("[server]\nlisen = \"x\"\n", &[]) {
            Err(LoadError::Invalid(e)) => e,
            other => panic!("{other:?}"),
        };
        assert_eq!(e.key(), "server.lisen");
        assert!(matches!(with_file("listen = ", &[]), Err(LoadError::Invalid(_))));
    }

    /// The sources of `args`, an environment of `env` and a file of `text`, not yet read.
    fn sources<'a>(args: &[String], env: &'a dyn Fn(&str) -> Option<String>, text: &str) -> Sources<'a> {
        let args = std::iter::once("esgate".to_owned()).chain(args.iter().cloned());
        Sources {
            matches: Cli::command().try_get_matches_from(args).expect("the flags parse"),
            env,
            file: text.parse().expect("the file parses"),
            file_name: "test.toml".into(),
        }
    }

    /// A value's text (a list's items) and where it came from.
    fn seen(value: Option<Value>) -> Option<(Vec<String>, String)> {
        let value = value?;
        let texts = match &value.raw {
            Raw::Text(s) | Raw::Toml(toml::Value::String(s)) => vec![s.clone()],
            Raw::Toml(toml::Value::Array(items)) => items
                .iter()
                .map(|item| item.as_str().expect("a string").to_owned())
                .collect(),
            Raw::Toml(other) => panic!("unexpected {other}"),
        };
        Some((texts, value.origin.to_string()))
    }

    /// What a setting is when nothing is given: its default, split as the setting splits a value.
    fn default_of(setting: Setting) -> Option<(Vec<String>, String)> {
        let text = setting.default_text()?;
        let texts = match setting.kind {
            Kind::List => text.split(',').map(str::to_owned).collect(),
            Kind::Single | Kind::Switch => vec![text.to_owned()],
        };
        Some((texts, "the default".to_owned()))
    }

    fn file_with(setting: Setting, text: &str) -> String {
        let (section, name) = setting.key.split_once('.').expect("dotted");
        format!("[{section}]\n{name} = {text:?}\n")
    }

    #[test]
    fn the_table_is_consistent() {
        let sections = ["server", "upstream", "connector_error", "audit", "log"];
        let mut names = std::collections::HashSet::new();
        for s in SETTINGS {
            let (section, name) = s.key.split_once('.').expect("a dotted key");
            assert!(sections.contains(&section) && !name.contains('.'), "{}", s.key);
            assert!(s.flag.starts_with("--") && s.env.starts_with("ESGATE_"), "{}", s.key);
            for name in [s.key, s.flag, s.env] {
                assert!(names.insert(name), "{name} is declared twice");
            }
            assert!(!s.help.is_empty() && !s.help.ends_with('.'), "{}: {:?}", s.key, s.help);
            assert_eq!(s.kind == Kind::Switch, s.value_name == "BOOL", "{}", s.key);
            match s.default {
                Builtin::Value(text) => assert!(!text.is_empty(), "{}", s.key),
                Builtin::Unset(what) => assert!(!what.is_empty(), "{}", s.key),
            }
        }
        assert!(!names.contains("--config") && !names.contains(CONFIG_ENV));
    }

    #[test]
    fn every_setting_has_its_flag_and_env() {
        let cmd = Cli::command();
        let help = cmd.clone().render_long_help().to_string();
        for s in SETTINGS {
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_id() == s.key)
                .unwrap_or_else(|| panic!("no flag for {}", s.key));
            assert_eq!(arg.get_long().map(|l| format!("--{l}")).as_deref(), Some(s.flag), "{}", s.key);
            let names: Vec<&str> = arg.get_value_names().unwrap_or_default().iter().map(|n| n.as_str()).collect();
            assert_eq!(names, [s.value_name], "{}", s.key);
            let shown = format!("{} [{}] [env: {}]", s.help, s.key, s.env);
            assert!(help.contains(&shown), "--help does not show {shown}");
            if let Some(default) = s.default_text() {
                assert!(help.contains(&format!("{shown} [default: {default}]")), "{}", s.key);
            }
        }
        let others: Vec<&str> = cmd
            .get_arguments()
            .map(|a| a.get_id().as_str())
            .filter(|id| !SETTINGS.iter().any(|s| s.key == *id))
            .collect();
        assert_eq!(others, ["config", "check_config"]);
        assert!(help.contains("--config <FILE>") && help.contains("[env: ESGATE_CONFIG]"), "{help}");
    }

    /// Flag, environment variable and file key each reach their setting and no other; nothing
    /// given is the default; flag > environment > file.
    #[test]
    fn every_setting_round_trips() {
        let nothing = |_: &str| None;
        for s in SETTINGS {
            let flag = [format!("{}=by-flag", s.flag)];
            let env = |name: &str| (name == s.env).then(|| "by-env".to_owned());
            let file = file_with(*s, "by-file");
            let cases: [(Sources<'_>, (Vec<String>, String)); 3] = [
                (sources(&flag, &nothing, ""), (vec!["by-flag".into()], format!("from {}", s.flag))),
                (sources(&[], &env, ""), (vec!["by-env".into()], format!("from {}", s.env))),
                (sources(&[], &nothing, &file), (vec!["by-file".into()], "from test.toml".into())),
            ];
            for (mut src, given) in cases {
                for t in SETTINGS {
                    let expected = if t.key == s.key { Some(given.clone()) } else { default_of(*t) };
                    assert_eq!(seen(src.get(*t)), expected, "{} given, {} read", s.key, t.key);
                }
                src.reject_leftovers().expect("the file's key was taken");
            }
            let mut src = sources(&flag, &env, &file);
            assert_eq!(seen(src.get(*s)).map(|(v, _)| v), Some(vec!["by-flag".to_owned()]), "{}", s.key);
            let mut src = sources(&[], &env, &file);
            assert_eq!(seen(src.get(*s)).map(|(v, _)| v), Some(vec!["by-env".to_owned()]), "{}", s.key);
            src.reject_leftovers().expect("a key overridden is not unknown");
        }
    }

    /// A default is written as a user writes a value: given by flag, environment or file, it makes
    /// the configuration that nothing given makes.
    #[test]
    fn every_default_is_a_value_a_user_may_give() {
        let defaults = format!("{:?}", load(&[]).expect("the defaults are valid"));
        for s in SETTINGS {
            let Some(text) = s.default_text() else {
                continue;
            };
            let given = [
                load(&[&format!("{}={text}", s.flag)]),
                load_env(&[], &[(s.env, text)]),
                with_file(&file_with(*s, text), &[]),
            ];
            for config in given {
                let config = config.unwrap_or_else(|e| panic!("{} = {text:?}: {e:?}", s.key));
                assert_eq!(format!("{config:?}"), defaults, "{} = {text:?}", s.key);
            }
        }
    }

    #[test]
    fn switches_take_an_optional_value() {
        let nothing = |_: &str| None;
        for s in SETTINGS.iter().filter(|s| s.kind == Kind::Switch) {
            let cases = [
                (vec![s.flag.to_owned()], "true"),
                (vec![format!("{}=false", s.flag)], "false"),
                (vec![s.flag.to_owned(), "false".to_owned()], "false"),
                (vec![s.flag.to_owned(), "--workers=2".to_owned()], "true"),
            ];
            for (args, expected) in cases {
                let value = seen(sources(&args, &nothing, "").get(*s));
                assert_eq!(value.map(|(v, _)| v), Some(vec![expected.to_owned()]), "{args:?}");
            }
        }
        let twice = Cli::command().try_get_matches_from(["esgate", "--dev", "--dev"]);
        assert!(twice.is_err(), "a switch is given once");
    }

    #[test]
    fn the_environment_is_the_one_given() {
        let e = invalid_env(&["--dev"], &[("ESGATE_RESPONSE_TIMEOUT", "soon")]);
        assert_eq!(
            e.to_string(),
            "invalid configuration: `upstream.response_timeout` (from ESGATE_RESPONSE_TIMEOUT): \
             expected a duration such as 30s, 500ms, 2m or 0 (got \"soon\")"
        );
        let readme = include_str!("../README.md");
        assert!(readme.contains(&format!("esgate: {e}")), "README.md quotes the message");
        let c = load_env(&["--response-timeout=3s"], &[("ESGATE_RESPONSE_TIMEOUT", "soon")]).expect("the flag wins");
        assert_eq!(c.upstream.response_timeout, Some(Duration::from_secs(3)));

        let list = [("ESGATE_UPSTREAM", "http://a:1, http://b:2")];
        let c = load_env(&[], &list).expect("valid");
        let auths: Vec<_> = c.upstream.nodes.iter().map(NodeUrl::authority).collect();
        assert_eq!(auths, ["a:1", "b:2"]);
        let c = load_env(&["--upstream=http://c:3"], &list).expect("valid");
        assert_eq!(c.upstream.nodes.len(), 1);
        let e = invalid_env(&[], &[("ESGATE_UPSTREAM", "http://a:1,")]);
        assert_eq!(e.to_string(), "invalid configuration: `upstream.nodes` (from ESGATE_UPSTREAM): \"\": not a URL (got [\"http://a:1\", \"\"])");
        assert!(load_env(&[], &[("ESGATE_DEV", "true")]).expect("valid").upstream.dev);
        let e = invalid_env(&[], &[("ESGATE_DEV", "")]);
        assert_eq!(e.to_string(), "invalid configuration: `upstream.dev` (from ESGATE_DEV): expected true or false (got \"\")");
    }

    #[test]
    fn only_the_tables_variables_are_read() {
        let asked = RefCell::new(Vec::new());
        let env = |name: &str| {
            asked.borrow_mut().push(name.to_owned());
            None
        };
        Config::load_with(["esgate"], &env).expect("the defaults are valid");
        let asked = asked.into_inner();
        for s in SETTINGS {
            assert!(asked.iter().any(|name| name == s.env), "{} is not read", s.env);
        }
        for name in &asked {
            let known = SETTINGS.iter().any(|s| s.env == name) || name == CONFIG_ENV || name == "RUST_LOG";
            assert!(known, "{name} is read but is no setting's");
        }
    }

    #[test]
    fn rust_log_comes_before_the_default_level_only() {
        let filter = |c: Result<Config, LoadError>| c.expect("valid").log.filter;
        assert_eq!(filter(load(&[])), "info");
        let rust_log = ("RUST_LOG", "esgate=debug");
        assert_eq!(filter(load_env(&[], &[rust_log])), "esgate=debug");
        assert_eq!(filter(load_env(&[], &[rust_log, ("ESGATE_LOG_LEVEL", "warn")])), "warn");
        assert_eq!(filter(load_env(&["--log-level=error"], &[rust_log])), "error");
        assert_eq!(filter(with_file_env("[log]\nlevel = \"trace\"\n", &[], &[rust_log])), "trace");
        // As tracing takes it: not checked (the logger falls back to `info`).
        assert_eq!(filter(load_env(&[], &[("RUST_LOG", "[[[")])), "[[[");
        assert_eq!(invalid_env(&[], &[("ESGATE_LOG_LEVEL", "[[[")]).key(), "log.level");
    }

    #[test]
    fn the_file_may_be_named_in_the_environment() {
        let file = TempFile::new("[server]\nlisten = \"127.0.0.1:7002\"\n");
        let path = file.path().display().to_string();
        let env = |name: &str| (name == CONFIG_ENV).then(|| path.clone());
        let (cli, c) = Config::load_with(["esgate"], &env).expect("valid");
        assert_eq!(cli.config, Some(file.path()));
        assert!(cli.config_text.is_some_and(|t| t.contains("7002")));
        assert!(!cli.check_config);
        assert_eq!(c.server.listen.port(), 7002);
        let e = invalid_env(&["--config=/nonexistent/esgate.toml"], &[(CONFIG_ENV, &path)]);
        assert_eq!(e.key(), "--config");
        assert!(e.to_string().contains("/nonexistent/esgate.toml"), "{e}");
        let e = invalid_env(&[], &[(CONFIG_ENV, "")]);
        assert_eq!(e.to_string(), "invalid configuration: `--config` (from ESGATE_CONFIG): must not be empty");
        let (cli, _) = Config::load_with(["esgate", "--check-config"], &|_| None).expect("valid");
        assert!(cli.check_config && cli.config.is_none() && cli.config_text.is_none());
    }

    #[test]
    fn the_example_file_covers_every_key() {
        let text = include_str!("../config/esgate.toml");
        let table: toml::Table = text.parse().expect("example parses");
        for s in SETTINGS {
            let (section, name) = s.key.split_once('.').expect("dotted");
            let in_file =
                table.get(section).and_then(|t| t.get(name)).is_some() || text.contains(&format!("# {name} = "));
            assert!(in_file, "config/esgate.toml does not mention {}", s.key);
        }
    }

    /// The rows of README.md's settings table: the key, then the flag, environment and default
    /// cells.
    fn readme_rows() -> Vec<(String, [String; 3])> {
        let readme = include_str!("../README.md");
        let section = readme.split("\n## Configuration\n").nth(1).expect("a Configuration section");
        let section = section.split("\n## ").next().unwrap_or(section);
        section
            .lines()
            .filter(|line| line.starts_with("| `"))
            .map(|line| {
                let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
                assert!(cells.len() >= 5, "a short row: {line}");
                let key = cells[0].trim_matches('`').to_owned();
                (key, [cells[1], cells[2], cells[3]].map(str::to_owned))
            })
            .collect()
    }

    #[test]
    fn the_readme_table_agrees_with_the_settings() {
        let rows = readme_rows();
        for s in SETTINGS {
            let mut mine = rows.iter().filter(|(key, _)| key == s.key);
            let (_, [flag, env, default]) = mine.next().unwrap_or_else(|| panic!("README.md has no row for {}", s.key));
            assert!(mine.next().is_none(), "README.md has two rows for {}", s.key);
            let (want_flag, want_env) = match s.kind {
                Kind::Single => (format!("`{} {}`", s.flag, s.value_name), format!("`{}`", s.env)),
                Kind::Switch => (format!("`{} [{}]`", s.flag, s.value_name), format!("`{}`", s.env)),
                Kind::List => (
                    format!("`{} {}` (repeatable)", s.flag, s.value_name),
                    format!("`{}` (comma-separated)", s.env),
                ),
            };
            assert_eq!(*flag, want_flag, "README.md's flag of {}", s.key);
            assert_eq!(*env, want_env, "README.md's environment variable of {}", s.key);
            match s.default {
                Builtin::Value(text) => {
                    assert!(default.contains(&format!("`{text}`")), "README.md's default of {}: {default}", s.key)
                }
                Builtin::Unset(what) => assert_eq!(default, what, "README.md's default of {}", s.key),
            }
        }
        for (key, _) in &rows {
            assert!(SETTINGS.iter().any(|s| s.key == key), "README.md documents {key}, which is no setting");
        }
    }

    #[test]
    fn the_example_file_shows_the_defaults() {
        let text = include_str!("../config/esgate.toml");
        let c = with_file(text, &[]).expect("the example is valid");
        assert_eq!(format!("{c:?}"), format!("{:?}", load(&[]).expect("the defaults are valid")));
        let table: toml::Table = text.parse().expect("example parses");
        for s in SETTINGS {
            let (section, name) = s.key.split_once('.').expect("dotted");
            let set = table.get(section).and_then(|t| t.get(name)).is_some();
            assert_eq!(set, s.default_text().is_some(), "config/esgate.toml sets {} iff it has a default", s.key);
        }
    }

    #[test]
    fn version_settings() {
        let c = load(&[]).expect("defaults are valid");
        assert_eq!(c.connector_error.es_version, None);
        assert_eq!(c.upstream.version_check_interval, Duration::from_secs(60));
        assert_eq!(c.upstream.dev_version, "9.5.0");
        assert!(c.upstream.credentials.is_none());
        let c = load(&[
            "--es-version=8.18.0",
            "--version-check-interval=0",
            "--dev-version=8.19.2",
        ])
        .expect("valid");
        assert_eq!(
            c.connector_error.es_version,
            Some(EsVersion::Release(Version::new(8, 18, 0)))
        );
        assert_eq!(c.upstream.version_check_interval, Duration::ZERO);
        assert_eq!(c.upstream.dev_version, "8.19.2");
        let c = load(&["--es-version=serverless"]).expect("valid");
        assert_eq!(c.connector_error.es_version, Some(EsVersion::Serverless));
        assert_eq!(
            EsVersion::Serverless.knowledge(),
            Knowledge::Dialects(DialectSet::one(Dialect::NEWEST))
        );
        assert_eq!(invalid(&["--es-version=nine"]).key(), "connector_error.es_version");
        assert_eq!(invalid(&["--dev-version=9"]).key(), "upstream.dev_version");
        assert_eq!(
            invalid(&["--version-check-interval=often"]).key(),
            "upstream.version_check_interval"
        );
    }

    #[test]
    fn upstream_credentials_are_checked_and_never_shown() {
        let c = load(&["--upstream-username=esgate", "--upstream-password=s3cr3t-pw"]).expect("valid");
        let header = c
            .upstream
            .credentials
            .as_ref()
            .and_then(Credentials::header)
            .expect("header");
        assert!(header.is_sensitive());
        assert_eq!(header.to_str().ok(), Some("Basic ZXNnYXRlOnMzY3IzdC1wdw=="));
        assert!(!format!("{c:?}{c:#?}").contains("s3cr3t-pw"));
        let c = load(&["--upstream-api-key=a2V5LWlkOmtleS1zZWNyZXQ="]).expect("valid");
        assert!(!format!("{c:?}").contains("a2V5LWlkOmtleS1zZWNyZXQ="));
        assert_eq!(
            c.upstream
                .credentials
                .as_ref()
                .and_then(Credentials::header)
                .expect("header")
                .to_str()
                .ok(),
            Some("ApiKey a2V5LWlkOmtleS1zZWNyZXQ=")
        );
        let both = invalid(&["--upstream-api-key=k", "--upstream-username=u", "--upstream-password=p"]);
        assert_eq!(both.key(), "upstream.api_key");
        assert_eq!(invalid(&["--upstream-username=u"]).key(), "upstream.password");
        assert_eq!(invalid(&["--upstream-password=p"]).key(), "upstream.username");
        assert_eq!(invalid(&["--upstream-api-key="]).key(), "upstream.api_key");
        let bad = invalid(&["--upstream-api-key=line\nbreak-secret\r"]);
        assert_eq!(bad.key(), "upstream.api_key");
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("99999999999999999999h"), None);
        assert_eq!(parse_size_text("64KiB"), Some(65536));
        assert_eq!(parse_size_text("12"), Some(12));
        assert_eq!(parse_size_text("1 parsec"), None);
    }
}
