//! The server's life: bind, install signal handlers, watch the rules file, serve, stop.

use std::fmt;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::log::Log;
use crate::server::access::AccessOptions;
use crate::server::account::Account;
use crate::server::env::{Env, SystemEnv};
use crate::server::forward::{self, Forwarder};
use crate::server::http_log;
use crate::server::metrics::Metrics;
use crate::server::monitor::{self, Monitor};
use crate::server::pipeline::Pipeline;
use crate::server::recent::Recent;
use crate::server::reload;
use crate::server::replay::Replay;
use crate::server::routes::{self, Service};
use crate::server::store::Limits;

/// How long a stop may take before the process exits anyway (Docker kills after 10 s).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);
/// Exit code of a stop that had to abandon requests still running after [`SHUTDOWN_GRACE`].
const EXIT_UNCLEAN_STOP: i32 = 1;

/// Where and how to listen, besides the account.
#[derive(Debug, Clone)]
pub struct Listen {
    pub host: String,
    pub port: u16,
    /// Request-handler threads.
    pub threads: usize,
    /// The retry store's limits.
    pub cache: Limits,
    /// Forwarding to the user's own code.
    pub forward: forward::Settings,
    /// The WeChat API, for late answers under `kf` (needs the AppID and AppSecret).
    pub api: Option<crate::api::ApiConfig>,
    /// Open connections at most (more get a 503); `None`: derived from the descriptor limit.
    pub max_connections: Option<usize>,
    /// The metrics listener (`/metrics`, and `/tail` when on loopback); `None`: off.
    pub metrics: Option<SocketAddr>,
    /// What the access log shows.
    pub access: AccessOptions,
    /// Seconds a signed query stays good; 0: off ([`crate::server::replay`]).
    pub replay_window: u64,
}

/// Why the server could not start (`MetricsBind`: the `--metrics-addr` listener's address).
#[derive(Debug)]
pub enum ServeError {
    Bind { addr: String, error: io::Error },
    BindOther { addr: String, error: String },
    MetricsBind(SocketAddr, io::Error),
    Signals(io::Error),
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServeError::Bind { addr, error } => match error.kind() {
                io::ErrorKind::AddrInUse => write!(
                    f,
                    "cannot listen on {addr}: the port is already in use; stop the other server, or pick another port: --port 8081 or WXMP_PORT=8081 (with make run: make run PORT=8081)"
                ),
                io::ErrorKind::PermissionDenied => write!(
                    f,
                    "cannot listen on {addr}: permission denied (ports below 1024 need root); run as root, as in the container, or pass --port 8080"
                ),
                io::ErrorKind::AddrNotAvailable => write!(
                    f,
                    "cannot listen on {addr}: that address is not on this machine; pass --host 0.0.0.0 or one of its addresses"
                ),
                _ => write!(f, "cannot listen on {addr}: {error}; check --host and --port"),
            },
            ServeError::BindOther { addr, error } => {
                write!(f, "cannot listen on {addr}: {error}; check --host and --port")
            }
            ServeError::MetricsBind(addr, error) => {
                let why = match error.kind() {
                    io::ErrorKind::AddrInUse => "the port is already in use".to_owned(),
                    io::ErrorKind::PermissionDenied => {
                        "permission denied (ports below 1024 need root)".to_owned()
                    }
                    io::ErrorKind::AddrNotAvailable => {
                        "that address is not on this machine".to_owned()
                    }
                    _ => error.to_string(),
                };
                write!(
                    f,
                    "cannot listen for metrics on {addr}: {why}; check --metrics-addr / WXMP_METRICS_ADDR (e.g. 127.0.0.1:9100)"
                )
            }
            ServeError::Signals(e) => write!(f, "cannot install signal handler: {e}"),
        }
    }
}

impl std::error::Error for ServeError {}

/// Default cap on open connections. Each holds one descriptor and one thread; half of what the
/// descriptor limit leaves after 64 for everything else keeps accept (and the 503 it answers
/// past the cap) from ever running out, and 4096 bounds the threads.
pub fn default_max_connections(fd_limit: u64) -> usize {
    (fd_limit.saturating_sub(64) / 2).clamp(16, 4096) as usize
}

