//! The command line: which subcommand, and its options as given ([`Args`], validated later by
//! the command: `config` for serve). Every command's options are declared in one table each,
//! which also writes its `--help`.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::usage::{self, Args, Parsed, Spec, UsageError};

const HEAD: &str = "\
wxmp — a fast, single-binary WeChat Official Account (微信公众号) message server

Usage:
  wxmp [serve] [OPTIONS]           run the server
  wxmp check-rules FILE            validate a rules file and list its rules
  wxmp check-accounts FILE         validate an accounts file and every rules file it names
  wxmp send [OPTIONS] KIND [ARGS]  play WeChat: send a signed push to a server (wxmp send --help)
  wxmp menu check|push|show|delete the custom menu (wxmp menu --help)
  wxmp kf send|typing OPENID ...   customer-service messages (wxmp kf --help)
  wxmp token [--fetch] [--show]    the cached access_token: where from, when it expires
  wxmp media upload|list ...       upload a file, list permanent material (wxmp media --help)
  wxmp fake-api [OPTIONS]          play api.weixin.qq.com on this machine (wxmp fake-api --help)
  wxmp tail [--metrics-addr ADDR]  watch a running server's pushes live (wxmp tail --help)
  wxmp --help | --version

Serve options (each also read from the environment variable shown; a flag wins):
";

const FOOT: &str = "
--quiet and --log-openid take no value; their variables take 1/0 (true/false, yes/no, on/off).
The menu, kf, token and media commands take --appid and the four API options above too.

Endpoints: PATH (POST pushes, GET the URL check), / (Hello World!), /healthz (ok); the
metrics listener serves /metrics and /tail, and only there.
";

/// `wxmp --help`: the serve options come from their declarations.
pub fn usage() -> String {
    format!("{HEAD}{}{FOOT}", usage::help(crate::config::SERVE))
}

/// What to do.
#[derive(Debug)]
pub enum Command {
    Serve(Box<Args>),
    CheckRules(PathBuf),
    CheckAccounts(PathBuf),
    Send(Box<Args>),
    /// `wxmp menu`, `wxmp kf`, `wxmp token`: the command word is the first of the words.
    Api(Box<Args>),
    FakeApi(Box<Args>),
    Tail(Box<Args>),
    /// Print this help text.
    Help(String),
    Version,
}

/// Parses the arguments after the program name.
pub fn parse(mut args: Vec<OsString>) -> Result<Command, UsageError> {
    let word = args
        .first()
        .and_then(|a| a.to_str())
        .filter(|a| !a.starts_with('-'))
        .map(str::to_owned);
    let Some(word) = word else {
        return serve(args);
    };
    let rest = args.split_off(1);
    match word.as_str() {
        "serve" => serve(rest),
        "help" => Ok(Command::Help(usage())),
        "check-rules" => check_file("check-rules", lexopt::Parser::from_args(rest))
            .map(Command::CheckRules),
        "check-accounts" => check_file("check-accounts", lexopt::Parser::from_args(rest))
            .map(Command::CheckAccounts),
        "send" => command(rest, &crate::send::args::SPEC, crate::send::usage, Command::Send),
        "fake-api" => command(
            rest,
            &crate::fake_api::args::SPEC,
            crate::fake_api::args::usage,
            Command::FakeApi,
        ),
        "tail" => command(rest, &crate::tail::SPEC, crate::tail::usage, Command::Tail),
        "menu" | "kf" | "token" | "media" => {
            let spec = crate::api_cmd::args::spec(&word);
            Ok(match usage::parse(lexopt::Parser::from_args(rest), &spec)? {
                Parsed::Help => Command::Help(crate::api_cmd::args::usage()),
                Parsed::Args(mut args) => {
                    args.words.insert(0, word);
                    Command::Api(Box::new(args))
                }
            })
        }
        other => Err(UsageError(format!(
            "unknown command {other:?}; expected serve, check-rules, check-accounts, send, tail, menu, kf, token, media or fake-api (see wxmp --help)"
        ))),
    }
}

/// A subcommand with its own table of options.
fn command(
    rest: Vec<OsString>,
    spec: &Spec,
    help: fn() -> String,
    make: fn(Box<Args>) -> Command,
) -> Result<Command, UsageError> {
    Ok(match usage::parse(lexopt::Parser::from_args(rest), spec)? {
        Parsed::Help => Command::Help(help()),
        Parsed::Args(args) => make(Box::new(args)),
    })
}

