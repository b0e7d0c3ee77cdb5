//! The regex set's scratch memory, bounded.
//!
//! A search needs a cache (the lazy DFA's states and sparse sets sized by the automaton: about
//! 5 MiB for 500 regex rules before any state is built, up to 8 MiB more as it grows, see
//! `file.rs`). `regex::RegexSet` keeps its caches in a pool sharded by thread, so a busy
//! server ended up with one per shard and handler thread: heaptrack counted 16 caches and
//! 86 MiB of a W5 server's heap at 50 connections (177 MiB peak RSS against 65 MiB at one).
//! Matching is CPU-bound and takes microseconds, so more caches than cores gain nothing: here
//! there are at most one per core, made when first needed, and a thread borrows one for a
//! match, waiting briefly when all are in use.

use std::fmt;
use std::sync::{Condvar, Mutex, PoisonError};

use regex_automata::meta::{Cache, Regex};
use regex_automata::Input;

/// One compiled set of patterns and at most `max` caches to search it with.
pub struct Lanes {
    set: Regex,
    caches: Mutex<Caches>,
    returned: Condvar,
}

struct Caches {
    free: Vec<Cache>,
    /// Caches made so far (free or borrowed).
    made: usize,
    max: usize,
}

impl Lanes {
    /// At most `max` caches (at least one).
    pub fn new(set: Regex, max: usize) -> Lanes {
        Lanes {
            set,
            caches: Mutex::new(Caches {
                free: Vec::new(),
                made: 0,
                max: max.max(1),
            }),
            returned: Condvar::new(),
        }
    }

    /// One cache per core this process may run on.
    pub fn per_core(set: Regex) -> Lanes {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Lanes::new(set, cores)
    }

    /// Whether any pattern of the set matches `text`.
    pub fn is_match(&self, text: &str) -> bool {
        let mut cache = {
            let mut caches = self.caches.lock().unwrap_or_else(PoisonError::into_inner);
            loop {
                if let Some(cache) = caches.free.pop() {
                    break cache;
                }
                if caches.made < caches.max {
                    caches.made += 1;
                    break self.set.create_cache();
                }
                caches = self
                    .returned
                    .wait(caches)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        };
        let matched = self.set.is_match_with(&mut cache, &Input::new(text));
        self.caches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .free
            .push(cache);
        self.returned.notify_one();
        matched
    }

    /// Caches made so far.
    #[cfg(test)]
    fn made(&self) -> usize {
        self.caches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .made
    }
}

impl fmt::Debug for Lanes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Lanes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;

    #[test]
    fn many_threads_share_a_bounded_number_of_caches() {
        let set = Regex::new_many(&[r"^a+$", r"b\d"]).unwrap();
        let lanes = Arc::new(Lanes::new(set, 2));
        let workers: Vec<_> = (0..16)
            .map(|i| {
                let lanes = Arc::clone(&lanes);
                thread::spawn(move || {
                    (0..200).all(|_| {
                        lanes.is_match(if i % 2 == 0 { "aaa" } else { "xb7" })
                            && !lanes.is_match("zzz")
                    })
                })
            })
            .collect();
        for w in workers {
            assert!(w.join().unwrap(), "every match answered as the set does");
        }
        // Under load the threads may never overlap, and one cache serves them all.
        let made = lanes.made();
        assert!(
            (1..=2).contains(&made),
            "16 threads made {made} caches, not 1 or 2"
        );
    }
}
