//! The live view's buffer: the last [`CAPACITY`] requests on the message path, one numbered
//! line of words each (what the push said and what was answered included), which `wxmp tail`
//! reads from the metrics listener with `GET /tail?after=SEQ`.
//!
//! Bounded by construction: a fixed number of lines, each a few hundred bytes at most (the
//! content pieces are cut by [`crate::server::sample`]), about 256 KiB in all. The server keeps
//! no state per reader; a reader asks for the lines after the last one it saw, and one that
//! fell behind by more than the buffer is told how many it missed. A slow reader therefore
//! costs nothing but its own requests.
//!
//! The wire format (`text/plain`), defined here and read by `crate::tail`:
//! ```text
//! wxmp-tail epoch=1732406400123456789 last=42 skipped=0
//! 41 12:01:03 text from oAbc…(a1f3c2) "天气" → rule 1 (line 2): text "北京天气挺好的！" 0.4 ms
//! 42 12:01:04 …
//! ```
//! `epoch` names this run of the server (a reader that sees it change knows the numbering
//! started again), `last` is the newest number in the buffer, `skipped` how many lines after
//! `after` are no longer there.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::log::utc;
use crate::protocol::envelope::Mode;
use crate::server::access::{write_answer, write_kind, EventKey, Record, What, URL_CHECK_PASSED};
use crate::server::sample::Sample;

/// Lines kept.
pub const CAPACITY: usize = 256;
/// Lines in one answer; a reader further behind asks again at once.
pub const MAX_PAGE: usize = 100;
/// Longest a reader may wait for a new line in one request.
pub const MAX_WAIT: Duration = Duration::from_secs(2);
/// Readers allowed to wait at once; more are answered at once (they poll instead), so waiting
/// readers never take every thread of the metrics listener from the scraper.
pub const MAX_WAITERS: usize = 2;
/// Lines a new reader is shown from before it started, by default.
pub const DEFAULT_HISTORY: usize = 10;

/// The recent lines and their numbering.
pub struct Recent {
    epoch: u64,
    ring: Mutex<Ring>,
    arrived: Condvar,
    waiting: AtomicUsize,
    /// Set when the server stops: waiting readers return at once.
    closed: AtomicBool,
    /// [`MAX_WAIT`]; longer in a test that must tell "woken" from "timed out".
    max_wait: Duration,
}

#[derive(Default)]
struct Ring {
    /// The number of the newest line (0: none yet).
    last: u64,
    lines: VecDeque<(u64, Arc<str>)>,
}

/// What a reader asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ask {
    /// The last number the reader has seen; `None` for a new reader.
    pub after: Option<u64>,
    /// The epoch the reader's numbers belong to.
    pub epoch: Option<u64>,
    /// For a new reader: how many earlier lines to show.
    pub history: usize,
    /// How long to wait for a line when there is none yet (capped at [`MAX_WAIT`]).
    pub wait: Duration,
}

/// One answer to a reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub epoch: u64,
    pub last: u64,
    pub skipped: u64,
    pub lines: Vec<(u64, Arc<str>)>,
}

impl Recent {
    /// `epoch` names this run (the start time in nanoseconds will do).
    pub fn new(epoch: u64) -> Recent {
        Recent {
            epoch,
            ring: Mutex::new(Ring::default()),
            arrived: Condvar::new(),
            waiting: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            max_wait: MAX_WAIT,
        }
    }

