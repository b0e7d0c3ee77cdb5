//! Files in rules (`reply.image = { file = "pics/menu.png" }`): checked on every load, uploaded
//! as permanent material off the request path, their media_ids kept between runs.
//!
//! [`check_files`] is what `check-rules` and every load run without the API: each file exists,
//! is of its reply's type by content, and within WeChat's size limit. [`Uploader::adopt`] runs
//! when a rule set is about to serve: each file's content hash is looked up in the state file
//! (beside the token cache, keyed by AppID and hash), so an unchanged file is never uploaded
//! again, across restarts; the rest go to one background thread that uploads them with the
//! API client. Until a file's upload succeeds, its rule answers `success`. A refused upload is
//! logged with WeChat's sentence and tried again on the next reload, at most once a minute.
//!
//! With `--store redis://...`, the instances share the map: `media:APPID:SHA1` holds the
//! media_id for [`MEDIA_TTL`], renewed each time a load uses it, and one instance at a time
//! uploads a file (`media:APPID:SHA1:lock`), so N instances with one picture upload it once.
//! Permanent material stays on WeChat until it is deleted, and each upload takes one of the
//! account's 100,000 images, so the entry lives long; the expiry only lets Redis forget files
//! no rule names any more. When Redis fails, the state file and a local upload do as before.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::api::media::{self, MediaType};
use crate::api::{Client, Upload};
use crate::log::Log;
use crate::rules::{MediaSlot, RuleSet, RulesError};
use crate::server::shared::Shared as Store;

/// How long Redis keeps a media_id after the last load that used it (30 days): see the
/// module's documentation.
pub const MEDIA_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Another instance's upload is waited for at most this much beyond the API timeout; its lock
/// lapses then, so an instance that died mid-upload delays the others by no more.
const UPLOAD_SLACK: Duration = Duration::from_secs(5);
/// A waiter asks Redis again at least this often, in case a notification was lost.
const RECHECK: Duration = Duration::from_millis(250);

/// A refused upload is not tried again sooner than this.
pub const RETRY_AFTER: Duration = Duration::from_secs(60);
/// The state file is small JSON; a larger one is not wxmp's.
const MAX_STATE: u64 = 4 << 20;

/// Checks every file the rules name, as WeChat would, without the API. The error names the
/// rules file, the rule and its line.
pub fn check_files(set: &RuleSet, file: &str) -> Result<(), RulesError> {
    for slot in set.media_files() {
        read_checked(&slot).map_err(|reason| RulesError {
            file: file.to_owned(),
            line: Some(slot.line),
            reason: format!("rule {}: {reason}", slot.rule),
        })?;
    }
    Ok(())
}

/// A rule set with files needs the API to upload them: the error says what to add.
pub fn require_api(set: &RuleSet, file: &str) -> Result<(), RulesError> {
    refuse_files(
        set,
        file,
        "is uploaded as permanent material, which needs the WeChat API: pass --appid and --secret (or set WXMP_APPID and WXMP_SECRET)",
    )
}

/// Refuses a set whose replies send files, for a rules file that accounts of several AppIDs
/// share.
fn one_app_id(set: &RuleSet, file: &str) -> Result<(), RulesError> {
    refuse_files(
        set,
        file,
        "is uploaded with one AppID's API, and this rules file serves accounts of several AppIDs: give each AppID's accounts a rules file of their own",
    )
}

/// The first file `set` sends, as an error at its line saying `why` it cannot be sent.
fn refuse_files(set: &RuleSet, file: &str, why: &str) -> Result<(), RulesError> {
    match set.media_files().first() {
        None => Ok(()),
        Some(slot) => Err(RulesError {
            file: file.to_owned(),
            line: Some(slot.line),
            reason: format!(
                "rule {}: reply.{} = {{ file = {:?} }} {why}",
                slot.rule, slot.reply, slot.shown
            ),
        }),
    }
}

/// The file's bytes, checked against its type.
fn read_checked(slot: &MediaSlot) -> Result<Vec<u8>, String> {
    let ty =
        MediaType::parse(slot.kind).ok_or_else(|| format!("unknown media type {}", slot.kind))?;
    let what = format!("reply.{} file {:?}", slot.reply, slot.shown);
    let limit = ty.max_bytes() as u64;
    let f = fs::File::open(&slot.path)
        .map_err(|e| format!("{what}: cannot read {}: {e}", slot.path.display()))?;
    let mut bytes = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{what}: cannot read {}: {e}", slot.path.display()))?;
    media::check(ty, &bytes).map_err(|e| match e {
        media::MediaError::TooLarge { .. } => format!(
            "{what}: it has more than {} bytes; WeChat takes {} of at most {}",
            ty.max_bytes(),
            ty.with_article(),
            ty.limit_text()
        ),
        e => format!("{what}: {e}"),
    })?;
    Ok(bytes)
}

