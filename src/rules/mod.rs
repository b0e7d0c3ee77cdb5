//! Keyword rules: which reply a message gets, loaded from a TOML file the user edits.
//!
//! Rules are tried top to bottom and the first match wins; `[default]` says what happens when
//! none matches. The built-in behaviour (`天气` → `北京天气挺好的！`, other text echoed, everything
//! else `success`) is itself a rules file, [`BUILTIN`], loaded by the same code.
//!
//! Here: the rules and the decision ([`RuleSet::decide`]). Beside it: the file format with
//! file:line errors and regexes compiled once per load (`file`), placeholders (`template`),
//! and one line per rule for `wxmp check-rules` (`describe`). Out of scope: reading the file
//! from disk, watching it, and logging (the server's `reload`).

mod describe;
mod file;
mod lanes;
mod template;

use template::Ctx;
pub use template::Template;

use std::fmt;
use std::sync::{Arc, OnceLock, RwLock};

use regex::Regex;

use crate::protocol::message::{Kind, Message};
use crate::protocol::reply::{self, Answering, Article, Music, Reply, Video};

/// The behaviour wxmp had before rules files existed, as a rules file.
pub const BUILTIN: &str = r#"# Built-in rules: the original Flask app's behaviour.
[[rules]]
text = "天气"
reply.text = "北京天气挺好的！"

[default]
reply = "echo"
"#;

/// A rules file that failed to load: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesError {
    /// The file name as given (or `<built-in>`).
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    pub reason: String,
}

impl fmt::Display for RulesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file, line, self.reason),
            None => write!(f, "{}: {}", self.file, self.reason),
        }
    }
}

impl std::error::Error for RulesError {}

/// A loaded, validated set of rules. Immutable: a reload builds a new one.
#[derive(Debug)]
pub struct RuleSet {
    rules: Vec<Rule>,
    default: Action,
    /// All regex matchers in one automaton: one scan of the text tells whether any can match,
    /// so hundreds of regex rules that do not match cost about as much as one.
    regex_set: lanes::Lanes,
    /// What loaded but is probably not meant (a misspelt MsgType, a text over WeChat's limit).
    warnings: Vec<RulesError>,
}

/// A file a reply sends (`reply.image = { file = "pics/menu.png" }`). The server uploads it
/// as permanent material and sets its media_id here; until then the reply is `success`.
#[derive(Debug)]
pub struct MediaSlot {
    /// Resolved against the rules file's folder.
    pub path: std::path::PathBuf,
    /// As the rules file writes it.
    pub shown: String,
    /// WeChat's media type: `image`, `voice`, `video` or `thumb`.
    pub kind: &'static str,
    /// The reply it is in: `image`, `voice`, `video` or `music`.
    pub reply: &'static str,
    /// `1` for the first rule, `[default]` for the default.
    pub rule: String,
    pub line: usize,
    /// A video's title and description, for its upload (WeChat requires a title).
    pub title: Option<String>,
    pub description: Option<String>,
    media_id: RwLock<Option<String>>,
}

impl MediaSlot {
    pub fn media_id(&self) -> Option<String> {
        self.media_id.read().ok().and_then(|id| id.clone())
    }

    pub fn set(&self, media_id: String) {
        match self.media_id.write() {
            Ok(mut id) => *id = Some(media_id),
            Err(poisoned) => *poisoned.into_inner() = Some(media_id),
        }
    }
}

impl PartialEq for MediaSlot {
    fn eq(&self, other: &MediaSlot) -> bool {
        (&self.path, self.kind) == (&other.path, other.kind)
    }
}

impl Eq for MediaSlot {}

/// One `[[rules]]` entry.
#[derive(Debug)]
pub struct Rule {
    pub line: usize,
    pub matcher: Matcher,
    pub action: Action,
}

/// What a rule matches. Text matchers see a text's `Content` or a voice's `Recognition`.
#[derive(Debug)]
pub enum Matcher {
    Text(String),
    Contains(String),
    Regex(Pattern),
    MsgType(String),
    /// Event name compared case-insensitively, optionally with its `EventKey`.
    Event {
        name: String,
        key: Option<KeyMatch>,
    },
}

