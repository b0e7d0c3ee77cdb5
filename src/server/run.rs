//! The composition root: [`build`] wires the server's parts from a [`Config`] without touching
//! the network, and [`Server::run`] owns the process's life: the descriptor limit, binding,
//! signals, the rules watcher, the poll loop and the grace period of a stop.

use std::fmt;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::accounts::{ApiShared, EnvVars, Problem};
use crate::config::{default_max_connections, Accounts as ConfigAccounts, Config, Listen};
use crate::log::Log;
use crate::rules::RulesError;
use crate::server::announce;
use crate::server::env::{Env, SystemEnv};
use crate::server::forward;
use crate::server::gateway::{self, Gateway, Listeners, Scope};
use crate::server::http_log;
use crate::server::listener;
use crate::server::live::{self, load_accounts, Member, Parts, RulesFiles};
use crate::server::metrics::Metrics;
use crate::server::monitor::{self, Monitor};
use crate::server::pipeline::{Answer, Pipeline, Plan};
use crate::server::recent::Recent;
use crate::server::redis_store::RedisStore;
use crate::server::router::{Router, Table};
use crate::server::routes;
use crate::server::shared::Shared;
use crate::server::store::{MemoryStore, RetryStore};

/// How long a stop may take before the process exits anyway (Docker kills after 10 s).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);
/// How long the last lines may take to reach stderr when the process exits on an error or after
/// the grace period: a stderr nobody reads must not hold the exit up.
pub const EXIT_FLUSH: Duration = Duration::from_millis(500);
/// Exit code of a stop that had to abandon requests still running after [`SHUTDOWN_GRACE`].
const EXIT_UNCLEAN_STOP: i32 = 1;

/// A server, wired and not yet listening.
pub struct Server {
    /// Where and how to listen.
    pub listen: Listen,
    /// Which account's service answers a path: each runs routing, the access log, the
    /// metrics and the live view for its account.
    pub router: Arc<Router>,
    pub metrics: Arc<Metrics>,
    /// The live view's buffer; only behind a loopback metrics listener, because it shows
    /// message content.
    pub recent: Option<Arc<Recent>>,
    /// Handler threads: `listen.threads` for the server's own work plus room for the attempts
    /// that forwarding holds open (each waits on a condition variable, a few KiB of stack), so
    /// a slow endpoint can never take the threads that static rules, the URL check and
    /// /healthz need.
    pub pool: usize,
    /// Each rules file in use, once however many accounts share it, with its watcher.
    rules: Arc<Mutex<RulesFiles>>,
    /// With an accounts file: what its watcher needs (the banner names the file).
    accounts: Option<live::Accounts>,
    /// The API gateway (`--api-proxy`), sharing the account's API client (its one token holder)
    /// with the forwarder.
    pub gateway: Option<Arc<Gateway>>,
    /// Where the gateway listens once bound, for the commands' `WXMP_API_PROXY`.
    api_proxy: Arc<OnceLock<SocketAddr>>,
    /// The accounts' own gateways (`api_proxy` in the accounts file).
    listeners: Arc<Mutex<Listeners>>,
    log: Log,
}

/// Why the server could not start (`MetricsBind`: the `--metrics-addr` listener's address).
#[derive(Debug)]
pub enum ServeError {
    Bind {
        addr: String,
        error: io::Error,
    },
    BindOther {
        addr: String,
        error: String,
    },
    MetricsBind(SocketAddr, io::Error),
    GatewayBind(SocketAddr, io::Error),
    /// An account's own gateway (`api_proxy` in the accounts file): the account, the address.
    AccountGatewayBind(String, SocketAddr, io::Error),
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
            ServeError::MetricsBind(addr, error) => write!(
                f,
                "cannot listen for metrics on {addr}: {}; check --metrics-addr / WXMP_METRICS_ADDR (e.g. 127.0.0.1:9100)",
                listener::why(error)
            ),
            ServeError::GatewayBind(addr, error) => write!(
                f,
                "cannot listen for the API gateway on {addr}: {}; check --api-proxy / WXMP_API_PROXY (e.g. 127.0.0.1:9200)",
                listener::why(error)
            ),
            ServeError::AccountGatewayBind(name, addr, error) => write!(
                f,
                "cannot listen for account {name:?}'s API gateway on {addr}: {}; check its api_proxy in the accounts file",
                listener::why(error)
            ),
            ServeError::Signals(e) => write!(f, "cannot install signal handler: {e}"),
        }
    }
}

