//! The shared store (`--store redis://...`): one Redis that several wxmp instances use, so that
//! WeChat's retries of one push, landing on different instances, behave as on one.
//!
//! [`Shared`] is the connection: a small pool of blocking connections (`r2d2`), each operation
//! bounded by `--store-timeout`. When Redis fails, the store is *degraded*: operations are
//! skipped at once (the caller falls back to its local memory), one line is logged with the
//! reason and the URL without its password, and a background thread tries again with backoff;
//! on success one line says so and sharing resumes. Pushes are answered either way.
//!
//! Notifications: a retry waiting for another instance's answer waits on [`Shared::wait_event`],
//! woken by a pub/sub subscriber thread (one connection per instance), with a slow re-check as
//! a safety net for a lost message; no tight polling.
//!
//! What goes to Redis is bounded and expires: answers and plans (the cache TTL), claims (a few
//! seconds, kept alive by their owner), seen queries (the replay window). Never the AES key or
//! the AppSecret.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use crate::log::Log;

pub use crate::config::{check_url, redact, StoreConfig};

/// The longest wait between two reconnection attempts while Redis is down.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The first wait after a failure.
const MIN_BACKOFF: Duration = Duration::from_millis(200);
/// Connections beyond one per handler thread (forward workers settle pushes too). An
/// exhausted pool would read as an outage, so it is never smaller than the threads using it.
const POOL_SPARE: u32 = 16;

/// Opens connections with the store's deadline for connecting, reading and writing.
struct Manager {
    client: redis::Client,
    timeout: Duration,
}

impl r2d2::ManageConnection for Manager {
    type Connection = redis::Connection;
    type Error = redis::RedisError;

    fn connect(&self) -> Result<redis::Connection, redis::RedisError> {
        let con = self.client.get_connection_with_timeout(self.timeout)?;
        con.set_read_timeout(Some(self.timeout))?;
        con.set_write_timeout(Some(self.timeout))?;
        Ok(con)
    }

    fn is_valid(&self, con: &mut redis::Connection) -> Result<(), redis::RedisError> {
        redis::cmd("PING").query::<()>(con)
    }

    fn has_broken(&self, con: &mut redis::Connection) -> bool {
        !redis::ConnectionLike::is_open(con)
    }
}

/// Why an operation did not use Redis.
#[derive(Debug)]
pub enum StoreError {
    /// Redis is known to be down; the reconnector is at work.
    Degraded,
    /// The operation failed (its reason, without secrets).
    Failed(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Degraded => f.write_str("the store is degraded"),
            StoreError::Failed(e) => f.write_str(e),
        }
    }
}

/// One Redis, shared by the instances: the pool, the health, the notifications.
pub struct Shared {
    pool: r2d2::Pool<Manager>,
    client: redis::Client,
    prefix: String,
    timeout: Duration,
    /// The URL without its password.
    shown: String,
    up: AtomicBool,
    failures: AtomicU64,
    /// Wakes the reconnector.
    down: (Mutex<bool>, Condvar),
    /// Bumped on every notification; waiters wait for it to change.
    events: (Mutex<u64>, Condvar),
    /// This instance's name in claims, so that it can tell its own.
    instance: String,
    log: Log,
}

impl Shared {
    /// Connects (at most `--store-timeout`); an unreachable Redis is a warning and the store
    /// starts degraded. Starts the subscriber and the reconnector threads. `threads`: the
    /// handler threads that may use it at once (connections are opened as they are needed).
    pub fn open(
        config: &StoreConfig,
        url: &str,
        threads: usize,
        log: Log,
    ) -> Result<Arc<Shared>, String> {
        check_url(url)?;
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        let pool = r2d2::Pool::builder()
            .max_size(
                u32::try_from(threads)
                    .unwrap_or(u32::MAX)
                    .saturating_add(POOL_SPARE),
            )
            .min_idle(Some(0))
            .connection_timeout(config.timeout)
            .test_on_check_out(false)
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build_unchecked(Manager {
                client: client.clone(),
                timeout: config.timeout,
            });
        let mut id = [0u8; 8];
        let _ = getrandom::getrandom(&mut id);
        let shared = Arc::new(Shared {
            pool,
            client,
            prefix: config.prefix.clone(),
            timeout: config.timeout,
            shown: redact(url),
            up: AtomicBool::new(true),
            failures: AtomicU64::new(0),
            down: (Mutex::new(false), Condvar::new()),
            events: (Mutex::new(0), Condvar::new()),
            instance: hex::encode(id),
            log,
        });
        match shared.ping() {
            Ok(()) => shared
                .log
                .info(&format!("store: sharing through {}", shared.shown)),
            Err(e) => {
                shared.up.store(false, Ordering::Relaxed);
                shared.log.warn(&format!(
                    "store: cannot reach {} ({e}); serving with the local memory store until it answers",
                    shared.shown
                ));
                *lock(&shared.down.0) = true;
            }
        }
        Shared::start_reconnector(&shared);
        Shared::start_subscriber(&shared);
        Ok(shared)
    }

    /// The key prefix (`--store-prefix`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// This instance's random name.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The channel the instances notify each other on.
    pub fn channel(&self) -> String {
        format!("{}events", self.prefix)
    }

