//! Configuration: command-line flags, `ESGATE_*` environment variables and a TOML file.
//!
//! Every setting has all three names (see [`SETTINGS`]); a value is taken from the first of
//! flag, environment, file and built-in default that has one. Values are parsed and checked once,
//! at start-up, into [`Config`]; an invalid one stops start-up with a [`ConfigError`] that names
//! the key and where the value came from.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;

use crate::elasticsearch::{Dialect, DialectSet, Knowledge, Version};
use crate::tls::{ClientSettings, ClientTls, ServerTls};
use clap::{ArgMatches, CommandFactory, Parser};

/// Command-line interface. Every value is read as text and parsed by [`Config`], so that one
/// error message format covers flags, environment variables and the file alike.
#[derive(Debug, Parser)]
#[command(name = "esgate", version, about = "A streaming reverse proxy for Elasticsearch")]
pub struct Cli {
    /// TOML configuration file (see config/esgate.toml).
    #[arg(long, env = "ESGATE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Validate the configuration, print a summary and exit.
    #[arg(long)]
    pub check_config: bool,
    /// The configuration file's content as it was loaded (not a flag): a reload compares the file
    /// with what is running, not with a later read of it.
    #[arg(skip)]
    pub config_text: Option<String>,
    /// Address the gateway listens on [server.listen].
    #[arg(long, env = "ESGATE_LISTEN", value_name = "ADDR")]
    listen: Option<String>,
    /// Address of the admin listener; unset means none [server.admin_listen].
    #[arg(long, env = "ESGATE_ADMIN_LISTEN", value_name = "ADDR")]
    admin_listen: Option<String>,
    /// Runtime threads, one per core when 0 [server.workers].
    #[arg(long, env = "ESGATE_WORKERS", value_name = "N")]
    workers: Option<String>,
    /// Time a client has to send a request's headers [server.header_read_timeout].
    #[arg(long, env = "ESGATE_HEADER_READ_TIMEOUT", value_name = "DURATION")]
    header_read_timeout: Option<String>,
    /// Time a buffered request body may go without a byte before it is answered 408 [server.body_read_timeout].
    #[arg(long, env = "ESGATE_BODY_READ_TIMEOUT", value_name = "DURATION")]
    body_read_timeout: Option<String>,
    /// Client connections served at once; 0 derives it from the descriptor limit [server.max_connections].
    #[arg(long, env = "ESGATE_MAX_CONNECTIONS", value_name = "N")]
    max_connections: Option<String>,
    /// Connections the kernel queues while esgate is at its limit [server.listen_backlog].
    #[arg(long, env = "ESGATE_LISTEN_BACKLOG", value_name = "N")]
    listen_backlog: Option<String>,
    /// Largest request head (request line and headers) accepted [server.max_header_size].
    #[arg(long, env = "ESGATE_MAX_HEADER_SIZE", value_name = "BYTES")]
    max_header_size: Option<String>,
    /// Time in-flight requests get to finish after SIGTERM/SIGINT [server.shutdown_grace].
    #[arg(long, env = "ESGATE_SHUTDOWN_GRACE", value_name = "DURATION")]
    shutdown_grace: Option<String>,
    /// PEM certificate chain of the listener; with the key, clients speak HTTPS [server.tls_cert_file].
    #[arg(long, env = "ESGATE_TLS_CERT_FILE", value_name = "FILE")]
    tls_cert_file: Option<String>,
    /// PEM private key of the listener's certificate [server.tls_key_file].
    #[arg(long, env = "ESGATE_TLS_KEY_FILE", value_name = "FILE")]
    tls_key_file: Option<String>,
    /// How often the configuration file is checked for changes; 0: only on SIGHUP [server.reload_interval].
    #[arg(long, env = "ESGATE_RELOAD_INTERVAL", value_name = "DURATION")]
    reload_interval: Option<String>,
    /// Append X-Forwarded-For and X-Forwarded-Proto [server.forwarded_headers].
    #[arg(long, env = "ESGATE_FORWARDED_HEADERS", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    forwarded_headers: Option<String>,
    /// Elasticsearch node URL; repeat the flag or separate with commas [upstream.nodes].
    #[arg(long, env = "ESGATE_UPSTREAM", value_name = "URL", value_delimiter = ',')]
    upstream: Vec<String>,
    /// Serve the built-in development upstream instead of real nodes [upstream.dev].
    #[arg(long, env = "ESGATE_DEV", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    dev: Option<String>,
    /// The Elasticsearch version the development upstream reports in GET / [upstream.dev_version].
    #[arg(long, env = "ESGATE_DEV_VERSION", value_name = "VERSION")]
    dev_version: Option<String>,
    /// Time to open a TCP connection to a node [upstream.connect_timeout].
    #[arg(long, env = "ESGATE_CONNECT_TIMEOUT", value_name = "DURATION")]
    connect_timeout: Option<String>,
    /// Time a node has to start its answer to a GET, HEAD or OPTIONS (504 after); 0, the default, disables [upstream.response_timeout].
    #[arg(long, env = "ESGATE_RESPONSE_TIMEOUT", value_name = "DURATION")]
    response_timeout: Option<String>,
    /// An idle upstream connection older than this is closed, not reused [upstream.pool_idle_timeout].
    #[arg(long, env = "ESGATE_POOL_IDLE_TIMEOUT", value_name = "DURATION")]
    pool_idle_timeout: Option<String>,
    /// Idle upstream connections kept per node and thread [upstream.pool_max_idle_per_node].
    #[arg(long, env = "ESGATE_POOL_MAX_IDLE_PER_NODE", value_name = "N")]
    pool_max_idle_per_node: Option<String>,
    /// First retry delay for a node that refused a connection [upstream.dead_node_backoff].
    #[arg(long, env = "ESGATE_DEAD_NODE_BACKOFF", value_name = "DURATION")]
    dead_node_backoff: Option<String>,
    /// Longest retry delay for a dead node [upstream.max_dead_node_backoff].
    #[arg(long, env = "ESGATE_MAX_DEAD_NODE_BACKOFF", value_name = "DURATION")]
    max_dead_node_backoff: Option<String>,
    /// Send the node's own host:port as Host instead of the client's [upstream.rewrite_host].
    #[arg(long, env = "ESGATE_REWRITE_HOST", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    rewrite_host: Option<String>,
    /// PEM bundle of the CAs trusted for https:// nodes, instead of the system's [upstream.ca_file].
    #[arg(long, env = "ESGATE_UPSTREAM_CA_FILE", value_name = "FILE")]
    upstream_ca_file: Option<String>,
    /// PEM client certificate presented to https:// nodes (mTLS) [upstream.client_cert_file].
    #[arg(long, env = "ESGATE_UPSTREAM_CLIENT_CERT_FILE", value_name = "FILE")]
    upstream_client_cert_file: Option<String>,
    /// PEM private key of the client certificate [upstream.client_key_file].
    #[arg(long, env = "ESGATE_UPSTREAM_CLIENT_KEY_FILE", value_name = "FILE")]
    upstream_client_key_file: Option<String>,
    /// Accept any certificate from https:// nodes; for development only [upstream.tls_insecure].
    #[arg(long, env = "ESGATE_UPSTREAM_TLS_INSECURE", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    upstream_tls_insecure: Option<String>,
    /// How often the admin listener's readiness probes each node [upstream.health_check_interval].
    #[arg(long, env = "ESGATE_HEALTH_CHECK_INTERVAL", value_name = "DURATION")]
    health_check_interval: Option<String>,
    /// How often each node's Elasticsearch version is asked again; 0: at start-up and when a node comes back only [upstream.version_check_interval].
    #[arg(long, env = "ESGATE_VERSION_CHECK_INTERVAL", value_name = "DURATION")]
    version_check_interval: Option<String>,
    /// User name of esgate's own requests to the nodes (version and health probes), with the password [upstream.username].
    #[arg(long, env = "ESGATE_UPSTREAM_USERNAME", value_name = "NAME")]
    upstream_username: Option<String>,
    /// Password of esgate's own requests to the nodes [upstream.password].
    #[arg(
        long,
        env = "ESGATE_UPSTREAM_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    upstream_password: Option<String>,
    /// API key (base64 `id:key`) of esgate's own requests to the nodes, instead of a user [upstream.api_key].
    #[arg(long, env = "ESGATE_UPSTREAM_API_KEY", value_name = "KEY", hide_env_values = true)]
    upstream_api_key: Option<String>,
    /// Keep the letter case of header names on the wire [upstream.preserve_header_case].
    #[arg(long, env = "ESGATE_PRESERVE_HEADER_CASE", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    preserve_header_case: Option<String>,
    /// Largest Update-connector-error body read, after decompression; larger gets 413 [connector_error.max_body_size].
    #[arg(long, env = "ESGATE_MAX_ERROR_BODY_SIZE", value_name = "BYTES")]
    max_error_body_size: Option<String>,
    /// Bytes of all intercepted bodies held at once; beyond it a call gets 429 [connector_error.max_buffered_bytes].
    #[arg(long, env = "ESGATE_MAX_BUFFERED_BYTES", value_name = "BYTES")]
    max_buffered_bytes: Option<String>,
    /// Ask the upstream who the caller is before a local rejection [connector_error.check_auth].
    #[arg(long, env = "ESGATE_CHECK_AUTH", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    check_auth: Option<String>,
    /// How long a credential check is remembered [connector_error.auth_cache_ttl].
    #[arg(long, env = "ESGATE_AUTH_CACHE_TTL", value_name = "DURATION")]
    auth_cache_ttl: Option<String>,
    /// Validate and audit Update-connector-error calls but forward every one [connector_error.report_only].
    #[arg(long, env = "ESGATE_REPORT_ONLY", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    report_only: Option<String>,
    /// The Elasticsearch version every node runs (or `serverless`); unset: learned from each node [connector_error.es_version].
    #[arg(long, env = "ESGATE_ES_VERSION", value_name = "VERSION")]
    es_version: Option<String>,
    /// Write audit events to stdout, one JSON line each [audit.stdout].
    #[arg(long, env = "ESGATE_AUDIT_STDOUT", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    audit_stdout: Option<String>,
    /// Append audit events to this file; reopened on SIGHUP [audit.file].
    #[arg(long, env = "ESGATE_AUDIT_FILE", value_name = "FILE")]
    audit_file: Option<String>,
    /// Audit every request, not only Update-connector-error calls (access-log mode) [audit.all_requests].
    #[arg(long, env = "ESGATE_AUDIT_ALL_REQUESTS", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    audit_all_requests: Option<String>,
    /// Audit events waiting to be written; beyond it they are dropped and counted [audit.queue_size].
    #[arg(long, env = "ESGATE_AUDIT_QUEUE_SIZE", value_name = "N")]
    audit_queue_size: Option<String>,
    /// Longest connector error text kept in an audit event, in bytes [audit.max_error_length].
    #[arg(long, env = "ESGATE_AUDIT_MAX_ERROR_LENGTH", value_name = "BYTES")]
    audit_max_error_length: Option<String>,
    /// Mask passwords, tokens and URL credentials inside audited error texts [audit.redact_error_secrets].
    #[arg(long, env = "ESGATE_AUDIT_REDACT_ERROR_SECRETS", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    audit_redact_error_secrets: Option<String>,
    /// Also write audit events to this Elasticsearch with _bulk [audit.elasticsearch_url].
    #[arg(long, env = "ESGATE_AUDIT_ELASTICSEARCH_URL", value_name = "URL")]
    audit_elasticsearch_url: Option<String>,
    /// Data stream the audit events go to [audit.elasticsearch_data_stream].
    #[arg(long, env = "ESGATE_AUDIT_ELASTICSEARCH_DATA_STREAM", value_name = "NAME")]
    audit_elasticsearch_data_stream: Option<String>,
    /// API key (base64 `id:key`, as Elasticsearch issues it) for the audit writes [audit.elasticsearch_api_key].
    #[arg(
        long,
        env = "ESGATE_AUDIT_ELASTICSEARCH_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    audit_elasticsearch_api_key: Option<String>,
    /// User name for the audit writes, with the password [audit.elasticsearch_username].
    #[arg(long, env = "ESGATE_AUDIT_ELASTICSEARCH_USERNAME", value_name = "NAME")]
    audit_elasticsearch_username: Option<String>,
    /// Password for the audit writes [audit.elasticsearch_password].
    #[arg(
        long,
        env = "ESGATE_AUDIT_ELASTICSEARCH_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    audit_elasticsearch_password: Option<String>,
    /// Most audit events per _bulk request [audit.elasticsearch_batch_size].
    #[arg(long, env = "ESGATE_AUDIT_ELASTICSEARCH_BATCH_SIZE", value_name = "N")]
    audit_elasticsearch_batch_size: Option<String>,
    /// Longest time an audit event waits for its batch [audit.elasticsearch_flush_interval].
    #[arg(long, env = "ESGATE_AUDIT_ELASTICSEARCH_FLUSH_INTERVAL", value_name = "DURATION")]
    audit_elasticsearch_flush_interval: Option<String>,
    /// Audit events held while Elasticsearch is slow or down [audit.elasticsearch_buffer].
    #[arg(long, env = "ESGATE_AUDIT_ELASTICSEARCH_BUFFER", value_name = "N")]
    audit_elasticsearch_buffer: Option<String>,
    /// Log filter: a level or tracing directives; RUST_LOG is used when none is set [log.level].
    #[arg(long, env = "ESGATE_LOG_LEVEL", value_name = "FILTER")]
    log_level: Option<String>,
    /// Log format: text or json [log.format].
    #[arg(long, env = "ESGATE_LOG_FORMAT", value_name = "FORMAT")]
    log_format: Option<String>,
}

