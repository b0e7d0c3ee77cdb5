//! The access_token: one holder per process, refreshed ahead of its expiry, kept in a cache file
//! between runs.
//!
//! Why each rule:
//! - **Refresh ahead.** WeChat's guide asks for it, and during the last minutes both the old and
//!   the new token work, so a token fetched early never leaves a gap. The margin is
//!   [`REFRESH_AHEAD`] (5 minutes), or half the token's lifetime when WeChat hands out a token
//!   that lives less than twice that (a fake with a short expiry, or `stable_token` returning a
//!   token that is about to be renewed), so a short-lived token is still used before it is
//!   replaced instead of being refetched on every call.
//! - **One refresher.** A refresh takes a lock; a caller who finds another thread refreshing
//!   keeps using the old token while it is still valid, and waits only when there is none.
//! - **The cache file.** A test account may fetch 200 tokens a day and every restart used to
//!   cost one; a still-fresh token from the file costs nothing. The file is re-read before every
//!   fetch, so a second process (the server and a `wxmp menu push` on the same machine) picks up
//!   the other's token instead of replacing it. It is written 0600, atomically (a temporary file
//!   renamed over it), and never holds the AppSecret.
//! - **A rejected token** (40001/40014/42001) is replaced only if it is still the one held: when
//!   two callers see the same rejection, the second uses the first one's fresh token.
//! - **Several instances** (`--store redis://...`) share one token through [`SharedTokens`]:
//!   the token lives there, one instance at a time refreshes it (a lock that lapses by
//!   itself), the others wait for its write, and a rejection is compared, under that lock,
//!   with the token the store holds, so N instances seeing one 40001 cause one refresh. The
//!   copy in memory is re-read after [`SHARED_COPY`] seconds, so a token another instance
//!   replaced is seen without a failed call. When the store cannot be reached, the instance
//!   falls back to the path above (its cache file and its own fetch).
//!
//! Out of scope here: HTTP (the client passes a `fetch` function) and the clock (passed in, so
//! tests move it by hand).

use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, TryLockError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::api::error::ApiError;
use crate::api::TokenEndpoint;

/// Refresh at least this long before the token expires (WeChat's stable_token renews 5 minutes
/// ahead too).
pub const REFRESH_AHEAD: u64 = 300;

/// With a shared store, the in-memory copy is trusted this long (seconds) before the store is
/// asked again: short, so a token another instance replaced is picked up within seconds, and
/// never past the token's own refresh time.
pub const SHARED_COPY: u64 = 5;

/// A waiter for another instance's refresh asks the store again at least this often, in case
/// a notification was lost.
const SHARED_RECHECK: Duration = Duration::from_millis(250);

/// The store shared with other instances could not be used; the caller falls back to its own
/// token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// Where several processes keep one token (Redis, with `--store`), one per AppID. Every method
/// may fail with [`Unavailable`], and the holder then does without it.
pub trait SharedTokens: Send + Sync {
    /// The token held there, if any (one for another API base counts as none).
    fn read(&self) -> Result<Option<Held>, Unavailable>;
    /// Takes the refresh lock, which lapses by itself if its holder dies; false: another
    /// process holds it.
    fn lock(&self) -> Result<bool, Unavailable>;
    /// Releases the lock if it is still this process's.
    fn unlock(&self);
    /// Stores a token just fetched (expiring before WeChat's expiry), and wakes the processes
    /// waiting for it.
    fn write(&self, held: &Held, now: u64) -> Result<(), Unavailable>;
    /// A count of the notifications so far, for [`SharedTokens::wait`].
    fn events(&self) -> u64;
    /// Waits at most `timeout` for a notification after `seen`.
    fn wait(&self, seen: u64, timeout: Duration);
}

/// An access_token. Its `Debug` is redacted; only [`AccessToken::expose`] shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(String);

impl AccessToken {
    pub fn new(token: impl Into<String>) -> AccessToken {
        AccessToken(token.into())
    }

    /// The token itself, for a request's query or `wxmp token --show`.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(***)")
    }
}

