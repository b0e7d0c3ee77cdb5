//! The request pipeline, free of HTTP: verify → [decrypt] → parse → dedup → rules → render →
//! [encrypt + sign]. `routes` calls in with the query and body bytes and gets back an
//! [`Answer`] or a [`Rejection`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::log;
use crate::protocol::crypto::{self, AesKey, CryptoError};
use crate::protocol::message::{Message, ParseError};
use crate::protocol::query::Query;
use crate::protocol::reply::Reply;
use crate::protocol::verify::{self, Token};
use crate::protocol::xml::{self, child_text, XmlError};
use crate::rules::{RuleSet, SharedRules};
use crate::server::store::{Begin, Key, Limits, ReplyCache, Weigh};

/// How long a duplicate waits for the first attempt: WeChat gives up on a push after 5 s.
const DUPLICATE_WAIT: Duration = Duration::from_millis(4500);

fn field<'a>(fields: &[(&str, &'a str)], name: &str) -> Option<&'a str> {
    fields.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

/// The clock and the random source, injected so tests are reproducible byte for byte.
pub trait Env: Send + Sync {
    /// Seconds since the Unix epoch.
    fn now(&self) -> u64;
    fn fill_random(&self, buf: &mut [u8]);
}

/// The real clock and the OS random source.
pub struct SystemEnv;

impl Env for SystemEnv {
    fn now(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    fn fill_random(&self, buf: &mut [u8]) {
        if getrandom::getrandom(buf).is_err() {
            // The OS random source is gone; a predictable IV prefix would weaken safe mode, so
            // refuse to continue rather than send it.
            log::error("the OS random source failed; stopping");
            std::process::abort();
        }
    }
}

/// Safe-mode settings: both are needed to decrypt and to encrypt.
#[derive(Debug, Clone)]
pub struct SafeMode {
    pub key: AesKey,
    pub app_id: String,
}

/// A finished response body, shared with the retry cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub body: Arc<str>,
    /// True for XML (a reply or an encrypted envelope), false for the plain `success`.
    pub xml: bool,
}

impl Weigh for Answer {
    fn weight(&self) -> usize {
        self.body.len()
    }
}

/// Why a request was refused. `routes` maps each variant to one HTTP status; the reason goes to
/// the log, a short fixed text to the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// 400: the request is malformed.
    BadRequest(String),
    /// 403: the request is not from WeChat (signature) or not for this account (AppID).
    Forbidden(String),
    /// 413: the body is larger than the limit.
    TooLarge,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::BadRequest(r) | Rejection::Forbidden(r) => f.write_str(r),
            Rejection::TooLarge => f.write_str("body too large"),
        }
    }
}

impl From<XmlError> for Rejection {
    fn from(e: XmlError) -> Self {
        Rejection::BadRequest(e.to_string())
    }
}

impl From<ParseError> for Rejection {
    fn from(e: ParseError) -> Self {
        Rejection::BadRequest(e.to_string())
    }
}

impl From<CryptoError> for Rejection {
    fn from(e: CryptoError) -> Self {
        match e {
            CryptoError::AppIdMismatch => Rejection::Forbidden(e.to_string()),
            _ => Rejection::BadRequest(e.to_string()),
        }
    }
}

/// Everything a request needs, built once at start-up.
pub struct App {
    token: Token,
    safe: Option<SafeMode>,
    rules: SharedRules,
    cache: ReplyCache<Answer>,
    env: Box<dyn Env>,
}

impl App {
    pub fn new(
        token: Token,
        safe: Option<SafeMode>,
        rules: RuleSet,
        limits: Limits,
        env: Box<dyn Env>,
    ) -> App {
        App {
            token,
            safe,
            rules: SharedRules::new(rules),
            cache: ReplyCache::new(limits),
            env,
        }
    }

    pub fn rules(&self) -> &SharedRules {
        &self.rules
    }

    pub fn cache(&self) -> &ReplyCache<Answer> {
        &self.cache
    }

    pub fn safe_mode(&self) -> bool {
        self.safe.is_some()
    }

    /// The GET handshake: the `echostr` to send back when the signature is right. Official
    /// Accounts never encrypt echostr, so this is the same in every mode.
    pub fn verify_url(&self, q: &Query) -> Result<String, Rejection> {
        self.check_signature(q)?;
        q.echostr
            .clone()
            .ok_or_else(|| Rejection::BadRequest("missing echostr".into()))
    }

    fn check_signature(&self, q: &Query) -> Result<(), Rejection> {
        let (Some(sig), Some(ts), Some(nonce)) = (&q.signature, &q.timestamp, &q.nonce) else {
            return Err(Rejection::Forbidden(
                "missing signature, timestamp or nonce".into(),
            ));
        };
        if verify::signatures_match(&verify::signature(&self.token, ts, nonce), sig) {
            Ok(())
        } else {
            Err(Rejection::Forbidden("signature mismatch".into()))
        }
    }

