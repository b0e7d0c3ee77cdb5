//! Retry de-duplication: WeChat waits 5 s for an answer, then sends the same push again (up to
//! three times). A retry must get the same reply bytes as the first attempt (the first answer may
//! have been lost on the way back) and must not run the rule again.
//!
//! The cache maps a [`Key`] to the final response bytes. A duplicate that arrives while the first
//! is still being handled waits for that result. Memory is bounded by an entry cap and a byte
//! budget, evicting oldest first; entries expire after the TTL. The map is split into shards
//! with short critical sections so the lock never serialises the server.
//!
//! Pure: the caller passes the current time (seconds) in; nothing here reads a clock.

use std::collections::hash_map::{DefaultHasher, Entry};
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::protocol::message::Message;

const SHARDS: usize = 16;
/// Bookkeeping per entry beyond the key and value bytes (map slot, queue slot, Arc headers).
const ENTRY_OVERHEAD: usize = 160;

/// Identifies one push across its retries: (FromUserName, MsgId) for messages (MsgId alone
/// collides across users), (FromUserName, CreateTime, Event, EventKey) for events. Plain and
/// encrypted answers are kept apart, since the cached bytes differ.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key(Arc<str>);

impl Key {
    /// `None` for a push that cannot be told apart from another (no MsgId, not an event).
    pub fn for_message(msg: &Message, encrypted: bool) -> Option<Key> {
        let from = &msg.from_user_name;
        let mode = if encrypted { 'E' } else { 'P' };
        // The separator cannot occur in XML text, so the parts cannot run into each other.
        let key = match msg.event() {
            Some(e) => format!(
                "{mode}e\u{0}{from}\u{0}{}\u{0}{}\u{0}{}",
                msg.create_time,
                e.name(),
                e.event_key().unwrap_or("")
            ),
            None => format!("{mode}m\u{0}{from}\u{0}{}", msg.msg_id.as_deref()?),
        };
        Some(Key(key.into()))
    }

    fn shard(&self) -> usize {
        let mut h = DefaultHasher::new();
        self.0.hash(&mut h);
        (h.finish() as usize) % SHARDS
    }
}

/// Limits, all configurable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Seconds a reply is kept; WeChat's retries span about 15 s.
    pub ttl_secs: u64,
    pub max_entries: usize,
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            ttl_secs: 60,
            max_entries: 100_000,
            max_bytes: 32 << 20,
        }
    }
}

/// What a cache holds: anything with a known size. Cloning must be cheap (an `Arc`).
pub trait Weigh: Clone {
    fn weight(&self) -> usize;
}

/// The answer to "have we seen this push?".
pub enum Begin<'a, V: Weigh> {
    /// First sighting: handle it, then call [`Ticket::complete`].
    Fresh(Ticket<'a, V>),
    /// Seen and answered: send these bytes again.
    Cached(V),
    /// Being handled right now: [`Waiter::wait`] for the result.
    InFlight(Waiter<V>),
}

/// The cache. Share it between threads by reference.
pub struct ReplyCache<V: Weigh> {
    shards: Vec<Mutex<Shard<V>>>,
    limits: Limits,
}

struct Shard<V> {
    map: HashMap<Key, Slot<V>>,
    /// Insertion order, for expiry and eviction; the generation tells a stale queue entry from a
    /// newer entry under the same key.
    order: VecDeque<(Key, u64)>,
    bytes: usize,
    next_gen: u64,
}

enum Slot<V> {
    Pending {
        gen: u64,
        cell: Arc<Cell<V>>,
    },
    Done {
        gen: u64,
        at: u64,
        value: V,
        weight: usize,
    },
}

impl<V> Slot<V> {
    fn gen(&self) -> u64 {
        match self {
            Slot::Pending { gen, .. } | Slot::Done { gen, .. } => *gen,
        }
    }
}

/// Where waiters meet the first handler's result.
struct Cell<V> {
    state: Mutex<CellState<V>>,
    ready: Condvar,
}

enum CellState<V> {
    Waiting,
    Done(V),
    Abandoned,
}

