//! The accounts file (`--accounts FILE`): many Official Accounts in one wxmp. One `[[account]]`
//! table per account; each secret inline, from a variable (`<key>_env`) or from a file
//! (`<key>_file`, as Docker and Kubernetes mount secrets). [`parse`] checks the whole file and
//! reports every problem with its line, so `wxmp check-accounts` can list them all at once; it
//! reads the variables and the secret files it names, and nothing else (the rules files are
//! the server's to load).

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{
    default_token_cache, AccountConfig, Forward, ForwardSecret, Gateway, Late, API_TIMEOUT,
    DEFAULT_CAPACITY, DEFAULT_KF_WAIT, DEFAULT_PATH,
};
use crate::api::{ApiConfig, Secret, TokenEndpoint};
use crate::protocol::crypto::AesKey;
use crate::protocol::envelope::SafeMode;
use crate::protocol::verify::Token;
use crate::text::line_of;

/// The server-wide API settings every account's client shares (`--api-base`,
/// `--token-endpoint`); each AppID has its own token cache in the default place.
#[derive(Debug, Clone)]
pub struct ApiShared {
    pub api_base: String,
    pub token_endpoint: TokenEndpoint,
    /// `XDG_CACHE_HOME` / `HOME`, resolved once: where each AppID's token is cached.
    pub cache_home: Option<PathBuf>,
}

/// The values of the variables the accounts file names in `<key>_env`, read once when the
/// server starts. The server takes those variables out of its environment at start (so the
/// programs `reply.command` runs, and the server's own restart, never see them) and answers
/// every reload from this copy: a variable first named by a later edit is not found (a
/// secret file, `<key>_file`, is read at every reload).
#[derive(Clone, Default)]
pub struct EnvVars(Arc<Vec<(String, String)>>);

impl EnvVars {
    /// The variables `file` names, each with its value from `env` (those not set are left
    /// out: the accounts file's check then says so, with its line). An unreadable file names
    /// none (the server then refuses it with the reason).
    pub fn read(file: &Path, env: &dyn Fn(&str) -> Option<String>) -> EnvVars {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let vars = env_names(&text)
            .into_iter()
            .filter_map(|name| env(&name).map(|v| (name, v)))
            .collect();
        EnvVars(Arc::new(vars))
    }

    /// The value of `name`, as it was at start.
    pub fn get(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }
}

impl fmt::Debug for EnvVars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(n, _)| n))
            .finish()
    }
}

/// The variables an accounts file names in its `<key>_env` keys, in order, each once; a file
/// that is not TOML names none.
pub fn env_names(text: &str) -> Vec<String> {
    let Ok(doc) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    let mut names: Vec<String> = Vec::new();
    let tables = doc.get("account").and_then(toml::Value::as_array);
    for table in tables
        .into_iter()
        .flatten()
        .filter_map(toml::Value::as_table)
    {
        for key in SECRETS {
            let named = table
                .get(&format!("{key}_env"))
                .and_then(toml::Value::as_str);
            if let Some(name) = named.filter(|n| !names.iter().any(|m| m == n)) {
                names.push(name.to_owned());
            }
        }
    }
    names
}

/// One account of the file, validated.
#[derive(Debug, Clone)]
pub struct AccountSpec {
    /// Letters, digits, `-` and `_`; unique in the file. Logs and metrics carry it.
    pub name: String,
    /// The line of its `[[account]]` header.
    pub line: usize,
    pub account: AccountConfig,
    /// The AppID, also without safe mode (the API commands use it).
    pub app_id: Option<String>,
    /// The EncodingAESKey as written, for `wxmp send --account` (redacted in `Debug`).
    pub aes_key: Option<Secret>,
    /// The API client's settings, with both the AppID and the AppSecret.
    pub api: Option<ApiConfig>,
    /// Its forwarding: late strategy, secret, capacity and kf wait are its own; the processes
    /// limit is the server's.
    pub forward: Forward,
    /// Its own API gateway (`api_proxy`, `api_proxy_allow`): a listener for this account only,
    /// for clients that cannot put the account's name in the path (`HTTP_PROXY`).
    pub gateway: Option<Gateway>,
    /// Where each secret came from, for `check-accounts` (never the value).
    pub sources: Vec<(&'static str, Source)>,
    /// A hash of everything above as resolved (secret values included): a reload rebuilds an
    /// account only when its digest changed, so a rotated secret file counts as a change.
    pub digest: u64,
}

/// Where a secret was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Inline,
    Env(String),
    File(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Inline => f.write_str("inline"),
            Source::Env(var) => write!(f, "from ${var}"),
            Source::File(p) => write!(f, "from file {}", p.display()),
        }
    }
}

