//! The command line: which subcommand, and the raw option strings (validated later by `config`).

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use lexopt::prelude::*;

use crate::config::RawServe;
use crate::send::RawSend;

pub const USAGE: &str = "\
wxmp — a fast, single-binary WeChat Official Account (微信公众号) message server

Usage:
  wxmp [serve] [OPTIONS]           run the server
  wxmp check-rules FILE            validate a rules file and list its rules
  wxmp send [OPTIONS] KIND [ARGS]  play WeChat: send a signed push to a server (wxmp send --help)
  wxmp --help | --version

Serve options (each also read from the environment variable shown; a flag wins):
  --host HOST        address to listen on            WXMP_HOST     [default: 0.0.0.0]
  --port PORT        port to listen on (0 = any)     WXMP_PORT     [default: 80]
  --path PATH        message URL path                WXMP_PATH     [default: /weixin]
  --token TOKEN      Token from the WeChat console   WXMP_TOKEN    [required]
  --aes-key KEY      EncodingAESKey (safe mode)      WXMP_AES_KEY
  --appid APPID      AppID (needed with --aes-key)   WXMP_APPID
  --rules FILE       keyword rules file (TOML)       WXMP_RULES    [default: built-in rules]
  --threads N        request handler threads         WXMP_THREADS  [default: 4 x cores, 8..64]
  --cache-mb MB      retry cache memory budget       WXMP_CACHE_MB [default: 32]
  --cache-ttl SECS   how long replies are kept       WXMP_CACHE_TTL [default: 60]
  --max-connections N  open connections (more: 503)  WXMP_MAX_CONNECTIONS [default: open-files limit / 2, at most 4096]
";

/// What to do.
#[derive(Debug)]
pub enum Command {
    Serve(Box<RawServe>),
    CheckRules(PathBuf),
    Send(Box<RawSend>),
    SendHelp,
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
                            return Err(CliError(format!("check-rules takes one FILE; unexpected {}", extra.unexpected())));
                        }
                        return Ok(Command::CheckRules(file));
                    }
                    "send" => return crate::send::parse_args(parser),
                    other => {
                        return Err(CliError(format!(
                            "unknown command {other:?}; expected serve, check-rules or send (see wxmp --help)"
                        )))
                    }
                }
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
}
