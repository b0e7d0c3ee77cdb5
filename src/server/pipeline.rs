//! The request pipeline, free of HTTP: verify → envelope (plain, compatible or safe, decided
//! once) → (open) → parse → retry store → rules → render → (seal). `routes` calls in with the
//! query, the body bytes and the arrival instant, and gets back the answer (or a typed
//! [`Rejection`]) with an [`Outcome`] record of what happened, which the log and the metrics
//! read. A push at work is one value (its push, its outcome so far, its place in the gate),
//! and its replies are written by one writer to one [`Recipient`].
//!
//! The rules run once per push: the first attempt leaves its [`Plan`] with its in-flight entry
//! in the retry store, and a retry that joins it answers from the plan.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::log::Log;
use crate::protocol::crypto::CryptoError;
use crate::protocol::envelope::{EnvelopeError, Mode, SafeMode};
use crate::protocol::json;
use crate::protocol::message::{Event, Message, ParseError, EVENTS, MSG_TYPES};
use crate::protocol::query::{Query, QueryError};
use crate::protocol::reply::{Answering, Reply};
use crate::protocol::verify::{self, Token};
use crate::protocol::xml::{self, child_text, Clean, XmlError};
use crate::rules::{Decision, Target};
use crate::server::account::Account;
use crate::server::env::Env;
use crate::server::forward::{self, Forwarder, Settings};
use crate::server::gate::{Gate, Inside};
use crate::server::redis_store::Codec;
use crate::server::replay::{Replay, ReplayError};
use crate::server::sample::{self, Sample};
use crate::server::shared::Shared;
pub use crate::server::store::Answer;
use crate::server::store::{
    self, Begin, Key, Limits, MemoryStore, RetryStore, Seen, SeenQuery, Ticket, Usage,
};
use xmltree::Element;

/// How long a duplicate waits for the first attempt: WeChat gives up on a push after 5 s.
const DUPLICATE_WAIT: Duration = Duration::from_millis(4500);

/// Logged at most once an hour ([`crate::server::replay::HINT_EVERY`]) while plaintext pushes
/// reach a server with an AES key. They are answered, in plaintext, so that a console still in
/// plaintext mode keeps working while the key is being set up.
pub const PLAIN_IN_SAFE_MODE: &str = "a plaintext push reached a server with an AES key: the WeChat console is in plaintext mode (明文模式) while this server expects safe mode; it was answered in plaintext. Set 消息加解密方式 to 安全模式 (or 兼容模式) in the console, or drop --aes-key / WXMP_AES_KEY";

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
    /// Every way, in the order the metrics count them.
    pub const ALL: [Answered; 3] = [Answered::Fresh, Answered::Cached, Answered::Joined];

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

impl Decided {
    fn of(d: &Decision) -> Decided {
        match d.rule {
            Some(m) => Decided::Rule {
                index: m.index,
                line: m.line,
            },
            None => Decided::Default,
        }
    }
}

/// What happened to one push, for the access log and the metrics. Fields stay `None` when the
/// pipeline stopped before learning them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outcome {
    pub mode: Option<Mode>,
    /// What kind of push it was, once it was read.
    pub push: Option<PushKind>,
    /// The user's OpenID (`FromUserName`); the log hashes it unless told otherwise.
    pub from_user: Option<String>,
    /// Which rule decided; for a joined retry, the first attempt's.
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

/// A MsgType or Event name from a push: one the message model lists, by its place in
/// [`MSG_TYPES`] or [`EVENTS`], or another, as sent. Words and metric labels come from it;
/// nothing searches for them again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name {
    Listed(usize),
    Other(Box<str>),
}

impl Name {
    fn of(index: Option<usize>, sent: &str) -> Name {
        match index {
            Some(i) => Name::Listed(i),
            None => Name::Other(sent.into()),
        }
    }