impl std::error::Error for ServeError {}

/// Why the server could not be built: a rules file or the accounts file is wrong.
#[derive(Debug)]
pub enum BuildError {
    Rules(RulesError),
    /// Every problem of the accounts file, each with its line.
    Accounts(Vec<Problem>),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Rules(e) => e.fmt(f),
            BuildError::Accounts(problems) => {
                let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
                f.write_str(&shown.join("\nwxmp: "))
            }
        }
    }
}

impl std::error::Error for BuildError {}

impl From<RulesError> for BuildError {
    fn from(e: RulesError) -> Self {
        BuildError::Rules(e)
    }
}

/// Most handler threads kept for held forwards, however many accounts forward: past it, a
/// push whose attempt cannot be held gets its fallback.
const MAX_HELD_THREADS: usize = 4096;

/// Wires the parts `config` describes: loads the accounts and their rules, builds each
/// account's forwarder, API client, pipeline and service around one retry store, the metrics
/// and the router, and logs the configuration's warnings. Binds nothing, so it can be tested.
pub fn build(config: Config, log: Log) -> Result<Server, BuildError> {
    for w in &config.warnings {
        log.warn(w);
    }
    let (members, accounts_file) = members(&config, &log)?;
    let metrics = new_metrics(&log);
    // Before the API clients: with `--store`, their tokens and media_ids are on it.
    let (store, redis) = open_store(&config, &log, &metrics);
    // Accounts naming the same rules file share its compiled form (and one watcher).
    let mut rules = match accounts_file {
        Some(_) => RulesFiles::for_accounts(),
        None => RulesFiles::default(),
    }
    .sharing(redis.clone());
    let mut shared = Vec::with_capacity(members.len());
    for (m, _) in &members {
        let api = live::client(m, redis.as_ref(), &log);
        shared.push((rules.get(&m.account.rules, &log, api.as_ref())?, api));
    }
    let env: Arc<dyn Env> = Arc::new(SystemEnv);
    // The live view shows message content, so it exists only behind a loopback listener.
    let live_view = config.listen.metrics.is_some_and(|a| a.ip().is_loopback());
    let recent = live_view.then(|| {
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Arc::new(Recent::new(epoch))
    });
    let parts = Parts {
        store,
        redis,
        env,
        log: log.clone(),
        metrics: Arc::clone(&metrics),
        recent: recent.clone(),
        access: config.access,
        replay_window: config.replay_window,
        threads: config.listen.threads,
        samples: live_view,
        watch_api: members.len() == 1 && accounts_file.is_none(),
        api_proxy: Arc::new(OnceLock::new()),
    };
    let api_proxy = Arc::clone(&parts.api_proxy);
    // Without an accounts file the gateway shares the one account's client (one token holder).
    let one_client = shared
        .first()
        .and_then(|(_, c)| c.clone())
        .filter(|_| accounts_file.is_none());
    let wanted = wanted_gateways(members.iter().map(|(m, _)| m));
    let digests = members.iter().map(|(m, d)| (m.name.clone(), *d)).collect();
    // The threads for held forwards: each forwarding account's own, and one small reserve
    // that the accounts whose rules do not forward (yet) share, so that a thousand idle
    // accounts do not cost a thousand reserves of threads.
    let (mut forwarding, mut reserve) = (0usize, 0usize);
    let mut services = Vec::with_capacity(members.len());
    for ((m, _), (rules, client)) in members.into_iter().zip(shared) {
        let held = Parts::held_threads(&m, &rules);
        if rules.current().forwards() {
            forwarding = forwarding.saturating_add(held);
        } else {
            reserve = reserve.max(held);
        }
        services.push(parts.service_with(m, rules, held, client));
    }
    let held_total = forwarding.saturating_add(reserve);
    let fallback = Arc::clone(&services[0]);
    let router = Arc::new(Router::new(Table::new(services, fallback)));
    watch_router(&metrics, &router);
    let (gateway, listeners) = gateways(&config, &parts, one_client, &router, wanted);
    let rules = Arc::new(Mutex::new(rules));
    let accounts = accounts_file.map(|(file, api, vars)| live::Accounts {
        file,
        api,
        vars,
        processes: config.forward.processes,
        parts,
        router: Arc::clone(&router),
        rules: Arc::clone(&rules),
        digests,
        gateways: Arc::clone(&listeners),
    });
    Ok(Server {
        pool: config.listen.threads + held_total.min(MAX_HELD_THREADS),
        listen: config.listen,
        router,
        metrics,
        recent,
        rules,
        accounts,
        gateway,
        api_proxy,
        listeners,
        log,
    })
}

