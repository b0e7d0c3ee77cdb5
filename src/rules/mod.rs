//! Keyword rules: which reply a message gets, loaded from a TOML file the user edits.
//!
//! Rules are tried top to bottom and the first match wins; `[default]` says what happens when
//! none matches. The built-in behaviour (`天气` → `北京天气挺好的！`, other text echoed, everything
//! else `success`) is itself a rules file, [`BUILTIN`], loaded by the same code.
//!
//! In scope: parsing and validating the file (with file:line errors), compiling regexes once per
//! load, matching a [`Message`], and filling placeholders. Out of scope: reading the file from
//! disk, watching it, and logging (see `reload`).

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, RwLock};

use regex::{Regex, RegexSet};
use serde::Deserialize;
use toml::Spanned;

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
    regex_set: RegexSet,
}

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
    Regex(Regex),
    MsgType(String),
    /// Event name compared case-insensitively, optionally with its `EventKey`.
    Event {
        name: String,
        key: Option<KeyMatch>,
    },
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

/// The outcome of matching one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub reply: Reply,
    /// 1-based index of the rule that matched; `None` for the default.
    pub rule: Option<usize>,
    /// Platform-limit adjustments made while building the reply, for the log.
    pub warnings: Vec<String>,
}

impl RuleSet {
    /// The built-in rules (see [`BUILTIN`]).
    pub fn builtin() -> RuleSet {
        // BUILTIN is a constant checked by a unit test; failing here would be a build defect.
        RuleSet::parse(BUILTIN, "<built-in>").unwrap_or_else(|e| panic!("built-in rules: {e}"))
    }

    /// Parses and validates a rules file's text; `file` only names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<RuleSet, RulesError> {
        let err = |span: Option<Range<usize>>, reason: String| RulesError {
            file: file.to_owned(),
            line: span.map(|s| line_of(text, s.start)),
            reason,
        };
        let raw: RawFile =
            toml::from_str(text).map_err(|e| err(e.span(), e.message().trim().to_owned()))?;
        let mut rules = Vec::with_capacity(raw.rules.len());
        for (i, spanned) in raw.rules.into_iter().enumerate() {
            let span = spanned.span();
            let rule = spanned.into_inner();
            let at = |reason: String| err(Some(span.clone()), format!("rule {}: {reason}", i + 1));
            let line = line_of(text, span.start);
            rules.push(compile_rule(rule, line).map_err(at)?);
        }
        let default = match raw.default {
            None => Action::Echo,
            Some(d) => {
                let span = d.span();
                compile_action(d.into_inner().reply, None)
                    .map_err(|r| err(Some(span), format!("[default]: {r}")))?
            }
        };
        let patterns = rules.iter().filter_map(|r| match &r.matcher {
            Matcher::Regex(re) => Some(re.as_str()),
            _ => None,
        });
        // With hundreds of patterns the default 2 MiB lazy-DFA cache is too small and the set
        // falls back to the much slower PikeVM. 4 MiB was enough for text that matches no rule
        // but not for text that matches one (criterion rules/500/regex_capture: 41 µs against
        // 0.3 µs at 8 MiB); the cache is per handler thread and only grows as it is used.
        let regex_set = regex::RegexSetBuilder::new(patterns)
            .size_limit(64 << 20)
            .dfa_size_limit(8 << 20)
            .build()
            .map_err(|e| err(None, format!("regex rules do not fit together: {e}")))?;
        Ok(RuleSet {
            rules,
            default,
            regex_set,
        })
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn default_action(&self) -> &Action {
        &self.default
    }

    /// Picks the reply for `msg`: the first matching rule, or the default.
    pub fn decide(&self, msg: &Message) -> Decision {
        let said = msg.said();
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
                d.rule = Some(i + 1);
                return d;
            }
        }
        build(&self.default, msg, None)
    }
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