    /// Releases waiting readers and stops new ones from waiting, so a stop is not held up by
    /// a `wxmp tail` that is waiting for a push.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        // Taking the lock orders this with a reader between its check and its wait.
        drop(self.ring());
        self.arrived.notify_all();
    }

    fn ring(&self) -> MutexGuard<'_, Ring> {
        // A panic elsewhere while holding the lock leaves a valid ring; keep serving.
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a line, dropping the oldest beyond [`CAPACITY`], and wakes waiting readers.
    pub fn push(&self, line: String) {
        {
            let mut ring = self.ring();
            ring.last += 1;
            let seq = ring.last;
            ring.lines.push_back((seq, Arc::from(line)));
            while ring.lines.len() > CAPACITY {
                ring.lines.pop_front();
            }
        }
        // A reader counts itself in `waiting` before it waits, under the lock this push took
        // after it; with no reader waiting, the wake-up (a futex call) is saved on every push.
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.arrived.notify_all();
        }
    }

    /// The lines after `ask.after`, waiting up to `ask.wait` for one when there are none.
    pub fn page(&self, ask: Ask) -> Page {
        let mut ring = self.ring();
        let after = match (ask.after, ask.epoch) {
            // Another run's numbers: everything this run has is new to the reader.
            (Some(_), Some(e)) if e != self.epoch => 0,
            (Some(a), _) if a > ring.last => 0,
            (Some(a), _) => a,
            (None, _) => ring.last.saturating_sub(ask.history.min(CAPACITY) as u64),
        };
        let wait = ask.wait.min(self.max_wait);
        if ring.last <= after && !wait.is_zero() && !self.closed.load(Ordering::SeqCst) {
            let admitted = self
                .waiting
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    (n < MAX_WAITERS).then_some(n + 1)
                })
                .is_ok();
            if admitted {
                let deadline = Instant::now() + wait;
                while ring.last <= after && !self.closed.load(Ordering::SeqCst) {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    ring = match self.arrived.wait_timeout(ring, left) {
                        Ok((r, _)) => r,
                        Err(p) => p.into_inner().0,
                    };
                }
                self.waiting.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let oldest = ring.lines.front().map_or(ring.last + 1, |l| l.0);
        Page {
            epoch: self.epoch,
            last: ring.last,
            skipped: oldest.saturating_sub(after + 1),
            lines: ring
                .lines
                .iter()
                .filter(|l| l.0 > after)
                .take(MAX_PAGE)
                .cloned()
                .collect(),
        }
    }
}

impl Page {
    /// The wire format (see the module doc).
    pub fn render(&self) -> String {
        let mut out = format!(
            "wxmp-tail epoch={} last={} skipped={}\n",
            self.epoch, self.last, self.skipped
        );
        for (seq, line) in &self.lines {
            let _ = writeln!(out, "{seq} {line}");
        }
        out
    }
}