/// One problem in the accounts file: where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: Option<usize>,
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.reason),
            None => write!(f, "{}: {}", self.file, self.reason),
        }
    }
}

/// The accounts of a file that checked out, and what is worth a warning.
#[derive(Debug, Clone)]
pub struct Accounts {
    pub accounts: Vec<AccountSpec>,
    /// E.g. inline secrets in a file others can read.
    pub warnings: Vec<String>,
}

/// The secrets an account can hold; each may come inline, `_env` or `_file`.
const SECRETS: [&str; 4] = ["token", "aes_key", "secret", "forward_secret"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    account: Vec<Spanned<RawAccount>>,
}

type S = Option<Spanned<String>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    name: S,
    path: S,
    token: S,
    token_env: S,
    token_file: S,
    aes_key: S,
    aes_key_env: S,
    aes_key_file: S,
    appid: S,
    secret: S,
    secret_env: S,
    secret_file: S,
    forward_secret: S,
    forward_secret_env: S,
    forward_secret_file: S,
    rules: S,
    late: S,
    forward_capacity: Option<Spanned<i64>>,
    kf_wait: Option<Spanned<i64>>,
    api_proxy: S,
    api_proxy_allow: S,
}

impl RawAccount {
    /// The three ways `key` can be given: inline, `_env`, `_file`.
    fn secret_fields(&self, key: &str) -> [&S; 3] {
        match key {
            "token" => [&self.token, &self.token_env, &self.token_file],
            "aes_key" => [&self.aes_key, &self.aes_key_env, &self.aes_key_file],
            "secret" => [&self.secret, &self.secret_env, &self.secret_file],
            _ => [
                &self.forward_secret,
                &self.forward_secret_env,
                &self.forward_secret_file,
            ],
        }
    }
}

/// What parsing needs from outside: the environment (for `_env`), a way to read a file (for
/// `_file`), the shared API settings and the server's forwarding defaults.
pub struct Context<'a> {
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub read: &'a dyn Fn(&Path) -> std::io::Result<String>,
    pub api: &'a ApiShared,
    /// `--forward-processes`: the server's, shared by every account.
    pub processes: usize,
    /// The file's permission bits, when known: inline secrets in a file that group or others
    /// can read are worth a warning.
    pub mode: Option<u32>,
}

