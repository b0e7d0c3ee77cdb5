//! The request pipeline, free of HTTP: verify → (open the envelope) → parse → retry store →
//! rules → render → (seal). `routes` calls in with the query, the body bytes and the arrival
//! instant, and gets back the answer (or a typed [`Rejection`]) with an [`Outcome`] record of
//! what happened, which the log and the metrics read.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::log::Log;
use crate::protocol::crypto::CryptoError;
use crate::protocol::envelope::{EnvelopeError, Mode, SafeMode};
use crate::protocol::json;
use crate::protocol::message::{Message, ParseError};
use crate::protocol::query::{Query, QueryError};
use crate::protocol::reply::{Answering, Reply};
use crate::protocol::verify::{self, Token};
use crate::protocol::xml::{self, child_text, XmlError};
use crate::rules::{Decision, Target};
use crate::server::account::Account;
use crate::server::env::Env;
use crate::server::forward::{self, Forwarder, Settings};
use crate::server::gate::{Gate, Inside};
use crate::server::replay::{Replay, ReplayError};
use crate::server::sample::{self, Sample};
use crate::server::store::{self, Begin, Key, Limits, MemoryStore, RetryStore, Usage, Weigh};

/// How long a duplicate waits for the first attempt: WeChat gives up on a push after 5 s.
const DUPLICATE_WAIT: Duration = Duration::from_millis(4500);

/// Logged at most once an hour ([`crate::server::replay::HINT_EVERY`]) while plaintext pushes
/// reach a server with an AES key. They are answered, in plaintext, so that a console still in
/// plaintext mode keeps working while the key is being set up.
pub const PLAIN_IN_SAFE_MODE: &str = "a plaintext push reached a server with an AES key: the WeChat console is in plaintext mode (明文模式) while this server expects safe mode; it was answered in plaintext. Set 消息加解密方式 to 安全模式 (or 兼容模式) in the console, or drop --aes-key / WXMP_AES_KEY";

/// A finished response body, shared with the retry store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub body: Arc<str>,
    /// True for XML (a reply or an encrypted envelope), false for the plain `success`.
    pub xml: bool,
}

impl Answer {
    /// The plain `success`: WeChat asks for it unencrypted, even in safe mode.
    pub fn success() -> Answer {
        Answer {
            body: Arc::from("success"),
            xml: false,
        }
    }
}

impl Weigh for Answer {
    fn weight(&self) -> usize {
        self.body.len()
    }
}

/// Why a request was refused. `routes` maps each variant to one HTTP status; the `Display` text
/// goes to the log, a short fixed text to the peer.
#[derive(Debug, Clone, PartialEq)]
pub enum Rejection {
    /// A query value is not UTF-8 once percent-decoded.
    BadQuery(QueryError),
    /// `signature`, `timestamp` or `nonce` is absent.
    MissingSignature,
    /// The plain signature does not match: another token, or not WeChat.
    SignatureMismatch,
    /// Signed, but outside the replay window, or a seen query on another body.
    Replay(ReplayError),
    /// A URL check without `echostr`.
    MissingEchostr,
    /// The body is not acceptable XML (empty, not UTF-8, a DOCTYPE, malformed, too deep).
    Xml(XmlError),
    /// The body is XML but cannot be a push (no `MsgType`, another root).
    NotAPush(ParseError),
    /// `encrypt_type=aes` but the body has no `Encrypt` field.
    NoEncrypt,
    /// An encrypted push, but no EncodingAESKey is configured.
    NoAesKey,
    /// The safe-mode envelope did not open.
    Envelope(EnvelopeError),
    /// The envelope opened, but what was inside is not a push.
    Decrypted(ParseError),
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::BadQuery(e) => e.fmt(f),
            Rejection::MissingSignature => f.write_str("missing signature, timestamp or nonce"),
            Rejection::SignatureMismatch => f.write_str("signature mismatch"),
            Rejection::Replay(e) => e.fmt(f),
            Rejection::MissingEchostr => f.write_str("missing echostr"),
            Rejection::Xml(e) => e.fmt(f),
            Rejection::NotAPush(e) => e.fmt(f),
            Rejection::NoEncrypt => f.write_str("encrypt_type=aes but no Encrypt field"),
            Rejection::NoAesKey => f.write_str(
                "encrypted message, but no AES key is configured (set --aes-key / WXMP_AES_KEY and --appid / WXMP_APPID)",
            ),
            Rejection::Envelope(EnvelopeError::Decrypt(
                e @ (CryptoError::Padding | CryptoError::Length | CryptoError::Utf8),
            )) => write!(
                f,
                "cannot decrypt the push ({e}): the EncodingAESKey probably does not match the console's; check --aes-key / WXMP_AES_KEY"
            ),
            Rejection::Envelope(EnvelopeError::AppIdMismatch { got, .. }) => write!(
                f,
                "the push is for AppID {got:?}, not this account's; check --appid / WXMP_APPID"
            ),
            Rejection::Envelope(EnvelopeError::SignatureMismatch) => f.write_str(
                "msg_signature mismatch: the push was not signed with this token",
            ),
            Rejection::Envelope(e) => e.fmt(f),
            Rejection::Decrypted(e) => write!(f, "decrypted message: {e}"),
        }
    }
}

