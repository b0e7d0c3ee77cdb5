//! `wxmp tail`: a live view of a running server for someone debugging their account. It reads
//! the server's metrics listener (`--metrics-addr`, loopback only, never the public port) and
//! prints each push as it arrives and what was answered, decrypted and readable:
//!
//! ```text
//! 12:01:03 text from oAbc…(a1f3c2) "天气" → rule 1 (line 2): text "北京天气挺好的！" 0.4 ms
//! ```
//!
//! It polls `GET /tail?after=SEQ` (the server holds a request up to 2 s while there is nothing
//! new), so the server keeps no state for it and a slow reader is only told how many lines it
//! missed. The wire format is `server::recent`'s; [`wire`] reads it. Imports nothing of the
//! server: the two meet only over HTTP.

pub mod wire;

use std::fmt;
use std::io::Write;
use std::time::{Duration, Instant};

use crate::net::NetError;
use crate::usage::{self, Args, Env, Setting, Spec};
pub use crate::usage::{Parsed, UsageError};

pub use wire::{parse_page, Page};

/// Where the server's metrics listener is when neither the flag nor the variable says.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9100";
/// Earlier lines shown when starting.
pub const DEFAULT_HISTORY: usize = 10;

const HEAD: &str = "\
wxmp tail — watch a running server's pushes live: what arrived and what was answered

Usage: wxmp tail [--metrics-addr ADDR] [--history N]

It reads the server's metrics listener, which the server opens with --metrics-addr ADDR (or
WXMP_METRICS_ADDR) on a loopback address, e.g.
  wxmp --metrics-addr 127.0.0.1:9100 ...     in one terminal
  wxmp tail                                  in another

Options:
";

const FOOT: &str = "
Times are UTC, like the server's log. Stop with Ctrl-C.
Exit status: 1 the listener cannot be reached or does not serve the live view; 2 usage error.
";

/// `wxmp tail`'s options.
#[rustfmt::skip]
pub const SETTINGS: &[Setting] = &[
    Setting::value("metrics-addr", "ADDR", "the server's metrics listener").env("WXMP_METRICS_ADDR").default(DEFAULT_ADDR),
    Setting::value("history", "N", "earlier pushes to show first, at most 256").default("10"),
    Setting::value("account", "NAME", "only this account's lines (a server with --accounts)").default("all"),
];

/// `wxmp tail`'s command line.
pub const SPEC: Spec = Spec {
    help: "wxmp tail --help",
    settings: SETTINGS,
    fields: &[],
    words: false,
};

/// `wxmp tail --help`.
pub fn usage() -> String {
    format!("{HEAD}{}{FOOT}", usage::help(SETTINGS))
}

/// A ready-to-run tail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// `http://127.0.0.1:9100`
    pub base: String,
    pub history: usize,
    /// Show only the lines of this account (`--account`).
    pub account: Option<String>,
}

/// Applies `WXMP_METRICS_ADDR` and the defaults, and checks the values.
pub fn resolve(raw: Args, env: Env<'_>) -> Result<Job, UsageError> {
    let raw = raw.with_env(env);
    let addr = raw
        .get("metrics-addr")
        .filter(|a| !a.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_ADDR.to_owned());
    let addr = addr.trim();
    let host = addr
        .strip_prefix("http://")
        .unwrap_or(addr)
        .trim_end_matches('/');
    if host.is_empty() || host.contains(['/', '?', '#', ' ']) || !host.contains(':') {
        return Err(UsageError(format!(
            "invalid address {addr:?} (--metrics-addr / WXMP_METRICS_ADDR): expected HOST:PORT, like 127.0.0.1:9100"
        )));
    }
    let history: usize = raw.number("history", DEFAULT_HISTORY)?;
    Ok(Job {
        base: format!("http://{host}"),
        history: history.min(256),
        account: raw.get("account").map(|a| a.trim().to_owned()),
    })
}

/// Why one poll got no page.
enum PollError {
    /// Nothing answered (refused, reset, timed out).
    Unreachable(String),
    /// Something answered, but not with the live view.
    Refused(String),
}