fn build(action: &Action, msg: &Message, caps: Option<&regex::Captures<'_>>) -> Decision {
    let mut warnings = Vec::new();
    let ctx = Ctx { msg, caps };
    let answering = if msg.event().is_some() {
        Answering::Event
    } else {
        Answering::Message
    };
    let reply = match action {
        Action::Success => Reply::Success,
        Action::Echo => match &msg.kind {
            Kind::Text { content } => text_reply(content.clone(), &mut warnings),
            _ => Reply::Success,
        },
        Action::Reply(spec) => {
            let r = |t: &Template| t.render(&ctx);
            let opt = |t: &Option<Template>| t.as_ref().map(r);
            let built = match spec {
                ReplySpec::Text(t) => Ok(text_reply(r(t), &mut warnings)),
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
                    let mut list: Vec<Article> = articles
                        .iter()
                        .map(|a| Article {
                            title: r(&a.title),
                            description: r(&a.description),
                            pic_url: r(&a.pic_url),
                            url: r(&a.url),
                        })
                        .collect();
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
                ReplySpec::TransferCustomerService(kf) => {
                    Ok(Reply::transfer_customer_service(opt(kf)))
                }
            };
            built.unwrap_or_else(|e| {
                warnings.push(format!("{e}; answering success instead"));
                Reply::Success
            })
        }
    };
    Decision {
        reply,
        rule: None,
        warnings,
    }
}

fn text_reply(content: String, warnings: &mut Vec<String>) -> Reply {
    let (reply, adjustment) = Reply::text(content);
    if let Some(a) = adjustment {
        warnings.push(a.to_string());
    }
    reply
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()
        .get(..offset.min(text.len()))
        .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
        + 1
}

// ---------------------------------------------------------------------------------------------
// Placeholders

/// Text with placeholders: `{content}`, `{from_user}`, `{to_user}`, `{event_key}`, `{scene}`,
/// regex captures `${1}` / `${name}`; `{{` and `}}` are literal braces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Content,
    FromUser,
    ToUser,
    EventKey,
    Scene,
    Group(usize),
    Named(String),
}

struct Ctx<'a, 'm> {
    msg: &'m Message,
    caps: Option<&'a regex::Captures<'a>>,
}

impl ReplySpec {
    /// Every template in the reply, for load-time checks.
    fn templates(&self) -> Vec<&Template> {
        match self {
            ReplySpec::Text(t) | ReplySpec::Image(t) | ReplySpec::Voice(t) => vec![t],
            ReplySpec::Video {
                media_id,
                title,
                description,
            } => [Some(media_id), title.as_ref(), description.as_ref()]
                .into_iter()
                .flatten()
                .collect(),
            ReplySpec::Music {
                title,
                description,
                music_url,
                hq_music_url,
                thumb_media_id,
            } => [title, description, music_url, hq_music_url, thumb_media_id]
                .into_iter()
                .flatten()
                .collect(),
            ReplySpec::News(articles) => articles
                .iter()
                .flat_map(|a| [&a.title, &a.description, &a.pic_url, &a.url])
                .collect(),
            ReplySpec::TransferCustomerService(kf) => kf.iter().collect(),
        }
    }
}

