//! At most `--threads` pushes doing CPU work at once, however many handler threads exist.
//!
//! The handler pool is larger than `--threads`: it keeps threads for WeChat's held attempts
//! (forwarding) and for retries waiting on their first attempt. Those threads block, but while
//! they are not blocked nothing stopped all of them running the pipeline at once (40, or
//! hundreds with forwarding rules, on two cores). A push enters the gate before its work and
//! leaves it before it waits on anything, so `--threads` means what it says.

use std::sync::{Condvar, Mutex, PoisonError};

pub struct Gate {
    places: Mutex<Places>,
    freed: Condvar,
}

struct Places {
    free: usize,
    /// Pushes blocked in [`Gate::enter`]. A `notify` is a syscall whether or not anyone waits,
    /// and the gate is usually open, so leaving only notifies when someone is waiting.
    waiting: usize,
}

/// A place inside the gate, given back on drop.
pub struct Inside<'a>(&'a Gate);

impl Gate {
    /// A gate for `n` at once (at least one).
    pub fn new(n: usize) -> Gate {
        Gate {
            places: Mutex::new(Places {
                free: n.max(1),
                waiting: 0,
            }),
            freed: Condvar::new(),
        }
    }

    /// Waits for a place.
    pub fn enter(&self) -> Inside<'_> {
        let mut places = self.places.lock().unwrap_or_else(PoisonError::into_inner);
        while places.free == 0 {
            places.waiting += 1;
            places = self
                .freed
                .wait(places)
                .unwrap_or_else(PoisonError::into_inner);
            places.waiting -= 1;
        }
        places.free -= 1;
        Inside(self)
    }
}

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        let mut places = self.0.places.lock().unwrap_or_else(PoisonError::into_inner);
        places.free += 1;
        let wake = places.waiting > 0;
        drop(places);
        if wake {
            self.0.freed.notify_one();
        }
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
    fn a_push_blocked_at_the_gate_is_counted_and_let_in_when_a_place_frees() {
        // Leaving skips the wake when nobody is counted as waiting: a blocked push must be
        // counted, or it would never be let in.
        let gate = Arc::new(Gate::new(1));
        let first = gate.enter();
        let (tx, rx) = std::sync::mpsc::channel();
        let blocked = {
            let gate = gate.clone();
            thread::spawn(move || {
                let _in = gate.enter();
                tx.send(()).unwrap();
            })
        };
        let start = std::time::Instant::now();
        while gate.places.lock().unwrap().waiting != 1 {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "waited 10 s for the second push to block at the gate"
            );
            thread::sleep(std::time::Duration::from_millis(1));
        }
        drop(first);
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the blocked push was let in within 10 s of a place freeing");
        blocked.join().unwrap();
        let places = gate.places.lock().unwrap();
        assert_eq!((places.free, places.waiting), (1, 0));
    }

    #[test]
    fn leaving_lets_the_next_one_in() {
        let gate = Gate::new(1);
        let first = gate.enter();
        drop(first);
        let _second = gate.enter();
    }
}
