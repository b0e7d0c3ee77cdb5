//! One-line log records: `2026-11-24T00:00:00Z LEVEL message`, written through a [`Sink`] so
//! the server writes to stderr and tests capture what it says.
//!
//! Callers never pass the token, the AES key or a message body here.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where finished lines go.
pub trait Sink: Send + Sync {
    /// `line` has no trailing newline.
    fn write_line(&self, line: &str);
}

/// The process's stderr, one write per line so lines from different threads never interleave.
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

/// A logger: cheap to clone, shared by the server's parts.
#[derive(Clone)]
pub struct Log {
    sink: Arc<dyn Sink>,
}

impl Default for Log {
    fn default() -> Self {
        Log::stderr()
    }
}

impl Log {
    pub fn stderr() -> Log {
        Log {
            sink: Arc::new(Stderr),
        }
    }

    pub fn to(sink: Arc<dyn Sink>) -> Log {
        Log { sink }
    }

    pub fn info(&self, msg: &str) {
        self.line("INFO", msg);
    }

    pub fn warn(&self, msg: &str) {
        self.line("WARN", msg);
    }

    pub fn error(&self, msg: &str) {
        self.line("ERROR", msg);
    }

    /// A rejected request: method, path, status, reason, elapsed.
    pub fn request(&self, method: &str, path: &str, status: u16, reason: &str, elapsed: Duration) {
        self.line(
            "WARN",
            &format!(
                "{method} {path} {status} {reason} {:.3}ms",
                elapsed.as_secs_f64() * 1000.0
            ),
        );
    }

    fn line(&self, level: &str, msg: &str) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.sink.write_line(&format!("{} {level} {msg}", utc(now)));
    }
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
        log.request("POST", "/weixin", 403, "signature mismatch", Duration::ZERO);
        let lines = capture.lines();
        assert!(lines[0].ends_with(" WARN a"), "{lines:?}");
        assert!(lines[1].ends_with("POST /weixin 403 signature mismatch 0.000ms"));
    }
}
