//! One-line log records on stderr, written through a [`Sink`] so tests capture what the server
//! says. Two formats ([`Format`]): text, `2026-11-24T00:00:00Z LEVEL message`, for people; JSON,
//! one object per line (`{"time":…,"level":…,"msg":…}`), for log shippers.
//!
//! A record is a text line plus, for JSON, its fields ([`Field`]); what goes into a record is
//! decided by the caller (`server::access` builds the access-log records). Callers never pass
//! the token, the AES key, the AppSecret or message content here.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

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
    pub fn stderr() -> Log {
        Log::to(Arc::new(Stderr))
    }

    pub fn to(sink: Arc<dyn Sink>) -> Log {
        Log {
            sink,
            format: Format::Text,
        }
    }

    pub fn with_format(mut self, format: Format) -> Log {
        self.format = format;
        self
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
        let time = now_utc();
        let line = match self.format {
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
        };
        self.sink.write_line(&line);
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
/// record stays one line whatever a hostile path holds); everything else as UTF-8.
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
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
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

    #[test]
    fn formats_parse_in_any_case() {
        assert_eq!(Format::parse("JSON"), Some(Format::Json));
        assert_eq!(Format::parse(" text "), Some(Format::Text));
        assert_eq!(Format::parse("yaml"), None);
    }
}
