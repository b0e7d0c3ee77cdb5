//! The accounts in force, and their live changes: [`Parts`] builds one account's service from
//! the parts all accounts share (the retry store, the clock, the log, the metrics, the live
//! view), at start and on a reload; [`watch`] follows the accounts file (polled like the rules
//! file, and on SIGHUP) and swaps in a new [`Table`] when it changes. Added accounts start
//! answering; removed ones get 404 for new requests while their pushes in flight finish on the
//! service they started with; changed ones switch over. Unchanged accounts keep their service
//! (their replay memory, their forwards in flight). A bad file keeps the accounts in force.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crate::api::{ApiConfig, Client};
use crate::config::accounts::{self, AccountSpec, ApiShared, EnvVars, Problem};
use crate::config::{AccessOptions, AccountConfig, Forward, Gateway as GatewaySettings};
use crate::log::Log;
use crate::rules::{RuleSet, RulesError, SharedRules};
use crate::server::account::Account;
use crate::server::env::Env;
use crate::server::forward::{self, ApiProxy, Forwarder};
use crate::server::gateway::Listeners;
use crate::server::media::{self, Uploader};
use crate::server::metrics::{ApiWatch, Metrics, Series};
use crate::server::pipeline::{Answer, Pipeline, Plan};
use crate::server::recent::Recent;
use crate::server::redis_token::RedisTokens;
use crate::server::reload::{self, Watch};
use crate::server::replay::Replay;
use crate::server::router::{Router, Table};
use crate::server::routes::Service;
use crate::server::shared::Shared;
use crate::server::store::RetryStore;

const POLL: Duration = Duration::from_millis(250);
/// As for the rules file: a changed accounts file is read once it has kept its modification
/// time and size for two polls, so a half-written file is not taken for a shorter one.
const SETTLE: Duration = Duration::from_millis(500);

/// One account as the server builds it: from the flags or from the accounts file.
pub struct Member {
    pub name: String,
    pub account: AccountConfig,
    pub forward: Forward,
    pub api: Option<ApiConfig>,
    /// Its own API gateway (`api_proxy` in the accounts file).
    pub gateway: Option<GatewaySettings>,
}

impl From<AccountSpec> for Member {
    fn from(spec: AccountSpec) -> Member {
        Member {
            name: spec.name,
            account: spec.account,
            forward: spec.forward,
            api: spec.api,
            gateway: spec.gateway,
        }
    }
}

/// What every account's service shares.
pub struct Parts {
    pub store: Arc<dyn RetryStore<Answer, Plan>>,
    /// The Redis shared with other instances (`--store`): the store above is on it, and the
    /// replay windows keep their seen queries there.
    pub redis: Option<Arc<Shared>>,
    pub env: Arc<dyn Env>,
    pub log: Log,
    pub metrics: Arc<Metrics>,
    pub recent: Option<Arc<Recent>>,
    pub access: AccessOptions,
    pub replay_window: u64,
    pub threads: usize,
    /// Fill the live view's samples (a loopback metrics listener).
    pub samples: bool,
    /// Watch the API client's gauges: only for the one account of the flags.
    pub watch_api: bool,
    /// Where the shared API gateway listens once bound: commands get it as `WXMP_API_PROXY`.
    pub api_proxy: Arc<OnceLock<SocketAddr>>,
}

impl Parts {
    /// The handler threads `m`'s held forwards may take: held attempts are threads blocked on
    /// a condition variable, and hundreds of idle ones cost a server that never forwards
    /// 10-15% of its throughput, so the pool grows for them only when the rules at start
    /// forward (a reload that adds forwarding gets a small reserve).
    pub fn held_threads(m: &Member, rules: &SharedRules) -> usize {
        if rules.current().forwards() {
            m.forward.held_threads()
        } else {
            forward::Settings::RESERVE.min(m.forward.held_threads())
        }
    }

    /// `m`'s service, answering with `rules`.
    pub fn service(&self, m: Member, rules: Arc<SharedRules>, held_threads: usize) -> Arc<Service> {
        let client = client(&m, self.redis.as_ref(), &self.log);
        self.service_with(m, rules, held_threads, client)
    }

