//! The retry store on Redis ([`RedisStore`]): the same [`RetryStore`] the pipeline uses with
//! [`MemoryStore`], shared by every instance on one Redis, so that WeChat's attempts at one push
//! may land on any instance and still run the rules once, call the user's code once, and get
//! the same bytes.
//!
//! Per push (its [`Key`] hashed, under `--store-prefix`):
//! - `push:H:claim`: the first attempt's claim (SET NX with a short expiry that its instance
//!   renews while it works), so a dead instance's claim lapses and no attempt waits for an
//!   answer that cannot come;
//! - `push:H:plan`: what the first attempt decided, for the attempts that join it;
//! - `push:H:answer`: the answer (in safe mode the sealed body), first writer wins (SET NX);
//! - `push:H:attempts`: WeChat's attempts seen.
//!
//! All but the claim expire with the cache TTL. A settled push is announced on the store's
//! channel when another attempt is waiting; waiters wake on it ([`Shared::wait_event`]). When
//! Redis fails, a push is handled with the local [`MemoryStore`] so that it is still answered
//! in time.
//!
//! A push answered at once costs two round trips, both scripts sent by SHA1: BEGIN (with the
//! replay window's seen query, when the window is shared) and SETTLE (with the plan, only for
//! attempts already waiting). Round trips, not Redis's work, are the cost on a small machine:
//! each is a write, a blocking read and two context switches on both sides.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};
use std::thread;
use std::time::{Duration, Instant};

use crate::server::shared::Shared;
use crate::server::store::{
    Answer, Begin, Key, Limits, MemoryStore, Pending, RetryStore, Seen, SeenQuery, Settled, Ticket,
    Usage, Waiter, Weigh,
};

/// How long a claim lives without its instance renewing it.
pub const LEASE: Duration = Duration::from_millis(2000);
/// How often an instance renews its claims.
const RENEW: Duration = Duration::from_millis(500);
/// A waiter checks Redis again at least this often, in case a notification was lost.
const RECHECK: Duration = Duration::from_millis(250);
/// Values larger than this are not shared (an answer is at most a few KiB).
pub const MAX_VALUE: usize = 256 * 1024;

/// A value that can be kept in Redis.
pub trait Codec: Sized {
    fn encode(&self) -> Vec<u8>;
    fn decode(bytes: &[u8]) -> Option<Self>;
}

impl Codec for Answer {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 1);
        out.push(if self.xml { b'x' } else { b'p' });
        out.extend_from_slice(self.body.as_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Answer> {
        let (&kind, body) = bytes.split_first()?;
        let body = std::str::from_utf8(body).ok()?;
        Some(Answer {
            body: Arc::from(body),
            xml: match kind {
                b'x' => true,
                b'p' => false,
                _ => return None,
            },
        })
    }
}

impl Codec for () {
    fn encode(&self) -> Vec<u8> {
        Vec::new()
    }

    fn decode(_: &[u8]) -> Option<()> {
        Some(())
    }
}

// The scripts are sent by their SHA1 (`EVALSHA`); `redis::Script` loads one again when Redis
// answers NOSCRIPT (a restart, SCRIPT FLUSH), so nothing has to be loaded at start.
//
// Who can be waiting: every attempt but the first goes through BEGIN, which counts it in
// `attempts` before it waits. Counted and checked inside the same atomic scripts, `attempts > 1`
// tells SETTLE and PLAN whether anyone on another instance may be waiting: if not, they skip the
// PUBLISH (and SETTLE the plan), and an attempt arriving later finds the answer in BEGIN.

/// Looks the push up; claims it when it is new. KEYS: answer, claim, attempts, plan, and
/// optionally the replay window's seen query. ARGV: claim value, lease (ms), TTL (s), and with
/// the seen query its body's hash and its TTL (s). Returns {3, ''} (the query was seen with
/// another body: nothing claimed), {1, answer}, {0, attempt} (claimed), or {2, attempt} (in
/// flight, or its first attempt's instance died: no claim but a plan).
static BEGIN: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if KEYS[5] then
  local h = redis.call('GET', KEYS[5])
  if not h then
    redis.call('SET', KEYS[5], ARGV[4], 'EX', ARGV[5])
  elseif h ~= ARGV[4] then
    return {3, ''}
  end
end
local a = redis.call('GET', KEYS[1])
if a then return {1, a} end
local n = redis.call('INCR', KEYS[3])
if n == 1 then redis.call('EXPIRE', KEYS[3], ARGV[3]) end
if redis.call('EXISTS', KEYS[4]) == 0 and redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {0, tostring(n)}
end
return {2, tostring(n)}
",
    )
});

