//! The `wxmp` binary: parse the command line, then serve, check a rules file, or send.

use std::ffi::OsString;
use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use wxmp::app::{App, SystemEnv};
use wxmp::cli::{self, Command};
use wxmp::config::{self, Config, RawServe};
use wxmp::routes::{self, Service};
use wxmp::rules::RuleSet;
use wxmp::{log, reload};

/// How long a stop may take before the process exits anyway (Docker kills after 10 s).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);
/// Exit code of a stop that had to abandon requests still running after [`SHUTDOWN_GRACE`].
const EXIT_UNCLEAN_STOP: i32 = 1;

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
                println!("{}: {} rules OK", path.display(), set.rules().len());
                ExitCode::SUCCESS
            }
        },
        Ok(Command::Serve(raw)) => serve(*raw),
        Ok(Command::SendHelp) => {
            print!("{}", wxmp::send::USAGE);
            ExitCode::SUCCESS
        }
        Ok(Command::Send(raw)) => match wxmp::send::resolve(*raw, &|name| std::env::var(name).ok())
        {
            Err(e) => fail(&format!("send: {e}")),
            Ok(send) => ExitCode::from(wxmp::send::run(&send)),
        },
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
    let rule_count = rules.rules().len();
    // Each keep-alive connection holds a descriptor; the usual soft limit of 1024 would refuse
    // connections before 1000 clients. Raise it to the hard limit, as Go does.
    let fd_limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    // Past the cap new connections get a 503, so a flood of connections makes the server busy
    // instead of exhausting descriptors or threads. tiny_http reads it when rouille builds it.
    let max_connections = config.max_connections.unwrap_or_else(|| {
        config::default_max_connections(if fd_limit > 0 { fd_limit } else { 1024 })
    });
    tiny_http::control::set_max_connections(max_connections);
    wxmp::http_log::install();
    let app = Arc::new(App::new(
        config.token.clone(),
        config.safe.clone(),
        rules,
        config.cache,
        Box::new(SystemEnv),
    ));
    let service = Arc::new(Service {
        app: Arc::clone(&app),
        path: config.path.clone(),
    });
    let handler = {
        let service = Arc::clone(&service);
        move |req: &rouille::Request| routes::handle(&service, req)
    };
    let server = match rouille::Server::new((config.host.as_str(), config.port), handler) {
        Ok(s) => s.pool_size(config.threads),
        Err(e) => return fail(&bind_error(&config, e.as_ref())),
    };

    let term = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    for (signal, flag) in [
        (signal_hook::consts::SIGTERM, &term),
        (signal_hook::consts::SIGINT, &term),
        (signal_hook::consts::SIGHUP, &hup),
    ] {
        // A second Ctrl-C while stopping exits at once.
        if signal != signal_hook::consts::SIGHUP {
            let _ = signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(flag));
        }
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(flag)) {
            return fail(&format!("cannot install signal handler: {e}"));
        }
    }
    let stop_watcher = Arc::new(AtomicBool::new(false));
    let watcher = config.rules.clone().map(|path| {
        reload::watch(
            path,
            Arc::clone(&app),
            Arc::clone(&hup),
            Arc::clone(&stop_watcher),
        )
    });

    println!(
        "wxmp {} listening on http://{}{} (safe mode {}, {} rules {}, {} threads, {} file descriptors, {} connections)",
        env!("CARGO_PKG_VERSION"),
        server.server_addr(),
        config.path,
        if config.safe.is_some() { "on" } else { "off" },
        rule_count,
        config
            .rules
            .as_ref()
            .map_or("built in".to_owned(), |p| format!("from {}", p.display())),
        config.threads,
        fd_limit,
        max_connections,
    );
    let _ = io::stdout().flush();

    // poll_timeout returns at least once per timeout even under load (a tiny_http patch), so
    // the flag is seen promptly.
    while !term.load(Ordering::Relaxed) {
        server.poll_timeout(Duration::from_millis(100));
    }
    log::info("stopping: no new connections; finishing the requests in flight");
    // Closes the listener and idle connections; a connection inside a request finishes it, and
    // its answer closes it.
    tiny_http::control::shutdown();
    thread::spawn(|| {
        thread::sleep(SHUTDOWN_GRACE);
        log::warn("requests still running after the grace period; exiting anyway");
        std::process::exit(EXIT_UNCLEAN_STOP);
    });
    while tiny_http::control::open_connections() > 0 {
        server.poll_timeout(Duration::from_millis(20));
    }
    server.join();
    stop_watcher.store(true, Ordering::Relaxed);
    if let Some(w) = watcher {
        let _ = w.join();
    }
    log::info("stopped");
    ExitCode::SUCCESS
}

/// Says what went wrong binding the port and what to do about it.
fn bind_error(config: &Config, e: &(dyn std::error::Error + 'static)) -> String {
    let addr = format!("{}:{}", config.host, config.port);
    match e.downcast_ref::<io::Error>().map(io::Error::kind) {
        Some(io::ErrorKind::AddrInUse) => format!(
            "cannot listen on {addr}: the port is already in use; stop the other server or pass --port (e.g. --port 8081)"
        ),
        Some(io::ErrorKind::PermissionDenied) => format!(
            "cannot listen on {addr}: permission denied (ports below 1024 need root); run as root, as in the container, or pass --port 8080"
        ),
        Some(io::ErrorKind::AddrNotAvailable) => format!(
            "cannot listen on {addr}: that address is not on this machine; pass --host 0.0.0.0 or one of its addresses"
        ),
        _ => format!("cannot listen on {addr}: {e}; check --host and --port"),
    }
}