    /// [`Parts::service`] with the account's API client made by the caller (who shares it with
    /// the API gateway).
    pub fn service_with(
        &self,
        m: Member,
        rules: Arc<SharedRules>,
        held_threads: usize,
        client: Option<Arc<crate::api::Client>>,
    ) -> Arc<Service> {
        let series = self.metrics.account(&m.name);
        // An account's own gateway, else the shared one (under its name with an accounts file).
        let proxy = match &m.gateway {
            Some(own) => ApiProxy::Own(own.addr),
            None => ApiProxy::Shared {
                addr: Arc::clone(&self.api_proxy),
                prefix: (!m.name.is_empty()).then(|| m.name.clone()),
            },
        };
        let forwarder = self
            .forwarder(&m.forward, client.clone(), held_threads, series)
            .with_api_proxy(proxy);
        let pipeline = Arc::new(
            Pipeline::new(
                Account::sharing(&m.name, m.account, rules),
                Arc::clone(&self.store),
                Arc::clone(&self.env),
            )
            .with_shared(self.redis.clone())
            .with_replay(match &self.redis {
                Some(redis) => Replay::new(self.replay_window).with_shared(Arc::clone(redis)),
                None => Replay::new(self.replay_window),
            })
            .with_log(self.log.clone())
            .with_workers(self.threads)
            .with_forwarder(forwarder)
            .with_samples(self.samples),
        );
        Arc::new(
            Service::new(pipeline, self.log.clone())
                .with_api(client)
                .with_access(self.access)
                .with_metrics(Arc::clone(&self.metrics))
                .with_recent(self.recent.clone()),
        )
    }

    /// An account's forwarder, counting its calls in the account's `series`; with the API
    /// configured, late answers go out as customer-service messages with the account's own
    /// token, and the client's calls are counted too (by account, with an accounts file).
    fn forwarder(
        &self,
        settings: &Forward,
        client: Option<Arc<crate::api::Client>>,
        held_threads: usize,
        series: Arc<Series>,
    ) -> Forwarder {
        let mut forwarder =
            Forwarder::new(settings.clone(), Arc::clone(&self.env), self.log.clone())
                .with_held_threads(held_threads)
                .with_observer({
                    let series = Arc::clone(&series);
                    Arc::new(move |outcome: forward::CallOutcome, took| {
                        series.forward(outcome, took)
                    })
                });
        if let Some(client) = client {
            let (calls, expiry) = (Arc::clone(&client), Arc::clone(&client));
            let calls = move || calls.stats().calls;
            let expires_in = move || {
                expiry.token_expires_at().map(|at| {
                    at.duration_since(SystemTime::now())
                        .map_or(0.0, |d| d.as_secs_f64())
                })
            };
            if self.watch_api {
                self.metrics.watch_api(calls, expires_in);
            } else {
                series.watch_api(ApiWatch::new(calls, expires_in));
            }
            forwarder = forwarder.with_late_sender(client);
        }
        forwarder
    }
}

/// An account's API client, one per account, so one token holder for its late answers, the
/// gateway and the uploads of its rules' files; with `--store`, the token is on the Redis the
/// instances share.
pub fn client(m: &Member, redis: Option<&Arc<Shared>>, log: &Log) -> Option<Arc<Client>> {
    let client = Arc::new(Client::new(m.api.clone()?));
    if let Some(redis) = redis {
        let c = client.config();
        client.share_tokens(Arc::new(RedisTokens::new(
            Arc::clone(redis),
            &c.app_id,
            &c.api_base,
            c.timeout,
            log.clone(),
        )));
    }
    Some(client)
}

/// The rules files in use, each compiled once however many accounts name it, with the
/// watcher that reloads it.
#[derive(Default)]
pub struct RulesFiles {
    files: Vec<Followed>,
    /// Serving an accounts file: SIGHUP reloads it and then every rules file its accounts
    /// name, so accounts on the built-in rules have nothing to say about SIGHUP (and
    /// `--rules`, which the warning suggests, is refused with accounts).
    accounts: bool,
    /// With `--store`, the uploaders share their media_ids there.
    redis: Option<Arc<Shared>>,
}

struct Followed {
    file: Option<PathBuf>,
    rules: Arc<SharedRules>,
    /// Set to stop its watcher (the file is no account's any more, or the server stops).
    stop: Arc<AtomicBool>,
    /// Uploads the files its replies send, with its account's API client.
    uploader: Option<Arc<Uploader>>,
    watcher: Option<thread::JoinHandle<()>>,
}

impl RulesFiles {
    /// The rules files of the accounts in an accounts file (see the `accounts` field).
    pub fn for_accounts() -> RulesFiles {
        RulesFiles {
            accounts: true,
            ..RulesFiles::default()
        }
    }

    /// Uploaders will share their media_ids on `redis` (`--store`).
    pub fn sharing(mut self, redis: Option<Arc<Shared>>) -> RulesFiles {
        self.redis = redis;
        self
    }

