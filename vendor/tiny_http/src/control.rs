//! wxmp patch: process-wide limits and a graceful stop, for programs that cannot reach the
//! [`Server`](crate::Server) (rouille builds it inside `rouille::Server::new` and keeps it).
//!
//! - [`set_max_connections`] caps the connections each server holds open; past the cap a new
//!   connection is answered `503` and closed at once, so a flood of idle connections makes the
//!   server busy, not deaf (descriptors and threads run out no more).
//! - [`shutdown`] stops every server in the process: listeners close, idle keep-alive
//!   connections close, and a connection in the middle of a request finishes it (its response
//!   says `Connection: close`). [`open_connections`] reaches 0 when all of that is done.

use std::collections::BTreeMap;
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::connection::Connection;
use crate::ListenAddr;

/// Used when [`set_max_connections`] was never called.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

static MAX_CONNECTIONS: AtomicUsize = AtomicUsize::new(DEFAULT_MAX_CONNECTIONS);
static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static CONNECTIONS: Mutex<BTreeMap<u64, Arc<ConnState>>> = Mutex::new(BTreeMap::new());
static LISTENERS: Mutex<BTreeMap<u64, ListenAddr>> = Mutex::new(BTreeMap::new());

/// Caps the open connections of each server built after this call (at least 1).
pub fn set_max_connections(n: usize) {
    MAX_CONNECTIONS.store(n.max(1), Ordering::SeqCst);
}

/// The cap a server built now would use.
pub fn max_connections() -> usize {
    MAX_CONNECTIONS.load(Ordering::SeqCst)
}

/// Starts a graceful stop of every server in the process; see the module documentation. It
/// cannot be undone.
pub fn shutdown() {
    SHUTTING_DOWN.store(true, Ordering::SeqCst);
    for state in lock(&CONNECTIONS).values() {
        state.close_if_idle();
    }
    // Wake the accept loops, blocked in accept(), so they see the flag and close the listeners.
    let listeners: Vec<ListenAddr> = lock(&LISTENERS).values().cloned().collect();
    for addr in listeners {
        crate::wake_accept(&addr);
    }
}

/// Whether [`shutdown`] was called.
pub fn is_shutting_down() -> bool {
    SHUTTING_DOWN.load(Ordering::SeqCst)
}

/// Connections open in all servers of the process.
pub fn open_connections() -> usize {
    lock(&CONNECTIONS).len()
}

/// A poisoned lock only means another thread panicked while holding it; the maps stay valid.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) struct ListenerEntry(u64);

pub(crate) fn register_listener(addr: ListenAddr) -> ListenerEntry {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    lock(&LISTENERS).insert(id, addr);
    ListenerEntry(id)
}

impl Drop for ListenerEntry {
    fn drop(&mut self) {
        lock(&LISTENERS).remove(&self.0);
    }
}

const IDLE: u8 = 0;
const BUSY: u8 = 1;
const CLOSED: u8 = 2;

/// One open connection, as the stop sees it: idle ones are closed at once, busy ones finish
/// their request first.
pub(crate) struct ConnState {
    socket: Connection,
    state: AtomicU8,
}

impl ConnState {
    /// Between requests. False if the connection was closed by a stop meanwhile.
    pub(crate) fn set_idle(&self) -> bool {
        self.state
            .compare_exchange(BUSY, IDLE, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
            || self.state.load(Ordering::SeqCst) == IDLE
    }

    /// A request has started. False if a stop closed the connection first.
    pub(crate) fn set_busy(&self) -> bool {
        self.state
            .compare_exchange(IDLE, BUSY, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
            || self.state.load(Ordering::SeqCst) == BUSY
    }

    fn close_if_idle(&self) {
        if self
            .state
            .compare_exchange(IDLE, CLOSED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            // Wakes the connection's thread, blocked waiting for the next request, with EOF.
            let _ = self.socket.shutdown(Shutdown::Both);
        }
    }
}

/// Registration of an open connection, for [`shutdown`] and [`open_connections`]; it also holds
/// the connection's place under its server's cap. Dropped when the connection ends.
pub(crate) struct Registration {
    id: u64,
    pub(crate) state: Arc<ConnState>,
    server_count: Arc<AtomicUsize>,
}

/// Registers a new connection of a server whose open count is `server_count`. It starts idle:
/// a stop closes it unless a request has begun.
pub(crate) fn register(socket: Connection, server_count: &Arc<AtomicUsize>) -> Registration {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let state = Arc::new(ConnState {
        socket,
        state: AtomicU8::new(IDLE),
    });
    server_count.fetch_add(1, Ordering::SeqCst);
    lock(&CONNECTIONS).insert(id, Arc::clone(&state));
    Registration {
        id,
        state,
        server_count: Arc::clone(server_count),
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&CONNECTIONS).remove(&self.id);
        self.server_count.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Logs at most one line a second for an event that can come in floods (refused connections,
/// accept errors), with how many were not logged.
pub(crate) struct RateLimitedLog {
    started: Instant,
    last: AtomicU64,
    suppressed: AtomicUsize,
}

impl RateLimitedLog {
    pub(crate) fn new() -> Self {
        RateLimitedLog {
            started: Instant::now(),
            last: AtomicU64::new(u64::MAX),
            suppressed: AtomicUsize::new(0),
        }
    }

    pub(crate) fn warn(&self, msg: &dyn std::fmt::Display) {
        let second = self.started.elapsed().as_secs();
        let last = self.last.load(Ordering::Relaxed);
        if last != u64::MAX && second <= last {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self
            .last
            .compare_exchange(last, second, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match self.suppressed.swap(0, Ordering::Relaxed) {
            0 => log::warn!("{}", msg),
            n => log::warn!("{} ({} more like it in the last second)", msg, n),
        }
    }
}

/// Sleeps that grow while a failure repeats (10 ms doubling to 500 ms), so a loop retrying a
/// refused accept or spawn neither spins nor stalls for long once the cause is gone.
pub(crate) struct Backoff(Duration);

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff(Duration::ZERO)
    }

    pub(crate) fn reset(&mut self) {
        self.0 = Duration::ZERO;
    }

    pub(crate) fn sleep(&mut self) {
        self.0 = (self.0 * 2).clamp(Duration::from_millis(10), Duration::from_millis(500));
        std::thread::sleep(self.0);
    }
}