impl Template {
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut rest = s;
        while let Some(c) = rest.chars().next() {
            let placeholder = if rest.starts_with("{{") {
                lit.push('{');
                rest = &rest[2..];
                continue;
            } else if rest.starts_with("}}") {
                lit.push('}');
                rest = &rest[2..];
                continue;
            } else if let Some(after) = rest.strip_prefix("${") {
                let end = after
                    .find('}')
                    .ok_or_else(|| format!("unclosed `${{` in {s:?}"))?;
                let name = &after[..end];
                rest = &after[end + 1..];
                Some(match name.parse::<usize>() {
                    Ok(n) => Piece::Group(n),
                    Err(_) if is_ident(name) => Piece::Named(name.to_owned()),
                    Err(_) => return Err(format!("bad capture reference `${{{name}}}`")),
                })
            } else if let Some(after) = rest.strip_prefix('{') {
                match after.find('}').map(|end| (&after[..end], end)) {
                    Some((name, end)) if is_ident(name) => {
                        rest = &after[end + 1..];
                        Some(match name {
                            "content" => Piece::Content,
                            "from_user" => Piece::FromUser,
                            "to_user" => Piece::ToUser,
                            "event_key" => Piece::EventKey,
                            "scene" => Piece::Scene,
                            other => return Err(format!(
                                "unknown placeholder {{{other}}} (known: {{content}}, {{from_user}}, {{to_user}}, {{event_key}}, {{scene}}; write {{{{ for a literal brace)"
                            )),
                        })
                    }
                    _ => None,
                }
            } else {
                None
            };
            match placeholder {
                Some(p) => {
                    if !lit.is_empty() {
                        pieces.push(Piece::Lit(std::mem::take(&mut lit)));
                    }
                    pieces.push(p);
                }
                None => {
                    // A character XML cannot carry would be dropped on sending anyway.
                    if crate::protocol::xml::is_xml_char(c) {
                        lit.push(c);
                    }
                    rest = &rest[c.len_utf8()..];
                }
            }
        }
        if !lit.is_empty() {
            pieces.push(Piece::Lit(lit));
        }
        Ok(Template(pieces))
    }

    /// True when the template can only ever render as "" (so a text reply would be empty).
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn uses_captures(&self) -> impl Iterator<Item = &Piece> {
        self.0
            .iter()
            .filter(|p| matches!(p, Piece::Group(_) | Piece::Named(_)))
    }

    fn render(&self, ctx: &Ctx<'_, '_>) -> String {
        if let [Piece::Lit(s)] = self.0.as_slice() {
            return s.clone();
        }
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Lit(s) => out.push_str(s),
                Piece::Content => out.push_str(ctx.msg.said().unwrap_or("")),
                Piece::FromUser => out.push_str(&ctx.msg.from_user_name),
                Piece::ToUser => out.push_str(&ctx.msg.to_user_name),
                Piece::EventKey => {
                    out.push_str(ctx.msg.event().and_then(|e| e.event_key()).unwrap_or(""))
                }
                Piece::Scene => out.push_str(ctx.msg.event().and_then(|e| e.scene()).unwrap_or("")),
                Piece::Group(n) => {
                    out.push_str(ctx.caps.and_then(|c| c.get(*n)).map_or("", |m| m.as_str()))
                }
                Piece::Named(name) => out.push_str(
                    ctx.caps
                        .and_then(|c| c.name(name))
                        .map_or("", |m| m.as_str()),
                ),
            }
        }
        out
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        for p in &self.0 {
            match p {
                Piece::Lit(l) => s.push_str(&l.replace('{', "{{").replace('}', "}}")),
                Piece::Content => s.push_str("{content}"),
                Piece::FromUser => s.push_str("{from_user}"),
                Piece::ToUser => s.push_str("{to_user}"),
                Piece::EventKey => s.push_str("{event_key}"),
                Piece::Scene => s.push_str("{scene}"),
                Piece::Group(n) => s.push_str(&format!("${{{n}}}")),
                Piece::Named(n) => s.push_str(&format!("${{{n}}}")),
            }
        }
        write!(f, "{s:?}")
    }
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

// ---------------------------------------------------------------------------------------------
// The file format

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    rules: Vec<Spanned<RawRule>>,
    default: Option<Spanned<RawDefault>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    text: Option<String>,
    contains: Option<String>,
    regex: Option<String>,
    msg_type: Option<String>,
    event: Option<String>,
    key: Option<String>,
    key_regex: Option<String>,
    reply: toml::Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefault {
    reply: toml::Value,
}

fn compile_rule(raw: RawRule, line: usize) -> Result<Rule, String> {
    let kinds = [
        raw.text.is_some(),
        raw.contains.is_some(),
        raw.regex.is_some(),
        raw.msg_type.is_some(),
        raw.event.is_some(),
    ];
    let n = kinds.iter().filter(|&&k| k).count();
    if n != 1 {
        return Err(format!(
            "needs exactly one of `text`, `contains`, `regex`, `msg_type`, `event` (found {n})"
        ));
    }
    if raw.event.is_none() && (raw.key.is_some() || raw.key_regex.is_some()) {
        return Err("`key` and `key_regex` only go with `event`".into());
    }
    let matcher = if let Some(t) = raw.text {
        Matcher::Text(t)
    } else if let Some(t) = raw.contains {
        if t.is_empty() {
            return Err("`contains` is empty (it would match every text)".into());
        }
        Matcher::Contains(t)
    } else if let Some(r) = raw.regex {
        Matcher::Regex(compile_regex(&r)?)
    } else if let Some(t) = raw.msg_type {
        Matcher::MsgType(t)
    } else {
        let name = raw.event.unwrap_or_default();
        let key = match (raw.key, raw.key_regex) {
            (Some(_), Some(_)) => return Err("use `key` or `key_regex`, not both".into()),
            (Some(k), None) => Some(KeyMatch::Exact(k)),
            (None, Some(r)) => Some(KeyMatch::Regex(compile_regex(&r)?)),
            (None, None) => None,
        };
        Matcher::Event { name, key }
    };
    let regex = match &matcher {
        Matcher::Regex(re) => Some(re),
        _ => None,
    };
    let action = compile_action(raw.reply, regex)?;
    Ok(Rule {
        line,
        matcher,
        action,
    })
}