    /// False while Redis is unreachable (the store is degraded).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Operations that could not use Redis, since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The per-operation deadline (`--store-timeout`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs `f` on a pooled connection. While degraded, fails at once; a failure marks the store
    /// degraded (logged once per outage) and is counted.
    pub fn run<T>(
        &self,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        if !self.is_up() {
            self.failures.fetch_add(1, Ordering::Relaxed);
            return Err(StoreError::Degraded);
        }
        let result = match self.pool.get_timeout(self.timeout) {
            Ok(mut con) => f(&mut con).map_err(|e| describe(&e)),
            Err(e) => Err(e.to_string()),
        };
        result.map_err(|e| {
            self.failures.fetch_add(1, Ordering::Relaxed);
            self.fail(&e);
            StoreError::Failed(e)
        })
    }

    /// Marks the store degraded and wakes the reconnector; logs once per outage.
    fn fail(&self, reason: &str) {
        if self.up.swap(false, Ordering::Relaxed) {
            self.log.warn(&format!(
                "store: {} failed ({reason}); pushes are handled with the local memory store until it answers again (instances may then repeat each other's work)",
                self.shown
            ));
        }
        let (m, c) = &self.down;
        *lock(m) = true;
        c.notify_all();
    }

    fn ping(&self) -> Result<(), String> {
        let mut con = self
            .client
            .get_connection_with_timeout(self.timeout)
            .map_err(|e| describe(&e))?;
        con.set_read_timeout(Some(self.timeout))
            .map_err(|e| describe(&e))?;
        redis::cmd("PING")
            .query::<()>(&mut con)
            .map_err(|e| describe(&e))
    }

    /// While degraded, tries again with growing pauses; on success, says so once.
    fn start_reconnector(shared: &Arc<Shared>) {
        let weak = Arc::downgrade(shared);
        let _ = thread::Builder::new()
            .name("wxmp-store-reconnect".into())
            .spawn(move || {
                let mut backoff = MIN_BACKOFF;
                loop {
                    let Some(s) = weak.upgrade() else { return };
                    {
                        let (m, c) = &s.down;
                        let guard = lock(m);
                        let (guard, _) = c
                            .wait_timeout_while(guard, Duration::from_secs(1), |down| !*down)
                            .unwrap_or_else(PoisonError::into_inner);
                        if !*guard {
                            backoff = MIN_BACKOFF;
                            continue;
                        }
                    }
                    thread::sleep(backoff);
                    if s.ping().is_ok() {
                        *lock(&s.down.0) = false;
                        s.up.store(true, Ordering::Relaxed);
                        s.log.info(&format!(
                            "store: {} answers again; sharing resumes",
                            s.shown
                        ));
                        s.notify();
                        backoff = MIN_BACKOFF;
                    } else {
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            });
    }

    /// Listens on the channel and wakes local waiters on each message.
    fn start_subscriber(shared: &Arc<Shared>) {
        let weak = Arc::downgrade(shared);
        let _ = thread::Builder::new()
            .name("wxmp-store-events".into())
            .spawn(move || loop {
                let Some(s) = weak.upgrade() else { return };
                if !s.is_up() {
                    drop(s);
                    thread::sleep(MIN_BACKOFF);
                    continue;
                }
                let (client, channel, timeout) = (s.client.clone(), s.channel(), s.timeout);
                drop(s);
                let Ok(mut con) = client.get_connection_with_timeout(timeout) else {
                    thread::sleep(MIN_BACKOFF);
                    continue;
                };
                let mut pubsub = con.as_pubsub();
                if pubsub.subscribe(&channel).is_err()
                    || pubsub
                        .set_read_timeout(Some(Duration::from_secs(1)))
                        .is_err()
                {
                    thread::sleep(MIN_BACKOFF);
                    continue;
                }
                loop {
                    let got = pubsub.get_message();
                    let Some(s) = weak.upgrade() else { return };
                    match got {
                        Ok(_) => s.notify(),
                        Err(e) if e.is_timeout() => {}
                        Err(_) => break,
                    }
                }
            });
    }

    /// Wakes every local waiter (each checks Redis again).
    pub fn notify(&self) {
        let (m, c) = &self.events;
        *lock(m) += 1;
        c.notify_all();
    }

    /// The current event count, to pass to [`Shared::wait_event`].
    pub fn events(&self) -> u64 {
        *lock(&self.events.0)
    }

    /// Waits up to `timeout` for an event after `seen` (see [`Shared::events`]).
    pub fn wait_event(&self, seen: u64, timeout: Duration) {
        let (m, c) = &self.events;
        let _ = c
            .wait_timeout_while(lock(m), timeout, |n| *n == seen)
            .unwrap_or_else(PoisonError::into_inner);
    }

    /// The metric lines' source: whether Redis is in use.
    pub fn degraded(&self) -> bool {
        !self.is_up()
    }
}

/// A Redis error in one short phrase (its kind and detail; never the URL).
fn describe(e: &redis::RedisError) -> String {
    if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connection_refusal() {
        "connection refused".to_owned()
    } else {
        e.to_string()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_never_shows() {
        assert_eq!(
            redact("redis://user:s3cret@db:6379/2"),
            "redis://user:***@db:6379/2"
        );
        assert_eq!(redact("rediss://:s3cret@db:6380"), "rediss://:***@db:6380");
        assert_eq!(redact("redis://db:6379"), "redis://db:6379");
    }

    #[test]
    fn a_malformed_url_is_refused_without_its_password() {
        let e = check_url("redis://user:s3cret@:notaport").unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
        let e = check_url("http://db:6379").unwrap_err();
        assert!(e.contains("expected memory, redis://"), "{e}");
        assert!(check_url("redis://127.0.0.1:6379/0").is_ok());
    }
}