impl From<XmlError> for Rejection {
    fn from(e: XmlError) -> Self {
        Rejection::Xml(e)
    }
}

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    /// Decided now by the rules.
    Fresh,
    /// A retry, answered with the stored bytes.
    Cached,
    /// A retry that arrived while the first attempt was running, and took its answer.
    Joined,
}

impl Answered {
    pub fn as_str(self) -> &'static str {
        match self {
            Answered::Fresh => "fresh",
            Answered::Cached => "cached",
            Answered::Joined => "joined",
        }
    }
}

/// Which rule decided: its 1-based index and line, or the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decided {
    Rule { index: usize, line: usize },
    Default,
}

/// What happened to one push, for the access log and the metrics. Fields stay `None` when the
/// pipeline stopped before learning them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outcome {
    pub mode: Option<Mode>,
    pub msg_type: Option<String>,
    pub event: Option<String>,
    pub event_key: Option<String>,
    /// The user's OpenID (`FromUserName`); the log hashes it unless told otherwise.
    pub from_user: Option<String>,
    pub decided: Option<Decided>,
    pub answered: Option<Answered>,
    /// The reply's MsgType (`success` for the empty answer).
    pub reply: Option<&'static str>,
    /// Platform-limit adjustments made while building the reply (e.g. text cut to 2048 bytes).
    pub warnings: Vec<String>,
    /// From the push's arrival to the answer, on the monotonic clock.
    pub duration: Duration,
    /// For a forwarded push: which of WeChat's attempts this was, and what it delivered.
    pub forward: Option<forward::Attempt>,
    /// What the push said and what was answered, in words, for the live view only (`None`
    /// unless the pipeline was built [`Pipeline::with_samples`]). Message content: `routes`
    /// takes it out before anything else reads the outcome, so the log never sees it.
    pub sample: Option<Box<Sample>>,
}

/// A push as the HTTP layer hands it over.
#[derive(Debug, Clone, Copy)]
pub struct Push<'a> {
    pub query: &'a Query,
    pub body: &'a [u8],
    /// When the request reached the server; deadlines are measured from here.
    pub arrived: Instant,
}

/// The pipeline's result: the answer or why not, and the record of what happened.
#[derive(Debug)]
pub struct Handled {
    pub result: Result<Answer, Rejection>,
    pub outcome: Outcome,
}

/// Everything a push needs, built once at start-up from an [`Account`].
pub struct Pipeline {
    account: Account,
    store: Arc<dyn RetryStore<Answer>>,
    env: Arc<dyn Env>,
    forwarder: Forwarder,
    /// Fill [`Outcome::sample`]: on only while someone can watch (`wxmp tail`).
    samples: bool,
    /// At most `--threads` pushes at work at once (none: no limit).
    gate: Option<Gate>,
    /// The replay window (on by default: a signed query is good for one body, for a while).
    replay: Replay,
    /// Where the pipeline's own hints go (requests are logged by `routes`).
    log: Log,
}

