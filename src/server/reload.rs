//! Hot reload of the rules file: polled by modification time and size, and on demand (SIGHUP).
//! A changed file is loaded only once it has stopped changing for `SETTLE` (500 ms) and did not
//! change while being read: a file rewritten in place (most editors' default, and `>` in a shell)
//! passes through empty and half-written states, which parse as valid, shorter rule sets. A
//! reload that fails keeps the old rules and logs why, so a typo never takes the account down.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crate::log::Log;
use crate::rules::{RuleSet, RulesError, SharedRules};
use crate::server::media::{self, Uploader};
use crate::server::metrics::Metrics;

const POLL: Duration = Duration::from_millis(250);
/// How long a changed file must keep the same modification time and size before it is loaded:
/// two polls. Editors write a file within milliseconds; a writer that pauses longer than this
/// mid-file can still be caught half-way, so such files are best written elsewhere and renamed
/// into place (docs/rules.md says so).
const SETTLE: Duration = Duration::from_millis(500);

/// Reads and parses a rules file, and checks the files its replies send (exists, type by
/// content, WeChat's size limit); errors carry the file name and line.
pub fn load(path: &Path) -> Result<RuleSet, RulesError> {
    let name = path.display().to_string();
    let text = fs::read_to_string(path).map_err(|e| RulesError {
        file: name.clone(),
        line: None,
        reason: format!("cannot read: {e}"),
    })?;
    let set = RuleSet::parse(&text, &name)?;
    media::check_files(&set, &name)?;
    Ok(set)
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// What the watcher needs besides the rules it swaps.
pub struct Watch {
    /// The rules file; `None`: the built-in rules are in use, and SIGHUP only says so.
    pub file: Option<PathBuf>,
    /// Set by SIGHUP: reload now.
    pub hup: Arc<AtomicBool>,
    /// Set when the server stops.
    pub stop: Arc<AtomicBool>,
    pub log: Log,
    /// Each reload is counted by outcome.
    pub metrics: Arc<Metrics>,
    /// Uploads the files the rules send; `None` without the API, when such rules are refused.
    pub media: Option<Arc<Uploader>>,
}

/// Watches the rules file until `stop` is set, swapping good versions into `rules`. SIGHUP is
/// decided here alone: a reload now with a file, a warning without one.
pub fn watch(rules: Arc<SharedRules>, w: Watch) -> thread::JoinHandle<()> {
    thread::spawn(move || match &w.file {
        Some(path) => follow(path, &rules, &w),
        None => {
            while !w.stop.load(Ordering::Relaxed) {
                thread::sleep(POLL);
                if w.hup.swap(false, Ordering::Relaxed) {
                    w.log.warn("SIGHUP: no rules file to reload; the built-in rules are in use (pass --rules FILE or set WXMP_RULES)");
                }
            }
        }
    })
}

fn follow(path: &Path, rules: &SharedRules, w: &Watch) {
    // What was last loaded, and what the file looks like now and since when.
    let mut loaded = stamp(path);
    let (mut seen, mut seen_since) = (loaded, Instant::now());
    while !w.stop.load(Ordering::Relaxed) {
        thread::sleep(POLL);
        let now = stamp(path);
        if now != seen {
            (seen, seen_since) = (now, Instant::now());
        }
        if w.hup.swap(false, Ordering::Relaxed) {
            loaded = now;
            let media = w.media.as_deref();
            w.metrics
                .reload(reload(path, rules, "SIGHUP", &w.log, media));
        } else if now != loaded && seen_since.elapsed() >= SETTLE {
            // Loaded only if the file did not change while it was read; otherwise the next
            // polls see the change and wait again.
            if let Some(set) = load_settled(path, now) {
                loaded = now;
                let ok = swap_in(path, rules, set, "file changed", &w.log, w.media.as_deref());
                w.metrics.reload(ok);
            }
        }
    }
}

/// Loads the file if it still has the stamp `expected` after reading it. `None`: it changed
/// meanwhile. A parse error is the result (logged by [`swap_in`]), not a reason to wait.
fn load_settled(
    path: &Path,
    expected: Option<(SystemTime, u64)>,
) -> Option<Result<RuleSet, RulesError>> {
    let set = load(path);
    (stamp(path) == expected).then_some(set)
}

/// Loads the file again and swaps it in (true), or keeps the old rules and says why (false).
pub fn reload(
    path: &Path,
    rules: &SharedRules,
    why: &str,
    log: &Log,
    media: Option<&Uploader>,
) -> bool {
    swap_in(path, rules, load(path), why, log, media)
}

fn swap_in(
    path: &Path,
    rules: &SharedRules,
    loaded: Result<RuleSet, RulesError>,
    why: &str,
    log: &Log,
    media: Option<&Uploader>,
) -> bool {
    // Files are looked up (and new ones queued for upload) before the set serves.
    let loaded = loaded.and_then(|set| {
        match media {
            Some(u) => u.admit(&set, &path.display().to_string())?,
            None => media::require_api(&set, &path.display().to_string())?,
        }
        Ok(set)
    });
    match loaded {
        Ok(set) => {
            let n = set.rules().len();
            for w in set.warnings() {
                log.warn(&format!("rules: {w}"));
            }
            rules.replace(set);
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
