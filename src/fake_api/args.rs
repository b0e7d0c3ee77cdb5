//! `wxmp fake-api`'s command line: raw options, then a validated [`FakeConfig`].

use crate::api::Secret;
pub use crate::usage::UsageError;
use crate::usage::{self, Args, Env, Setting, Spec};

pub const DEFAULT_HOST: &str = "127.0.0.1";
pub const DEFAULT_PORT: u16 = 8090;
/// The fake's credentials when none are given; shown in its banner so they can be copied.
pub const DEFAULT_APPID: &str = "wxfake0000000000";
pub const DEFAULT_SECRET: &str = "fakesecret";
/// WeChat's tokens live 2 hours.
pub const DEFAULT_EXPIRES_IN: u64 = 7200;

const HEAD: &str = "\
wxmp fake-api — play api.weixin.qq.com on this machine: tokens, the menu, customer service,\nmaterial and media

Usage: wxmp fake-api [OPTIONS]

Options:
";

const FOOT: &str = "
--fail SPEC is CODE[@PATH][:once|:N], repeatable; e.g. --fail 40001:once, --fail 40164,
--fail 45009@/cgi-bin/menu/create. Without @PATH, 40013, 40125 and 40243 hit token requests,
40164, 61004 and 89503 every request, and any other code the API calls (not tokens).

It serves POST /cgi-bin/stable_token and GET /cgi-bin/token (isolated from each other, as on
WeChat: a classic fetch invalidates the previous classic token; force_refresh works at most 20
times a day, 30 s apart), menu/create, menu/get, menu/delete (keeping the menu it was given),
message/custom/send and message/custom/typing (printing each message as one line),
material/add_material, get_material, batchget_material, del_material, media/upload and
media/get (files kept in memory, checked by content against WeChat's types and size limits),
and GET /fake/stats (request counts as JSON). Any other path answers errcode 40066 naming it.
A JSON body with a \\uXXXX-escaped non-ASCII character gets 40033, as on WeChat.
Point wxmp at it with --api-base http://127.0.0.1:PORT (or WXMP_API_BASE).
";

/// `wxmp fake-api`'s options.
#[rustfmt::skip]
pub const SETTINGS: &[Setting] = &[
    Setting::value("host", "HOST", "address to listen on").default(DEFAULT_HOST),
    Setting::value("port", "PORT", "port to listen on (0 = any)").default("8090").range(0, 65535, ""),
    Setting::value("appid", "APPID", "the AppID it accepts").env("WXMP_APPID").default(DEFAULT_APPID),
    Setting::value("secret", "SECRET", "the AppSecret it accepts").env("WXMP_SECRET").default(DEFAULT_SECRET).secret(),
    Setting::value("account", "APPID:SECRET", "one more AppID it serves, with its AppSecret (repeatable)").secret(),
    Setting::value("expires-in", "SECS", "how long its tokens live").default("7200").range(1, u64::MAX, ""),
    Setting::value("fail", "SPEC", "answer with an errcode (see below)"),
];

/// `wxmp fake-api`'s command line.
pub const SPEC: Spec = Spec {
    help: "wxmp fake-api --help",
    settings: SETTINGS,
    fields: &[],
    words: false,
};

/// `wxmp fake-api --help`.
pub fn usage() -> String {
    format!("{HEAD}{}{FOOT}", usage::help(SETTINGS))
}

/// One injected failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub errcode: i64,
    /// Only requests to this path; `None`: the code's usual place (see [`usage()`]).
    pub path: Option<String>,
    /// How many more times; `None`: always.
    pub remaining: Option<u64>,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    pub host: String,
    pub port: u16,
    pub app_id: String,
    pub secret: Secret,
    /// The secret is the built-in one, so the banner may show it.
    pub default_secret: bool,
    pub expires_in: u64,
    pub fail: Vec<Failure>,
    /// More AppIDs it serves (`--account`), each with its AppSecret: each AppID gets tokens
    /// of its own, and a call says which AppID's token it came with.
    pub more: Vec<(String, Secret)>,
}

impl FakeConfig {
    /// The AppSecret of `app_id`, if the fake serves it.
    pub fn secret_of(&self, app_id: &str) -> Option<&Secret> {
        if app_id == self.app_id {
            return Some(&self.secret);
        }
        self.more.iter().find(|(a, _)| a == app_id).map(|(_, s)| s)
    }
}