/// A regex rule's pattern, compiled on its own only when its rule is first tried on a text
/// that the set of all patterns (`lanes`) matched. Checked when the file is loaded (so errors
/// still have their line), then dropped: each compiled `Regex` keeps its own automata (about
/// 50 KiB for a short pattern), so 500 rules that rarely match cost 26 MiB kept for nothing.
pub struct Pattern {
    source: String,
    compiled: OnceLock<Option<Regex>>,
}

impl Pattern {
    /// A pattern that compiled when the file was loaded (see `file::compile_regex`).
    fn checked(source: String) -> Pattern {
        Pattern {
            source,
            compiled: OnceLock::new(),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern was compiled (it is once its rule was tried on a text).
    pub fn is_compiled(&self) -> bool {
        self.compiled.get().is_some()
    }

    fn regex(&self) -> Option<&Regex> {
        // It compiled at load with the same settings, so `None` cannot happen; if it did, the
        // rule would simply not match.
        self.compiled
            .get_or_init(|| file::compile_regex(&self.source).ok())
            .as_ref()
    }

    pub fn is_match(&self, text: &str) -> bool {
        self.regex().is_some_and(|re| re.is_match(text))
    }

    pub fn captures<'t>(&self, text: &'t str) -> Option<regex::Captures<'t>> {
        self.regex().and_then(|re| re.captures(text))
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.source)
    }
}

#[derive(Debug)]
pub enum KeyMatch {
    Exact(String),
    Regex(Regex),
}

/// What to answer.
#[derive(Debug)]
pub enum Action {
    /// Echo a text message's `Content`; anything else gets `success`.
    Echo,
    Success,
    Reply(ReplySpec),
    /// Hand the push to the user's own code (`reply.forward` / `reply.command`), answering
    /// `fallback` when it cannot answer in time or answers something WeChat would refuse.
    Forward {
        target: Target,
        /// Never itself a `Forward`.
        fallback: Box<Action>,
    },
}

/// Where a forwarded push goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `reply.forward = "http://..."`: an HTTP endpoint that takes the push as JSON.
    Http { url: String },
    /// `reply.command = ["python3", "bot.py"]`: a program that reads the JSON on stdin and
    /// writes the answer on stdout, run in `dir` (the rules file's folder) without a shell.
    Command {
        argv: Vec<String>,
        dir: std::path::PathBuf,
    },
}

/// A reply with placeholders still to fill.
#[derive(Debug)]
pub enum ReplySpec {
    Text(Template),
    Image(Template),
    Voice(Template),
    Video {
        media_id: Template,
        title: Option<Template>,
        description: Option<Template>,
    },
    Music {
        title: Option<Template>,
        description: Option<Template>,
        music_url: Option<Template>,
        hq_music_url: Option<Template>,
        thumb_media_id: Option<Template>,
    },
    News(Vec<ArticleSpec>),
    TransferCustomerService(Option<Template>),
}

#[derive(Debug)]
pub struct ArticleSpec {
    pub title: Template,
    pub description: Template,
    pub pic_url: Template,
    pub url: Template,
}

/// Which rule matched: its 1-based index and its line in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Matched {
    pub index: usize,
    pub line: usize,
}

/// The outcome of matching one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub reply: Reply,
    /// The rule that matched; `None` for the default.
    pub rule: Option<Matched>,
    /// Platform-limit adjustments made while building the reply, for the log.
    pub warnings: Vec<String>,
    /// Set when the push goes to the user's own code; `reply` is then the fallback.
    pub forward: Option<Target>,
}
impl RuleSet {
    /// The built-in rules (see [`BUILTIN`]).
    pub fn builtin() -> RuleSet {
        // BUILTIN is a constant checked by a unit test; failing here would be a build defect.
        RuleSet::parse(BUILTIN, "<built-in>").unwrap_or_else(|e| panic!("built-in rules: {e}"))
    }

    /// Things that loaded but are probably not meant, each with file and line; `check-rules`
    /// prints them and the server logs them, but they do not stop a load.
    pub fn warnings(&self) -> &[RulesError] {
        &self.warnings
    }

