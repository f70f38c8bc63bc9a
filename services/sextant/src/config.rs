//! Sextant's one configuration struct: defaults, then a TOML file, then `SEXTANT_*`
//! environment variables (`__` separates levels: `SEXTANT_LIMITS__MAX_BODY_BYTES`), then
//! command-line flags. `sextant serve --dump-config` prints the result.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use sextant_auth::ApiKeyConfig;

/// The services a process runs. Any subset can run in one process; in a cluster each runs as
/// its own horizontally scaled deployment. None keeps state that stops it running as N replicas:
/// replicas share work through the bus's durable consumers and state through the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The REST and gRPC API for runs and projects: validates, publishes run events, answers
    /// queries from the store.
    Ingest,
    /// Consumes run events and folds them into the store (the read model `ingest` queries).
    Projector,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::Ingest, Role::Projector];

    pub fn name(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Projector => "projector",
        }
    }

    pub fn parse(s: &str) -> Result<Role, String> {
        let s = s.trim();
        Role::ALL.into_iter().find(|r| r.name() == s).ok_or_else(|| {
            format!("unknown role {s:?}; known roles: {}", Role::ALL.iter().map(|r| r.name()).collect::<Vec<_>>().join(", "))
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub roles: Vec<Role>,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    /// The server's address as clients reach it (`https://sextant.example.com`, with a path if
    /// it is served under one), for the links it hands out (feedback token URLs). Unset: the
    /// `http` listen address. Request headers (`Host`, `X-Forwarded-*`) are never used.
    pub public_url: Option<String>,
    pub data_dir: PathBuf,
    pub bus: BusConfig,
    pub storage: StorageConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    /// Connection handling of the HTTP and gRPC listeners: timeouts and caps.
    pub server: ServerConfig,
    pub log: LogConfig,
    /// Server-side evaluators: the LLM judge's OpenAI-compatible endpoint, model, key, limits
    /// and prices (`SEXTANT_JUDGE__BASE_URL`, `SEXTANT_JUDGE__API_KEY`, ...).
    pub judge: sextant_evaluator::scorers::JudgeSettings,
    /// Online evaluation rules (`[[online_eval]]`): filter, sampling, evaluators, watch window.
    pub online_eval: Vec<sextant_evaluator::online::OnlineRuleConfig>,
    /// Seconds to let in-flight requests finish on SIGTERM.
    pub shutdown_grace_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum BusConfig {
    /// Durable embedded event log under `<data_dir>/bus` (one process only).
    #[default]
    InProcess,
    /// NATS JetStream, shared by every replica of every service.
    Jetstream(sextant_bus::jetstream::JetStreamConfig),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StorageConfig {
    /// Embedded store under `<data_dir>/store` (one process only).
    #[default]
    Embedded,
    /// A ScyllaDB cluster shared by every replica; `sextant migrate` creates its schema.
    Scylla(sextant_storage::scylla::ScyllaConfig),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// API keys, each hashed and bound to a tenant. None: open single-tenant mode.
    pub api_keys: Vec<ApiKeyConfig>,
    /// Operator keys for `/admin` (dead letters). None with `api_keys` set: `/admin` is closed.
    pub admin_keys: Vec<sextant_auth::AdminKeyConfig>,
    /// Hex key for signing attachment URLs. Generated into `<data_dir>/signing.key` if unset.
    pub signing_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_body_bytes: usize,
    pub max_decoded_bytes: usize,
    pub max_runs_per_request: usize,
    pub max_query_limit: usize,
    /// Run events the projector may lag before ingest waits (0: off).
    pub max_projection_backlog: u64,
    /// Milliseconds a request waits for that backlog before a 503 with Retry-After.
    pub backpressure_wait_ms: u64,
    /// Decompressed request bytes all requests together may hold at once; past it a request
    /// waits briefly, then gets a 503 with Retry-After.
    pub max_decoded_bytes_in_flight: usize,
    /// Read your writes: a run query first waits up to this many milliseconds for the run
    /// projector to apply every event acknowledged before the query arrived (0: answer at once
    /// from what is projected).
    pub read_your_writes_wait_ms: u64,
    /// Writes are refused (507) while the data directory's filesystem has less free space
    /// than this, and resume by themselves once it has more (embedded bus; 0: off). The
    /// reserve is for projecting what was acknowledged and for compaction.
    pub min_free_disk_bytes: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let d = sextant_ingest::IngestLimits::default();
        Self {
            max_body_bytes: d.max_body_bytes,
            max_decoded_bytes: d.max_decoded_bytes,
            max_runs_per_request: d.max_runs_per_request,
            max_query_limit: d.max_query_limit,
            max_projection_backlog: d.max_projection_backlog,
            backpressure_wait_ms: d.backpressure_wait.as_millis() as u64,
            max_decoded_bytes_in_flight: d.max_decoded_bytes_in_flight,
            read_your_writes_wait_ms: d.read_your_writes_wait.as_millis() as u64,
            min_free_disk_bytes: 256 << 20,
        }
    }
}

/// How the listeners treat slow, idle and too many clients (`[server]`). Every timeout is in
/// seconds and must be > 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// A request's headers must arrive within this (from the connection's start, or from the
    /// first byte of a later request); else the connection is closed.
    pub header_read_timeout_secs: u64,
    /// A request body that goes this long without a byte gets a 408 and the connection closes.
    pub body_read_timeout_secs: u64,
    /// A whole request body must arrive within this (408 otherwise): with `max_body_bytes`,
    /// a minimum rate.
    pub body_read_deadline_secs: u64,
    /// A keep-alive connection with no request is closed after this.
    pub idle_timeout_secs: u64,
    /// A client that reads none of its response for this long is disconnected.
    pub send_timeout_secs: u64,
    /// Open HTTP connections; past it new ones get a 503 naming the limit. Lowered at start to
    /// fit the process's open-file limit (logged).
    pub max_connections: usize,
    /// TCP keep-alive probes on idle sockets of both listeners, after this many seconds.
    pub tcp_keepalive_secs: u64,
    /// Open gRPC connections; past it new ones get an HTTP/2 GOAWAY naming the limit.
    pub grpc_max_connections: usize,
    /// A gRPC connection with no call in flight is closed after this.
    pub grpc_idle_timeout_secs: u64,
    /// HTTP/2 pings to gRPC clients: every this many seconds, and the connection is closed
    /// if a ping is not answered within `grpc_keepalive_timeout_secs`.
    pub grpc_keepalive_interval_secs: u64,
    pub grpc_keepalive_timeout_secs: u64,
    /// A gRPC call (up to its response headers) is cancelled after this (or the client's
    /// shorter `grpc-timeout`).
    pub grpc_request_timeout_secs: u64,
    /// Concurrent calls on one gRPC connection (HTTP/2 MAX_CONCURRENT_STREAMS).
    pub grpc_max_concurrent_streams: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 30,
            body_read_deadline_secs: 300,
            idle_timeout_secs: 60,
            send_timeout_secs: 30,
            max_connections: 4096,
            tcp_keepalive_secs: 60,
            grpc_max_connections: 1024,
            grpc_idle_timeout_secs: 300,
            grpc_keepalive_interval_secs: 30,
            grpc_keepalive_timeout_secs: 10,
            grpc_request_timeout_secs: 300,
            grpc_max_concurrent_streams: 128,
        }
    }
}

