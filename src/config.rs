//! The server's configuration, in two stages: [`SERVE`] declares each setting once (flag,
//! variable, value name, default, range, one line of doc), [`usage::parse`] reads the command
//! line into [`Args`], and [`Config::resolve`] validates it once into the parts the server
//! takes: where it listens, the account, the retry cache, the access log, forwarding, the API
//! and the log format. All defaults live here; nothing here knows the server.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::api::{ApiConfig, Secret, TokenEndpoint};
use crate::log::Format;
use crate::protocol::envelope::SafeMode;
use crate::protocol::verify::Token;
use crate::usage::{self, Args, Env, Setting, Spec, UsageError};

pub mod accounts;

pub const DEFAULT_HOST: &str = "0.0.0.0";
pub const DEFAULT_PORT: u16 = 80;
/// The path WeChat's samples and most tutorials use.
pub const DEFAULT_PATH: &str = "/weixin";
pub const DEFAULT_CACHE_MB: usize = 32;
pub const DEFAULT_CACHE_TTL: u64 = 60;
pub const DEFAULT_API_BASE: &str = "https://api.weixin.qq.com";
/// The limit on each API request. WeChat answers in well under a second; 10 s covers a slow
/// link without letting a dead one hold a late reply (or a terminal) for long.
pub const API_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_CAPACITY: usize = 200;
pub const DEFAULT_PROCESSES: usize = 16;
pub const DEFAULT_KF_WAIT: Duration = Duration::from_secs(60);
/// Seconds a signed query stays good: WeChat's ~15 s of retries plus clock skew.
pub const DEFAULT_REPLAY_WINDOW: u64 = 300;
/// The longest replay window accepted: a day. Longer defeats its purpose.
pub const MAX_REPLAY_WINDOW: u64 = 86_400;

/// `--appid`, shared by the server and the API commands.
pub const APPID: Setting = Setting::value(
    "appid",
    "APPID",
    "your AppID: needed with --aes-key and with --secret",
)
.env("WXMP_APPID");
/// `--secret`: the AppSecret, wrapped at once so no `Debug` shows it.
pub const SECRET: Setting = Setting::value(
    "secret",
    "SECRET",
    "your AppSecret, for the API; never printed or logged",
)
.env("WXMP_SECRET")
.secret();
pub const API_BASE: Setting = Setting::value(
    "api-base",
    "URL",
    "where the WeChat API is: a proxy, or wxmp fake-api",
)
.env("WXMP_API_BASE")
.default(DEFAULT_API_BASE);
pub const TOKEN_CACHE: Setting = Setting::value(
    "token-cache",
    "FILE",
    "where the access_token is kept between runs (created 0600)",
)
.env("WXMP_TOKEN_CACHE")
.default("$XDG_CACHE_HOME or ~/.cache, then /wxmp/access_token-APPID.json");
pub const TOKEN_ENDPOINT: Setting = Setting::value(
    "token-endpoint",
    "E",
    "stable (POST /cgi-bin/stable_token) or classic (GET /cgi-bin/token)",
)
.env("WXMP_TOKEN_ENDPOINT")
.default("stable");

/// Every setting of `wxmp serve`, in the order of `--help` and the README's table.
#[rustfmt::skip]
pub const SERVE: &[Setting] = &[
    Setting::value("host", "HOST", "address to listen on").env("WXMP_HOST").default(DEFAULT_HOST),
    Setting::value("port", "PORT", "port to listen on; 0 picks a free one").env("WXMP_PORT").default("80").range(0, 65535, ""),
    Setting::value("accounts", "FILE", "an accounts file (TOML): many accounts, each at its own path").env("WXMP_ACCOUNTS").default("off: one account from the flags"),
    Setting::value("path", "PATH", "the message URL path you enter in the console").env("WXMP_PATH").default(DEFAULT_PATH),
    Setting::value("token", "TOKEN", "the Token from the console (required): 3-32 letters or digits").env("WXMP_TOKEN").secret(),
    Setting::value("aes-key", "KEY", "the 43-character EncodingAESKey; turns on safe/compatible mode").env("WXMP_AES_KEY").secret(),
    APPID,
    Setting::value("rules", "FILE", "keyword rules file (TOML), reloaded when it changes").env("WXMP_RULES").default("built-in rules"),
    Setting::value("threads", "N", "request-handler threads").env("WXMP_THREADS").default("4 x cores, 8..64").range(1, 1024, ""),
    Setting::value("cache-mb", "MB", "memory budget of the retry cache").env("WXMP_CACHE_MB").default("32").range(1, u64::MAX, "the retry cache is what gives WeChat's retries the same answer"),
    Setting::value("cache-ttl", "SECS", "how long replies are kept for retries").env("WXMP_CACHE_TTL").default("60").range(30, u64::MAX, "WeChat retries for about 15 s"),
    Setting::value("max-connections", "N", "open connections at once; past it a new one gets 503").env("WXMP_MAX_CONNECTIONS").default("(open-files limit - 64) / 2, 16..4096").range(1, 1_000_000, ""),
    Setting::value("late", "MODE", "a late answer from your own code: stretch (held) or kf (sent)").env("WXMP_LATE").default("kf with --secret, else stretch"),
    Setting::value("forward-secret", "S", "signs forwarded bodies: X-Wxmp-Signature, HMAC-SHA256").env("WXMP_FORWARD_SECRET").secret(),
    Setting::value("forward-capacity", "N", "forwarded pushes in flight; past it, the fallback at once").env("WXMP_FORWARD_CAPACITY").default("200").range(1, 10_000, "pushes in flight"),
    Setting::value("forward-processes", "N", "reply.command programs running at once").env("WXMP_FORWARD_PROCESSES").default("16").range(1, 1024, ""),
    Setting::value("kf-wait", "SECS", "under kf, how long a late answer is awaited").env("WXMP_KF_WAIT").default("60").range(5, 3600, "seconds"),
    Setting::value("store", "URL", "memory, or redis://[user:password@]host:port[/db] (rediss:// for TLS) shared by several instances").env("WXMP_STORE").default("memory").secret(),
    Setting::value("store-prefix", "P", "prefix of every Redis key, so deployments can share one Redis").env("WXMP_STORE_PREFIX").default(DEFAULT_STORE_PREFIX),
    Setting::value("store-timeout", "MS", "deadline of each Redis operation; past it the push uses local memory").env("WXMP_STORE_TIMEOUT").default("200").range(1, 10_000, "milliseconds"),
    Setting::value("replay-window", "SECS", "how far a timestamp may be from the clock; 0 turns the checks off").env("WXMP_REPLAY_WINDOW").default("300").range(0, MAX_REPLAY_WINDOW, "seconds; 0 turns the checks off"),
    SECRET,
    API_BASE,
    TOKEN_CACHE,
    TOKEN_ENDPOINT,
    Setting::value("log-format", "FMT", "text, or json: one object per line").env("WXMP_LOG_FORMAT").default("text"),
    Setting::switch("quiet", "log refused requests only").env("WXMP_QUIET").default("off"),
    Setting::switch("log-openid", "log whole OpenIDs (personal data), not a hash").env("WXMP_LOG_OPENID").default("off"),
    Setting::value("metrics-addr", "ADDR", "a listener for /metrics and wxmp tail (127.0.0.1:9100)").env("WXMP_METRICS_ADDR").default("off"),
    Setting::value("api-proxy", "ADDR", "the API gateway: your code calls WeChat here, token-free (127.0.0.1:9200)").env("WXMP_API_PROXY").default("off"),
    Setting::value("api-proxy-allow", "CIDRS", "networks besides loopback that may call the gateway (172.17.0.0/16)").env("WXMP_API_PROXY_ALLOW").default("loopback only"),
];

