//! Carries the HTTP layer's own log records (tiny_http writes them through the `log` facade:
//! malformed requests it answered itself, refused connections) into wxmp's log, one line each.

use std::sync::OnceLock;

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Bridge;

static BRIDGE: Bridge = Bridge;
/// The server's log: the `log` facade is process-wide, so its sink is too.
static TARGET: OnceLock<crate::log::Log> = OnceLock::new();

/// Installs the bridge for warnings and errors, writing to `target`; a second call does nothing.
pub fn install(target: crate::log::Log) {
    if TARGET.set(target).is_ok() && log::set_logger(&BRIDGE).is_ok() {
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
        let Some(target) = TARGET.get() else {
            return;
        };
        match record.level() {
            Level::Error => target.error(&text),
            _ => target.warn(&text),
        }
    }

    fn flush(&self) {}
}
