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
    match set.media_files().first() {
        None => Ok(()),
        Some(slot) => Err(RulesError {
            file: file.to_owned(),
            line: Some(slot.line),
            reason: format!(
                "rule {}: reply.{} = {{ file = {:?} }} is uploaded as permanent material, which needs the WeChat API: pass --appid and --secret (or set WXMP_APPID and WXMP_SECRET)",
                slot.rule,
                slot.reply,
                slot.shown
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
}

struct Shared {
    app_id: String,
    client: Arc<Client>,
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

    /// Reads the state file and starts the upload thread.
    pub fn start(client: Arc<Client>, log: Log) -> Arc<Uploader> {
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
            let known = self
                .shared
                .lock_state()
                .files
                .get(&hash)
                .map(|e| e.media_id.clone());
            if let Some(id) = known {
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

    fn upload(&self, job: &Job) {
        let slot = &job.slot;
        // Another job may have uploaded the same content meanwhile.
        if let Some(e) = self.lock_state().files.get(&job.hash) {
            slot.set(e.media_id.clone());
            return;
        }
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
                let text = {
                    let mut state = self.lock_state();
                    state.files.insert(
                        job.hash.clone(),
                        Entry {
                            media_id: done.media_id.clone(),
                            ty: ty.name().to_owned(),
                            file: slot.shown.clone(),
                            uploaded_at: now,
                        },
                    );
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