fn poll(agent: &ureq::Agent, url: &str) -> Result<Page, PollError> {
    match agent.get(url).call() {
        Ok(resp) => {
            let text = resp
                .into_string()
                .map_err(|e| PollError::Unreachable(NetError::from_read(&e).detail))?;
            parse_page(&text).map_err(|e| {
                PollError::Refused(format!(
                    "the answer is not wxmp's live view ({e}); is --metrics-addr the server's metrics listener?"
                ))
            })
        }
        Err(ureq::Error::Status(404, resp)) => {
            let body = resp.into_string().unwrap_or_default();
            Err(PollError::Refused(if body.contains("live view is off") {
                body.trim().to_owned()
            } else {
                "HTTP 404: that is not wxmp's metrics listener (the public port never serves the live view); pass the server's --metrics-addr".to_owned()
            }))
        }
        Err(ureq::Error::Status(code, _)) => Err(PollError::Refused(format!(
            "HTTP {code} from the metrics listener"
        ))),
        // The OS's words ("Connection refused") say it best; ureq's wrap them in the URL.
        Err(ureq::Error::Transport(t)) => {
            Err(PollError::Unreachable(NetError::from_transport(&t).detail))
        }
    }
}

/// Follows the server until Ctrl-C (or until stdout closes). Returns the exit status.
pub fn run(job: &Job) -> u8 {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(3))
        .timeout(Duration::from_secs(10))
        .build();
    let stdout = std::io::stdout();
    let mut seen: Option<(u64, u64)> = None; // (epoch, last number shown)
    let mut down = false;
    loop {
        let url = match seen {
            None => format!("{}/tail?history={}", job.base, job.history),
            Some((epoch, after)) => {
                format!("{}/tail?after={after}&epoch={epoch}&wait=2", job.base)
            }
        };
        let asked = Instant::now();
        let page = match poll(&agent, &url) {
            Ok(p) => p,
            Err(PollError::Refused(why)) => {
                eprintln!("wxmp tail: {}: {why}", job.base);
                return 1;
            }
            Err(PollError::Unreachable(why)) => {
                if seen.is_none() {
                    eprintln!(
                        "wxmp tail: cannot reach the metrics listener at {}: {why}\n\
                         Start the server with --metrics-addr on a loopback address (e.g. --metrics-addr 127.0.0.1:9100, or WXMP_METRICS_ADDR), and pass the same address here.",
                        job.base
                    );
                    return 1;
                }
                if !down {
                    down = true;
                    if say(&stdout, "(the server is not answering; waiting for it)").is_err() {
                        return 0;
                    }
                }
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        let (mut out, next) = follow(seen, &page);
        if let Some(name) = &job.account {
            out = out
                .lines()
                .filter(|l| l.starts_with('(') || of_account(l, name))
                .map(|l| format!("{l}\n"))
                .collect();
        }
        if down {
            down = false;
            out.insert_str(0, "(the server answers again)\n");
        }
        if !out.is_empty() && say(&stdout, out.trim_end_matches('\n')).is_err() {
            // stdout is gone (`wxmp tail | head`): nothing left to do.
            return 0;
        }
        seen = Some(next);
        // The server answers at once, without waiting, when enough readers already wait:
        // don't spin.
        if page.lines.is_empty() && asked.elapsed() < Duration::from_millis(200) {
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// What to print for `page`, given the (epoch, last number) shown so far, and the new
/// (epoch, last number).
pub fn follow(seen: Option<(u64, u64)>, page: &Page) -> (String, (u64, u64)) {
    let mut out = String::new();
    match seen {
        None => {}
        Some((epoch, _)) if epoch != page.epoch => out.push_str("(the server restarted)\n"),
        Some(_) if page.skipped > 0 => {
            let _ = fmt::Write::write_fmt(
                &mut out,
                format_args!(
                    "({} push{} skipped: the server keeps the last 256)\n",
                    page.skipped,
                    if page.skipped == 1 { "" } else { "es" }
                ),
            );
        }
        Some(_) => {}
    }
    for (_, line) in &page.lines {
        out.push_str(line);
        out.push('\n');
    }
    // With no new line, the server's newest number is where this reader stands (0 after a
    // restart with nothing yet).
    let last = page.lines.last().map_or(page.last, |l| l.0);
    (out, (page.epoch, last))
}

/// Whether a live-view line (`15:36:59 [shop] text from ...`) is about account `name`.
pub fn of_account(line: &str, name: &str) -> bool {
    line.split_once(' ')
        .and_then(|(_, rest)| rest.strip_prefix('['))
        .and_then(|rest| rest.strip_prefix(name))
        .is_some_and(|rest| rest.starts_with("] "))
}

fn say(stdout: &std::io::Stdout, text: &str) -> std::io::Result<()> {
    let mut lock = stdout.lock();
    writeln!(lock, "{text}")?;
    lock.flush()
}

#[cfg(test)]
mod tests {
    #[test]
    fn account_lines_are_told_apart_by_their_bracketed_name() {
        use super::of_account;
        let line =
            "15:36:59 [shop] text from o_wx…(771ff5) \"天气\" → rule 1 (line 2): text 0.48 ms";
        assert!(of_account(line, "shop"));
        assert!(!of_account(line, "sho"));
        assert!(!of_account(line, "school"));
        assert!(!of_account(
            "15:36:59 POST /weixin/nope 404 no such path 0.05 ms",
            "shop"
        ));
    }

    use super::*;

    fn parse(p: lexopt::Parser) -> Result<Parsed, UsageError> {
        usage::parse(p, &SPEC)
    }

    fn args(a: &[&str]) -> lexopt::Parser {
        lexopt::Parser::from_args(a.iter().map(std::ffi::OsString::from).collect::<Vec<_>>())
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn the_address_comes_from_the_flag_the_variable_or_the_default() {
        let Parsed::Args(raw) = parse(args(&[])).unwrap() else {
            panic!()
        };
        assert_eq!(
            resolve(raw.clone(), &no_env).unwrap().base,
            "http://127.0.0.1:9100"
        );
        let env = |k: &str| (k == "WXMP_METRICS_ADDR").then(|| "127.0.0.1:9200".to_owned());
        assert_eq!(resolve(raw, &env).unwrap().base, "http://127.0.0.1:9200");
        let Parsed::Args(raw) = parse(args(&["--metrics-addr", "http://[::1]:9300/"])).unwrap()
        else {
            panic!()
        };
        assert_eq!(resolve(raw, &env).unwrap().base, "http://[::1]:9300");
    }

    #[test]
    fn a_reader_is_told_what_it_missed_and_when_the_server_restarted() {
        let page = |epoch, last, skipped, lines: &[u64]| Page {
            epoch,
            last,
            skipped,
            lines: lines.iter().map(|&n| (n, format!("push {n}"))).collect(),
        };
        assert_eq!(
            follow(None, &page(1, 12, 0, &[11, 12])),
            ("push 11\npush 12\n".into(), (1, 12))
        );
        assert_eq!(
            follow(Some((1, 12)), &page(1, 400, 3, &[16])),
            (
                "(3 pushes skipped: the server keeps the last 256)\npush 16\n".into(),
                (1, 16)
            )
        );
        assert_eq!(
            follow(Some((1, 16)), &page(1, 16, 0, &[])),
            (String::new(), (1, 16))
        );
        assert_eq!(
            follow(Some((1, 16)), &page(2, 0, 0, &[])),
            ("(the server restarted)\n".into(), (2, 0))
        );
    }

    #[test]
    fn usage_errors_name_the_option() {
        assert!(parse(args(&["--bogus"])).unwrap_err().0.contains("--bogus"));
        let Parsed::Args(raw) = parse(args(&["--metrics-addr", "9100"])).unwrap() else {
            panic!()
        };
        assert!(resolve(raw, &no_env)
            .unwrap_err()
            .0
            .contains("--metrics-addr"));
        let Parsed::Args(raw) = parse(args(&["--history", "many"])).unwrap() else {
            panic!()
        };
        assert!(resolve(raw, &no_env).unwrap_err().0.contains("--history"));
        assert!(matches!(parse(args(&["--help"])).unwrap(), Parsed::Help));
    }
}