/// A token and where and when it was obtained (times in Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub token: AccessToken,
    pub fetched_at: u64,
    pub expires_at: u64,
    pub endpoint: TokenEndpoint,
    pub api_base: String,
}

impl Held {
    /// From now on, a fresh token is fetched before this one is used again.
    pub fn refresh_at(&self) -> u64 {
        let lifetime = self.expires_at.saturating_sub(self.fetched_at);
        self.expires_at - REFRESH_AHEAD.min(lifetime / 2)
    }

    /// Usable without a refresh.
    pub fn is_fresh(&self, now: u64) -> bool {
        now < self.refresh_at()
    }

    /// Still accepted by WeChat (though perhaps due for a refresh).
    pub fn is_valid(&self, now: u64) -> bool {
        now < self.expires_at
    }
}

/// The cache file could not be read or written. The token still works from memory; the client
/// reports this as a note.
#[derive(Debug)]
pub enum CacheError {
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Not the JSON wxmp writes (another tool's file, or a truncated write).
    Parse { path: PathBuf, detail: String },
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl fmt::Display for CacheError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheError::Read { path, error } => {
                write!(f, "cannot read the token cache {}: {error}", path.display())
            }
            CacheError::Parse { path, detail } => write!(
                f,
                "the token cache {} is not wxmp's ({detail}); it will be replaced",
                path.display()
            ),
            CacheError::Write { path, error } => write!(
                f,
                "cannot write the token cache {}: {error}; the token is kept in memory only (check --token-cache / WXMP_TOKEN_CACHE)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for CacheError {}

/// The cache file's content. `app_id` and `api_base` are checked on reading, so one file never
/// hands one account's (or a fake API's) token to another.
#[derive(Serialize, Deserialize)]
struct CacheFile {
    app_id: String,
    api_base: String,
    endpoint: String,
    access_token: String,
    fetched_at: u64,
    expires_at: u64,
}

/// The most a cache file is read: wxmp writes about 300 bytes, and a cache path pointed at
/// `/dev/zero` or a huge file must not fill the memory.
pub const MAX_CACHE_BYTES: u64 = 64 * 1024;

/// Reads the cached token for `app_id` at `api_base`; `Ok(None)` when there is none (no file,
/// or one for another AppID or API base). A symbolic link, anything but a regular file, and a
/// file over [`MAX_CACHE_BYTES`] are refused: the cache holds a secret, and its directory may
/// be shared.
pub fn read_cache(path: &Path, app_id: &str, api_base: &str) -> Result<Option<Held>, CacheError> {
    let text = match read_bounded(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(CacheError::Read {
                path: path.to_owned(),
                error,
            })
        }
    };
    let file: CacheFile = serde_json::from_str(&text).map_err(|e| CacheError::Parse {
        path: path.to_owned(),
        detail: e.to_string(),
    })?;
    if file.app_id != app_id || file.api_base != api_base {
        return Ok(None);
    }
    let endpoint = match file.endpoint.as_str() {
        "classic" => TokenEndpoint::Classic,
        _ => TokenEndpoint::Stable,
    };
    Ok(Some(Held {
        token: AccessToken(file.access_token),
        fetched_at: file.fetched_at,
        expires_at: file.expires_at,
        endpoint,
        api_base: file.api_base,
    }))
}

/// The file at `path`, opened without following a link and without blocking (a FIFO), read
/// only if it is a regular file, and at most [`MAX_CACHE_BYTES`].
fn read_bounded(path: &Path) -> std::io::Result<String> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(|e| {
        if e == rustix::io::Errno::LOOP {
            std::io::Error::other("it is a symbolic link, which wxmp does not follow there")
        } else {
            std::io::Error::from(e)
        }
    })?;
    let file = fs::File::from(fd);
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("it is not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_CACHE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_CACHE_BYTES {
        return Err(std::io::Error::other(format!(
            "it is larger than {} KiB, so not wxmp's",
            MAX_CACHE_BYTES / 1024
        )));
    }
    String::from_utf8(bytes).map_err(|_| std::io::Error::other("it is not UTF-8, so not wxmp's"))
}

/// A temporary file beside `path` that did not exist before (created exclusively, so never
/// through a link someone planted), with a random name and mode 0600.
fn create_temp(path: &Path) -> std::io::Result<(PathBuf, fs::File)> {
    let name = path
        .file_name()
        .map_or_else(|| "token".into(), |n| n.to_string_lossy().into_owned());
    let mut last = None;
    for _ in 0..8 {
        let mut random = [0u8; 8];
        getrandom::getrandom(&mut random).map_err(|e| std::io::Error::other(e.to_string()))?;
        let tmp = path.with_file_name(format!(".{name}.{}.tmp", hex::encode(random)));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(OFLAG_NOFOLLOW)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free temporary name")))
}

/// `O_NOFOLLOW` for `OpenOptions` (its value differs between architectures).
const OFLAG_NOFOLLOW: i32 = rustix::fs::OFlags::NOFOLLOW.bits() as i32;

/// Writes the token atomically with mode 0600 (its directory 0700 when created).
pub fn write_cache(path: &Path, app_id: &str, held: &Held) -> Result<(), CacheError> {
    let err = |error| CacheError::Write {
        path: path.to_owned(),
        error,
    };
    let file = CacheFile {
        app_id: app_id.to_owned(),
        api_base: held.api_base.clone(),
        endpoint: held.endpoint.name().to_owned(),
        access_token: held.token.0.clone(),
        fetched_at: held.fetched_at,
        expires_at: held.expires_at,
    };
    let text = serde_json::to_string_pretty(&file)
        .map_err(|e| err(std::io::Error::other(e.to_string())))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err)?;
    }
    let (tmp, mut f) = create_temp(path).map_err(err)?;
    let written = f
        .write_all(text.as_bytes())
        .and_then(|()| f.write_all(b"\n"))
        .and_then(|()| f.sync_all())
        // rename replaces a link at `path` itself; it never writes through one.
        .and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map_err(err)
}