    /// Whether any rule (or the default) hands pushes to the user's own code.
    pub fn forwards(&self) -> bool {
        std::iter::once(&self.default)
            .chain(self.rules.iter().map(|r| &r.action))
            .any(|a| matches!(a, Action::Forward { .. }))
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Every file the replies send, in rule order (the default last).
    pub fn media_files(&self) -> Vec<Arc<MediaSlot>> {
        fn of(action: &Action, out: &mut Vec<Arc<MediaSlot>>) {
            match action {
                Action::Forward { fallback, .. } => of(fallback, out),
                Action::Reply(spec) => {
                    for t in spec.templates() {
                        out.extend(t.files().cloned());
                    }
                }
                Action::Echo | Action::Success => {}
            }
        }
        let mut out = Vec::new();
        for action in self
            .rules
            .iter()
            .map(|r| &r.action)
            .chain(std::iter::once(&self.default))
        {
            of(action, &mut out);
        }
        out
    }

    pub fn default_action(&self) -> &Action {
        &self.default
    }

    /// Picks the reply for `msg`: the first matching rule, or the default.
    pub fn decide(&self, msg: &Message) -> Decision {
        let said = subject(msg);
        // Asked once, when the walk reaches the first regex rule: can any regex rule match?
        // One DFA pass over the set answers "none" (the common case) however many rules there
        // are; only when the answer is yes are the regex rules tried one by one, in order.
        let mut any_regex: Option<bool> = None;
        for (i, rule) in self.rules.iter().enumerate() {
            let captures = match &rule.matcher {
                Matcher::Text(t) => said == Some(t.as_str()),
                Matcher::Contains(t) => said.is_some_and(|s| s.contains(t.as_str())),
                Matcher::Regex(re) => {
                    let Some(text) = said else { continue };
                    *any_regex.get_or_insert_with(|| self.regex_set.is_match(text))
                        && re.is_match(text)
                }
                Matcher::MsgType(t) => msg.msg_type().eq_ignore_ascii_case(t),
                Matcher::Event { name, key } => msg.event().is_some_and(|e| {
                    e.name().eq_ignore_ascii_case(name)
                        && match key {
                            None => true,
                            Some(KeyMatch::Exact(k)) => e.event_key() == Some(k.as_str()),
                            Some(KeyMatch::Regex(re)) => {
                                e.event_key().is_some_and(|k| re.is_match(k))
                            }
                        }
                }),
            };
            if captures {
                let caps = match (&rule.matcher, said) {
                    (Matcher::Regex(re), Some(text)) => re.captures(text),
                    _ => None,
                };
                let mut d = build(&rule.action, msg, caps.as_ref());
                d.rule = Some(Matched {
                    index: i + 1,
                    line: rule.line,
                });
                return d;
            }
        }
        build(&self.default, msg, None)
    }
}

/// The text that text matchers see: a text's `Content` exactly, or a voice message's
/// `Recognition` without the punctuation WeChat's speech recognition ends it with (`天气。`,
/// `天气！`), so that `text = "天气"` matches what the user said.
fn subject(msg: &Message) -> Option<&str> {
    match &msg.kind {
        Kind::Voice {
            recognition: Some(r),
            ..
        } => Some(r.trim_end_matches(|c: char| c.is_whitespace() || is_punctuation(c))),
        _ => msg.said(),
    }
}

/// ASCII punctuation, CJK symbols and punctuation, full-width forms, and the dashes, quotes and
/// ellipsis recognition produces.
fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation()
        || matches!(c,
            '\u{3000}'..='\u{303F}'
            | '\u{FF01}'..='\u{FF0F}'
            | '\u{FF1A}'..='\u{FF20}'
            | '\u{FF3B}'..='\u{FF40}'
            | '\u{FF5B}'..='\u{FF65}'
            | '\u{2010}'..='\u{2027}'
            | '\u{00A1}' | '\u{00BF}')
}

/// The rules requests currently use; a reload swaps the whole set at once.
#[derive(Debug)]
pub struct SharedRules(RwLock<Arc<RuleSet>>);

impl SharedRules {
    pub fn new(set: RuleSet) -> SharedRules {
        SharedRules(RwLock::new(Arc::new(set)))
    }