/// `wxmp [serve]`'s command line.
pub const SPEC: Spec = Spec {
    help: "wxmp --help",
    settings: SERVE,
    fields: &[],
    words: false,
};

/// What the server is: the parts it takes, each validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Listen,
    /// The one account of the flags, or the accounts file.
    pub accounts: Accounts,
    /// The retry store's limits.
    pub cache: Limits,
    /// What the access log shows.
    pub access: AccessOptions,
    /// Forwarding to the user's own code (`reply.forward` / `reply.command` in the rules).
    pub forward: Forward,
    /// The API client's settings, when both the AppID and the AppSecret are given (the server
    /// can then send customer-service messages); with an accounts file, each account's own.
    pub api: Option<ApiConfig>,
    /// Seconds a signed query stays good ([`crate::server::replay`]); 0: the timestamp and
    /// nonce checks are off.
    pub replay_window: u64,
    /// Where the retry store, the seen queries and the access_token live: this process's
    /// memory, or a Redis shared by several instances.
    pub store: StoreConfig,
    /// The API gateway (`--api-proxy`); `None`: off.
    pub gateway: Option<Gateway>,
    /// The log's format: text or JSON.
    pub log: Format,
    /// Settings that are accepted but probably not meant; the server logs them at start.
    pub warnings: Vec<String>,
}

/// Where and how the server listens.
#[derive(Debug, Clone)]
pub struct Listen {
    pub host: String,
    pub port: u16,
    /// Request-handler threads.
    pub threads: usize,
    /// Open connections at most (more get a 503); `None`: derived from the descriptor limit at
    /// start ([`default_max_connections`]).
    pub max_connections: Option<usize>,
    /// The metrics listener (`/metrics`, and `/tail` when on loopback); `None`: off.
    pub metrics: Option<SocketAddr>,
}

/// Where the accounts come from.
#[derive(Debug, Clone)]
pub enum Accounts {
    /// No `--accounts`: one implicit account, from the flags.
    One(AccountConfig),
    /// `--accounts FILE`: loaded (and reloaded) by the server.
    File {
        path: PathBuf,
        /// What the accounts' API clients share.
        api: accounts::ApiShared,
        /// The variables its `<key>_env` keys name, as they were at start.
        vars: accounts::EnvVars,
    },
}

/// The single-account settings that belong in the accounts file when there is one, and where
/// each goes there.
const PER_ACCOUNT: &[(&str, &str)] = &[
    ("path", "path"),
    ("token", "token, token_env or token_file"),
    ("aes-key", "aes_key, aes_key_env or aes_key_file"),
    ("appid", "appid"),
    ("rules", "rules"),
    ("late", "late"),
    (
        "forward-secret",
        "forward_secret, forward_secret_env or forward_secret_file",
    ),
    ("forward-capacity", "forward_capacity"),
    ("kf-wait", "kf_wait"),
    ("secret", "secret, secret_env or secret_file"),
    (
        "token-cache",
        "nothing: each AppID's token is cached in the default place",
    ),
];

/// The Official Account: where WeChat posts, how pushes are signed and sealed, which rules.
#[derive(Debug, Clone)]
pub struct AccountConfig {
    pub path: String,
    pub token: Token,
    /// Safe and compatible mode: the EncodingAESKey and AppID.
    pub safe: Option<SafeMode>,
    /// The rules file; `None`: the built-in rules.
    pub rules: Option<PathBuf>,
}

/// The retry store's limits, all configurable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Seconds a reply is kept; WeChat's retries span about 15 s.
    pub ttl_secs: u64,
    pub max_entries: usize,
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            ttl_secs: DEFAULT_CACHE_TTL,
            max_entries: 100_000,
            max_bytes: DEFAULT_CACHE_MB << 20,
        }
    }
}

/// How the access log treats requests and users (`--quiet`, `--log-openid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AccessOptions {
    /// Log refused requests only, as wxmp did before it had an access log.
    pub quiet: bool,
    /// Show whole OpenIDs instead of a prefix and a hash.
    pub full_openid: bool,
}

