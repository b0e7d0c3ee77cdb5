//! The retry store: WeChat waits 5 s for an answer, then sends the same push again (up to three
//! times). A retry must get the same reply bytes as the first attempt (the first answer may have
//! been lost on the way back) and must not run the rule again: what the first attempt decided
//! (its *plan*, [`Ticket::plan`]) waits with the in-flight entry for the retries that join it.
//!
//! [`RetryStore`] is the interface the pipeline uses: [`RetryStore::begin`] says whether a push
//! is new (and hands out an owned [`Ticket`] to answer it), answered (the bytes), or being
//! answered right now (a [`Waiter`]). [`MemoryStore`] is the in-process implementation; a store
//! shared by several instances can be another.
//!
//! `MemoryStore` maps a [`Key`] to the final response bytes. Memory is bounded by an entry cap
//! and a byte budget, evicting oldest first; entries expire after the TTL. The map is split
//! into shards with short critical sections so the lock never serialises the server.
//!
//! Pure: the caller passes the current time (seconds) in; nothing here reads a clock.

use std::collections::hash_map::{DefaultHasher, Entry};
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// A finished response body, what the retry store keeps for WeChat's retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub body: Arc<str>,
    /// True for XML (a reply or an encrypted envelope), false for the plain `success`.
    pub xml: bool,
}

impl Answer {
    /// The plain `success`: WeChat asks for it unencrypted, even in safe mode.
    pub fn success() -> Answer {
        Answer {
            body: Arc::from("success"),
            xml: false,
        }
    }
}

impl Weigh for Answer {
    fn weight(&self) -> usize {
        self.body.len()
    }
}

const SHARDS: usize = 16;
/// Bookkeeping per entry beyond the key and value bytes (map slot, queue slot, Arc headers).
const ENTRY_OVERHEAD: usize = 160;

/// Identifies one push across its retries. The pipeline decides what goes in (see
/// `pipeline::retry_key`); here it is an opaque string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key(Arc<str>);

impl Key {
    /// Joins `parts` with a separator that cannot occur in XML text, so the parts cannot run
    /// into each other.
    pub fn new(parts: &[&str]) -> Key {
        Key(parts.join("\u{0}").into())
    }

    /// The same key in `account`'s space, so that accounts sharing a store never share an
    /// answer; the one account of the flags (an empty name) keeps the key as it is.
    pub fn in_account(self, account: &str) -> Key {
        if account.is_empty() {
            self
        } else {
            Key(format!("{account}\u{0}{}", self.0).into())
        }
    }

    /// A short, fixed-length name for the key (SHA-1, hex), for a store outside the process:
    /// the parts (an OpenID, a MsgId) do not leave it as they are.
    pub fn digest(&self) -> String {
        sha1_smol::Sha1::from(self.0.as_bytes())
            .digest()
            .to_string()
    }

    fn shard(&self) -> usize {
        let mut h = DefaultHasher::new();
        self.0.hash(&mut h);
        (h.finish() as usize) % SHARDS
    }
}

/// The store's limits are configuration (`--cache-mb`, `--cache-ttl`).
pub use crate::config::Limits;

/// What a store holds: anything with a known size. Cloning must be cheap (an `Arc`).
pub trait Weigh: Clone {
    fn weight(&self) -> usize;
}

/// How full a store is, for the log and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Answered entries.
    pub entries: usize,
    /// Their accounted bytes.
    pub bytes: usize,
}

/// Remembers answers to pushes so that WeChat's retries get the same bytes. `P` is the first
/// attempt's plan, handed to the retries that join it while it works.
pub trait RetryStore<V, P = ()>: Send + Sync {
    /// Looks `key` up at time `now` (Unix seconds) and claims it when it is new.
    fn begin(&self, key: Key, now: u64) -> Begin<V, P>;
    /// [`RetryStore::begin`] and the replay window's check of `seen` at once: a shared store
    /// makes both in one round trip. This default (and a shared store that failed) leaves the
    /// check to the caller: [`Seen::Unchecked`].
    fn begin_seen(&self, key: Key, now: u64, seen: &SeenQuery) -> Seen<Begin<V, P>> {
        let _ = seen;
        Seen::Unchecked(self.begin(key, now))
    }
    fn usage(&self) -> Usage;
    fn limits(&self) -> Limits;
}