    fn text(&self, list: &'static [&'static str]) -> &str {
        match self {
            Name::Listed(i) => list.get(*i).copied().unwrap_or(""),
            Name::Other(sent) => sent,
        }
    }
}

/// What kind of push: its MsgType, and for an event its Event and EventKey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushKind {
    pub msg_type: Name,
    pub event: Option<Name>,
    pub event_key: Option<String>,
}

impl PushKind {
    pub fn of(msg: &Message) -> PushKind {
        let event = msg.event();
        PushKind {
            msg_type: Name::of(msg.msg_type_index(), msg.msg_type()),
            event: event.map(|e| Name::of(e.index(), e.name())),
            event_key: event.and_then(Event::event_key).map(str::to_owned),
        }
    }

    /// The MsgType as WeChat names it, or as sent.
    pub fn msg_type(&self) -> &str {
        self.msg_type.text(MSG_TYPES)
    }

    /// The Event in WeChat's spelling, or as sent.
    pub fn event(&self) -> Option<&str> {
        self.event.as_ref().map(|e| e.text(EVENTS))
    }

    /// The MsgType's place in [`MSG_TYPES`] for the metrics: an unlisted name that is a listed
    /// one in another case counts as that one; `None` counts as `other`.
    pub fn msg_type_label(&self) -> Option<usize> {
        match &self.msg_type {
            Name::Listed(i) => Some(*i),
            Name::Other(sent) => MSG_TYPES.iter().position(|t| t.eq_ignore_ascii_case(sent)),
        }
    }
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
    store: Arc<dyn RetryStore<Answer, Plan>>,
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
    /// The Redis shared with other instances (`--store redis://...`), for its health.
    shared: Option<Arc<Shared>>,
}

/// What the first attempt at a push decided, kept with its in-flight entry in the retry store
/// so that a retry joining it answers the same way without running the rules again (a reload
/// between the attempts changes nothing for this push).
#[derive(Debug, Clone)]
pub struct Plan {
    /// The rules' reply, rendered: the answer, or the fallback of a forwarded push.
    fallback: Answer,
    /// The push went to the user's own code.
    forward: bool,
    decided: Decided,
    reply: &'static str,
}

/// A plan as another instance reads it from the shared store: one header line
/// (`forward decided reply`), then the fallback.
impl Codec for Plan {
    fn encode(&self) -> Vec<u8> {
        let decided = match self.decided {
            Decided::Rule { index, line } => format!("{index}:{line}"),
            Decided::Default => "default".to_owned(),
        };
        let mut out = format!("{} {decided} {}\n", u8::from(self.forward), self.reply).into_bytes();
        out.extend(self.fallback.encode());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Plan> {
        let nl = bytes.iter().position(|&b| b == b'\n')?;
        let head = std::str::from_utf8(&bytes[..nl]).ok()?;
        let mut parts = head.split(' ');
        let forward = parts.next()? == "1";
        let decided = match parts.next()? {
            "default" => Decided::Default,
            rule => {
                let (index, line) = rule.split_once(':')?;
                Decided::Rule {
                    index: index.parse().ok()?,
                    line: line.parse().ok()?,
                }
            }
        };
        let reply = parts.next()?;
        let reply = REPLY_TYPES.iter().copied().find(|t| *t == reply)?;
        Some(Plan {
            fallback: Answer::decode(&bytes[nl + 1..])?,
            forward,
            decided,
            reply,
        })
    }
}

/// Every reply MsgType ([`Reply::msg_type`]), to read a plan's back as `&'static str`.
const REPLY_TYPES: [&str; 8] = [
    "success",
    "text",
    "image",
    "voice",
    "video",
    "music",
    "news",
    "transfer_customer_service",
];

/// A push's place in the [`Gate`] while it works; given up before it waits on anything.
type Place<'a> = Option<Inside<'a>>;

/// Who a reply goes to: the push's `FromUserName` (the user) from its `ToUserName` (the
/// Official Account). Named, so the two cannot be swapped.
#[derive(Debug, Clone, Copy)]
pub struct Recipient<'a> {
    pub user: &'a str,
    pub account: &'a str,
}