/// What to do when the user's code answers after the first attempt's 5 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Late {
    /// Hold WeChat's retries open and answer on the one that is open when the answer comes.
    Stretch,
    /// Answer the fallback in time and send the late answer as a customer-service message.
    Kf,
}

impl Late {
    pub fn as_str(self) -> &'static str {
        match self {
            Late::Stretch => "stretch",
            Late::Kf => "kf",
        }
    }
}

/// The secret that signs forwarded bodies (`--forward-secret`); `Debug` is redacted.
#[derive(Clone)]
pub struct ForwardSecret(Vec<u8>);

impl ForwardSecret {
    pub fn new(secret: &str) -> ForwardSecret {
        ForwardSecret(secret.as_bytes().to_vec())
    }

    /// The key bytes, for the HMAC.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for ForwardSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ForwardSecret(***)")
    }
}

/// How forwarding behaves.
#[derive(Debug, Clone)]
pub struct Forward {
    pub late: Late,
    /// The account's AppID when it is known (`--appid`), sent as `X-WX-APPID` as Cloud Hosting
    /// does.
    pub app_id: Option<String>,
    /// Signs every forwarded body with `X-Wxmp-Signature` when set.
    pub secret: Option<ForwardSecret>,
    /// Pushes whose call is in flight at once.
    pub capacity: usize,
    /// Commands running at once (each is a process).
    pub processes: usize,
    /// Under `kf`, how long a late answer is awaited.
    pub kf_wait: Duration,
}

impl Default for Forward {
    fn default() -> Self {
        Forward {
            late: Late::Stretch,
            app_id: None,
            secret: None,
            capacity: DEFAULT_CAPACITY,
            processes: DEFAULT_PROCESSES,
            kf_wait: DEFAULT_KF_WAIT,
        }
    }
}

impl Forward {
    /// Handler threads that may be held by forwarded attempts at once, on top of the threads
    /// that do the server's own work: under `stretch` a push holds one attempt at a time, two
    /// for the `SLACK` while one retry takes over from the previous attempt.
    pub fn held_threads(&self) -> usize {
        self.capacity.saturating_mul(2)
    }

    /// The threads kept for held attempts when the rules at start do not forward: enough for a
    /// forwarding rule added by a reload to work, few enough that a server that never forwards
    /// does not pay for hundreds of idle threads (measured: 10–15% of its throughput).
    pub const RESERVE: usize = 32;
}

/// The API gateway: where it listens and who besides loopback may call it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Gateway {
    pub addr: SocketAddr,
    /// Networks whose peers may call it besides loopback (`--api-proxy-allow`).
    pub allow: Vec<Cidr>,
}

impl Gateway {
    /// A loopback peer always may; any other only from an allowed network.
    pub fn allows(&self, peer: IpAddr) -> bool {
        let peer = unmapped(peer);
        peer.is_loopback() || self.allow.iter().any(|c| c.contains(peer))
    }

    /// The networks of `CIDR[,CIDR...]`; `Err` is the entry that is not one.
    pub fn allow_list(list: &str) -> Result<Vec<Cidr>, String> {
        list.split(',')
            .filter(|c| !c.trim().is_empty())
            .map(|c| Cidr::parse(c).ok_or_else(|| c.trim().to_owned()))
            .collect()
    }
}

