//! One-line log records on stderr, written through a [`Sink`] so tests capture what the server
//! says. Two formats ([`Format`]): text, `2026-11-24T00:00:00Z LEVEL message`, for people; JSON,
//! one object per line (`{"time":…,"level":…,"msg":…}`), for log shippers.
//!
//! A record is a text line plus, for JSON, its fields ([`Field`]); what goes into a record is
//! decided by the caller (`server::access` builds the access-log records). Callers never pass
//! the token, the AES key, the AppSecret or message content here.
//!
//! Stderr is written off the hot path ([`Queue`]): a handler hands its finished line to a bounded
//! queue and returns; one writer thread writes what has gathered, one `write` per batch. When
//! nobody reads stderr (a blocked pipe, a stuck log shipper), the queue fills and further lines
//! are dropped and counted, so the server goes on answering WeChat with a gap in its log instead
//! of stopping on it.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where finished lines go.
pub trait Sink: Send + Sync {
    /// `line` has no trailing newline.
    fn write_line(&self, line: &str);

    /// Hands over an owned line; sinks that keep lines take it without a copy.
    fn send_line(&self, line: String) {
        self.write_line(&line);
    }

    /// Lines this sink lost (a queue that was full); 0 for a sink that never drops.
    fn dropped(&self) -> u64 {
        0
    }

    /// Waits at most `within` for the lines handed over so far to be written; `false` if they
    /// were not. Immediate for a sink that writes as it is called.
    fn flush(&self, _within: Duration) -> bool {
        true
    }

    /// The format of the lines the sink writes on its own (the lost-lines line).
    fn use_format(&self, _format: Format) {}
}

/// The process's stderr written in the caller's thread, one write per line so lines from
/// different threads never interleave. The fallback when the [`Queue`]'s thread cannot start:
/// a blocked stderr then blocks the caller.
pub struct Stderr;

impl Sink for Stderr {
    fn write_line(&self, line: &str) {
        let mut text = String::with_capacity(line.len() + 1);
        text.push_str(line);
        text.push('\n');
        // A closed stderr must not take the server down.
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }
}

/// Lines waiting for the writer at most (about 150 KiB of access lines; 20-50 ms of a busy
/// server's log). Beyond it new lines are dropped, never the requests that logged them.
pub const QUEUE_LINES: usize = 1024;

/// How long the writer waits after being woken for more lines to join the first. Without it a
/// server at 15-20k pushes/s woke the writer for nearly every line (0.5 more context switches
/// per push in W2); a log line comes out at most this much later.
pub const LINGER: Duration = Duration::from_millis(2);

/// A bounded queue in front of a writer thread.
///
/// A caller pays for a lock and a push (and a wake-up when the writer was idle); it never
/// waits for the write. The writer takes everything queued at once (after [`LINGER`], when a
/// line woke it) and writes it with one `write_all`, so a busy server makes few, large writes. A line that finds the queue full is
/// dropped and counted ([`Sink::dropped`]); once the writer has taken the queue again, it adds
/// one line saying how many were lost ([`lost_text`]).
pub struct Queue {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// The writer waits here for lines.
    wake: Condvar,
    /// [`Sink::flush`] waits here for the writer.
    written: Condvar,
    capacity: usize,
    dropped: AtomicU64,
    json: AtomicBool,
}

#[derive(Default)]
struct State {
    lines: Vec<String>,
    /// The writer is waiting on `wake` (so a push must wake it).
    idle: bool,
    /// Dropped since the writer last took the queue: the next lost-lines line.
    lost: u64,
    /// Lines accepted since the start, and lines the writer has finished with (written or
    /// failed): a flush waits for `done` to reach `accepted`.
    accepted: u64,
    done: u64,
    /// Callers waiting in [`Sink::flush`] (the writer wakes them only then).
    flushers: usize,
}