/// Parses and validates `text`, the accounts file at `file`. Relative `rules` and `_file`
/// paths are taken from the file's folder. Every problem is reported, each with its line.
pub fn parse(text: &str, file: &Path, cx: &Context<'_>) -> Result<Accounts, Vec<Problem>> {
    let name = file.display().to_string();
    let problem = |span: Option<Range<usize>>, reason: String| Problem {
        file: name.clone(),
        line: span.map(|s| line_of(text, s.start)),
        reason,
    };
    let raw: RawFile =
        toml::from_str(text).map_err(|e| vec![problem(e.span(), e.message().trim().to_owned())])?;
    if raw.account.is_empty() {
        return Err(vec![problem(
            None,
            "no accounts: add one [[account]] table per account, with at least name and token"
                .into(),
        )]);
    }
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut problems = Vec::new();
    let mut accounts = Vec::new();
    let mut seen = Seen::default();
    let mut inline = false;
    for (i, spanned) in raw.account.into_iter().enumerate() {
        let header = spanned.span();
        let line = line_of(text, header.start);
        let raw = spanned.into_inner();
        let mut errors: Errors = Vec::new();
        let label = raw.name.as_ref().map_or_else(
            || format!("account {}", i + 1),
            |n| format!("account {:?}", n.get_ref()),
        );
        let name = seen.name(&raw, text, &mut errors);
        let path = seen.path(&raw, name.as_ref(), text, line, &mut errors);
        let Secrets {
            values: mut secrets,
            sources,
            hash: secrets_hash,
        } = read_secrets(&raw, &dir, cx, &mut inline, &mut errors);
        let token = token_of(secrets.remove("token"), &mut errors);
        let app_id = raw.appid.as_ref().map(|a| a.get_ref().trim().to_owned());
        let aes_key = secrets.get("aes_key").map(|(k, _)| Secret::new(k.trim()));
        let safe = safe_of(secrets.remove("aes_key"), app_id.as_ref(), &mut errors);
        let api = api_of(secrets.remove("secret"), app_id.as_ref(), cx, &mut errors);
        let late = late_of(&raw, api.is_some(), &mut errors);
        let (capacity, kf_wait) = numbers(&raw, &mut errors);
        let rules = raw.rules.as_ref().map(|r| dir.join(r.get_ref()));
        let gateway = seen.gateway(&raw, api.is_some(), name.as_deref(), text, &mut errors);
        let digest = hash_of((
            (&name, &path.as_ref().map(|p| &p.0), &app_id, &rules),
            (secrets_hash, late.as_str(), capacity, kf_wait, &gateway),
        ));
        if !errors.is_empty() {
            problems.extend(located(errors, file, text, line, &label));
            continue;
        }
        let (Some(name), Some((path, _)), Some(token)) = (name, path, token) else {
            continue;
        };
        accounts.push(AccountSpec {
            name,
            line,
            account: AccountConfig {
                path,
                token,
                safe,
                rules,
            },
            app_id: app_id.clone(),
            aes_key,
            api,
            forward: Forward {
                late,
                app_id: app_id.clone(),
                secret: secrets
                    .remove("forward_secret")
                    .map(|(s, _)| ForwardSecret::new(&s)),
                capacity: capacity as usize,
                processes: cx.processes,
                kf_wait: Duration::from_secs(kf_wait),
            },
            gateway,
            sources,
            digest,
        });
    }
    if !problems.is_empty() {
        problems.sort_by_key(|p| p.line);
        return Err(problems);
    }
    let warnings = cx
        .mode
        .filter(|m| inline && m & 0o077 != 0)
        .map(|mode| readable_warning(&name, mode))
        .into_iter()
        .chain(seen.warnings)
        .collect();
    Ok(Accounts { accounts, warnings })
}

/// The warning for inline secrets in a file that group or others can read.
fn readable_warning(name: &str, mode: u32) -> String {
    format!(
        "{name} holds secrets inline and is readable by {} (mode {:o}): chmod 600 it, or move the secrets to <key>_env or <key>_file",
        if mode & 0o007 != 0 { "others" } else { "its group" },
        mode & 0o777
    )
}

/// An error found in one account: where (a span in the file), and why.
type Errors = Vec<(Option<Range<usize>>, String)>;

/// A secret as read: its value and the span of the key that gave it.
type Found = (String, Option<Range<usize>>);

/// The names and paths met so far, to report duplicates with the line of the first.
#[derive(Default)]
struct Seen {
    names: HashMap<String, usize>,
    paths: HashMap<String, (String, usize)>,
    /// Each account's own gateway address, with the account and its line.
    proxies: Vec<(SocketAddr, String, usize)>,
    warnings: Vec<String>,
}

impl Seen {
    /// The account's own gateway, valid and on an address of its own.
    fn gateway(
        &mut self,
        raw: &RawAccount,
        has_api: bool,
        name: Option<&str>,
        text: &str,
        errors: &mut Errors,
    ) -> Option<Gateway> {
        gateway_of(raw, has_api, errors, &mut self.warnings)
            .filter(|g| self.proxy(raw, g, name, text, errors))
    }

    /// An account's own gateway address, which no other account may listen on (`false`, and
    /// the error, when one does): the same port
    /// on the same address, or on any address when either is `0.0.0.0` / `::`.
    fn proxy(
        &mut self,
        raw: &RawAccount,
        gateway: &Gateway,
        name: Option<&str>,
        text: &str,
        errors: &mut Errors,
    ) -> bool {
        let span = raw.api_proxy.as_ref().map(Spanned::span);
        let line = span.as_ref().map_or(0, |s| line_of(text, s.start));
        let addr = gateway.addr;
        let clash = self.proxies.iter().find(|(other, _, _)| {
            other.port() == addr.port()
                && (other.ip() == addr.ip()
                    || other.ip().is_unspecified()
                    || addr.ip().is_unspecified())
        });
        if let Some((other, account, at)) = clash {
            errors.push((
                span,
                format!("duplicate api_proxy {addr}: account {account:?} (line {at}) listens on {other}"),
            ));
            return false;
        }
        self.proxies
            .push((addr, name.unwrap_or_default().to_owned(), line));
        true
    }

