//! Configuration, in two stages: [`RawServe`] and [`RawApi`] hold what the command line and the
//! environment said (strings), [`Config::resolve`] and [`resolve_api`] validate it once into
//! plain values. All defaults live here.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::api::{ApiConfig, Secret, TokenEndpoint};
use crate::log::Format;
use crate::protocol::crypto::AesKey;
use crate::protocol::envelope::SafeMode;
use crate::protocol::verify::Token;
use crate::server::forward::{self, http::ForwardSecret, Late};
use crate::server::replay;
use crate::server::store::Limits;

pub const DEFAULT_HOST: &str = "0.0.0.0";
pub const DEFAULT_PORT: u16 = 80;
pub const DEFAULT_PATH: &str = crate::server::account::DEFAULT_PATH;
pub const DEFAULT_CACHE_MB: usize = 32;
pub const DEFAULT_CACHE_TTL: u64 = 60;
pub const DEFAULT_API_BASE: &str = "https://api.weixin.qq.com";
/// The longest replay window accepted: a day. Longer defeats its purpose.
pub const MAX_REPLAY_WINDOW: u64 = 86_400;
/// The limit on each API request. WeChat answers in well under a second; 10 s covers a slow
/// link without letting a dead one hold a late reply (or a terminal) for long.
pub const API_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve options as given: `None` means "not on the command line".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawServe {
    pub host: Option<String>,
    pub port: Option<String>,
    pub path: Option<String>,
    pub token: Option<String>,
    pub aes_key: Option<String>,
    pub appid: Option<String>,
    pub rules: Option<String>,
    pub threads: Option<String>,
    pub cache_mb: Option<String>,
    pub cache_ttl: Option<String>,
    pub late: Option<String>,
    pub forward_secret: Option<String>,
    pub forward_capacity: Option<String>,
    pub forward_processes: Option<String>,
    pub kf_wait: Option<String>,
    pub replay_window: Option<String>,
    pub log_format: Option<String>,
    /// `"1"` when the flag was given (or its `=VALUE`).
    pub quiet: Option<String>,
    pub log_openid: Option<String>,
    pub metrics_addr: Option<String>,
    pub max_connections: Option<String>,
    /// `--secret`, `--api-base`, `--token-cache`, `--token-endpoint` (the AppID is `appid`).
    pub api: RawApi,
}

/// The API options as given. The AppSecret is wrapped at once, so no `Debug` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawApi {
    pub secret: Option<Secret>,
    pub api_base: Option<String>,
    pub token_cache: Option<String>,
    pub token_endpoint: Option<String>,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub host: String,
    pub port: u16,
    pub path: String,
    pub token: Token,
    pub safe: Option<SafeMode>,
    pub rules: Option<PathBuf>,
    pub threads: usize,
    pub cache: Limits,
    /// Forwarding to the user's own code (`reply.forward` / `reply.command` in the rules).
    pub forward: forward::Settings,
    /// The API client's settings, when both the AppID and the AppSecret are given (the server
    /// can then send customer-service messages).
    pub api: Option<ApiConfig>,
    /// Seconds a signed query stays good ([`crate::server::replay`]); 0: the timestamp and
    /// nonce checks are off.
    pub replay_window: u64,
    /// The log's format: text or JSON.
    pub log_format: Format,
    /// Log refused requests only.
    pub quiet: bool,
    /// Show whole OpenIDs in the log and the live view instead of a prefix and a hash.
    pub log_openid: bool,
    /// The metrics listener; `None`: off.
    pub metrics_addr: Option<SocketAddr>,
    /// `None`: derived from the descriptor limit at start ([`default_max_connections`]).
    pub max_connections: Option<usize>,
    /// Settings that are accepted but probably not meant; the server logs them at start.
    pub warnings: Vec<String>,
}

/// A configuration value that cannot be used; the message names the flag and the variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Default request-handler threads: enough to keep both cores busy while some requests wait on
/// a duplicate or a slow client, few enough to keep memory small.
pub fn default_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cores * 4).clamp(8, 64)
}