impl Queue {
    /// Starts the writer thread, writing to `out`, with room for `capacity` lines.
    pub fn spawn(out: impl Write + Send + 'static, capacity: usize) -> std::io::Result<Queue> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            written: Condvar::new(),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
            json: AtomicBool::new(false),
        });
        let writer = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("log".into())
            .spawn(move || writer.run(out))?;
        Ok(Queue { shared })
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; if something did, the state is still whole.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, line: String) {
        let mut st = self.state();
        if st.lines.len() >= self.capacity {
            st.lost += 1;
            drop(st);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        st.lines.push(line);
        st.accepted += 1;
        // Wake the writer only when it sleeps: a busy writer finds the line on its next turn,
        // and a futex wake per line is what a handler should not pay.
        let wake = std::mem::replace(&mut st.idle, false);
        drop(st);
        if wake {
            self.wake.notify_one();
        }
    }

    /// The writer thread: take everything queued, write it at once, repeat.
    fn run(&self, mut out: impl Write) {
        let mut batch: Vec<String> = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let lost = {
                let mut st = self.state();
                if st.lines.is_empty() && st.lost == 0 {
                    while st.lines.is_empty() && st.lost == 0 {
                        st.idle = true;
                        st = self.wake.wait(st).unwrap_or_else(|p| p.into_inner());
                    }
                    st.idle = false;
                    // Woken by a first line: let the lines of the next moment join it, so a
                    // busy server wakes this thread once per batch, not once per line.
                    drop(st);
                    std::thread::sleep(LINGER);
                    st = self.state();
                }
                // The two vectors trade places, so neither is allocated again.
                std::mem::swap(&mut st.lines, &mut batch);
                std::mem::take(&mut st.lost)
            };
            let taken = batch.len() as u64;
            buf.clear();
            for line in batch.drain(..) {
                buf.extend_from_slice(line.as_bytes());
                buf.push(b'\n');
            }
            if lost > 0 {
                let json = self.json.load(Ordering::Relaxed);
                let format = if json { Format::Json } else { Format::Text };
                let text = lost_text(lost, self.capacity);
                buf.extend_from_slice(
                    render(
                        format,
                        Level::Warn,
                        &text,
                        &[("msg", Field::Str(&text)), ("lost", Field::Int(lost))],
                    )
                    .as_bytes(),
                );
                buf.push(b'\n');
            }
            // A stderr that refuses lines (closed, or not blocking) loses them: count them,
            // but say nothing about it there.
            if out.write_all(&buf).and_then(|()| out.flush()).is_err() {
                self.dropped.fetch_add(taken, Ordering::Relaxed);
            }
            // A burst must not keep its buffer for the rest of the run.
            if buf.capacity() > 1 << 20 {
                buf = Vec::new();
            }
            let mut st = self.state();
            st.done += taken;
            if st.flushers > 0 {
                drop(st);
                self.written.notify_all();
            }
        }
    }
}

impl Sink for Queue {
    fn write_line(&self, line: &str) {
        self.shared.push(line.to_owned());
    }

    fn send_line(&self, line: String) {
        self.shared.push(line);
    }

    fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    fn flush(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut st = self.shared.state();
        let target = st.accepted;
        st.flushers += 1;
        while st.done < target {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            st = match self.shared.written.wait_timeout(st, left) {
                Ok((st, _)) => st,
                Err(p) => p.into_inner().0,
            };
        }
        st.flushers -= 1;
        st.done >= target
    }

    fn use_format(&self, format: Format) {
        self.shared
            .json
            .store(format == Format::Json, Ordering::Relaxed);
    }
}

/// The line the writer adds after lines were dropped: `N log lines lost: …`.
pub fn lost_text(lost: u64, capacity: usize) -> String {
    let lines = if lost == 1 { "line" } else { "lines" };
    format!(
        "{lost} log {lines} lost: stderr was not read fast enough and {capacity} lines were already waiting (counted in wxmp_log_lines_dropped_total)"
    )
}

/// The one stderr queue of the process: every [`Log::stderr`] shares its writer, so lines are
/// written in the order they were handed over.
fn stderr_sink() -> Arc<dyn Sink> {
    static STDERR: OnceLock<Arc<dyn Sink>> = OnceLock::new();
    Arc::clone(
        STDERR.get_or_init(|| match Queue::spawn(std::io::stderr(), QUEUE_LINES) {
            Ok(q) => Arc::new(q) as Arc<dyn Sink>,
            Err(_) => Arc::new(Stderr),
        }),
    )
}

