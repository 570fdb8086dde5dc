//! The configuration file: read raw with serde, then turned once into typed values.
//!
//! The rest of simgate only sees [`Config`]; it never re-checks a string from the file.
//! Field docs on the raw structs are the documentation of each key (see config/simgate.toml).

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::safety::{FindingCode, Tolerances};
use regex::Regex;
use serde::{Deserialize, Serialize};

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    // The TOML error (line, caret, what was expected) is the source: `{:#}` prints it after.
    #[error("config file {path}")]
    Syntax {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("config file {path}: key `{key}`: {problem}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        problem: String,
    },
}

/// An application entity title: 1 to 16 characters of the default repertoire, no backslash,
/// not all spaces; leading and trailing spaces are not significant (PS3.5 AE).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct AeTitle(String);

/// Why a text is not an AE title.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AeTitleError {
    #[error("an AE title cannot be empty")]
    Empty,
    #[error("AE title {0:?} is longer than 16 characters")]
    TooLong(String),
    #[error("AE title {title:?} contains {character:?}")]
    BadCharacter { title: String, character: char },
}

impl AeTitle {
    pub fn parse(raw: &str) -> Result<Self, AeTitleError> {
        let trimmed = raw.trim_matches(' ');
        if trimmed.is_empty() {
            return Err(AeTitleError::Empty);
        }
        if trimmed.len() > 16 {
            return Err(AeTitleError::TooLong(trimmed.to_string()));
        }
        if let Some(bad) = trimmed
            .chars()
            .find(|c| !c.is_ascii() || c.is_ascii_control() || *c == '\\')
        {
            return Err(AeTitleError::BadCharacter {
                title: trimmed.to_string(),
                character: bad,
            });
        }
        Ok(Self(trimmed.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AeTitle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How hard simgate works to make a stored instance survive a crash before acknowledging it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// fsync the file and its directory, and the SQLite commit, before answering success:
    /// survives power loss.
    Fsync,
    /// Leave flushing to the operating system: survives a crash of simgate, not of the machine.
    Os,
}

impl Durability {
    /// As the config writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Fsync => "fsync",
            Durability::Os => "os",
        }
    }
}

/// The whole resolved configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub listener: ListenerConfig,
    pub storage: StorageConfig,
    pub naming: NamingConfig,
    pub forward: ForwardConfig,
    pub destinations: Vec<DestinationConfig>,
    pub storage_commitment: StorageCommitmentConfig,
    pub query_retrieve: QueryRetrieveConfig,
    pub safety: SafetyConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
    /// The file this was read from, for messages (check-config says it in its header).
    #[serde(skip)]
    pub source: PathBuf,
}

/// How log lines are written (standard error).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter: a default level and per-module ones, e.g.
    /// `"info,simgate::forward=debug"`. `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Debug, Clone, Serialize)]
pub struct ListenerConfig {
    pub ae_title: AeTitle,
    pub bind: SocketAddr,
    pub require_called_ae_title: bool,
    /// Empty: any calling AE title is accepted.
    pub allowed_calling_ae_titles: BTreeSet<AeTitle>,
    /// Empty: any peer address is accepted.
    pub allowed_peer_addresses: BTreeSet<IpAddr>,
    pub max_associations: usize,
    /// Associations one peer address may hold at once (counted once negotiated).
    pub max_associations_per_address: usize,
    /// A new connection's A-ASSOCIATE-RQ must arrive (and be answered) within this.
    #[serde(with = "humantime_serde_compat")]
    pub association_request_timeout: Duration,
    pub max_pdu_length: u32,
    #[serde(with = "humantime_serde_compat")]
    pub idle_timeout: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub write_timeout: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub shutdown_deadline: Duration,
    pub extra_sop_classes: Vec<String>,
    /// Empty: every standard storage SOP class (plus `extra_sop_classes`). Otherwise only these.
    pub only_sop_classes: Vec<String>,
    pub tls: Option<ListenerTlsConfig>,
}

/// The TLS listener beside the plain one (`[listener.tls]`).
#[derive(Debug, Clone, Serialize)]
pub struct ListenerTlsConfig {
    pub bind: SocketAddr,
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    /// Set: a client certificate signed by this CA is required (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// TLS towards a destination (`tls = { ca = ..., certificate = ..., private_key = ... }`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DestinationTlsConfig {
    /// The CA the destination's certificate must be signed by.
    pub ca: PathBuf,
    /// simgate's own certificate and key, for destinations that ask for one.
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// HTTPS for the web side (`[http.tls]`).
#[derive(Debug, Clone, Serialize)]
pub struct HttpTlsConfig {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct StorageConfig {
    pub dir: PathBuf,
    pub durability: Durability,
    pub reserve_free_bytes: u64,
    /// A spool file is deleted once every destination has it and this long has passed.
    #[serde(with = "humantime_serde_compat")]
    pub retention: Duration,
}

/// A DICOM destination (the TPS first of all) that receives every matching instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DestinationConfig {
    pub name: String,
    pub ae_title: AeTitle,
    /// host:port, resolved at each connection.
    pub address: String,
    pub calling_ae_title: AeTitle,
    /// Only these SOP classes (empty: all).
    pub sop_classes: Vec<String>,
    /// Only these modalities (empty: all).
    pub modalities: Vec<String>,
    /// Only instances received from these calling AE titles (empty: all).
    pub from_calling_ae_titles: Vec<AeTitle>,
    pub tls: Option<DestinationTlsConfig>,
    /// Instances carrying any of these findings wait, held, until an admin releases them.
    pub hold_on: Vec<FindingCode>,
    pub forward_when: ForwardWhen,
}

/// When a destination gets a series' instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardWhen {
    /// Each instance as soon as it is stored (pipelined).
    Received,
    /// A series once its geometry check found nothing (after `safety.series_quiet_period`);
    /// a series with findings is held.
    SeriesChecked,
}

/// The safety gate's settings (`[safety]`).
#[derive(Debug, Clone, Serialize)]
pub struct SafetyConfig {
    /// A series is checked once no instance of it arrived for this long.
    #[serde(with = "humantime_serde_compat")]
    pub series_quiet_period: Duration,
    /// Written as `[safety]` keys, as the file has them.
    #[serde(flatten)]
    pub tolerances: Tolerances,
}

/// A remote AE known by title, and where to connect to reach it.
#[derive(Debug, Clone, Serialize)]
pub struct RemoteAe {
    pub ae_title: AeTitle,
    /// host:port.
    pub address: String,
}

/// When an instance counts as committed in a Storage Commitment report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommittedWhen {
    /// Durably stored and indexed by simgate.
    Stored,
    /// Also delivered to the destinations in `delivered_to`.
    Delivered,
}