pub use crate::server::run::default_max_connections;

impl Config {
    /// Flags win over the environment (`env` looks a `WXMP_*` variable up), which wins over the
    /// defaults.
    pub fn resolve(
        raw: RawServe,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let pick =
            |flag: Option<String>, var: &str| flag.or_else(|| env(var)).filter(|v| !v.is_empty());
        let host = pick(raw.host, "WXMP_HOST").unwrap_or_else(|| DEFAULT_HOST.to_owned());
        let port = match pick(raw.port, "WXMP_PORT") {
            None => DEFAULT_PORT,
            Some(p) => p.parse().map_err(|_| {
                ConfigError(format!(
                    "invalid port {p:?} (--port / WXMP_PORT): expected a number from 0 to 65535"
                ))
            })?,
        };
        let path = pick(raw.path, "WXMP_PATH").unwrap_or_else(|| DEFAULT_PATH.to_owned());
        if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
            return Err(ConfigError(format!(
                "invalid path {path:?} (--path / WXMP_PATH): it must start with '/', like /weixin"
            )));
        }
        if path == "/" || path == "/healthz" {
            return Err(ConfigError(format!(
                "invalid path {path:?} (--path / WXMP_PATH): / and /healthz are taken; use e.g. /weixin"
            )));
        }
        let token = pick(raw.token, "WXMP_TOKEN").ok_or_else(|| {
            ConfigError("no token: pass --token TOKEN or set WXMP_TOKEN (the Token from the WeChat console)".into())
        })?;
        let token = Token::new(&token)
            .map_err(|e| ConfigError(format!("invalid token (--token / WXMP_TOKEN): {e}")))?;
        let mut warnings = Vec::new();
        let api = resolve_api(raw.appid.clone(), raw.api, env)?;
        let safe = match (pick(raw.aes_key, "WXMP_AES_KEY"), pick(raw.appid, "WXMP_APPID")) {
            // With an AppSecret the AppID is meant: the API needs it.
            (None, Some(_)) if api.is_some() => None,
            (None, Some(_)) => {
                warnings.push(
                    "--appid / WXMP_APPID is set without --aes-key / WXMP_AES_KEY: the AppID is only used in safe and compatible mode, which need the EncodingAESKey too; pushes are handled in plaintext".to_owned(),
                );
                None
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError(
                    "an AES key needs an AppID: pass --appid or set WXMP_APPID (safe mode checks and signs with both)".into(),
                ))
            }
            (Some(key), Some(app_id)) => Some(SafeMode {
                key: AesKey::from_encoding_aes_key(key.trim())
                    .map_err(|e| ConfigError(format!("invalid AES key (--aes-key / WXMP_AES_KEY): {e}")))?,
                app_id,
            }),
        };
        let rules = pick(raw.rules, "WXMP_RULES").map(PathBuf::from);
        let threads = number(
            pick(raw.threads, "WXMP_THREADS"),
            "--threads / WXMP_THREADS",
            default_threads(),
        )?;
        if !(1..=1024).contains(&threads) {
            return Err(ConfigError(format!(
                "invalid thread count {threads} (--threads / WXMP_THREADS): expected 1 to 1024"
            )));
        }
        let cache_mb: usize = number(
            pick(raw.cache_mb, "WXMP_CACHE_MB"),
            "--cache-mb / WXMP_CACHE_MB",
            DEFAULT_CACHE_MB,
        )?;
        if cache_mb == 0 {
            return Err(ConfigError(
                "invalid cache size 0 (--cache-mb / WXMP_CACHE_MB): the retry cache is what gives WeChat's retries the same answer; use at least 1 (MB)".into(),
            ));
        }
        let cache_ttl: u64 = number(
            pick(raw.cache_ttl, "WXMP_CACHE_TTL"),
            "--cache-ttl / WXMP_CACHE_TTL",
            DEFAULT_CACHE_TTL,
        )?;
        if cache_ttl < 30 {
            return Err(ConfigError(format!(
                "invalid cache TTL {cache_ttl} (--cache-ttl / WXMP_CACHE_TTL): WeChat retries for about 15 s; use at least 30"
            )));
        }
        // `kf` needs the customer-service API, so it is the default only with an AppSecret.
        let late = match pick(raw.late, "WXMP_LATE").as_deref() {
            None if api.is_some() => Late::Kf,
            None | Some("stretch") => Late::Stretch,
            Some("kf") if api.is_none() => {
                return Err(ConfigError(
                    "--late kf (WXMP_LATE) sends late answers through the customer-service API, which needs --appid and --secret (WXMP_APPID, WXMP_SECRET); without them use --late stretch".into(),
                ))
            }
            Some("kf") => Late::Kf,
            Some(other) => {
                return Err(ConfigError(format!(
                    "invalid late strategy {other:?} (--late / WXMP_LATE): expected stretch or kf"
                )))
            }
        };
        let forward_capacity: usize = number(
            pick(raw.forward_capacity, "WXMP_FORWARD_CAPACITY"),
            "--forward-capacity / WXMP_FORWARD_CAPACITY",
            forward::DEFAULT_CAPACITY,
        )?;
        if !(1..=10_000).contains(&forward_capacity) {
            return Err(ConfigError(format!(
                "invalid forward capacity {forward_capacity} (--forward-capacity / WXMP_FORWARD_CAPACITY): expected 1 to 10000 pushes in flight"
            )));
        }
        let forward_processes: usize = number(
            pick(raw.forward_processes, "WXMP_FORWARD_PROCESSES"),
            "--forward-processes / WXMP_FORWARD_PROCESSES",
            forward::DEFAULT_PROCESSES,
        )?;
        if !(1..=1024).contains(&forward_processes) {
            return Err(ConfigError(format!(
                "invalid process limit {forward_processes} (--forward-processes / WXMP_FORWARD_PROCESSES): expected 1 to 1024"
            )));
        }
        let kf_wait: u64 = number(
            pick(raw.kf_wait, "WXMP_KF_WAIT"),
            "--kf-wait / WXMP_KF_WAIT",
            forward::DEFAULT_KF_WAIT.as_secs(),
        )?;
        if !(5..=3600).contains(&kf_wait) {
            return Err(ConfigError(format!(
                "invalid kf wait {kf_wait} (--kf-wait / WXMP_KF_WAIT): expected 5 to 3600 seconds"
            )));
        }
        let forward = forward::Settings {
            late,
            secret: pick(raw.forward_secret, "WXMP_FORWARD_SECRET").map(|s| ForwardSecret::new(&s)),
            capacity: forward_capacity,
            processes: forward_processes,
            kf_wait: std::time::Duration::from_secs(kf_wait),
        };
        let replay_window: u64 = number(
            pick(raw.replay_window, "WXMP_REPLAY_WINDOW"),
            "--replay-window / WXMP_REPLAY_WINDOW",
            replay::DEFAULT_WINDOW,
        )?;
        if replay_window > MAX_REPLAY_WINDOW {
            return Err(ConfigError(format!(
                "invalid replay window {replay_window} (--replay-window / WXMP_REPLAY_WINDOW): expected 0 (off) to {MAX_REPLAY_WINDOW} seconds"
            )));
        }
        if replay_window == 0 {
            warnings.push(
                "--replay-window / WXMP_REPLAY_WINDOW is 0: timestamps and nonces are not checked, so a signed query seen once (a proxy log, a screenshot) signs any plaintext push forever; use 0 only to diagnose a wrong clock".to_owned(),
            );
        } else if replay_window < 30 {
            warnings.push(format!(
                "--replay-window / WXMP_REPLAY_WINDOW is {replay_window} s: WeChat retries for about 15 s after its first attempt, and any clock skew between WeChat and this server comes off the window; pushes may be refused as stale"
            ));
        }
        let log_format = match pick(raw.log_format, "WXMP_LOG_FORMAT") {
            None => Format::Text,
            Some(f) => Format::parse(&f).ok_or_else(|| {
                ConfigError(format!(
                    "invalid log format {f:?} (--log-format / WXMP_LOG_FORMAT): expected text or json"
                ))
            })?,
        };
        let quiet = switch(pick(raw.quiet, "WXMP_QUIET"), "--quiet / WXMP_QUIET")?;
        let log_openid = switch(
            pick(raw.log_openid, "WXMP_LOG_OPENID"),
            "--log-openid / WXMP_LOG_OPENID",
        )?;
        let metrics_addr = match pick(raw.metrics_addr, "WXMP_METRICS_ADDR") {
            None => None,
            Some(a) => Some(a.trim().parse::<SocketAddr>().map_err(|_| {
                ConfigError(format!(
                    "invalid address {a:?} (--metrics-addr / WXMP_METRICS_ADDR): expected IP:PORT, like 127.0.0.1:9100"
                ))
            })?),
        };
        if let Some(addr) = metrics_addr.filter(|a| !a.ip().is_loopback()) {
            warnings.push(format!(
                "--metrics-addr / WXMP_METRICS_ADDR {addr} is not a loopback address: anyone who can reach it can read /metrics, and the live view (wxmp tail) is off because it shows message content; use 127.0.0.1:PORT unless a scraper elsewhere needs it"
            ));
        }
        let max_connections = pick(raw.max_connections, "WXMP_MAX_CONNECTIONS")
            .map(|v| number(Some(v), "--max-connections / WXMP_MAX_CONNECTIONS", 0usize))
            .transpose()?;
        if let Some(n) = max_connections.filter(|n| !(1..=1_000_000).contains(n)) {
            return Err(ConfigError(format!(
                "invalid connection limit {n} (--max-connections / WXMP_MAX_CONNECTIONS): expected 1 to 1000000"
            )));
        }
        Ok(Config {
            host,
            port,
            path,
            token,
            safe,
            rules,
            threads,
            cache: Limits {
                ttl_secs: cache_ttl,
                max_entries: Limits::default().max_entries,
                max_bytes: cache_mb.saturating_mul(1 << 20),
            },
            forward,
            api,
            replay_window,
            log_format,
            quiet,
            log_openid,
            metrics_addr,
            max_connections,
            warnings,
        })
    }
}