/// An IPv4 address that reached an IPv6 socket (`::ffff:a.b.c.d`) as the IPv4 address it is.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A network, `172.17.0.0/16` or `fd00::/8`; a bare address is a network of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (ip, prefix) = match s.trim().split_once('/') {
            Some((ip, p)) => (ip, Some(p.parse::<u8>().ok()?)),
            None => (s.trim(), None),
        };
        let net = unmapped(ip.parse::<IpAddr>().ok()?);
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Cidr { net, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, unmapped(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

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
    /// The configuration that `wxmp serve ARGS...` would run with, in one step (for tests and
    /// for code that embeds the server).
    pub fn from_args<I>(args: I, env: Env<'_>) -> Result<Config, UsageError>
    where
        I: IntoIterator,
        I::Item: Into<std::ffi::OsString>,
    {
        match usage::parse(lexopt::Parser::from_args(args), &SPEC)? {
            usage::Parsed::Args(args) => Config::resolve(args, env),
            usage::Parsed::Help => Err(UsageError("--help is not a setting".into())),
        }
    }

    /// Flags win over the environment (`env` looks a `WXMP_*` variable up), which wins over the
    /// defaults.
    pub fn resolve(args: Args, env: Env<'_>) -> Result<Config, UsageError> {
        let args = args.with_env(env);
        let mut warnings = Vec::new();
        let (accounts, api, forward) = match args.get("accounts") {
            Some(path) => {
                refuse_per_account(&args)?;
                let parts = api_parts(&args, env)?;
                let cache_home = default_token_cache("x", env)
                    .and_then(|p| p.parent().and_then(Path::parent).map(Path::to_path_buf));
                let forward = Forward {
                    processes: args.number("forward-processes", DEFAULT_PROCESSES)?,
                    ..Forward::default()
                };
                let api = accounts::ApiShared {
                    api_base: parts.api_base,
                    token_endpoint: parts.token_endpoint,
                    cache_home,
                };
                let path = PathBuf::from(path);
                let vars = accounts::EnvVars::read(&path, env);
                (Accounts::File { path, api, vars }, None, forward)
            }
            None => {
                let api = resolve_api(&args, env)?;
                let account = account(&args, api.is_some(), &mut warnings)?;
                let forward = forward(&args, api.is_some())?;
                (Accounts::One(account), api, forward)
            }
        };
        let listen = listen(&args, &mut warnings)?;
        let file = matches!(accounts, Accounts::File { .. });
        let gateway = gateway(&args, api.is_some(), file, &mut warnings)?;
        let replay_window = replay_window(&args, &mut warnings)?;
        let cache_mb: usize = args.number("cache-mb", DEFAULT_CACHE_MB)?;
        let log = match args.get("log-format") {
            None => Format::Text,
            Some(f) => Format::parse(&f).ok_or_else(|| {
                UsageError(format!(
                    "invalid log format {f:?} (--log-format / WXMP_LOG_FORMAT): expected text or json"
                ))
            })?,
        };
        Ok(Config {
            listen,
            accounts,
            cache: Limits {
                ttl_secs: args.number("cache-ttl", DEFAULT_CACHE_TTL)?,
                max_entries: Limits::default().max_entries,
                max_bytes: cache_mb.saturating_mul(1 << 20),
            },
            access: AccessOptions {
                quiet: args.switch("quiet")?,
                full_openid: args.switch("log-openid")?,
            },
            forward,
            api,
            replay_window,
            store: store(&args)?,
            gateway,
            log,
            warnings,
        })
    }
}

/// With `--accounts`, a single-account setting is an error that says where it goes instead.
fn refuse_per_account(args: &Args) -> Result<(), UsageError> {
    let given: Vec<&(&str, &str)> = PER_ACCOUNT
        .iter()
        .filter(|(name, _)| args.get(name).is_some())
        .collect();
    match given.first() {
        None => Ok(()),
        Some((name, goes)) => Err(UsageError(format!(
            "{} cannot be used with --accounts / WXMP_ACCOUNTS: each account's settings are in the accounts file (there: {goes}){}",
            args.names(name),
            if given.len() > 1 {
                format!(
                    "; so are {}",
                    given[1..]
                        .iter()
                        .map(|(n, _)| format!("--{n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            } else {
                String::new()
            }
        ))),
    }
}

impl Config {
    /// The one account of the flags; `None` with an accounts file.
    pub fn account(&self) -> Option<&AccountConfig> {
        match &self.accounts {
            Accounts::One(a) => Some(a),
            Accounts::File { .. } => None,
        }
    }
}

fn account(
    args: &Args,
    api: bool,
    warnings: &mut Vec<String>,
) -> Result<AccountConfig, UsageError> {
    let path = args.get("path").unwrap_or_else(|| DEFAULT_PATH.to_owned());
    if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
        return Err(UsageError(format!(
            "invalid path {path:?} (--path / WXMP_PATH): it must start with '/', like /weixin"
        )));
    }
    if path == "/" || path == "/healthz" {
        return Err(UsageError(format!(
            "invalid path {path:?} (--path / WXMP_PATH): / and /healthz are taken; use e.g. /weixin"
        )));
    }
    let token = args.get("token").ok_or_else(|| {
        UsageError(
            "no token: pass --token TOKEN or set WXMP_TOKEN (the Token from the WeChat console)"
                .into(),
        )
    })?;
    let token = Token::new(&token)
        .map_err(|e| UsageError(format!("invalid token (--token / WXMP_TOKEN): {e}")))?;
    let (key, app_id) = (args.get("aes-key"), args.get("appid"));
    // With an AppSecret the AppID is meant: the API needs it.
    if key.is_none() && app_id.is_some() && !api {
        warnings.push(
            "--appid / WXMP_APPID is set without --aes-key / WXMP_AES_KEY: the AppID is only used in safe and compatible mode, which need the EncodingAESKey too; pushes are handled in plaintext".to_owned(),
        );
    }
    Ok(AccountConfig {
        path,
        token,
        safe: usage::safe_mode(key, app_id)?,
        rules: args.get("rules").map(PathBuf::from),
    })
}

fn listen(args: &Args, warnings: &mut Vec<String>) -> Result<Listen, UsageError> {
    let metrics = match args.get("metrics-addr") {
        None => None,
        Some(a) => Some(a.trim().parse::<SocketAddr>().map_err(|_| {
            UsageError(format!(
                "invalid address {a:?} (--metrics-addr / WXMP_METRICS_ADDR): expected IP:PORT, like 127.0.0.1:9100"
            ))
        })?),
    };
    if let Some(addr) = metrics.filter(|a| !a.ip().is_loopback()) {
        warnings.push(format!(
            "--metrics-addr / WXMP_METRICS_ADDR {addr} is not a loopback address: anyone who can reach it can read /metrics, and the live view (wxmp tail) is off because it shows message content; use 127.0.0.1:PORT unless a scraper elsewhere needs it"
        ));
    }
    let max_connections = match args.get("max-connections") {
        None => None,
        Some(_) => Some(args.number("max-connections", 0usize)?),
    };
    Ok(Listen {
        host: args.get("host").unwrap_or_else(|| DEFAULT_HOST.to_owned()),
        port: args.number("port", DEFAULT_PORT)?,
        threads: args.number("threads", default_threads())?,
        max_connections,
        metrics,
    })
}

/// The default `--store-prefix`.
pub const DEFAULT_STORE_PREFIX: &str = "wxmp:";

/// `--store`, `--store-prefix`, `--store-timeout`.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// The Redis URL (a secret: it may hold a password); `None` for `memory`.
    pub url: Option<String>,
    pub prefix: String,
    pub timeout: std::time::Duration,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &self.url.as_deref().map(redact))
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: None,
            prefix: DEFAULT_STORE_PREFIX.to_owned(),
            timeout: std::time::Duration::from_millis(200),
        }
    }
}

/// A Redis URL with its password replaced by `***`, for logs and errors.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or("", |(u, _)| u);
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                "***".to_owned()
            };
            format!("{scheme}://{masked}@{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// Checks a `--store` Redis URL without connecting: the error says what is wrong, without the
/// password.
pub fn check_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(format!(
            "invalid store {:?}: expected memory, redis://[user:password@]host:port[/db] or rediss://...",
            redact(url)
        ));
    }
    redis::Client::open(url).map(|_| ()).map_err(|e| {
        format!(
            "invalid store URL {}: {}; expected redis://[user:password@]host:port[/db]",
            redact(url),
            e.detail().unwrap_or("malformed")
        )
    })
}

