//! Server configuration, in two stages: [`RawServe`] holds what the command line and the
//! environment said (strings), [`Config::resolve`] validates it once into plain values. All
//! defaults live here.

use std::fmt;
use std::path::PathBuf;

use crate::app::SafeMode;
use crate::crypto::AesKey;
use crate::dedup::Limits;
use crate::verify::Token;

pub const DEFAULT_HOST: &str = "0.0.0.0";
pub const DEFAULT_PORT: u16 = 80;
pub const DEFAULT_PATH: &str = "/weixin";
pub const DEFAULT_CACHE_MB: usize = 32;
pub const DEFAULT_CACHE_TTL: u64 = 60;
/// Largest body accepted; WeChat's pushes are a few hundred bytes.
pub const MAX_BODY: usize = 1 << 20;

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
    pub max_connections: Option<String>,
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
    /// `None`: derived from the descriptor limit at start ([`default_max_connections`]).
    pub max_connections: Option<usize>,
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

/// Default cap on open connections. Each holds one descriptor and one thread; half of what the
/// descriptor limit leaves after 64 for everything else keeps accept (and the 503 it answers
/// past the cap) from ever running out, and 4096 bounds the threads.
pub fn default_max_connections(fd_limit: u64) -> usize {
    (fd_limit.saturating_sub(64) / 2).clamp(16, 4096) as usize
}

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
        let safe = match (pick(raw.aes_key, "WXMP_AES_KEY"), pick(raw.appid, "WXMP_APPID")) {
            (None, _) => None,
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
            max_connections,
        })
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
}