/// One request in words, content included: `12:01:03 text from oAbc…(a1f3c2) "天气" → rule 1
/// (line 2): text "北京天气挺好的！" 0.4 ms`. `now` is Unix seconds (shown as UTC, like the log);
/// the user is shown as the log shows it.
pub fn line(now: u64, a: &Record<'_>, sample: Option<&Sample>) -> String {
    let time = utc(now);
    let time = time.get(11..19).unwrap_or(&time);
    let ms = a.millis();
    // Two decimals below a millisecond, where most pushes are.
    let ms = if ms < 1.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.1} ms")
    };
    let account = a.account.map_or_else(String::new, |n| format!("[{n}] "));
    let o = match (a.reason, a.what) {
        (None, What::Push(o)) => o,
        (reason, what) => {
            let what = match (reason, what) {
                (Some(reason), _) => format!(" {reason}"),
                (None, What::UrlCheck) => format!(" {URL_CHECK_PASSED}"),
                (None, _) => String::new(),
            };
            return format!(
                "{time} {account}{} {} {}{what} {ms}",
                a.method, a.path, a.status
            );
        }
    };
    let mut out = String::with_capacity(160);
    out.push_str(time);
    out.push(' ');
    out.push_str(&account);
    // The EventKey comes with the sample, beside the QR code's scene.
    write_kind(&mut out, o.push.as_ref(), EventKey::Hidden);
    if let Some(u) = a.user {
        let _ = write!(out, " from {u}");
    }
    if let Some(said) = sample.and_then(|s| s.said.as_deref()) {
        let _ = write!(out, " {said}");
    }
    out.push_str(" → ");
    write_answer(
        &mut out,
        o,
        sample.and_then(|s| s.reply.as_deref()).or(o.reply),
    );
    let _ = write!(out, " {ms}");
    if let Some(mode) = o.mode.filter(|m| *m != Mode::Plain) {
        let _ = write!(out, " ({mode} mode)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(after: Option<u64>) -> Ask {
        Ask {
            after,
            epoch: Some(7),
            history: DEFAULT_HISTORY,
            wait: Duration::ZERO,
        }
    }

    #[test]
    fn a_reader_gets_what_came_after_its_number() {
        let r = Recent::new(7);
        for i in 1..=3 {
            r.push(format!("line {i}"));
        }
        let p = r.page(ask(Some(1)));
        assert_eq!((p.last, p.skipped), (3, 0));
        assert_eq!(p.lines.iter().map(|l| l.0).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(
            p.render(),
            "wxmp-tail epoch=7 last=3 skipped=0\n2 line 2\n3 line 3\n"
        );
        assert!(r.page(ask(Some(3))).lines.is_empty());
    }

    #[test]
    fn the_buffer_is_bounded_and_a_slow_reader_is_told_what_it_missed() {
        let r = Recent::new(7);
        for i in 1..=(CAPACITY as u64 + 50) {
            r.push(format!("line {i}"));
        }
        assert_eq!(r.ring().lines.len(), CAPACITY);
        let p = r.page(ask(Some(10)));
        // Lines 11..=50 were dropped; the page starts at 51 and holds at most MAX_PAGE.
        assert_eq!(p.skipped, 40);
        assert_eq!(p.lines.first().map(|l| l.0), Some(51));
        assert_eq!(p.lines.len(), MAX_PAGE);
    }

    #[test]
    fn a_new_reader_sees_some_history_and_another_run_starts_over() {
        let r = Recent::new(7);
        for i in 1..=30 {
            r.push(format!("line {i}"));
        }
        let p = r.page(ask(None));
        assert_eq!((p.lines.len(), p.skipped), (DEFAULT_HISTORY, 0));
        let other = Ask {
            epoch: Some(6),
            ..ask(Some(500))
        };
        assert_eq!(r.page(other).lines.len(), 30);
        // A number from the future (a restart the reader has not noticed) starts over too.
        assert_eq!(r.page(ask(Some(500))).lines.len(), 30);
    }

    /// Polls `f` for up to 10 s; fails naming `what` if it never holds.
    #[track_caller]
    fn until(what: &str, mut f: impl FnMut() -> bool) {
        let started = Instant::now();
        while !f() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "timed out after 10 s waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn closing_releases_a_waiting_reader_at_once() {
        let mut r = Recent::new(7);
        // A wait far longer than the test's patience: finishing means "woken", not "timed out".
        r.max_wait = Duration::from_secs(600);
        let r = Arc::new(r);
        let long = Ask {
            wait: Duration::from_secs(600),
            ..ask(Some(0))
        };
        let reader = {
            let r = Arc::clone(&r);
            std::thread::spawn(move || r.page(long))
        };
        until("the reader waiting", || {
            r.waiting.load(Ordering::SeqCst) == 1
        });
        r.close();
        until("the reader released by close", || reader.is_finished());
        assert!(reader.join().unwrap().lines.is_empty());
        // Once closed, nobody waits.
        let _ = r.page(long);
        assert_eq!(r.waiting.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_waiting_reader_wakes_on_a_new_line() {
        let mut r = Recent::new(7);
        r.max_wait = Duration::from_secs(600);
        let r = Arc::new(r);
        let reader = {
            let r = Arc::clone(&r);
            std::thread::spawn(move || {
                r.page(Ask {
                    wait: Duration::from_secs(600),
                    ..ask(Some(0))
                })
            })
        };
        until("the reader waiting", || {
            r.waiting.load(Ordering::SeqCst) == 1
        });
        r.push("new".into());
        until("the reader woken by the push", || reader.is_finished());
        let p = reader.join().unwrap();
        assert_eq!(p.lines.len(), 1);
    }

    #[test]
    fn no_more_than_max_waiters_wait_at_once() {
        let mut r = Recent::new(7);
        r.max_wait = Duration::from_secs(600);
        let r = Arc::new(r);
        let long = Ask {
            wait: Duration::from_secs(600),
            ..ask(Some(0))
        };
        let waiters: Vec<_> = (0..MAX_WAITERS)
            .map(|_| {
                let r = Arc::clone(&r);
                std::thread::spawn(move || r.page(long))
            })
            .collect();
        until("MAX_WAITERS readers waiting", || {
            r.waiting.load(Ordering::SeqCst) == MAX_WAITERS
        });
        // One more is answered at once (it would otherwise wait 600 s).
        assert!(r.page(long).lines.is_empty());
        r.close();
        for w in waiters {
            assert!(w.join().unwrap().lines.is_empty());
        }
    }
}