fn store(args: &Args) -> Result<StoreConfig, UsageError> {
    let url = match args.get("store") {
        None => None,
        Some(u) if u.trim() == "memory" => None,
        Some(u) => {
            let u = u.trim().to_owned();
            check_url(&u).map_err(|e| UsageError(format!("{e} (--store / WXMP_STORE)")))?;
            Some(u)
        }
    };
    let prefix = args
        .get("store-prefix")
        .unwrap_or_else(|| DEFAULT_STORE_PREFIX.to_owned());
    if prefix.len() > 64 || prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(UsageError(format!(
            "invalid store prefix {prefix:?} (--store-prefix / WXMP_STORE_PREFIX): up to 64 characters, no spaces"
        )));
    }
    Ok(StoreConfig {
        url,
        prefix,
        timeout: std::time::Duration::from_millis(args.number("store-timeout", 200u64)?),
    })
}

fn replay_window(args: &Args, warnings: &mut Vec<String>) -> Result<u64, UsageError> {
    let window = args.number("replay-window", DEFAULT_REPLAY_WINDOW)?;
    if window == 0 {
        warnings.push(
            "--replay-window / WXMP_REPLAY_WINDOW is 0: timestamps and nonces are not checked, so a signed query seen once (a proxy log, a screenshot) signs any plaintext push forever; use 0 only to diagnose a wrong clock".to_owned(),
        );
    } else if window < 30 {
        warnings.push(format!(
            "--replay-window / WXMP_REPLAY_WINDOW is {window} s: WeChat retries for about 15 s after its first attempt, and any clock skew between WeChat and this server comes off the window; pushes may be refused as stale"
        ));
    }
    Ok(window)
}

/// The gateway: `api` says the flags configure the API; `accounts_file` that an accounts file
/// is in use (then the gateway serves each account under `/<name>/`).
fn gateway(
    args: &Args,
    api: bool,
    accounts_file: bool,
    warnings: &mut Vec<String>,
) -> Result<Option<Gateway>, UsageError> {
    let allow = match args.get("api-proxy-allow") {
        None => Vec::new(),
        Some(list) => Gateway::allow_list(&list).map_err(|c| {
            UsageError(format!(
                "invalid network {c:?} (--api-proxy-allow / WXMP_API_PROXY_ALLOW): expected CIDR[,CIDR...], like 172.17.0.0/16"
            ))
        })?,
    };
    let Some(a) = args.get("api-proxy") else {
        if !allow.is_empty() {
            warnings.push("--api-proxy-allow / WXMP_API_PROXY_ALLOW is set without --api-proxy / WXMP_API_PROXY: there is no gateway to allow anyone into".to_owned());
        }
        return Ok(None);
    };
    let addr = a.trim().parse::<SocketAddr>().map_err(|_| {
        UsageError(format!(
            "invalid address {a:?} (--api-proxy / WXMP_API_PROXY): expected IP:PORT, like 127.0.0.1:9200"
        ))
    })?;
    // With an accounts file the gateway serves each account under /<name>/, with the API
    // settings of the file.
    if !api && !accounts_file {
        return Err(UsageError(
            "--api-proxy (WXMP_API_PROXY) calls WeChat with wxmp's access_token, which needs --appid and --secret (WXMP_APPID, WXMP_SECRET)".into(),
        ));
    }
    if !addr.ip().is_loopback() && allow.is_empty() {
        return Err(UsageError(format!(
            "--api-proxy (WXMP_API_PROXY) {addr} is not a loopback address: the gateway is a key to the whole account, so name the networks that may call it with --api-proxy-allow CIDR[,CIDR...] (WXMP_API_PROXY_ALLOW), e.g. 172.17.0.0/16 for Docker"
        )));
    }
    Ok(Some(Gateway { addr, allow }))
}

fn forward(args: &Args, api: bool) -> Result<Forward, UsageError> {
    // `kf` needs the customer-service API, so it is the default only with an AppSecret.
    let late = match args.get("late").as_deref() {
        None if api => Late::Kf,
        None | Some("stretch") => Late::Stretch,
        Some("kf") if !api => {
            return Err(UsageError(
                "--late kf (WXMP_LATE) sends late answers through the customer-service API, which needs --appid and --secret (WXMP_APPID, WXMP_SECRET); without them use --late stretch".into(),
            ))
        }
        Some("kf") => Late::Kf,
        Some(other) => {
            return Err(UsageError(format!(
                "invalid late strategy {other:?} (--late / WXMP_LATE): expected stretch or kf"
            )))
        }
    };
    Ok(Forward {
        late,
        app_id: args
            .get("appid")
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty()),
        secret: args.get("forward-secret").map(|s| ForwardSecret::new(&s)),
        capacity: args.number("forward-capacity", DEFAULT_CAPACITY)?,
        processes: args.number("forward-processes", DEFAULT_PROCESSES)?,
        kf_wait: Duration::from_secs(args.number("kf-wait", DEFAULT_KF_WAIT.as_secs())?),
    })
}