/// Keeps lines in memory, for tests.
#[derive(Default)]
pub struct Capture(Mutex<Vec<String>>);

impl Capture {
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Sink for Capture {
    fn write_line(&self, line: &str) {
        if let Ok(mut lines) = self.0.lock() {
            lines.push(line.to_owned());
        }
    }
}

/// How lines are written (`--log-format` / `WXMP_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// `TIME LEVEL message`, as readable as a person needs.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Some(Format::Text),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

/// A record's severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

impl Level {
    fn text(self) -> &'static str {
        match self {
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        }
    }

    fn json(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// A value in a JSON record.
#[derive(Debug, Clone, PartialEq)]
pub enum Field<'a> {
    Str(&'a str),
    Int(u64),
    /// Written with three decimals (durations in milliseconds).
    Millis(f64),
}

/// A logger: cheap to clone, shared by the server's parts.
#[derive(Clone)]
pub struct Log {
    sink: Arc<dyn Sink>,
    format: Format,
}

impl Default for Log {
    fn default() -> Self {
        Log::stderr()
    }
}

impl Log {
    /// The process's stderr, through its [`Queue`].
    pub fn stderr() -> Log {
        Log::to(stderr_sink())
    }

    pub fn to(sink: Arc<dyn Sink>) -> Log {
        Log {
            sink,
            format: Format::Text,
        }
    }

    pub fn with_format(mut self, format: Format) -> Log {
        self.format = format;
        self.sink.use_format(format);
        self
    }

    /// Lines lost so far because the sink's queue was full (or stderr refused them).
    pub fn dropped(&self) -> u64 {
        self.sink.dropped()
    }

    /// Waits at most `within` for the lines logged so far to be written; `false` if they were
    /// not (stderr blocked). Called before the process exits.
    pub fn flush(&self, within: Duration) -> bool {
        self.sink.flush(within)
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn info(&self, msg: &str) {
        self.message(Level::Info, msg);
    }

    pub fn warn(&self, msg: &str) {
        self.message(Level::Warn, msg);
    }

    pub fn error(&self, msg: &str) {
        self.message(Level::Error, msg);
    }

    /// A free-text line: the message as it is in text, `"msg"` in JSON.
    pub fn message(&self, level: Level, msg: &str) {
        self.record(level, msg, &[("msg", Field::Str(msg))]);
    }

    /// One record: `text` in the text format, `fields` (after `time` and `level`) in JSON.
    pub fn record(&self, level: Level, text: &str, fields: &[(&str, Field<'_>)]) {
        self.sink
            .send_line(render(self.format, level, text, fields));
    }
}

/// A record's line, stamped with the current time.
fn render(format: Format, level: Level, text: &str, fields: &[(&str, Field<'_>)]) -> String {
    let time = now_utc();
    match format {
        Format::Text => format!("{time} {} {text}", level.text()),
        Format::Json => {
            let mut out = String::with_capacity(128 + text.len());
            out.push_str("{\"time\":");
            json_string(&mut out, &time);
            out.push_str(",\"level\":");
            json_string(&mut out, level.json());
            for (name, value) in fields {
                out.push(',');
                json_string(&mut out, name);
                out.push(':');
                match value {
                    Field::Str(s) => json_string(&mut out, s),
                    Field::Int(n) => {
                        let _ = write!(out, "{n}");
                    }
                    Field::Millis(ms) if ms.is_finite() => {
                        let _ = write!(out, "{ms:.3}");
                    }
                    Field::Millis(_) => out.push_str("null"),
                }
            }
            out.push('}');
            out
        }
    }
}

thread_local! {
    /// The last second formatted on this thread: most lines share their second with the line
    /// before, and formatting a date costs more than the rest of an access line.
    static LAST_TIME: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
}

/// The current time as [`utc`] writes it.
fn now_utc() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    LAST_TIME.with(|last| {
        let mut last = last.borrow_mut();
        if last.0 != secs {
            *last = (secs, utc(secs));
        }
        last.1.clone()
    })
}

/// Appends `s` as a JSON string: quotes, backslashes and control characters escaped (so a
/// record stays one line whatever a hostile path holds), and so are the characters that move
/// or end lines on a terminal or in a viewer (NEL, the line and paragraph separators, the
/// bidi overrides that make a line read backwards), as the text log's escapes do; everything
/// else as UTF-8.
pub fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // U+2028/2029 end lines in JavaScript-based shippers.
            c if crate::text::is_hidden_control(c) => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// RFC 3339 UTC time from Unix seconds (Howard Hinnant's civil-from-days algorithm).
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_714_036_504), "2024-04-25T09:15:04Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn a_capture_sink_keeps_whole_lines() {
        let capture = Arc::new(Capture::default());
        let log = Log::to(capture.clone());
        log.warn("a");
        log.record(
            Level::Warn,
            "POST /weixin 403 signature mismatch 0.000ms",
            &[],
        );
        let lines = capture.lines();
        assert!(lines[0].ends_with(" WARN a"), "{lines:?}");
        assert!(lines[1].ends_with("POST /weixin 403 signature mismatch 0.000ms"));
    }

    #[test]
    fn json_records_are_one_object_per_line_with_escapes() {
        let capture = Arc::new(Capture::default());
        let log = Log::to(capture.clone()).with_format(Format::Json);
        log.record(
            Level::Info,
            "ignored in json",
            &[
                ("path", Field::Str("/a\"b\\c\nd\u{1}")),
                ("status", Field::Int(200)),
                ("duration_ms", Field::Millis(0.25)),
            ],
        );
        log.error("bad \"thing\"");
        let lines = capture.lines();
        assert_eq!(lines.len(), 2);
        let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(first["level"], "info");
        assert_eq!(first["path"], "/a\"b\\c\nd\u{1}");
        assert_eq!(first["status"], 200);
        assert_eq!(first["duration_ms"], 0.25);
        assert!(first["time"].as_str().unwrap().ends_with('Z'));
        assert!(!lines[0].contains("ignored"));
        let second: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(
            (second["level"].as_str(), second["msg"].as_str()),
            (Some("error"), Some("bad \"thing\""))
        );
    }

    /// A writer that holds every write until the test opens its gate, and keeps what it wrote.
    #[derive(Clone, Default)]
    struct Gated {
        state: Arc<(Mutex<GateState>, std::sync::Condvar)>,
    }

    #[derive(Default)]
    struct GateState {
        open: bool,
        /// Writes begun (the writer is inside one when this runs ahead of `finished`).
        begun: usize,
        out: Vec<u8>,
    }

    impl Gated {
        fn open(&self) {
            self.state.0.lock().unwrap().open = true;
            self.state.1.notify_all();
        }

        fn text(&self) -> String {
            String::from_utf8(self.state.0.lock().unwrap().out.clone()).unwrap()
        }

        /// Polls until the writer is blocked inside a write.
        fn wait_for_a_write(&self) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.state.0.lock().unwrap().begun == 0 {
                assert!(
                    Instant::now() < deadline,
                    "the writer never started a write"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    impl Write for Gated {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (lock, cond) = &*self.state;
            let mut st = lock.lock().unwrap();
            st.begun += 1;
            cond.notify_all();
            while !st.open {
                st = cond.wait(st).unwrap();
            }
            st.out.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_writer_costs_dropped_lines_not_blocked_callers() {
        let gate = Gated::default();
        let queue = Arc::new(Queue::spawn(gate.clone(), 4).unwrap());
        let log = Log::to(queue.clone());
        log.info("first");
        gate.wait_for_a_write();
        // The writer is stuck on "first": four lines wait, three more find the queue full.
        let started = Instant::now();
        for i in 1..=7 {
            log.info(&format!("line {i}"));
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a caller waited for a stuck writer"
        );
        assert_eq!(log.dropped(), 3);
        assert!(!log.flush(Duration::from_millis(50)), "flushed while stuck");
        gate.open();
        assert!(
            log.flush(Duration::from_secs(10)),
            "no flush after the gate opened"
        );
        let text = gate.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6, "{text}");
        for (line, want) in lines
            .iter()
            .zip(["first", "line 1", "line 2", "line 3", "line 4"])
        {
            assert!(line.ends_with(&format!(" INFO {want}")), "{line}");
        }
        assert!(
            lines[5].ends_with(&format!(" WARN {}", lost_text(3, 4))),
            "{}",
            lines[5]
        );
        assert!(lines[5].contains(" 3 log lines lost: "), "{}", lines[5]);
        // Caught up: the next line comes alone, with no second note.
        log.info("after");
        assert!(log.flush(Duration::from_secs(10)));
        let text = gate.text();
        assert!(text.ends_with(" INFO after\n"), "{text}");
        assert_eq!(text.matches("lost").count(), 1, "{text}");
        assert_eq!(log.dropped(), 3);
    }

    #[test]
    fn the_lost_lines_line_is_json_in_the_json_format() {
        let gate = Gated::default();
        let queue = Arc::new(Queue::spawn(gate.clone(), 1).unwrap());
        let log = Log::to(queue).with_format(Format::Json);
        log.info("first");
        gate.wait_for_a_write();
        log.info("waits");
        log.info("dropped");
        gate.open();
        assert!(log.flush(Duration::from_secs(10)));
        let text = gate.text();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[1]["msg"], "waits");
        assert_eq!(lines[2]["level"], "warn");
        assert_eq!(lines[2]["lost"], 1);
        assert_eq!(lines[2]["msg"].as_str(), Some(lost_text(1, 1).as_str()));
        assert!(lost_text(1, 1).starts_with("1 log line lost: "));
    }

    #[test]
    fn lines_from_many_threads_arrive_whole_and_in_each_threads_order() {
        let gate = Gated::default();
        gate.open();
        let log = Log::to(Arc::new(Queue::spawn(gate.clone(), 10_000).unwrap()));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..200 {
                        log.info(&format!("t{t} n{i:03} {}", "x".repeat(i)));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(log.flush(Duration::from_secs(10)));
        assert_eq!(log.dropped(), 0);
        let text = gate.text();
        for t in 0..8 {
            let mine: Vec<&str> = text
                .lines()
                .filter_map(|l| l.split(" INFO ").nth(1))
                .filter(|l| l.starts_with(&format!("t{t} ")))
                .collect();
            assert_eq!(mine.len(), 200);
            for (i, line) in mine.iter().enumerate() {
                assert_eq!(*line, format!("t{t} n{i:03} {}", "x".repeat(i)));
            }
        }
    }

    /// Regression (issue 19, N11): the JSON log wrote U+202E (right-to-left override) and
    /// U+0085 (NEL) raw, where the text log escapes them.
    #[test]
    fn json_escapes_every_character_that_moves_or_ends_a_line() {
        let hostile = "a\u{202e}b\u{85}c\u{7f}d\u{2028}e\u{2066}f\u{200f}g\u{61c}h";
        let mut out = String::new();
        json_string(&mut out, hostile);
        assert!(out.is_ascii(), "{out:?}");
        assert!(out.contains("\\u202e") && out.contains("\\u0085"), "{out}");
        let back: String = serde_json::from_str(&out).unwrap();
        assert_eq!(back, hostile);
        // Chinese text and emoji stay readable.
        let mut plain = String::new();
        json_string(&mut plain, "天气 👍");
        assert_eq!(plain, "\"天气 👍\"");
        // The text log escapes the same characters (routes::printable and access use
        // escape_debug).
        for c in [
            '\u{202e}', '\u{85}', '\u{2028}', '\u{2066}', '\u{200f}', '\u{61c}',
        ] {
            assert_ne!(c.escape_debug().to_string(), c.to_string(), "{c:?}");
        }
    }

    #[test]
    fn formats_parse_in_any_case() {
        assert_eq!(Format::parse("JSON"), Some(Format::Json));
        assert_eq!(Format::parse(" text "), Some(Format::Text));
        assert_eq!(Format::parse("yaml"), None);
    }
}
