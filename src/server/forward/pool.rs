//! The threads that make forward calls: kept and reused, not one started per call.
//!
//! A call blocks its thread for as long as the user's code takes (up to the call's cutoff), so
//! calls cannot share a thread; but starting a thread per call cost more than the call itself
//! on a fast endpoint (a stack mapped and unmapped, the thread's first touches of the
//! allocator). A finished call's thread waits for the next call, and leaves after
//! [`IDLE`] without one.
//!
//! How many threads there are is bounded by how many calls run at once, which the forwarder
//! bounds (`--forward-capacity`, plus, under `stretch`, calls running on to their cutoff after
//! their push was answered with the fallback). A call never waits for a thread: when none is
//! idle, a new one is started for it.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

/// How long a thread with no call waits for one before it exits.
pub const IDLE: Duration = Duration::from_secs(30);

type Task = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct State {
    queue: VecDeque<Task>,
    /// Threads waiting for a task (each takes one from `queue` when it wakes).
    idle: usize,
    /// Threads alive.
    threads: usize,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Threads for forward calls, started on demand and reused.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
    idle: Duration,
}

impl Default for Pool {
    fn default() -> Pool {
        Pool::with_idle(IDLE)
    }
}

impl Pool {
    /// A pool whose threads exit after `idle` without a task.
    pub fn with_idle(idle: Duration) -> Pool {
        Pool {
            shared: Arc::default(),
            idle,
        }
    }

    /// Runs `task` on an idle thread, or on a new one when none is idle. The error says why
    /// no thread could be started; `task` was dropped then, not run.
    pub fn run(&self, task: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
        let mut state = self.shared.lock();
        // Every idle thread takes one queued task; hand this one over if one is left for it.
        if state.idle > state.queue.len() {
            state.queue.push_back(Box::new(task));
            drop(state);
            self.shared.wake.notify_one();
            return Ok(());
        }
        state.threads += 1;
        drop(state);
        let shared = Arc::clone(&self.shared);
        let idle = self.idle;
        let first: Task = Box::new(task);
        let spawned = thread::Builder::new()
            .name("wxmp-forward".into())
            .spawn(move || work(&shared, first, idle));
        if spawned.is_err() {
            self.shared.lock().threads -= 1;
        }
        spawned.map(drop)
    }

    /// Threads alive now, busy or idle.
    pub fn threads(&self) -> usize {
        self.shared.lock().threads
    }
}

/// A pool thread: runs its first task, then whatever is queued, until it has waited `idle`
/// with nothing to do.
fn work(shared: &Shared, first: Task, idle: Duration) {
    first();
    let mut state = shared.lock();
    loop {
        if let Some(task) = state.queue.pop_front() {
            drop(state);
            task();
            state = shared.lock();
            continue;
        }
        state.idle += 1;
        let (next, waited) = shared
            .wake
            .wait_timeout(state, idle)
            .unwrap_or_else(PoisonError::into_inner);
        state = next;
        state.idle -= 1;
        if waited.timed_out() && state.queue.is_empty() {
            state.threads -= 1;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Instant;

    /// Polls `f` until it holds, for up to 10 s; fails saying what it waited for.
    fn wait_until(what: &str, f: impl Fn() -> bool) {
        let start = Instant::now();
        while !f() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "timed out waiting for {what}"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_finished_calls_thread_runs_the_next_call() {
        let pool = Pool::default();
        let (tx, rx) = mpsc::channel();
        for _ in 0..50 {
            let tx = tx.clone();
            pool.run(move || tx.send(thread::current().id()).unwrap())
                .unwrap();
            // One call at a time: each finds the last one's thread idle.
            rx.recv_timeout(Duration::from_secs(10)).unwrap();
            wait_until("the thread to be idle again", || {
                pool.shared.lock().idle == 1
            });
        }
        assert_eq!(pool.threads(), 1, "one thread served all 50 calls");
    }

    #[test]
    fn a_call_never_waits_for_a_busy_thread() {
        let pool = Pool::default();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        let (done_tx, done_rx) = mpsc::channel();
        // Three calls that block until released, then a fourth that must run meanwhile.
        for _ in 0..3 {
            let rx = Arc::clone(&release_rx);
            pool.run(move || {
                let _ = rx.lock().unwrap().recv();
            })
            .unwrap();
        }
        pool.run(move || done_tx.send(()).unwrap()).unwrap();
        done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the fourth call ran while three were blocked");
        assert_eq!(pool.threads(), 4);
        for _ in 0..3 {
            release_tx.send(()).unwrap();
        }
    }

    #[test]
    fn idle_threads_exit() {
        let pool = Pool::with_idle(Duration::from_millis(20));
        let (tx, rx) = mpsc::channel();
        for _ in 0..3 {
            let tx = tx.clone();
            pool.run(move || {
                thread::sleep(Duration::from_millis(50));
                tx.send(()).unwrap();
            })
            .unwrap();
        }
        for _ in 0..3 {
            rx.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        wait_until("the idle threads to exit", || pool.threads() == 0);
        // And the pool starts a thread again when a call comes.
        pool.run(move || tx.send(()).unwrap()).unwrap();
        rx.recv_timeout(Duration::from_secs(10))
            .expect("a call after the threads left ran");
    }
}