    /// A message push: the body to answer with.
    pub fn handle_message(&self, q: &Query, body: &[u8]) -> Result<Answer, Rejection> {
        self.check_signature(q)?;
        let clean = xml::sanitize(body)?;
        if q.is_encrypted() {
            if let Some(safe) = &self.safe {
                // The safe-mode envelope is flat; reading it without the tree parser saves most
                // of safe mode's cost (xml-rs lexes the long base64 field one char at a time).
                // Anything but a plain flat document goes through the parser below.
                let fields = xml::flat_fields(&clean);
                if let Some(encrypt) = fields.as_ref().and_then(|f| field(f, "Encrypt")) {
                    return self.open(q, safe, encrypt);
                }
            }
            return self.handle_encrypted(q, &xml::parse(&clean)?);
        }
        self.answer(Message::from_element(&xml::parse(&clean)?)?, None)
    }

    /// Safe mode (only `Encrypt`) and compatible mode (plaintext fields and `Encrypt`).
    fn handle_encrypted(&self, q: &Query, root: &xmltree::Element) -> Result<Answer, Rejection> {
        let Some(encrypt) = child_text(root, "Encrypt") else {
            return Err(Rejection::BadRequest(
                "encrypt_type=aes but no Encrypt field".into(),
            ));
        };
        let Some(safe) = &self.safe else {
            // Compatible mode also carries the plaintext fields: answer those in plaintext.
            if root.get_child("MsgType").is_some() {
                return self.answer(Message::from_element(root)?, None);
            }
            return Err(Rejection::BadRequest(
                "encrypted message, but no AES key is configured".into(),
            ));
        };
        self.open(q, safe, &encrypt)
    }

    /// Checks `msg_signature`, decrypts `Encrypt`, and answers the message inside.
    fn open(&self, q: &Query, safe: &SafeMode, encrypt: &str) -> Result<Answer, Rejection> {
        let (Some(msg_sig), Some(ts), Some(nonce)) = (&q.msg_signature, &q.timestamp, &q.nonce)
        else {
            return Err(Rejection::Forbidden("missing msg_signature".into()));
        };
        let expected = verify::msg_signature(&self.token, ts, nonce, encrypt);
        if !verify::signatures_match(&expected, msg_sig) {
            return Err(Rejection::Forbidden("msg_signature mismatch".into()));
        }
        let xml = crypto::decrypt_for(&safe.key, &safe.app_id, encrypt)?;
        let inner = xml::sanitize(xml.as_bytes())
            .map_err(|e| Rejection::BadRequest(format!("decrypted message: {e}")))?;
        self.answer(Message::parse_clean(&inner)?, Some(safe))
    }

    /// dedup → rules → render → [encrypt].
    fn answer(&self, msg: Message, safe: Option<&SafeMode>) -> Result<Answer, Rejection> {
        let Some(key) = Key::for_message(&msg, safe.is_some()) else {
            return Ok(self.decide(&msg, safe));
        };
        match self.cache.begin(key.clone(), self.env.now()) {
            Begin::Cached(answer) => Ok(answer),
            Begin::Fresh(ticket) => {
                let answer = self.decide(&msg, safe);
                ticket.complete(answer.clone(), self.env.now());
                Ok(answer)
            }
            Begin::InFlight(waiter) => match waiter.wait(DUPLICATE_WAIT) {
                Some(answer) => Ok(answer),
                // The first attempt failed or hung: answer this one ourselves.
                None => Ok(self.decide(&msg, safe)),
            },
        }
    }

    fn decide(&self, msg: &Message, safe: Option<&SafeMode>) -> Answer {
        let decision = self.rules.current().decide(msg);
        for w in &decision.warnings {
            log::warn(&format!("reply to {}: {w}", msg.msg_type()));
        }
        if decision.reply == Reply::Success {
            // WeChat asks for a plain `success`, unencrypted, even in safe mode.
            return Answer {
                body: Arc::from("success"),
                xml: false,
            };
        }
        let now = self.env.now();
        let xml = decision
            .reply
            .render(&msg.from_user_name, &msg.to_user_name, now);
        let body = match safe {
            None => xml,
            Some(safe) => self.seal(safe, &xml, now),
        };
        Answer {
            body: Arc::from(body),
            xml: true,
        }
    }

    /// Encrypts and signs a reply into the safe-mode envelope.
    fn seal(&self, safe: &SafeMode, xml: &str, now: u64) -> String {
        // One call to the random source (a system call) for the IV prefix and the nonce.
        let mut bytes = [0u8; 24];
        self.env.fill_random(&mut bytes);
        let (random, nonce_bytes) = bytes.split_at(16);
        let random: [u8; 16] = random.try_into().unwrap_or_default();
        let nonce_bytes: [u8; 8] = nonce_bytes.try_into().unwrap_or_default();
        // WeChat's own nonces are decimal digits; keep to that shape.
        let nonce = (u64::from_le_bytes(nonce_bytes) % 10_000_000_000).to_string();
        let encrypt = crypto::encrypt(&safe.key, &safe.app_id, &random, xml);
        let timestamp = now.to_string();
        let sig = verify::msg_signature(&self.token, &timestamp, &nonce, &encrypt);
        crypto::envelope(&encrypt, &sig, now, &nonce)
    }
}