/// The shared API gateway (`--api-proxy`), of the one account's client without an accounts
/// file, else of every account's by the path's prefix, looked up in the router; and the
/// accounts' own gateways, not yet listening.
fn gateways(
    config: &Config,
    parts: &Parts,
    one_client: Option<Arc<crate::api::Client>>,
    router: &Arc<Router>,
    wanted: Vec<(String, crate::config::Gateway)>,
) -> (Option<Arc<Gateway>>, Arc<Mutex<Listeners>>) {
    // Config refuses the gateway without the API when there is no accounts file.
    let scope = match one_client {
        Some(client) => Scope::One(client),
        None => Scope::Prefixed(Arc::clone(router)),
    };
    let gateway = config.gateway.clone().map(|settings| {
        Arc::new(Gateway::new(
            scope,
            settings,
            parts.log.clone(),
            parts.access,
            Arc::clone(&parts.metrics),
        ))
    });
    let listeners = Arc::new(Mutex::new(Listeners::new(
        Arc::clone(router),
        parts.log.clone(),
        parts.access,
        Arc::clone(&parts.metrics),
        wanted,
    )));
    (gateway, listeners)
}

/// The accounts' own gateways (`api_proxy` in the accounts file), by account.
pub fn wanted_gateways<'a>(
    members: impl Iterator<Item = &'a Member>,
) -> Vec<(String, crate::config::Gateway)> {
    members
        .filter_map(|m| m.gateway.clone().map(|g| (m.name.clone(), g)))
        .collect()
}

/// The lock's value, poisoned or not (its holders only swap whole values).
/// The accounts to serve, each with its digest (to tell a changed account on reload), and
/// the accounts file with its shared API settings, when there is one.
#[allow(clippy::type_complexity)] // read once, by `build`
fn members(
    config: &Config,
    log: &Log,
) -> Result<(Vec<(Member, u64)>, Option<(PathBuf, ApiShared, EnvVars)>), BuildError> {
    let found = match &config.accounts {
        ConfigAccounts::One(account) => (
            vec![(
                Member {
                    name: String::new(),
                    account: account.clone(),
                    forward: config.forward.clone(),
                    api: config.api.clone(),
                    gateway: None,
                },
                0,
            )],
            None,
        ),
        ConfigAccounts::File { path, api, vars } => {
            let env = |name: &str| vars.get(name);
            let loaded = load_accounts(path, api, config.forward.processes, &env)
                .map_err(BuildError::Accounts)?;
            for w in &loaded.warnings {
                log.warn(w);
            }
            let members = loaded
                .accounts
                .into_iter()
                .map(|spec| {
                    let digest = spec.digest;
                    (Member::from(spec), digest)
                })
                .collect();
            (members, Some((path.clone(), api.clone(), vars.clone())))
        }
    };
    Ok(found)
}