/// The right (and duty) to answer a push first. Dropping it without completing (the handler
/// failed) forgets the push and releases the waiters.
pub struct Ticket<'a, V: Weigh> {
    cache: &'a ReplyCache<V>,
    key: Key,
    gen: u64,
    cell: Arc<Cell<V>>,
    done: bool,
}

/// A duplicate waiting for the first attempt's result.
pub struct Waiter<V> {
    cell: Arc<Cell<V>>,
}

impl<V: Weigh> ReplyCache<V> {
    pub fn new(limits: Limits) -> ReplyCache<V> {
        ReplyCache {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        map: HashMap::new(),
                        order: VecDeque::new(),
                        bytes: 0,
                        next_gen: 0,
                    })
                })
                .collect(),
            limits,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard<V>> {
        // No code path panics while holding a shard lock; if one ever did, the map is still
        // consistent enough to keep serving.
        self.shards[shard]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Looks `key` up at time `now` (seconds) and claims it when it is new.
    pub fn begin(&self, key: Key, now: u64) -> Begin<'_, V> {
        let mut shard = self.lock(key.shard());
        shard.expire(now, &self.limits);
        let gen = shard.next_gen;
        match shard.map.entry(key.clone()) {
            Entry::Occupied(e) => match e.get() {
                Slot::Done { value, .. } => Begin::Cached(value.clone()),
                Slot::Pending { cell, .. } => Begin::InFlight(Waiter {
                    cell: Arc::clone(cell),
                }),
            },
            Entry::Vacant(v) => {
                let cell = Arc::new(Cell {
                    state: Mutex::new(CellState::Waiting),
                    ready: Condvar::new(),
                });
                v.insert(Slot::Pending {
                    gen,
                    cell: Arc::clone(&cell),
                });
                shard.next_gen += 1;
                Begin::Fresh(Ticket {
                    cache: self,
                    key,
                    gen,
                    cell,
                    done: false,
                })
            }
        }
    }

    /// Number of answered entries and their accounted bytes, for tests and the benchmark.
    pub fn usage(&self) -> (usize, usize) {
        (0..SHARDS).fold((0, 0), |(n, b), i| {
            let s = self.lock(i);
            let done = s
                .map
                .values()
                .filter(|slot| matches!(slot, Slot::Done { .. }))
                .count();
            (n + done, b + s.bytes)
        })
    }

    fn per_shard(&self) -> (usize, usize) {
        (
            (self.limits.max_entries / SHARDS).max(1),
            (self.limits.max_bytes / SHARDS).max(1),
        )
    }
}

impl<V: Weigh> Shard<V> {
    /// Drops expired entries from the front of the queue.
    fn expire(&mut self, now: u64, limits: &Limits) {
        while let Some((key, gen)) = self.order.front() {
            let expired = match self.map.get(key) {
                Some(Slot::Done { gen: g, at, .. }) if g == gen => {
                    now.saturating_sub(*at) >= limits.ttl_secs
                }
                // A newer entry, a pending one, or none at all: this queue entry is stale.
                Some(slot) if slot.gen() != *gen => true,
                None => true,
                Some(_) => false,
            };
            if !expired {
                break;
            }
            self.pop_front();
        }
    }

    /// Removes the oldest queue entry and, if it is still current, its map entry.
    fn pop_front(&mut self) {
        if let Some((key, gen)) = self.order.pop_front() {
            if let Entry::Occupied(e) = self.map.entry(key) {
                if let Slot::Done { gen: g, weight, .. } = e.get() {
                    if *g == gen {
                        self.bytes -= *weight;
                        e.remove();
                    }
                }
            }
        }
    }
}

impl<V: Weigh> Ticket<'_, V> {
    /// Stores the answer for retries and hands it to anyone waiting.
    pub fn complete(mut self, value: V, now: u64) {
        self.done = true;
        let weight = self.key.0.len() + value.weight() + ENTRY_OVERHEAD;
        let (max_entries, max_bytes) = self.cache.per_shard();
        {
            let mut shard = self.cache.lock(self.key.shard());
            if let Some(Slot::Pending { gen, .. }) = shard.map.get(&self.key) {
                if *gen == self.gen {
                    shard.map.insert(
                        self.key.clone(),
                        Slot::Done {
                            gen: self.gen,
                            at: now,
                            value: value.clone(),
                            weight,
                        },
                    );
                    shard.order.push_back((self.key.clone(), self.gen));
                    shard.bytes += weight;
                    while shard.order.len() > max_entries || shard.bytes > max_bytes {
                        shard.pop_front();
                        if shard.order.is_empty() {
                            break;
                        }
                    }
                }
            }
        }
        self.cell.finish(CellState::Done(value));
    }
}

