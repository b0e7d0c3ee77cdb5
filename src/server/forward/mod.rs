//! Forwarding: the user's own code answers a push (`reply.forward` / `reply.command`), and
//! WeChat's 5-second deadline is wxmp's problem, not theirs.
//!
//! One call per push, whatever WeChat's retries do: the first attempt hands its retry-store
//! ticket to a thread of the call [`pool`] that makes the call; every attempt, the first included, waits on
//! the store for the answer until its own deadline (see [`timing`]). Under `stretch`, while the
//! endpoint has been answering fast, the first attempt makes the call on its own thread instead
//! (see `Speed`). What happens when the answer is late is the [`Late`] strategy:
//!
//! - `stretch`: the first and second attempts are held unanswered until WeChat drops them; the
//!   retry joins the same call, and whichever attempt is open when the answer comes delivers it.
//!   The last attempt answers the fallback a margin before its 5 s. About 14 s instead of 5.
//! - `kf`: the first attempt answers the fallback a margin before its 5 s; the answer, when it
//!   comes, goes out through the customer-service API ([`LateSender`]).
//!
//! Capacity is bounded: past `capacity` calls in flight (or `processes` commands running), a
//! push gets its fallback at once rather than queueing past its deadline. Under `stretch` a push
//! whose last attempt answered the fallback stops counting at once, although its HTTP call runs
//! on to its cutoff (a blocking read cannot be cut short): otherwise each push would keep its
//! slot for up to a second after WeChat gave up on it, and a steady 200 held pushes would not
//! fit in 200.

pub mod command;
pub mod http;
pub mod pool;
pub mod timing;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::log::Log;
use crate::protocol::json;
use crate::protocol::reply::{Answering, Reply};
use crate::rules::Target;
use crate::server::env::Env;
use crate::server::store::{Answer, Ticket, Waiter};
use crate::text::redact_url;
use timing::{ATTEMPTS, MARGIN, SLACK, STRETCH_LIMIT, WECHAT_WAIT};

/// The strategy for late answers and the limits are configuration (`--late`, `--forward-*`).
pub use crate::config::{
    Forward as Settings, Late, DEFAULT_CAPACITY, DEFAULT_KF_WAIT, DEFAULT_PROCESSES,
};

/// Where an account's commands find the API gateway (`WXMP_API_PROXY`).
#[derive(Debug, Clone, Default)]
pub enum ApiProxy {
    /// No gateway serves the account.
    #[default]
    None,
    /// The shared gateway (`--api-proxy`), once it listens; with an accounts file the account's
    /// name is its path prefix.
    Shared {
        addr: Arc<OnceLock<SocketAddr>>,
        prefix: Option<String>,
    },
    /// The account's own gateway (`api_proxy` in the accounts file).
    Own(SocketAddr),
}

impl ApiProxy {
    /// `http://ADDR`, or `http://ADDR/NAME` on the shared gateway of many accounts.
    pub fn url(&self) -> Option<String> {
        match self {
            ApiProxy::None => None,
            ApiProxy::Shared { addr, prefix } => addr.get().map(|a| match prefix {
                Some(name) => format!("http://{a}/{name}"),
                None => format!("http://{a}"),
            }),
            ApiProxy::Own(a) => Some(format!("http://{a}")),
        }
    }
}

/// Sends a late answer through WeChat's customer-service API (`kf`).
pub trait LateSender: Send + Sync {
    /// Sends `reply` to the user `openid`; the error is a sentence that says what to do.
    fn send(&self, openid: &str, reply: &Reply) -> Result<(), String>;
}

/// The API client sends late answers as customer-service messages (`message/custom/send`).
impl LateSender for crate::api::Client {
    fn send(&self, openid: &str, reply: &Reply) -> Result<(), String> {
        match crate::api::kf::Message::from_reply(reply) {
            // success and transfer_customer_service have no customer-service form.
            None => Ok(()),
            Some(msg) => self.send_custom(openid, &msg).map_err(|e| e.to_string()),
        }
    }
}