/// A signed query to remember in a shared replay window (see `server::replay`): the key
/// (prefixed), the hash of the body it came with, and the seconds it stays in the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenQuery {
    pub name: String,
    pub hash: String,
    pub ttl: u64,
}

/// What [`RetryStore::begin_seen`] found of a query.
pub enum Seen<B> {
    /// Seen before with another body: refuse it (nothing was claimed).
    Replayed,
    /// New, or WeChat's retry with the same body.
    Checked(B),
    /// Not checked: the caller checks the query itself.
    Unchecked(B),
}

/// The answer to "have we seen this push?".
pub enum Begin<V, P = ()> {
    /// First sighting: handle it, then call [`Ticket::complete`].
    Fresh(Ticket<V, P>),
    /// Seen and answered: send these bytes again.
    Cached(V),
    /// Being handled right now: [`Waiter::plan`] and [`Waiter::wait`] for the result.
    InFlight(Waiter<V, P>),
}

/// The outcome of settling a push: whether this answer was the first, and the answer in force
/// (this one, or the one that came first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled<V> {
    pub won: bool,
    pub value: V,
}

/// A push being answered, as a store implements it: shared by the attempt that answers it (its
/// [`Ticket`]) and the retries that wait for it ([`Waiter`]). The first answer settles it; a
/// later one is told it lost, so a late answer can be sent another way or dropped.
pub trait Pending<V, P = ()>: Send + Sync {
    /// Settles with `value` at `now` (Unix seconds) unless something settled it first.
    fn settle(&self, value: V, now: u64) -> Settled<V>;
    /// Forgets the push (its handler failed): waiters are released without an answer.
    fn abandon(&self);
    /// Waits up to `timeout` for the answer; `None` if it was abandoned or is still pending.
    fn wait(&self, timeout: Duration) -> Option<V>;
    /// Keeps the first attempt's plan for the attempts that join it.
    fn set_plan(&self, plan: P);
    /// Waits up to `timeout` for the plan; `None` if the push was abandoned or settled before
    /// one was made, or none came in time.
    fn plan(&self, timeout: Duration) -> Option<P>;
    /// [`Pending::set_plan`] then [`Pending::settle`], for an attempt that answers at once: a
    /// shared store does both in one round trip.
    fn settle_with_plan(&self, plan: P, value: V, now: u64) -> Settled<V> {
        self.set_plan(plan);
        self.settle(value, now)
    }
}

/// The right (and duty) to answer a push first. Owned, so the work can move to another thread.
/// Dropping it without completing (the handler failed) forgets the push and releases waiters.
pub struct Ticket<V, P = ()> {
    pending: Arc<dyn Pending<V, P>>,
    done: bool,
}

impl<V, P> Ticket<V, P> {
    pub fn new(pending: Arc<dyn Pending<V, P>>) -> Ticket<V, P> {
        Ticket {
            pending,
            done: false,
        }
    }

    /// Stores the answer for retries and hands it to anyone waiting, unless a waiter settled
    /// the push first (see [`Waiter::settle`]).
    pub fn complete(mut self, value: V, now: u64) -> Settled<V> {
        self.done = true;
        self.pending.settle(value, now)
    }

    /// [`Ticket::plan`] and [`Ticket::complete`] at once, for an attempt that answers without
    /// waiting for anything (the retries that joined it still find the plan).
    pub fn complete_with_plan(mut self, plan: P, value: V, now: u64) -> Settled<V> {
        self.done = true;
        self.pending.settle_with_plan(plan, value, now)
    }

    /// Leaves what this attempt decided where the retries that join it find it
    /// ([`Waiter::plan`]), so they answer as it does instead of deciding again.
    pub fn plan(&self, plan: P) {
        self.pending.set_plan(plan);
    }

    /// A way for the first attempt itself to wait for the answer, once the work has moved on.
    pub fn waiter(&self) -> Waiter<V, P> {
        Waiter {
            pending: Arc::clone(&self.pending),
            attempt: 1,
        }
    }
}

impl<V, P> Drop for Ticket<V, P> {
    fn drop(&mut self) {
        if !self.done {
            self.pending.abandon();
        }
    }
}

