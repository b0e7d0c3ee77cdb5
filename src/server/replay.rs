//! The replay window: a signed query is good for a few minutes and for one body.
//!
//! In plaintext mode WeChat's `signature` covers the token, the timestamp and the nonce, never
//! the body, so a query seen once (an ngrok inspector, a proxy log, a screenshot) would sign any
//! body forever. Two checks close that, after the signature (so unsigned junk can neither be
//! refused with a clock hint nor fill the memory):
//!
//! - the `timestamp` must be within the window of the server's clock (pushes and URL checks);
//! - the (timestamp, nonce, signature) of each accepted push is remembered, with a hash of its
//!   body, until its timestamp leaves the window: the same query with another body is refused,
//!   the same query with the same body (WeChat's retry) passes, and the retry store answers it.
//!
//! Why 300 s by default: WeChat retries within about 15 s of its first attempt, and the window
//! has to absorb the skew between WeChat's clock and this server's; five minutes is what
//! Kerberos and most request-signing schemes (AWS SigV4 allows 15 min, Slack 5) tolerate.
//!
//! The memory is bounded: entries expire with the window, and past [`DEFAULT_CAPACITY`] the
//! entry closest to expiry is evicted and counted ([`Replay::evictions`]). An evicted query can
//! be replayed with another body until its timestamp leaves the window, so the count is exported
//! as a metric: a non-zero rate means the cap is too small for the traffic.
//!
//! Several instances behind one address must share this memory, or a replay can land on the
//! instance that never saw the original. The operation is one atomic "set if absent, with
//! expiry": in Redis `SET wxmp:replay:<key> <body-hash> NX EX <window>`, then on a refusal
//! `GET` and compare the hash (same hash: WeChat's retry, let through; another: refuse). The key
//! and the hash are already plain bytes ([`Replay::admit`] computes both), so a shared store
//! replaces the in-process map without changing the rules here.
//!
//! Pure: the clock is a parameter; nothing here reads the time or logs.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::log::utc;
use crate::protocol::query::Query;
use crate::server::shared::Shared;
use crate::server::store::SeenQuery;

/// Seconds a signed query stays good: WeChat's ~15 s of retries plus clock skew.
pub const DEFAULT_WINDOW: u64 = crate::config::DEFAULT_REPLAY_WINDOW;
/// Queries remembered at most. Each costs about 100 bytes, so the cap is about 10 MB: a
/// sustained 330 pushes per second for the whole default window.
pub const DEFAULT_CAPACITY: usize = 100_000;
/// At most one hint per this many seconds that a plaintext push reached a safe-mode server.
pub const HINT_EVERY: u64 = 3600;

/// Why a signed query was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayError {
    /// The timestamp is further than the window from the server's clock.
    Stale {
        timestamp: u64,
        now: u64,
        window: u64,
    },
    /// The timestamp is not a number of seconds.
    BadTimestamp,
    /// This query was accepted before with another body: a captured query on a forged body.
    Replayed,
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::Stale {
                timestamp,
                now,
                window,
            } => {
                let (by, way) = if timestamp > now {
                    (timestamp - now, "ahead of")
                } else {
                    (now - timestamp, "behind")
                };
                write!(
                    f,
                    "timestamp {timestamp} ({}) is {by} s {way} the server's clock ({}), outside --replay-window {window} s: a replayed or forged request, or the server's clock is wrong (check NTP, e.g. timedatectl)",
                    utc(*timestamp),
                    utc(*now)
                )
            }
            ReplayError::BadTimestamp => f.write_str("timestamp is not a number of seconds"),
            ReplayError::Replayed => f.write_str(
                "this signature, timestamp and nonce were already used with another body: a replayed query on a forged body",
            ),
        }
    }
}

impl std::error::Error for ReplayError {}

/// What [`Replay::admit`] decided for a push that passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// A query not seen before (or the checks are off).
    New,
    /// The same query and body again: WeChat's retry.
    Retry,
}

/// The window and the queries seen within it. One per server, shared by the handler threads.
pub struct Replay {
    /// Seconds; 0 turns the timestamp and nonce checks off.
    window: u64,
    capacity: usize,
    seen: Mutex<Seen>,
    evictions: AtomicU64,
    /// When the last plaintext-in-safe-mode hint was given, plus one (0: never).
    last_hint: AtomicU64,
    /// The Redis shared with other instances: the seen queries are kept there, so a query
    /// replayed to another instance is refused too. `None`, or Redis failing: this memory.
    shared: Option<Arc<Shared>>,
}