/// Why a call to the user's code gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// No answer before the push's deadline.
    Timeout,
    /// The endpoint could not be reached (refused, unknown host, reset).
    Unreachable(String),
    /// The endpoint answered with a status other than 200.
    Status(u16),
    /// The answer is larger than a passive reply can be.
    TooLarge,
    /// Reading the answer failed.
    Io(String),
    /// The program could not be started.
    Spawn(String),
    /// The program exited with a failure status (`None`: killed by a signal).
    Exit(Option<i32>),
    /// No attempt could use the answer any more; the program was stopped.
    Cancelled,
    /// The server is stopping (SIGTERM): the program was stopped, or not started.
    Stopping,
    /// The answer is not a passive reply WeChat would accept.
    Reply(json::JsonReplyError),
    /// Too many calls or commands in flight.
    Busy(&'static str),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Timeout => f.write_str("no answer before the push's deadline"),
            CallError::Unreachable(why) => write!(f, "cannot reach it: {why}"),
            CallError::Status(s) => write!(f, "it answered HTTP {s} (expected 200)"),
            CallError::TooLarge => write!(f, "its answer is over {} bytes", http::MAX_ANSWER),
            CallError::Io(why) => write!(f, "reading its answer failed: {why}"),
            CallError::Spawn(why) => write!(f, "cannot start it: {why}"),
            CallError::Exit(Some(code)) => write!(f, "it exited with status {code}"),
            CallError::Exit(None) => f.write_str("it was killed by a signal"),
            CallError::Stopping => f.write_str("stopped: the server is shutting down"),
            CallError::Cancelled => {
                f.write_str("stopped: no attempt could use its answer any more")
            }
            CallError::Reply(e) => e.fmt(f),
            CallError::Busy(what) => write!(f, "{what} (answered with the fallback at once)"),
        }
    }
}

/// How a forward call ended, as counted in the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// Answered within the first attempt's 5 s.
    OnTime,
    /// Answered later, on a retry WeChat held open (`stretch`).
    LateStretched,
    /// Answered later and sent as a customer-service message (`kf`).
    LateKf,
    /// The fallback stood: the answer came after the last chance, or there was no capacity.
    Fallback,
    /// The call failed or its answer was refused; the fallback was answered.
    Error,
}

impl CallOutcome {
    pub const ALL: [CallOutcome; 5] = [
        CallOutcome::OnTime,
        CallOutcome::LateStretched,
        CallOutcome::LateKf,
        CallOutcome::Fallback,
        CallOutcome::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::OnTime => "on_time",
            CallOutcome::LateStretched => "late_stretched",
            CallOutcome::LateKf => "late_kf",
            CallOutcome::Fallback => "fallback",
            CallOutcome::Error => "error",
        }
    }
}

/// What one of WeChat's attempts delivered for a forwarded push, for the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// The user's code's answer.
    Answer,
    /// The fallback, which settles the push (the last chance, a failed call, no capacity).
    Fallback,
    /// Nothing WeChat read: held until WeChat dropped it; a later attempt carries the push.
    Held,
}

impl Delivered {
    /// What a settled answer is: the rule's fallback (the very body every attempt of this push
    /// holds: the job's, and the plan a retry joins with), or the user's code's (rendered anew).
    fn of(answer: &Answer, fallback: &Arc<str>) -> Delivered {
        if Arc::ptr_eq(&answer.body, fallback) {
            Delivered::Fallback
        } else {
            Delivered::Answer
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Delivered::Answer => "answer",
            Delivered::Fallback => "fallback",
            Delivered::Held => "held",
        }
    }
}

/// A forwarded push, as one attempt saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// 1 for WeChat's first try, 2 and 3 for its retries.
    pub number: u32,
    pub delivered: Delivered,
}

/// A push to forward: everything the worker needs, owned.
pub struct Job {
    pub target: Target,
    /// The push as Cloud Hosting's JSON.
    pub body: Vec<u8>,
    /// The user's OpenID, for a late customer-service message.
    pub openid: String,
    pub answering: Answering,
    /// Renders (and in safe mode seals) a reply to this push.
    pub render: Box<dyn Fn(&Reply) -> Answer + Send>,
    /// The push's fallback, rendered.
    pub fallback: Answer,
    /// When the first attempt arrived.
    pub arrived: Instant,
}

/// Told how each call ended and how long it took (the metrics).
pub type Observer = Arc<dyn Fn(CallOutcome, Duration) + Send + Sync>;