/// Settles a push unless settled first. KEYS: answer, claim, attempts, plan. ARGV: answer,
/// TTL (s), channel, push, and the plan (optional: an attempt that answers at once leaves its
/// plan here, for the attempts already waiting on other instances, if any). Returns {1, ''}
/// (won) or {0, the answer in force}.
static SETTLE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  redis.call('DEL', KEYS[2])
  if tonumber(redis.call('GET', KEYS[3]) or '0') > 1 then
    if ARGV[5] then redis.call('SET', KEYS[4], ARGV[5], 'EX', ARGV[2]) end
    redis.call('PUBLISH', ARGV[3], ARGV[4])
  end
  return {1, ''}
end
return {0, redis.call('GET', KEYS[1]) or ''}
",
    )
});

/// Leaves the first attempt's plan. KEYS: plan, attempts. ARGV: plan, TTL (s), channel, push.
static PLAN: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if tonumber(redis.call('GET', KEYS[2]) or '0') > 1 then
  redis.call('PUBLISH', ARGV[3], ARGV[4])
end
return 1
",
    )
});

/// Forgets a push whose first attempt failed, if the claim is still this attempt's. KEYS:
/// claim, plan, attempts. ARGV: claim value, channel, push.
static ABANDON: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return 1
",
    )
});

/// The retry store on Redis, falling back to a local [`MemoryStore`] when Redis fails.
pub struct RedisStore<V: Weigh, P = ()> {
    inner: Arc<Inner>,
    local: MemoryStore<V, P>,
    limits: Limits,
}

struct Inner {
    shared: Arc<Shared>,
    /// Claims this instance holds: key → claim value, renewed every [`RENEW`].
    owned: Mutex<HashMap<String, String>>,
    next: AtomicU64,
}

/// The Redis keys of one push.
struct Keys {
    push: String,
    answer: String,
    claim: String,
    attempts: String,
    plan: String,
}

impl Inner {
    fn keys(&self, h: &str) -> Keys {
        let base = format!("{}push:{h}", self.shared.prefix());
        Keys {
            push: h.to_owned(),
            answer: format!("{base}:answer"),
            claim: format!("{base}:claim"),
            attempts: format!("{base}:attempts"),
            plan: format!("{base}:plan"),
        }
    }