/// Remembers a seen query unless it is there: KEYS[1] the query, ARGV the body's hash and the
/// seconds left of the window. Returns the body hash seen first, or '' when it is new.
/// Sent by its SHA1 (`EVALSHA`, loaded again on NOSCRIPT).
static SEEN: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return ''
",
    )
});

impl Default for Replay {
    fn default() -> Self {
        Replay::new(DEFAULT_WINDOW)
    }
}

impl fmt::Debug for Replay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replay")
            .field("window", &self.window)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

type Hash = [u8; 20];

/// The remembered queries: by key, and by expiry for expiring and evicting in order.
#[derive(Default)]
struct Seen {
    by_key: HashMap<Hash, (Hash, (u64, u64))>,
    by_expiry: BTreeMap<(u64, u64), Hash>,
    next: u64,
}

impl Replay {
    /// A window of `window` seconds (0: off) and the default cap.
    pub fn new(window: u64) -> Replay {
        Replay::with_capacity(window, DEFAULT_CAPACITY)
    }

    /// A window of `window` seconds remembering at most `capacity` queries (at least 1).
    pub fn with_capacity(window: u64, capacity: usize) -> Replay {
        Replay {
            window,
            capacity: capacity.max(1),
            seen: Mutex::default(),
            evictions: AtomicU64::new(0),
            last_hint: AtomicU64::new(0),
            shared: None,
        }
    }

    /// With the seen queries kept in the Redis shared with other instances.
    pub fn with_shared(mut self, shared: Arc<Shared>) -> Replay {
        self.shared = Some(shared);
        self
    }

    pub fn window(&self) -> u64 {
        self.window
    }