impl<'a> Recipient<'a> {
    /// The sender of `msg`, answered from the account it wrote to.
    pub fn of(msg: &'a Message) -> Recipient<'a> {
        Recipient {
            user: msg.from_user(),
            account: msg.to_user(),
        }
    }
}

/// Whether the answers to a push are sealed (safe and compatible mode with a key) or plain:
/// their bytes differ, so the retry store keeps them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sealing {
    Plain,
    Sealed,
}

/// How the replies to one push are written: sealed or not, and to whom.
#[derive(Clone, Copy)]
struct Writer<'a> {
    token: &'a Token,
    safe: Option<&'a SafeMode>,
    env: &'a dyn Env,
    to: Recipient<'a>,
}

/// What the envelope said: the mode, and where the push is.
struct Incoming<'c> {
    mode: Mode,
    body: Body<'c>,
}

enum Body<'c> {
    /// A plaintext push: the whole (clean) body.
    Plain,
    /// Compatible mode without a key: the plaintext fields beside `Encrypt`, already parsed.
    Tree(Element),
    /// The `Encrypt` field, to open with the account's key.
    Sealed(Cow<'c, str>),
}

/// One push at work: what it brought, what happened so far, and its place in the gate.
struct Attempt<'a> {
    pipeline: &'a Pipeline,
    push: Push<'a>,
    outcome: Outcome,
    place: Place<'a>,
}

impl Pipeline {
    pub fn new(
        account: Account,
        store: Arc<dyn RetryStore<Answer, Plan>>,
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
            shared: None,
        }
    }

    /// With the Redis shared with other instances (`--store`), whose health `/healthz` tells;
    /// the retry store on it is passed to [`Pipeline::new`].
    pub fn with_shared(mut self, shared: Option<Arc<Shared>>) -> Pipeline {
        self.shared = shared;
        self
    }

    /// The shared store's connection, when there is one.
    pub fn shared(&self) -> Option<&Arc<Shared>> {
        self.shared.as_ref()
    }

    /// True while the shared store is unreachable and pushes use this instance's memory.
    pub fn degraded(&self) -> bool {
        self.shared.as_ref().is_some_and(|s| s.degraded())
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
        let encrypted = push.query.is_encrypted();
        let mut attempt = Attempt {
            pipeline: self,
            push,
            outcome: Outcome {
                mode: (!encrypted).then_some(Mode::Plain),
                ..Outcome::default()
            },
            place: self.gate.as_ref().map(Gate::enter),
        };
        let result = attempt.run(encrypted);
        let Attempt { mut outcome, .. } = attempt;
        outcome.duration = self.env.monotonic().saturating_duration_since(push.arrived);
        Handled { result, outcome }
    }

    /// Decides plain, compatible or safe, once, and finds the push in the body. The safe-mode
    /// envelope is flat; reading it without the tree parser saves most of safe mode's cost
    /// (xml-rs lexes the long base64 field one char at a time). Anything but a plain flat
    /// document goes through the parser.
    fn envelope<'c>(
        &self,
        encrypted: bool,
        clean: &'c Clean<'_>,
    ) -> Result<Incoming<'c>, Rejection> {
        if !encrypted {
            return Ok(Incoming {
                mode: Mode::Plain,
                body: Body::Plain,
            });
        }
        let flat = self
            .account
            .safe
            .as_ref()
            .and_then(|_| xml::flat_fields(clean))
            .and_then(|fields| {
                let field = |name: &str| fields.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
                Some((field("Encrypt")?, field("MsgType").is_some()))
            });
        let (encrypt, compat, tree) = match flat {
            Some((encrypt, compat)) => (Cow::Borrowed(encrypt), compat, None),
            None => {
                let root = xml::parse(clean)?;
                let encrypt = child_text(&root, "Encrypt").ok_or(Rejection::NoEncrypt)?;
                let compat = root.get_child("MsgType").is_some();
                (Cow::Owned(encrypt), compat, Some(root))
            }
        };
        let mode = if compat { Mode::Compat } else { Mode::Safe };
        let body = match tree {
            // Compatible mode also carries the plaintext fields: without a key, answer those
            // in plaintext.
            Some(root) if compat && self.account.safe.is_none() => Body::Tree(root),
            _ => Body::Sealed(encrypt),
        };
        Ok(Incoming { mode, body })
    }

    /// Opens the envelope: the push inside.
    fn open(&self, q: &Query, safe: &SafeMode, encrypt: &str) -> Result<Message, Rejection> {
        let inner = safe
            .open(
                &self.account.token,
                encrypt,
                q.timestamp.as_deref(),
                q.nonce.as_deref(),
                q.msg_signature.as_deref(),
            )
            .map_err(Rejection::Envelope)?;
        Message::parse(&inner).map_err(Rejection::Decrypted)
    }

    /// The rules' decision, noted in the outcome.
    fn decide(&self, msg: &Message, outcome: &mut Outcome) -> Decision {
        let mut decision = self.account.rules.current().decide(msg);
        outcome.answered = Some(Answered::Fresh);
        outcome.decided = Some(Decided::of(&decision));
        outcome.reply = Some(decision.reply.msg_type());
        if let Some(s) = outcome.sample.as_mut() {
            s.reply = Some(sample::reply(&decision.reply));
        }
        outcome.warnings = std::mem::take(&mut decision.warnings);
        decision
    }

    fn writer<'m>(&'m self, msg: &'m Message, safe: Option<&'m SafeMode>) -> Writer<'m> {
        Writer {
            token: &self.account.token,
            safe,
            env: &*self.env,
            to: Recipient::of(msg),
        }
    }
}

