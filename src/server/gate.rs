//! At most `--threads` pushes doing CPU work at once, however many handler threads exist.
//!
//! The handler pool is larger than `--threads`: it keeps threads for WeChat's held attempts
//! (forwarding) and for retries waiting on their first attempt. Those threads block, but while
//! they are not blocked nothing stopped all of them running the pipeline at once (40, or
//! hundreds with forwarding rules, on two cores). A push enters the gate before its work and
//! leaves it before it waits on anything, so `--threads` means what it says.

use std::sync::{Condvar, Mutex, PoisonError};

pub struct Gate {
    free: Mutex<usize>,
    freed: Condvar,
}

/// A place inside the gate, given back on drop.
pub struct Inside<'a>(&'a Gate);

impl Gate {
    /// A gate for `n` at once (at least one).
    pub fn new(n: usize) -> Gate {
        Gate {
            free: Mutex::new(n.max(1)),
            freed: Condvar::new(),
        }
    }

    /// Waits for a place.
    pub fn enter(&self) -> Inside<'_> {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        while *free == 0 {
            free = self
                .freed
                .wait(free)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *free -= 1;
        Inside(self)
    }
}

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        let mut free = self.0.free.lock().unwrap_or_else(PoisonError::into_inner);
        *free += 1;
        drop(free);
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::thread;

    #[test]
    fn no_more_than_n_are_inside_at_once() {
        let gate = Arc::new(Gate::new(3));
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (gate, inside, most) = (gate.clone(), inside.clone(), most.clone());
                thread::spawn(move || {
                    for _ in 0..200 {
                        let _in = gate.enter();
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(most.load(Ordering::SeqCst) <= 3);
        assert!(most.load(Ordering::SeqCst) >= 1);
    }

    #[test]
    fn leaving_lets_the_next_one_in() {
        let gate = Gate::new(1);
        let first = gate.enter();
        drop(first);
        let _second = gate.enter();
    }
}
