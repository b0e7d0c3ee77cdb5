//! The `wxmp` binary: parse the command line, then serve, check a rules file, send, tail,
//! call the WeChat API, or play it. Each command resolves its own options; this file only
//! moves the parts and turns errors into exit codes.

// One function here makes a system call no safe crate wraps (`widen_futex_hash`).
#![deny(unsafe_code)]

use std::ffi::OsString;
use std::fmt::Display;
use std::path::Path;
use std::process::ExitCode;

use wxmp::cli::{self, Command};
use wxmp::config::Config;
use wxmp::log::Log;
use wxmp::secrets::Environment;
use wxmp::server::{self, reload};
use wxmp::usage::Args;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let command = cli::parse(args);
    // Before any thread: the secrets leave the process environment here, and so do the
    // variables the server's accounts file names (its reloads read them from the copy).
    let named = match &command {
        Ok(Command::Serve(args)) => accounts_env_names(args),
        _ => Vec::new(),
    };
    let secrets = match Environment::take(&named) {
        Ok(secrets) => secrets,
        Err(e) => return fail(e),
    };
    if matches!(command, Ok(Command::Serve(_))) {
        // Returns only if there was nothing to do, or the restart failed.
        if let Err(e) = secrets.restart_clean() {
            eprintln!("wxmp: warning: cannot restart without the secrets in the environment ({e}); the programs reply.command runs can read them in /proc/{}/environ", std::process::id());
        }
    }
    let env = |name: &str| secrets.var(name);
    match command {
        Err(e) => fail(e),
        Ok(Command::Help(text)) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Ok(Command::Version) => {
            println!("wxmp {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Ok(Command::CheckRules(path)) => check_rules(&path),
        Ok(Command::CheckAccounts(path)) => check_accounts(&path, &env),
        Ok(Command::Serve(args)) => serve(*args, &env),
        Ok(Command::Api(args)) => match account_env(&args, &env)
            .and_then(|env| wxmp::api_cmd::args::resolve(*args, &*env).map_err(|e| e.to_string()))
        {
            Err(e) => fail(e),
            Ok(job) => ExitCode::from(wxmp::api_cmd::run(job)),
        },
        Ok(Command::FakeApi(args)) => match wxmp::fake_api::args::resolve(*args, &env) {
            Err(e) => fail(e),
            Ok(config) => match wxmp::fake_api::run::serve(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            },
        },
        Ok(Command::Send(args)) => match account_env(&args, &env)
            .and_then(|env| wxmp::send::args::resolve(*args, &*env).map_err(|e| e.to_string()))
        {
            Err(e) => fail(e),
            Ok(job) => ExitCode::from(wxmp::send::run(&job)),
        },
        Ok(Command::Tail(args)) => match wxmp::tail::resolve(*args, &env) {
            Err(e) => fail(e),
            Ok(job) => ExitCode::from(wxmp::tail::run(&job)),
        },
    }
}

/// The variables the accounts file of `wxmp --accounts FILE` (or `WXMP_ACCOUNTS`) names in
/// its `<key>_env` keys; none without one.
fn accounts_env_names(args: &Args) -> Vec<String> {
    let file = args
        .get("accounts")
        .or_else(|| std::env::var("WXMP_ACCOUNTS").ok());
    let text = file.and_then(|f| std::fs::read_to_string(f).ok());
    text.map_or_else(Vec::new, |t| wxmp::config::accounts::env_names(&t))
}

/// A variable lookup, owned.
type BoxedEnv<'a> = Box<dyn Fn(&str) -> Option<String> + 'a>;

/// With `--accounts FILE --account NAME`, the variables a command reads its token, key, AppID,
/// AppSecret and path from, answered from that account (a flag still wins); otherwise the process's.
fn account_env<'a>(
    args: &Args,
    env: &'a dyn Fn(&str) -> Option<String>,
) -> Result<BoxedEnv<'a>, String> {
    let (file, name) = match (args.get("accounts"), args.get("account")) {
        (_, None) => return Ok(Box::new(env)),
        (None, Some(_)) => {
            return Err(
                "--account needs --accounts FILE (or WXMP_ACCOUNTS): the file it is named in"
                    .to_owned(),
            )
        }
        (Some(file), Some(name)) => (file, name),
    };
    let api = wxmp::config::accounts::ApiShared {
        api_base: wxmp::config::DEFAULT_API_BASE.to_owned(),
        token_endpoint: wxmp::api::TokenEndpoint::Stable,
        cache_home: None,
    };
    let loaded =
        server::live::load_accounts(Path::new(&file), &api, 1, env).map_err(|problems| {
            let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
            shown.join("\nwxmp: ")
        })?;
    let names: Vec<&str> = loaded.accounts.iter().map(|a| a.name.as_str()).collect();
    let Some(a) = loaded.accounts.iter().find(|a| a.name == name) else {
        return Err(format!(
            "no account {name:?} in {file}; it has {}",
            names.join(", ")
        ));
    };
    let mut vars = vec![
        ("WXMP_TOKEN", a.account.token.expose().to_owned()),
        ("WXMP_PATH", a.account.path.clone()),
    ];
    if let Some(app_id) = &a.app_id {
        vars.push(("WXMP_APPID", app_id.clone()));
    }
    if let Some(key) = &a.aes_key {
        vars.push(("WXMP_AES_KEY", key.expose().to_owned()));
    }
    if let Some(api) = &a.api {
        vars.push(("WXMP_SECRET", api.secret.expose().to_owned()));
    }
    Ok(Box::new(move |name: &str| {
        match vars.iter().find(|(v, _)| *v == name) {
            Some((_, value)) => Some(value.clone()),
            // The file's account decides these; the process's variables do not mix in.
            None if matches!(name, "WXMP_AES_KEY" | "WXMP_APPID" | "WXMP_SECRET") => None,
            None => env(name),
        }
    }))
}

