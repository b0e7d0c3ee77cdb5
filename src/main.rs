//! The `wxmp` binary: parse the command line, then serve, check a rules file, send, tail,
//! call the WeChat API, or play it.

use std::ffi::OsString;
use std::process::ExitCode;

use wxmp::cli::{self, Command};
use wxmp::config::{Config, RawServe};
use wxmp::log::Log;
use wxmp::rules::RuleSet;
use wxmp::server::access::AccessOptions;
use wxmp::server::account::Account;
use wxmp::server::reload;
use wxmp::server::run::{self, Listen};

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match cli::parse(args) {
        Err(e) => fail(&e.to_string()),
        Ok(Command::Help) => {
            print!("{}", cli::USAGE);
            ExitCode::SUCCESS
        }
        Ok(Command::Version) => {
            println!("wxmp {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Ok(Command::CheckRules(path)) => match reload::load(&path) {
            Err(e) => fail(&e.to_string()),
            Ok(set) => {
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
        },
        Ok(Command::Serve(raw)) => serve(*raw),
        Ok(Command::SendHelp) => {
            print!("{}", wxmp::send::USAGE);
            ExitCode::SUCCESS
        }
        Ok(Command::ApiHelp) => {
            print!("{}", wxmp::api_cmd::args::USAGE);
            ExitCode::SUCCESS
        }
        Ok(Command::Api(raw)) => {
            match wxmp::api_cmd::args::resolve(*raw, &|name| std::env::var(name).ok()) {
                Err(e) => fail(&e.to_string()),
                Ok(job) => ExitCode::from(wxmp::api_cmd::run(job)),
            }
        }
        Ok(Command::FakeApiHelp) => {
            print!("{}", wxmp::fake_api::args::USAGE);
            ExitCode::SUCCESS
        }
        Ok(Command::FakeApi(raw)) => {
            match wxmp::fake_api::args::resolve(*raw, &|name| std::env::var(name).ok()) {
                Err(e) => fail(&e.to_string()),
                Ok(config) => match wxmp::fake_api::run::serve(config) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => fail(&e),
                },
            }
        }
        Ok(Command::Send(raw)) => {
            match wxmp::send::args::resolve(*raw, &|name| std::env::var(name).ok()) {
                Err(e) => {
                    eprintln!("wxmp send: {e}");
                    ExitCode::from(2)
                }
                Ok(job) => ExitCode::from(wxmp::send::run(&job)),
            }
        }
        Ok(Command::TailHelp) => {
            print!("{}", wxmp::tail::USAGE);
            ExitCode::SUCCESS
        }
        Ok(Command::Tail(raw)) => {
            match wxmp::tail::resolve(raw, &|name| std::env::var(name).ok()) {
                Err(e) => {
                    eprintln!("wxmp tail: {e}");
                    ExitCode::from(2)
                }
                Ok(job) => ExitCode::from(wxmp::tail::run(&job)),
            }
        }
    }
}

/// Usage and configuration errors: one line on stderr, exit code 2.
fn fail(msg: &str) -> ExitCode {
    eprintln!("wxmp: {msg}");
    ExitCode::from(2)
}

fn serve(raw: RawServe) -> ExitCode {
    let config = match Config::resolve(raw, &|name| std::env::var(name).ok()) {
        Ok(c) => c,
        Err(e) => return fail(&e.to_string()),
    };
    let rules = match &config.rules {
        Some(path) => match reload::load(path) {
            Ok(set) => set,
            Err(e) => return fail(&e.to_string()),
        },
        None => RuleSet::builtin(),
    };
    let mut account = Account::new(config.token.clone())
        .with_path(&config.path)
        .with_safe(config.safe.clone())
        .with_rules(rules);
    account.rules_file = config.rules.clone();
    let listen = Listen {
        host: config.host.clone(),
        port: config.port,
        threads: config.threads,
        cache: config.cache,
        forward: config.forward.clone(),
        api: config.api.clone(),
        max_connections: config.max_connections,
        metrics: config.metrics_addr,
        access: AccessOptions {
            quiet: config.quiet,
            full_openid: config.log_openid,
        },
        replay_window: config.replay_window,
    };
    let log = Log::stderr().with_format(config.log_format);
    for w in &config.warnings {
        log.warn(w);
    }
    match run::serve(listen, account, log) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}