/// The process's metrics, counting the log's dropped lines.
fn new_metrics(log: &Log) -> Arc<Metrics> {
    let metrics = Arc::new(Metrics::new());
    let log = log.clone();
    metrics.watch_log(move || log.dropped());
    metrics
}

/// The retry store: in memory, or on the Redis shared with other instances (`--store`),
/// which falls back to memory by itself while Redis is away.
fn open_store(
    config: &Config,
    log: &Log,
    metrics: &Metrics,
) -> (Arc<dyn RetryStore<Answer, Plan>>, Option<Arc<Shared>>) {
    // The Redis shared with other instances (`--store`); an unreachable one is a warning.
    let redis = match &config.store.url {
        None => None,
        Some(url) => match Shared::open(&config.store, url, config.listen.threads, log.clone()) {
            Ok(s) => Some(s),
            // The URL was checked with the configuration; a failure here is one to report.
            Err(e) => {
                log.error(&format!("store: {e}"));
                None
            }
        },
    };
    // One retry store for all accounts, under one budget; its keys carry the account.
    let store: Arc<dyn RetryStore<Answer, Plan>> = match &redis {
        None => Arc::new(MemoryStore::<Answer, Plan>::new(config.cache)),
        Some(redis) => {
            let (a, b) = (Arc::clone(redis), Arc::clone(redis));
            metrics.watch_shared(move || a.failures(), move || b.degraded());
            Arc::new(RedisStore::<Answer, Plan>::new(
                Arc::clone(redis),
                config.cache,
            ))
        }
    };
    {
        let store = Arc::clone(&store);
        metrics.watch_store(move || store.usage(), config.cache);
    }
    (store, redis)
}

/// The gauges summed over every account's pipeline, read through the router, so they follow
/// accounts as they are added and removed.
fn watch_router(metrics: &Metrics, router: &Arc<Router>) {
    {
        let (a, b) = (Arc::clone(router), Arc::clone(router));
        metrics.watch_replay(
            move || sum(&a, |p| p.replay().len()),
            move || sum(&b, |p| p.replay().evictions() as usize) as u64,
        );
    }
    {
        let (a, b) = (Arc::clone(router), Arc::clone(router));
        metrics.watch_forwarding(
            move || sum(&a, |p| p.forwarder().in_flight()),
            move || sum(&b, |p| p.forwarder().held()),
        );
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `of` summed over the accounts in force.
fn sum(router: &Router, of: impl Fn(&Pipeline) -> usize) -> usize {
    router
        .current()
        .services()
        .iter()
        .map(|s| of(&s.pipeline))
        .fold(0, usize::saturating_add)
}

/// Hands the request to the service of the account whose path it names (any other path to the
/// fallback, which answers `/`, `/healthz` and 404).
pub fn route(router: &Router, req: &rouille::Request) -> rouille::Response {
    let table = router.current();
    let raw_url = req.raw_url();
    let path = raw_url.split_once('?').map_or(raw_url, |(p, _)| p);
    routes::handle(table.service(path), req)
}

/// The flags the signal handlers set. SIGHUP means one thing, "read the files again": without
/// an accounts file the rules file's watcher takes it (or says there is no file); with one,
/// the accounts watcher reloads the accounts file and each rules watcher its file.
struct Signals {
    /// SIGTERM or SIGINT: stop.
    term: Arc<AtomicBool>,
    /// SIGHUP, for the accounts watcher; `None` without an accounts file, where the rules
    /// watcher has the signal's only flag.
    hup: Option<Arc<AtomicBool>>,
}

impl Signals {
    fn install(accounts: bool) -> Result<Signals, ServeError> {
        let term = Arc::new(AtomicBool::new(false));
        for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            // A second Ctrl-C while stopping exits at once.
            let _ =
                signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&term));
            signal_hook::flag::register(signal, Arc::clone(&term)).map_err(ServeError::Signals)?;
        }
        let hup = match accounts {
            false => None,
            true => {
                let hup = Arc::new(AtomicBool::new(false));
                signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))
                    .map_err(ServeError::Signals)?;
                Some(hup)
            }
        };
        Ok(Signals { term, hup })
    }
}