/// The process's one token holder.
pub struct Tokens {
    app_id: String,
    api_base: String,
    cache: Option<PathBuf>,
    held: Mutex<Option<Held>>,
    /// Held while fetching, so concurrent callers never fetch twice.
    refreshing: Mutex<()>,
    /// Cache problems, for the caller to report (the token still works from memory).
    notes: Mutex<Vec<String>>,
    /// The store shared with other instances, and how long to wait for another's refresh.
    shared: OnceLock<(Arc<dyn SharedTokens>, Duration)>,
    /// When (by the caller's clock) the token in memory was last read from the shared store.
    shared_read_at: Mutex<u64>,
}

/// Whether a fetch may return the token WeChat holds or must get a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// The current token is fine if WeChat still holds one.
    IfNeeded,
    /// A new token, even if the current one is valid (WeChat refused it).
    Force,
}

/// How to fetch a token.
pub type Fetch<'a> = dyn Fn(Refresh) -> Result<Held, ApiError> + 'a;

impl Tokens {
    pub fn new(app_id: &str, api_base: &str, cache: Option<PathBuf>) -> Tokens {
        Tokens {
            app_id: app_id.to_owned(),
            api_base: api_base.to_owned(),
            cache,
            held: Mutex::new(None),
            refreshing: Mutex::new(()),
            notes: Mutex::new(Vec::new()),
            shared: OnceLock::new(),
            shared_read_at: Mutex::new(0),
        }
    }

    /// Keeps the token in `store`, shared with other instances; a caller waits at most `wait`
    /// for another instance's refresh before fetching its own. Set once; later calls are
    /// ignored.
    pub fn share(&self, store: Arc<dyn SharedTokens>, wait: Duration) {
        let _ = self.shared.set((store, wait));
    }

    /// The token held in memory, if any.
    pub fn current(&self) -> Option<Held> {
        lock(&self.held).clone()
    }