/// One setting's three names.
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    /// Dotted key in the TOML file.
    pub key: &'static str,
    /// Command-line flag.
    pub flag: &'static str,
    /// Environment variable.
    pub env: &'static str,
}

macro_rules! settings {
    ($($name:ident = $key:literal, $flag:literal, $env:literal;)*) => {
        $(const $name: Setting = Setting { key: $key, flag: $flag, env: $env };)*
        /// Every setting, in the order of `config/esgate.toml`.
        pub const SETTINGS: &[Setting] = &[$($name),*];
    };
}

settings! {
    LISTEN = "server.listen", "--listen", "ESGATE_LISTEN";
    ADMIN_LISTEN = "server.admin_listen", "--admin-listen", "ESGATE_ADMIN_LISTEN";
    WORKERS = "server.workers", "--workers", "ESGATE_WORKERS";
    HEADER_READ_TIMEOUT = "server.header_read_timeout", "--header-read-timeout", "ESGATE_HEADER_READ_TIMEOUT";
    BODY_READ_TIMEOUT = "server.body_read_timeout", "--body-read-timeout", "ESGATE_BODY_READ_TIMEOUT";
    MAX_CONNECTIONS = "server.max_connections", "--max-connections", "ESGATE_MAX_CONNECTIONS";
    LISTEN_BACKLOG = "server.listen_backlog", "--listen-backlog", "ESGATE_LISTEN_BACKLOG";
    MAX_HEADER_SIZE = "server.max_header_size", "--max-header-size", "ESGATE_MAX_HEADER_SIZE";
    SHUTDOWN_GRACE = "server.shutdown_grace", "--shutdown-grace", "ESGATE_SHUTDOWN_GRACE";
    FORWARDED_HEADERS = "server.forwarded_headers", "--forwarded-headers", "ESGATE_FORWARDED_HEADERS";
    TLS_CERT = "server.tls_cert_file", "--tls-cert-file", "ESGATE_TLS_CERT_FILE";
    TLS_KEY = "server.tls_key_file", "--tls-key-file", "ESGATE_TLS_KEY_FILE";
    RELOAD_INTERVAL = "server.reload_interval", "--reload-interval", "ESGATE_RELOAD_INTERVAL";
    NODES = "upstream.nodes", "--upstream", "ESGATE_UPSTREAM";
    DEV = "upstream.dev", "--dev", "ESGATE_DEV";
    DEV_VERSION = "upstream.dev_version", "--dev-version", "ESGATE_DEV_VERSION";
    CONNECT_TIMEOUT = "upstream.connect_timeout", "--connect-timeout", "ESGATE_CONNECT_TIMEOUT";
    RESPONSE_TIMEOUT = "upstream.response_timeout", "--response-timeout", "ESGATE_RESPONSE_TIMEOUT";
    POOL_IDLE_TIMEOUT = "upstream.pool_idle_timeout", "--pool-idle-timeout", "ESGATE_POOL_IDLE_TIMEOUT";
    POOL_MAX_IDLE = "upstream.pool_max_idle_per_node", "--pool-max-idle-per-node", "ESGATE_POOL_MAX_IDLE_PER_NODE";
    DEAD_BACKOFF = "upstream.dead_node_backoff", "--dead-node-backoff", "ESGATE_DEAD_NODE_BACKOFF";
    MAX_DEAD_BACKOFF = "upstream.max_dead_node_backoff", "--max-dead-node-backoff", "ESGATE_MAX_DEAD_NODE_BACKOFF";
    REWRITE_HOST = "upstream.rewrite_host", "--rewrite-host", "ESGATE_REWRITE_HOST";
    CA_FILE = "upstream.ca_file", "--upstream-ca-file", "ESGATE_UPSTREAM_CA_FILE";
    CLIENT_CERT = "upstream.client_cert_file", "--upstream-client-cert-file", "ESGATE_UPSTREAM_CLIENT_CERT_FILE";
    CLIENT_KEY = "upstream.client_key_file", "--upstream-client-key-file", "ESGATE_UPSTREAM_CLIENT_KEY_FILE";
    TLS_INSECURE = "upstream.tls_insecure", "--upstream-tls-insecure", "ESGATE_UPSTREAM_TLS_INSECURE";
    HEALTH_CHECK_INTERVAL = "upstream.health_check_interval", "--health-check-interval", "ESGATE_HEALTH_CHECK_INTERVAL";
    VERSION_CHECK_INTERVAL = "upstream.version_check_interval", "--version-check-interval", "ESGATE_VERSION_CHECK_INTERVAL";
    UPSTREAM_USER = "upstream.username", "--upstream-username", "ESGATE_UPSTREAM_USERNAME";
    UPSTREAM_PASSWORD = "upstream.password", "--upstream-password", "ESGATE_UPSTREAM_PASSWORD";
    UPSTREAM_API_KEY = "upstream.api_key", "--upstream-api-key", "ESGATE_UPSTREAM_API_KEY";
    PRESERVE_CASE = "upstream.preserve_header_case", "--preserve-header-case", "ESGATE_PRESERVE_HEADER_CASE";
    MAX_ERROR_BODY = "connector_error.max_body_size", "--max-error-body-size", "ESGATE_MAX_ERROR_BODY_SIZE";
    MAX_BUFFERED = "connector_error.max_buffered_bytes", "--max-buffered-bytes", "ESGATE_MAX_BUFFERED_BYTES";
    CHECK_AUTH = "connector_error.check_auth", "--check-auth", "ESGATE_CHECK_AUTH";
    AUTH_CACHE_TTL = "connector_error.auth_cache_ttl", "--auth-cache-ttl", "ESGATE_AUTH_CACHE_TTL";
    REPORT_ONLY = "connector_error.report_only", "--report-only", "ESGATE_REPORT_ONLY";
    ES_VERSION = "connector_error.es_version", "--es-version", "ESGATE_ES_VERSION";
    AUDIT_STDOUT = "audit.stdout", "--audit-stdout", "ESGATE_AUDIT_STDOUT";
    AUDIT_FILE = "audit.file", "--audit-file", "ESGATE_AUDIT_FILE";
    AUDIT_ALL = "audit.all_requests", "--audit-all-requests", "ESGATE_AUDIT_ALL_REQUESTS";
    AUDIT_QUEUE = "audit.queue_size", "--audit-queue-size", "ESGATE_AUDIT_QUEUE_SIZE";
    AUDIT_MAX_ERROR = "audit.max_error_length", "--audit-max-error-length", "ESGATE_AUDIT_MAX_ERROR_LENGTH";
    AUDIT_REDACT = "audit.redact_error_secrets", "--audit-redact-error-secrets", "ESGATE_AUDIT_REDACT_ERROR_SECRETS";
    AUDIT_ES_URL = "audit.elasticsearch_url", "--audit-elasticsearch-url", "ESGATE_AUDIT_ELASTICSEARCH_URL";
    AUDIT_ES_STREAM = "audit.elasticsearch_data_stream", "--audit-elasticsearch-data-stream", "ESGATE_AUDIT_ELASTICSEARCH_DATA_STREAM";
    AUDIT_ES_API_KEY = "audit.elasticsearch_api_key", "--audit-elasticsearch-api-key", "ESGATE_AUDIT_ELASTICSEARCH_API_KEY";
    AUDIT_ES_USER = "audit.elasticsearch_username", "--audit-elasticsearch-username", "ESGATE_AUDIT_ELASTICSEARCH_USERNAME";
    AUDIT_ES_PASSWORD = "audit.elasticsearch_password", "--audit-elasticsearch-password", "ESGATE_AUDIT_ELASTICSEARCH_PASSWORD";
    AUDIT_ES_BATCH = "audit.elasticsearch_batch_size", "--audit-elasticsearch-batch-size", "ESGATE_AUDIT_ELASTICSEARCH_BATCH_SIZE";
    AUDIT_ES_FLUSH = "audit.elasticsearch_flush_interval", "--audit-elasticsearch-flush-interval", "ESGATE_AUDIT_ELASTICSEARCH_FLUSH_INTERVAL";
    AUDIT_ES_BUFFER = "audit.elasticsearch_buffer", "--audit-elasticsearch-buffer", "ESGATE_AUDIT_ELASTICSEARCH_BUFFER";
    LOG_LEVEL = "log.level", "--log-level", "ESGATE_LOG_LEVEL";
    LOG_FORMAT = "log.format", "--log-format", "ESGATE_LOG_FORMAT";
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
    origin: String,
}