/// An attempt waiting for a push's answer: a retry, or the first attempt after handing its
/// ticket to a worker.
pub struct Waiter<V, P = ()> {
    pending: Arc<dyn Pending<V, P>>,
    attempt: u32,
}

impl<V, P> Waiter<V, P> {
    pub fn new(pending: Arc<dyn Pending<V, P>>, attempt: u32) -> Waiter<V, P> {
        Waiter { pending, attempt }
    }

    /// Which of WeChat's attempts this is: 1 for the first sighting, 2 for the first retry, ...
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Names the push (every waiter and the ticket of one push share it) for as long as any of
    /// them is alive, so work kept beside the store can be found again by any attempt.
    pub fn push_id(&self) -> usize {
        Arc::as_ptr(&self.pending) as *const () as usize
    }

    /// Waits up to `timeout` for the answer; `None` if the first attempt failed or took too
    /// long, in which case the caller decides what to answer.
    pub fn wait(&self, timeout: Duration) -> Option<V> {
        self.pending.wait(timeout)
    }

    /// What the first attempt decided, waiting up to `timeout` for it to decide; `None` when it
    /// failed (or answered) before it made a plan.
    pub fn plan(&self, timeout: Duration) -> Option<P> {
        self.pending.plan(timeout)
    }

    /// Settles the push with `value` unless it was answered meanwhile (the last attempt giving
    /// up: from then on, retries get `value` and a late answer loses).
    pub fn settle(&self, value: V, now: u64) -> Settled<V> {
        self.pending.settle(value, now)
    }
}

/// A ticket for a push no store can recognise again (no MsgId, not an event): its attempts
/// cannot be joined, but the first one can still hand its work to another thread and wait.
pub fn detached<V: Clone + Send + 'static, P: Clone + Send + 'static>() -> Ticket<V, P> {
    Ticket::new(Arc::new(Loose {
        cell: Mutex::new(Cell::default()),
        ready: Condvar::new(),
    }))
}

/// The in-process store: sharded, bounded, shared by reference or `Arc`.
pub struct MemoryStore<V: Weigh, P = ()> {
    inner: Arc<Inner<V, P>>,
}

struct Inner<V, P> {
    shards: Vec<Mutex<Shard<V, P>>>,
    limits: Limits,
}

struct Shard<V, P> {
    map: HashMap<Key, Slot<V, P>>,
    /// Insertion order, for expiry and eviction; the generation tells a stale queue entry from a
    /// newer entry under the same key.
    order: VecDeque<(Key, u64)>,
    bytes: usize,
    next_gen: u64,
}

enum Slot<V, P> {
    Pending {
        gen: u64,
        pending: Arc<MemoryPending<V, P>>,
        /// WeChat's attempts seen so far for this push.
        attempts: u32,
    },
    Done {
        gen: u64,
        at: u64,
        value: V,
        weight: usize,
    },
}

impl<V, P> Slot<V, P> {
    fn gen(&self) -> u64 {
        match self {
            Slot::Pending { gen, .. } | Slot::Done { gen, .. } => *gen,
        }
    }
}

enum CellState<V> {
    Waiting,
    Done(V),
    Abandoned,
}

/// Where a push's answer and its first attempt's plan meet the waiters.
struct Cell<V, P> {
    state: CellState<V>,
    plan: Option<P>,
    /// Threads blocked on the cell's condvar. Almost every push has none (retries are rare),
    /// and a `notify` wakes with a syscall whether or not anyone waits, so the settling side
    /// only notifies when this is above zero. Counted under the cell's lock, so a waiter is
    /// never missed.
    waiters: usize,
}

impl<V, P> Cell<V, P> {
    /// Wakes the waiters, if any: the caller has just changed the cell under `ready`'s lock.
    fn wake(&self, ready: &Condvar) {
        if self.waiters > 0 {
            ready.notify_all();
        }
    }
}

impl<V, P> Default for Cell<V, P> {
    fn default() -> Self {
        Cell {
            state: CellState::Waiting,
            plan: None,
            waiters: 0,
        }
    }
}

/// [`MemoryStore`]'s pending push: where the ticket's answer meets the waiters.
struct MemoryPending<V, P> {
    inner: Arc<Inner<V, P>>,
    key: Key,
    gen: u64,
    cell: Mutex<Cell<V, P>>,
    ready: Condvar,
}