    pub fn current(&self) -> Arc<RuleSet> {
        match self.0.read() {
            Ok(guard) => Arc::clone(&guard),
            // A writer cannot panic while holding the lock (it only swaps an Arc), but if it
            // ever did, the set inside is still whole.
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    pub fn replace(&self, set: RuleSet) {
        let new = Arc::new(set);
        match self.0.write() {
            Ok(mut guard) => *guard = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }
}

/// The decision for one action; a forward takes its fallback's decision and adds the target.
fn build(action: &Action, msg: &Message, caps: Option<&regex::Captures<'_>>) -> Decision {
    let mut warnings = Vec::new();
    let ctx = Ctx { msg, caps };
    let answering = if msg.event().is_some() {
        Answering::Event
    } else {
        Answering::Message
    };
    let reply = match action {
        Action::Forward { target, fallback } => {
            let mut d = build(fallback, msg, caps);
            d.forward = Some(target.clone());
            return d;
        }
        Action::Success => Reply::Success,
        Action::Echo => match &msg.kind {
            Kind::Text {
                content: Some(content),
            } => text_reply(content.clone(), &mut warnings),
            _ => Reply::Success,
        },
        Action::Reply(spec) if has_unuploaded_file(spec) => {
            warn_unuploaded_files(spec, &mut warnings);
            Reply::Success
        }
        Action::Reply(spec) => render_spec(spec, &ctx, answering, &mut warnings),
    };
    Decision {
        reply,
        rule: None,
        warnings,
        forward: None,
    }
}

/// A file still being uploaded has no media_id to send, so the reply cannot be built yet.
fn has_unuploaded_file(spec: &ReplySpec) -> bool {
    spec.templates()
        .iter()
        .flat_map(|t| t.files())
        .any(|f| f.media_id().is_none())
}

/// Answering `success` for a file not yet uploaded would be silent without a warning per file.
fn warn_unuploaded_files(spec: &ReplySpec, warnings: &mut Vec<String>) {
    for f in spec.templates().iter().flat_map(|t| t.files()) {
        if f.media_id().is_none() {
            warnings.push(format!(
                "reply.{} file {:?} is not uploaded yet; answering success instead",
                f.reply, f.shown
            ));
        }
    }
}

/// A reply the platform would refuse becomes `success` with a warning, so the user sees no error.
fn render_spec(
    spec: &ReplySpec,
    ctx: &Ctx<'_, '_>,
    answering: Answering,
    warnings: &mut Vec<String>,
) -> Reply {
    let r = |t: &Template| t.render(ctx);
    let opt = |t: &Option<Template>| t.as_ref().map(r);
    let built = match spec {
        ReplySpec::Text(t) => Ok(text_reply(r(t), warnings)),
        ReplySpec::Image(t) => Reply::image(r(t)),
        ReplySpec::Voice(t) => Reply::voice(r(t)),
        ReplySpec::Video {
            media_id,
            title,
            description,
        } => Reply::video(Video {
            media_id: r(media_id),
            title: opt(title),
            description: opt(description),
        }),
        ReplySpec::Music {
            title,
            description,
            music_url,
            hq_music_url,
            thumb_media_id,
        } => Ok(Reply::music(Music {
            title: opt(title),
            description: opt(description),
            music_url: opt(music_url),
            hq_music_url: opt(hq_music_url),
            thumb_media_id: opt(thumb_media_id),
        })),
        ReplySpec::News(articles) => {
            let list = articles
                .iter()
                .map(|a| Article {
                    title: r(&a.title),
                    description: r(&a.description),
                    pic_url: r(&a.pic_url),
                    url: r(&a.url),
                })
                .collect();
            news_reply(list, answering, warnings)
        }
        ReplySpec::TransferCustomerService(kf) => Ok(Reply::transfer_customer_service(opt(kf))),
    };
    built.unwrap_or_else(|e| {
        warnings.push(format!("{e}; answering success instead"));
        Reply::Success
    })
}

/// Too many articles is the one refusal worth repairing, by sending the first, not `success`.
fn news_reply(
    mut list: Vec<Article>,
    answering: Answering,
    warnings: &mut Vec<String>,
) -> Result<Reply, reply::ReplyError> {
    match Reply::news(list.clone(), answering) {
        Err(e @ reply::ReplyError::TooManyArticles { .. }) => {
            // WeChat shows a user's message only one article: send the first.
            warnings.push(format!("{e}; sending the first only"));
            list.truncate(1);
            Reply::news(list, answering)
        }
        other => other,
    }
}

fn text_reply(content: String, warnings: &mut Vec<String>) -> Reply {
    let (reply, adjustment) = Reply::text(content);
    if let Some(a) = adjustment {
        warnings.push(a.to_string());
    }
    reply
}

#[cfg(test)]
mod tests;