/// Runs forward calls with bounded capacity and holds WeChat's attempts to their deadlines.
pub struct Forwarder {
    settings: Settings,
    agent: ureq::Agent,
    late_sender: Option<Arc<dyn LateSender>>,
    observer: Option<Observer>,
    env: Arc<dyn Env>,
    log: Log,
    /// Calls in flight, attempts held, commands running: bounded counts.
    in_flight: Arc<AtomicUsize>,
    held: Arc<AtomicUsize>,
    processes: Arc<AtomicUsize>,
    /// Under `stretch`, the capacity slots of calls in flight, by push: the last attempt gives
    /// its push's slot back when it answers the fallback, or the call when it ends.
    slots: Slots,
    /// Handler threads kept for held attempts: what the pool was sized with at start.
    held_cap: usize,
    /// The pool was sized without forwarding in mind, and a forward came: said once.
    warned_small_pool: AtomicBool,
    /// Where the account's API gateway is: commands get it as `WXMP_API_PROXY`.
    api_proxy: ApiProxy,
    /// The threads that make the calls, reused from call to call.
    calls: pool::Pool,
    /// Whether the endpoint has been answering fast enough for a first attempt to make the
    /// call on its own thread.
    speed: Arc<Speed>,
}

/// A call that ends within this is fast: the first attempt may make the next ones itself.
const FAST: Duration = Duration::from_secs(1);
/// After a call slower than [`FAST`], calls go to the call threads for this long.
const SLOW_FOR: Duration = Duration::from_secs(60);

/// How the user's endpoint has been answering. Under `stretch` the first attempt may make the
/// call on its own handler thread instead of handing it to a call thread and waiting to be
/// woken with the answer (two hand-offs and two thread wakes per push, measured at about a
/// tenth of a forwarded push's CPU). But a first attempt that makes the call is held until
/// the call ends (up to 15.5 s), not WeChat's 5.5 s, so that is done only while calls have
/// been fast: after the first fast call, and never within [`SLOW_FOR`] of a slow one.
struct Speed {
    base: Instant,
    /// Milliseconds after `base` from which a first attempt may make the call itself;
    /// `u64::MAX` until a call was fast.
    inline_from: AtomicU64,
}

impl Speed {
    fn new(base: Instant) -> Speed {
        Speed {
            base,
            inline_from: AtomicU64::new(u64::MAX),
        }
    }

    fn ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX)
    }

    fn allows_inline(&self, now: Instant) -> bool {
        self.ms(now) >= self.inline_from.load(Ordering::Relaxed)
    }

    /// A call to the endpoint took `took`, ending `now`.
    fn record(&self, took: Duration, now: Instant) {
        if took <= FAST {
            // The first fast call opens the way; one after a slow call does not shorten its wait.
            let _ = self.inline_from.compare_exchange(
                u64::MAX,
                0,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        } else {
            let until = self.ms(now).saturating_add(SLOW_FOR.as_secs() * 1000);
            self.inline_from.store(until, Ordering::Relaxed);
        }
    }
}

/// A slot in a bounded count, given back on drop.
struct Permit(Arc<AtomicUsize>);

impl Permit {
    fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<Permit> {
        let previous = count.fetch_add(1, Ordering::SeqCst);
        if previous >= max {
            count.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Permit(Arc::clone(count)))
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Capacity slots kept beside the retry store, keyed by [`Waiter::push_id`].
#[derive(Clone, Default)]
struct Slots(Arc<Mutex<HashMap<usize, Permit>>>);

impl Slots {
    fn keep(&self, push: usize, permit: Permit) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(push, permit);
    }

    /// Gives the push's slot back, if it still holds one.
    fn release(&self, push: usize) {
        let permit = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&push);
        drop(permit);
    }
}

/// Releases the push's slot when the call ends, however it ends. Declared after the waiter
/// that keeps the push id alive, so it is dropped first and the id cannot have been reused.
struct SlotGuard {
    slots: Slots,
    push: usize,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.slots.release(self.push);
    }
}

impl Forwarder {
    pub fn new(settings: Settings, env: Arc<dyn Env>, log: Log) -> Forwarder {
        let settings_held = settings.held_threads();
        Forwarder {
            settings,
            agent: http::agent(),
            late_sender: None,
            observer: None,
            log,
            in_flight: Arc::default(),
            held: Arc::default(),
            processes: Arc::default(),
            slots: Slots::default(),
            held_cap: settings_held,
            warned_small_pool: AtomicBool::new(false),
            api_proxy: ApiProxy::None,
            calls: pool::Pool::default(),
            speed: Arc::new(Speed::new(env.monotonic())),
            env,
        }
    }