/// Usage and configuration errors, whichever command: one line on stderr, exit code 2.
fn fail(msg: impl Display) -> ExitCode {
    eprintln!("wxmp: {msg}");
    ExitCode::from(2)
}

fn check_rules(path: &Path) -> ExitCode {
    let set = match reload::load(path) {
        Err(e) => return fail(e),
        Ok(set) => set,
    };
    for (i, rule) in set.rules().iter().enumerate() {
        println!("{:>3}. {rule}", i + 1);
    }
    println!("default: {}", set.default_action());
    for w in set.warnings() {
        eprintln!("wxmp: warning: {w}");
    }
    let warned = match set.warnings().len() {
        0 => String::new(),
        n => format!(" ({n} warning{})", if n == 1 { "" } else { "s" }),
    };
    println!("{}: {} rules OK{warned}", path.display(), set.rules().len());
    ExitCode::SUCCESS
}

/// Lists each account with where its secrets came from (never their values) and its rules;
/// every problem of the file and of its rules files, each with its line, exits 2.
fn check_accounts(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> ExitCode {
    let api = wxmp::config::accounts::ApiShared {
        api_base: wxmp::config::DEFAULT_API_BASE.to_owned(),
        token_endpoint: wxmp::api::TokenEndpoint::Stable,
        cache_home: None,
    };
    let processes = wxmp::config::DEFAULT_PROCESSES;
    let loaded = match server::live::load_accounts(path, &api, processes, env) {
        Ok(l) => l,
        Err(problems) => {
            for p in &problems {
                eprintln!("wxmp: {p}");
            }
            return ExitCode::from(2);
        }
    };
    let mut failed = false;
    let mut rules: Vec<(std::path::PathBuf, String)> = Vec::new();
    let width = loaded
        .accounts
        .iter()
        .map(|a| a.name.len())
        .max()
        .unwrap_or(0);
    let path_width = loaded
        .accounts
        .iter()
        .map(|a| a.account.path.len())
        .max()
        .unwrap_or(0);
    for a in &loaded.accounts {
        let rules_note = match &a.account.rules {
            None => "built-in rules".to_owned(),
            Some(file) => match rules.iter().find(|(f, _)| f == file) {
                Some((_, note)) => note.clone(),
                None => {
                    let note = match reload::load(file) {
                        Ok(set) => {
                            for w in set.warnings() {
                                eprintln!("wxmp: warning: {w}");
                            }
                            format!("{} rules from {}", set.rules().len(), file.display())
                        }
                        Err(e) => {
                            eprintln!("wxmp: account {:?} (line {}): {e}", a.name, a.line);
                            failed = true;
                            format!("rules {}: broken", file.display())
                        }
                    };
                    rules.push((file.clone(), note.clone()));
                    note
                }
            },
        };
        let secrets: Vec<String> = a
            .sources
            .iter()
            .map(|(key, source)| format!("{key} {source}"))
            .collect();
        let mode = match &a.account.safe {
            Some(s) => format!("safe mode, AppID {}", s.app_id),
            None => "plaintext".to_owned(),
        };
        let gateway = a.gateway.as_ref().map_or(String::new(), |g| {
            format!("; its own API gateway on http://{}", g.addr)
        });
        println!(
            "{:width$}  {:path_width$}  {mode}; {}; {rules_note}{gateway}",
            a.name,
            a.account.path,
            secrets.join(", "),
        );
    }
    for w in &loaded.warnings {
        eprintln!("wxmp: warning: {w}");
    }
    if failed {
        return ExitCode::from(2);
    }
    let n = loaded.accounts.len();
    println!(
        "{}: {n} account{} OK",
        path.display(),
        if n == 1 { "" } else { "s" }
    );
    ExitCode::SUCCESS
}

fn serve(args: Args, env: &dyn Fn(&str) -> Option<String>) -> ExitCode {
    // Best effort: a kernel before 6.16 has no table of the process's own to widen.
    let _ = widen_futex_hash(FUTEX_HASH_SLOTS);
    let config = match Config::resolve(args, env) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let log = Log::stderr().with_format(config.log);
    // The log's lines (the configuration's warnings first) come before the error that ends it.
    let failed = |e: &dyn Display| {
        log.flush(server::run::EXIT_FLUSH);
        fail(e)
    };
    match server::build(config, log.clone()) {
        Err(e) => failed(&e),
        Ok(server) => match server.run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => failed(&e),
        },
    }
}