    /// The compiled form of `file` (`None`: the built-in rules), loaded now if no account had
    /// it yet. Warnings go to `log`.
    pub fn get(
        &mut self,
        file: &Option<PathBuf>,
        log: &Log,
        client: Option<&Arc<Client>>,
    ) -> Result<Arc<SharedRules>, RulesError> {
        if let Some(f) = self.files.iter().find(|f| f.file == *file) {
            if let (Some(u), Some(path)) = (&f.uploader, file) {
                let same = client.is_some_and(|c| c.config().app_id == u.app_id());
                if !same {
                    u.share_across_app_ids(&f.rules.current(), &path.display().to_string())?;
                }
            }
            return Ok(Arc::clone(&f.rules));
        }
        let set = match file {
            Some(path) => reload::load(path)?,
            None => RuleSet::builtin(),
        };
        for w in set.warnings() {
            log.warn(&format!("rules: {w}"));
        }
        // A rules file named by an account with the API gets an uploader, so a reload may add
        // files; without the API, files are refused now and on every reload.
        let uploader = match (file, client) {
            (Some(_), Some(c)) => {
                let u = Uploader::start(Arc::clone(c), self.redis.clone(), log.clone());
                u.adopt(&set);
                Some(u)
            }
            (Some(path), None) => {
                media::require_api(&set, &path.display().to_string())?;
                None
            }
            (None, _) => None,
        };
        let rules = Arc::new(SharedRules::new(set));
        self.files.push(Followed {
            file: file.clone(),
            rules: Arc::clone(&rules),
            stop: Arc::new(AtomicBool::new(false)),
            watcher: None,
            uploader,
        });
        Ok(rules)
    }

    /// Starts a watcher for each file that has none. With no file at all and no accounts
    /// file, one watcher answers SIGHUP with a warning. Each watcher has its own SIGHUP flag.
    pub fn watch(&mut self, log: &Log, metrics: &Arc<Metrics>) -> std::io::Result<()> {
        let any_file = self.files.iter().any(|f| f.file.is_some());
        let quiet_builtin = any_file || self.accounts;
        for f in &mut self.files {
            if quiet_builtin && f.file.is_none() {
                // The built-in rules' watcher only says that SIGHUP has no file to reload.
                if f.watcher.take().is_some() {
                    f.stop.store(true, Ordering::Relaxed);
                    f.stop = Arc::new(AtomicBool::new(false));
                }
                continue;
            }
            if f.watcher.is_some() {
                continue;
            }
            let hup = Arc::new(AtomicBool::new(false));
            signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))?;
            f.watcher = Some(reload::watch(
                Arc::clone(&f.rules),
                Watch {
                    file: f.file.clone(),
                    hup,
                    stop: Arc::clone(&f.stop),
                    log: log.clone(),
                    metrics: Arc::clone(metrics),
                    media: f.uploader.clone(),
                },
            ));
            if !any_file {
                break;
            }
        }
        Ok(())
    }

    /// Stops the watchers of the files none of `used` names.
    fn keep_only(&mut self, used: &[Option<PathBuf>]) {
        for f in &mut self.files {
            if !used.contains(&f.file) {
                f.stop.store(true, Ordering::Relaxed);
            }
        }
        self.files.retain(|f| used.contains(&f.file));
    }

    /// Stops every watcher and waits for them.
    pub fn stop(&mut self) {
        for f in &self.files {
            f.stop.store(true, Ordering::Relaxed);
        }
        for f in &mut self.files {
            if let Some(w) = f.watcher.take() {
                let _ = w.join();
            }
        }
    }

    /// How many files are in use (the built-in rules count as one).
    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// Reads and checks the accounts file, with the process's files and `env` for its `_env` keys
/// (the server's: the values it read at start, [`accounts::EnvVars`]).
pub fn load_accounts(
    path: &Path,
    api: &ApiShared,
    processes: usize,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<accounts::Accounts, Vec<Problem>> {
    let read = |p: &Path| std::fs::read_to_string(p);
    let mode = file_mode(path);
    accounts::load(
        path,
        &accounts::Context {
            env,
            read: &read,
            api,
            processes,
            mode,
        },
    )
}

#[cfg(unix)]
fn file_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).ok().map(|m| m.permissions().mode())
}

#[cfg(not(unix))]
fn file_mode(_: &Path) -> Option<u32> {
    None
}

/// What the accounts watcher needs.
pub struct Accounts {
    pub file: PathBuf,
    pub api: ApiShared,
    /// The variables the file's `_env` keys named at start, with their values.
    pub vars: EnvVars,
    pub processes: usize,
    pub parts: Parts,
    pub router: Arc<Router>,
    pub rules: Arc<Mutex<RulesFiles>>,
    /// The digest of each account in force, by name.
    pub digests: Vec<(String, u64)>,
    /// The accounts' own API gateways, opened and closed as the file changes.
    pub gateways: Arc<Mutex<Listeners>>,
}

/// The accounts' own API gateways (`api_proxy`), by account.
pub fn own_gateways(specs: &[AccountSpec]) -> Vec<(String, GatewaySettings)> {
    specs
        .iter()
        .filter_map(|a| a.gateway.clone().map(|g| (a.name.clone(), g)))
        .collect()
}