/// The API settings from `--appid` and the [`RawApi`] options (each falling back to its
/// `WXMP_*` variable): `None` when neither an AppID nor an AppSecret is given, or only an
/// AppID (safe mode uses it alone); an error for an AppSecret without an AppID.
pub fn resolve_api(
    appid: Option<String>,
    raw: RawApi,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<ApiConfig>, ConfigError> {
    let parts = api_parts(appid, raw, env)?;
    match (parts.app_id, parts.secret) {
        (Some(app_id), Some(secret)) => Ok(Some(ApiConfig {
            app_id,
            secret,
            api_base: parts.api_base,
            token_cache: parts.token_cache,
            token_endpoint: parts.token_endpoint,
            timeout: API_TIMEOUT,
        })),
        (None, Some(_)) => Err(ConfigError(
            "an AppSecret needs its AppID: pass --appid or set WXMP_APPID (both are under 设置与开发 → 基本配置)".into(),
        )),
        _ => Ok(None),
    }
}

/// For the commands that call the API: the AppID and the AppSecret are both required.
pub fn require_api(
    appid: Option<String>,
    raw: RawApi,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ApiConfig, ConfigError> {
    let has_secret =
        raw.secret.is_some() || env("WXMP_SECRET").is_some_and(|s| !s.trim().is_empty());
    match resolve_api(appid, raw, env)? {
        Some(c) => Ok(c),
        None if has_secret => Err(ConfigError(
            "no AppID: pass --appid or set WXMP_APPID (设置与开发 → 基本配置, or the test account's page)".into(),
        )),
        None => Err(ConfigError(
            "no AppSecret: pass --secret or set WXMP_SECRET (设置与开发 → 基本配置 → AppSecret, or the test account's appsecret)".into(),
        )),
    }
}

/// Where the token of an AppID is cached, without needing the AppSecret (`wxmp token`).
pub fn token_cache_of(
    appid: Option<String>,
    raw: RawApi,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, String, Option<PathBuf>), ConfigError> {
    let parts = api_parts(appid, raw, env)?;
    let app_id = parts.app_id.ok_or_else(|| {
        ConfigError(
            "no AppID: pass --appid or set WXMP_APPID (the token cache is per AppID)".into(),
        )
    })?;
    Ok((app_id, parts.api_base, parts.token_cache))
}

struct ApiParts {
    app_id: Option<String>,
    secret: Option<Secret>,
    api_base: String,
    token_cache: Option<PathBuf>,
    token_endpoint: TokenEndpoint,
}

fn api_parts(
    appid: Option<String>,
    raw: RawApi,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ApiParts, ConfigError> {
    let pick =
        |flag: Option<String>, var: &str| flag.or_else(|| env(var)).filter(|v| !v.is_empty());
    let app_id = pick(appid, "WXMP_APPID").map(|a| a.trim().to_owned());
    // Secrets pasted from a file often end in a newline.
    let secret = raw
        .secret
        .map(|s| s.expose().to_owned())
        .or_else(|| env("WXMP_SECRET"))
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .map(Secret::new);
    let api_base =
        pick(raw.api_base, "WXMP_API_BASE").unwrap_or_else(|| DEFAULT_API_BASE.to_owned());
    let api_base = api_base.trim().trim_end_matches('/').to_owned();
    let host = api_base
        .strip_prefix("https://")
        .or_else(|| api_base.strip_prefix("http://"));
    if host.is_none_or(|h| h.is_empty() || h.contains(['/', '?', '#', ' '])) {
        return Err(ConfigError(format!(
            "invalid API base {api_base:?} (--api-base / WXMP_API_BASE): expected http(s)://HOST[:PORT], like {DEFAULT_API_BASE} or http://127.0.0.1:9000 for wxmp fake-api"
        )));
    }
    let token_endpoint = match pick(raw.token_endpoint, "WXMP_TOKEN_ENDPOINT").as_deref() {
        None | Some("stable") => TokenEndpoint::Stable,
        Some("classic") => TokenEndpoint::Classic,
        Some(other) => {
            return Err(ConfigError(format!(
                "invalid token endpoint {other:?} (--token-endpoint / WXMP_TOKEN_ENDPOINT): expected stable (POST /cgi-bin/stable_token, the default) or classic (GET /cgi-bin/token)"
            )))
        }
    };
    let token_cache = match pick(raw.token_cache, "WXMP_TOKEN_CACHE") {
        Some(path) => Some(PathBuf::from(path)),
        None => app_id.as_deref().and_then(|a| default_token_cache(a, env)),
    };
    Ok(ApiParts {
        app_id,
        secret,
        api_base,
        token_cache,
        token_endpoint,
    })
}

/// `$XDG_CACHE_HOME/wxmp/access_token-APPID.json`, else `~/.cache/wxmp/…`; `None` when neither
/// variable gives an absolute directory (the token is then kept in memory only).
pub fn default_token_cache(app_id: &str, env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let absolute = |v: String| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    let base = env("XDG_CACHE_HOME")
        .and_then(absolute)
        .or_else(|| env("HOME").and_then(absolute).map(|h| h.join(".cache")))?;
    // An AppID is letters and digits; anything else must not steer the path.
    let name: String = app_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Some(
        Path::new(&base)
            .join("wxmp")
            .join(format!("access_token-{name}.json")),
    )
}

/// An on/off setting: a flag sets `"1"`; a variable says 1/0, true/false, yes/no or on/off.
fn switch(value: Option<String>, what: &str) -> Result<bool, ConfigError> {
    let Some(v) = value else {
        return Ok(false);
    };
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ConfigError(format!(
            "invalid value {v:?} for {what}: expected 1 or 0 (true/false, yes/no, on/off)"
        ))),
    }
}

fn number<T: std::str::FromStr>(
    value: Option<String>,
    what: &str,
    default: T,
) -> Result<T, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|_| {
            ConfigError(format!(
                "invalid value {v:?} for {what}: expected a whole number"
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    fn raw_with_token() -> RawServe {
        RawServe {
            token: Some("tok123".into()),
            ..RawServe::default()
        }
    }

    #[test]
    fn defaults_apply() {
        let c = Config::resolve(raw_with_token(), &env_of(&[])).unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.path.as_str()),
            ("0.0.0.0", 80, "/weixin")
        );
        assert!(c.safe.is_none());
        assert_eq!(c.cache.max_bytes, 32 << 20);
    }

    #[test]
    fn flag_wins_over_env() {
        let raw = RawServe {
            port: Some("9000".into()),
            ..RawServe::default()
        };
        let c = Config::resolve(
            raw,
            &env_of(&[("WXMP_PORT", "8080"), ("WXMP_TOKEN", "envtok")]),
        )
        .unwrap();
        assert_eq!(c.port, 9000);
        assert_eq!(c.token.expose(), "envtok");
    }

    #[test]
    fn missing_token_names_flag_and_variable() {
        let e = Config::resolve(RawServe::default(), &env_of(&[])).unwrap_err();
        assert!(e.0.contains("--token") && e.0.contains("WXMP_TOKEN"), "{e}");
    }

    #[test]
    fn invalid_values_are_named() {
        let bad_port = RawServe {
            port: Some("eighty".into()),
            ..raw_with_token()
        };
        assert!(Config::resolve(bad_port, &env_of(&[]))
            .unwrap_err()
            .0
            .contains("--port"));
        let bad_path = RawServe {
            path: Some("weixin".into()),
            ..raw_with_token()
        };
        assert!(Config::resolve(bad_path, &env_of(&[]))
            .unwrap_err()
            .0
            .contains("--path"));
        let key_only = RawServe {
            aes_key: Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into()),
            ..raw_with_token()
        };
        assert!(Config::resolve(key_only, &env_of(&[]))
            .unwrap_err()
            .0
            .contains("--appid"));
        let short_key = RawServe {
            aes_key: Some("short".into()),
            appid: Some("wx1".into()),
            ..raw_with_token()
        };
        let e = Config::resolve(short_key, &env_of(&[])).unwrap_err();
        assert!(e.0.contains("--aes-key") && e.0.contains("43"), "{e}");
        let threads = RawServe {
            threads: Some("0".into()),
            ..raw_with_token()
        };
        assert!(Config::resolve(threads, &env_of(&[]))
            .unwrap_err()
            .0
            .contains("--threads"));
        let connections = RawServe {
            max_connections: Some("0".into()),
            ..raw_with_token()
        };
        assert!(Config::resolve(connections, &env_of(&[]))
            .unwrap_err()
            .0
            .contains("--max-connections"));
    }

    #[test]
    fn the_connection_cap_defaults_from_the_descriptor_limit() {
        let c =
            Config::resolve(raw_with_token(), &env_of(&[("WXMP_MAX_CONNECTIONS", "")])).unwrap();
        assert_eq!(c.max_connections, None);
        let c = Config::resolve(
            raw_with_token(),
            &env_of(&[("WXMP_MAX_CONNECTIONS", "300")]),
        )
        .unwrap();
        assert_eq!(c.max_connections, Some(300));
        assert_eq!(default_max_connections(256), 96);
        assert_eq!(default_max_connections(1024), 480);
        assert_eq!(default_max_connections(1 << 20), 4096);
        assert_eq!(default_max_connections(0), 16);
    }

    #[test]
    fn an_appid_alone_is_a_warning_and_a_zero_cache_an_error() {
        let appid_only = RawServe {
            appid: Some("wx1".into()),
            ..raw_with_token()
        };
        let c = Config::resolve(appid_only, &env_of(&[])).unwrap();
        assert!(c.safe.is_none());
        assert!(c.warnings[0].contains("--aes-key"), "{:?}", c.warnings);
        let zero = RawServe {
            cache_mb: Some("0".into()),
            ..raw_with_token()
        };
        let e = Config::resolve(zero, &env_of(&[])).unwrap_err();
        assert!(
            e.0.contains("--cache-mb") && e.0.contains("at least 1"),
            "{e}"
        );
    }

    #[test]
    fn observability_settings_are_validated_once() {
        let c = Config::resolve(raw_with_token(), &env_of(&[])).unwrap();
        assert_eq!(
            (c.log_format, c.quiet, c.log_openid, c.metrics_addr),
            (Format::Text, false, false, None)
        );
        let c = Config::resolve(
            raw_with_token(),
            &env_of(&[
                ("WXMP_LOG_FORMAT", "JSON"),
                ("WXMP_QUIET", "yes"),
                ("WXMP_LOG_OPENID", "1"),
                ("WXMP_METRICS_ADDR", "127.0.0.1:9100"),
            ]),
        )
        .unwrap();
        assert_eq!(
            (c.log_format, c.quiet, c.log_openid),
            (Format::Json, true, true)
        );
        assert_eq!(c.metrics_addr, Some("127.0.0.1:9100".parse().unwrap()));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        // A flag wins over the variable.
        let raw = RawServe {
            quiet: Some("0".into()),
            ..raw_with_token()
        };
        assert!(
            !Config::resolve(raw, &env_of(&[("WXMP_QUIET", "1")]))
                .unwrap()
                .quiet
        );
        for (raw, named) in [
            (
                RawServe {
                    log_format: Some("yaml".into()),
                    ..raw_with_token()
                },
                "--log-format",
            ),
            (
                RawServe {
                    quiet: Some("maybe".into()),
                    ..raw_with_token()
                },
                "--quiet",
            ),
            (
                RawServe {
                    metrics_addr: Some("localhost".into()),
                    ..raw_with_token()
                },
                "--metrics-addr",
            ),
        ] {
            let e = Config::resolve(raw, &env_of(&[])).unwrap_err();
            assert!(e.0.contains(named), "{e}");
        }
        let open = RawServe {
            metrics_addr: Some("0.0.0.0:9100".into()),
            ..raw_with_token()
        };
        let c = Config::resolve(open, &env_of(&[])).unwrap();
        assert!(
            c.warnings[0].contains("not a loopback address"),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn the_replay_window_defaults_to_five_minutes_and_zero_warns() {
        let c = Config::resolve(raw_with_token(), &env_of(&[])).unwrap();
        assert_eq!(c.replay_window, 300);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let c = Config::resolve(raw_with_token(), &env_of(&[("WXMP_REPLAY_WINDOW", "0")])).unwrap();
        assert_eq!(c.replay_window, 0);
        assert!(c.warnings[0].contains("not checked"), "{:?}", c.warnings);
        let raw = RawServe {
            replay_window: Some("86401".into()),
            ..raw_with_token()
        };
        let e = Config::resolve(raw, &env_of(&[])).unwrap_err();
        assert!(e.0.contains("--replay-window / WXMP_REPLAY_WINDOW"), "{e}");
    }

    #[test]
    fn safe_mode_accepts_the_official_sample_key() {
        let raw = RawServe {
            aes_key: Some("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG".into()),
            appid: Some("wx2c2769f8efd9abc2".into()),
            ..raw_with_token()
        };
        let c = Config::resolve(raw, &env_of(&[])).unwrap();
        assert_eq!(c.safe.unwrap().app_id, "wx2c2769f8efd9abc2");
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let raw = RawServe {
            aes_key: Some("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG".into()),
            appid: Some("wx1".into()),
            ..raw_with_token()
        };
        let shown = format!("{:?}", Config::resolve(raw, &env_of(&[])).unwrap());
        assert!(
            !shown.contains("tok123") && !shown.contains("abcdefghij"),
            "{shown}"
        );
    }

    fn with_secret(raw: RawServe) -> RawServe {
        RawServe {
            appid: Some("wx1".into()),
            api: RawApi {
                secret: Some(Secret::new("appsecret123")),
                ..RawApi::default()
            },
            ..raw
        }
    }

    #[test]
    fn an_appid_with_a_secret_configures_the_api_without_a_warning() {
        let env = env_of(&[("HOME", "/home/u")]);
        let c = Config::resolve(with_secret(raw_with_token()), &env).unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert!(c.safe.is_none());
        let api = c.api.unwrap();
        assert_eq!(api.app_id, "wx1");
        assert_eq!(api.api_base, DEFAULT_API_BASE);
        assert_eq!(api.token_endpoint, TokenEndpoint::Stable);
        assert_eq!(
            api.token_cache.as_deref(),
            Some(Path::new("/home/u/.cache/wxmp/access_token-wx1.json"))
        );
        assert!(!format!("{api:?}").contains("appsecret123"));
    }

    #[test]
    fn api_settings_come_from_flags_then_variables() {
        let env = env_of(&[
            ("WXMP_APPID", "wxenv"),
            ("WXMP_SECRET", "envsecret\n"),
            ("WXMP_API_BASE", "http://127.0.0.1:9000/"),
            ("WXMP_TOKEN_ENDPOINT", "classic"),
            ("XDG_CACHE_HOME", "/xdg"),
        ]);
        let c = require_api(None, RawApi::default(), &env).unwrap();
        assert_eq!(c.app_id, "wxenv");
        assert_eq!(c.api_base, "http://127.0.0.1:9000");
        assert_eq!(c.token_endpoint, TokenEndpoint::Classic);
        assert_eq!(
            c.token_cache.as_deref(),
            Some(Path::new("/xdg/wxmp/access_token-wxenv.json"))
        );
        let flags = RawApi {
            token_cache: Some("/tmp/t.json".into()),
            api_base: Some("https://proxy.example".into()),
            ..RawApi::default()
        };
        let c = require_api(Some("wx../x".into()), flags, &env).unwrap();
        assert_eq!(c.api_base, "https://proxy.example");
        assert_eq!(c.token_cache.as_deref(), Some(Path::new("/tmp/t.json")));
        assert_eq!(
            default_token_cache("wx../x", &env).unwrap(),
            Path::new("/xdg/wxmp/access_token-wx___x.json")
        );
        assert_eq!(default_token_cache("wx1", &env_of(&[])), None);
    }

    #[test]
    fn api_mistakes_name_the_flag_and_the_variable() {
        let no_env = env_of(&[]);
        let e = require_api(Some("wx1".into()), RawApi::default(), &no_env).unwrap_err();
        assert!(
            e.0.contains("--secret") && e.0.contains("WXMP_SECRET"),
            "{e}"
        );
        let secret_only = RawApi {
            secret: Some(Secret::new("s")),
            ..RawApi::default()
        };
        let e = require_api(None, secret_only.clone(), &no_env).unwrap_err();
        assert!(e.0.contains("--appid") && e.0.contains("WXMP_APPID"), "{e}");
        let serve = RawServe {
            api: secret_only,
            ..raw_with_token()
        };
        assert!(Config::resolve(serve, &no_env)
            .unwrap_err()
            .0
            .contains("--appid"));
        for (raw, needle) in [
            (
                RawApi {
                    api_base: Some("api.weixin.qq.com".into()),
                    ..RawApi::default()
                },
                "--api-base / WXMP_API_BASE",
            ),
            (
                RawApi {
                    token_endpoint: Some("fast".into()),
                    ..RawApi::default()
                },
                "--token-endpoint / WXMP_TOKEN_ENDPOINT",
            ),
        ] {
            let raw = RawApi {
                secret: Some(Secret::new("s")),
                ..raw
            };
            let e = require_api(Some("wx1".into()), raw, &no_env).unwrap_err();
            assert!(e.0.contains(needle), "{e}");
        }
    }
}