/// Serves `account` until SIGTERM or Ctrl-C, then finishes the requests in flight.
pub fn serve(listen: Listen, account: Account, log: Log) -> Result<(), ServeError> {
    let rule_count = account.rules.current().rules().len();
    for w in account.rules.current().warnings() {
        log.warn(&format!("rules: {w}"));
    }
    let rules_file = account.rules_file.clone();
    let path = account.path.clone();
    let safe = account.safe.is_some();
    // Each keep-alive connection holds a few descriptors; the usual soft limit of 1024 would
    // refuse connections long before 1000 clients. Raise it to the hard limit, as Go does.
    let fd_limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    // Past the cap new connections get a 503, so a flood of connections makes the server busy
    // instead of exhausting descriptors or threads. tiny_http reads it when rouille builds it.
    let max_connections = listen
        .max_connections
        .unwrap_or_else(|| default_max_connections(if fd_limit > 0 { fd_limit } else { 1024 }));
    tiny_http::control::set_max_connections(max_connections);
    http_log::install(log.clone());
    let env: Arc<dyn Env> = Arc::new(SystemEnv);
    let metrics = Arc::new(Metrics::new());
    // Held attempts are handler threads blocked on a condition variable; hundreds of idle ones
    // cost a server that never forwards 10-15% of its throughput, so the pool grows for them
    // only when the rules at start forward (a reload that adds forwarding gets a small reserve).
    let held_threads = if account.rules.current().forwards() {
        listen.forward.held_threads()
    } else {
        forward::Settings::RESERVE.min(listen.forward.held_threads())
    };
    let mut forwarder = Forwarder::new(listen.forward.clone(), Arc::clone(&env), log.clone())
        .with_held_threads(held_threads)
        .with_observer({
            let metrics = Arc::clone(&metrics);
            Arc::new(move |outcome: forward::CallOutcome, took| {
                metrics.forward(outcome.as_str(), took)
            })
        });
    if let Some(api) = listen.api.clone() {
        let client = Arc::new(crate::api::Client::new(api));
        {
            let (calls, expiry) = (Arc::clone(&client), Arc::clone(&client));
            metrics.watch_api(
                move || calls.stats().calls,
                move || {
                    expiry.token_expires_at().map(|at| {
                        at.duration_since(SystemTime::now())
                            .map_or(0.0, |d| d.as_secs_f64())
                    })
                },
            );
        }
        forwarder = forwarder.with_late_sender(client);
    }
    // The live view shows message content, so it exists only behind a loopback listener.
    let live_view = listen.metrics.is_some_and(|a| a.ip().is_loopback());
    let pipeline = Arc::new(
        Pipeline::in_memory(account, listen.cache, env)
            .with_replay(Replay::new(listen.replay_window))
            .with_log(log.clone())
            .with_workers(listen.threads)
            .with_forwarder(forwarder)
            .with_samples(live_view),
    );
    // The handler pool: `threads` for the server's own work, plus room for the attempts that
    // forwarding holds open (each waits on a condition variable, a few KiB of stack), so a slow
    // endpoint can never take the threads that static rules, the URL check and /healthz need.
    let pool = listen.threads + held_threads;
    {
        let pipeline = Arc::clone(&pipeline);
        metrics.watch_store(move || pipeline.store_usage(), listen.cache);
    }
    {
        let (a, b) = (Arc::clone(&pipeline), Arc::clone(&pipeline));
        metrics.watch_replay(move || a.replay().len(), move || b.replay().evictions());
    }
    {
        let (a, b) = (Arc::clone(&pipeline), Arc::clone(&pipeline));
        metrics.watch_forwarding(
            move || a.forwarder().in_flight(),
            move || b.forwarder().held(),
        );
    }
    let recent = live_view.then(|| {
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Arc::new(Recent::new(epoch))
    });
    let service = Arc::new(
        Service::new(Arc::clone(&pipeline), log.clone())
            .with_access(listen.access)
            .with_metrics(Arc::clone(&metrics))
            .with_recent(recent.clone()),
    );
    let handler = {
        let service = Arc::clone(&service);
        move |req: &rouille::Request| routes::handle(&service, req)
    };
    let addr = format!("{}:{}", listen.host, listen.port);
    let server = match rouille::Server::new((listen.host.as_str(), listen.port), handler) {
        Ok(s) => s.pool_size(pool),
        Err(e) => {
            return Err(match e.downcast::<io::Error>() {
                Ok(error) => ServeError::Bind {
                    addr,
                    error: *error,
                },
                Err(other) => ServeError::BindOther {
                    addr,
                    error: other.to_string(),
                },
            })
        }
    };

    let stop_monitor = Arc::new(AtomicBool::new(false));
    let monitor = match listen.metrics {
        None => None,
        Some(addr) => {
            let m = Monitor {
                metrics: Arc::clone(&metrics),
                recent: recent.clone(),
            };
            Some(
                monitor::spawn(addr, m, Arc::clone(&stop_monitor))
                    .map_err(|error| ServeError::MetricsBind(addr, error))?,
            )
        }
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
        signal_hook::flag::register(signal, Arc::clone(flag)).map_err(ServeError::Signals)?;
    }
    let stop_watcher = Arc::new(AtomicBool::new(false));
    let watcher = rules_file.clone().map(|file| {
        reload::watch(
            file,
            Arc::clone(&pipeline),
            Arc::clone(&hup),
            Arc::clone(&stop_watcher),
            log.clone(),
            Arc::clone(&metrics),
        )
    });

    let metrics_note = match &monitor {
        None => String::new(),
        Some(m) if live_view => format!("; metrics and wxmp tail on http://{}", m.addr),
        Some(m) => format!("; metrics on http://{}/metrics", m.addr),
    };
    println!(
        "wxmp {} listening on http://{}{} (safe mode {}, {} rules {}, {} threads + {} for held forwards, {} file descriptors, {} connections){metrics_note}",
        env!("CARGO_PKG_VERSION"),
        server.server_addr(),
        path,
        if safe { "on" } else { "off" },
        rule_count,
        rules_file
            .as_ref()
            .map_or("built in".to_owned(), |p| format!("from {}", p.display())),
        listen.threads,
        pool - listen.threads,
        fd_limit,
        max_connections,
    );
    let _ = io::stdout().flush();

    while !term.load(Ordering::Relaxed) {
        server.poll_timeout(Duration::from_millis(100));
        if rules_file.is_none() && hup.swap(false, Ordering::Relaxed) {
            log.warn("SIGHUP: no rules file to reload; the built-in rules are in use (pass --rules FILE or set WXMP_RULES)");
        }
    }
    log.info("stopping: no new connections; finishing the requests in flight");
    // Closes the listeners and idle connections; a connection inside a request finishes it, and
    // its answer closes it. A live-view reader waiting for news is let go.
    tiny_http::control::shutdown();
    if let Some(r) = &recent {
        r.close();
    }
    {
        let log = log.clone();
        thread::spawn(move || {
            thread::sleep(SHUTDOWN_GRACE);
            log.warn("requests still running after the grace period; exiting anyway");
            std::process::exit(EXIT_UNCLEAN_STOP);
        });
    }
    // poll_timeout returns at least once per timeout even under load (a tiny_http patch), so
    // requests that arrived before the stop are still handed out while the last ones finish.
    while tiny_http::control::open_connections() > 0 {
        server.poll_timeout(Duration::from_millis(20));
    }
    server.join();
    stop_watcher.store(true, Ordering::Relaxed);
    stop_monitor.store(true, Ordering::Relaxed);
    if let Some(m) = monitor {
        m.join();
    }
    if let Some(w) = watcher {
        let _ = w.join();
    }
    log.info("stopped");
    Ok(())
}