impl<V: Weigh> Drop for Ticket<'_, V> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        {
            let mut shard = self.cache.lock(self.key.shard());
            if let Entry::Occupied(e) = shard.map.entry(self.key.clone()) {
                if matches!(e.get(), Slot::Pending { gen, .. } if *gen == self.gen) {
                    e.remove();
                }
            }
        }
        self.cell.finish(CellState::Abandoned);
    }
}

impl<V> Cell<V> {
    fn finish(&self, state: CellState<V>) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        *s = state;
        self.ready.notify_all();
    }
}

impl<V: Clone> Waiter<V> {
    /// Waits up to `timeout` for the first attempt; `None` if it failed or took too long, in
    /// which case the caller handles the push itself.
    pub fn wait(self, timeout: Duration) -> Option<V> {
        let guard = self.cell.state.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = self
            .cell
            .ready
            .wait_timeout_while(guard, timeout, |s| matches!(s, CellState::Waiting))
            .unwrap_or_else(|p| p.into_inner());
        match &*guard {
            CellState::Done(v) => Some(v.clone()),
            CellState::Waiting | CellState::Abandoned => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::message::{Event, Kind};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::thread;

    impl Weigh for Arc<str> {
        fn weight(&self) -> usize {
            self.len()
        }
    }

    type Cache = ReplyCache<Arc<str>>;

    fn text_msg(from: &str, id: &str) -> Message {
        Message {
            to_user_name: "gh".into(),
            from_user_name: from.into(),
            create_time: 100,
            msg_id: Some(id.into()),
            kind: Kind::Text {
                content: "hi".into(),
            },
        }
    }

    fn click(from: &str, time: u64, key: &str) -> Message {
        Message {
            to_user_name: "gh".into(),
            from_user_name: from.into(),
            create_time: time,
            msg_id: None,
            kind: Kind::Event(Event::Click {
                event_key: key.into(),
            }),
        }
    }

    fn key(m: &Message) -> Key {
        Key::for_message(m, false).unwrap()
    }

    /// Claims `k` and completes it with `v`; panics if it was not fresh.
    fn answer(c: &Cache, k: Key, v: &str, now: u64) {
        match c.begin(k, now) {
            Begin::Fresh(t) => t.complete(v.into(), now),
            _ => panic!("expected a fresh key"),
        }
    }

    fn cached(c: &Cache, k: Key, now: u64) -> Option<String> {
        match c.begin(k, now) {
            Begin::Cached(v) => Some(v.to_string()),
            Begin::Fresh(_) => None,
            Begin::InFlight(_) => panic!("unexpected in-flight"),
        }
    }

    #[test]
    fn a_retried_message_gets_the_same_bytes() {
        let c = Cache::new(Limits::default());
        answer(&c, key(&text_msg("u1", "1")), "reply-1", 10);
        assert_eq!(
            cached(&c, key(&text_msg("u1", "1")), 14).as_deref(),
            Some("reply-1")
        );
    }

    #[test]
    fn msg_id_alone_does_not_collide_across_users() {
        let c = Cache::new(Limits::default());
        answer(&c, key(&text_msg("u1", "1")), "for u1", 10);
        assert_eq!(cached(&c, key(&text_msg("u2", "1")), 10), None);
    }

    #[test]
    fn events_are_keyed_by_user_time_name_and_key() {
        let c = Cache::new(Limits::default());
        answer(&c, key(&click("u1", 100, "K")), "r", 10);
        assert_eq!(
            cached(&c, key(&click("u1", 100, "K")), 11).as_deref(),
            Some("r")
        );
        assert_eq!(cached(&c, key(&click("u1", 100, "OTHER")), 11), None);
        assert_eq!(cached(&c, key(&click("u1", 101, "K")), 11), None);
        assert_eq!(cached(&c, key(&click("u2", 100, "K")), 11), None);
    }

    #[test]
    fn a_message_without_msg_id_is_not_deduplicated() {
        let mut m = text_msg("u", "1");
        m.msg_id = None;
        assert_eq!(Key::for_message(&m, false), None);
    }

    #[test]
    fn plain_and_encrypted_answers_are_kept_apart() {
        let m = text_msg("u", "1");
        assert_ne!(Key::for_message(&m, false), Key::for_message(&m, true));
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let c = Cache::new(Limits {
            ttl_secs: 30,
            ..Limits::default()
        });
        answer(&c, key(&text_msg("u", "1")), "r", 100);
        assert!(cached(&c, key(&text_msg("u", "1")), 129).is_some());
        assert_eq!(cached(&c, key(&text_msg("u", "1")), 130), None);
    }

    #[test]
    fn the_entry_cap_evicts_oldest_first() {
        let c = Cache::new(Limits {
            max_entries: SHARDS * 2,
            ..Limits::default()
        });
        for i in 0..1000 {
            answer(&c, key(&text_msg("u", &i.to_string())), "r", 1);
        }
        let (n, _) = c.usage();
        assert!(n <= SHARDS * 2, "{n} entries kept");
        // The newest is kept, the oldest is gone.
        assert!(cached(&c, key(&text_msg("u", "999")), 1).is_some());
        assert_eq!(cached(&c, key(&text_msg("u", "0")), 1), None);
    }

    #[test]
    fn the_byte_budget_bounds_memory() {
        let budget = 64 * 1024;
        let c = Cache::new(Limits {
            max_bytes: budget,
            ..Limits::default()
        });
        let big = "x".repeat(1000);
        for i in 0..10_000 {
            answer(&c, key(&text_msg("u", &i.to_string())), &big, 1);
        }
        let (n, bytes) = c.usage();
        assert!(bytes <= budget, "{bytes} bytes");
        assert!(n > 10, "budget should still hold some entries, got {n}");
    }

    #[test]
    fn a_concurrent_duplicate_waits_and_runs_nothing() {
        let c = Cache::new(Limits::default());
        let runs = AtomicUsize::new(0);
        let k = key(&text_msg("u", "1"));
        let results: Vec<String> = thread::scope(|s| {
            let first = match c.begin(k.clone(), 1) {
                Begin::Fresh(t) => t,
                _ => panic!(),
            };
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| match c.begin(k.clone(), 1) {
                        Begin::InFlight(w) => w.wait(Duration::from_secs(5)).unwrap().to_string(),
                        Begin::Cached(v) => v.to_string(),
                        Begin::Fresh(_) => {
                            runs.fetch_add(1, Ordering::SeqCst);
                            "ran again".into()
                        }
                    })
                })
                .collect();
            thread::sleep(Duration::from_millis(50));
            first.complete("the reply".into(), 1);
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        assert!(results.iter().all(|r| r == "the reply"), "{results:?}");
    }

    #[test]
    fn an_abandoned_attempt_releases_waiters_and_the_key() {
        let c = Cache::new(Limits::default());
        let k = key(&text_msg("u", "1"));
        let t = match c.begin(k.clone(), 1) {
            Begin::Fresh(t) => t,
            _ => panic!(),
        };
        let w = match c.begin(k.clone(), 1) {
            Begin::InFlight(w) => w,
            _ => panic!(),
        };
        drop(t);
        assert_eq!(w.wait(Duration::from_secs(5)), None);
        assert!(matches!(c.begin(k, 1), Begin::Fresh(_)));
    }

    #[test]
    fn a_waiter_gives_up_after_its_timeout() {
        let c = Cache::new(Limits::default());
        let k = key(&text_msg("u", "1"));
        let _t = c.begin(k.clone(), 1);
        match c.begin(k, 1) {
            Begin::InFlight(w) => assert_eq!(w.wait(Duration::from_millis(10)), None),
            _ => panic!(),
        };
    }
}
