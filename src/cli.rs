//! The command line: which subcommand, and the raw option strings (validated later by `config`).

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use lexopt::prelude::*;

use crate::api::Secret;
use crate::api_cmd::args::{self as api_args, RawCmd};
use crate::config::RawServe;
use crate::fake_api::args::{self as fake_args, RawFake};
use crate::send::args::{self as send_args, RawSend};
use crate::tail;
use crate::usage::UsageError;

pub const USAGE: &str = "\
wxmp — a fast, single-binary WeChat Official Account (微信公众号) message server

Usage:
  wxmp [serve] [OPTIONS]           run the server
  wxmp check-rules FILE            validate a rules file and list its rules
  wxmp send [OPTIONS] KIND [ARGS]  play WeChat: send a signed push to a server (wxmp send --help)
  wxmp menu check|push|show|delete the custom menu (wxmp menu --help)
  wxmp kf send|typing OPENID ...   customer-service messages (wxmp kf --help)
  wxmp token [--fetch] [--show]    the cached access_token: where from, when it expires
  wxmp fake-api [OPTIONS]          play api.weixin.qq.com on this machine (wxmp fake-api --help)
  wxmp tail [--metrics-addr ADDR]  watch a running server's pushes live (wxmp tail --help)
  wxmp --help | --version

Serve options (each also read from the environment variable shown; a flag wins):
  --host HOST        address to listen on            WXMP_HOST     [default: 0.0.0.0]
  --port PORT        port to listen on (0 = any)     WXMP_PORT     [default: 80]
  --path PATH        message URL path                WXMP_PATH     [default: /weixin]
  --token TOKEN      Token from the WeChat console   WXMP_TOKEN    [required; 3-32 letters/digits]
  --aes-key KEY      EncodingAESKey (43 characters)  WXMP_AES_KEY  [safe/compatible mode]
  --appid APPID      AppID (safe mode and the API)   WXMP_APPID
  --rules FILE       keyword rules file (TOML)       WXMP_RULES    [default: built-in rules]
  --threads N        request handler threads         WXMP_THREADS  [default: 4 x cores, 8..64]
  --cache-mb MB      retry cache memory budget       WXMP_CACHE_MB [default: 32, at least 1]
  --cache-ttl SECS   how long replies are kept       WXMP_CACHE_TTL [default: 60, at least 30]
  --max-connections N  open connections (more: 503)  WXMP_MAX_CONNECTIONS [default: open-files limit / 2, at most 4096]
  --late MODE        late forward answers: stretch | kf  WXMP_LATE [default: stretch]
  --forward-secret S signs forwarded bodies (HMAC)   WXMP_FORWARD_SECRET
  --forward-capacity N  forwarded pushes in flight   WXMP_FORWARD_CAPACITY [default: 200]
  --forward-processes N commands running at once     WXMP_FORWARD_PROCESSES [default: 16]
  --kf-wait SECS     how long a late answer is awaited (kf)  WXMP_KF_WAIT [default: 60]
  --replay-window SECS  a signed query's lifetime    WXMP_REPLAY_WINDOW [default: 300; 0 = off]
  --secret SECRET    AppSecret, for the API          WXMP_SECRET   [never printed or logged]
  --api-base URL     the WeChat API's address        WXMP_API_BASE [default: https://api.weixin.qq.com]
  --token-cache FILE where the access_token is kept  WXMP_TOKEN_CACHE [default: ~/.cache/wxmp/, per AppID]
  --token-endpoint E stable or classic               WXMP_TOKEN_ENDPOINT [default: stable]
  --log-format FMT   text or json (one object/line)  WXMP_LOG_FORMAT [default: text]
  --quiet            log refused requests only       WXMP_QUIET
  --log-openid       log whole OpenIDs, not hashes   WXMP_LOG_OPENID [personal data]
  --metrics-addr ADDR  /metrics and wxmp tail there  WXMP_METRICS_ADDR [default: off; e.g. 127.0.0.1:9100]

The menu, kf and token commands take --appid and the four API options above too.

Endpoints: PATH (POST pushes, GET the URL check), / (Hello World!), /healthz (ok); the
metrics listener serves /metrics and /tail, and only there.
";