    /// The account's name, when it is present, valid and not a duplicate.
    fn name(&mut self, raw: &RawAccount, text: &str, errors: &mut Errors) -> Option<String> {
        match &raw.name {
            None => {
                errors.push((
                    None,
                    "no name: add name = \"...\" (letters, digits, - and _)".into(),
                ));
                None
            }
            Some(n) if !valid_name(n.get_ref()) => {
                errors.push((
                    Some(n.span()),
                    format!(
                        "invalid name {:?}: use letters, digits, - and _",
                        n.get_ref()
                    ),
                ));
                None
            }
            Some(n) => {
                if let Some(first) = self.names.get(n.get_ref()) {
                    errors.push((
                        Some(n.span()),
                        format!("duplicate name {:?}: line {first} has it too", n.get_ref()),
                    ));
                } else {
                    self.names
                        .insert(n.get_ref().clone(), line_of(text, n.span().start));
                }
                Some(n.get_ref().clone())
            }
        }
    }

    /// The account's path (its own, or the default from its name) and the span it came from.
    fn path(
        &mut self,
        raw: &RawAccount,
        name: Option<&String>,
        text: &str,
        line: usize,
        errors: &mut Errors,
    ) -> Option<(String, Option<Range<usize>>)> {
        let path = match &raw.path {
            Some(p) => Some((p.get_ref().clone(), Some(p.span()))),
            None => name.map(|n| (format!("{DEFAULT_PATH}/{n}"), None)),
        };
        if let Some((path, span)) = &path {
            if let Err(why) = valid_path(path) {
                errors.push((span.clone(), why));
            } else if let Some((other, at)) = self.paths.get(path) {
                errors.push((
                    span.clone(),
                    format!("duplicate path {path:?}: account {other:?} (line {at}) answers there"),
                ));
            } else {
                self.paths.insert(
                    path.clone(),
                    (
                        name.cloned().unwrap_or_default(),
                        span.as_ref().map_or(line, |s| line_of(text, s.start)),
                    ),
                );
            }
        }
        path
    }
}