/// What is kept for one uploaded file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    media_id: String,
    #[serde(rename = "type")]
    ty: String,
    /// The file it came from, for people reading the state file.
    file: String,
    uploaded_at: u64,
}

/// The state file: one per AppID, files by the SHA-1 of their content.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    app_id: String,
    /// media_ids are per API: the fake's mean nothing to WeChat.
    api_base: String,
    files: BTreeMap<String, Entry>,
}

/// One upload to do: the slot to fill, and the hash of the bytes that were checked.
struct Job {
    slot: Arc<MediaSlot>,
    hash: String,
}

/// Uploads the rules' files and remembers their media_ids.
pub struct Uploader {
    jobs: Mutex<mpsc::Sender<Job>>,
    shared: Arc<Shared>,
    /// Set once an account of another AppID (or with no API) shares the rules file: a media_id
    /// belongs to the AppID that uploaded it, so from then on the file may not send files.
    across_app_ids: std::sync::atomic::AtomicBool,
}

struct Shared {
    app_id: String,
    client: Arc<Client>,
    /// The Redis the instances share the map on (`--store`).
    store: Option<Arc<Store>>,
    state_path: Option<PathBuf>,
    state: Mutex<StateFile>,
    /// When each hash's last upload was refused.
    refused: Mutex<HashMap<String, Instant>>,
    log: Log,
}

/// `media-APPID.json` beside the token cache; `None` when the token is kept in memory only.
pub fn state_path(token_cache: Option<&Path>, app_id: &str) -> Option<PathBuf> {
    let dir = token_cache?.parent()?;
    let name = crate::config::app_id_in_file_name(app_id);
    Some(dir.join(format!("media-{name}.json")))
}

impl Uploader {
    /// The AppID whose API it uploads with.
    pub fn app_id(&self) -> &str {
        &self.shared.app_id
    }

    /// Lets an account of another AppID (or with no API) use the rules file, whose replies
    /// send no files now, nor may on any reload.
    pub fn share_across_app_ids(&self, set: &RuleSet, file: &str) -> Result<(), RulesError> {
        one_app_id(set, file)?;
        self.across_app_ids
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Looks up the files `set` sends (and queues new ones for upload), or refuses a set that
    /// sends files when the rules file serves several AppIDs.
    pub fn admit(&self, set: &RuleSet, file: &str) -> Result<(), RulesError> {
        if self
            .across_app_ids
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            one_app_id(set, file)?;
        }
        self.adopt(set);
        Ok(())
    }