fn compile_regex(pattern: &str) -> Result<Regex, String> {
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| {
            format!(
                "bad regex {pattern:?}: {}",
                // regex's message is a multi-line picture; its last line says what is wrong.
                e.to_string()
                    .lines()
                    .last()
                    .unwrap_or("")
                    .trim_start_matches("error: ")
            )
        })
}

const REPLY_KINDS: &str =
    "text, image, voice, video, music, news, transfer_customer_service, or \"success\"/\"echo\"";

fn compile_action(value: toml::Value, regex: Option<&Regex>) -> Result<Action, String> {
    let table = match value {
        toml::Value::String(s) => {
            return match s.as_str() {
                "echo" => Ok(Action::Echo),
                "success" => Ok(Action::Success),
                other => Err(format!("reply = {other:?}: expected {REPLY_KINDS}")),
            }
        }
        toml::Value::Table(t) => t,
        other => {
            return Err(format!(
                "reply must be a table or a string, not {}",
                other.type_str()
            ))
        }
    };
    if table.len() != 1 {
        let keys: Vec<_> = table.keys().map(String::as_str).collect();
        return Err(format!(
            "reply needs exactly one kind ({REPLY_KINDS}); found [{}]",
            keys.join(", ")
        ));
    }
    let Some((kind, value)) = table.into_iter().next() else {
        return Err("reply is empty".into());
    };
    let spec = match kind.as_str() {
        "text" => {
            let t = template(&value, "reply.text")?;
            if t.is_empty() {
                return Err("reply.text is empty (WeChat shows the user an error for empty text; use reply = \"success\")".into());
            }
            ReplySpec::Text(t)
        }
        "image" | "voice" => {
            let id = media_id(&value, &kind)?;
            if kind == "image" {
                ReplySpec::Image(id)
            } else {
                ReplySpec::Voice(id)
            }
        }
        "video" => {
            let mut t = Fields::new(value, "reply.video")?;
            let spec = ReplySpec::Video {
                media_id: t.required("media_id")?,
                title: t.optional("title")?,
                description: t.optional("description")?,
            };
            t.finish()?;
            spec
        }
        "music" => {
            let mut t = Fields::new(value, "reply.music")?;
            let spec = ReplySpec::Music {
                title: t.optional("title")?,
                description: t.optional("description")?,
                music_url: t.optional("music_url")?,
                hq_music_url: t.optional("hq_music_url")?,
                thumb_media_id: t.optional("thumb_media_id")?,
            };
            t.finish()?;
            spec
        }
        "news" => {
            let items = match value {
                toml::Value::Array(a) => a,
                toml::Value::Table(t) => vec![toml::Value::Table(t)],
                other => {
                    return Err(format!(
                        "reply.news must be a list of articles, not {}",
                        other.type_str()
                    ))
                }
            };
            if items.is_empty() || items.len() > reply::MAX_ARTICLES {
                return Err(format!(
                    "reply.news has {} articles; WeChat needs 1 to {}",
                    items.len(),
                    reply::MAX_ARTICLES
                ));
            }
            let mut articles = Vec::with_capacity(items.len());
            for item in items {
                let mut t = Fields::new(item, "reply.news article")?;
                articles.push(ArticleSpec {
                    title: t.optional("title")?.unwrap_or(Template(vec![])),
                    description: t.optional("description")?.unwrap_or(Template(vec![])),
                    pic_url: t.optional("pic_url")?.unwrap_or(Template(vec![])),
                    url: t.optional("url")?.unwrap_or(Template(vec![])),
                });
                t.finish()?;
            }
            ReplySpec::News(articles)
        }
        "transfer_customer_service" => match value {
            toml::Value::Boolean(true) => ReplySpec::TransferCustomerService(None),
            toml::Value::String(_) => {
                ReplySpec::TransferCustomerService(Some(template(&value, "kf_account")?))
            }
            other => {
                let mut t = Fields::new(other, "reply.transfer_customer_service")?;
                let kf = t.optional("kf_account")?;
                t.finish()?;
                ReplySpec::TransferCustomerService(kf)
            }
        },
        other => {
            return Err(format!(
                "unknown reply kind `{other}`: expected {REPLY_KINDS}"
            ))
        }
    };
    check_captures(&spec, regex)?;
    Ok(Action::Reply(spec))
}