/// An account's secrets as read.
struct Secrets {
    values: HashMap<&'static str, Found>,
    /// Where each came from, for `check-accounts`.
    sources: Vec<(&'static str, Source)>,
    /// A hash of the values, to tell a changed account on reload.
    hash: u64,
}

/// Every secret of the account, from where it was given.
fn read_secrets(
    raw: &RawAccount,
    dir: &Path,
    cx: &Context<'_>,
    inline: &mut bool,
    errors: &mut Errors,
) -> Secrets {
    let mut sources = Vec::new();
    let mut secrets: HashMap<&'static str, (String, Option<Range<usize>>)> = HashMap::new();
    for key in SECRETS {
        match secret(raw, key, dir, cx) {
            Ok(None) => {}
            Ok(Some((value, source, span))) => {
                *inline |= source == Source::Inline;
                sources.push((key, source));
                secrets.insert(key, (value, Some(span)));
            }
            Err((span, why)) => errors.push((span, why)),
        }
    }
    let secrets_hash = {
        let mut resolved: Vec<(&str, &str)> =
            secrets.iter().map(|(k, (v, _))| (*k, v.as_str())).collect();
        resolved.sort();
        let mut h = DefaultHasher::new();
        resolved.hash(&mut h);
        h.finish()
    };
    Secrets {
        values: secrets,
        sources,
        hash: secrets_hash,
    }
}

/// The account's own API gateway (`api_proxy`, `api_proxy_allow`), by the rules of
/// `--api-proxy` and `--api-proxy-allow`, with a fixed port: `HTTP_PROXY` clients are told it.
fn gateway_of(
    raw: &RawAccount,
    has_api: bool,
    errors: &mut Errors,
    warnings: &mut Vec<String>,
) -> Option<Gateway> {
    let allow = match &raw.api_proxy_allow {
        None => Vec::new(),
        Some(list) => match Gateway::allow_list(list.get_ref()) {
            Ok(allow) => allow,
            Err(bad) => {
                errors.push((
                    Some(list.span()),
                    format!("api_proxy_allow: invalid network {bad:?}: expected \"CIDR[,CIDR...]\", like \"172.17.0.0/16\""),
                ));
                return None;
            }
        },
    };
    let Some(given) = &raw.api_proxy else {
        if raw.api_proxy_allow.is_some() {
            let name = raw.name.as_ref().map_or("", |n| n.get_ref().as_str());
            warnings.push(format!("account {name:?}: api_proxy_allow is set without api_proxy: there is no gateway to allow anyone into"));
        }
        return None;
    };
    let span = Some(given.span());
    let Ok(addr) = given.get_ref().trim().parse::<SocketAddr>() else {
        errors.push((
            span,
            format!(
                "api_proxy: invalid address {:?}: expected IP:PORT, like \"127.0.0.1:9201\"",
                given.get_ref()
            ),
        ));
        return None;
    };
    let why = if addr.port() == 0 {
        Some(
            "api_proxy: give a fixed port (not 0): the account's HTTP_PROXY clients are told it"
                .to_owned(),
        )
    } else if !has_api {
        Some(
            "api_proxy calls WeChat with the account's access_token, which needs appid and secret"
                .to_owned(),
        )
    } else if !addr.ip().is_loopback() && allow.is_empty() {
        Some(format!("api_proxy {addr} is not a loopback address: the gateway is a key to the whole account, so name the networks that may call it with api_proxy_allow = \"CIDR[,CIDR...]\", e.g. \"172.17.0.0/16\" for Docker"))
    } else {
        None
    };
    if let Some(why) = why {
        errors.push((span, why));
        return None;
    }
    Some(Gateway { addr, allow })
}

/// A hash of `v`, to tell a changed account on reload.
fn hash_of(v: impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// The token, required and valid.
fn token_of(token: Option<Found>, errors: &mut Errors) -> Option<Token> {
    match token {
        None if !errors.iter().any(|(_, e)| e.starts_with("token")) => {
            errors.push((
                None,
                "no token: set token, token_env or token_file (the Token from the console)".into(),
            ));
            None
        }
        None => None,
        Some((t, span)) => match Token::new(&t) {
            Ok(t) => Some(t),
            Err(e) => {
                errors.push((span, format!("invalid token: {e}")));
                None
            }
        },
    }
}

/// Safe mode, when an aes_key is given: it needs the AppID too.
fn safe_of(
    aes_key: Option<Found>,
    app_id: Option<&String>,
    errors: &mut Errors,
) -> Option<SafeMode> {
    match (aes_key, app_id) {
        (None, _) => None,
        (Some((_, span)), None) => {
            errors.push((
                span,
                "an aes_key needs its appid: safe mode checks and signs with both".into(),
            ));
            None
        }
        (Some((key, span)), Some(app_id)) => match AesKey::from_encoding_aes_key(key.trim()) {
            Ok(key) => Some(SafeMode {
                key,
                app_id: app_id.clone(),
            }),
            Err(e) => {
                errors.push((span, format!("invalid aes_key: {e}")));
                None
            }
        },
    }
}

/// The API client's settings, when a secret is given: it needs the AppID too.
fn api_of(
    secret: Option<Found>,
    app_id: Option<&String>,
    cx: &Context<'_>,
    errors: &mut Errors,
) -> Option<ApiConfig> {
    match (secret, app_id) {
        (None, _) => None,
        (Some((_, span)), None) => {
            errors.push((span, "a secret (AppSecret) needs its appid".into()));
            None
        }
        (Some((s, _)), Some(app_id)) => Some(ApiConfig {
            app_id: app_id.clone(),
            secret: Secret::new(s.trim()),
            api_base: cx.api.api_base.clone(),
            token_cache: cx.api.cache_home.as_ref().and_then(|home| {
                default_token_cache(app_id, &|v| {
                    (v == "XDG_CACHE_HOME").then(|| home.display().to_string())
                })
            }),
            token_endpoint: cx.api.token_endpoint,
            timeout: API_TIMEOUT,
        }),
    }
}

/// One account's errors as problems: each at the line of its span, or at the account's header.
fn located<'a>(
    errors: Errors,
    file: &'a Path,
    text: &'a str,
    line: usize,
    label: &'a str,
) -> impl Iterator<Item = Problem> + 'a {
    errors.into_iter().map(move |(span, why)| Problem {
        file: name_of(file),
        line: Some(span.map_or(line, |s| line_of(text, s.start))),
        reason: format!("{label}: {why}"),
    })
}