    fn owned(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.owned.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<V: Weigh, P> RedisStore<V, P> {
    /// A store on `shared`, answers kept for `limits.ttl_secs`; `limits` also bounds the local
    /// fallback.
    pub fn new(shared: Arc<Shared>, limits: Limits) -> RedisStore<V, P> {
        let inner = Arc::new(Inner {
            shared,
            owned: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
        });
        start_renewer(Arc::downgrade(&inner));
        RedisStore {
            inner,
            local: MemoryStore::new(limits),
            limits,
        }
    }
}

/// Renews this instance's claims while their pushes are at work.
fn start_renewer(inner: Weak<Inner>) {
    let _ = thread::Builder::new()
        .name("wxmp-store-renew".into())
        .spawn(move || loop {
            thread::sleep(RENEW);
            let Some(inner) = inner.upgrade() else { return };
            let keys: Vec<String> = inner.owned().keys().cloned().collect();
            if keys.is_empty() || !inner.shared.is_up() {
                continue;
            }
            let _ = inner.shared.run(|c| {
                let mut pipe = redis::pipe();
                for k in &keys {
                    pipe.cmd("PEXPIRE")
                        .arg(k)
                        .arg(LEASE.as_millis() as u64)
                        .ignore();
                }
                pipe.query::<()>(c)
            });
        });
}

impl<V, P> RetryStore<V, P> for RedisStore<V, P>
where
    V: Weigh + Codec + Send + Sync + 'static,
    P: Codec + Clone + Send + Sync + 'static,
{
    fn begin(&self, key: Key, now: u64) -> Begin<V, P> {
        match self.start(key.clone(), now, None) {
            Seen::Checked(b) | Seen::Unchecked(b) => b,
            // Only a seen query is refused; without one BEGIN never says so.
            Seen::Replayed => self.local.begin(key, now),
        }
    }

    fn begin_seen(&self, key: Key, now: u64, seen: &SeenQuery) -> Seen<Begin<V, P>> {
        self.start(key, now, Some(seen))
    }

    /// The local fallback's fill (what Redis holds is Redis's to report).
    fn usage(&self) -> Usage {
        self.local.usage()
    }

    fn limits(&self) -> Limits {
        self.limits
    }
}

impl<V, P> RedisStore<V, P>
where
    V: Weigh + Codec + Send + Sync + 'static,
    P: Codec + Clone + Send + Sync + 'static,
{
    /// BEGIN, with the seen query when there is one: one round trip.
    fn start(&self, key: Key, now: u64, seen: Option<&SeenQuery>) -> Seen<Begin<V, P>> {
        let inner = &self.inner;
        let keys = inner.keys(&key.digest());
        let claim = format!(
            "{}:{}",
            inner.shared.instance(),
            inner.next.fetch_add(1, Ordering::Relaxed)
        );
        let ttl = self.limits.ttl_secs.max(1);
        let got = inner.shared.run(|c| {
            let mut call = BEGIN.key(&keys.answer);
            call.key(&keys.claim)
                .key(&keys.attempts)
                .key(&keys.plan)
                .arg(&claim)
                .arg(LEASE.as_millis() as u64)
                .arg(ttl);
            if let Some(seen) = seen {
                call.key(&seen.name).arg(&seen.hash).arg(seen.ttl);
            }
            call.invoke::<(i64, Vec<u8>)>(c)
        });
        let attempt = |b: &[u8]| {
            std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse::<u32>().ok())
                .unwrap_or(1)
        };
        let begin = match got {
            Ok((3, _)) => return Seen::Replayed,
            Ok((1, bytes)) => match V::decode(&bytes) {
                Some(v) => Begin::Cached(v),
                None => self.local.begin(key, now),
            },
            Ok((0, _)) => {
                inner.owned().insert(keys.claim.clone(), claim.clone());
                Begin::Fresh(Ticket::new(Arc::new(RedisPending::new(
                    inner,
                    keys,
                    Some(claim),
                    ttl,
                ))))
            }
            Ok((_, n)) => Begin::InFlight(Waiter::new(
                Arc::new(RedisPending::new(inner, keys, None, ttl)),
                attempt(&n),
            )),
            // Redis failed: the local store answers, and the caller checks the query.
            Err(_) => return Seen::Unchecked(self.local.begin(key, now)),
        };
        Seen::Checked(begin)
    }
}

/// A push being answered, as Redis holds it; what this instance settled is also kept here, so
/// its own waiters get it while Redis is down.
struct RedisPending<V, P> {
    inner: Arc<Inner>,
    keys: Keys,
    /// The claim value, for the attempt that claimed the push.
    claim: Option<String>,
    ttl: u64,
    local: Mutex<Local<V, P>>,
}

struct Local<V, P> {
    answer: Option<V>,
    plan: Option<P>,
    /// When a zero-timeout wait last asked Redis (a program's cancel check asks often).
    asked: Option<Instant>,
}

impl<V, P> RedisPending<V, P> {
    fn new(inner: &Arc<Inner>, keys: Keys, claim: Option<String>, ttl: u64) -> Self {
        RedisPending {
            inner: Arc::clone(inner),
            keys,
            claim,
            ttl,
            local: Mutex::new(Local {
                answer: None,
                plan: None,
                asked: None,
            }),
        }
    }

    fn local(&self) -> std::sync::MutexGuard<'_, Local<V, P>> {
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn release(&self) {
        if self.claim.is_some() {
            self.inner.owned().remove(&self.keys.claim);
        }
    }

    /// Settles in Redis (one round trip, with the encoded plan when the attempt answers at
    /// once), and here for this instance's own attempts.
    fn settle_as(&self, value: V, plan: Option<Vec<u8>>) -> Settled<V>
    where
        V: Codec + Clone,
    {
        let shared = &self.inner.shared;
        if let Some(first) = self.local().answer.clone() {
            return Settled {
                won: false,
                value: first,
            };
        }
        let bytes = value.encode();
        let outcome = if bytes.len() > MAX_VALUE {
            None
        } else {
            shared
                .run(|c| {
                    let mut call = SETTLE.key(&self.keys.answer);
                    call.key(&self.keys.claim)
                        .key(&self.keys.attempts)
                        .key(&self.keys.plan)
                        .arg(&bytes)
                        .arg(self.ttl)
                        .arg(shared.channel())
                        .arg(&self.keys.push);
                    if let Some(plan) = &plan {
                        call.arg(plan);
                    }
                    call.invoke::<(i64, Vec<u8>)>(c)
                })
                .ok()
        };
        self.release();
        let settled = match outcome {
            Some((0, first)) => match V::decode(&first) {
                Some(first) => Settled {
                    won: false,
                    value: first,
                },
                None => Settled { won: false, value },
            },
            // Won in Redis, or Redis failed: this instance's attempts get it either way.
            _ => Settled { won: true, value },
        };
        self.local().answer = Some(settled.value.clone());
        shared.notify();
        settled
    }