impl Attempt<'_> {
    /// verify → envelope → (open) → parse → [`Attempt::answer`].
    fn run(&mut self, encrypted: bool) -> Result<Answer, Rejection> {
        let pipeline = self.pipeline;
        let q = self.push.query;
        pipeline.check_signature(q)?;
        let now = pipeline.env.now();
        // Shared, the seen-query check goes with the retry store's claim ([`Attempt::begin`]).
        let seen = pipeline
            .replay
            .admit_later(q, self.push.body, now)
            .map_err(Rejection::Replay)?;
        let clean = xml::sanitize(self.push.body)?;
        if !encrypted && pipeline.account.safe.is_some() && pipeline.replay.hint_due(now) {
            pipeline.log.warn(PLAIN_IN_SAFE_MODE);
        }
        let incoming = pipeline.envelope(encrypted, &clean)?;
        self.outcome.mode = Some(incoming.mode);
        let (msg, safe) = match incoming.body {
            Body::Plain => (Message::parse_clean(&clean).map_err(not_a_push)?, None),
            Body::Tree(root) => (Message::from_element(&root).map_err(not_a_push)?, None),
            Body::Sealed(encrypt) => {
                let safe = pipeline.account.safe.as_ref().ok_or(Rejection::NoAesKey)?;
                (pipeline.open(q, safe, &encrypt)?, Some(safe))
            }
        };
        let begin = self.begin(&msg, safe.is_some(), seen)?;
        Ok(self.answer(&msg, safe, begin))
    }

    /// The retry store's look-up (and claim), with the shared replay window's check of `seen`
    /// in the same round trip when the store can; else the check is made first, here.
    fn begin(
        &self,
        msg: &Message,
        sealed: bool,
        seen: Option<SeenQuery>,
    ) -> Result<Begin<Answer, Plan>, Rejection> {
        let pipeline = self.pipeline;
        let (q, body) = (self.push.query, self.push.body);
        let check = |now| -> Result<(), Rejection> {
            match seen {
                Some(_) => pipeline
                    .replay
                    .admit(q, body, now)
                    .map(drop)
                    .map_err(Rejection::Replay),
                None => Ok(()),
            }
        };
        let sealing = if sealed {
            Sealing::Sealed
        } else {
            Sealing::Plain
        };
        let now = pipeline.env.now();
        let key = retry_key(msg, sealing).map(|k| k.in_account(&pipeline.account.name));
        Ok(match (key, &seen) {
            (Some(key), Some(query)) => match pipeline.store.begin_seen(key, now, query) {
                Seen::Replayed => return Err(Rejection::Replay(ReplayError::Replayed)),
                Seen::Checked(begin) => begin,
                Seen::Unchecked(begin) => {
                    check(now)?;
                    begin
                }
            },
            (Some(key), None) => pipeline.store.begin(key, now),
            // Nothing identifies its retries; it is still answered, once per attempt.
            (None, _) => {
                check(now)?;
                Begin::Fresh(store::detached())
            }
        })
    }

    /// retry store → rules → render → (seal), or → the user's own code.
    fn answer(
        &mut self,
        msg: &Message,
        safe: Option<&SafeMode>,
        begin: Begin<Answer, Plan>,
    ) -> Answer {
        let pipeline = self.pipeline;
        self.note_push(msg);
        let writer = pipeline.writer(msg, safe);
        match begin {
            Begin::Cached(answer) => {
                self.outcome.answered = Some(Answered::Cached);
                answer
            }
            Begin::Fresh(ticket) => self.fresh(ticket, msg, writer),
            Begin::InFlight(waiter) => {
                // The first attempt decided (or is deciding) right now; an attempt whose first
                // failed before deciding is the first to decide. Waiting, it works no more.
                self.place.take();
                let deadline = pipeline.env.monotonic() + DUPLICATE_WAIT;
                match waiter.plan(DUPLICATE_WAIT) {
                    Some(plan) => self.join(waiter, plan, deadline),
                    None => self.fresh(store::detached(), msg, writer),
                }
            }
        }
    }

    fn note_push(&mut self, msg: &Message) {
        let o = &mut self.outcome;
        o.push = Some(PushKind::of(msg));
        o.from_user = msg.from_user_name.clone();
        if self.pipeline.samples {
            o.sample = Some(Box::new(Sample::of(msg)));
        }
    }

    /// The first attempt: decides, leaves its plan for the retries, and answers or forwards.
    fn fresh(&mut self, ticket: Ticket<Answer, Plan>, msg: &Message, writer: Writer<'_>) -> Answer {
        let pipeline = self.pipeline;
        let decision = pipeline.decide(msg, &mut self.outcome);
        let answer = writer.render(&decision.reply);
        let plan = Plan {
            fallback: answer.clone(),
            forward: decision.forward.is_some(),
            decided: Decided::of(&decision),
            reply: decision.reply.msg_type(),
        };
        let Some(target) = decision.forward else {
            ticket.complete_with_plan(plan, answer.clone(), pipeline.env.now());
            return answer;
        };
        ticket.plan(plan);
        let job = self.job(target, msg, writer, answer);
        self.place.take();
        let (answer, attempt) = pipeline.forwarder.start(ticket, job);
        self.note_forward(attempt);
        answer
    }

    /// A retry while the first attempt works: answers as the first attempt decided.
    fn join(
        &mut self,
        waiter: store::Waiter<Answer, Plan>,
        plan: Plan,
        deadline: Instant,
    ) -> Answer {
        let pipeline = self.pipeline;
        let o = &mut self.outcome;
        o.decided = Some(plan.decided);
        o.reply = Some(plan.reply);
        o.answered = Some(Answered::Joined);
        if plan.forward {
            let (answer, attempt) =
                pipeline
                    .forwarder
                    .join(waiter, self.push.arrived, plan.fallback);
            self.note_forward(attempt);
            return answer;
        }
        let left = deadline.saturating_duration_since(pipeline.env.monotonic());
        match waiter.wait(left) {
            Some(answer) => answer,
            // The first attempt failed or hung: answer this one with what it decided.
            None => {
                self.outcome.answered = Some(Answered::Fresh);
                plan.fallback
            }
        }
    }

    /// Everything a forward worker needs, owned: the push as JSON, and how to write the
    /// replies to it.
    fn job(
        &self,
        target: Target,
        msg: &Message,
        writer: Writer<'_>,
        fallback: Answer,
    ) -> forward::Job {
        let (token, safe, env) = (
            writer.token.clone(),
            writer.safe.cloned(),
            Arc::clone(&self.pipeline.env),
        );
        let (user, account) = (writer.to.user.to_owned(), writer.to.account.to_owned());
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
                let to = Recipient {
                    user: &user,
                    account: &account,
                };
                Writer {
                    token: &token,
                    safe: safe.as_ref(),
                    env: &*env,
                    to,
                }
                .render(reply)
            }),
            fallback,
            arrived: self.push.arrived,
        }
    }

    fn note_forward(&mut self, attempt: forward::Attempt) {
        let said = match attempt.delivered {
            // The user's code chose the reply; the fallback's type says nothing.
            forward::Delivered::Answer => Some("the answer of your code"),
            forward::Delivered::Held => Some("nothing yet: held for WeChat's retry"),
            forward::Delivered::Fallback => {
                // The rule's fallback, named so: not the answer of the user's code.
                if let Some(s) = self.outcome.sample.as_mut() {
                    s.reply = s.reply.take().map(|r| format!("the fallback, {r}"));
                }
                None
            }
        };
        if let Some(said) = said {
            self.outcome.reply = None;
            if let Some(s) = self.outcome.sample.as_mut() {
                s.reply = Some(said.to_owned());
            }
        }
        self.outcome.forward = Some(attempt);
    }
}