/// `forward_capacity` and `kf_wait` (seconds), each in its range or its default.
fn numbers(raw: &RawAccount, errors: &mut Errors) -> (u64, u64) {
    let capacity = number(&raw.forward_capacity, 1, 10_000, DEFAULT_CAPACITY as u64)
        .map_err(|(span, why)| errors.push((span, format!("forward_capacity: {why}"))))
        .unwrap_or(DEFAULT_CAPACITY as u64);
    let kf_wait = number(&raw.kf_wait, 5, 3600, DEFAULT_KF_WAIT.as_secs())
        .map_err(|(span, why)| errors.push((span, format!("kf_wait: {why} seconds"))))
        .unwrap_or(DEFAULT_KF_WAIT.as_secs());
    (capacity, kf_wait)
}

/// How late answers go out: kf by default with an AppSecret, as with the flags.
fn late_of(raw: &RawAccount, has_api: bool, errors: &mut Errors) -> Late {
    match raw.late.as_ref().map(|l| (l.get_ref().as_str(), l.span())) {
        None if has_api => Late::Kf,
        None | Some(("stretch", _)) => Late::Stretch,
        Some(("kf", span)) if !has_api => {
            errors.push((
            Some(span),
            "late = \"kf\" sends late answers through the customer-service API, which needs appid and secret".into(),
        ));
            Late::Stretch
        }
        Some(("kf", _)) => Late::Kf,
        Some((other, span)) => {
            errors.push((
                Some(span),
                format!("invalid late {other:?}: expected stretch or kf"),
            ));
            Late::Stretch
        }
    }
}

/// Reads the accounts file at `file` and parses it, the permission bits included.
pub fn load(file: &Path, cx: &Context<'_>) -> Result<Accounts, Vec<Problem>> {
    let text = (cx.read)(file).map_err(|e| {
        vec![Problem {
            file: name_of(file),
            line: None,
            reason: format!("cannot read: {e}"),
        }]
    })?;
    parse(text.as_str(), file, cx)
}

fn name_of(file: &Path) -> String {
    file.display().to_string()
}

/// The secret `key` of `raw`: its value, where it came from and the span that gave it; `None`
/// when none of the three ways is used.
#[allow(clippy::type_complexity)] // one use, right here
fn secret(
    raw: &RawAccount,
    key: &'static str,
    dir: &Path,
    cx: &Context<'_>,
) -> Result<Option<(String, Source, Range<usize>)>, (Option<Range<usize>>, String)> {
    let [inline, env, file] = raw.secret_fields(key);
    let given: Vec<&Spanned<String>> = [inline, env, file].into_iter().flatten().collect();
    if given.len() > 1 {
        return Err((
            Some(given[1].span()),
            format!("{key} is given more than once: use one of {key}, {key}_env and {key}_file"),
        ));
    }
    if let Some(v) = inline {
        return Ok(Some((v.get_ref().clone(), Source::Inline, v.span())));
    }
    if let Some(var) = env {
        let name = var.get_ref().clone();
        return match (cx.env)(&name).filter(|v| !v.trim().is_empty()) {
            Some(v) => Ok(Some((v.trim().to_owned(), Source::Env(name), var.span()))),
            None => Err((
                Some(var.span()),
                format!("{key}_env: the variable {name} is not set"),
            )),
        };
    }
    if let Some(path) = file {
        let full = dir.join(path.get_ref());
        return match (cx.read)(&full) {
            // Mounted secrets often end in a newline.
            Ok(v) if !v.trim().is_empty() => {
                Ok(Some((v.trim().to_owned(), Source::File(full), path.span())))
            }
            Ok(_) => Err((
                Some(path.span()),
                format!("{key}_file: {} is empty", full.display()),
            )),
            Err(e) => Err((
                Some(path.span()),
                format!("{key}_file: cannot read {}: {e}", full.display()),
            )),
        };
    }
    Ok(None)
}