fn media_id(value: &toml::Value, kind: &str) -> Result<Template, String> {
    let t = match value {
        toml::Value::Table(_) => {
            let mut f = Fields::new(value.clone(), &format!("reply.{kind}"))?;
            let id = f.required("media_id")?;
            f.finish()?;
            id
        }
        _ => template(value, &format!("reply.{kind}"))?,
    };
    if t.is_empty() {
        return Err(format!("reply.{kind} has an empty media_id"));
    }
    Ok(t)
}

fn template(value: &toml::Value, what: &str) -> Result<Template, String> {
    match value {
        toml::Value::String(s) => Template::parse(s).map_err(|e| format!("{what}: {e}")),
        other => Err(format!("{what} must be a string, not {}", other.type_str())),
    }
}

/// Reads the fields of a reply table, refusing unknown keys.
struct Fields {
    table: toml::Table,
    what: String,
}

impl Fields {
    fn new(value: toml::Value, what: &str) -> Result<Fields, String> {
        match value {
            toml::Value::Table(table) => Ok(Fields {
                table,
                what: what.to_owned(),
            }),
            other => Err(format!("{what} must be a table, not {}", other.type_str())),
        }
    }

    fn optional(&mut self, key: &str) -> Result<Option<Template>, String> {
        self.table
            .remove(key)
            .map(|v| template(&v, &format!("{}.{key}", self.what)))
            .transpose()
    }

    fn required(&mut self, key: &str) -> Result<Template, String> {
        self.optional(key)?
            .ok_or_else(|| format!("{} needs `{key}`", self.what))
    }

    fn finish(self) -> Result<(), String> {
        match self.table.keys().next() {
            Some(k) => Err(format!("unknown key `{k}` in {}", self.what)),
            None => Ok(()),
        }
    }
}

fn check_captures(spec: &ReplySpec, regex: Option<&Regex>) -> Result<(), String> {
    let all = spec.templates();
    for piece in all.iter().flat_map(|t| t.uses_captures()) {
        let Some(re) = regex else {
            return Err("`${…}` captures need a `regex` rule".into());
        };
        match piece {
            Piece::Group(n) if *n >= re.captures_len() => {
                return Err(format!(
                    "`${{{n}}}` but the regex has only {} group(s)",
                    re.captures_len() - 1
                ))
            }
            Piece::Named(name) if !re.capture_names().flatten().any(|c| c == name) => {
                return Err(format!(
                    "`${{{name}}}` but the regex has no group named {name}"
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// One line per rule, for `wxmp check-rules`.

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {} → {}", self.line, self.matcher, self.action)
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Matcher::Text(t) => write!(f, "text is {t:?}"),
            Matcher::Contains(t) => write!(f, "text contains {t:?}"),
            Matcher::Regex(r) => write!(f, "text matches /{}/", r.as_str()),
            Matcher::MsgType(t) => write!(f, "MsgType is {t}"),
            Matcher::Event { name, key: None } => write!(f, "event {name}"),
            Matcher::Event {
                name,
                key: Some(KeyMatch::Exact(k)),
            } => write!(f, "event {name} with EventKey {k:?}"),
            Matcher::Event {
                name,
                key: Some(KeyMatch::Regex(r)),
            } => write!(f, "event {name} with EventKey matching /{}/", r.as_str()),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Echo => f.write_str("echo the text (success for anything else)"),
            Action::Success => f.write_str("success"),
            Action::Reply(spec) => match spec {
                ReplySpec::Text(t) => write!(f, "text {t}"),
                ReplySpec::Image(t) => write!(f, "image {t}"),
                ReplySpec::Voice(t) => write!(f, "voice {t}"),
                ReplySpec::Video { media_id, .. } => write!(f, "video {media_id}"),
                ReplySpec::Music { title, .. } => match title {
                    Some(t) => write!(f, "music {t}"),
                    None => f.write_str("music"),
                },
                ReplySpec::News(a) => {
                    let titles: Vec<String> = a.iter().map(|a| a.title.to_string()).collect();
                    write!(f, "news ({} article(s): {})", a.len(), titles.join(", "))
                }
                ReplySpec::TransferCustomerService(None) => {
                    f.write_str("transfer to customer service")
                }
                ReplySpec::TransferCustomerService(Some(kf)) => {
                    write!(f, "transfer to customer service agent {kf}")
                }
            },
        }
    }
}

#[cfg(test)]
mod tests;