/// The pending push of [`detached`]: the same meeting point without a map behind it.
struct Loose<V, P> {
    cell: Mutex<Cell<V, P>>,
    ready: Condvar,
}

impl<V: Weigh, P> MemoryStore<V, P> {
    pub fn new(limits: Limits) -> MemoryStore<V, P> {
        MemoryStore {
            inner: Arc::new(Inner {
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
            }),
        }
    }
}

impl<V, P> RetryStore<V, P> for MemoryStore<V, P>
where
    V: Weigh + Send + Sync + 'static,
    P: Clone + Send + Sync + 'static,
{
    fn begin(&self, key: Key, now: u64) -> Begin<V, P> {
        let mut shard = self.inner.lock(key.shard());
        shard.expire(now, &self.inner.limits);
        let gen = shard.next_gen;
        match shard.map.entry(key.clone()) {
            Entry::Occupied(mut e) => match e.get_mut() {
                Slot::Done { value, .. } => Begin::Cached(value.clone()),
                Slot::Pending {
                    pending, attempts, ..
                } => {
                    *attempts = attempts.saturating_add(1);
                    let pending: Arc<dyn Pending<V, P>> = pending.clone();
                    Begin::InFlight(Waiter::new(pending, *attempts))
                }
            },
            Entry::Vacant(v) => {
                let pending = Arc::new(MemoryPending {
                    inner: Arc::clone(&self.inner),
                    key,
                    gen,
                    cell: Mutex::new(Cell::default()),
                    ready: Condvar::new(),
                });
                v.insert(Slot::Pending {
                    gen,
                    pending: Arc::clone(&pending),
                    attempts: 1,
                });
                shard.next_gen += 1;
                Begin::Fresh(Ticket::new(pending))
            }
        }
    }

    fn usage(&self) -> Usage {
        (0..SHARDS).fold(Usage::default(), |u, i| {
            let s = self.inner.lock(i);
            let done = s
                .map
                .values()
                .filter(|slot| matches!(slot, Slot::Done { .. }))
                .count();
            Usage {
                entries: u.entries + done,
                bytes: u.bytes + s.bytes,
            }
        })
    }

    fn limits(&self) -> Limits {
        self.inner.limits
    }
}