fn sync_gateways(gateways: &Mutex<Listeners>, wanted: &[(String, GatewaySettings)]) {
    gateways
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .sync(wanted);
}

/// Follows the accounts file until `stop` is set, then stops the rules watchers too.
pub fn watch(a: Accounts, hup: Arc<AtomicBool>, stop: Arc<AtomicBool>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut a = a;
        let mut loaded = stamp(&a.file);
        let (mut seen, mut seen_since) = (loaded, Instant::now());
        while !stop.load(Ordering::Relaxed) {
            thread::sleep(POLL);
            let now = stamp(&a.file);
            if now != seen {
                (seen, seen_since) = (now, Instant::now());
            }
            if hup.swap(false, Ordering::Relaxed) {
                loaded = now;
                a.reload("SIGHUP");
            } else if now != loaded && seen_since.elapsed() >= SETTLE {
                loaded = now;
                a.reload("file changed");
            }
        }
        let mut rules = a
            .rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        rules.stop();
    })
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl Accounts {
    /// Loads the file again and swaps in the accounts it describes, or keeps those in force
    /// and says why. One line either way.
    fn reload(&mut self, why: &str) {
        let log = self.parts.log.clone();
        let kept = self.digests.len();
        let fail = |reason: String| {
            log.error(&format!(
                "accounts reload failed ({why}), keeping the {kept} accounts in force: {reason}"
            ));
        };
        let vars = self.vars.clone();
        let env = move |name: &str| vars.get(name);
        let loaded = match load_accounts(&self.file, &self.api, self.processes, &env) {
            Ok(l) => l,
            Err(problems) => {
                let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
                return fail(shown.join("; "));
            }
        };
        let mut rules = match self.rules.lock() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        };
        let current = self.router.current();
        let wanted = own_gateways(&loaded.accounts);
        let (mut added, mut changed) = (Vec::new(), Vec::new());
        let mut services = Vec::with_capacity(loaded.accounts.len());
        let mut digests = Vec::with_capacity(loaded.accounts.len());
        for spec in loaded.accounts {
            let before = self.digests.iter().find(|(n, _)| *n == spec.name);
            let kept_service = match before {
                Some((_, d)) if *d == spec.digest => current
                    .services()
                    .iter()
                    .find(|s| *s.pipeline.account().name == *spec.name)
                    .cloned(),
                _ => None,
            };
            digests.push((spec.name.clone(), spec.digest));
            if let Some(s) = kept_service {
                services.push(s);
                continue;
            }
            match before {
                Some(_) => changed.push(spec.name.clone()),
                None => added.push(spec.name.clone()),
            }
            let m = Member::from(spec);
            let api = client(&m, self.parts.redis.as_ref(), &log);
            let shared = match rules.get(&m.account.rules, &log, api.as_ref()) {
                Ok(r) => r,
                Err(e) => return fail(format!("account {:?}: {e}", m.name)),
            };
            let held = Parts::held_threads(&m, &shared);
            services.push(self.parts.service_with(m, shared, held, api));
        }
        let removed: Vec<String> = self
            .digests
            .iter()
            .filter(|(n, _)| !digests.iter().any(|(m, _)| m == n))
            .map(|(n, _)| n.clone())
            .collect();
        for w in &loaded.warnings {
            log.warn(w);
        }
        let used: Vec<Option<PathBuf>> = services
            .iter()
            .map(|s| s.pipeline.account().rules_file.clone())
            .collect();
        rules.keep_only(&used);
        if let Err(e) = rules.watch(&log, &self.parts.metrics) {
            log.warn(&format!("cannot watch the new rules files for SIGHUP: {e}"));
        }
        drop(rules);
        let n = services.len();
        let fallback = Arc::clone(&services[0]);
        self.router.replace(Table::new(services, fallback));
        // Removed accounts' series leave /metrics; added ones came with their services.
        let names: Vec<&str> = digests.iter().map(|(n, _)| n.as_str()).collect();
        self.parts.metrics.keep_accounts(&names);
        self.digests = digests;
        // The shared gateway follows the table; the accounts' own gateways open and close here.
        sync_gateways(&self.gateways, &wanted);
        log.info(&format!(
            "accounts reloaded ({why}): {n} accounts from {}; {}",
            self.file.display(),
            changes(&added, &removed, &changed)
        ));
    }
}

/// What a reload changed: `added a; removed b; changed c`, or `no change`.
fn changes(added: &[String], removed: &[String], changed: &[String]) -> String {
    let list = |what: &str, names: &[String]| {
        (!names.is_empty()).then(|| format!("{what} {}", names.join(", ")))
    };
    let changes: Vec<String> = [
        list("added", added),
        list("removed", removed),
        list("changed", changed),
    ]
    .into_iter()
    .flatten()
    .collect();
    if changes.is_empty() {
        "no change".to_owned()
    } else {
        changes.join("; ")
    }
}