fn number(
    value: &Option<Spanned<i64>>,
    min: u64,
    max: u64,
    default: u64,
) -> Result<u64, (Option<Range<usize>>, String)> {
    match value {
        None => Ok(default),
        Some(v) => match u64::try_from(*v.get_ref()) {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err((
                Some(v.span()),
                format!("{} is out of range: from {min} to {max}", v.get_ref()),
            )),
        },
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn valid_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
        return Err(format!(
            "invalid path {path:?}: it must start with '/', like /weixin/shop"
        ));
    }
    if path == "/" || path == "/healthz" {
        return Err(format!("invalid path {path:?}: / and /healthz are taken"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variables_a_file_names_are_listed_once_and_read_once() {
        let text = "[[account]]\nname = \"a\"\ntoken_env = \"TOK_A\"\nsecret_env = \"APP\"\n\n\
                    [[account]]\nname = \"b\"\ntoken = \"inline\"\naes_key_env = \"APP\"\nforward_secret_env = \"FWD\"\n";
        assert_eq!(env_names(text), ["TOK_A", "APP", "FWD"]);
        assert!(env_names("not toml [").is_empty());
        let dir = std::env::temp_dir().join(format!("wxmp-envvars-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("accounts.toml");
        std::fs::write(&file, text).unwrap();
        let env = |n: &str| (n != "FWD").then(|| format!("value-of-{n}"));
        let vars = EnvVars::read(&file, &env);
        assert_eq!(vars.get("TOK_A").as_deref(), Some("value-of-TOK_A"));
        assert_eq!(vars.get("FWD"), None, "not set at start");
        assert_eq!(vars.get("PATH"), None, "a variable the file does not name");
        assert!(!format!("{vars:?}").contains("value-of"), "{vars:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn api() -> ApiShared {
        ApiShared {
            api_base: "http://127.0.0.1:9".into(),
            token_endpoint: TokenEndpoint::Stable,
            cache_home: Some(PathBuf::from("/cache")),
        }
    }

    fn check(text: &str) -> Result<Accounts, Vec<Problem>> {
        let env = |v: &str| (v == "TOK").then(|| "envtoken1\n".to_owned());
        let read = |p: &Path| match p.to_str() {
            Some("/etc/acc/key") => Ok("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG\n".into()),
            _ => Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
        };
        let api = api();
        parse(
            text,
            Path::new("/etc/acc/accounts.toml"),
            &Context {
                env: &env,
                read: &read,
                api: &api,
                processes: 3,
                mode: Some(0o100640),
            },
        )
    }

    #[test]
    fn secrets_come_inline_from_a_variable_or_from_a_file_and_say_which() {
        let a = check(
            "[[account]]\nname = \"a\"\ntoken = \"tok123\"\n\
             [[account]]\nname = \"b-2\"\ntoken_env = \"TOK\"\naes_key_file = \"key\"\nappid = \"wx1\"\nsecret = \"s\"\nrules = \"r.toml\"\nforward_capacity = 7\n",
        )
        .unwrap();
        let [a, b] = &a.accounts[..] else {
            panic!("{a:?}")
        };
        assert_eq!((a.account.path.as_str(), a.line), ("/weixin/a", 1));
        assert_eq!(a.sources, vec![("token", Source::Inline)]);
        assert_eq!(b.account.token.expose(), "envtoken1");
        assert_eq!(
            b.sources,
            vec![
                ("token", Source::Env("TOK".into())),
                ("aes_key", Source::File(PathBuf::from("/etc/acc/key"))),
                ("secret", Source::Inline),
            ]
        );
        assert_eq!(
            b.account.rules.as_deref(),
            Some(Path::new("/etc/acc/r.toml"))
        );
        assert_eq!((b.forward.capacity, b.forward.processes), (7, 3));
        // With an AppSecret, late answers default to kf, through the account's own token cache.
        assert_eq!(b.forward.late, Late::Kf);
        let api = b.api.as_ref().unwrap();
        assert_eq!(
            api.token_cache.as_deref(),
            Some(Path::new("/cache/wxmp/access_token-wx1.json"))
        );
        assert!(!format!("{b:?}").contains("envtoken1"));
    }

    #[test]
    fn inline_secrets_in_a_file_the_group_can_read_are_a_warning() {
        let a = check("[[account]]\nname = \"a\"\ntoken = \"tok123\"\n").unwrap();
        assert!(
            a.warnings[0].contains("readable by its group (mode 640)"),
            "{:?}",
            a.warnings
        );
        let a = check("[[account]]\nname = \"a\"\ntoken_env = \"TOK\"\n").unwrap();
        assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    }

    #[test]
    fn an_account_s_own_gateway_follows_the_rules_of_the_flags() {
        let two = "[[account]]\nname = \"a\"\ntoken = \"tok123\"\nappid = \"wx1\"\nsecret = \"s\"\napi_proxy = \"127.0.0.1:9201\"\n\
                   [[account]]\nname = \"b\"\ntoken = \"tok123\"\nappid = \"wx2\"\nsecret = \"s\"\napi_proxy = \"0.0.0.0:9202\"\napi_proxy_allow = \"172.17.0.0/16\"\n";
        let a = check(two).unwrap();
        let gw = |i: usize| a.accounts[i].gateway.clone().unwrap();
        assert_eq!(gw(0).addr, "127.0.0.1:9201".parse().unwrap());
        assert!(gw(1).allows("172.17.0.9".parse().unwrap()));
        assert!(!gw(1).allows("10.0.0.9".parse().unwrap()));
        let shown = |text: &str| -> Vec<String> {
            check(text)
                .unwrap_err()
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        let account = |n: &str, extra: &str| {
            format!("[[account]]\nname = \"{n}\"\ntoken = \"tok123\"\nappid = \"wx{n}\"\nsecret = \"s\"\n{extra}")
        };
        let text = [
            account("a", "api_proxy = \"127.0.0.1:9201\"\n"),
            account(
                "b",
                "api_proxy = \"0.0.0.0:9201\"\napi_proxy_allow = \"10.0.0.0/8\"\n",
            ),
            account("c", "api_proxy = \"10.1.2.3:9203\"\n"),
            account("d", "api_proxy = \"127.0.0.1:0\"\n"),
            account("e", "api_proxy = \"localhost\"\n"),
            account(
                "f",
                "api_proxy = \"127.0.0.1:9206\"\napi_proxy_allow = \"10.0.0.0/33\"\n",
            ),
            "[[account]]\nname = \"g\"\ntoken = \"tok123\"\napi_proxy = \"127.0.0.1:9207\"\n"
                .to_owned(),
        ]
        .concat();
        assert_eq!(
            shown(&text),
            [
                "/etc/acc/accounts.toml:12: account \"b\": duplicate api_proxy 0.0.0.0:9201: account \"a\" (line 6) listens on 127.0.0.1:9201",
                "/etc/acc/accounts.toml:19: account \"c\": api_proxy 10.1.2.3:9203 is not a loopback address: the gateway is a key to the whole account, so name the networks that may call it with api_proxy_allow = \"CIDR[,CIDR...]\", e.g. \"172.17.0.0/16\" for Docker",
                "/etc/acc/accounts.toml:25: account \"d\": api_proxy: give a fixed port (not 0): the account's HTTP_PROXY clients are told it",
                "/etc/acc/accounts.toml:31: account \"e\": api_proxy: invalid address \"localhost\": expected IP:PORT, like \"127.0.0.1:9201\"",
                "/etc/acc/accounts.toml:38: account \"f\": api_proxy_allow: invalid network \"10.0.0.0/33\": expected \"CIDR[,CIDR...]\", like \"172.17.0.0/16\"",
                "/etc/acc/accounts.toml:42: account \"g\": api_proxy calls WeChat with the account's access_token, which needs appid and secret",
            ]
        );
        let a = check(&account("a", "api_proxy_allow = \"10.0.0.0/8\"\n")).unwrap();
        assert!(
            a.warnings[1].contains("api_proxy_allow is set without api_proxy"),
            "{:?}",
            a.warnings
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let e = check(
            "[[account]]\nname = \"a\"\ntoken = \"tok123\"\ntoken_env = \"TOK\"\n\
             [[account]]\nname = \"b\"\ntoken = \"tok123\"\nlate = \"kf\"\nkf_wait = 1\npath = \"nope\"\n",
        )
        .unwrap_err();
        let shown: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "/etc/acc/accounts.toml:4: account \"a\": token is given more than once: use one of token, token_env and token_file",
                "/etc/acc/accounts.toml:8: account \"b\": late = \"kf\" sends late answers through the customer-service API, which needs appid and secret",
                "/etc/acc/accounts.toml:9: account \"b\": kf_wait: 1 is out of range: from 5 to 3600 seconds",
                "/etc/acc/accounts.toml:10: account \"b\": invalid path \"nope\": it must start with '/', like /weixin/shop",
            ]
        );
        let e = check("").unwrap_err();
        assert!(e[0].reason.starts_with("no accounts"), "{e:?}");
        let e = check("[[account]]\nname = \"a\"\ntokn = \"x\"\n").unwrap_err();
        assert_eq!(e[0].line, Some(3), "{e:?}");
    }
}