impl Value {
    fn err(&self, setting: Setting, message: impl fmt::Display) -> ConfigError {
        let shown = match &self.raw {
            Raw::Text(s) => format!("{s:?}"),
            Raw::Toml(v) => v.to_string(),
        };
        ConfigError::new(setting.key, &self.origin, format!("{message} (got {shown})"))
    }

    fn text(&self, setting: Setting) -> Result<&str, ConfigError> {
        match &self.raw {
            Raw::Text(s) => Ok(s),
            Raw::Toml(toml::Value::String(s)) => Ok(s),
            Raw::Toml(_) => Err(self.err(setting, "expected a string")),
        }
    }
}

/// Where values are looked up: parsed flags and environment, then the file's table.
struct Sources {
    matches: ArgMatches,
    file: toml::Table,
    file_name: String,
}

impl Sources {
    fn get(&mut self, setting: Setting, id: &str) -> Option<Value> {
        // Always take the file's value, so that a key overridden by a flag is not "unknown".
        let from_file = self.take_file(setting);
        match self.matches.get_one::<String>(id) {
            Some(v) => Some(Value {
                raw: Raw::Text(v.clone()),
                origin: self.origin(setting, id),
            }),
            None => from_file,
        }
    }

    fn origin(&self, setting: Setting, id: &str) -> String {
        match self.matches.value_source(id) {
            Some(ValueSource::EnvVariable) => format!("from {}", setting.env),
            _ => format!("from {}", setting.flag),
        }
    }