/// Slots of wxmp's own futex hash table (Linux 6.16 and later). The kernel sizes a threaded
/// process's table by its CPUs, not its threads: 16 slots on 2 cores. A server keeps hundreds
/// of threads blocked on futexes (one per connection, handler threads holding WeChat's
/// attempts, forward calls), and each wake walks the waiters of its slot: beside 200 held
/// pushes, `futex_wake` itself was 8% of the server's CPU, 1% with a table this size
/// (docs/performance.md). 4096 slots are 256 KiB.
const FUTEX_HASH_SLOTS: u64 = 4096;

/// Asks for a futex hash table of `slots` slots (a power of two); the slots the kernel then
/// reports. Kernels before 6.16 have one global table and refuse the option (EINVAL).
// The one unsafe call in wxmp: prctl(2) has no safe wrapper for PR_FUTEX_HASH (rustix has
// none), and it takes only integers, so no memory is shared with the kernel.
#[allow(unsafe_code)]
fn widen_futex_hash(slots: u64) -> std::io::Result<u64> {
    const PR_FUTEX_HASH: libc::c_int = 78;
    const PR_FUTEX_HASH_SET_SLOTS: libc::c_ulong = 1;
    const PR_FUTEX_HASH_GET_SLOTS: libc::c_ulong = 2;
    let slots = libc::c_ulong::try_from(slots).map_err(std::io::Error::other)?;
    // SAFETY: integer arguments only.
    // prctl is variadic: every argument is passed at the width the kernel reads.
    let zero: libc::c_ulong = 0;
    if unsafe { libc::prctl(PR_FUTEX_HASH, PR_FUTEX_HASH_SET_SLOTS, slots, zero, zero) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: integer arguments only.
    let now = unsafe { libc::prctl(PR_FUTEX_HASH, PR_FUTEX_HASH_GET_SLOTS, zero, zero, zero) };
    u64::try_from(now).map_err(|_| std::io::Error::last_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_futex_hash_is_widened_where_the_kernel_has_one() {
        match widen_futex_hash(FUTEX_HASH_SLOTS) {
            Ok(slots) => {
                assert_eq!(slots, FUTEX_HASH_SLOTS);
                // The kernel wants a power of two: the table is left as it was.
                let refused = widen_futex_hash(3000).expect_err("3000 slots are refused");
                assert_eq!(refused.raw_os_error(), Some(libc::EINVAL), "{refused}");
                assert_eq!(
                    widen_futex_hash(FUTEX_HASH_SLOTS).ok(),
                    Some(FUTEX_HASH_SLOTS)
                );
            }
            // A kernel before 6.16: one global table, and the option is unknown.
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}"),
        }
    }
}