    /// How many handler threads the pool keeps for held attempts (by default
    /// [`Settings::held_threads`]; fewer when the server starts without forwarding rules).
    pub fn with_held_threads(mut self, n: usize) -> Forwarder {
        self.held_cap = n;
        self
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Attempts held now (each a handler thread).
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Tells `observer` how each call ended.
    pub fn with_observer(mut self, observer: Observer) -> Forwarder {
        self.observer = Some(observer);
        self
    }

    /// Where the account's API gateway listens, for the commands' `WXMP_API_PROXY`.
    pub fn with_api_proxy(mut self, proxy: ApiProxy) -> Forwarder {
        self.api_proxy = proxy;
        self
    }

    /// The customer-service sender `kf` needs.
    pub fn with_late_sender(mut self, sender: Arc<dyn LateSender>) -> Forwarder {
        self.late_sender = Some(sender);
        self
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The first attempt of a forwarded push: starts the call and waits for its answer until
    /// this attempt's deadline.
    pub fn start<P: 'static>(&self, ticket: Ticket<Answer, P>, job: Job) -> (Answer, Attempt) {
        let waiter = ticket.waiter();
        let arrived = job.arrived;
        let fallback = job.fallback.clone();
        let Some(permit) = Permit::take(&self.in_flight, self.settings.capacity) else {
            self.log.warn(&format!(
                "forward: {} pushes in flight, at --forward-capacity; answering the fallback",
                self.settings.capacity
            ));
            self.count(CallOutcome::Fallback, Duration::ZERO);
            let settled = ticket.complete(fallback, self.env.now());
            return (settled.value, Attempt::new(1, Delivered::Fallback));
        };
        // Under `stretch` the slot is kept where the last attempt can give it back; under `kf`
        // the call may still deliver late, so it keeps the slot until it ends.
        let permit = match self.settings.late {
            Late::Stretch => {
                self.slots.keep(waiter.push_id(), permit);
                None
            }
            Late::Kf => Some(permit),
        };
        let worker = Worker {
            settings: self.settings.clone(),
            slots: self.slots.clone(),
            agent: self.agent.clone(),
            late_sender: self.late_sender.clone(),
            observer: self.observer.clone(),
            env: Arc::clone(&self.env),
            log: self.log.clone(),
            processes: Arc::clone(&self.processes),
            api_proxy: self.api_proxy.url(),
            speed: Arc::clone(&self.speed),
        };
        if let Some(held) = self.inline_permit(&job) {
            return self.call_inline(worker, ticket, job, &waiter, held, fallback);
        }
        let spawned = self.calls.run(move || {
            let _permit = permit;
            worker.run(ticket, job);
        });
        if let Err(e) = spawned {
            // The ticket went down with the closure: the push was released, not answered.
            self.log.error(&format!(
                "forward: cannot start a worker thread ({e}); answering the fallback"
            ));
            self.count(CallOutcome::Error, Duration::ZERO);
            return (fallback, Attempt::new(1, Delivered::Fallback));
        }
        self.hold(&waiter, arrived, fallback)
    }

    fn count(&self, outcome: CallOutcome, took: Duration) {
        if let Some(o) = &self.observer {
            o(outcome, took);
        }
    }

    /// Whether this first attempt makes the call itself (see [`Speed`]): under `stretch`, to
    /// a URL (a command's own process costs far more than a hand-off), while the endpoint has
    /// been fast, and with a thread kept for held attempts free, which it takes for the call.
    fn inline_permit(&self, job: &Job) -> Option<Permit> {
        let eligible = self.settings.late == Late::Stretch
            && matches!(job.target, Target::Http { .. })
            && self.speed.allows_inline(self.env.monotonic());
        if !eligible {
            return None;
        }
        Permit::take(&self.held, self.held_cap)
    }

    /// The first attempt makes the call on its own thread, then answers what the call settled,
    /// or nothing WeChat reads if the call ended after WeChat dropped this attempt.
    fn call_inline<P>(
        &self,
        worker: Worker,
        ticket: Ticket<Answer, P>,
        job: Job,
        waiter: &Waiter<Answer, P>,
        held: Permit,
        fallback: Answer,
    ) -> (Answer, Attempt) {
        let mark = Arc::clone(&fallback.body);
        let deadline = job.arrived + WECHAT_WAIT + SLACK;
        worker.run(ticket, job);
        drop(held);
        if self.env.monotonic() > deadline {
            return (fallback, Attempt::new(1, Delivered::Held));
        }
        match waiter.wait(Duration::ZERO) {
            Some(answer) => {
                let delivered = Delivered::of(&answer, &mark);
                (answer, Attempt::new(1, delivered))
            }
            None => (fallback, Attempt::new(1, Delivered::Held)),
        }
    }

    /// A retry of a forwarded push: joins the call in flight.
    pub fn join<P>(
        &self,
        waiter: Waiter<Answer, P>,
        arrived: Instant,
        fallback: Answer,
    ) -> (Answer, Attempt) {
        self.hold(&waiter, arrived, fallback)
    }

    /// Waits for the answer until this attempt's deadline; then answers as the strategy says.
    fn hold<P>(
        &self,
        waiter: &Waiter<Answer, P>,
        arrived: Instant,
        fallback: Answer,
    ) -> (Answer, Attempt) {
        let number = waiter.attempt();
        let mark = Arc::clone(&fallback.body);
        let must_answer = match self.settings.late {
            Late::Kf => true,
            Late::Stretch => number >= ATTEMPTS,
        };
        let deadline = if must_answer {
            arrived + WECHAT_WAIT.saturating_sub(MARGIN)
        } else {
            arrived + WECHAT_WAIT + SLACK
        };
        let held = Permit::take(&self.held, self.held_cap);
        if held.is_none() {
            // Every handler thread kept for held attempts is taken: waiting here would take one
            // of the threads the server's own work needs. The push gets its fallback now (a late
            // answer still goes out under `kf`).
            if self.held_cap < self.settings.held_threads()
                && !self.warned_small_pool.swap(true, Ordering::Relaxed)
            {
                self.log.warn(&format!(
                    "forward: this server started without forwarding rules, so it keeps only {} handler threads for WeChat's held attempts; restart it to keep {} (2 x --forward-capacity)",
                    self.held_cap,
                    self.settings.held_threads()
                ));
            } else {
                self.log.warn(
                    "forward: every thread kept for held attempts is busy; answering the fallback now",
                );
            }
            let settled = waiter.settle(fallback, self.env.now());
            let delivered = Delivered::of(&settled.value, &mark);
            return (settled.value, Attempt::new(number, delivered));
        }
        let left = deadline.saturating_duration_since(self.env.monotonic());
        if let Some(answer) = waiter.wait(left) {
            // A fast failure (bad JSON, a redirect, no free process) settled it with the fallback.
            let delivered = Delivered::of(&answer, &mark);
            return (answer, Attempt::new(number, delivered));
        }
        if !must_answer {
            // WeChat has dropped this attempt; what is written here is never read.
            return (fallback, Attempt::new(number, Delivered::Held));
        }
        let settled = waiter.settle(fallback, self.env.now());
        if settled.won {
            // No attempt can use the call's answer any more (under `kf` nothing is kept here).
            self.slots.release(waiter.push_id());
        }
        let delivered = Delivered::of(&settled.value, &mark);
        (settled.value, Attempt::new(number, delivered))
    }
}

impl Attempt {
    fn new(number: u32, delivered: Delivered) -> Attempt {
        Attempt { number, delivered }
    }
}

/// The part of the forwarder a worker thread takes with it.
struct Worker {
    settings: Settings,
    slots: Slots,
    agent: ureq::Agent,
    late_sender: Option<Arc<dyn LateSender>>,
    observer: Option<Observer>,
    env: Arc<dyn Env>,
    log: Log,
    processes: Arc<AtomicUsize>,
    api_proxy: Option<String>,
    speed: Arc<Speed>,
}

impl Worker {
    fn count(&self, outcome: CallOutcome, started: Instant) {
        if let Some(o) = &self.observer {
            o(
                outcome,
                self.env.monotonic().saturating_duration_since(started),
            );
        }
    }