/// A push's place in the [`Gate`] while it works; given up before it waits on anything.
type Place<'a> = Option<Inside<'a>>;

impl Pipeline {
    pub fn new(
        account: Account,
        store: Arc<dyn RetryStore<Answer>>,
        env: Arc<dyn Env>,
    ) -> Pipeline {
        let forwarder = Forwarder::new(Settings::default(), Arc::clone(&env), Log::stderr());
        Pipeline {
            account,
            store,
            env,
            forwarder,
            samples: false,
            gate: None,
            replay: Replay::default(),
            log: Log::stderr(),
        }
    }

    /// With this replay window instead of the default one.
    pub fn with_replay(mut self, replay: Replay) -> Pipeline {
        self.replay = replay;
        self
    }

    /// With the pipeline's own hints going to `log`.
    pub fn with_log(mut self, log: Log) -> Pipeline {
        self.log = log;
        self
    }

    pub fn replay(&self) -> &Replay {
        &self.replay
    }

    /// At most `n` pushes doing their work at once; a push waiting (a held attempt, a retry
    /// waiting for its first attempt) does not count. See [`Gate`].
    pub fn with_workers(mut self, n: usize) -> Pipeline {
        self.gate = Some(Gate::new(n));
        self
    }

    /// With forwarding set up as configured (the default: `stretch`, logging to stderr).
    pub fn with_forwarder(mut self, forwarder: Forwarder) -> Pipeline {
        self.forwarder = forwarder;
        self
    }

    pub fn forwarder(&self) -> &Forwarder {
        &self.forwarder
    }

    /// Records what each push said and what it was answered ([`Outcome::sample`]).
    pub fn with_samples(mut self, on: bool) -> Pipeline {
        self.samples = on;
        self
    }

    /// With the in-memory retry store under `limits`.
    pub fn in_memory(account: Account, limits: Limits, env: Arc<dyn Env>) -> Pipeline {
        Pipeline::new(account, Arc::new(MemoryStore::new(limits)), env)
    }

    pub fn account(&self) -> &Account {
        &self.account
    }

    pub fn env(&self) -> &dyn Env {
        &*self.env
    }

    /// The retry store's fill, for the log, the metrics and the benchmarks.
    pub fn store_usage(&self) -> Usage {
        self.store.usage()
    }

    pub fn store_limits(&self) -> Limits {
        self.store.limits()
    }

    /// The GET handshake: the `echostr` to send back when the signature is right. Official
    /// Accounts never encrypt echostr, so this is the same in every mode.
    pub fn verify_url(&self, q: &Query) -> Result<String, Rejection> {
        self.check_signature(q)?;
        if let Some(ts) = &q.timestamp {
            self.replay
                .check_time(ts, self.env.now())
                .map_err(Rejection::Replay)?;
        }
        q.echostr.clone().ok_or(Rejection::MissingEchostr)
    }

    fn check_signature(&self, q: &Query) -> Result<(), Rejection> {
        let (Some(sig), Some(ts), Some(nonce)) = (&q.signature, &q.timestamp, &q.nonce) else {
            return Err(Rejection::MissingSignature);
        };
        if verify::signatures_match(&verify::signature(&self.account.token, ts, nonce), sig) {
            Ok(())
        } else {
            Err(Rejection::SignatureMismatch)
        }
    }

    /// A message push: the body to answer with, and what happened.
    pub fn handle_message(&self, push: Push<'_>) -> Handled {
        let mut outcome = Outcome {
            mode: (!push.query.is_encrypted()).then_some(Mode::Plain),
            ..Outcome::default()
        };
        let mut place = self.gate.as_ref().map(Gate::enter);
        let result = self.run(push, &mut outcome, &mut place);
        drop(place);
        outcome.duration = self.env.monotonic().saturating_duration_since(push.arrived);
        Handled { result, outcome }
    }