#[derive(Debug, Clone, Serialize)]
pub struct StorageCommitmentConfig {
    pub committed_when: CommittedWhen,
    /// With `delivered`: these destinations (by name); empty: every destination the instance
    /// is queued for.
    pub delivered_to: Vec<String>,
    /// Where to send a report when the requester released the association first.
    pub requesters: Vec<RemoteAe>,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueryRetrieveConfig {
    /// AEs that may be named as C-MOVE destination without receiving any forwarding (the
    /// `[[destinations]]` AEs may be named too).
    pub move_destinations: Vec<RemoteAe>,
    /// A C-FIND answers at most this many matches, then ends with an Error Comment saying so.
    pub max_matches: usize,
}

impl Config {
    /// Where to connect to reach an AE title: a Storage Commitment requester, a move
    /// destination or a forwarding destination, in that order.
    pub fn address_of(&self, ae_title: &AeTitle) -> Option<&str> {
        self.storage_commitment
            .requesters
            .iter()
            .chain(&self.query_retrieve.move_destinations)
            .find(|remote| remote.ae_title == *ae_title)
            .map(|remote| remote.address.as_str())
            .or_else(|| {
                self.destinations
                    .iter()
                    .find(|d| d.ae_title == *ae_title)
                    .map(|d| d.address.as_str())
            })
    }
}

/// Who may use the web pages and the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything.
    Viewer,
    /// Also documents medical reasons.
    Physician,
    /// Also acts on the forward queue.
    Admin,
}

impl Role {
    /// Physicians and admins document medical reasons.
    pub fn may_document_reasons(self) -> bool {
        self >= Role::Physician
    }

    /// Admins retry and re-send the forward queue and import nomenclatures.
    pub fn may_act_on_queue(self) -> bool {
        self == Role::Admin
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Physician => "physician",
            Role::Admin => "admin",
        }
    }
}

/// One user of the web pages and the API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    pub role: Role,
    /// Argon2 PHC string, from `simgate user add NAME`.
    pub password_hash: String,
    /// `sha256:` and the hex SHA-256 of an API token (`Authorization: Bearer TOKEN`), optional.
    #[serde(default)]
    pub api_token_hash: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HttpConfig {
    /// `None`: the HTTP side is off.
    pub bind: Option<SocketAddr>,
    pub users: Vec<UserConfig>,
    #[serde(with = "humantime_serde_compat")]
    pub session_lifetime: Duration,
    /// Connections served at once; more are closed at once.
    pub max_connections: usize,
    /// A request's head must arrive within this (also ends idle keep-alive connections).
    #[serde(with = "humantime_serde_compat")]
    pub header_read_timeout: Duration,
    /// A request must be answered within this.
    #[serde(with = "humantime_serde_compat")]
    pub request_timeout: Duration,
    pub tls: Option<HttpTlsConfig>,
    /// A TLS proxy in front terminates HTTPS: a plain bind beyond loopback is allowed then,
    /// and cookies are marked Secure.
    pub behind_tls_proxy: bool,
    /// Times on the pages and in the CLI's text are shown in this zone.
    pub time_zone: crate::clock::DisplayZone,
}

impl HttpConfig {
    /// Browsers reach the pages over HTTPS (here or at a proxy): cookies are marked Secure.
    pub fn https(&self) -> bool {
        self.tls.is_some() || self.behind_tls_proxy
    }
}

/// How forwarders retry and pace themselves.
#[derive(Debug, Clone, Serialize)]
pub struct ForwardConfig {
    #[serde(with = "humantime_serde_compat")]
    pub initial_backoff: Duration,
    pub backoff_multiplier: f64,
    #[serde(with = "humantime_serde_compat")]
    pub max_backoff: Duration,
    pub max_attempts: u32,
    #[serde(with = "humantime_serde_compat")]
    pub idle_release: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub response_timeout: Duration,
    pub max_pdu_length: u32,
    /// While a destination cannot be reached, a C-ECHO this often tells when it is back.
    #[serde(with = "humantime_serde_compat")]
    pub probe_interval: Duration,
}

impl StorageConfig {
    pub fn database_path(&self) -> PathBuf {
        self.dir.join("simgate.db")
    }
}

/// A medical reason a radiation oncologist can document for a nonstandard study name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasonChoice {
    /// Short stable code stored with each record, e.g. `rt-planning`.
    pub code: String,
    /// What people see.
    pub label: String,
    /// A note must accompany this reason (e.g. "other").
    #[serde(default)]
    pub note_required: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct NamingConfig {
    /// `None`: the copy of config/nomenclature/standard-names.csv built into simgate.
    pub builtin_nomenclature: Option<PathBuf>,
    /// `None`: the copy of config/nomenclature/series-rules.toml built into simgate.
    pub series_rules: Option<PathBuf>,
    pub radlex_scheme_designators: Vec<String>,
    pub loinc_scheme_designators: Vec<String>,
    pub series_findings_need_reason: bool,
    pub ct_simulator_ae_titles: Vec<String>,
    pub ct_simulator_station_names: Vec<String>,
    /// Compiled once here; printed back as the patterns written.
    #[serde(serialize_with = "patterns_as_text")]
    pub planning_patterns: Vec<Regex>,
    pub rt_planning_reason: String,
    pub reasons: Vec<ReasonChoice>,
    /// Standard names less similar than this (0..1) are not suggested.
    pub suggestion_floor: f64,
}

fn patterns_as_text<S: serde::Serializer>(patterns: &[Regex], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(patterns.iter().map(Regex::as_str))
}

impl NamingConfig {
    pub fn reason(&self, code: &str) -> Option<&ReasonChoice> {
        self.reasons.iter().find(|r| r.code == code)
    }
}

/// The part of the configuration that `SIGHUP` re-reads without a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadablePolicy {
    pub allowed_calling_ae_titles: BTreeSet<AeTitle>,
    pub allowed_peer_addresses: BTreeSet<IpAddr>,
    pub reserve_free_bytes: u64,
}

impl Config {
    pub fn reloadable_policy(&self) -> ReloadablePolicy {
        ReloadablePolicy {
            allowed_calling_ae_titles: self.listener.allowed_calling_ae_titles.clone(),
            allowed_peer_addresses: self.listener.allowed_peer_addresses.clone(),
            reserve_free_bytes: self.storage.reserve_free_bytes,
        }
    }