    fn run<P>(self, ticket: Ticket<Answer, P>, job: Job) {
        let started = self.env.monotonic();
        let cutoff = job.arrived
            + match self.settings.late {
                Late::Stretch => STRETCH_LIMIT + SLACK,
                Late::Kf => self.settings.kf_wait,
            };
        let probe = ticket.waiter();
        let _slot = SlotGuard {
            slots: self.slots.clone(),
            push: probe.push_id(),
        };
        let late = self.settings.late;
        let answer = match &job.target {
            Target::Http { url } => {
                // What Cloud Hosting puts on a push; its samples refuse one without X-WX-SOURCE.
                let mut headers = vec![("X-WX-SOURCE", "wxmp"), ("X-WX-OPENID", &*job.openid)];
                if let Some(app_id) = &self.settings.app_id {
                    headers.push(("X-WX-APPID", app_id));
                }
                let began = self.env.monotonic();
                let answer = http::call(
                    &self.agent,
                    url,
                    &job.body,
                    &headers,
                    self.settings.secret.as_ref(),
                    cutoff,
                );
                let ended = self.env.monotonic();
                self.speed
                    .record(ended.saturating_duration_since(began), ended);
                answer
            }
            Target::Command { argv, dir } => {
                match Permit::take(&self.processes, self.settings.processes) {
                    None => Err(CallError::Busy(
                        "too many commands running (--forward-processes)",
                    )),
                    Some(_permit) => {
                        // Under `stretch`, once the last attempt answered the fallback no one can
                        // use the answer: stop the program. Under `kf` it may still go out late.
                        let cancelled =
                            || late == Late::Stretch && probe.wait(Duration::ZERO).is_some();
                        let env: Vec<(&str, &str)> = self
                            .api_proxy
                            .as_deref()
                            .map(|p| ("WXMP_API_PROXY", p))
                            .into_iter()
                            .collect();
                        command::run(argv, dir, &job.body, &env, cutoff, &cancelled, &self.log)
                    }
                }
            }
        }
        .and_then(|bytes| json::reply_from_json(&bytes, job.answering).map_err(CallError::Reply));
        let target = describe(&job.target);
        let reply = match answer {
            Ok(r) => r,
            Err(e) => {
                let settled = ticket.complete(job.fallback, self.env.now());
                let then = if settled.won {
                    "answering the fallback"
                } else {
                    "the push was already answered"
                };
                self.log.warn(&format!("forward to {target}: {e}; {then}"));
                self.count(CallOutcome::Error, started);
                return;
            }
        };
        if let Some(adjustment) = reply.adjustment {
            self.log
                .warn(&format!("forward to {target}: reply {adjustment}"));
        }
        let answer = (job.render)(&reply.reply);
        let on_time = self.env.monotonic().saturating_duration_since(job.arrived)
            < WECHAT_WAIT.saturating_sub(MARGIN);
        let settled = ticket.complete(answer, self.env.now());
        let outcome = if settled.won {
            if on_time {
                CallOutcome::OnTime
            } else {
                CallOutcome::LateStretched
            }
        } else {
            match late {
                Late::Kf => self.send_late(&target, &job.openid, &reply.reply),
                Late::Stretch => {
                    self.log.warn(&format!(
                        "forward to {target}: the answer came after WeChat's last attempt was answered with the fallback; dropped"
                    ));
                    CallOutcome::Fallback
                }
            }
        };
        self.count(outcome, started);
    }