    fn run(
        &self,
        push: Push<'_>,
        outcome: &mut Outcome,
        place: &mut Place<'_>,
    ) -> Result<Answer, Rejection> {
        let q = push.query;
        self.check_signature(q)?;
        let now = self.env.now();
        self.replay
            .admit(q, push.body, now)
            .map_err(Rejection::Replay)?;
        let clean = xml::sanitize(push.body)?;
        if !q.is_encrypted() {
            if self.account.safe.is_some() && self.replay.hint_due(now) {
                self.log.warn(PLAIN_IN_SAFE_MODE);
            }
            let msg = Message::parse_clean(&clean).map_err(not_a_push)?;
            return Ok(self.answer(msg, None, outcome, push.arrived, place));
        }
        if let Some(safe) = &self.account.safe {
            // The safe-mode envelope is flat; reading it without the tree parser saves most of
            // safe mode's cost (xml-rs lexes the long base64 field one char at a time). Anything
            // but a plain flat document goes through the parser below.
            if let Some(fields) = xml::flat_fields(&clean) {
                let field = |name: &str| fields.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
                if let Some(encrypt) = field("Encrypt") {
                    outcome.mode = Some(if field("MsgType").is_some() {
                        Mode::Compat
                    } else {
                        Mode::Safe
                    });
                    return self.open(q, safe, encrypt, outcome, push.arrived, place);
                }
            }
        }
        let root = xml::parse(&clean)?;
        let Some(encrypt) = child_text(&root, "Encrypt") else {
            return Err(Rejection::NoEncrypt);
        };
        let compat = root.get_child("MsgType").is_some();
        outcome.mode = Some(if compat { Mode::Compat } else { Mode::Safe });
        match &self.account.safe {
            Some(safe) => self.open(q, safe, &encrypt, outcome, push.arrived, place),
            // Compatible mode also carries the plaintext fields: answer those in plaintext.
            None if compat => {
                let msg = Message::from_element(&root).map_err(not_a_push)?;
                Ok(self.answer(msg, None, outcome, push.arrived, place))
            }
            None => Err(Rejection::NoAesKey),
        }
    }

    /// Opens the envelope and answers the push inside.
    fn open(
        &self,
        q: &Query,
        safe: &SafeMode,
        encrypt: &str,
        outcome: &mut Outcome,
        arrived: Instant,
        place: &mut Place<'_>,
    ) -> Result<Answer, Rejection> {
        let inner = safe
            .open(
                &self.account.token,
                encrypt,
                q.timestamp.as_deref(),
                q.nonce.as_deref(),
                q.msg_signature.as_deref(),
            )
            .map_err(Rejection::Envelope)?;
        let msg = Message::parse(&inner).map_err(Rejection::Decrypted)?;
        Ok(self.answer(msg, Some(safe), outcome, arrived, place))
    }