    /// What SIGHUP puts in force from `next`: this config with `next`'s allow-lists,
    /// free-space reserve, naming rules, destinations and users; and the keys in which `next`
    /// still differs from that (they need a restart), dotted (`listener.bind`).
    pub fn reloaded(&self, next: &Config) -> (Config, Vec<String>) {
        let mut live = self.clone();
        live.listener.allowed_calling_ae_titles = next.listener.allowed_calling_ae_titles.clone();
        live.listener.allowed_peer_addresses = next.listener.allowed_peer_addresses.clone();
        live.storage.reserve_free_bytes = next.storage.reserve_free_bytes;
        live.naming = next.naming.clone();
        live.destinations = next.destinations.clone();
        // A destination called as the listener's AE title (its default) keeps the running
        // listener's title: a new listener.ae_title applies after a restart, to both at once,
        // so a TPS never sees simgate call as a title it does not yet answer to.
        if next.listener.ae_title != self.listener.ae_title {
            for destination in &mut live.destinations {
                if destination.calling_ae_title == next.listener.ae_title {
                    destination.calling_ae_title = self.listener.ae_title.clone();
                }
            }
        }
        live.http.users = next.http.users.clone();
        let mut restart = Vec::new();
        match (toml::Value::try_from(&live), toml::Value::try_from(next)) {
            (Ok(live), Ok(next)) => differing_keys("", &live, &next, &mut restart),
            _ => restart.push("(the config could not be compared)".into()),
        }
        (live, restart)
    }

    /// Reads and resolves a config file. Relative paths in it are taken from the file's folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: absolute(path),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let path = &absolute(path);
        let raw: RawConfig = toml::from_str(text).map_err(|source| ConfigError::Syntax {
            path: path.clone(),
            source,
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        Resolver { path, base: &base }.resolve(raw)
    }
}

/// The dotted keys under which `a` and `b` differ (tables walked, other values compared).
fn differing_keys(prefix: &str, a: &toml::Value, b: &toml::Value, out: &mut Vec<String>) {
    match (a, b) {
        (toml::Value::Table(a), toml::Value::Table(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => differing_keys(&path, x, y, out),
                    _ => out.push(path),
                }
            }
        }
        _ if a != b => out.push(prefix.to_string()),
        _ => {}
    }
}

/// What is wrong with a web user's name, if anything: it must be one that can sign in (HTTP
/// Basic credentials end the name at the first colon) and that a log line shows as typed.
pub fn user_name_problem(name: &str) -> Option<String> {
    if name.trim().is_empty() {
        Some("a user name cannot be empty".into())
    } else if name.contains(':') {
        Some(format!(
            "user name {name:?} has a colon, which HTTP Basic sign-in cannot carry"
        ))
    } else if name.trim() != name || name.chars().any(char::is_control) {
        Some(format!(
            "user name {name:?} has spaces around it or control characters"
        ))
    } else {
        None
    }
}

/// `[log] level`: comma-separated directives, each a level or `module=level`. The filter's
/// own parser takes a bare word for a module name, so `"warning"` would keep only the lines
/// of a module called "warning", that is none, and say nothing: a bare word must be a level.
fn check_log_filter(filter: &str) -> Result<(), String> {
    use tracing_subscriber::filter::LevelFilter;
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = directive
            .rsplit_once('=')
            .map_or(directive, |(_, level)| level);
        if level.parse::<LevelFilter>().is_err() {
            return Err(format!("{level:?} is not a level"));
        }
    }
    tracing_subscriber::EnvFilter::try_new(filter)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// `path` made absolute (from the working folder) with `.` and `..` taken out, without
/// following links: what an operator reads in errors and in `check-config`.
pub fn absolute(path: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(path)
    };
    let mut clean = PathBuf::new();
    for part in joined.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                clean.pop();
            }
            other => clean.push(other),
        }
    }
    clean
}

struct Resolver<'a> {
    path: &'a Path,
    base: &'a Path,
}