/// The API settings from `--appid`, `--secret`, `--api-base`, `--token-cache` and
/// `--token-endpoint` (each falling back to its `WXMP_*` variable, already in `args`): `None`
/// when neither an AppID nor an AppSecret is given, or only an AppID (safe mode uses it
/// alone); an error for an AppSecret without an AppID. `env` gives the cache's default place.
pub fn resolve_api(args: &Args, env: Env<'_>) -> Result<Option<ApiConfig>, UsageError> {
    let parts = api_parts(args, env)?;
    match (parts.app_id, parts.secret) {
        (Some(app_id), Some(secret)) => Ok(Some(ApiConfig {
            app_id,
            secret,
            api_base: parts.api_base,
            token_cache: parts.token_cache,
            token_endpoint: parts.token_endpoint,
            timeout: API_TIMEOUT,
        })),
        (None, Some(_)) => Err(UsageError(
            "an AppSecret needs its AppID: pass --appid or set WXMP_APPID (both are under 设置与开发 → 基本配置)".into(),
        )),
        _ => Ok(None),
    }
}

/// For the commands that call the API: the AppID and the AppSecret are both required.
pub fn require_api(args: &Args, env: Env<'_>) -> Result<ApiConfig, UsageError> {
    let has_secret = args.get("secret").is_some_and(|s| !s.trim().is_empty());
    match resolve_api(args, env)? {
        Some(c) => Ok(c),
        None if has_secret => Err(UsageError(
            "no AppID: pass --appid or set WXMP_APPID (设置与开发 → 基本配置, or the test account's page)".into(),
        )),
        None => Err(UsageError(
            "no AppSecret: pass --secret or set WXMP_SECRET (设置与开发 → 基本配置 → AppSecret, or the test account's appsecret)".into(),
        )),
    }
}