/// What to do.
#[derive(Debug)]
pub enum Command {
    Serve(Box<RawServe>),
    CheckRules(PathBuf),
    Send(Box<RawSend>),
    SendHelp,
    /// `wxmp menu`, `wxmp kf`, `wxmp token`.
    Api(Box<RawCmd>),
    ApiHelp,
    FakeApi(Box<RawFake>),
    FakeApiHelp,
    Tail(tail::RawTail),
    TailHelp,
    Help,
    Version,
}

/// A usage error (exit 2).
#[derive(Debug)]
pub struct CliError(pub String);

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<UsageError> for CliError {
    fn from(e: UsageError) -> Self {
        CliError(e.0)
    }
}

impl From<lexopt::Error> for CliError {
    fn from(e: lexopt::Error) -> Self {
        CliError(e.to_string())
    }
}

/// Parses the arguments after the program name.
pub fn parse(args: Vec<OsString>) -> Result<Command, CliError> {
    let mut parser = lexopt::Parser::from_args(args);
    let mut serve = RawServe::default();
    let mut first = true;
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            Value(v) if first => {
                let word = v.string()?;
                match word.as_str() {
                    "serve" => {}
                    "help" => return Ok(Command::Help),
                    "check-rules" => {
                        let file: PathBuf = parser
                            .value()
                            .map_err(|_| CliError("check-rules needs a FILE".into()))?
                            .into();
                        if let Some(extra) = parser.next()? {
                            return Err(CliError(format!("check-rules takes one FILE; {}", extra.unexpected())));
                        }
                        return Ok(Command::CheckRules(file));
                    }
                    "send" => {
                        return Ok(match send_args::parse(parser)? {
                            send_args::Parsed::Help => Command::SendHelp,
                            send_args::Parsed::Send(raw) => Command::Send(raw),
                        })
                    }
                    "menu" | "kf" | "token" => {
                        return Ok(match api_args::parse(&word, parser)? {
                            api_args::Parsed::Help => Command::ApiHelp,
                            api_args::Parsed::Run(raw) => Command::Api(raw),
                        })
                    }
                    "fake-api" => {
                        return Ok(match fake_args::parse(parser)? {
                            fake_args::Parsed::Help => Command::FakeApiHelp,
                            fake_args::Parsed::Run(raw) => Command::FakeApi(raw),
                        })
                    }
                    "tail" => {
                        return Ok(match tail::parse(parser).map_err(|e| CliError(e.0))? {
                            tail::Parsed::Help => Command::TailHelp,
                            tail::Parsed::Tail(raw) => Command::Tail(raw),
                        })
                    }
                    other => {
                        return Err(CliError(format!(
                            "unknown command {other:?}; expected serve, check-rules, send, tail, menu, kf, token or fake-api (see wxmp --help)"
                        )))
                    }
                }
            }
            Long(name @ ("quiet" | "log-openid")) => {
                let slot = if name == "quiet" {
                    &mut serve.quiet
                } else {
                    &mut serve.log_openid
                };
                // `--quiet` alone, or `--quiet=0` to override the variable.
                *slot = Some(match parser.optional_value() {
                    Some(v) => v.string()?,
                    None => "1".to_owned(),
                });
            }
            Long(name) => {
                let slot = match name {
                    "host" => &mut serve.host,
                    "port" => &mut serve.port,
                    "path" => &mut serve.path,
                    "token" => &mut serve.token,
                    "aes-key" => &mut serve.aes_key,
                    "appid" => &mut serve.appid,
                    "rules" => &mut serve.rules,
                    "threads" => &mut serve.threads,
                    "cache-mb" => &mut serve.cache_mb,
                    "cache-ttl" => &mut serve.cache_ttl,
                    "late" => &mut serve.late,
                    "forward-secret" => &mut serve.forward_secret,
                    "forward-capacity" => &mut serve.forward_capacity,
                    "forward-processes" => &mut serve.forward_processes,
                    "kf-wait" => &mut serve.kf_wait,
                    "replay-window" => &mut serve.replay_window,
                    "api-base" => &mut serve.api.api_base,
                    "token-cache" => &mut serve.api.token_cache,
                    "token-endpoint" => &mut serve.api.token_endpoint,
                    "secret" => {
                        let value = parser
                            .value()
                            .map_err(|_| CliError("--secret needs a value".into()))?
                            .string()?;
                        serve.api.secret = Some(Secret::new(value));
                        first = false;
                        continue;
                    }
                    "log-format" => &mut serve.log_format,
                    "metrics-addr" => &mut serve.metrics_addr,
                    "max-connections" => &mut serve.max_connections,
                    _ => {
                        return Err(CliError(format!(
                            "unknown option --{name} (see wxmp --help)"
                        )))
                    }
                };
                let name = name.to_owned();
                *slot = Some(
                    parser
                        .value()
                        .map_err(|_| CliError(format!("--{name} needs a value")))?
                        .string()?,
                );
            }
            other => {
                return Err(CliError(format!(
                    "{} (see wxmp --help)",
                    other.unexpected()
                )))
            }
        }
        first = false;
    }
    Ok(Command::Serve(Box::new(serve)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn serve_is_the_default_command() {
        match parse(args(&["--port", "8080", "--token=abc"])).unwrap() {
            Command::Serve(raw) => {
                assert_eq!(raw.port.as_deref(), Some("8080"));
                assert_eq!(raw.token.as_deref(), Some("abc"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(args(&["serve"])).unwrap(),
            Command::Serve(_)
        ));
    }

    #[test]
    fn help_version_and_check_rules() {
        assert!(matches!(parse(args(&["--help"])).unwrap(), Command::Help));
        assert!(matches!(parse(args(&["-V"])).unwrap(), Command::Version));
        match parse(args(&["check-rules", "r.toml"])).unwrap() {
            Command::CheckRules(p) => assert_eq!(p, PathBuf::from("r.toml")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn switches_take_no_value_and_tail_is_a_command() {
        match parse(args(&[
            "--quiet",
            "--log-openid=0",
            "--metrics-addr",
            "127.0.0.1:1",
        ]))
        .unwrap()
        {
            Command::Serve(raw) => {
                assert_eq!(raw.quiet.as_deref(), Some("1"));
                assert_eq!(raw.log_openid.as_deref(), Some("0"));
                assert_eq!(raw.metrics_addr.as_deref(), Some("127.0.0.1:1"));
            }
            other => panic!("{other:?}"),
        }
        match parse(args(&["tail", "--metrics-addr", "127.0.0.1:2"])).unwrap() {
            Command::Tail(raw) => assert_eq!(raw.metrics_addr.as_deref(), Some("127.0.0.1:2")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(args(&["tail", "--help"])).unwrap(),
            Command::TailHelp
        ));
    }

    #[test]
    fn usage_errors_say_what_is_wrong() {
        assert!(parse(args(&["--bogus", "1"]))
            .unwrap_err()
            .0
            .contains("--bogus"));
        assert!(parse(args(&["--port"]))
            .unwrap_err()
            .0
            .contains("--port needs a value"));
        assert!(parse(args(&["frobnicate"]))
            .unwrap_err()
            .0
            .contains("unknown command"));
        assert!(parse(args(&["check-rules"]))
            .unwrap_err()
            .0
            .contains("FILE"));
    }

    #[test]
    fn api_commands_and_the_fake_are_dispatched() {
        match parse(args(&["menu", "push", "m.toml", "--api-base", "http://x"])).unwrap() {
            Command::Api(raw) => {
                assert_eq!(raw.words, ["menu", "push", "m.toml"]);
                assert_eq!(raw.api.api_base.as_deref(), Some("http://x"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(args(&["kf", "--help"])).unwrap(),
            Command::ApiHelp
        ));
        assert!(matches!(
            parse(args(&["fake-api", "--port", "0"])).unwrap(),
            Command::FakeApi(_)
        ));
        match parse(args(&["--secret", "s3cr3t", "--appid", "wx1"])).unwrap() {
            Command::Serve(raw) => {
                assert_eq!(raw.api.secret.as_ref().map(|s| s.expose()), Some("s3cr3t"));
                assert!(!format!("{raw:?}").contains("s3cr3t"));
            }
            other => panic!("{other:?}"),
        }
    }
}