/// What the start-up line reports besides the configuration.
struct Started {
    addr: SocketAddr,
    metrics: Option<SocketAddr>,
    gateway: Option<SocketAddr>,
    fd_limit: u64,
    max_connections: usize,
}

impl Server {
    /// Raises the open-files limit and sets the connection cap from it.
    fn limits(&self) -> (u64, usize) {
        // Each keep-alive connection holds a few descriptors; the usual soft limit of 1024
        // would refuse connections long before 1000 clients. Raise it to the hard limit, as Go
        // does.
        let fd_limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
        // Past the cap new connections get a 503, so a flood of connections makes the server
        // busy instead of exhausting descriptors or threads. tiny_http reads it when rouille
        // builds it.
        let max_connections = self
            .listen
            .max_connections
            .unwrap_or_else(|| default_max_connections(if fd_limit > 0 { fd_limit } else { 1024 }));
        tiny_http::control::set_max_connections(max_connections);
        (fd_limit, max_connections)
    }

    /// The metrics listener and the API gateway, each when configured.
    fn spawn_listeners(
        &self,
        stop: &Arc<AtomicBool>,
    ) -> Result<(Option<listener::Running>, Option<listener::Running>), ServeError> {
        let monitor = match self.listen.metrics {
            None => None,
            Some(addr) => {
                let m = Monitor {
                    metrics: Arc::clone(&self.metrics),
                    recent: self.recent.clone(),
                    log: self.log.clone(),
                };
                Some(
                    monitor::spawn(addr, m, Arc::clone(stop))
                        .map_err(|error| ServeError::MetricsBind(addr, error))?,
                )
            }
        };
        let gateway = match &self.gateway {
            None => None,
            Some(g) => {
                let addr = g.settings().addr;
                let running = gateway::spawn(Arc::clone(g), Arc::clone(stop))
                    .map_err(|error| ServeError::GatewayBind(addr, error))?;
                let _ = self.api_proxy.set(running.addr);
                Some(running)
            }
        };
        lock(&self.listeners)
            .open()
            .map_err(|(name, addr, error)| ServeError::AccountGatewayBind(name, addr, error))?;
        Ok((monitor, gateway))
    }

    /// Serves until SIGTERM or Ctrl-C, then finishes the requests in flight.
    pub fn run(mut self) -> Result<(), ServeError> {
        let (fd_limit, max_connections) = self.limits();
        http_log::install(self.log.clone());
        let server = self.bind()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (monitor, gateway) = self.spawn_listeners(&stop)?;
        let signals = Signals::install(self.accounts.is_some())?;
        // One watcher per rules file, whichever accounts share it, each with its own SIGHUP
        // flag; with an accounts file, one more for it.
        lock(&self.rules)
            .watch(&self.log, &self.metrics)
            .map_err(ServeError::Signals)?;
        let started = Started {
            addr: server.server_addr(),
            metrics: monitor.as_ref().map(|m| m.addr),
            gateway: gateway.as_ref().map(|g| g.addr),
            fd_limit,
            max_connections,
        };
        // The banner names the accounts file, so it is written before its watcher takes it.
        println!("{}", self.banner(&started));
        let accounts = match (self.accounts.take(), &signals.hup) {
            (Some(a), Some(hup)) => Some(live::watch(a, Arc::clone(hup), Arc::clone(&stop))),
            _ => None,
        };
        println!(
            "{}",
            announce::listening_line(started.addr, started.metrics, started.gateway)
        );
        let _ = io::stdout().flush();
        while !signals.term.load(Ordering::Relaxed) {
            server.poll_timeout(Duration::from_millis(100));
        }
        let stopping = Instant::now();
        self.stop(server);
        stop.store(true, Ordering::Relaxed);
        if let Some(m) = monitor {
            m.join();
        }
        if let Some(g) = gateway {
            g.join();
        }
        match accounts {
            // It stops the rules watchers when it stops.
            Some(watcher) => {
                let _ = watcher.join();
            }
            None => lock(&self.rules).stop(),
        }
        // After the accounts watcher, which opens and closes them.
        lock(&self.listeners).stop();
        self.log.info("stopped");
        // What is queued is written within the grace period; a stderr nobody reads keeps the
        // rest.
        self.log.flush(
            SHUTDOWN_GRACE
                .saturating_sub(EXIT_FLUSH)
                .saturating_sub(stopping.elapsed()),
        );
        Ok(())
    }