impl ServerConfig {
    fn validate(&self) -> Result<(), String> {
        let secs = [
            ("header_read_timeout_secs", self.header_read_timeout_secs),
            ("body_read_timeout_secs", self.body_read_timeout_secs),
            ("body_read_deadline_secs", self.body_read_deadline_secs),
            ("idle_timeout_secs", self.idle_timeout_secs),
            ("send_timeout_secs", self.send_timeout_secs),
            ("tcp_keepalive_secs", self.tcp_keepalive_secs),
            ("grpc_idle_timeout_secs", self.grpc_idle_timeout_secs),
            ("grpc_keepalive_interval_secs", self.grpc_keepalive_interval_secs),
            ("grpc_keepalive_timeout_secs", self.grpc_keepalive_timeout_secs),
            ("grpc_request_timeout_secs", self.grpc_request_timeout_secs),
        ];
        // A year: beyond it a timeout is a typo.
        const MAX_SECS: u64 = 365 * 24 * 3600;
        if let Some((key, v)) = secs.iter().find(|(_, v)| *v == 0 || *v > MAX_SECS) {
            return Err(format!("server.{key}: must be between 1 and {MAX_SECS} seconds, got {v}"));
        }
        if self.body_read_deadline_secs < self.body_read_timeout_secs {
            return Err("server.body_read_deadline_secs: must be >= server.body_read_timeout_secs".into());
        }
        if self.max_connections == 0 {
            return Err("server.max_connections: must be > 0".into());
        }
        if self.grpc_max_connections == 0 {
            return Err("server.grpc_max_connections: must be > 0".into());
        }
        if self.grpc_max_concurrent_streams == 0 {
            return Err("server.grpc_max_concurrent_streams: must be > 0".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info,sextant_ingest=debug`. `RUST_LOG` overrides it.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Text, filter: "info".into() }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            roles: Role::ALL.to_vec(),
            http: "127.0.0.1:1984".parse().expect("valid address"),
            grpc: "127.0.0.1:1985".parse().expect("valid address"),
            public_url: None,
            data_dir: PathBuf::from("sextant-data"),
            bus: BusConfig::default(),
            storage: StorageConfig::default(),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            server: ServerConfig::default(),
            log: LogConfig::default(),
            judge: Default::default(),
            online_eval: Vec::new(),
            shutdown_grace_secs: 20,
        }
    }
}

/// Flags that override the file and environment.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub http: Option<SocketAddr>,
    pub grpc: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub roles: Option<Vec<Role>>,
}

const TOP_LEVEL_KEYS: [&str; 14] = [
    "roles",
    "http",
    "grpc",
    "public_url",
    "data_dir",
    "bus",
    "storage",
    "auth",
    "limits",
    "server",
    "log",
    "judge",
    "online_eval",
    "shutdown_grace_secs",
];

fn is_config_key(env_key: &str) -> bool {
    let top = env_key.split("__").next().unwrap_or_default().to_ascii_lowercase();
    TOP_LEVEL_KEYS.contains(&top.as_str())
}

impl Config {
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, String> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(f) = file {
            if !f.exists() {
                return Err(format!("config file {} does not exist", f.display()));
            }
            fig = fig.merge(Toml::file_exact(f));
        }
        // Only variables that name a configuration field: other SEXTANT_* variables (test
        // harnesses, scripts, SEXTANT_CONFIG) are not configuration.
        fig = fig.merge(Env::prefixed("SEXTANT_").filter(|k| is_config_key(k.as_str())).split("__"));
        let mut cfg: Config = fig.extract().map_err(|e| e.to_string())?;
        if let Some(a) = overrides.http {
            cfg.http = a;
        }
        if let Some(a) = overrides.grpc {
            cfg.grpc = a;
        }
        if let Some(d) = &overrides.data_dir {
            cfg.data_dir = d.clone();
        }
        if let Some(r) = &overrides.roles {
            cfg.roles = r.clone();
        }
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.roles.is_empty() {
            return Err("roles: at least one role is required".into());
        }
        if self.limits.max_body_bytes == 0 || self.limits.max_decoded_bytes < self.limits.max_body_bytes {
            return Err("limits: max_body_bytes must be > 0 and max_decoded_bytes >= max_body_bytes".into());
        }
        if self.limits.max_query_limit == 0 || self.limits.max_runs_per_request == 0 {
            return Err("limits: max_query_limit and max_runs_per_request must be > 0".into());
        }
        if self.limits.max_decoded_bytes_in_flight < self.limits.max_decoded_bytes {
            return Err(format!(
                "limits.max_decoded_bytes_in_flight: must be >= limits.max_decoded_bytes ({}), or no body that large could ever be decoded",
                self.limits.max_decoded_bytes
            ));
        }
        self.server.validate()?;
        if let Some(u) = &self.public_url {
            validate_public_url(u).map_err(|e| format!("public_url: {e}"))?;
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = self.roles.iter().find(|r| !seen.insert(**r)) {
            return Err(format!("roles: {} is listed twice", dup.name()));
        }
        if let BusConfig::Jetstream(js) = &self.bus {
            js.validate()?;
        }
        // The in-process bus belongs to one process: split roles could never hand work over.
        if !self.runs_every_role() && self.bus == BusConfig::InProcess {
            return Err(format!(
                "roles: running only {} needs a shared bus (bus.kind = \"jetstream\"): the in-process bus serves a single process",
                self.roles.iter().map(|r| r.name()).collect::<Vec<_>>().join(", ")
            ));
        }
        if let StorageConfig::Scylla(sc) = &self.storage {
            sc.validate().map_err(|e| format!("storage: {e}"))?;
        }
        sextant_auth::Authenticator::new(&self.auth.api_keys)
            .and_then(|a| a.with_admin_keys(&self.auth.admin_keys))
            .map_err(|e| e.to_string())?;
        if !self.judge.base_url.is_empty() {
            self.judge.validate().map_err(|e| format!("judge: {e}"))?;
        }
        sextant_evaluator::online::validate_rules(&self.online_eval, &self.judge)?;
        if let Some(k) = &self.auth.signing_key {
            match hex::decode(k) {
                Ok(b) if b.len() >= 16 => {}
                _ => return Err("auth.signing_key: must be at least 32 hex digits".into()),
            }
        }
        Ok(())
    }

    /// Where clients reach this server: `public_url` without a trailing `/`, else the `http`
    /// listen address (logged when that is a wildcard address no client can use).
    pub fn public_base_url(&self) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => {
                if self.http.ip().is_unspecified() {
                    tracing::warn!(http = %self.http, "public_url is not set: links this server hands out name {}; set public_url", self.http);
                }
                format!("http://{}", self.http)
            }
        }
    }

    pub fn runs_every_role(&self) -> bool {
        Role::ALL.iter().all(|r| self.roles.contains(r))
    }

    /// TOML with secrets (the signing key, the store's password) redacted.
    pub fn dump(&self) -> String {
        let mut c = self.clone();
        if c.auth.signing_key.is_some() {
            c.auth.signing_key = Some("<redacted>".into());
        }
        if let StorageConfig::Scylla(sc) = &mut c.storage {
            if sc.password.is_some() {
                sc.password = Some("<redacted>".into());
            }
        }
        toml::to_string_pretty(&c).unwrap_or_else(|e| format!("# cannot render config: {e}"))
    }

    pub fn ingest_limits(&self) -> sextant_ingest::IngestLimits {
        sextant_ingest::IngestLimits {
            max_body_bytes: self.limits.max_body_bytes,
            max_decoded_bytes: self.limits.max_decoded_bytes,
            max_runs_per_request: self.limits.max_runs_per_request,
            max_query_limit: self.limits.max_query_limit,
            max_projection_backlog: self.limits.max_projection_backlog,
            backpressure_wait: std::time::Duration::from_millis(self.limits.backpressure_wait_ms),
            max_decoded_bytes_in_flight: self.limits.max_decoded_bytes_in_flight,
            read_your_writes_wait: std::time::Duration::from_millis(self.limits.read_your_writes_wait_ms),
            ..Default::default()
        }
    }
}

/// An absolute `http(s)://host[:port][/path]` URL: no credentials, query or fragment.
fn validate_public_url(u: &str) -> Result<(), String> {
    let rest = u.strip_prefix("https://").or_else(|| u.strip_prefix("http://")).ok_or("must start with http:// or https://")?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Err(format!("{u:?} names no host"));
    }
    if let Some(c) = u.chars().find(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#' | '@' | '\\')) {
        return Err(format!("{u:?} must not contain {c:?} (no credentials, query or fragment)"));
    }
    // `host:port`, or `[v6]:port`: what follows the last `:` after any `]` is the port.
    let after_v6 = host.rfind(']').map_or(host, |i| &host[i + 1..]);
    if let Some((_, port)) = after_v6.rsplit_once(':') {
        if port.parse::<u16>().is_err() {
            return Err(format!("{u:?}: {port:?} is not a port"));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's signature, not ours
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_round_trip_through_dump() {
        let c = Config::default();
        c.validate().unwrap();
        let back: Config = toml::from_str(&c.dump()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn file_env_and_flags_layer_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.toml");
        std::fs::write(&f, "http = \"127.0.0.1:7000\"\n[limits]\nmax_body_bytes = 1000\nmax_decoded_bytes = 2000\n").unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("SEXTANT_LIMITS__MAX_QUERY_LIMIT", "50");
            jail.set_env("SEXTANT_BIN", "/not/configuration");
            let c = Config::load(Some(&f), &Overrides { grpc: Some("127.0.0.1:7001".parse().unwrap()), ..Default::default() }).unwrap();
            assert_eq!(c.http.port(), 7000);
            assert_eq!(c.grpc.port(), 7001);
            assert_eq!(c.limits.max_body_bytes, 1000);
            assert_eq!(c.limits.max_query_limit, 50);
            Ok(())
        });
    }

    #[test]
    fn bad_config_is_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.toml");
        std::fs::write(&f, "no_such_key = 1\n").unwrap();
        assert!(Config::load(Some(&f), &Overrides::default()).unwrap_err().contains("no_such_key"));
        std::fs::write(&f, "[[auth.api_keys]]\nname = \"k\"\nhash = \"plain\"\ntenant = \"00000000-0000-0000-0000-000000000001\"\n")
            .unwrap();
        assert!(Config::load(Some(&f), &Overrides::default()).unwrap_err().contains("sha256"));
        assert!(Config::load(Some(Path::new("/nonexistent.toml")), &Overrides::default()).is_err());
        std::fs::write(&f, "[bus]\nkind = \"jetstream\"\nservers = []\n").unwrap();
        assert!(Config::load(Some(&f), &Overrides::default()).unwrap_err().contains("bus.servers"));
        std::fs::write(&f, "[bus]\nkind = \"jetstream\"\nsevers = [\"nats://x:4222\"]\n").unwrap();
        assert!(Config::load(Some(&f), &Overrides::default()).unwrap_err().contains("severs"));
        let only_ingest = Overrides { roles: Some(vec![Role::Ingest]), ..Default::default() };
        std::fs::write(&f, "").unwrap();
        assert!(Config::load(Some(&f), &only_ingest).unwrap_err().contains("shared bus"));
    }

    #[test]
    fn jetstream_bus_is_configured_from_file_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.toml");
        std::fs::write(
            &f,
            "roles = [\"projector\"]\n[bus]\nkind = \"jetstream\"\nservers = [\"nats://nats-1:4222\", \"nats://nats-2:4222\"]\n",
        )
        .unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("SEXTANT_BUS__STREAM_REPLICAS", "3");
            let c = Config::load(Some(&f), &Overrides::default()).unwrap();
            assert_eq!(c.roles, vec![Role::Projector]);
            let BusConfig::Jetstream(js) = &c.bus else { panic!("expected jetstream, got {:?}", c.bus) };
            assert_eq!(js.servers, vec!["nats://nats-1:4222", "nats://nats-2:4222"]);
            assert_eq!(js.stream_replicas, 3);
            assert_eq!(js.prefix, "sextant");
            let back: Config = toml::from_str(&c.dump()).unwrap();
            assert_eq!(back, c);
            Ok(())
        });
    }