impl Writer<'_> {
    /// A reply as the body to send: `success` as it is, anything else rendered to the
    /// recipient and, in safe mode, sealed.
    fn render(&self, reply: &Reply) -> Answer {
        if *reply == Reply::Success {
            // WeChat asks for a plain `success`, unencrypted, even in safe mode.
            return Answer::success();
        }
        let now = self.env.now();
        let xml = reply.render(self.to.user, self.to.account, now);
        let body = match self.safe {
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
        let timestamp = now.to_string();
        safe.seal(self.token, xml, &timestamp, &nonce, &random)
            .reply_xml(now, &nonce)
    }
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
pub fn retry_key(msg: &Message, sealing: Sealing) -> Option<Key> {
    let mode = match sealing {
        Sealing::Sealed => "E",
        Sealing::Plain => "P",
    };
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
    use crate::protocol::message::Kind;

    #[test]
    fn a_plan_reads_back_as_written_from_the_shared_store() {
        for (decided, reply, forward) in [
            (Decided::Rule { index: 3, line: 17 }, "news", true),
            (Decided::Default, "transfer_customer_service", false),
        ] {
            let plan = Plan {
                fallback: Answer {
                    body: Arc::from("<xml>稍等\n</xml>"),
                    xml: true,
                },
                forward,
                decided,
                reply,
            };
            let back = Plan::decode(&plan.encode()).expect("a plan reads back");
            assert_eq!(
                (back.fallback, back.forward, back.decided, back.reply),
                (plan.fallback, forward, decided, reply)
            );
        }
        assert!(Plan::decode(b"1 default nonsense\nxbody").is_none());
        assert!(Plan::decode(b"no newline").is_none());
    }

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
            retry_key(&text("u1", "1"), Sealing::Plain),
            retry_key(&text("u2", "1"), Sealing::Plain)
        );
        assert_eq!(
            retry_key(&text("u1", "1"), Sealing::Plain),
            Some(Key::new(&["P", "m", "u1", "1"]))
        );
    }

    #[test]
    fn events_are_keyed_by_user_time_name_and_key() {
        let k = |m: &Message| retry_key(m, Sealing::Plain);
        assert_eq!(k(&click("u1", 100, "K")), k(&click("u1", 100, "K")));
        assert_ne!(k(&click("u1", 100, "K")), k(&click("u1", 100, "OTHER")));
        assert_ne!(k(&click("u1", 100, "K")), k(&click("u1", 101, "K")));
        assert_ne!(k(&click("u1", 100, "K")), k(&click("u2", 100, "K")));
    }

    #[test]
    fn a_message_without_msg_id_is_not_deduplicated() {
        let mut m = text("u", "1");
        m.msg_id = None;
        assert_eq!(retry_key(&m, Sealing::Plain), None);
    }

    #[test]
    fn plain_and_encrypted_answers_are_kept_apart() {
        let m = text("u", "1");
        assert_ne!(
            retry_key(&m, Sealing::Plain),
            retry_key(&m, Sealing::Sealed)
        );
    }

    use crate::protocol::verify::Token;
    use crate::server::env::SystemEnv;
    use crate::server::replay::Replay;

    /// A retry store whose every push is a retry, joining the first attempt its closure makes.
    struct Retries(Box<dyn Fn() -> store::Waiter<Answer, Plan> + Send + Sync>);

    impl RetryStore<Answer, Plan> for Retries {
        fn begin(&self, _key: Key, _now: u64) -> Begin<Answer, Plan> {
            Begin::InFlight((self.0)())
        }
        fn usage(&self) -> Usage {
            Usage::default()
        }
        fn limits(&self) -> Limits {
            Limits::default()
        }
    }

    /// A signed text push through a pipeline whose store makes it a retry of `first`.
    fn retried(first: impl Fn() -> store::Waiter<Answer, Plan> + Send + Sync + 'static) -> Handled {
        let token = Token::new("unit").unwrap();
        let pipeline = Pipeline::new(
            Account::new(token.clone()),
            Arc::new(Retries(Box::new(first))),
            Arc::new(SystemEnv),
        )
        .with_replay(Replay::new(0));
        let sig = verify::signature(&token, "1", "2");
        let query = Query::parse(&format!("signature={sig}&timestamp=1&nonce=2")).unwrap();
        let body = text("u", "1").to_xml();
        pipeline.handle_message(Push {
            query: &query,
            body: body.as_bytes(),
            arrived: Instant::now(),
        })
    }

    #[test]
    fn a_joined_retry_takes_the_first_attempts_plan_and_answer_and_decides_nothing() {
        let handled = retried(|| {
            let first = store::detached::<Answer, Plan>();
            first.plan(Plan {
                fallback: Answer::success(),
                forward: false,
                decided: Decided::Rule { index: 9, line: 99 },
                reply: "news",
            });
            let waiter = first.waiter();
            first.complete(
                Answer {
                    body: Arc::from("first"),
                    xml: true,
                },
                0,
            );
            waiter
        });
        assert_eq!(handled.result.map(|a| a.body), Ok(Arc::from("first")));
        let o = handled.outcome;
        assert_eq!(o.answered, Some(Answered::Joined));
        assert_eq!(o.decided, Some(Decided::Rule { index: 9, line: 99 }));
        assert_eq!(o.reply, Some("news"));
        assert!(o.warnings.is_empty());
    }

    #[test]
    fn a_retry_whose_first_attempt_failed_before_deciding_decides_itself() {
        let handled = retried(|| {
            let first = store::detached::<Answer, Plan>();
            let waiter = first.waiter();
            drop(first);
            waiter
        });
        assert!(handled.result.is_ok());
        let o = handled.outcome;
        assert_eq!(o.answered, Some(Answered::Fresh));
        assert!(o.decided.is_some());
    }
}
