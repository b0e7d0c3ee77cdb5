//! The one way to wait for something: poll with a generous bound, and FAIL, naming what was
//! awaited, when time runs out. A wait that gives up silently lets the next assertion pass
//! without testing anything.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(20);

/// Shorthand for a bound in seconds.
pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Polls `f` until it holds; panics with `what` if it does not within `within`.
#[track_caller]
pub fn until(within: Duration, what: impl Display, mut f: impl FnMut() -> bool) {
    until_ok(
        within,
        what,
        || if f() { Ok(()) } else { Err(String::new()) },
    );
}

/// Polls `f` until it returns `Ok`; panics with `what` and the last `Err` (what was seen instead)
/// if it does not within `within`.
#[track_caller]
pub fn until_ok(within: Duration, what: impl Display, mut f: impl FnMut() -> Result<(), String>) {
    let started = Instant::now();
    loop {
        let seen = match f() {
            Ok(()) => return,
            Err(seen) => seen,
        };
        if started.elapsed() > within {
            let seen = if seen.is_empty() {
                String::new()
            } else {
                format!("; last seen: {seen}")
            };
            panic!("timed out after {within:?} waiting for {what}{seen}");
        }
        std::thread::sleep(POLL);
    }
}

/// Polls `f` for at most `within` and says whether it held, without failing. Only for pacing
/// (letting a server settle or take a connection in before the next step), where not getting
/// there is fine and the test's assertions come after.
pub fn at_most(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while !f() {
        if started.elapsed() > within {
            return false;
        }
        std::thread::sleep(POLL);
    }
    true
}

#[test]
fn a_wait_that_times_out_fails_and_says_what_it_waited_for() {
    let failed = std::panic::catch_unwind(|| {
        until_ok(Duration::from_millis(50), "the moon", || {
            Err("no moon".into())
        })
    })
    .expect_err("the wait passed");
    let message = failed.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("waiting for the moon"), "{message}");
    assert!(message.contains("last seen: no moon"), "{message}");
    let mut n = 0;
    until(secs(5), "three polls", || {
        n += 1;
        n == 3
    });
    assert_eq!(n, 3);
}
