//! One-line log records on stderr: `2026-11-24T00:00:00Z LEVEL message`.
//!
//! Callers never pass the token, the AES key or a message body here.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn info(msg: &str) {
    line("INFO", msg);
}

pub fn warn(msg: &str) {
    line("WARN", msg);
}

pub fn error(msg: &str) {
    line("ERROR", msg);
}

/// A rejected request: method, path, status, reason, elapsed.
pub fn request(method: &str, path: &str, status: u16, reason: &str, elapsed: Duration) {
    line(
        "WARN",
        &format!(
            "{method} {path} {status} {reason} {:.3}ms",
            elapsed.as_secs_f64() * 1000.0
        ),
    );
}

fn line(level: &str, msg: &str) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let text = format!("{} {level} {msg}\n", utc(now));
    // One write call per record, so lines from different threads do not interleave; a closed
    // stderr must not take the server down.
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
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
    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(super::utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::utc(1_714_036_504), "2024-04-25T09:15:04Z");
        assert_eq!(super::utc(951_782_400), "2000-02-29T00:00:00Z");
    }
}