    fn take_file(&mut self, setting: Setting) -> Option<Value> {
        let (section, name) = setting.key.split_once('.')?;
        let table = self.file.get_mut(section)?.as_table_mut()?;
        let raw = table.remove(name)?;
        Some(Value {
            raw: Raw::Toml(raw),
            origin: format!("from {}", self.file_name),
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
        let matches = Cli::command().try_get_matches_from(args).map_err(LoadError::Usage)?;
        let mut cli = <Cli as clap::FromArgMatches>::from_arg_matches(&matches).map_err(LoadError::Usage)?;
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
            file,
            file_name,
        })?;
        Ok((cli, config))
    }

    fn from_sources(mut src: Sources) -> Result<Config, ConfigError> {
        let mut server = ServerConfig {
            listen: match src.get(LISTEN, "listen") {
                Some(v) => parse_addr(&v, LISTEN)?,
                None => SocketAddr::from(([127, 0, 0, 1], 8080)),
            },
            admin_listen: src
                .get(ADMIN_LISTEN, "admin_listen")
                .map(|v| parse_addr(&v, ADMIN_LISTEN))
                .transpose()?,
            workers: opt(src.get(WORKERS, "workers"), WORKERS, parse_count)?.unwrap_or(0),
            header_read_timeout: duration(
                &mut src,
                HEADER_READ_TIMEOUT,
                "header_read_timeout",
                Duration::from_secs(30),
            )?,
            body_read_timeout: duration(
                &mut src,
                BODY_READ_TIMEOUT,
                "body_read_timeout",
                Duration::from_secs(30),
            )?,
            max_connections: opt(
                src.get(MAX_CONNECTIONS, "max_connections"),
                MAX_CONNECTIONS,
                parse_count,
            )?
            .unwrap_or(0),
            listen_backlog: opt(src.get(LISTEN_BACKLOG, "listen_backlog"), LISTEN_BACKLOG, parse_count)?
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
                .unwrap_or(1024),
            max_header_size: opt(src.get(MAX_HEADER_SIZE, "max_header_size"), MAX_HEADER_SIZE, parse_size)?
                .unwrap_or(64 * 1024),
            shutdown_grace: duration(&mut src, SHUTDOWN_GRACE, "shutdown_grace", Duration::from_secs(30))?,
            forwarded_headers: flag(&mut src, FORWARDED_HEADERS, "forwarded_headers")?,
            tls: None,
            reload_interval: None,
        };
        let tls_cert = path(&mut src, TLS_CERT, "tls_cert_file")?;
        let tls_key = path(&mut src, TLS_KEY, "tls_key_file")?;
        server.tls = match (&tls_cert, &tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                Some(ServerTls::load(cert, key, [TLS_CERT.key, TLS_KEY.key]).map_err(tls_error)?)
            }
            (Some(_), None) => return Err(ConfigError::new(TLS_KEY.key, "checked", "a certificate needs its key")),
            (None, Some(_)) => return Err(ConfigError::new(TLS_CERT.key, "checked", "a key needs its certificate")),
        };
        let reload = duration(&mut src, RELOAD_INTERVAL, "reload_interval", Duration::from_secs(10))?;
        server.reload_interval = (!reload.is_zero()).then_some(reload);
        let nodes_from_file = src.take_file(NODES);
        let nodes_value = match src.matches.get_many::<String>("upstream") {
            Some(values) => Some(Value {
                raw: Raw::Toml(toml::Value::Array(
                    values.map(|s| toml::Value::String(s.clone())).collect(),
                )),
                origin: src.origin(NODES, "upstream"),
            }),
            None => nodes_from_file,
        };
        let nodes = match nodes_value {
            Some(v) => parse_nodes(&v)?,
            None => vec![NodeUrl {
                host: "127.0.0.1".into(),
                port: 9200,
                tls: false,
            }],
        };
        // Off by default: a 504 from esgate is retried by the official clients, so esgate's own
        // timeout must not decide where the client's would not (see `upstream::timed`).
        let response_timeout = duration(&mut src, RESPONSE_TIMEOUT, "response_timeout", Duration::ZERO)?;
        let upstream = UpstreamConfig {
            nodes,
            dev: flag(&mut src, DEV, "dev")?,
            dev_version: match src.get(DEV_VERSION, "dev_version") {
                Some(v) => {
                    let text = v.text(DEV_VERSION)?.trim();
                    if Version::parse(text).is_none() {
                        return Err(v.err(DEV_VERSION, "expected a version such as 9.5.0"));
                    }
                    text.to_owned()
                }
                None => crate::dev::DEFAULT_VERSION.to_owned(),
            },
            connect_timeout: duration(&mut src, CONNECT_TIMEOUT, "connect_timeout", Duration::from_secs(5))?,
            response_timeout: (!response_timeout.is_zero()).then_some(response_timeout),
            pool_idle_timeout: duration(
                &mut src,
                POOL_IDLE_TIMEOUT,
                "pool_idle_timeout",
                Duration::from_secs(50),
            )?,
            pool_max_idle_per_node: opt(
                src.get(POOL_MAX_IDLE, "pool_max_idle_per_node"),
                POOL_MAX_IDLE,
                parse_count,
            )?
            .unwrap_or(32),
            dead_node_backoff: duration(&mut src, DEAD_BACKOFF, "dead_node_backoff", Duration::from_secs(1))?,
            max_dead_node_backoff: duration(
                &mut src,
                MAX_DEAD_BACKOFF,
                "max_dead_node_backoff",
                Duration::from_secs(30),
            )?,
            rewrite_host: flag(&mut src, REWRITE_HOST, "rewrite_host")?,
            preserve_header_case: flag(&mut src, PRESERVE_CASE, "preserve_header_case")?,
            health_check_interval: duration(
                &mut src,
                HEALTH_CHECK_INTERVAL,
                "health_check_interval",
                Duration::from_secs(5),
            )?,
            version_check_interval: duration(
                &mut src,
                VERSION_CHECK_INTERVAL,
                "version_check_interval",
                Duration::from_secs(60),
            )?,
            credentials: upstream_credentials(&mut src)?,
            tls: None,
            tls_insecure: false,
        };
        let ca_file = path(&mut src, CA_FILE, "upstream_ca_file")?;
        let client_cert = path(&mut src, CLIENT_CERT, "upstream_client_cert_file")?;
        let client_key = path(&mut src, CLIENT_KEY, "upstream_client_key_file")?;
        let mut upstream = upstream;
        upstream.tls_insecure = flag(&mut src, TLS_INSECURE, "upstream_tls_insecure")?;
        let connector_error = ConnectorErrorConfig {
            max_body_size: opt(
                src.get(MAX_ERROR_BODY, "max_error_body_size"),
                MAX_ERROR_BODY,
                parse_size,
            )?
            .unwrap_or(100 * 1024 * 1024),
            max_buffered_bytes: opt(src.get(MAX_BUFFERED, "max_buffered_bytes"), MAX_BUFFERED, parse_size)?
                .unwrap_or(48 * 1024 * 1024),
            check_auth: flag(&mut src, CHECK_AUTH, "check_auth")?,
            auth_cache_ttl: duration(&mut src, AUTH_CACHE_TTL, "auth_cache_ttl", Duration::from_secs(30))?,
            report_only: flag(&mut src, REPORT_ONLY, "report_only")?,
            es_version: match src.get(ES_VERSION, "es_version") {
                Some(v) => Some(
                    EsVersion::parse(v.text(ES_VERSION)?)
                        .ok_or_else(|| v.err(ES_VERSION, "expected a version such as 9.2.1, or serverless"))?,
                ),
                None => None,
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
        let log = LogConfig {
            filter: match src.get(LOG_LEVEL, "log_level") {
                Some(v) => {
                    let text = v.text(LOG_LEVEL)?.to_owned();
                    tracing_subscriber::EnvFilter::try_new(&text).map_err(|e| v.err(LOG_LEVEL, e))?;
                    text
                }
                None => std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            },
            format: match src.get(LOG_FORMAT, "log_format") {
                Some(v) => match v.text(LOG_FORMAT)? {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    _ => return Err(v.err(LOG_FORMAT, "expected `text` or `json`")),
                },
                None => LogFormat::Text,
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
fn upstream_credentials(src: &mut Sources) -> Result<Option<Credentials>, ConfigError> {
    let username = src.get(UPSTREAM_USER, "upstream_username");
    let password = src.get(UPSTREAM_PASSWORD, "upstream_password");
    let api_key = src.get(UPSTREAM_API_KEY, "upstream_api_key");
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
fn audit(src: &mut Sources) -> Result<AuditConfig, ConfigError> {
    let stdout = flag(src, AUDIT_STDOUT, "audit_stdout")?;
    let file = match src.get(AUDIT_FILE, "audit_file") {
        Some(v) => match v.text(AUDIT_FILE)? {
            "" => return Err(v.err(AUDIT_FILE, "expected a file path")),
            path => Some(PathBuf::from(path)),
        },
        None => None,
    };
    let all_requests = flag(src, AUDIT_ALL, "audit_all_requests")?;
    let queue_size = number(src, AUDIT_QUEUE, "audit_queue_size", 1..=1 << 20)?.unwrap_or(8192);
    let max_error_length = opt(
        src.get(AUDIT_MAX_ERROR, "audit_max_error_length"),
        AUDIT_MAX_ERROR,
        parse_size,
    )?
    .unwrap_or(1024);
    let redact_error_secrets = flag(src, AUDIT_REDACT, "audit_redact_error_secrets")?;

    let url = src.get(AUDIT_ES_URL, "audit_elasticsearch_url");
    let data_stream = match src.get(AUDIT_ES_STREAM, "audit_elasticsearch_data_stream") {
        Some(v) => {
            let name = v.text(AUDIT_ES_STREAM)?;
            check_data_stream_name(name).map_err(|why| v.err(AUDIT_ES_STREAM, why))?;
            name.to_owned()
        }
        None => "logs-esgate.audit-default".to_owned(),
    };
    let api_key = src.get(AUDIT_ES_API_KEY, "audit_elasticsearch_api_key");
    let username = src.get(AUDIT_ES_USER, "audit_elasticsearch_username");
    let password = src.get(AUDIT_ES_PASSWORD, "audit_elasticsearch_password");
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
    let batch_size = number(src, AUDIT_ES_BATCH, "audit_elasticsearch_batch_size", 1..=100_000)?.unwrap_or(500);
    let flush_interval = duration(
        src,
        AUDIT_ES_FLUSH,
        "audit_elasticsearch_flush_interval",
        Duration::from_secs(1),
    )?;
    let buffer = number(src, AUDIT_ES_BUFFER, "audit_elasticsearch_buffer", 1..=10_000_000)?.unwrap_or(10_000);
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
        redact_error_secrets,
        elasticsearch,
    })
}

fn tls_error(e: crate::tls::TlsError) -> ConfigError {
    ConfigError::new(e.key, "checked", e.message)
}

fn path(src: &mut Sources, setting: Setting, id: &str) -> Result<Option<PathBuf>, ConfigError> {
    match src.get(setting, id) {
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
    src: &mut Sources,
    setting: Setting,
    id: &str,
    range: std::ops::RangeInclusive<usize>,
) -> Result<Option<usize>, ConfigError> {
    let Some(v) = src.get(setting, id) else {
        return Ok(None);
    };
    let n = match &v.raw {
        Raw::Toml(toml::Value::Integer(i)) => usize::try_from(*i).ok(),
        _ => v.text(setting)?.trim().parse().ok(),
    };
    match n.filter(|n| range.contains(n)) {
        Some(n) => Ok(Some(n)),
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

fn duration(src: &mut Sources, setting: Setting, id: &str, default: Duration) -> Result<Duration, ConfigError> {
    Ok(opt(src.get(setting, id), setting, parse_duration_value)?.unwrap_or(default))
}

fn flag(src: &mut Sources, setting: Setting, id: &str) -> Result<bool, ConfigError> {
    match src.get(setting, id) {
        None => Ok(false),
        Some(v) => match &v.raw {
            Raw::Toml(toml::Value::Boolean(b)) => Ok(*b),
            _ => match v.text(setting)? {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(v.err(setting, "expected true or false")),
            },
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

    fn load(args: &[&str]) -> Result<Config, LoadError> {
        Config::load_from(std::iter::once("esgate").chain(args.iter().copied())).map(|(_, c)| c)
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

    fn with_file(text: &str, args: &[&str]) -> Result<Config, LoadError> {
        let dir = std::env::temp_dir().join(format!("esgate-config-test-{}-{}", std::process::id(), text.len()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("esgate.toml");
        std::fs::write(&path, text).expect("write");
        let path_arg = format!("--config={}", path.display());
        let mut all = vec![path_arg.as_str()];
        all.extend_from_slice(args);
        let result = load(&all);
        let _ = std::fs::remove_dir_all(&dir);
        result
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

    #[test]
    fn every_setting_has_its_flag_and_env() {
        let cmd = Cli::command();
        for s in SETTINGS {
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_long().map(|l| format!("--{l}")) == Some(s.flag.to_owned()))
                .unwrap_or_else(|| panic!("no flag {}", s.flag));
            assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some(s.env), "{}", s.key);
        }
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

    #[test]
    fn the_readme_documents_every_setting() {
        let readme = include_str!("../README.md");
        for s in SETTINGS {
            for name in [s.key, s.flag, s.env] {
                assert!(
                    readme.contains(&format!("`{name}")),
                    "README.md does not document {name}"
                );
            }
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