    /// The public listener, handing each request to the service on a pool of `self.pool`.
    fn bind(
        &self,
    ) -> Result<
        rouille::Server<impl Fn(&rouille::Request) -> rouille::Response + Send + Sync + 'static>,
        ServeError,
    > {
        let router = Arc::clone(&self.router);
        let handler = move |req: &rouille::Request| route(&router, req);
        let (host, port) = (self.listen.host.as_str(), self.listen.port);
        let addr = format!("{host}:{port}");
        match rouille::Server::new((host, port), handler) {
            Ok(s) => Ok(s.pool_size(self.pool)),
            Err(e) => Err(match e.downcast::<io::Error>() {
                Ok(error) => ServeError::Bind {
                    addr,
                    error: *error,
                },
                Err(other) => ServeError::BindOther {
                    addr,
                    error: other.to_string(),
                },
            }),
        }
    }

    /// The one line printed at start: never the token or the key.
    fn banner(&self, started: &Started) -> String {
        let table = self.router.current();
        let metrics_note = match started.metrics {
            None => String::new(),
            Some(addr) if self.recent.is_some() => {
                format!("; metrics and wxmp tail on http://{addr}")
            }
            Some(addr) => format!("; metrics on http://{addr}/metrics"),
        };
        let metrics_note = match started.gateway {
            None => metrics_note,
            Some(a) => format!("{metrics_note}; API gateway on http://{a}"),
        };
        let sizes = format!(
            "{} threads + {} for held forwards, {} file descriptors, {} connections",
            self.listen.threads,
            self.pool - self.listen.threads,
            started.fd_limit,
            started.max_connections,
        );
        if let Some(file) = self.accounts.as_ref().map(|a| &a.file) {
            let n = table.services().len();
            return format!(
                "wxmp {} listening on http://{} for {n} account{} from {} ({sizes}){metrics_note}",
                env!("CARGO_PKG_VERSION"),
                started.addr,
                if n == 1 { "" } else { "s" },
                file.display(),
            );
        }
        let account = table.fallback().pipeline.account();
        format!(
            "wxmp {} listening on http://{}{} (safe mode {}, {} rules {}, {sizes}){metrics_note}",
            env!("CARGO_PKG_VERSION"),
            started.addr,
            account.path,
            if account.safe.is_some() { "on" } else { "off" },
            account.rules.current().rules().len(),
            account
                .rules_file
                .as_ref()
                .map_or("built in".to_owned(), |p| format!("from {}", p.display())),
        )
    }