impl Resolver<'_> {
    fn invalid(&self, key: &'static str, problem: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            key,
            problem: problem.into(),
        }
    }

    fn duration(&self, key: &'static str, raw: &str) -> Result<Duration, ConfigError> {
        let value = humantime::parse_duration(raw).map_err(|e| {
            self.invalid(
                key,
                format!("{raw:?} is not a duration ({e}); write e.g. \"30s\""),
            )
        })?;
        if value.is_zero() {
            return Err(self.invalid(key, "must be greater than zero"));
        }
        Ok(value)
    }

    fn safety(&self, raw: RawSafety) -> Result<SafetyConfig, ConfigError> {
        let positive = |key: &'static str, value: f64| {
            if value.is_finite() && value > 0.0 {
                Ok(value)
            } else {
                Err(self.invalid(key, format!("{value} must be a number above zero")))
            }
        };
        if raw.gap_factor <= 1.0 {
            return Err(self.invalid(
                "safety.gap_factor",
                "must be above 1 (1.5: a step 1.5 times the usual spacing is a gap)",
            ));
        }
        Ok(SafetyConfig {
            series_quiet_period: self
                .duration("safety.series_quiet_period", &raw.series_quiet_period)?,
            tolerances: Tolerances {
                duplicate_mm: positive("safety.duplicate_mm", raw.duplicate_mm)?,
                gap_factor: positive("safety.gap_factor", raw.gap_factor)?,
                spacing_tolerance_mm: positive(
                    "safety.spacing_tolerance_mm",
                    raw.spacing_tolerance_mm,
                )?,
                orientation_tolerance: positive(
                    "safety.orientation_tolerance",
                    raw.orientation_tolerance,
                )?,
                pixel_spacing_tolerance_mm: positive(
                    "safety.pixel_spacing_tolerance_mm",
                    raw.pixel_spacing_tolerance_mm,
                )?,
                tilt_tolerance_degrees: positive(
                    "safety.tilt_tolerance_degrees",
                    raw.tilt_tolerance_degrees,
                )?,
                min_planning_slices: raw.min_planning_slices,
            },
        })
    }

    fn resolve(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let l = raw.listener;
        let ae_title = AeTitle::parse(&l.ae_title)
            .map_err(|e| self.invalid("listener.ae_title", e.to_string()))?;
        let bind: SocketAddr = l.bind.parse().map_err(|_| {
            self.invalid(
                "listener.bind",
                format!(
                    "{:?} is not an address:port such as \"127.0.0.1:11112\"",
                    l.bind
                ),
            )
        })?;
        let allowed_calling_ae_titles = l
            .allowed_calling_ae_titles
            .iter()
            .map(|t| AeTitle::parse(t))
            .collect::<Result<_, _>>()
            .map_err(|e| self.invalid("listener.allowed_calling_ae_titles", e.to_string()))?;
        let allowed_peer_addresses = l
            .allowed_peer_addresses
            .iter()
            .map(|a| {
                a.parse::<IpAddr>()
                    .map_err(|_| format!("{a:?} is not an IP address"))
            })
            .collect::<Result<_, _>>()
            .map_err(|e| self.invalid("listener.allowed_peer_addresses", e))?;
        if l.max_associations == 0 {
            return Err(self.invalid("listener.max_associations", "must be at least 1"));
        }
        if l.max_associations_per_address == 0 {
            return Err(self.invalid(
                "listener.max_associations_per_address",
                "must be at least 1",
            ));
        }
        // PS3.8 allows any size; dicom-ul accepts 4 KiB .. 4 GiB. Above 16 MiB a single PDU
        // would make per-association memory large for no speed gain.
        if !(4096..=16 * 1024 * 1024).contains(&l.max_pdu_length) {
            return Err(self.invalid(
                "listener.max_pdu_length",
                format!("{} is outside 4096 ..= 16777216", l.max_pdu_length),
            ));
        }
        for uid in l.extra_sop_classes.iter().chain(&l.only_sop_classes) {
            if !crate::dicom::uid::is_valid_uid(uid) {
                return Err(self.invalid(
                    "listener.extra_sop_classes",
                    format!("{uid:?} is not a valid UID"),
                ));
            }
        }
        let listener = ListenerConfig {
            ae_title,
            bind,
            require_called_ae_title: l.require_called_ae_title,
            allowed_calling_ae_titles,
            allowed_peer_addresses,
            max_associations: l.max_associations,
            max_associations_per_address: l.max_associations_per_address,
            association_request_timeout: self.duration(
                "listener.association_request_timeout",
                &l.association_request_timeout,
            )?,
            max_pdu_length: l.max_pdu_length,
            idle_timeout: self.duration("listener.idle_timeout", &l.idle_timeout)?,
            write_timeout: self.duration("listener.write_timeout", &l.write_timeout)?,
            shutdown_deadline: self.duration("listener.shutdown_deadline", &l.shutdown_deadline)?,
            extra_sop_classes: l.extra_sop_classes,
            only_sop_classes: l.only_sop_classes,
            tls: match l.tls {
                None => None,
                Some(t) => Some(ListenerTlsConfig {
                    bind: t.bind.parse().map_err(|_| {
                        self.invalid(
                            "listener.tls.bind",
                            format!(
                                "{:?} is not an address:port such as \"127.0.0.1:2762\"",
                                t.bind
                            ),
                        )
                    })?,
                    certificate: self.path_from_base(t.certificate),
                    private_key: self.path_from_base(t.private_key),
                    client_ca: t.client_ca.map(|p| self.path_from_base(p)),
                }),
            },
        };
        if listener
            .tls
            .as_ref()
            .is_some_and(|t| t.bind == listener.bind && t.bind.port() != 0)
        {
            return Err(self.invalid(
                "listener.tls.bind",
                "must differ from listener.bind: the plain and the TLS listener run side by side",
            ));
        }

        let s = raw.storage;
        if s.dir.as_os_str().is_empty() {
            return Err(self.invalid("storage.dir", "must name a folder"));
        }
        let dir = self.path_from_base(s.dir);
        if dir.exists() && !dir.is_dir() {
            return Err(self.invalid(
                "storage.dir",
                format!("{} is a file, not a folder", dir.display()),
            ));
        }
        // A size with its unit ("2 GiB"), or a plain count of bytes.
        let reserve_free_bytes = match &s.reserve_free_bytes {
            toml::Value::Integer(bytes) if *bytes >= 0 => bytes.unsigned_abs(),
            toml::Value::String(text) => text
                .parse::<bytesize::ByteSize>()
                .map_err(|e| {
                    self.invalid(
                        "storage.reserve_free_bytes",
                        format!("{text:?} is not a size ({e}); write e.g. \"2 GiB\""),
                    )
                })?
                .as_u64(),
            other => {
                return Err(self.invalid(
                    "storage.reserve_free_bytes",
                    format!("{other} is not a size; write e.g. \"2 GiB\" or a number of bytes"),
                ));
            }
        };
        let storage = StorageConfig {
            dir,
            durability: s.durability,
            reserve_free_bytes,
            retention: self.duration("storage.retention", &s.retention)?,
        };
        let naming = self.naming(raw.naming)?;
        let f = raw.forward;
        if !(f.backoff_multiplier >= 1.0 && f.backoff_multiplier <= 10.0) {
            return Err(self.invalid("forward.backoff_multiplier", "must be between 1 and 10"));
        }
        if f.max_attempts == 0 {
            return Err(self.invalid("forward.max_attempts", "must be at least 1"));
        }
        if !(4096..=16 * 1024 * 1024).contains(&f.max_pdu_length) {
            return Err(self.invalid("forward.max_pdu_length", "must be within 4096 ..= 16777216"));
        }
        let forward = ForwardConfig {
            initial_backoff: self.duration("forward.initial_backoff", &f.initial_backoff)?,
            backoff_multiplier: f.backoff_multiplier,
            max_backoff: self.duration("forward.max_backoff", &f.max_backoff)?,
            max_attempts: f.max_attempts,
            idle_release: self.duration("forward.idle_release", &f.idle_release)?,
            connect_timeout: self.duration("forward.connect_timeout", &f.connect_timeout)?,
            response_timeout: self.duration("forward.response_timeout", &f.response_timeout)?,
            max_pdu_length: f.max_pdu_length,
            probe_interval: self.duration("forward.probe_interval", &f.probe_interval)?,
        };
        let mut destinations: Vec<DestinationConfig> = Vec::new();
        for d in raw.destinations {
            if d.name.is_empty()
                || !d
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(self.invalid(
                    "destinations.name",
                    format!("{:?} must be letters, digits, - or _", d.name),
                ));
            }
            if destinations.iter().any(|other| other.name == d.name) {
                return Err(
                    self.invalid("destinations.name", format!("{:?} appears twice", d.name))
                );
            }
            if !valid_address(&d.address) {
                return Err(self.invalid(
                    "destinations.address",
                    format!("{:?} is not host:port", d.address),
                ));
            }
            let ae = |raw: &str| {
                AeTitle::parse(raw)
                    .map_err(|e| self.invalid("destinations.ae_title", e.to_string()))
            };
            let hold_on = d
                .hold_on
                .iter()
                .map(|code| {
                    FindingCode::parse(code).ok_or_else(|| {
                        self.invalid(
                            "destinations.hold_on",
                            format!(
                                "{}: {code:?} is not a finding code; use {}",
                                d.name,
                                FindingCode::ALL.map(FindingCode::as_str).join(", ")
                            ),
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
            destinations.push(DestinationConfig {
                hold_on,
                forward_when: d.forward_when,
                ae_title: ae(&d.ae_title)?,
                calling_ae_title: match &d.calling_ae_title {
                    Some(calling) => ae(calling)?,
                    None => listener.ae_title.clone(),
                },
                from_calling_ae_titles: d
                    .from_calling_ae_titles
                    .iter()
                    .map(|a| ae(a))
                    .collect::<Result<_, _>>()?,
                tls: match d.tls {
                    None => None,
                    Some(t) => Some(DestinationTlsConfig {
                        ca: self.path_from_base(t.ca),
                        identity: match (t.certificate, t.private_key) {
                            (Some(c), Some(k)) => {
                                Some((self.path_from_base(c), self.path_from_base(k)))
                            }
                            (None, None) => None,
                            _ => {
                                return Err(self.invalid(
                                    "destinations.tls",
                                    format!("{}: certificate and private_key go together", d.name),
                                ));
                            }
                        },
                    }),
                },
                name: d.name,
                address: d.address,
                sop_classes: d.sop_classes,
                modalities: d.modalities,
            });
        }
        let remote = |key: &'static str, r: &RawRemoteAe| -> Result<RemoteAe, ConfigError> {
            if !valid_address(&r.address) {
                return Err(self.invalid(key, format!("{:?} is not host:port", r.address)));
            }
            Ok(RemoteAe {
                ae_title: AeTitle::parse(&r.ae_title)
                    .map_err(|e| self.invalid(key, e.to_string()))?,
                address: r.address.clone(),
            })
        };
        let c = raw.storage_commitment;
        for name in &c.delivered_to {
            if !destinations.iter().any(|d| d.name == *name) {
                return Err(self.invalid(
                    "storage_commitment.delivered_to",
                    format!("{name:?} is not the name of a [[destinations]] entry"),
                ));
            }
        }
        let storage_commitment = StorageCommitmentConfig {
            committed_when: c.committed_when,
            delivered_to: c.delivered_to,
            requesters: c
                .requesters
                .iter()
                .map(|r| remote("storage_commitment.requesters", r))
                .collect::<Result<_, _>>()?,
        };
        let q = raw.query_retrieve;
        if q.max_matches == 0 {
            return Err(self.invalid("query_retrieve.max_matches", "must be at least 1"));
        }
        let query_retrieve = QueryRetrieveConfig {
            move_destinations: q
                .move_destinations
                .iter()
                .map(|r| remote("query_retrieve.move_destinations", r))
                .collect::<Result<_, _>>()?,
            max_matches: q.max_matches,
        };
        let safety = self.safety(raw.safety)?;
        let h = raw.http;
        let bind = match h.bind.as_str() {
            "off" => None,
            text => Some(text.parse::<SocketAddr>().map_err(|_| {
                self.invalid(
                    "http.bind",
                    format!(
                        "{text:?} is not an address:port such as \"127.0.0.1:8080\" (or \"off\")"
                    ),
                )
            })?),
        };
        if h.users.is_empty() && bind.is_some_and(|b| !b.ip().is_loopback()) {
            return Err(self.invalid(
                "http.bind",
                "with no [[http.users]] the web pages are read-only and served on loopback only; add users or bind 127.0.0.1",
            ));
        }
        if h.tls.is_none() && !h.behind_tls_proxy && bind.is_some_and(|b| !b.ip().is_loopback()) {
            return Err(self.invalid(
                "http.bind",
                "passwords would travel in clear beyond loopback: add [http.tls] (certificate, private_key), or set http.behind_tls_proxy = true when a TLS proxy sits in front",
            ));
        }
        let mut names = BTreeSet::new();
        for user in &h.users {
            if let Some(problem) = user_name_problem(&user.name) {
                return Err(self.invalid("http.users", problem));
            }
            if !names.insert(user.name.clone()) {
                return Err(self.invalid(
                    "http.users",
                    format!("user name {:?} appears twice", user.name),
                ));
            }
            if !user.password_hash.starts_with("$argon2") {
                return Err(self.invalid(
                    "http.users",
                    format!(
                        "{}: password_hash must be an argon2 hash from `simgate user add`",
                        user.name
                    ),
                ));
            }
            if let Some(token) = &user.api_token_hash {
                let hex = token.strip_prefix("sha256:").unwrap_or("");
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(self.invalid(
                        "http.users",
                        format!(
                            "{}: api_token_hash must be \"sha256:<64 hex digits>\" from `simgate user add --api-token` (tokens hashed with argon2 by earlier versions must be issued again)",
                            user.name
                        ),
                    ));
                }
            }
        }
        if h.max_connections == 0 {
            return Err(self.invalid("http.max_connections", "must be at least 1"));
        }
        let http = HttpConfig {
            bind,
            users: h.users,
            session_lifetime: self.duration("http.session_lifetime", &h.session_lifetime)?,
            max_connections: h.max_connections,
            header_read_timeout: self
                .duration("http.header_read_timeout", &h.header_read_timeout)?,
            request_timeout: self.duration("http.request_timeout", &h.request_timeout)?,
            tls: h.tls.map(|t| HttpTlsConfig {
                certificate: self.path_from_base(t.certificate),
                private_key: self.path_from_base(t.private_key),
            }),
            behind_tls_proxy: h.behind_tls_proxy,
            time_zone: match h.time_zone.trim() {
                "" => crate::clock::DisplayZone::system(),
                name => crate::clock::DisplayZone::named(name)
                    .map_err(|problem| self.invalid("http.time_zone", problem))?,
            },
        };
        if let Err(problem) = check_log_filter(&raw.log.level) {
            return Err(self.invalid(
                "log.level",
                format!(
                    "{:?}: {problem}; write a level (error, warn, info, debug, trace, off) or \
                     e.g. \"info,simgate::forward=debug\"",
                    raw.log.level
                ),
            ));
        }
        Ok(Config {
            listener,
            storage,
            naming,
            forward,
            destinations,
            storage_commitment,
            query_retrieve,
            safety,
            http,
            log: LogConfig {
                format: raw.log.format,
                level: raw.log.level,
            },
            source: self.path.to_path_buf(),
        })
    }

    /// A path from the config: relative ones are taken from the config file's folder; the
    /// result is absolute and clean.
    fn path_from_base(&self, path: PathBuf) -> PathBuf {
        absolute(&self.base.join(path))
    }

    fn naming(&self, n: RawNaming) -> Result<NamingConfig, ConfigError> {
        let planning_patterns = n
            .planning_patterns
            .iter()
            .map(|pattern| {
                Regex::new(pattern).map_err(|e| {
                    self.invalid(
                        "naming.planning_patterns",
                        format!("{pattern:?} is not a valid pattern: {e}"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        if n.reasons.is_empty() {
            return Err(self.invalid("naming.reasons", "at least one reason is needed"));
        }
        let mut seen = BTreeSet::new();
        for reason in &n.reasons {
            if reason.code.is_empty()
                || !reason
                    .code
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(self.invalid(
                    "naming.reasons",
                    format!("code {:?} must be letters, digits, - or _", reason.code),
                ));
            }
            if !seen.insert(reason.code.clone()) {
                return Err(self.invalid(
                    "naming.reasons",
                    format!("code {:?} appears twice", reason.code),
                ));
            }
        }
        if !seen.contains(&n.rt_planning_reason) {
            return Err(self.invalid(
                "naming.rt_planning_reason",
                format!(
                    "{:?} is not one of the codes in naming.reasons",
                    n.rt_planning_reason
                ),
            ));
        }
        Ok(NamingConfig {
            builtin_nomenclature: n.builtin_nomenclature.map(|p| self.path_from_base(p)),
            series_rules: n.series_rules.map(|p| self.path_from_base(p)),
            radlex_scheme_designators: n.radlex_scheme_designators,
            loinc_scheme_designators: n.loinc_scheme_designators,
            series_findings_need_reason: n.series_findings_need_reason,
            ct_simulator_ae_titles: n.ct_simulator_ae_titles,
            ct_simulator_station_names: n.ct_simulator_station_names,
            planning_patterns,
            rt_planning_reason: n.rt_planning_reason,
            suggestion_floor: if (0.0..=1.0).contains(&n.suggestion_floor) {
                n.suggestion_floor
            } else {
                return Err(self.invalid(
                    "naming.suggestion_floor",
                    format!("{} must be between 0 and 1", n.suggestion_floor),
                ));
            },
            reasons: n.reasons,
        })
    }
}

/// Serialises durations the way the file writes them ("30s").
mod humantime_serde_compat {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listener: RawListener,
    #[serde(default)]
    storage: RawStorage,
    #[serde(default)]
    naming: RawNaming,
    #[serde(default)]
    forward: RawForward,
    #[serde(default)]
    destinations: Vec<RawDestination>,
    #[serde(default)]
    storage_commitment: RawStorageCommitment,
    #[serde(default)]
    query_retrieve: RawQueryRetrieve,
    #[serde(default)]
    safety: RawSafety,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    log: RawLog,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    format: LogFormat,
    level: String,
}

impl Default for RawLog {
    fn default() -> RawLog {
        let defaults = LogConfig::default();
        RawLog {
            format: defaults.format,
            level: defaults.level,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSafety {
    series_quiet_period: String,
    duplicate_mm: f64,
    gap_factor: f64,
    spacing_tolerance_mm: f64,
    orientation_tolerance: f64,
    pixel_spacing_tolerance_mm: f64,
    tilt_tolerance_degrees: f64,
    min_planning_slices: usize,
}

impl Default for RawSafety {
    fn default() -> Self {
        let t = Tolerances::default();
        RawSafety {
            series_quiet_period: "30s".into(),
            duplicate_mm: t.duplicate_mm,
            gap_factor: t.gap_factor,
            spacing_tolerance_mm: t.spacing_tolerance_mm,
            orientation_tolerance: t.orientation_tolerance,
            pixel_spacing_tolerance_mm: t.pixel_spacing_tolerance_mm,
            tilt_tolerance_degrees: t.tilt_tolerance_degrees,
            min_planning_slices: t.min_planning_slices,
        }
    }
}

fn default_hold_on() -> Vec<String> {
    vec![FindingCode::IdentityMismatch.as_str().to_string()]
}

fn forward_when_received() -> ForwardWhen {
    ForwardWhen::Received
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRemoteAe {
    ae_title: String,
    address: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorageCommitment {
    #[serde(default = "committed_when_stored")]
    committed_when: CommittedWhen,
    #[serde(default)]
    delivered_to: Vec<String>,
    #[serde(default)]
    requesters: Vec<RawRemoteAe>,
}

fn committed_when_stored() -> CommittedWhen {
    CommittedWhen::Stored
}

impl Default for RawStorageCommitment {
    fn default() -> Self {
        Self {
            committed_when: CommittedWhen::Stored,
            delivered_to: Vec::new(),
            requesters: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawQueryRetrieve {
    move_destinations: Vec<RawRemoteAe>,
    max_matches: usize,
}

impl Default for RawQueryRetrieve {
    fn default() -> Self {
        Self {
            move_destinations: Vec::new(),
            max_matches: 10_000,
        }
    }
}

/// host:port with a non-empty host and a port above 0.
fn valid_address(address: &str) -> bool {
    address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawHttp {
    bind: String,
    users: Vec<UserConfig>,
    session_lifetime: String,
    max_connections: usize,
    header_read_timeout: String,
    request_timeout: String,
    tls: Option<RawHttpTls>,
    behind_tls_proxy: bool,
    /// IANA name; empty: the machine's.
    time_zone: String,
}

impl Default for RawHttp {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            users: Vec::new(),
            session_lifetime: "12h".into(),
            max_connections: 64,
            header_read_timeout: "10s".into(),
            request_timeout: "30s".into(),
            tls: None,
            behind_tls_proxy: false,
            time_zone: String::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDestination {
    name: String,
    ae_title: String,
    address: String,
    calling_ae_title: Option<String>,
    #[serde(default)]
    sop_classes: Vec<String>,
    #[serde(default)]
    modalities: Vec<String>,
    #[serde(default)]
    from_calling_ae_titles: Vec<String>,
    tls: Option<RawDestinationTls>,
    #[serde(default = "default_hold_on")]
    hold_on: Vec<String>,
    #[serde(default = "forward_when_received")]
    forward_when: ForwardWhen,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawForward {
    initial_backoff: String,
    backoff_multiplier: f64,
    max_backoff: String,
    max_attempts: u32,
    idle_release: String,
    connect_timeout: String,
    response_timeout: String,
    max_pdu_length: u32,
    probe_interval: String,
}

impl Default for RawForward {
    fn default() -> Self {
        Self {
            initial_backoff: "2s".into(),
            backoff_multiplier: 2.0,
            max_backoff: "5m".into(),
            max_attempts: 5,
            idle_release: "10s".into(),
            connect_timeout: "10s".into(),
            response_timeout: "120s".into(),
            max_pdu_length: 131_072,
            probe_interval: "3s".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawNaming {
    builtin_nomenclature: Option<PathBuf>,
    series_rules: Option<PathBuf>,
    radlex_scheme_designators: Vec<String>,
    loinc_scheme_designators: Vec<String>,
    series_findings_need_reason: bool,
    ct_simulator_ae_titles: Vec<String>,
    ct_simulator_station_names: Vec<String>,
    planning_patterns: Vec<String>,
    rt_planning_reason: String,
    reasons: Vec<ReasonChoice>,
    suggestion_floor: f64,
}

impl Default for RawNaming {
    fn default() -> Self {
        let reason = |code: &str, label: &str, note_required: bool| ReasonChoice {
            code: code.into(),
            label: label.into(),
            note_required,
        };
        Self {
            builtin_nomenclature: None,
            series_rules: None,
            radlex_scheme_designators: vec!["RADLEX".into(), "RPID".into()],
            loinc_scheme_designators: vec!["LN".into()],
            series_findings_need_reason: true,
            ct_simulator_ae_titles: Vec::new(),
            ct_simulator_station_names: Vec::new(),
            planning_patterns: vec![
                r"(?i)\b(sim|ct ?sim|rt|rtp|plan|planning|radiotherapy|treatment|4d|4dct|gated|dibh|igrt)\b".into(),
            ],
            rt_planning_reason: "rt-planning".into(),
            suggestion_floor: 0.3,
            reasons: vec![
                reason("immobilization", "Patient immobilization", false),
                reason("respiratory-4d", "Respiratory gating / 4D acquisition", false),
                reason("contrast-timing", "Contrast timing for target delineation", false),
                reason("fusion", "Fusion with prior diagnostic imaging", false),
                reason(
                    "rt-planning",
                    "CT acquired for radiation treatment planning / image-guided delivery per facility protocol",
                    false,
                ),
                reason("other", "Other (note required)", true),
            ],
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    #[serde(default = "defaults::ae_title")]
    ae_title: String,
    #[serde(default = "defaults::bind")]
    bind: String,
    #[serde(default = "defaults::yes")]
    require_called_ae_title: bool,
    #[serde(default)]
    allowed_calling_ae_titles: Vec<String>,
    #[serde(default)]
    allowed_peer_addresses: Vec<String>,
    #[serde(default = "defaults::max_associations")]
    max_associations: usize,
    #[serde(default = "defaults::max_associations_per_address")]
    max_associations_per_address: usize,
    #[serde(default = "defaults::association_request_timeout")]
    association_request_timeout: String,
    #[serde(default = "defaults::max_pdu_length")]
    max_pdu_length: u32,
    #[serde(default = "defaults::idle_timeout")]
    idle_timeout: String,
    #[serde(default = "defaults::write_timeout")]
    write_timeout: String,
    #[serde(default = "defaults::shutdown_deadline")]
    shutdown_deadline: String,
    #[serde(default)]
    extra_sop_classes: Vec<String>,
    #[serde(default)]
    only_sop_classes: Vec<String>,
    tls: Option<RawListenerTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListenerTls {
    bind: String,
    certificate: PathBuf,
    private_key: PathBuf,
    client_ca: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDestinationTls {
    ca: PathBuf,
    certificate: Option<PathBuf>,
    private_key: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpTls {
    certificate: PathBuf,
    private_key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    #[serde(default = "defaults::storage_dir")]
    dir: PathBuf,
    #[serde(default = "defaults::durability")]
    durability: Durability,
    #[serde(default = "defaults::reserve_free_bytes")]
    reserve_free_bytes: toml::Value,
    #[serde(default = "defaults::retention")]
    retention: String,
}

impl Default for RawStorage {
    fn default() -> Self {
        Self {
            dir: defaults::storage_dir(),
            durability: defaults::durability(),
            reserve_free_bytes: defaults::reserve_free_bytes(),
            retention: defaults::retention(),
        }
    }
}

mod defaults {
    use super::Durability;
    use std::path::PathBuf;

    pub fn ae_title() -> String {
        "SIMGATE".into()
    }
    pub fn bind() -> String {
        "127.0.0.1:11112".into()
    }
    pub fn yes() -> bool {
        true
    }
    pub fn max_associations() -> usize {
        32
    }
    pub fn max_pdu_length() -> u32 {
        131_072
    }
    pub fn max_associations_per_address() -> usize {
        16
    }
    pub fn association_request_timeout() -> String {
        "10s".into()
    }
    pub fn idle_timeout() -> String {
        "60s".into()
    }
    pub fn write_timeout() -> String {
        "30s".into()
    }
    pub fn shutdown_deadline() -> String {
        "30s".into()
    }
    pub fn storage_dir() -> PathBuf {
        PathBuf::from("../data")
    }
    pub fn durability() -> Durability {
        Durability::Fsync
    }
    pub fn reserve_free_bytes() -> toml::Value {
        toml::Value::String("1 GiB".into())
    }
    pub fn retention() -> String {
        "7days".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/simgate/simgate.toml"))
    }

    #[test]
    fn the_shipped_default_config_resolves() {
        let text = include_str!("../config/simgate.toml");
        let config = parse(text).expect("default config");
        assert_eq!(config.listener.ae_title.as_str(), "SIMGATE");
        assert_eq!(
            config.listener.bind,
            "127.0.0.1:11112".parse().expect("addr")
        );
        assert_eq!(config.storage.durability, Durability::Fsync);
        assert!(config.listener.allowed_calling_ae_titles.is_empty());
    }

    #[test]
    fn relative_storage_dir_is_taken_from_the_config_folder() {
        let config = parse("[listener]\n[storage]\ndir = \"spool\"\n").expect("config");
        assert_eq!(config.storage.dir, PathBuf::from("/etc/simgate/spool"));
        let config = parse("[listener]\n[storage]\ndir = \"../data\"\n").expect("config");
        assert_eq!(
            config.storage.dir,
            PathBuf::from("/etc/data"),
            "resolved, no .."
        );
    }

    #[test]
    fn a_relative_config_path_resolves_to_absolute_paths() {
        let cwd = std::env::current_dir().expect("cwd");
        let config = Config::parse(
            "[listener]\n[storage]\ndir = \"../data\"\n[naming]\nseries_rules = \"./rules.toml\"\n",
            Path::new("config/simgate.toml"),
        )
        .expect("config");
        assert_eq!(config.storage.dir, cwd.join("data"));
        assert_eq!(
            config.naming.series_rules,
            Some(cwd.join("config/rules.toml"))
        );
    }

    #[test]
    fn errors_name_the_key_and_the_problem() {
        let cases = [
            (
                "[listener]\nae_title = \"WAY_TOO_LONG_AE_TITLE\"\n",
                "listener.ae_title",
            ),
            ("[listener]\nbind = \"localhost\"\n", "listener.bind"),
            (
                "[listener]\nidle_timeout = \"soon\"\n",
                "listener.idle_timeout",
            ),
            (
                "[listener]\nmax_associations = 0\n",
                "listener.max_associations",
            ),
            (
                "[listener]\nallowed_calling_ae_titles = [\"A\\\\B\"]\n",
                "listener.allowed_calling_ae_titles",
            ),
            (
                "[listener]\nextra_sop_classes = [\"../etc\"]\n",
                "listener.extra_sop_classes",
            ),
            (
                "[listener]\n[storage]\nreserve_free_bytes = \"lots\"\n",
                "storage.reserve_free_bytes",
            ),
        ];
        for (text, key) in cases {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains(key), "{err:?} should name {key}");
        }
    }

    #[test]
    fn without_users_the_http_side_binds_loopback_only() {
        let err = parse("[listener]\n[http]\nbind = \"0.0.0.0:8080\"\n")
            .expect_err("open to the network");
        assert!(err.to_string().contains("http.bind"), "{err}");
        let off = parse("[listener]\n[http]\nbind = \"off\"\n").expect("off");
        assert!(off.http.bind.is_none());
        // With users, a plain bind beyond loopback would send passwords in clear: refused
        // unless a TLS proxy is said to sit in front (or [http.tls] is configured).
        let clear = "[listener]\n[http]\nbind = \"0.0.0.0:8080\"\n[[http.users]]\nname = \"a\"\nrole = \"admin\"\npassword_hash = \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA\"\n";
        let err = parse(clear).expect_err("passwords in clear").to_string();
        assert!(
            err.contains("http.bind") && err.contains("http.tls"),
            "{err}"
        );
        let users = clear.replace(
            "bind = \"0.0.0.0:8080\"\n",
            "bind = \"0.0.0.0:8080\"\nbehind_tls_proxy = true\n",
        );
        let users = users.as_str();
        let proxied = parse(users).expect("behind a TLS proxy");
        assert!(proxied.http.https(), "cookies are Secure behind the proxy");
        let plain = users.replace(
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA",
            "hunter2",
        );
        assert!(
            parse(&plain)
                .expect_err("plain password")
                .to_string()
                .contains("argon2")
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = parse("[listener]\nae_tittle = \"X\"\n").expect_err("typo");
        // What the operator reads: the error with its causes.
        let text = crate::error_chain(&err);
        assert!(text.contains("ae_tittle"), "{text}");
    }

    #[test]
    fn a_log_level_that_is_no_level_is_refused_with_its_key() {
        for good in [
            "info",
            "warn,simgate::forward=debug",
            "simgate=trace",
            " off ",
        ] {
            let text = format!("[listener]\n[log]\nlevel = {good:?}\n");
            assert!(parse(&text).is_ok(), "{good}");
        }
        for bad in ["warning", "loud", "info,simgate::forward=verbose"] {
            let text = format!("[listener]\n[log]\nlevel = {bad:?}\n");
            let err = crate::error_chain(&parse(&text).expect_err(bad));
            assert!(
                err.contains("log.level") && err.contains("is not a level"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_storage_dir_that_is_a_file_is_refused() {
        let file = tempfile::NamedTempFile::new().expect("file");
        let text = format!("[listener]\n[storage]\ndir = {:?}\n", file.path());
        let err = crate::error_chain(&parse(&text).expect_err("a file"));
        assert!(
            err.contains("storage.dir") && err.contains("is a file"),
            "{err}"
        );
    }

    #[test]
    fn sizes_accept_units() {
        let config =
            parse("[listener]\n[storage]\nreserve_free_bytes = \"2 GiB\"\n").expect("config");
        assert_eq!(config.storage.reserve_free_bytes, 2 * 1024 * 1024 * 1024);
        let config =
            parse("[listener]\n[storage]\nreserve_free_bytes = 1073741824\n").expect("bytes");
        assert_eq!(config.storage.reserve_free_bytes, 1 << 30);
        for bad in ["-1", "1.5", "\"lots\""] {
            let text = format!("[listener]\n[storage]\nreserve_free_bytes = {bad}\n");
            let err = crate::error_chain(&parse(&text).expect_err(bad));
            assert!(err.contains("storage.reserve_free_bytes"), "{err}");
        }
    }

    #[test]
    fn a_reload_takes_users_destinations_and_rules_and_names_the_rest() {
        let running = parse("[listener]\nbind = \"127.0.0.1:11112\"\n").expect("config");
        let next = parse(
            "[listener]\nbind = \"0.0.0.0:104\"\nallowed_calling_ae_titles = [\"CTSIM\"]\n\
             [storage]\nreserve_free_bytes = \"2 GiB\"\n\
             [[destinations]]\nname = \"tps\"\nae_title = \"TPS\"\naddress = \"10.0.0.2:104\"\n\
             [[http.users]]\nname = \"curie\"\nrole = \"physician\"\npassword_hash = \"$argon2id$v=19$m=1,t=1,p=1$x$y\"\n",
        )
        .expect("config");
        let (live, restart) = running.reloaded(&next);
        assert_eq!(live.destinations.len(), 1);
        assert_eq!(live.http.users.len(), 1);
        assert_eq!(live.listener.allowed_calling_ae_titles.len(), 1);
        assert_eq!(live.storage.reserve_free_bytes, 2 << 30);
        assert_eq!(
            live.listener.bind, running.listener.bind,
            "kept until a restart"
        );
        assert_eq!(restart, vec!["listener.bind".to_string()]);
        let (_, none) = running.reloaded(&running);
        assert!(none.is_empty(), "{none:?}");
    }

    #[test]
    fn a_new_listener_ae_title_waits_for_the_restart_in_the_destinations_too() {
        let destination =
            "[[destinations]]\nname = \"tps\"\nae_title = \"TPS\"\naddress = \"10.0.0.2:104\"\n";
        let running = parse(&format!(
            "[listener]\nae_title = \"SIMGATE\"\n{destination}"
        ))
        .expect("config");
        let next = parse(&format!(
            "[listener]\nae_title = \"SIMGATE2\"\n{destination}"
        ))
        .expect("config");
        assert_eq!(next.destinations[0].calling_ae_title.as_str(), "SIMGATE2");
        let (live, restart) = running.reloaded(&next);
        // The destinations' calling title is part of what waits for the restart.
        assert_eq!(restart, vec!["destinations", "listener.ae_title"]);
        assert_eq!(live.listener.ae_title.as_str(), "SIMGATE");
        assert_eq!(live.destinations[0].calling_ae_title.as_str(), "SIMGATE");
        assert_eq!(
            live.destinations, running.destinations,
            "unchanged: its forwarder is not restarted"
        );
    }
}