    /// retry store → rules → render → (seal), or → the user's own code.
    fn answer(
        &self,
        msg: Message,
        safe: Option<&SafeMode>,
        outcome: &mut Outcome,
        arrived: Instant,
        place: &mut Place<'_>,
    ) -> Answer {
        outcome.msg_type = Some(msg.msg_type().to_owned());
        if let Some(e) = msg.event() {
            outcome.event = Some(e.name().to_owned());
            outcome.event_key = e.event_key().map(str::to_owned);
        }
        outcome.from_user = msg.from_user_name.clone();
        if self.samples {
            outcome.sample = Some(Box::new(Sample::of(&msg)));
        }
        let begin = match retry_key(&msg, safe.is_some()) {
            Some(key) => self.store.begin(key, self.env.now()),
            // Nothing identifies its retries; it is still answered, once per attempt.
            None => Begin::Fresh(store::detached()),
        };
        match begin {
            Begin::Cached(answer) => {
                outcome.answered = Some(Answered::Cached);
                answer
            }
            Begin::Fresh(ticket) => {
                let decision = self.decide(&msg, outcome);
                let answer = self.render(&decision.reply, &msg, safe);
                match decision.forward {
                    None => {
                        ticket.complete(answer.clone(), self.env.now());
                        answer
                    }
                    Some(target) => {
                        let job = self.job(target, &msg, safe, answer, arrived);
                        place.take();
                        let (answer, attempt) = self.forwarder.start(ticket, job);
                        self.note_forward(outcome, attempt);
                        answer
                    }
                }
            }
            Begin::InFlight(waiter) => {
                let decision = self.decide(&msg, outcome);
                if decision.forward.is_some() {
                    let fallback = self.render(&decision.reply, &msg, safe);
                    place.take();
                    let (answer, attempt) = self.forwarder.join(waiter, arrived, fallback);
                    outcome.answered = Some(Answered::Joined);
                    self.note_forward(outcome, attempt);
                    return answer;
                }
                place.take();
                match waiter.wait(DUPLICATE_WAIT) {
                    Some(answer) => {
                        outcome.answered = Some(Answered::Joined);
                        answer
                    }
                    // The first attempt failed or hung: answer this one ourselves.
                    None => self.render(&decision.reply, &msg, safe),
                }
            }
        }
    }

    fn note_forward(&self, outcome: &mut Outcome, attempt: forward::Attempt) {
        let said = match attempt.delivered {
            // The user's code chose the reply; the fallback's type says nothing.
            forward::Delivered::Answer => Some("the answer of your code"),
            forward::Delivered::Held => Some("nothing yet: held for WeChat's retry"),
            forward::Delivered::Fallback => None,
        };
        if let Some(said) = said {
            outcome.reply = None;
            if let Some(s) = outcome.sample.as_mut() {
                s.reply = Some(said.to_owned());
            }
        }
        outcome.forward = Some(attempt);
    }

    /// The rules' decision, noted in the outcome.
    fn decide(&self, msg: &Message, outcome: &mut Outcome) -> Decision {
        let mut decision = self.account.rules.current().decide(msg);
        outcome.answered = Some(Answered::Fresh);
        outcome.decided = Some(match decision.rule {
            Some(m) => Decided::Rule {
                index: m.index,
                line: m.line,
            },
            None => Decided::Default,
        });
        outcome.reply = Some(decision.reply.msg_type());
        if let Some(s) = outcome.sample.as_mut() {
            s.reply = Some(sample::reply(&decision.reply));
        }
        outcome.warnings = std::mem::take(&mut decision.warnings);
        decision
    }

    fn render(&self, reply: &Reply, msg: &Message, safe: Option<&SafeMode>) -> Answer {
        render(
            &self.account.token,
            safe,
            &*self.env,
            reply,
            msg.from_user(),
            msg.to_user(),
        )
    }

    /// Everything a forward worker needs, owned.
    fn job(
        &self,
        target: Target,
        msg: &Message,
        safe: Option<&SafeMode>,
        fallback: Answer,
        arrived: Instant,
    ) -> forward::Job {
        let (token, safe, env) = (
            self.account.token.clone(),
            safe.cloned(),
            Arc::clone(&self.env),
        );
        let (user, account) = (msg.from_user().to_owned(), msg.to_user().to_owned());
        let openid = user.clone();
        forward::Job {
            target,
            body: serde_json::to_vec(&json::push_json(msg)).unwrap_or_default(),
            openid,
            answering: if msg.event().is_some() {
                Answering::Event
            } else {
                Answering::Message
            },
            render: Box::new(move |reply| {
                render(&token, safe.as_ref(), &*env, reply, &user, &account)
            }),
            fallback,
            arrived,
        }
    }
}