/// Applies defaults (flags, then `WXMP_APPID` / `WXMP_SECRET`, then built-ins) and validates.
pub fn resolve(raw: Args, env: Env<'_>) -> Result<FakeConfig, UsageError> {
    let raw = raw.with_env(env);
    let port = raw.number("port", DEFAULT_PORT)?;
    let expires_in = raw.number("expires-in", DEFAULT_EXPIRES_IN)?;
    let app_id = raw
        .get("appid")
        .filter(|a| !a.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_APPID.to_owned());
    let given = raw
        .get("secret")
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    let default_secret = given.is_none();
    let secret = Secret::new(given.unwrap_or_else(|| DEFAULT_SECRET.to_owned()));
    let fail = raw
        .all("fail")
        .iter()
        .map(|s| failure(s))
        .collect::<Result<_, _>>()?;
    let app_id = app_id.trim().to_owned();
    let mut more: Vec<(String, Secret)> = Vec::new();
    for spec in raw.all("account") {
        let (a, s) = account(&spec)?;
        if a == app_id || more.iter().any(|(m, _)| *m == a) {
            return Err(UsageError(format!(
                "--account: the AppID {a} is given twice"
            )));
        }
        more.push((a, s));
    }
    Ok(FakeConfig {
        host: raw.get("host").unwrap_or_else(|| DEFAULT_HOST.to_owned()),
        port,
        app_id,
        secret,
        default_secret,
        expires_in,
        fail,
        more,
    })
}

/// `APPID:SECRET` (the secret never in the message).
fn account(spec: &str) -> Result<(String, Secret), UsageError> {
    match spec.split_once(':') {
        Some((a, s)) if !a.trim().is_empty() && !s.trim().is_empty() && !a.contains(' ') => {
            Ok((a.trim().to_owned(), Secret::new(s.trim().to_owned())))
        }
        _ => Err(UsageError(
            "invalid --account: expected APPID:SECRET, e.g. --account wxfake0000000002:secret2"
                .to_owned(),
        )),
    }
}

/// `CODE[@PATH][:once|:N]`.
fn failure(spec: &str) -> Result<Failure, UsageError> {
    let bad = || {
        UsageError(format!(
            "invalid --fail {spec:?}: expected CODE[@PATH][:once|:N], e.g. 40001:once or 45009@/cgi-bin/menu/create"
        ))
    };
    let (head, count) = match spec.rsplit_once(':') {
        Some((h, "once")) => (h, Some(1)),
        Some((h, n)) => (
            h,
            Some(n.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(bad)?),
        ),
        None => (spec, None),
    };
    let (code, path) = match head.split_once('@') {
        Some((c, p)) if p.starts_with('/') => (c, Some(p.to_owned())),
        Some(_) => return Err(bad()),
        None => (head, None),
    };
    let errcode = code
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|c| *c != 0)
        .ok_or_else(bad)?;
    Ok(Failure {
        errcode,
        path,
        remaining: count,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    pub(crate) fn args(a: &[&str]) -> Args {
        match usage::parse(lexopt::Parser::from_args(a.iter().copied()), &SPEC) {
            Ok(usage::Parsed::Args(a)) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn failure_specs_parse() {
        assert_eq!(
            failure("40001:once").unwrap(),
            Failure {
                errcode: 40001,
                path: None,
                remaining: Some(1)
            }
        );
        assert_eq!(failure("40164").unwrap().remaining, None);
        let f = failure("45009@/cgi-bin/menu/create:3").unwrap();
        assert_eq!(
            (f.errcode, f.path.as_deref(), f.remaining),
            (45009, Some("/cgi-bin/menu/create"), Some(3))
        );
        assert_eq!(failure("-1").unwrap().errcode, -1);
        for bad in ["", "abc", "40001:never", "40001:0", "0", "45009@menu"] {
            assert!(failure(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn more_appids_come_with_their_secrets() {
        let c = resolve(
            args(&["--account", "wxb:sb", "--account", "wxc:s:c"]),
            &no_env,
        )
        .unwrap();
        assert_eq!(
            c.secret_of(DEFAULT_APPID).map(Secret::expose),
            Some(DEFAULT_SECRET)
        );
        assert_eq!(c.secret_of("wxb").map(Secret::expose), Some("sb"));
        assert_eq!(c.secret_of("wxc").map(Secret::expose), Some("s:c"));
        assert!(c.secret_of("wxd").is_none());
        for bad in ["wxb", "wxb:", ":s", "wx b:s"] {
            let e = resolve(args(&["--account", bad]), &no_env).unwrap_err();
            assert!(e.0.starts_with("invalid --account: expected"), "{bad}: {e}");
        }
        let e = resolve(args(&["--account", "wxb:1", "--account", "wxb:2"]), &no_env).unwrap_err();
        assert!(e.0.contains("given twice"), "{e}");
        assert!(!format!("{c:?}").contains("sb\""), "{c:?}");
    }

    #[test]
    fn defaults_and_the_environment() {
        let c = resolve(args(&[]), &no_env).unwrap();
        assert_eq!((c.port, c.app_id.as_str()), (DEFAULT_PORT, DEFAULT_APPID));
        assert!(c.default_secret);
        let env = |k: &str| (k == "WXMP_SECRET").then(|| "mine".to_owned());
        let c = resolve(args(&[]), &env).unwrap();
        assert!(!c.default_secret);
        assert_eq!(c.secret.expose(), "mine");
        assert!(resolve(args(&["--expires-in", "0"]), &no_env)
            .unwrap_err()
            .0
            .contains("--expires-in"));
    }
}