    /// Cache problems noted since the last call.
    pub fn take_notes(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.notes))
    }

    /// A fresh token: the one held, else the cache file's, else a fetched one.
    pub fn get(&self, now: &dyn Fn() -> u64, fetch: &Fetch<'_>) -> Result<AccessToken, ApiError> {
        if let Some(h) = self.current().filter(|h| h.is_fresh(now())) {
            if self.shared.get().is_none()
                || now() < lock(&self.shared_read_at).saturating_add(SHARED_COPY)
            {
                return Ok(h.token);
            }
        }
        if let Some((store, wait)) = self.shared.get() {
            if let Some(token) = self.shared_get(store.as_ref(), *wait, None, now, fetch)? {
                return Ok(token);
            }
        }
        let _refreshing = match self.refreshing.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => {
                // Another thread is fetching: keep using the old token while WeChat accepts it.
                if let Some(h) = self.current().filter(|h| h.is_valid(now())) {
                    return Ok(h.token);
                }
                lock(&self.refreshing)
            }
        };
        // Someone may have refreshed while we waited for the lock.
        if let Some(h) = self.current().filter(|h| h.is_fresh(now())) {
            return Ok(h.token);
        }
        if let Some(h) = self.cached().filter(|h| h.is_fresh(now())) {
            return Ok(self.hold(h));
        }
        Ok(self.hold_fetched(fetch(Refresh::IfNeeded)?))
    }

    /// A replacement for `rejected`, which WeChat refused: another caller's newer token if there
    /// is one, else a forced fetch.
    pub fn replace(
        &self,
        rejected: &AccessToken,
        now: &dyn Fn() -> u64,
        fetch: &Fetch<'_>,
    ) -> Result<AccessToken, ApiError> {
        if let Some((store, wait)) = self.shared.get() {
            if let Some(token) =
                self.shared_get(store.as_ref(), *wait, Some(rejected), now, fetch)?
            {
                return Ok(token);
            }
        }
        let _refreshing = lock(&self.refreshing);
        let newer = |h: &Held| &h.token != rejected && h.is_fresh(now());
        if let Some(h) = self.current().filter(newer) {
            return Ok(h.token);
        }
        if let Some(h) = self.cached().filter(newer) {
            return Ok(self.hold(h));
        }
        Ok(self.hold_fetched(fetch(Refresh::Force)?))
    }

    /// A token through the shared store: the one it holds when usable (fresh, and not
    /// `rejected`), else one this instance fetches under the store's lock (after comparing
    /// again under it), else, while another instance holds the lock, the one it writes.
    /// `Ok(None)`: the store is unavailable, and the caller uses its own path.
    fn shared_get(
        &self,
        store: &dyn SharedTokens,
        wait: Duration,
        rejected: Option<&AccessToken>,
        now: &dyn Fn() -> u64,
        fetch: &Fetch<'_>,
    ) -> Result<Option<AccessToken>, ApiError> {
        let usable = |h: &Held| h.is_fresh(now()) && rejected.is_none_or(|r| h.token != *r);
        let deadline = Instant::now() + wait;
        loop {
            let seen = store.events();
            let Ok(found) = store.read() else {
                return Ok(None);
            };
            if let Some(h) = found.as_ref().filter(|h| usable(h)) {
                return Ok(Some(self.hold_shared(h.clone(), now())));
            }
            match store.lock() {
                Err(Unavailable) => return Ok(None),
                Ok(true) => {
                    let got = self.refresh_locked(store, rejected, &usable, now, fetch);
                    store.unlock();
                    return got;
                }
                Ok(false) => {}
            }
            // Another instance is refreshing: a token WeChat still accepts serves meanwhile.
            if rejected.is_none() {
                let valid = found.or_else(|| self.current());
                if let Some(h) = valid.filter(|h| h.is_valid(now())) {
                    return Ok(Some(h.token));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // Its holder died or is stuck past any fetch's limit: do without it.
                let held = fetch(refresh_of(rejected))?;
                let _ = store.write(&held, now());
                return Ok(Some(self.hold_shared(held, now())));
            }
            store.wait(seen, left.min(SHARED_RECHECK));
        }
    }

    /// Under the shared lock: the store's token if another instance wrote a usable one since
    /// it was read, else this instance's own (still fresh, not rejected: Redis lost it), else
    /// a fetched one, written for the others.
    fn refresh_locked(
        &self,
        store: &dyn SharedTokens,
        rejected: Option<&AccessToken>,
        usable: &dyn Fn(&Held) -> bool,
        now: &dyn Fn() -> u64,
        fetch: &Fetch<'_>,
    ) -> Result<Option<AccessToken>, ApiError> {
        let again = match store.read() {
            Ok(h) => h,
            Err(Unavailable) => return Ok(None),
        };
        if let Some(h) = again.filter(|h| usable(h)) {
            return Ok(Some(self.hold_shared(h, now())));
        }
        let held = match self.current().filter(|h| usable(h)) {
            Some(mine) => mine,
            None => fetch(refresh_of(rejected))?,
        };
        let _ = store.write(&held, now());
        if let Some(path) = &self.cache {
            if let Err(e) = write_cache(path, &self.app_id, &held) {
                self.note(e.to_string());
            }
        }
        Ok(Some(self.hold_shared(held, now())))
    }

    /// Holds a token read from (or written to) the shared store, noting when.
    fn hold_shared(&self, held: Held, now: u64) -> AccessToken {
        *lock(&self.shared_read_at) = now;
        self.hold(held)
    }

    fn cached(&self) -> Option<Held> {
        let path = self.cache.as_ref()?;
        match read_cache(path, &self.app_id, &self.api_base) {
            Ok(h) => h,
            Err(e) => {
                self.note(e.to_string());
                None
            }
        }
    }

    /// Holds a token just fetched, and writes it to the cache file for the next process.
    fn hold_fetched(&self, held: Held) -> AccessToken {
        if let Some(path) = &self.cache {
            if let Err(e) = write_cache(path, &self.app_id, &held) {
                self.note(e.to_string());
            }
        }
        self.hold(held)
    }

    /// Holds a token in memory (one read from the cache file is not written back).
    fn hold(&self, held: Held) -> AccessToken {
        let token = held.token.clone();
        *lock(&self.held) = Some(held);
        token
    }

    fn note(&self, text: String) {
        lock(&self.notes).push(text);
    }
}