/// A reply as the body to send: `success` as it is, anything else rendered to `user` from
/// `account` and, in safe mode, sealed.
fn render(
    token: &Token,
    safe: Option<&SafeMode>,
    env: &dyn Env,
    reply: &Reply,
    user: &str,
    account: &str,
) -> Answer {
    if *reply == Reply::Success {
        // WeChat asks for a plain `success`, unencrypted, even in safe mode.
        return Answer::success();
    }
    let now = env.now();
    let xml = reply.render(user, account, now);
    let body = match safe {
        None => xml,
        Some(safe) => seal(token, safe, env, &xml, now),
    };
    Answer {
        body: Arc::from(body),
        xml: true,
    }
}

/// Encrypts and signs a reply into the safe-mode envelope.
fn seal(token: &Token, safe: &SafeMode, env: &dyn Env, xml: &str, now: u64) -> String {
    // One call to the random source (a system call) for the IV prefix and the nonce.
    let mut bytes = [0u8; 24];
    env.fill_random(&mut bytes);
    let (random, nonce_bytes) = bytes.split_at(16);
    let random: [u8; 16] = random.try_into().unwrap_or_default();
    let nonce_bytes: [u8; 8] = nonce_bytes.try_into().unwrap_or_default();
    // WeChat's own nonces are decimal digits; keep to that shape.
    let nonce = (u64::from_le_bytes(nonce_bytes) % 10_000_000_000).to_string();
    let timestamp = now.to_string();
    safe.seal(token, xml, &timestamp, &nonce, &random)
        .reply_xml(now, &nonce)
}

fn not_a_push(e: ParseError) -> Rejection {
    match e {
        ParseError::Xml(x) => Rejection::Xml(x),
        other => Rejection::NotAPush(other),
    }
}

/// Identifies one push across WeChat's retries: (FromUserName, MsgId) for messages (MsgId alone
/// collides across users), (FromUserName, CreateTime, Event, EventKey) for events. Plain and
/// encrypted answers are kept apart, since the stored bytes differ. `None` for a push that
/// cannot be told apart from another (no MsgId, not an event).
pub fn retry_key(msg: &Message, encrypted: bool) -> Option<Key> {
    let mode = if encrypted { "E" } else { "P" };
    let from = msg.from_user();
    Some(match msg.event() {
        Some(e) => {
            let time = msg
                .create_time
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default();
            Key::new(&[
                mode,
                "e",
                from,
                &time,
                e.name(),
                e.event_key().unwrap_or(""),
            ])
        }
        None => Key::new(&[mode, "m", from, msg.msg_id.as_deref()?]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::message::{Event, Kind};

    fn text(from: &str, id: &str) -> Message {
        Message::new("gh", from, 100, Kind::Text { content: None }).with_msg_id(id)
    }

    fn click(from: &str, time: u64, key: &str) -> Message {
        Message::new(
            "gh",
            from,
            time,
            Kind::Event(Event::Click {
                event_key: Some(key.into()),
            }),
        )
    }

    #[test]
    fn msg_id_alone_does_not_collide_across_users() {
        assert_ne!(
            retry_key(&text("u1", "1"), false),
            retry_key(&text("u2", "1"), false)
        );
        assert_eq!(
            retry_key(&text("u1", "1"), false),
            retry_key(&text("u1", "1"), false)
        );
    }

    #[test]
    fn events_are_keyed_by_user_time_name_and_key() {
        let k = |m: &Message| retry_key(m, false);
        assert_eq!(k(&click("u1", 100, "K")), k(&click("u1", 100, "K")));
        assert_ne!(k(&click("u1", 100, "K")), k(&click("u1", 100, "OTHER")));
        assert_ne!(k(&click("u1", 100, "K")), k(&click("u1", 101, "K")));
        assert_ne!(k(&click("u1", 100, "K")), k(&click("u2", 100, "K")));
    }

    #[test]
    fn a_message_without_msg_id_is_not_deduplicated() {
        let mut m = text("u", "1");
        m.msg_id = None;
        assert_eq!(retry_key(&m, false), None);
    }

    #[test]
    fn plain_and_encrypted_answers_are_kept_apart() {
        let m = text("u", "1");
        assert_ne!(retry_key(&m, false), retry_key(&m, true));
    }
}
