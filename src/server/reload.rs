//! Hot reload of the rules file: polled about once a second by modification time (and size, for
//! editors that write twice within a second), and on demand (SIGHUP). A reload that fails keeps
//! the old rules and logs why, so a typo never takes the account down.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime};

use crate::log::Log;
use crate::rules::{RuleSet, RulesError};
use crate::server::account::Account;
use crate::server::metrics::Metrics;
use crate::server::pipeline::Pipeline;

const POLL: Duration = Duration::from_millis(250);
const CHECK_EVERY: u32 = 4; // polls: about once a second

/// Reads and parses a rules file; errors carry the file name and line.
pub fn load(path: &Path) -> Result<RuleSet, RulesError> {
    let name = path.display().to_string();
    let text = fs::read_to_string(path).map_err(|e| RulesError {
        file: name.clone(),
        line: None,
        reason: format!("cannot read: {e}"),
    })?;
    RuleSet::parse(&text, &name)
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Watches `path` until `stop` is set; `hup` asks for an immediate reload. Each reload is
/// counted in `metrics` by outcome.
pub fn watch(
    path: PathBuf,
    pipeline: Arc<Pipeline>,
    hup: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    log: Log,
    metrics: Arc<Metrics>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut last = stamp(&path);
        let mut tick = 0u32;
        while !stop.load(Ordering::Relaxed) {
            thread::sleep(POLL);
            tick = tick.wrapping_add(1);
            let forced = hup.swap(false, Ordering::Relaxed);
            if !forced && !tick.is_multiple_of(CHECK_EVERY) {
                continue;
            }
            let now = stamp(&path);
            if !forced && now == last {
                continue;
            }
            last = now;
            let why = if forced { "SIGHUP" } else { "file changed" };
            metrics.reload(reload(&path, pipeline.account(), why, &log));
        }
    })
}

/// Loads the file again and swaps it in (true), or keeps the old rules and says why (false).
pub fn reload(path: &Path, account: &Account, why: &str, log: &Log) -> bool {
    match load(path) {
        Ok(set) => {
            let n = set.rules().len();
            for w in set.warnings() {
                log.warn(&format!("rules: {w}"));
            }
            account.rules.replace(set);
            log.info(&format!(
                "rules reloaded ({why}): {n} rules from {}",
                path.display()
            ));
            true
        }
        Err(e) => {
            log.error(&format!(
                "rules reload failed ({why}), keeping the old rules: {e}"
            ));
            false
        }
    }
}