/// Where the token of an AppID is cached, without needing the AppSecret (`wxmp token`).
pub fn token_cache_of(
    args: &Args,
    env: Env<'_>,
) -> Result<(String, String, Option<PathBuf>), UsageError> {
    let parts = api_parts(args, env)?;
    let app_id = parts.app_id.ok_or_else(|| {
        UsageError("no AppID: pass --appid or set WXMP_APPID (the token cache is per AppID)".into())
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

fn api_parts(args: &Args, env: Env<'_>) -> Result<ApiParts, UsageError> {
    let app_id = args.get("appid").map(|a| a.trim().to_owned());
    // Secrets pasted from a file often end in a newline.
    let secret = args
        .get("secret")
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .map(Secret::new);
    let api_base = args
        .get("api-base")
        .unwrap_or_else(|| DEFAULT_API_BASE.to_owned());
    let api_base = api_base.trim().trim_end_matches('/').to_owned();
    let host = api_base
        .strip_prefix("https://")
        .or_else(|| api_base.strip_prefix("http://"));
    if host.is_none_or(|h| h.is_empty() || h.contains(['/', '?', '#', ' '])) {
        return Err(UsageError(format!(
            "invalid API base {:?} (--api-base / WXMP_API_BASE): expected http(s)://HOST[:PORT], like {DEFAULT_API_BASE} or http://127.0.0.1:8090 for wxmp fake-api",
            crate::text::redact_url(&api_base)
        )));
    }
    let token_endpoint = match args.get("token-endpoint").as_deref() {
        None | Some("stable") => TokenEndpoint::Stable,
        Some("classic") => TokenEndpoint::Classic,
        Some(other) => {
            return Err(UsageError(format!(
                "invalid token endpoint {other:?} (--token-endpoint / WXMP_TOKEN_ENDPOINT): expected stable (POST /cgi-bin/stable_token, the default) or classic (GET /cgi-bin/token)"
            )))
        }
    };
    let token_cache = match args.get("token-cache") {
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

/// An AppID as it goes into a file name (the token cache, the media map). An AppID is letters
/// and digits; anything else must not steer the path.
pub fn app_id_in_file_name(app_id: &str) -> String {
    app_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `$XDG_CACHE_HOME/wxmp/access_token-APPID.json`, else `~/.cache/wxmp/…`; `None` when neither
/// variable gives an absolute directory (the token is then kept in memory only).
pub fn default_token_cache(app_id: &str, env: Env<'_>) -> Option<PathBuf> {
    let absolute = |v: String| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    let base = env("XDG_CACHE_HOME")
        .and_then(absolute)
        .or_else(|| env("HOME").and_then(absolute).map(|h| h.join(".cache")))?;
    let name = app_id_in_file_name(app_id);
    Some(
        Path::new(&base)
            .join("wxmp")
            .join(format!("access_token-{name}.json")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::Parsed;

    type Pairs = &'static [(&'static str, &'static str)];

    fn env_of(pairs: Pairs) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    fn args(a: &[&str]) -> Args {
        match usage::parse(lexopt::Parser::from_args(a.iter().copied()), &SPEC) {
            Ok(Parsed::Args(args)) => args,
            other => panic!("{other:?}"),
        }
    }

    fn resolve(a: &[&str], env: Pairs) -> Result<Config, UsageError> {
        Config::resolve(args(a), &env_of(env))
    }

    /// With a token, so that only what is under test can fail.
    fn with_token(a: &[&str], env: Pairs) -> Result<Config, UsageError> {
        let mut all = vec!["--token", "tok123"];
        all.extend_from_slice(a);
        resolve(&all, env)
    }

    fn error(a: &[&str]) -> String {
        match with_token(a, &[]) {
            Err(e) => e.0,
            Ok(c) => panic!("{a:?} accepted: {c:?}"),
        }
    }

    #[test]
    fn defaults_apply() {
        let c = with_token(&[], &[]).unwrap();
        assert_eq!(
            (
                c.listen.host.as_str(),
                c.listen.port,
                c.account().unwrap().path.as_str()
            ),
            ("0.0.0.0", 80, "/weixin")
        );
        assert!(c.account().unwrap().safe.is_none());
        assert_eq!(c.cache, Limits::default());
        assert_eq!(c.cache.max_bytes, 32 << 20);
        assert_eq!(c.listen.threads, default_threads());
        assert_eq!(c.forward.capacity, DEFAULT_CAPACITY);
        assert_eq!(c.forward.late, Late::Stretch);
    }

    #[test]
    fn flag_wins_over_env() {
        let c = resolve(
            &["--port", "9000"],
            &[("WXMP_PORT", "8080"), ("WXMP_TOKEN", "envtok")],
        )
        .unwrap();
        assert_eq!(c.listen.port, 9000);
        assert_eq!(c.account().unwrap().token.expose(), "envtok");
    }

    #[test]
    fn missing_token_names_flag_and_variable() {
        let e = resolve(&[], &[]).unwrap_err();
        assert!(e.0.contains("--token") && e.0.contains("WXMP_TOKEN"), "{e}");
    }

    #[test]
    fn invalid_values_are_named() {
        for (a, needle) in [
            (&["--port", "eighty"][..], "--port / WXMP_PORT"),
            (&["--path", "weixin"], "--path"),
            (
                &["--aes-key", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"],
                "--appid",
            ),
            (&["--aes-key", "short", "--appid", "wx1"], "43"),
            (&["--threads", "0"], "--threads / WXMP_THREADS"),
            (&["--threads", "1025"], "from 1 to 1024"),
            (&["--max-connections", "0"], "--max-connections"),
            (&["--cache-ttl", "29"], "at least 30"),
            (&["--forward-capacity", "10001"], "--forward-capacity"),
            (&["--forward-processes", "0"], "--forward-processes"),
            (&["--kf-wait", "4"], "5 to 3600"),
            (&["--late", "soon"], "--late / WXMP_LATE"),
            (&["--late", "kf"], "needs --appid and --secret"),
        ] {
            let e = error(a);
            assert!(e.contains(needle), "{a:?}: {e}");
        }
    }

    #[test]
    fn the_store_is_memory_unless_a_redis_url_is_given_and_its_password_never_shows() {
        let c = with_token(&[], &[]).unwrap();
        assert_eq!(c.store, StoreConfig::default());
        let c = with_token(&["--store", "memory"], &[]).unwrap();
        assert_eq!(c.store.url, None);
        let c = with_token(
            &["--store-prefix", "blue:", "--store-timeout", "50"],
            &[("WXMP_STORE", "redis://u:pw1@db:6379/2")],
        )
        .unwrap();
        assert_eq!(c.store.url.as_deref(), Some("redis://u:pw1@db:6379/2"));
        assert_eq!(c.store.prefix, "blue:");
        assert_eq!(c.store.timeout, std::time::Duration::from_millis(50));
        assert!(!format!("{c:?}").contains("pw1"));
        for (a, needle) in [
            (&["--store", "mysql://db"][..], "expected memory, redis://"),
            (
                &["--store", "redis://u:pw1@db:port"],
                "--store / WXMP_STORE",
            ),
            (
                &["--store-prefix", "a b"],
                "--store-prefix / WXMP_STORE_PREFIX",
            ),
            (
                &["--store-timeout", "0"],
                "--store-timeout / WXMP_STORE_TIMEOUT",
            ),
        ] {
            let e = error(a);
            assert!(e.contains(needle) && !e.contains("pw1"), "{a:?}: {e}");
        }
    }

    #[test]
    fn the_connection_cap_defaults_from_the_descriptor_limit() {
        let c = with_token(&[], &[("WXMP_MAX_CONNECTIONS", "")]).unwrap();
        assert_eq!(c.listen.max_connections, None);
        let c = with_token(&[], &[("WXMP_MAX_CONNECTIONS", "300")]).unwrap();
        assert_eq!(c.listen.max_connections, Some(300));
        assert_eq!(default_max_connections(256), 96);
        assert_eq!(default_max_connections(1024), 480);
        assert_eq!(default_max_connections(1 << 20), 4096);
        assert_eq!(default_max_connections(0), 16);
    }

    #[test]
    fn an_appid_alone_is_a_warning_and_a_zero_cache_an_error() {
        let c = with_token(&["--appid", "wx1"], &[]).unwrap();
        assert!(c.account().unwrap().safe.is_none());
        assert!(c.warnings[0].contains("--aes-key"), "{:?}", c.warnings);
        let e = error(&["--cache-mb", "0"]);
        assert!(e.contains("--cache-mb") && e.contains("at least 1"), "{e}");
    }

    #[test]
    fn observability_settings_are_validated_once() {
        let c = with_token(&[], &[]).unwrap();
        assert_eq!(
            (c.log, c.access, c.listen.metrics),
            (Format::Text, AccessOptions::default(), None)
        );
        let c = with_token(
            &[],
            &[
                ("WXMP_LOG_FORMAT", "JSON"),
                ("WXMP_QUIET", "yes"),
                ("WXMP_LOG_OPENID", "1"),
                ("WXMP_METRICS_ADDR", "127.0.0.1:9100"),
            ],
        )
        .unwrap();
        assert_eq!(
            (c.log, c.access.quiet, c.access.full_openid),
            (Format::Json, true, true)
        );
        assert_eq!(c.listen.metrics, Some("127.0.0.1:9100".parse().unwrap()));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        // A flag wins over the variable.
        assert!(
            !with_token(&["--quiet=0"], &[("WXMP_QUIET", "1")])
                .unwrap()
                .access
                .quiet
        );
        for (a, named) in [
            (&["--log-format", "yaml"][..], "--log-format"),
            (&["--quiet=maybe"], "--quiet"),
            (&["--metrics-addr", "localhost"], "--metrics-addr"),
        ] {
            let e = error(a);
            assert!(e.contains(named), "{e}");
        }
        let c = with_token(&["--metrics-addr", "0.0.0.0:9100"], &[]).unwrap();
        assert!(
            c.warnings[0].contains("not a loopback address"),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn the_replay_window_defaults_to_five_minutes_and_zero_warns() {
        let c = with_token(&[], &[]).unwrap();
        assert_eq!(c.replay_window, 300);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let c = with_token(&[], &[("WXMP_REPLAY_WINDOW", "0")]).unwrap();
        assert_eq!(c.replay_window, 0);
        assert!(c.warnings[0].contains("not checked"), "{:?}", c.warnings);
        let e = error(&["--replay-window", "86401"]);
        assert!(e.contains("--replay-window / WXMP_REPLAY_WINDOW"), "{e}");
    }

    #[test]
    fn the_gateway_needs_the_api_and_loopback_or_named_networks() {
        let api = ["--appid", "wx1", "--secret", "s"];
        assert!(with_token(&api, &[]).unwrap().gateway.is_none());
        let e = error(&["--api-proxy", "127.0.0.1:9200"]);
        assert!(e.contains("needs --appid and --secret"), "{e}");
        let g = with_token(
            &[&api[..], &["--api-proxy", "127.0.0.1:9200"]].concat(),
            &[],
        )
        .unwrap()
        .gateway
        .unwrap();
        assert_eq!(g.addr, "127.0.0.1:9200".parse().unwrap());
        assert!(g.allows("127.0.0.1".parse().unwrap()));
        assert!(g.allows("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!g.allows("172.17.0.2".parse().unwrap()));
        let e = error(&[&api[..], &["--api-proxy", "0.0.0.0:9200"]].concat());
        assert!(
            e.contains("--api-proxy-allow") && e.contains("not a loopback"),
            "{e}"
        );
        let g = with_token(
            &api,
            &[
                ("WXMP_API_PROXY", "0.0.0.0:9200"),
                ("WXMP_API_PROXY_ALLOW", "172.17.0.0/16, fd00::/8"),
            ],
        )
        .unwrap()
        .gateway
        .unwrap();
        assert!(g.allows("172.17.3.4".parse().unwrap()));
        assert!(g.allows("::ffff:172.17.0.9".parse().unwrap()));
        assert!(!g.allows("172.18.0.1".parse().unwrap()));
        assert!(g.allows("fd12::1".parse().unwrap()));
        assert!(!g.allows("fe80::1".parse().unwrap()));
        let e = error(
            &[
                &api[..],
                &[
                    "--api-proxy",
                    "0.0.0.0:1",
                    "--api-proxy-allow",
                    "10.0.0.0/33",
                ],
            ]
            .concat(),
        );
        assert!(
            e.contains("--api-proxy-allow / WXMP_API_PROXY_ALLOW"),
            "{e}"
        );
        let c = with_token(&["--api-proxy-allow", "10.0.0.0/8"], &[]).unwrap();
        assert!(
            c.warnings[0].contains("without --api-proxy"),
            "{:?}",
            c.warnings
        );
        assert_eq!(
            Cidr::parse("0.0.0.0/0").map(|c| c.contains("8.8.8.8".parse().unwrap())),
            Some(true)
        );
        assert_eq!(
            Cidr::parse("10.1.2.3").map(|c| c.to_string()).as_deref(),
            Some("10.1.2.3/32")
        );
    }

    #[test]
    fn safe_mode_accepts_the_official_sample_key() {
        let c = with_token(
            &[
                "--aes-key",
                "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
                "--appid",
                "wx2c2769f8efd9abc2",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            c.account().unwrap().safe.as_ref().unwrap().app_id,
            "wx2c2769f8efd9abc2"
        );
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let a = [
            "--token",
            "tok123",
            "--aes-key",
            "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
            "--appid",
            "wx1",
            "--secret",
            "appsecret123",
            "--forward-secret",
            "fwdsecret",
        ];
        let shown = format!("{:?}", args(&a));
        let config = format!("{:?}", resolve(&a, &[]).unwrap());
        for shown in [shown, config] {
            for secret in ["tok123", "abcdefghij", "appsecret123", "fwdsecret"] {
                assert!(!shown.contains(secret), "{shown}");
            }
        }
    }

    #[test]
    fn an_appid_with_a_secret_configures_the_api_without_a_warning() {
        let c = with_token(
            &["--appid", "wx1", "--secret", "appsecret123"],
            &[("HOME", "/home/u")],
        )
        .unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert!(c.account().unwrap().safe.is_none());
        assert_eq!(c.forward.late, Late::Kf);
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
        let c = require_api(&args(&[]).with_env(&env), &env).unwrap();
        assert_eq!(c.app_id, "wxenv");
        assert_eq!(c.api_base, "http://127.0.0.1:9000");
        assert_eq!(c.token_endpoint, TokenEndpoint::Classic);
        assert_eq!(
            c.token_cache.as_deref(),
            Some(Path::new("/xdg/wxmp/access_token-wxenv.json"))
        );
        let flags = args(&[
            "--appid",
            "wx../x",
            "--token-cache",
            "/tmp/t.json",
            "--api-base",
            "https://proxy.example",
        ]);
        let c = require_api(&flags.with_env(&env), &env).unwrap();
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
        let api_error = |a: &[&str]| match require_api(&args(a), &no_env) {
            Err(e) => e.0,
            Ok(c) => panic!("{a:?} accepted: {c:?}"),
        };
        let e = api_error(&["--appid", "wx1"]);
        assert!(e.contains("--secret") && e.contains("WXMP_SECRET"), "{e}");
        let e = api_error(&["--secret", "s"]);
        assert!(e.contains("--appid") && e.contains("WXMP_APPID"), "{e}");
        assert!(error(&["--secret", "s"]).contains("--appid"));
        for (a, needle) in [
            (
                &["--api-base", "api.weixin.qq.com"][..],
                "--api-base / WXMP_API_BASE",
            ),
            (
                &["--token-endpoint", "fast"],
                "--token-endpoint / WXMP_TOKEN_ENDPOINT",
            ),
        ] {
            let mut all = vec!["--appid", "wx1", "--secret", "s"];
            all.extend_from_slice(a);
            let e = api_error(&all);
            assert!(e.contains(needle), "{e}");
        }
    }
}