fn serve(args: Vec<OsString>) -> Result<Command, UsageError> {
    // `--version` anywhere among the serve options wins, as `--help` does.
    if args.iter().any(|a| a == "-V" || a == "--version") {
        return Ok(Command::Version);
    }
    Ok(
        match usage::parse(lexopt::Parser::from_args(args), &crate::config::SPEC)? {
            Parsed::Help => Command::Help(usage()),
            Parsed::Args(args) => Command::Serve(Box::new(args)),
        },
    )
}

/// The one FILE of `check-rules` and `check-accounts`.
fn check_file(command: &str, mut parser: lexopt::Parser) -> Result<PathBuf, UsageError> {
    let file: PathBuf = parser
        .value()
        .map_err(|_| UsageError(format!("{command} needs a FILE")))?
        .into();
    if let Some(extra) = parser.next()? {
        return Err(UsageError(format!(
            "{command} takes one FILE; {}",
            extra.unexpected()
        )));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    fn error(a: &[&str]) -> String {
        match parse(args(a)) {
            Err(e) => e.0,
            Ok(c) => panic!("{a:?} parsed: {c:?}"),
        }
    }

    #[test]
    fn serve_is_the_default_command() {
        match parse(args(&["--port", "8080", "--token=abc"])).unwrap() {
            Command::Serve(raw) => {
                assert_eq!(raw.get("port").as_deref(), Some("8080"));
                assert_eq!(raw.get("token").as_deref(), Some("abc"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(args(&["serve", "--port", "1"])).unwrap(),
            Command::Serve(_)
        ));
    }

    #[test]
    fn help_version_and_check_rules() {
        assert!(
            matches!(parse(args(&["--help"])).unwrap(), Command::Help(h) if h.contains("WXMP_TOKEN"))
        );
        assert!(matches!(parse(args(&["-V"])).unwrap(), Command::Version));
        assert!(matches!(
            parse(args(&["--port", "1", "--version"])).unwrap(),
            Command::Version
        ));
        match parse(args(&["check-rules", "r.toml"])).unwrap() {
            Command::CheckRules(p) => assert_eq!(p, PathBuf::from("r.toml")),
            other => panic!("{other:?}"),
        }
        for (command, needle) in [
            ("send", "wxmp send"),
            ("tail", "wxmp tail"),
            ("fake-api", "wxmp fake-api"),
            ("kf", "wxmp menu | kf | token"),
        ] {
            match parse(args(&[command, "--help"])).unwrap() {
                Command::Help(h) => assert!(h.starts_with(needle), "{h}"),
                other => panic!("{other:?}"),
            }
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
                assert_eq!(raw.get("quiet").as_deref(), Some("1"));
                assert_eq!(raw.get("log-openid").as_deref(), Some("0"));
                assert_eq!(raw.get("metrics-addr").as_deref(), Some("127.0.0.1:1"));
            }
            other => panic!("{other:?}"),
        }
        match parse(args(&["tail", "--metrics-addr", "127.0.0.1:2"])).unwrap() {
            Command::Tail(raw) => {
                assert_eq!(raw.get("metrics-addr").as_deref(), Some("127.0.0.1:2"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn usage_errors_say_what_is_wrong() {
        assert_eq!(
            error(&["--bogus", "1"]),
            "unknown option --bogus (see wxmp --help)"
        );
        assert_eq!(error(&["--port"]), "--port needs a value");
        assert!(error(&["frobnicate"]).contains("unknown command"));
        assert!(error(&["check-rules"]).contains("FILE"));
        assert!(error(&["serve", "extra"]).contains("see wxmp --help"));
        assert_eq!(
            error(&["kf", "--bogus", "1"]),
            "unknown option --bogus (see wxmp kf --help)"
        );
    }

    #[test]
    fn api_commands_and_the_fake_are_dispatched() {
        match parse(args(&["menu", "push", "m.toml", "--api-base", "http://x"])).unwrap() {
            Command::Api(raw) => {
                assert_eq!(raw.words, ["menu", "push", "m.toml"]);
                assert_eq!(raw.get("api-base").as_deref(), Some("http://x"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(args(&["fake-api", "--port", "0"])).unwrap(),
            Command::FakeApi(_)
        ));
        match parse(args(&["--secret", "s3cr3t", "--appid", "wx1"])).unwrap() {
            Command::Serve(raw) => {
                assert_eq!(raw.get("secret").as_deref(), Some("s3cr3t"));
                assert!(!format!("{raw:?}").contains("s3cr3t"));
            }
            other => panic!("{other:?}"),
        }
    }
}