    /// Waits until `found` finds something in Redis (given `[watched, answer, claim]`), or the
    /// push is over, or `timeout` passes.
    fn watch<T>(
        &self,
        watched: &str,
        timeout: Duration,
        mine: impl Fn(&Local<V, P>) -> Option<T>,
        found: impl Fn(Option<Vec<u8>>, Option<Vec<u8>>, bool) -> Watch<T>,
    ) -> Option<T> {
        let shared = &self.inner.shared;
        let deadline = Instant::now() + timeout;
        loop {
            let seen = shared.events();
            {
                let mut local = self.local();
                if let Some(t) = mine(&local) {
                    return Some(t);
                }
                if timeout.is_zero() {
                    // A cancel check: ask Redis at most every RECHECK.
                    if local.asked.is_some_and(|at| at.elapsed() < RECHECK) {
                        return None;
                    }
                    local.asked = Some(Instant::now());
                }
            }
            let got = shared.run(|c| {
                redis::cmd("MGET")
                    .arg(watched)
                    .arg(&self.keys.answer)
                    .arg(&self.keys.claim)
                    .query::<(Option<Vec<u8>>, Option<Vec<u8>>, Option<Vec<u8>>)>(c)
            });
            if let Ok((w, a, claim)) = got {
                match found(w, a, claim.is_some()) {
                    Watch::Found(t) => return Some(t),
                    Watch::Over => return None,
                    Watch::Waiting => {}
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            shared.wait_event(seen, left.min(RECHECK));
        }
    }
}

enum Watch<T> {
    Found(T),
    /// Settled or abandoned without what was watched, or its instance died.
    Over,
    Waiting,
}

impl<V, P> Drop for RedisPending<V, P> {
    fn drop(&mut self) {
        self.release();
    }
}

impl<V, P> Pending<V, P> for RedisPending<V, P>
where
    V: Codec + Clone + Send + Sync,
    P: Codec + Clone + Send + Sync,
{
    fn settle(&self, value: V, _now: u64) -> Settled<V> {
        self.settle_as(value, None)
    }

    fn settle_with_plan(&self, plan: P, value: V, _now: u64) -> Settled<V> {
        let bytes = plan.encode();
        self.local().plan = Some(plan);
        self.settle_as(value, Some(bytes).filter(|b| b.len() <= MAX_VALUE))
    }

    fn abandon(&self) {
        let shared = &self.inner.shared;
        if let Some(claim) = &self.claim {
            let _ = shared.run(|c| {
                ABANDON
                    .key(&self.keys.claim)
                    .key(&self.keys.plan)
                    .key(&self.keys.attempts)
                    .arg(claim)
                    .arg(shared.channel())
                    .arg(&self.keys.push)
                    .invoke::<()>(c)
            });
        }
        self.release();
        shared.notify();
    }

    fn wait(&self, timeout: Duration) -> Option<V> {
        self.watch(
            &self.keys.answer,
            timeout,
            |l| l.answer.clone(),
            |a, _, claimed| match a.and_then(|a| V::decode(&a)) {
                Some(v) => Watch::Found(v),
                None if !claimed => Watch::Over,
                None => Watch::Waiting,
            },
        )
    }

    fn set_plan(&self, plan: P) {
        let shared = &self.inner.shared;
        let bytes = plan.encode();
        self.local().plan = Some(plan);
        if bytes.len() <= MAX_VALUE {
            let _ = shared.run(|c| {
                PLAN.key(&self.keys.plan)
                    .key(&self.keys.attempts)
                    .arg(&bytes)
                    .arg(self.ttl)
                    .arg(shared.channel())
                    .arg(&self.keys.push)
                    .invoke::<()>(c)
            });
        }
        shared.notify();
    }

    fn plan(&self, timeout: Duration) -> Option<P> {
        self.watch(
            &self.keys.plan,
            timeout,
            |l| l.plan.clone(),
            |p, a, claimed| match p.and_then(|p| P::decode(&p)) {
                Some(p) => Watch::Found(p),
                None if a.is_some() || !claimed => Watch::Over,
                None => Watch::Waiting,
            },
        )
    }
}