    /// `kf`: the fallback went out in time; the real answer follows as a customer-service
    /// message.
    fn send_late(&self, target: &str, openid: &str, reply: &Reply) -> CallOutcome {
        if *reply == Reply::Success {
            return CallOutcome::Fallback;
        }
        let Some(sender) = &self.late_sender else {
            self.log.warn(&format!(
                "forward to {target}: a late answer, but no customer-service API is configured (--appid and --secret); dropped"
            ));
            return CallOutcome::Fallback;
        };
        match sender.send(openid, reply) {
            Ok(()) => CallOutcome::LateKf,
            Err(sentence) => {
                self.log.warn(&format!(
                    "forward to {target}: the late answer could not be sent as a customer-service message: {sentence}"
                ));
                CallOutcome::Error
            }
        }
    }
}

/// The target as the log names it: the URL without its query or password, or the program.
fn describe(target: &Target) -> String {
    match target {
        Target::Http { url } => redact_url(url.split('?').next().unwrap_or(url)).into_owned(),
        Target::Command { argv, .. } => {
            format!("command {}", argv.first().map_or("", String::as_str))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Capture;
    use crate::server::env::SystemEnv;
    use crate::server::store::detached;

    /// The outcomes `f` reports to its observer (the metrics, in the server).
    fn observed(f: Forwarder) -> (Forwarder, Arc<Mutex<Vec<CallOutcome>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&seen);
        let f = f.with_observer(Arc::new(move |o, _| s.lock().unwrap().push(o)));
        (f, seen)
    }

    fn job(fallback: &str) -> Job {
        Job {
            // Nothing listens on port 9 of loopback: the call fails at once.
            target: Target::Http {
                url: "http://127.0.0.1:9/wechat".into(),
            },
            body: b"{}".to_vec(),
            openid: "o".into(),
            answering: Answering::Message,
            render: Box::new(|_| Answer::success()),
            fallback: Answer {
                body: Arc::from(fallback),
                xml: true,
            },
            arrived: Instant::now(),
        }
    }

    /// With no thread kept for held attempts (a server that started without forwarding rules
    /// and whose reserve is used up), a push gets its fallback at once, and the log says why.
    #[test]
    fn without_a_thread_to_hold_on_a_push_gets_its_fallback_at_once() {
        let capture = Arc::new(Capture::default());
        let f = Forwarder::new(
            Settings::default(),
            Arc::new(SystemEnv),
            Log::to(capture.clone()),
        )
        .with_held_threads(0);
        // An endpoint that never answers: the call cannot settle the push before the attempt
        // does (a call that failed at once could, and the attempt would deliver its answer).
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut push = job("fallback");
        push.target = Target::Http {
            url: format!("http://{}/wechat", silent.local_addr().unwrap()),
        };
        let started = Instant::now();
        let (answer, attempt) = f.start(detached::<Answer, ()>(), push);
        assert_eq!(&*answer.body, "fallback");
        assert_eq!(attempt, Attempt::new(1, Delivered::Fallback));
        assert!(
            started.elapsed() < WECHAT_WAIT,
            "it did not wait for the deadline"
        );
        assert!(
            capture
                .lines()
                .iter()
                .any(|l| l.contains("started without forwarding rules")),
            "{:?}",
            capture.lines()
        );
    }

    /// Under `stretch`, the last attempt answering the fallback gives its push's capacity slot
    /// back at once, while the call still waits on an endpoint that never answers: otherwise a
    /// steady 200 held pushes would not fit in a capacity of 200.
    #[test]
    fn the_last_attempt_gives_the_slot_back_while_the_call_still_runs() {
        use crate::server::store::{Begin, Key, Limits, MemoryStore, RetryStore};
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let settings = Settings {
            capacity: 1,
            late: Late::Stretch,
            ..Settings::default()
        };
        let capture = Arc::new(Capture::default());
        let (f, seen) = observed(Forwarder::new(
            settings,
            Arc::new(SystemEnv),
            Log::to(capture),
        ));
        let store = MemoryStore::<Answer>::new(Limits::default());
        let key = Key::new(&["o", "1"]);
        let Begin::Fresh(ticket) = store.begin(key.clone(), 0) else {
            panic!("a new push is fresh")
        };
        // The push arrived 10 s ago, so the first attempt's hold is over already; the call's
        // own cutoff is still 5.5 s away.
        let arrived = Instant::now() - Duration::from_secs(10);
        let mut push = job("wait");
        push.target = Target::Http {
            url: format!("http://{}/wechat", silent.local_addr().unwrap()),
        };
        push.arrived = arrived;
        let (_, first) = f.start(ticket, push);
        assert_eq!(first.delivered, Delivered::Held);
        assert_eq!(f.in_flight(), 1);
        let Begin::InFlight(_second) = store.begin(key.clone(), 0) else {
            panic!("a retry joins")
        };
        let Begin::InFlight(third) = store.begin(key, 0) else {
            panic!("a retry joins")
        };
        assert_eq!(third.attempt(), ATTEMPTS);
        let last_arrived = Instant::now() - WECHAT_WAIT;
        let (answer, last) = f.join(third, last_arrived, job("wait").fallback);
        assert_eq!(
            (&*answer.body, last.delivered),
            ("wait", Delivered::Fallback)
        );
        assert_eq!(f.in_flight(), 0, "the slot was given back");
        assert_eq!(*seen.lock().unwrap(), vec![], "the call is still running");
    }

    /// An endpoint on loopback that answers every call with a text, over keep-alive
    /// connections, after `delays[i]` for the i-th call (none past the list's end).
    fn endpoint(delays: Vec<Duration>) -> String {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/wechat", listener.local_addr().unwrap());
        let calls = Arc::new(AtomicUsize::new(0));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (calls, delays) = (Arc::clone(&calls), delays.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut writer = stream;
                    loop {
                        let mut length = 0;
                        loop {
                            let mut line = String::new();
                            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            let lower = line.to_ascii_lowercase();
                            if let Some(v) = lower.strip_prefix("content-length:") {
                                length = v.trim().parse().unwrap();
                            }
                            if line == "\r\n" {
                                break;
                            }
                        }
                        let mut body = vec![0; length];
                        reader.read_exact(&mut body).unwrap();
                        let n = calls.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(delays.get(n).copied().unwrap_or_default());
                        let answer = r#"{"MsgType":"text","Content":"hi"}"#;
                        let _ = write!(
                            writer,
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{answer}",
                            answer.len()
                        );
                    }
                });
            }
        });
        url
    }

    /// Forwards one push to `url` as a first attempt, under `stretch`; returns what the attempt
    /// delivered and the thread the call ran on (where the observer was told how it ended).
    fn forward_once(
        f: &Forwarder,
        url: &str,
        on: &Arc<Mutex<Vec<std::thread::ThreadId>>>,
    ) -> (Delivered, std::thread::ThreadId) {
        let mut push = job("fallback");
        push.target = Target::Http { url: url.into() };
        let (_, attempt) = f.start(detached::<Answer, ()>(), push);
        let start = Instant::now();
        while on.lock().unwrap().is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "timed out waiting for the call's outcome"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        (attempt.delivered, on.lock().unwrap().remove(0))
    }

    /// Issue 20: a forward to a fast endpoint is made on the first attempt's own thread (no
    /// hand-off to a call thread and back); once a call was slow, calls go to the call threads
    /// again, so that a slow endpoint never keeps a first attempt past WeChat's wait.
    #[test]
    fn calls_to_a_fast_endpoint_run_on_the_first_attempts_own_thread_until_one_is_slow() {
        let url = endpoint(vec![
            Duration::ZERO,
            Duration::ZERO,
            FAST + Duration::from_millis(200),
        ]);
        let on = Arc::new(Mutex::new(Vec::new()));
        let o = Arc::clone(&on);
        let f = Forwarder::new(
            Settings::default(),
            Arc::new(SystemEnv),
            Log::to(Arc::new(Capture::default())),
        )
        .with_observer(Arc::new(move |_, _| {
            o.lock().unwrap().push(std::thread::current().id())
        }));
        let me = std::thread::current().id();
        // Nothing is known of the endpoint yet: the first call goes to a call thread.
        let (delivered, first) = forward_once(&f, &url, &on);
        assert_eq!(delivered, Delivered::Answer);
        assert_ne!(first, me, "the first call ran on a call thread");
        // It was fast: the next ones run here, the third one slowly.
        for _ in 0..2 {
            let (delivered, ran) = forward_once(&f, &url, &on);
            assert_eq!(delivered, Delivered::Answer);
            assert_eq!(ran, me, "the call ran on the attempt's own thread");
        }
        // After a slow call, back to the call threads.
        let (delivered, ran) = forward_once(&f, &url, &on);
        assert_eq!(delivered, Delivered::Answer);
        assert_ne!(ran, me, "after a slow call, the call ran on a call thread");
        assert_eq!(
            f.held(),
            0,
            "the threads kept for held attempts were given back"
        );
    }

    #[test]
    fn past_the_capacity_a_push_gets_its_fallback_and_no_call() {
        let capture = Arc::new(Capture::default());
        let settings = Settings {
            capacity: 1,
            ..Settings::default()
        };
        let (f, seen) = observed(Forwarder::new(
            settings,
            Arc::new(SystemEnv),
            Log::to(capture.clone()),
        ));
        // Take the one slot by hand, as a call in flight would.
        let _busy = Permit::take(&f.in_flight, 1).unwrap();
        let (answer, attempt) = f.start(detached::<Answer, ()>(), job("busy"));
        assert_eq!(
            (&*answer.body, attempt.delivered),
            ("busy", Delivered::Fallback)
        );
        assert_eq!(*seen.lock().unwrap(), vec![CallOutcome::Fallback]);
    }
}