    /// Stops taking connections and finishes the requests in flight, exiting the process if
    /// they outlast the grace period.
    fn stop<H>(&self, server: rouille::Server<H>)
    where
        H: Fn(&rouille::Request) -> rouille::Response + Send + Sync + 'static,
    {
        self.log
            .info("stopping: no new connections; finishing the requests in flight");
        // Programs run by `reply.command` live in their own process groups, so they would
        // outlive the server: stop them (their pushes answer the fallback) and start no more.
        forward::command::stop_all();
        // Closes the listeners and idle connections; a connection inside a request finishes
        // it, and its answer closes it. A live-view reader waiting for news is let go.
        tiny_http::control::shutdown();
        if let Some(r) = &self.recent {
            r.close();
        }
        let began = std::time::Instant::now();
        let overdue = {
            let log = self.log.clone();
            move || {
                log.warn("requests still running after the grace period; exiting anyway");
                log.flush(EXIT_FLUSH);
                std::process::exit(EXIT_UNCLEAN_STOP);
            }
        };
        // The watchdog covers a stop that hangs anywhere; at a thread limit it cannot start,
        // and the loop below keeps the deadline alone (a stop must not panic).
        let watchdog = {
            let overdue = overdue.clone();
            thread::Builder::new()
                .name("wxmp-stop".into())
                .spawn(move || {
                    thread::sleep(SHUTDOWN_GRACE);
                    overdue();
                })
        };
        if let Err(e) = &watchdog {
            self.log
                .warn(&format!("stopping: cannot start the watchdog thread ({e})"));
        }
        // poll_timeout returns at least once per timeout even under load (a tiny_http patch),
        // so requests that arrived before the stop are still handed out while the last ones
        // finish.
        while tiny_http::control::open_connections() > 0 {
            server.poll_timeout(Duration::from_millis(20));
            if began.elapsed() >= SHUTDOWN_GRACE {
                overdue();
            }
        }
        server.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Capture;

    fn config(args: &[&str]) -> Config {
        Config::from_args(args.iter().copied(), &|_| None).unwrap()
    }

    fn fake(method: &str, url: &str) -> rouille::Request {
        rouille::Request::fake_http(method, url, vec![], vec![])
    }

    #[test]
    fn a_server_is_built_from_a_config_without_binding_a_port() {
        let capture = Arc::new(Capture::default());
        let log = Log::to(capture.clone());
        // Port 1 would need root to bind: building must not try.
        let server = build(
            config(&[
                "--token",
                "tok123",
                "--port",
                "1",
                "--path",
                "/wx",
                "--threads",
                "3",
                "--appid",
                "wx1",
            ]),
            log,
        )
        .unwrap();
        assert_eq!(server.listen.port, 1);
        assert_eq!(server.pool, 3 + forward::Settings::RESERVE);
        assert!(server.recent.is_none(), "no metrics listener, no live view");
        let service = Arc::clone(server.router.current().fallback());
        assert_eq!(service.pipeline.account().path, "/wx");
        // The configuration's warnings are logged once, at build.
        assert!(
            capture
                .lines()
                .iter()
                .any(|l| l.contains("--appid / WXMP_APPID is set without")),
            "{:?}",
            capture.lines()
        );
        // It answers through the service, with no socket in between.
        let health = route(&server.router, &fake("GET", "/healthz"));
        assert_eq!(health.status_code, 200);
        let echo = route(&server.router, &fake("GET", "/wx?echostr=x"));
        assert_eq!(echo.status_code, 403, "an unsigned URL check is refused");
    }

    #[test]
    fn a_broken_rules_file_fails_the_build_and_a_loopback_listener_gets_the_live_view() {
        let dir = std::env::temp_dir().join(format!("wxmp-build-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "[[rule]]\nkeyword = \"x\"\nreply.txt = \"y\"\n").unwrap();
        let bad = bad.display().to_string();
        let log = Log::to(Arc::new(Capture::default()));
        let e = build(config(&["--token", "tok123", "--rules", &bad]), log.clone())
            .err()
            .expect("a broken rules file is refused");
        assert!(e.to_string().contains("bad.toml"), "{e}");
        let server = build(
            config(&["--token", "tok123", "--metrics-addr", "127.0.0.1:1"]),
            log,
        )
        .unwrap();
        assert!(server.recent.is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