impl<V, P> Inner<V, P> {
    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard<V, P>> {
        // No code path panics while holding a shard lock; if one ever did, the map is still
        // consistent enough to keep serving.
        self.shards[shard % SHARDS]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn per_shard(&self) -> (usize, usize) {
        (
            (self.limits.max_entries / SHARDS).max(1),
            (self.limits.max_bytes / SHARDS).max(1),
        )
    }
}

impl<V: Weigh, P> Shard<V, P> {
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

impl<V: Weigh + Send + Sync, P: Clone + Send + Sync> Pending<V, P> for MemoryPending<V, P> {
    fn settle(&self, value: V, now: u64) -> Settled<V> {
        let mut cell = lock(&self.cell);
        match &cell.state {
            CellState::Done(first) => {
                return Settled {
                    won: false,
                    value: first.clone(),
                }
            }
            // The push was forgotten; a late answer is handed back but not remembered.
            CellState::Abandoned => return Settled { won: false, value },
            CellState::Waiting => {}
        }
        let weight = self.key.0.len() + value.weight() + ENTRY_OVERHEAD;
        let (max_entries, max_bytes) = self.inner.per_shard();
        {
            let mut shard = self.inner.lock(self.key.shard());
            if matches!(shard.map.get(&self.key), Some(Slot::Pending { gen, .. }) if *gen == self.gen)
            {
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
        cell.state = CellState::Done(value.clone());
        cell.wake(&self.ready);
        Settled { won: true, value }
    }

    fn abandon(&self) {
        let mut cell = lock(&self.cell);
        if !matches!(cell.state, CellState::Waiting) {
            return;
        }
        {
            let mut shard = self.inner.lock(self.key.shard());
            if let Entry::Occupied(e) = shard.map.entry(self.key.clone()) {
                if matches!(e.get(), Slot::Pending { gen, .. } if *gen == self.gen) {
                    e.remove();
                }
            }
        }
        cell.state = CellState::Abandoned;
        cell.wake(&self.ready);
    }

    fn wait(&self, timeout: Duration) -> Option<V> {
        wait_on(&self.cell, &self.ready, timeout)
    }

    fn set_plan(&self, plan: P) {
        set_plan(&self.cell, &self.ready, plan);
    }

    fn plan(&self, timeout: Duration) -> Option<P> {
        plan_of(&self.cell, &self.ready, timeout)
    }
}

impl<V: Clone + Send, P: Clone + Send> Pending<V, P> for Loose<V, P> {
    fn settle(&self, value: V, _now: u64) -> Settled<V> {
        let mut cell = lock(&self.cell);
        match &cell.state {
            CellState::Done(first) => Settled {
                won: false,
                value: first.clone(),
            },
            CellState::Abandoned => Settled { won: false, value },
            CellState::Waiting => {
                cell.state = CellState::Done(value.clone());
                cell.wake(&self.ready);
                Settled { won: true, value }
            }
        }
    }

    fn abandon(&self) {
        let mut cell = lock(&self.cell);
        if matches!(cell.state, CellState::Waiting) {
            cell.state = CellState::Abandoned;
            cell.wake(&self.ready);
        }
    }

    fn wait(&self, timeout: Duration) -> Option<V> {
        wait_on(&self.cell, &self.ready, timeout)
    }

    fn set_plan(&self, plan: P) {
        set_plan(&self.cell, &self.ready, plan);
    }

    fn plan(&self, timeout: Duration) -> Option<P> {
        plan_of(&self.cell, &self.ready, timeout)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding a cell's lock; if something did, the cell is still whole.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn wait_on<V: Clone, P>(cell: &Mutex<Cell<V, P>>, ready: &Condvar, timeout: Duration) -> Option<V> {
    let guard = wait_while(cell, ready, timeout, |c| {
        matches!(c.state, CellState::Waiting)
    });
    match &guard.state {
        CellState::Done(v) => Some(v.clone()),
        CellState::Waiting | CellState::Abandoned => None,
    }
}

fn set_plan<V, P>(cell: &Mutex<Cell<V, P>>, ready: &Condvar, plan: P) {
    let mut c = lock(cell);
    c.plan = Some(plan);
    c.wake(ready);
}

fn plan_of<V, P: Clone>(cell: &Mutex<Cell<V, P>>, ready: &Condvar, timeout: Duration) -> Option<P> {
    let guard = wait_while(cell, ready, timeout, |c| {
        c.plan.is_none() && matches!(c.state, CellState::Waiting)
    });
    guard.plan.clone()
}

/// Waits up to `timeout` while `blocked` holds, counted in the cell's `waiters` meanwhile.
fn wait_while<'c, V, P>(
    cell: &'c Mutex<Cell<V, P>>,
    ready: &Condvar,
    timeout: Duration,
    mut blocked: impl FnMut(&Cell<V, P>) -> bool,
) -> MutexGuard<'c, Cell<V, P>> {
    let mut guard = lock(cell);
    if !blocked(&guard) {
        return guard;
    }
    guard.waiters += 1;
    let (mut guard, _) = ready
        .wait_timeout_while(guard, timeout, |c| blocked(c))
        .unwrap_or_else(|p| p.into_inner());
    guard.waiters -= 1;
    guard
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::thread;

    impl Weigh for Arc<str> {
        fn weight(&self) -> usize {
            self.len()
        }
    }

    type Cache = MemoryStore<Arc<str>>;

    fn key(id: &str) -> Key {
        Key::new(&["m", "u", id])
    }

    /// Claims `k` and completes it with `v`; panics if it was not fresh.
    fn answer(c: &Cache, k: Key, v: &str, now: u64) {
        match c.begin(k, now) {
            Begin::Fresh(t) => {
                t.complete(v.into(), now);
            }
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
    fn a_retried_push_gets_the_same_bytes() {
        let c = Cache::new(Limits::default());
        answer(&c, key("1"), "reply-1", 10);
        assert_eq!(cached(&c, key("1"), 14).as_deref(), Some("reply-1"));
    }

    #[test]
    fn key_parts_cannot_run_into_each_other() {
        assert_ne!(Key::new(&["ab", "c"]), Key::new(&["a", "bc"]));
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let c = Cache::new(Limits {
            ttl_secs: 30,
            ..Limits::default()
        });
        answer(&c, key("1"), "r", 100);
        assert!(cached(&c, key("1"), 129).is_some());
        assert_eq!(cached(&c, key("1"), 130), None);
    }

    #[test]
    fn the_entry_cap_evicts_oldest_first() {
        let c = Cache::new(Limits {
            max_entries: SHARDS * 2,
            ..Limits::default()
        });
        for i in 0..1000 {
            answer(&c, key(&i.to_string()), "r", 1);
        }
        let n = c.usage().entries;
        assert!(n <= SHARDS * 2, "{n} entries kept");
        // The newest is kept, the oldest is gone.
        assert!(cached(&c, key("999"), 1).is_some());
        assert_eq!(cached(&c, key("0"), 1), None);
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
            answer(&c, key(&i.to_string()), &big, 1);
        }
        let Usage { entries, bytes } = c.usage();
        assert!(bytes <= budget, "{bytes} bytes");
        assert!(
            entries > 10,
            "budget should still hold some entries, got {entries}"
        );
    }

    #[test]
    fn a_concurrent_duplicate_waits_and_runs_nothing() {
        let c = Cache::new(Limits::default());
        let runs = AtomicUsize::new(0);
        let k = key("1");
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
            first.complete("the reply".into(), 1);
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        assert!(results.iter().all(|r| r == "the reply"), "{results:?}");
    }

    #[test]
    fn a_ticket_can_be_completed_on_another_thread() {
        let c = Cache::new(Limits::default());
        let t = match c.begin(key("1"), 1) {
            Begin::Fresh(t) => t,
            _ => panic!(),
        };
        thread::spawn(move || t.complete("later".into(), 2))
            .join()
            .unwrap();
        assert_eq!(cached(&c, key("1"), 3).as_deref(), Some("later"));
    }

    #[test]
    fn an_abandoned_attempt_releases_waiters_and_the_key() {
        let c = Cache::new(Limits::default());
        let k = key("1");
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
    fn retries_are_counted_as_attempts() {
        let c = Cache::new(Limits::default());
        let k = key("1");
        let t = match c.begin(k.clone(), 1) {
            Begin::Fresh(t) => t,
            _ => panic!(),
        };
        assert_eq!(t.waiter().attempt(), 1);
        for n in 2..=4 {
            match c.begin(k.clone(), 1) {
                Begin::InFlight(w) => assert_eq!(w.attempt(), n),
                _ => panic!(),
            }
        }
    }

    #[test]
    fn the_first_answer_wins_and_a_late_one_is_told_it_lost() {
        let c = Cache::new(Limits::default());
        let k = key("1");
        let t = match c.begin(k.clone(), 1) {
            Begin::Fresh(t) => t,
            _ => panic!(),
        };
        let last = match c.begin(k.clone(), 1) {
            Begin::InFlight(w) => w,
            _ => panic!(),
        };
        // The last attempt gives up and answers the fallback.
        let s = last.settle("fallback".into(), 2);
        assert!(s.won);
        // The real answer arrives afterwards: it loses, and the fallback stays in force.
        let late = t.complete("late answer".into(), 3);
        assert!(!late.won);
        assert_eq!(&*late.value, "fallback");
        assert_eq!(cached(&c, k, 4).as_deref(), Some("fallback"));
    }

    #[test]
    fn an_answer_that_comes_first_reaches_every_open_attempt() {
        let c = Cache::new(Limits::default());
        let k = key("1");
        let t = match c.begin(k.clone(), 1) {
            Begin::Fresh(t) => t,
            _ => panic!(),
        };
        let first = t.waiter();
        let second = match c.begin(k.clone(), 1) {
            Begin::InFlight(w) => w,
            _ => panic!(),
        };
        assert!(t.complete("answer".into(), 2).won);
        assert!(!second.settle("fallback".into(), 3).won);
        for w in [first, second] {
            assert_eq!(w.wait(Duration::ZERO).as_deref(), Some("answer"));
        }
    }

    #[test]
    fn a_detached_ticket_hands_its_answer_to_its_own_waiter() {
        let t = detached::<Arc<str>, ()>();
        let w = t.waiter();
        thread::spawn(move || t.complete("done".into(), 1))
            .join()
            .unwrap();
        assert_eq!(w.wait(Duration::from_secs(5)).as_deref(), Some("done"));
    }

    #[test]
    fn a_retry_finds_the_first_attempts_plan_and_none_when_it_failed_first() {
        let c: MemoryStore<Arc<str>, &'static str> = MemoryStore::new(Limits::default());
        let k = key("1");
        let Begin::Fresh(t) = c.begin(k.clone(), 1) else {
            panic!("a new push is fresh")
        };
        let Begin::InFlight(early) = c.begin(k.clone(), 1) else {
            panic!("a retry joins")
        };
        // A retry that came before the plan waits for it.
        let waiting = thread::spawn(move || early.plan(Duration::from_secs(10)));
        t.plan("rule 2");
        assert_eq!(waiting.join().unwrap(), Some("rule 2"));
        let Begin::InFlight(late) = c.begin(k.clone(), 1) else {
            panic!("a retry joins")
        };
        assert_eq!(late.plan(Duration::ZERO), Some("rule 2"));
        // A first attempt that fails before it decides leaves its retries no plan, at once.
        let k2 = key("2");
        let Begin::Fresh(t2) = c.begin(k2.clone(), 1) else {
            panic!("a new push is fresh")
        };
        let Begin::InFlight(orphan) = c.begin(k2, 1) else {
            panic!("a retry joins")
        };
        drop(t2);
        assert_eq!(orphan.plan(Duration::from_secs(600)), None);
    }

    /// How many threads are blocked on the pending push under `k`.
    fn waiters_on(c: &Cache, k: &Key) -> usize {
        match c.inner.lock(k.shard()).map.get(k) {
            Some(Slot::Pending { pending, .. }) => lock(&pending.cell).waiters,
            _ => panic!("no pending push under the key"),
        }
    }

    /// Polls until `k` has `n` blocked waiters, for at most 10 s.
    fn until_waiters(c: &Cache, k: &Key, n: usize) {
        let start = std::time::Instant::now();
        while waiters_on(c, k) != n {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "waited 10 s for {n} blocked waiters, saw {}",
                waiters_on(c, k)
            );
            thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn blocked_waiters_are_counted_and_woken_by_the_answer_and_the_plan() {
        // Settling skips the wake when nobody is counted as waiting: a waiter blocked before
        // the answer must be counted, or it would sleep to its timeout (60 s here).
        let c: Cache = Cache::new(Limits::default());
        let k = key("1");
        let Begin::Fresh(t) = c.begin(k.clone(), 1) else {
            panic!("a new push is fresh")
        };
        let Begin::InFlight(w) = c.begin(k.clone(), 1) else {
            panic!("a retry joins")
        };
        let Begin::InFlight(p) = c.begin(k.clone(), 1) else {
            panic!("a retry joins")
        };
        assert_eq!(waiters_on(&c, &k), 0);
        let start = std::time::Instant::now();
        let answer = thread::spawn(move || w.wait(Duration::from_secs(60)));
        let plan = thread::spawn(move || p.plan(Duration::from_secs(60)));
        until_waiters(&c, &k, 2);
        t.plan(());
        assert_eq!(plan.join().unwrap(), Some(()));
        until_waiters(&c, &k, 1);
        t.complete("the answer".into(), 2);
        assert_eq!(answer.join().unwrap().as_deref(), Some("the answer"));
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "a waiter slept to its timeout"
        );
    }

    #[test]
    fn a_waiter_that_times_out_is_no_longer_counted() {
        let c = Cache::new(Limits::default());
        let k = key("1");
        let _t = c.begin(k.clone(), 1);
        let Begin::InFlight(w) = c.begin(k.clone(), 1) else {
            panic!("a retry joins")
        };
        assert_eq!(w.wait(Duration::from_millis(10)), None);
        assert_eq!(w.plan(Duration::from_millis(10)), None);
        assert_eq!(waiters_on(&c, &k), 0);
    }

    #[test]
    fn a_waiter_gives_up_after_its_timeout() {
        let c = Cache::new(Limits::default());
        let k = key("1");
        let _t = c.begin(k.clone(), 1);
        match c.begin(k, 1) {
            Begin::InFlight(w) => assert_eq!(w.wait(Duration::from_millis(10)), None),
            _ => panic!(),
        };
    }
}