/// A forced fetch replaces a rejected token; otherwise WeChat's current one will do.
fn refresh_of(rejected: Option<&AccessToken>) -> Refresh {
    if rejected.is_some() {
        Refresh::Force
    } else {
        Refresh::IfNeeded
    }
}

/// A poisoned lock only means another thread panicked while holding it; the data (a token, a
/// list of notes) is still consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    const BASE: &str = "https://api.weixin.qq.com";

    fn held(token: &str, fetched_at: u64, lifetime: u64) -> Held {
        Held {
            token: AccessToken::new(token),
            fetched_at,
            expires_at: fetched_at + lifetime,
            endpoint: TokenEndpoint::Stable,
            api_base: BASE.into(),
        }
    }

    /// A fetch that counts its calls and hands out `t1`, `t2`, ... valid for `lifetime` from
    /// the clock's time.
    struct Fake {
        clock: Arc<AtomicU64>,
        fetches: AtomicU64,
        forced: AtomicU64,
        lifetime: u64,
    }

    impl Fake {
        fn new(lifetime: u64) -> Fake {
            Fake {
                clock: Arc::new(AtomicU64::new(1_000_000)),
                fetches: AtomicU64::new(0),
                forced: AtomicU64::new(0),
                lifetime,
            }
        }

        fn now(&self) -> u64 {
            self.clock.load(Ordering::SeqCst)
        }

        fn advance(&self, secs: u64) {
            self.clock.fetch_add(secs, Ordering::SeqCst);
        }

        fn fetch(&self, refresh: Refresh) -> Result<Held, ApiError> {
            let n = self.fetches.fetch_add(1, Ordering::SeqCst) + 1;
            if refresh == Refresh::Force {
                self.forced.fetch_add(1, Ordering::SeqCst);
            }
            Ok(held(&format!("t{n}"), self.now(), self.lifetime))
        }

        fn get(&self, tokens: &Tokens) -> String {
            tokens
                .get(&|| self.now(), &|f| self.fetch(f))
                .unwrap()
                .expose()
                .to_owned()
        }
    }

    fn temp_path(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("wxmp-token-unit-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir.join("sub").join("token.json")
    }

    #[test]
    fn refreshes_five_minutes_before_a_two_hour_token_expires() {
        let fake = Fake::new(7200);
        let tokens = Tokens::new("wx1", BASE, None);
        assert_eq!(fake.get(&tokens), "t1");
        fake.advance(7200 - 301);
        assert_eq!(fake.get(&tokens), "t1", "still fresh 301 s before expiry");
        fake.advance(1);
        assert_eq!(fake.get(&tokens), "t2", "refreshed 300 s before expiry");
        assert_eq!(fake.fetches.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_short_lived_token_is_used_for_half_its_life() {
        let fake = Fake::new(4);
        let tokens = Tokens::new("wx1", BASE, None);
        assert_eq!(fake.get(&tokens), "t1");
        fake.advance(1);
        assert_eq!(fake.get(&tokens), "t1");
        fake.advance(1);
        assert_eq!(
            fake.get(&tokens),
            "t2",
            "refreshed at half of 4 s, still valid"
        );
        assert_eq!(held("x", 0, 4).refresh_at(), 2);
        assert_eq!(held("x", 0, 7200).refresh_at(), 6900);
        assert_eq!(held("x", 0, 0).refresh_at(), 0);
    }

    #[test]
    fn a_fresh_cached_token_costs_no_fetch_across_restarts() {
        let path = temp_path("reuse");
        let fake = Fake::new(7200);
        let first = Tokens::new("wx1", BASE, Some(path.clone()));
        assert_eq!(fake.get(&first), "t1");
        let mode = fs::metadata(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o600);
        assert!(!fs::read_to_string(&path).unwrap().contains("secret"));
        fake.advance(3600);
        let restarted = Tokens::new("wx1", BASE, Some(path.clone()));
        assert_eq!(fake.get(&restarted), "t1");
        assert_eq!(fake.fetches.load(Ordering::SeqCst), 1);
        // Another AppID, or another API base, never gets this token.
        let other = Tokens::new("wx2", BASE, Some(path.clone()));
        assert_eq!(fake.get(&other), "t2");
        let fake_base = Tokens::new("wx2", "http://127.0.0.1:1", Some(path.clone()));
        assert_eq!(fake.get(&fake_base), "t3");
        let dir_mode = fs::metadata(path.parent().unwrap()).unwrap();
        assert_eq!(dir_mode.permissions().mode() & 0o777, 0o700);
    }

    #[test]
    fn a_cached_token_within_the_margin_is_refreshed_not_reused() {
        let path = temp_path("margin");
        write_cache(&path, "wx1", &held("old", 1_000_000 - 7000, 7200)).unwrap();
        let fake = Fake::new(7200);
        let tokens = Tokens::new("wx1", BASE, Some(path.clone()));
        assert_eq!(
            fake.get(&tokens),
            "t1",
            "200 s left is inside the 300 s margin"
        );
        let back = read_cache(&path, "wx1", BASE).unwrap().unwrap();
        assert_eq!(back.token.expose(), "t1");
    }

    #[test]
    fn a_broken_cache_file_is_noted_and_replaced() {
        let path = temp_path("broken");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, "not json").unwrap();
        let fake = Fake::new(7200);
        let tokens = Tokens::new("wx1", BASE, Some(path.clone()));
        assert_eq!(fake.get(&tokens), "t1");
        let notes = tokens.take_notes();
        assert!(notes[0].contains("is not wxmp's"), "{notes:?}");
        assert!(read_cache(&path, "wx1", BASE).unwrap().is_some());
    }

    /// Regression (issue 19, N9): the temporary file had a predictable name and followed a
    /// planted link, and the cache was read with no size limit (`/dev/zero` took 1 GB).
    #[test]
    fn the_cache_never_follows_links_and_reads_a_bounded_amount() {
        use std::os::unix::fs::symlink;
        let path = temp_path("links");
        let dir = path.parent().unwrap().to_owned();
        fs::create_dir_all(&dir).unwrap();
        // Links planted where the old, predictable temporary names were.
        let victim = dir.join("victim");
        fs::write(&victim, "untouched").unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let planted = format!(".{name}.{}.tmp", std::process::id());
        symlink(&victim, dir.join(&planted)).unwrap();
        write_cache(&path, "wx1", &held("t", 1_000_000, 7200)).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "untouched");
        assert!(read_cache(&path, "wx1", BASE).unwrap().is_some());
        // No temporary file is left behind.
        let left: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp") && *n != planted)
            .collect();
        assert!(left.is_empty(), "{left:?}");

        // The cache path itself a link: refused on reading, replaced (not followed) on writing.
        let linked = dir.join("linked.json");
        write_cache(
            &victim.with_file_name("real.json"),
            "wx1",
            &held("t", 1, 7200),
        )
        .unwrap();
        symlink(dir.join("real.json"), &linked).unwrap();
        let e = read_cache(&linked, "wx1", BASE).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        write_cache(&linked, "wx1", &held("new", 1, 7200)).unwrap();
        assert!(!fs::symlink_metadata(&linked)
            .unwrap()
            .file_type()
            .is_symlink());
        let real = read_cache(&dir.join("real.json"), "wx1", BASE)
            .unwrap()
            .unwrap();
        assert_eq!(
            real.token.expose(),
            "t",
            "the link's target was not written"
        );

        // Not a regular file, and too large: refused without reading it all.
        let e = read_cache(Path::new("/dev/zero"), "wx1", BASE)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let big = dir.join("big.json");
        fs::write(&big, vec![b' '; (MAX_CACHE_BYTES + 1) as usize]).unwrap();
        let e = read_cache(&big, "wx1", BASE).unwrap_err().to_string();
        assert!(e.contains("larger than 64 KiB"), "{e}");
    }

    #[test]
    fn a_rejected_token_is_replaced_once_by_a_forced_fetch() {
        let fake = Fake::new(7200);
        let tokens = Tokens::new("wx1", BASE, None);
        let t1 = AccessToken::new(fake.get(&tokens));
        let now = || fake.now();
        let fetch = |f| fake.fetch(f);
        assert_eq!(tokens.replace(&t1, &now, &fetch).unwrap().expose(), "t2");
        // A second caller that saw t1 rejected too gets t2, without another fetch.
        assert_eq!(tokens.replace(&t1, &now, &fetch).unwrap().expose(), "t2");
        assert_eq!(fake.fetches.load(Ordering::SeqCst), 2);
        assert_eq!(fake.forced.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn concurrent_callers_trigger_one_fetch() {
        let fake = Arc::new(Fake::new(7200));
        let tokens = Arc::new(Tokens::new("wx1", BASE, None));
        let gate = Arc::new(std::sync::Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (fake, tokens, gate) = (fake.clone(), tokens.clone(), gate.clone());
                std::thread::spawn(move || {
                    gate.wait();
                    tokens
                        .get(&|| fake.now(), &|f| {
                            // A slow fetch, so the others arrive while it runs.
                            std::thread::sleep(std::time::Duration::from_millis(50));
                            fake.fetch(f)
                        })
                        .unwrap()
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap().expose(), "t1");
        }
        assert_eq!(fake.fetches.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn during_a_refresh_others_keep_the_still_valid_token() {
        let fake = Fake::new(7200);
        let tokens = Tokens::new("wx1", BASE, None);
        assert_eq!(fake.get(&tokens), "t1");
        fake.advance(7000); // inside the margin, still valid
        let _busy = tokens.refreshing.lock().unwrap();
        let got = tokens
            .get(&|| fake.now(), &|_| panic!("must not fetch"))
            .unwrap();
        assert_eq!(got.expose(), "t1");
    }

    #[test]
    fn debug_never_shows_the_token() {
        let h = held("SECRET_TOKEN_VALUE", 0, 7200);
        assert!(!format!("{h:?}").contains("SECRET_TOKEN_VALUE"));
    }
}