    #[test]
    fn scylla_storage_is_configured_with_region_pinned_replication() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.toml");
        std::fs::write(
            &f,
            "[storage]\nkind = \"scylla\"\ncontact_points = [\"scylla-eu-1:9042\"]\nlocal_datacenter = \"eu-west-1\"\nusername = \"sextant\"\npassword = \"hunter2\"\n\
             [storage.replication]\nstrategy = \"NetworkTopologyStrategy\"\n[storage.replication.datacenters]\n\"eu-west-1\" = 3\n\"eu-central-1\" = 3\n",
        )
        .unwrap();
        let c = Config::load(Some(&f), &Overrides::default()).unwrap();
        let StorageConfig::Scylla(sc) = &c.storage else { panic!("expected scylla, got {:?}", c.storage) };
        assert_eq!(sc.local_datacenter.as_deref(), Some("eu-west-1"));
        let replication = sc.replication_cql();
        assert!(replication.contains("'eu-west-1': 3") && replication.contains("'eu-central-1': 3"), "{replication}");
        assert!(!c.dump().contains("hunter2"), "the password is redacted");
        std::fs::write(&f, "[storage]\nkind = \"scylla\"\n[storage.replication]\nstrategy = \"NetworkTopologyStrategy\"\n").unwrap();
        assert!(Config::load(Some(&f), &Overrides::default()).unwrap_err().contains("storage"));
    }

    #[test]
    fn server_and_decode_limits_are_validated_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.toml");
        for (toml, key) in [
            ("[server]\nheader_read_timeout_secs = 0\n", "server.header_read_timeout_secs"),
            ("[server]\nidle_timeout_secs = 0\n", "server.idle_timeout_secs"),
            ("[server]\ngrpc_idle_timeout_secs = 0\n", "server.grpc_idle_timeout_secs"),
            ("[server]\nbody_read_timeout_secs = 40\nbody_read_deadline_secs = 30\n", "server.body_read_deadline_secs"),
            ("[server]\nmax_connections = 0\n", "server.max_connections"),
            ("[server]\ngrpc_max_connections = 0\n", "server.grpc_max_connections"),
            ("[server]\nmax_conections = 10\n", "max_conections"),
            ("[limits]\nmax_decoded_bytes_in_flight = 1000\n", "limits.max_decoded_bytes_in_flight"),
        ] {
            std::fs::write(&f, toml).unwrap();
            let err = Config::load(Some(&f), &Overrides::default()).unwrap_err();
            assert!(err.contains(key), "{toml}: {err}");
        }
        std::fs::write(&f, "[server]\nmax_connections = 50\nidle_timeout_secs = 2\n").unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("SEXTANT_SERVER__GRPC_MAX_CONNECTIONS", "7");
            let c = Config::load(Some(&f), &Overrides::default()).unwrap();
            assert_eq!((c.server.max_connections, c.server.idle_timeout_secs, c.server.grpc_max_connections), (50, 2, 7));
            assert_eq!(c.server.header_read_timeout_secs, 10, "unset keys keep their defaults");
            Ok(())
        });
    }

    #[test]
    fn roles_parse_by_name() {
        assert_eq!(Role::parse(" projector").unwrap(), Role::Projector);
        assert!(Role::parse("feedbak").unwrap_err().contains("known roles: ingest, projector"));
    }

    #[test]
    fn public_url_is_validated_and_defaults_to_the_listen_address() {
        let mut c = Config::default();
        assert_eq!(c.public_base_url(), "http://127.0.0.1:1984");
        for ok in ["https://sextant.example.com", "https://sextant.example.com/", "http://10.0.0.5:8080/sextant", "http://[::1]:1984"] {
            c.public_url = Some(ok.into());
            c.validate().unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        c.public_url = Some("https://sextant.example.com/obs/".into());
        assert_eq!(c.public_base_url(), "https://sextant.example.com/obs");
        for bad in [
            "sextant.example.com",
            "ftp://x",
            "https://",
            "https://:80",
            "https://a b",
            "https://u:p@host",
            "https://h/?x=1",
            "https://h:99999",
        ] {
            c.public_url = Some(bad.into());
            assert!(c.validate().unwrap_err().starts_with("public_url"), "{bad} was accepted");
        }
        let back: Config = toml::from_str(&c.dump()).unwrap();
        assert_eq!(back.public_url, c.public_url);
    }
}
