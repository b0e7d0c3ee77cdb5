//! Carries the HTTP layer's own log records (tiny_http writes them through the `log` facade:
//! malformed requests it answered itself, refused connections) into wxmp's log, one line each.

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Bridge;

static BRIDGE: Bridge = Bridge;

/// Installs the bridge for warnings and errors; a second call does nothing.
pub fn install() {
    if log::set_logger(&BRIDGE).is_ok() {
        log::set_max_level(LevelFilter::Warn);
    }
}

impl Log for Bridge {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= Level::Warn
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // The records carry no request bytes, but an OS error text could; keep it one line.
        let mut text = String::from("http: ");
        for c in record.args().to_string().chars() {
            if c.is_control() {
                text.extend(c.escape_debug());
            } else {
                text.push(c);
            }
        }
        match record.level() {
            Level::Error => crate::log::error(&text),
            _ => crate::log::warn(&text),
        }
    }

    fn flush(&self) {}
}