    /// Reads the state file and starts the upload thread; with `store`, the media_ids are
    /// shared there.
    pub fn start(client: Arc<Client>, store: Option<Arc<Store>>, log: Log) -> Arc<Uploader> {
        let config = client.config();
        let state_path = state_path(config.token_cache.as_deref(), &config.app_id);
        let fresh = StateFile {
            app_id: config.app_id.clone(),
            api_base: config.api_base.clone(),
            files: BTreeMap::new(),
        };
        let state = match state_path.as_deref().map(read_state) {
            Some(Ok(Some(s))) if s.app_id == fresh.app_id && s.api_base == fresh.api_base => s,
            Some(Err(e)) => {
                log.warn(&format!("media: {e}; files are uploaded again"));
                fresh
            }
            _ => fresh,
        };
        let shared = Arc::new(Shared {
            app_id: config.app_id.clone(),
            client,
            store,
            state_path,
            state: Mutex::new(state),
            refused: Mutex::new(HashMap::new()),
            log,
        });
        let (tx, rx) = mpsc::channel::<Job>();
        {
            let shared = Arc::clone(&shared);
            thread::spawn(move || {
                for job in rx {
                    shared.upload(&job);
                }
            });
        }
        Arc::new(Uploader {
            jobs: Mutex::new(tx),
            shared,
            across_app_ids: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Fills each file's media_id that is known, and queues the rest for upload (a file
    /// refused less than [`RETRY_AFTER`] ago waits for a later reload). Reads and hashes the
    /// files, so it runs on the loading thread, never on a push.
    pub fn adopt(&self, set: &RuleSet) {
        for slot in set.media_files() {
            let bytes = match read_checked(&slot) {
                Ok(b) => b,
                Err(reason) => {
                    self.shared
                        .log
                        .error(&format!("media: rule {}: {reason}", slot.rule));
                    continue;
                }
            };
            let hash = sha1_smol::Sha1::from(&bytes).digest().to_string();
            if let Some(id) = self.shared.known(&hash, &slot) {
                slot.set(id);
                continue;
            }
            let recent = self
                .shared
                .refused
                .lock()
                .ok()
                .and_then(|r| r.get(&hash).copied())
                .is_some_and(|at| at.elapsed() < RETRY_AFTER);
            if recent {
                self.shared.log.warn(&format!(
                    "media: {} was refused less than a minute ago; rule {} answers success until a later reload uploads it",
                    slot.shown, slot.rule
                ));
                continue;
            }
            let sent = self
                .jobs
                .lock()
                .map(|tx| {
                    tx.send(Job {
                        slot: Arc::clone(&slot),
                        hash,
                    })
                    .is_ok()
                })
                .unwrap_or(false);
            if !sent {
                self.shared
                    .log
                    .error("media: the upload thread has stopped");
            }
        }
    }
}

impl Shared {
    fn lock_state(&self) -> std::sync::MutexGuard<'_, StateFile> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The media_id of the content `hash`, from Redis (renewing it there) or the state file
    /// (sharing it on Redis, where it was missing).
    fn known(&self, hash: &str, slot: &MediaSlot) -> Option<String> {
        let local = self.lock_state().files.get(hash).cloned();
        let Some(store) = &self.store else {
            return local.map(|e| e.media_id);
        };
        let key = self.key(store, hash);
        let ttl = MEDIA_TTL.as_secs();
        let shared = store
            .run(|c| {
                redis::pipe()
                    .cmd("GET")
                    .arg(&key)
                    .cmd("EXPIRE")
                    .arg(&key)
                    .arg(ttl)
                    .ignore()
                    .query::<(Option<Vec<u8>>,)>(c)
            })
            .ok()
            .and_then(|(v,)| serde_json::from_slice::<Entry>(&v?).ok());
        match (shared, local) {
            (Some(e), _) => {
                self.remember(hash, e.clone(), slot);
                Some(e.media_id)
            }
            (None, Some(e)) => {
                self.share(store, hash, &e);
                Some(e.media_id)
            }
            (None, None) => None,
        }
    }

    fn key(&self, store: &Store, hash: &str) -> String {
        format!("{}media:{}:{hash}", store.prefix(), self.app_id)
    }

    /// Puts an entry on Redis for the other instances (unless one is there) and wakes them.
    fn share(&self, store: &Store, hash: &str, e: &Entry) {
        let key = self.key(store, hash);
        let Ok(value) = serde_json::to_vec(e) else {
            return;
        };
        let _ = store.run(|c| {
            redis::pipe()
                .cmd("SET")
                .arg(&key)
                .arg(&value)
                .arg("NX")
                .arg("EX")
                .arg(MEDIA_TTL.as_secs())
                .ignore()
                .cmd("PUBLISH")
                .arg(store.channel())
                .arg(&key)
                .ignore()
                .query::<()>(c)
        });
    }

    /// Keeps an entry in the state file too, so a restart finds it even without Redis.
    fn remember(&self, hash: &str, e: Entry, slot: &MediaSlot) {
        let text = {
            let mut state = self.lock_state();
            if state
                .files
                .get(hash)
                .is_some_and(|old| old.media_id == e.media_id)
            {
                return;
            }
            state.files.insert(hash.to_owned(), e);
            serde_json::to_string_pretty(&*state).unwrap_or_default()
        };
        if let Some(path) = &self.state_path {
            if let Err(err) = write_private(path, text.as_bytes()) {
                self.log.warn(&format!(
                    "media: cannot write {}: {err}; rule {} still answers the shared media_id",
                    path.display(),
                    slot.rule
                ));
            }
        }
    }

    /// With Redis: waits while another instance uploads the same content, and takes the
    /// upload lock when no one holds it. `Some(id)`: another instance's media_id; `None`:
    /// upload here (holding the lock, or without Redis). Returns the lock's key to release.
    fn turn(&self, job: &Job) -> (Option<String>, Option<String>) {
        let Some(store) = &self.store else {
            return (None, None);
        };
        let key = self.key(store, &job.hash);
        let lock = format!("{key}:lock");
        let lease = self.client.config().timeout + UPLOAD_SLACK;
        let me = store.instance().to_owned();
        let deadline = Instant::now() + lease * 2;
        loop {
            let seen = store.events();
            if let Some(id) = self.known(&job.hash, &job.slot) {
                return (Some(id), None);
            }
            let taken = store.run(|c| {
                redis::cmd("SET")
                    .arg(&lock)
                    .arg(&me)
                    .arg("NX")
                    .arg("PX")
                    .arg(lease.as_millis() as u64)
                    .query::<Option<String>>(c)
            });
            match taken {
                // Compare again under the lock: the holder may have finished just before.
                Ok(Some(_)) => return (self.known(&job.hash, &job.slot), Some(lock)),
                Ok(None) if Instant::now() < deadline => store.wait_event(seen, RECHECK),
                // Redis failed, or the holder is stuck: upload here.
                _ => return (None, None),
            }
        }
    }

    fn upload(&self, job: &Job) {
        let slot = &job.slot;
        // Another job may have uploaded the same content meanwhile.
        if let Some(e) = self.lock_state().files.get(&job.hash) {
            slot.set(e.media_id.clone());
            return;
        }
        let (theirs, lock) = self.turn(job);
        if let Some(id) = theirs {
            slot.set(id);
            self.unlock(lock);
            return;
        }
        self.upload_here(job);
        self.unlock(lock);
    }

    /// Releases the upload lock (it lapses by itself otherwise).
    fn unlock(&self, lock: Option<String>) {
        if let (Some(store), Some(lock)) = (&self.store, lock) {
            let _ = store.run(|c| {
                redis::cmd("EVAL")
                    .arg(crate::server::redis_token::UNLOCK)
                    .arg(1)
                    .arg(&lock)
                    .arg(store.instance())
                    .query::<i64>(c)
            });
        }
    }

    fn upload_here(&self, job: &Job) {
        let slot = &job.slot;
        let Some(ty) = MediaType::parse(slot.kind) else {
            return;
        };
        let bytes = match read_checked(slot) {
            Ok(b) => b,
            Err(reason) => {
                self.log
                    .error(&format!("media: rule {}: {reason}", slot.rule));
                return;
            }
        };
        // The file changed since it was hashed: the next load uploads what it is then.
        if sha1_smol::Sha1::from(&bytes).digest().to_string() != job.hash {
            return;
        }
        let name = slot
            .path
            .file_name()
            .map_or_else(|| "file".to_owned(), |n| n.to_string_lossy().into_owned());
        let upload = Upload {
            ty,
            name: &name,
            data: &bytes,
            title: slot.title.as_deref().unwrap_or(&name),
            introduction: slot.description.as_deref().unwrap_or(""),
        };
        let started = Instant::now();
        match self.client.upload(&upload, true) {
            Ok(done) => {
                // Kept first, so a media_id that answers is one a restart finds again.
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let entry = Entry {
                    media_id: done.media_id.clone(),
                    ty: ty.name().to_owned(),
                    file: slot.shown.clone(),
                    uploaded_at: now,
                };
                if let Some(store) = &self.store {
                    self.share(store, &job.hash, &entry);
                }
                let text = {
                    let mut state = self.lock_state();
                    state.files.insert(job.hash.clone(), entry);
                    serde_json::to_string_pretty(&*state).unwrap_or_default()
                };
                if let Some(path) = &self.state_path {
                    if let Err(e) = write_private(path, text.as_bytes()) {
                        self.log.warn(&format!(
                            "media: cannot write {}: {e}; the file will be uploaded again after a restart",
                            path.display()
                        ));
                    }
                }
                if let Ok(mut r) = self.refused.lock() {
                    r.remove(&job.hash);
                }
                self.log.info(&format!(
                    "media: uploaded {} ({} bytes) as permanent {ty} {} in {} ms; rule {} answers it",
                    slot.shown,
                    bytes.len(),
                    done.media_id,
                    started.elapsed().as_millis(),
                    slot.rule
                ));
                slot.set(done.media_id);
            }
            Err(e) => {
                if let Ok(mut r) = self.refused.lock() {
                    r.insert(job.hash.clone(), Instant::now());
                }
                self.log.error(&format!(
                    "media: uploading {} for rule {} failed: {e}; the rule answers success until an upload succeeds, tried again on the next reload (at most once a minute)",
                    slot.shown, slot.rule
                ));
            }
        }
    }
}

fn read_state(path: &Path) -> Result<Option<StateFile>, String> {
    let f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let mut text = String::new();
    f.take(MAX_STATE)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| format!("{} is not wxmp's media state ({e})", path.display()))
}

/// Writes atomically with mode 0600 (the directory 0700 when created), as the token cache.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mut random = [0u8; 8];
    getrandom::getrandom(&mut random).map_err(|e| std::io::Error::other(e.to_string()))?;
    let name = path
        .file_name()
        .map_or_else(|| "media".into(), |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", hex::encode(random)));
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}