    /// Queries evicted before their time because the memory was full.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Queries remembered now.
    pub fn len(&self) -> usize {
        self.lock().by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The timestamp check alone, for URL checks: `timestamp` within the window of `now`.
    pub fn check_time(&self, timestamp: &str, now: u64) -> Result<u64, ReplayError> {
        let ts: u64 = timestamp
            .trim()
            .parse()
            .map_err(|_| ReplayError::BadTimestamp)?;
        if self.window > 0 && ts.abs_diff(now) > self.window {
            return Err(ReplayError::Stale {
                timestamp: ts,
                now,
                window: self.window,
            });
        }
        Ok(ts)
    }

    /// Both checks for a push whose signature is already known good: the timestamp, then the
    /// query against the ones seen (remembering it with `body`'s hash when new).
    pub fn admit(&self, q: &Query, body: &[u8], now: u64) -> Result<Admitted, ReplayError> {
        if self.window == 0 {
            return Ok(Admitted::New);
        }
        let (Some(ts), Some(nonce), Some(sig)) = (&q.timestamp, &q.nonce, &q.signature) else {
            // The signature check refuses these first; nothing to remember without them.
            return Ok(Admitted::New);
        };
        let ts = self.check_time(ts, now)?;
        let key = key(ts, nonce, sig);
        let body = sha1(&[body]);
        // The query stays dangerous while its timestamp is in the window, wherever `now` is.
        let expires = ts + self.window;
        if let Some(shared) = &self.shared {
            let seen = seen_query(shared, &key, &body, expires, now);
            let got = shared.run(|c| {
                SEEN.key(&seen.name)
                    .arg(&seen.hash)
                    .arg(seen.ttl)
                    .invoke::<String>(c)
            });
            match got {
                Ok(first) if first.is_empty() => return Ok(Admitted::New),
                Ok(first) if first == seen.hash => return Ok(Admitted::Retry),
                Ok(_) => return Err(ReplayError::Replayed),
                // Redis failed: this instance's memory decides.
                Err(_) => {}
            }
        }
        let mut seen = self.lock();
        seen.expire(now);
        if let Some((hash, _)) = seen.by_key.get(&key) {
            return if *hash == body {
                Ok(Admitted::Retry)
            } else {
                Err(ReplayError::Replayed)
            };
        }
        if seen.by_key.len() >= self.capacity {
            seen.evict_first();
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
        seen.insert(key, body, expires);
        Ok(Admitted::New)
    }

    /// The timestamp check now, and the seen-query check left for the shared retry store to
    /// make with its claim, in one round trip ([`RetryStore::begin_seen`]): `Some` when the
    /// window is shared. Otherwise (`None`) both checks are made here ([`Replay::admit`]).
    ///
    /// [`RetryStore::begin_seen`]: crate::server::store::RetryStore::begin_seen
    pub fn admit_later(
        &self,
        q: &Query,
        body: &[u8],
        now: u64,
    ) -> Result<Option<SeenQuery>, ReplayError> {
        let (Some(shared), true, Some(ts), Some(nonce), Some(sig)) = (
            &self.shared,
            self.window > 0,
            &q.timestamp,
            &q.nonce,
            &q.signature,
        ) else {
            return self.admit(q, body, now).map(|_| None);
        };
        let ts = self.check_time(ts, now)?;
        let seen = seen_query(
            shared,
            &key(ts, nonce, sig),
            &sha1(&[body]),
            ts + self.window,
            now,
        );
        Ok(Some(seen))
    }

    /// True at most once per [`HINT_EVERY`] seconds: time to say again that a plaintext push
    /// reached a server with an AES key.
    pub fn hint_due(&self, now: u64) -> bool {
        let last = self.last_hint.load(Ordering::Relaxed);
        if last != 0 && now < (last - 1).saturating_add(HINT_EVERY) {
            return false;
        }
        // Of several threads at once, one gives the hint.
        self.last_hint
            .compare_exchange(last, now + 1, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        // The map stays consistent across a panic elsewhere (each change is one insert/remove).
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Seen {
    fn expire(&mut self, now: u64) {
        while let Some(entry) = self.by_expiry.first_entry() {
            if entry.key().0 >= now {
                break;
            }
            let key = entry.remove();
            self.by_key.remove(&key);
        }
    }

    fn evict_first(&mut self) {
        if let Some((_, key)) = self.by_expiry.pop_first() {
            self.by_key.remove(&key);
        }
    }

    fn insert(&mut self, key: Hash, body: Hash, expires: u64) {
        let order = (expires, self.next);
        self.next += 1;
        self.by_expiry.insert(order, key);
        self.by_key.insert(key, (body, order));
    }
}

/// A query as the shared window keeps it: its key under the store's prefix, its body's hash,
/// and the seconds until its timestamp leaves the window.
fn seen_query(shared: &Shared, key: &Hash, body: &Hash, expires: u64, now: u64) -> SeenQuery {
    SeenQuery {
        name: format!("{}seen:{}", shared.prefix(), hex::encode(key)),
        hash: hex::encode(body),
        ttl: expires.saturating_sub(now).max(1),
    }
}

/// The remembered key: a hash of the three parts, separated so no two triples collide.
fn key(ts: u64, nonce: &str, sig: &str) -> Hash {
    sha1(&[
        ts.to_string().as_bytes(),
        b"\n",
        nonce.as_bytes(),
        b"\n",
        sig.to_ascii_lowercase().as_bytes(),
    ])
}

fn sha1(parts: &[&[u8]]) -> Hash {
    let mut sha = sha1_smol::Sha1::new();
    for p in parts {
        sha.update(p);
    }
    sha.digest().bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_714_036_504;

    fn q(ts: u64, nonce: &str) -> Query {
        Query {
            signature: Some(format!("sig{nonce}")),
            timestamp: Some(ts.to_string()),
            nonce: Some(nonce.into()),
            ..Query::default()
        }
    }

    #[test]
    fn timestamps_outside_the_window_are_refused_both_ways() {
        let r = Replay::new(300);
        assert_eq!(r.check_time("1714036504", NOW + 300), Ok(NOW));
        assert_eq!(r.check_time("1714036504", NOW - 300), Ok(NOW));
        assert_eq!(
            r.check_time("1714036504", NOW + 301),
            Err(ReplayError::Stale {
                timestamp: NOW,
                now: NOW + 301,
                window: 300
            })
        );
        assert!(r.check_time("1714036504", NOW - 301).is_err());
        assert_eq!(r.check_time("soon", NOW), Err(ReplayError::BadTimestamp));
        assert_eq!(r.check_time("-1", NOW), Err(ReplayError::BadTimestamp));
    }

    #[test]
    fn the_stale_message_shows_both_times_and_blames_the_clock_as_a_possibility() {
        let e = Replay::new(300).check_time("1714036504", NOW + 3600);
        let text = e.unwrap_err().to_string();
        assert!(text.contains("1714036504 (2024-04-25T09:15:04Z)"), "{text}");
        assert!(text.contains("3600 s behind the server's clock (2024-04-25T10:15:04Z)"));
        assert!(text.contains("clock is wrong"), "{text}");
        let ahead = Replay::new(300).check_time("1714036504", NOW - 1000);
        assert!(ahead.unwrap_err().to_string().contains("1000 s ahead of"));
    }

    #[test]
    fn a_zero_window_checks_nothing() {
        let r = Replay::new(0);
        assert_eq!(r.check_time("1", NOW), Ok(1));
        assert_eq!(r.admit(&q(1, "n"), b"a", NOW), Ok(Admitted::New));
        assert_eq!(r.admit(&q(1, "n"), b"b", NOW), Ok(Admitted::New));
        assert!(r.is_empty());
    }

    #[test]
    fn the_same_query_passes_with_the_same_body_only() {
        let r = Replay::new(300);
        assert_eq!(r.admit(&q(NOW, "1"), b"body", NOW), Ok(Admitted::New));
        assert_eq!(r.admit(&q(NOW, "1"), b"body", NOW + 5), Ok(Admitted::Retry));
        assert_eq!(
            r.admit(&q(NOW, "1"), b"forged", NOW + 5),
            Err(ReplayError::Replayed)
        );
        // Another nonce is another query.
        assert_eq!(r.admit(&q(NOW, "2"), b"forged", NOW), Ok(Admitted::New));
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn entries_expire_when_their_timestamp_leaves_the_window() {
        let r = Replay::new(300);
        r.admit(&q(NOW, "1"), b"a", NOW).unwrap();
        r.admit(&q(NOW + 100, "2"), b"a", NOW + 100).unwrap();
        // At NOW + 300 the first is still good, so still remembered.
        assert_eq!(
            r.admit(&q(NOW, "1"), b"b", NOW + 300),
            Err(ReplayError::Replayed)
        );
        r.admit(&q(NOW + 301, "3"), b"a", NOW + 301).unwrap();
        assert_eq!(r.len(), 2, "the first expired, the second and third stay");
        assert_eq!(r.evictions(), 0);
    }

    #[test]
    fn past_the_cap_the_entry_closest_to_expiry_goes_and_is_counted() {
        let r = Replay::with_capacity(300, 2);
        r.admit(&q(NOW + 10, "late"), b"a", NOW).unwrap();
        r.admit(&q(NOW, "early"), b"a", NOW).unwrap();
        r.admit(&q(NOW, "third"), b"a", NOW).unwrap();
        assert_eq!((r.len(), r.evictions()), (2, 1));
        // "early" was evicted: it is new again, and "late" is still known.
        assert_eq!(
            r.admit(&q(NOW + 10, "late"), b"x", NOW),
            Err(ReplayError::Replayed)
        );
        assert_eq!(r.admit(&q(NOW, "early"), b"x", NOW), Ok(Admitted::New));
        assert_eq!(r.evictions(), 2);
    }

    #[test]
    fn the_hint_is_due_at_most_once_an_hour() {
        let r = Replay::new(300);
        assert!(r.hint_due(NOW));
        assert!(!r.hint_due(NOW));
        assert!(!r.hint_due(NOW + HINT_EVERY - 1));
        assert!(r.hint_due(NOW + HINT_EVERY));
        assert!(!r.hint_due(NOW + HINT_EVERY + 1));
        // A clock at zero is still a clock.
        let z = Replay::new(300);
        assert!(z.hint_due(0));
        assert!(!z.hint_due(1));
    }

    #[test]
    fn the_signature_case_does_not_make_a_new_query() {
        let r = Replay::new(300);
        let mut upper = q(NOW, "1");
        upper.signature = upper.signature.map(|s| s.to_uppercase());
        r.admit(&q(NOW, "1"), b"a", NOW).unwrap();
        assert_eq!(r.admit(&upper, b"b", NOW), Err(ReplayError::Replayed));
    }
}
