//! The rules file format: TOML → a validated [`RuleSet`], with file:line errors.

use std::ops::Range;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde::Deserialize;
use toml::Spanned;

use super::template::{Piece, Template};
use super::{
    Action, ArticleSpec, KeyMatch, Matcher, MediaSlot, Pattern, ReplySpec, Rule, RuleSet,
    RulesError, Target,
};
use crate::protocol::{message, reply};
use crate::text::{line_of, redact_url};

impl RuleSet {
    /// Parses and validates a rules file's text; `file` only names it in errors and warnings.
    pub fn parse(text: &str, file: &str) -> Result<RuleSet, RulesError> {
        let err = |span: Option<Range<usize>>, reason: String| RulesError {
            file: file.to_owned(),
            line: span.map(|s| line_of(text, s.start)),
            reason,
        };
        let raw: RawFile =
            toml::from_str(text).map_err(|e| err(e.span(), e.message().trim().to_owned()))?;
        // Commands run in the rules file's folder, so `["python3", "bot.py"]` finds its script.
        let dir = match Path::new(file).parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut rules = Vec::with_capacity(raw.rules.len());
        let mut warnings = Vec::new();
        for (i, spanned) in raw.rules.into_iter().enumerate() {
            let header = spanned.span();
            let line = line_of(text, header.start);
            let mut notes = Vec::new();
            let reply_at = key_span(text, &header, "reply");
            let at = At {
                dir: &dir,
                rule: (i + 1).to_string(),
                line: reply_at.as_ref().map_or(line, |s| line_of(text, s.start)),
            };
            let rule = compile_rule(spanned.into_inner(), line, reply_at, &at, &mut notes)
                .map_err(|Located { span, reason }| {
                    err(
                        Some(span.unwrap_or_else(|| header.clone())),
                        format!("rule {}: {reason}", i + 1),
                    )
                })?;
            warnings.extend(
                notes
                    .into_iter()
                    .map(|Located { span, reason }| RulesError {
                        file: file.to_owned(),
                        line: Some(span.map_or(line, |s| line_of(text, s.start))),
                        reason: format!("rule {}: {reason}", i + 1),
                    }),
            );
            rules.push(rule);
        }
        let default = match raw.default {
            None => Action::Echo,
            Some(d) => {
                let span = d.span();
                let at = key_span(text, &span, "reply").unwrap_or(span);
                let mut notes = Vec::new();
                let here = At {
                    dir: &dir,
                    rule: "[default]".into(),
                    line: line_of(text, at.start),
                };
                let action = compile_action(d.into_inner().reply, None, &here, &mut notes)
                    .map_err(|r| err(Some(at.clone()), format!("[default]: {r}")))?;
                warnings.extend(notes.into_iter().map(|reason| RulesError {
                    file: file.to_owned(),
                    line: Some(line_of(text, at.start)),
                    reason: format!("[default]: {reason}"),
                }));
                action
            }
        };
        let patterns = rules.iter().filter_map(|r| match &r.matcher {
            Matcher::Regex(re) => Some(re.as_str()),
            _ => None,
        });
        // With hundreds of patterns the default 2 MiB lazy-DFA cache is too small and the set
        // falls back to the much slower PikeVM. 4 MiB was enough for text that matches no rule
        // but not for text that matches one (criterion rules/500/regex_capture: 41 µs against
        // 0.3 µs at 8 MiB); the cache grows as it is used, and there is one per core (see `lanes`).
        // The settings `regex::RegexSetBuilder` makes, built here to search with our own caches.
        let patterns: Vec<&str> = patterns.collect();
        let regex_set = regex_automata::meta::Builder::new()
            .configure(
                regex_automata::meta::Config::new()
                    .nfa_size_limit(Some(64 << 20))
                    .hybrid_cache_capacity(8 << 20)
                    .match_kind(regex_automata::MatchKind::All)
                    .utf8_empty(true)
                    .which_captures(regex_automata::nfa::thompson::WhichCaptures::None),
            )
            .syntax(regex_automata::util::syntax::Config::new().utf8(true))
            .build_many(&patterns)
            .map_err(|e| err(None, format!("regex rules do not fit together: {e}")))?;
        let regex_set = super::lanes::Lanes::per_core(regex_set);
        Ok(RuleSet {
            rules,
            default,
            regex_set,
            warnings,
        })
    }
}

/// Where a reply is: the rules file's folder (commands run there, files are found there), the
/// rule and the reply's line (for the files it names).
struct At<'a> {
    dir: &'a Path,
    rule: String,
    line: usize,
}

/// A reason, and where in the file it applies (`None`: the rule's `[[rules]]` header).
struct Located {
    span: Option<Range<usize>>,
    reason: String,
}

impl Located {
    fn at(span: Range<usize>) -> impl Fn(String) -> Located {
        move |reason| Located {
            span: Some(span.clone()),
            reason,
        }
    }

    fn header(reason: impl Into<String>) -> Located {
        Located {
            span: None,
            reason: reason.into(),
        }
    }
}

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
    text: Option<Spanned<String>>,
    contains: Option<Spanned<String>>,
    regex: Option<Spanned<String>>,
    msg_type: Option<Spanned<String>>,
    event: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    key_regex: Option<Spanned<String>>,
    /// Not `Spanned`: toml cannot span a table written with dotted keys (`reply.text = ...`),
    /// so its line is found in the text instead ([`key_span`]).
    reply: toml::Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefault {
    reply: toml::Value,
}

/// Where `key` starts a line inside `within` (a table's span in `text`).
fn key_span(text: &str, within: &Range<usize>, key: &str) -> Option<Range<usize>> {
    let body = text.get(within.clone())?;
    let mut offset = within.start;
    for line in body.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix(key) {
            if rest.starts_with(['.', ' ', '=', '\t']) {
                let start = offset + (line.len() - trimmed.len());
                return Some(start..start + key.len());
            }
        }
        offset += line.len();
    }
    None
}

/// Event names WeChat pushes beside those the message model reads field by field
/// ([`message::EVENTS`]): passed through as they come (publishing, subscriptions, customer
/// service, cards, verification, Wi-Fi, POIs).
const OTHER_EVENTS: &[&str] = &[
    "PUBLISHJOBFINISH",
    "subscribe_msg_popup_event",
    "subscribe_msg_change_event",
    "subscribe_msg_sent_event",
    "kf_create_session",
    "kf_close_session",
    "kf_switch_session",
    "card_pass_check",
    "card_not_pass_check",
    "user_get_card",
    "user_gifting_card",
    "user_del_card",
    "user_consume_card",
    "user_pay_from_pay_cell",
    "user_view_card",
    "user_enter_session_from_card",
    "update_member_card",
    "card_sku_remind",
    "card_pay_order",
    "submit_membercard_user_info",
    "qualification_verify_success",
    "qualification_verify_fail",
    "naming_verify_success",
    "naming_verify_fail",
    "annual_renew",
    "verify_expired",
    "poi_check_notify",
    "WifiConnected",
    "ShakearoundUserShake",
    "user_authorization_revoke",
    "user_info_modified",
];

/// A warning for a name that is in none of the `known` lists (compared without case, as the
/// rules match), suggesting the nearest known name.
fn unknown_name(what: &str, name: &str, known: &[&[&str]]) -> Option<String> {
    let known = known.iter().flat_map(|list| list.iter());
    if known.clone().any(|k| k.eq_ignore_ascii_case(name)) {
        return None;
    }
    let lower = name.to_ascii_lowercase();
    let nearest = known
        .map(|k| (distance(&lower, &k.to_ascii_lowercase()), *k))
        .min()
        .filter(|(d, _)| *d <= 2)
        .map_or(String::new(), |(_, k)| format!("did you mean {k:?}? "));
    Some(format!(
        "{what} {name:?} is not one WeChat sends; {nearest}the rule only matches a push that says exactly that"
    ))
}

/// Levenshtein distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

fn compile_rule(
    raw: RawRule,
    line: usize,
    reply_at: Option<Range<usize>>,
    at: &At<'_>,
    notes: &mut Vec<Located>,
) -> Result<Rule, Located> {
    let kinds = [
        raw.text.is_some(),
        raw.contains.is_some(),
        raw.regex.is_some(),
        raw.msg_type.is_some(),
        raw.event.is_some(),
    ];
    let n = kinds.iter().filter(|&&k| k).count();
    if n != 1 {
        return Err(Located::header(format!(
            "needs exactly one of `text`, `contains`, `regex`, `msg_type`, `event` (found {n})"
        )));
    }
    if raw.event.is_none() {
        if let Some(k) = raw.key.as_ref().or(raw.key_regex.as_ref()) {
            return Err(Located::at(k.span())(
                "`key` and `key_regex` only go with `event`".into(),
            ));
        }
    }
    let mut checked = None;
    let matcher = if let Some(t) = raw.text {
        Matcher::Text(t.into_inner())
    } else if let Some(t) = raw.contains {
        if t.get_ref().is_empty() {
            return Err(Located::at(t.span())(
                "`contains` is empty (it would match every text)".into(),
            ));
        }
        Matcher::Contains(t.into_inner())
    } else if let Some(r) = raw.regex {
        // Compiled here to check it and the reply's captures, then dropped (see `Pattern`).
        checked = Some(compile_regex(r.get_ref()).map_err(Located::at(r.span()))?);
        Matcher::Regex(Pattern::checked(r.into_inner()))
    } else if let Some(t) = raw.msg_type {
        if let Some(w) = unknown_name("msg_type", t.get_ref(), &[message::MSG_TYPES]) {
            notes.push(Located::at(t.span())(w));
        }
        Matcher::MsgType(t.into_inner())
    } else {
        let Some(name) = raw.event else {
            return Err(Located::header("a rule needs a matcher"));
        };
        if let Some(w) = unknown_name("event", name.get_ref(), &[message::EVENTS, OTHER_EVENTS]) {
            notes.push(Located::at(name.span())(w));
        }
        let key = match (raw.key, raw.key_regex) {
            (Some(_), Some(r)) => {
                return Err(Located::at(r.span())(
                    "use `key` or `key_regex`, not both".into(),
                ))
            }
            (Some(k), None) => Some(KeyMatch::Exact(k.into_inner())),
            (None, Some(r)) => Some(KeyMatch::Regex(
                compile_regex(r.get_ref()).map_err(Located::at(r.span()))?,
            )),
            (None, None) => None,
        };
        Matcher::Event {
            name: name.into_inner(),
            key,
        }
    };
    let regex = checked.as_ref();
    let located = |reason: String| Located {
        span: reply_at.clone(),
        reason,
    };
    let mut reply_notes = Vec::new();
    let action = compile_action(raw.reply, regex, at, &mut reply_notes).map_err(located)?;
    notes.extend(reply_notes.into_iter().map(located));
    Ok(Rule {
        line,
        matcher,
        action,
    })
}

pub(super) fn compile_regex(pattern: &str) -> Result<Regex, String> {
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
    "text, image, voice, video, music, news, transfer_customer_service, forward, command, or \"success\"/\"echo\"";

/// A reply; `notes` gets what is allowed but probably not meant.
fn compile_action(
    value: toml::Value,
    regex: Option<&Regex>,
    at: &At<'_>,
    notes: &mut Vec<String>,
) -> Result<Action, String> {
    if let toml::Value::Table(t) = &value {
        if t.len() == 1 {
            if let Some(v) = t.get("forward") {
                return compile_forward(v.clone(), regex, at, notes);
            }
            if let Some(v) = t.get("command") {
                return compile_command(v.clone(), regex, at, notes);
            }
        }
    }
    compile_reply(value, regex, at, notes)
}

/// `reply.forward = "URL"` or `{ url = "...", fallback = ... }`.
fn compile_forward(
    value: toml::Value,
    regex: Option<&Regex>,
    at: &At<'_>,
    notes: &mut Vec<String>,
) -> Result<Action, String> {
    let (url, fallback) = match value {
        toml::Value::String(url) => (url, None),
        toml::Value::Table(mut t) => {
            let url = match t.remove("url") {
                Some(toml::Value::String(u)) => u,
                Some(other) => {
                    return Err(format!(
                        "reply.forward.url must be a string, not {}",
                        other.type_str()
                    ))
                }
                None => return Err("reply.forward needs `url`".into()),
            };
            let fallback = t.remove("fallback");
            if let Some(k) = t.keys().next() {
                return Err(format!(
                    "unknown key `{k}` in reply.forward (expected url, fallback)"
                ));
            }
            (url, fallback)
        }
        other => {
            return Err(format!(
                "reply.forward must be a URL or a table {{ url, fallback }}, not {}",
                other.type_str()
            ))
        }
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!(
            "reply.forward {:?}: expected an http:// or https:// URL",
            redact_url(&url)
        ));
    }
    Ok(Action::Forward {
        target: Target::Http { url },
        fallback: Box::new(compile_fallback(fallback, regex, at, notes)?),
    })
}

/// `reply.command = ["program", "arg", ...]` or `{ argv = [...], fallback = ... }`.
fn compile_command(
    value: toml::Value,
    regex: Option<&Regex>,
    at: &At<'_>,
    notes: &mut Vec<String>,
) -> Result<Action, String> {
    let (argv, fallback) = match value {
        toml::Value::Array(a) => (a, None),
        toml::Value::Table(mut t) => {
            let argv = match t.remove("argv") {
                Some(toml::Value::Array(a)) => a,
                Some(other) => {
                    return Err(format!(
                        "reply.command.argv must be a list of strings, not {}",
                        other.type_str()
                    ))
                }
                None => return Err("reply.command needs `argv`".into()),
            };
            let fallback = t.remove("fallback");
            if let Some(k) = t.keys().next() {
                return Err(format!(
                    "unknown key `{k}` in reply.command (expected argv, fallback)"
                ));
            }
            (argv, fallback)
        }
        other => {
            return Err(format!(
                "reply.command must be a list like [\"python3\", \"bot.py\"] or a table {{ argv, fallback }}, not {}",
                other.type_str()
            ))
        }
    };
    let argv = argv
        .into_iter()
        .map(|v| match v {
            toml::Value::String(s) => Ok(s),
            other => Err(format!(
                "reply.command: every argument must be a string, not {}",
                other.type_str()
            )),
        })
        .collect::<Result<Vec<String>, String>>()?;
    if argv.first().is_none_or(|p| p.is_empty()) {
        return Err("reply.command needs a program to run".into());
    }
    Ok(Action::Forward {
        target: Target::Command {
            argv,
            dir: at.dir.to_path_buf(),
        },
        fallback: Box::new(compile_fallback(fallback, regex, at, notes)?),
    })
}

/// A forward's fallback: any reply the rules file allows, but not another forward. Without one,
/// `success`.
fn compile_fallback(
    value: Option<toml::Value>,
    regex: Option<&Regex>,
    at: &At<'_>,
    notes: &mut Vec<String>,
) -> Result<Action, String> {
    let Some(value) = value else {
        return Ok(Action::Success);
    };
    match compile_action(value, regex, at, notes)? {
        Action::Forward { .. } => Err("a fallback cannot itself forward".into()),
        action => Ok(action),
    }
}

/// A passive reply, `echo` or `success`.
fn compile_reply(
    value: toml::Value,
    regex: Option<&Regex>,
    at: &At<'_>,
    notes: &mut Vec<String>,
) -> Result<Action, String> {
    let table = match value {
        toml::Value::String(s) => return compile_reply_word(&s),
        toml::Value::Table(t) => t,
        other => {
            return Err(format!(
                "reply must be a table or a string, not {}",
                other.type_str()
            ))
        }
    };
    let (kind, value) = single_reply_kind(table)?;
    let spec = match kind.as_str() {
        "text" => compile_text(&value, notes)?,
        "image" | "voice" => compile_image_or_voice(&kind, &value, at)?,
        "video" => compile_video(value, at)?,
        "music" => compile_music(value, at, notes)?,
        "news" => compile_news(value)?,
        "transfer_customer_service" => compile_transfer(value)?,
        other => {
            return Err(format!(
                "unknown reply kind `{other}`: expected {REPLY_KINDS}"
            ))
        }
    };
    check_captures(&spec, regex)?;
    Ok(Action::Reply(spec))
}

/// `reply = "echo"` and `reply = "success"` need no table, so the short form is a word.
fn compile_reply_word(word: &str) -> Result<Action, String> {
    match word {
        "echo" => Ok(Action::Echo),
        "success" => Ok(Action::Success),
        other => Err(format!("reply = {other:?}: expected {REPLY_KINDS}")),
    }
}

/// A reply table names one kind, so two keys would leave it ambiguous which to send.
fn single_reply_kind(table: toml::Table) -> Result<(String, toml::Value), String> {
    if table.len() != 1 {
        let keys: Vec<_> = table.keys().map(String::as_str).collect();
        return Err(format!(
            "reply needs exactly one kind ({REPLY_KINDS}); found [{}]",
            keys.join(", ")
        ));
    }
    table
        .into_iter()
        .next()
        .ok_or_else(|| "reply is empty".into())
}

/// Empty text makes WeChat show the user an error, and long text is cut, so both are caught on load.
fn compile_text(value: &toml::Value, notes: &mut Vec<String>) -> Result<ReplySpec, String> {
    let t = template(value, "reply.text")?;
    if t.is_empty() {
        return Err("reply.text is empty (WeChat shows the user an error for empty text; use reply = \"success\")".into());
    }
    if let Some(literal) = t.literal() {
        if literal.len() > reply::MAX_TEXT_BYTES {
            notes.push(format!(
                "reply.text is {} bytes; WeChat's limit is {}, so it will be cut",
                literal.len(),
                reply::MAX_TEXT_BYTES
            ));
        }
    }
    Ok(ReplySpec::Text(t))
}

/// Pictures and voice differ only in name, so one reader takes either a file or a media_id.
fn compile_image_or_voice(
    kind: &str,
    value: &toml::Value,
    at: &At<'_>,
) -> Result<ReplySpec, String> {
    let reply = if kind == "image" { "image" } else { "voice" };
    let id = match file_of(value, reply)? {
        Some(file) => media_file(at, &file, reply, reply, None, None),
        None => media_id(value, kind)?,
    };
    if kind == "image" {
        Ok(ReplySpec::Image(id))
    } else {
        Ok(ReplySpec::Voice(id))
    }
}

/// A video file is uploaded with its title and description, so those travel with the file.
fn compile_video(value: toml::Value, at: &At<'_>) -> Result<ReplySpec, String> {
    let mut t = Fields::new(value, "reply.video")?;
    let file = t.file()?;
    let title = t.optional("title")?;
    let description = t.optional("description")?;
    let media_id = match file {
        Some(file) => {
            if t.table.contains_key("media_id") {
                return Err("reply.video takes `file` or `media_id`, not both".into());
            }
            let literal =
                |x: &Option<Template>| x.as_ref().and_then(|t| t.literal()).map(str::to_owned);
            media_file(
                at,
                &file,
                "video",
                "video",
                literal(&title),
                literal(&description),
            )
        }
        None => t.required("media_id")?,
    };
    let spec = ReplySpec::Video {
        media_id,
        title,
        description,
    };
    t.finish()?;
    Ok(spec)
}

/// Music's cover is a file or a media_id, and WeChat's docs require one, so a missing cover is noted.
fn compile_music(
    value: toml::Value,
    at: &At<'_>,
    notes: &mut Vec<String>,
) -> Result<ReplySpec, String> {
    let mut t = Fields::new(value, "reply.music")?;
    let thumb =
        match t.table.remove("thumb") {
            None => None,
            Some(v) => match file_of(&v, "music.thumb")? {
                Some(file) => Some(media_file(at, &file, "music", "thumb", None, None)),
                None => return Err(
                    "reply.music.thumb must be { file = \"cover.jpg\" } (or use thumb_media_id)"
                        .into(),
                ),
            },
        };
    let thumb_media_id = match (thumb, t.optional("thumb_media_id")?) {
        (Some(_), Some(_)) => {
            return Err("reply.music takes `thumb` or `thumb_media_id`, not both".into())
        }
        (thumb, id) => thumb.or(id),
    };
    let spec = ReplySpec::Music {
        title: t.optional("title")?,
        description: t.optional("description")?,
        music_url: t.optional("music_url")?,
        hq_music_url: t.optional("hq_music_url")?,
        thumb_media_id,
    };
    t.finish()?;
    if matches!(
        spec,
        ReplySpec::Music {
            thumb_media_id: None,
            ..
        }
    ) {
        notes.push(
            "reply.music has no thumb_media_id, which WeChat's passive-reply docs mark as required"
                .into(),
        );
    }
    Ok(spec)
}

/// One article may be written as a bare table, and WeChat's article count limit is checked on load.
fn compile_news(value: toml::Value) -> Result<ReplySpec, String> {
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
    Ok(ReplySpec::News(articles))
}

/// The hand-over to customer service has three spellings: `true`, an account, or a table.
fn compile_transfer(value: toml::Value) -> Result<ReplySpec, String> {
    Ok(match value {
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
    })
}

/// `{ file = "pics/menu.png" }`: the path, when the table names a file.
fn file_of(value: &toml::Value, what: &str) -> Result<Option<String>, String> {
    let toml::Value::Table(t) = value else {
        return Ok(None);
    };
    let Some(file) = t.get("file") else {
        return Ok(None);
    };
    if let Some(k) = t.keys().find(|k| *k != "file") {
        return Err(format!("reply.{what}: `{k}` does not go with `file`"));
    }
    match file {
        toml::Value::String(f) if !f.trim().is_empty() => Ok(Some(f.clone())),
        toml::Value::String(_) => Err(format!("reply.{what}.file is empty")),
        other => Err(format!(
            "reply.{what}.file must be a path, not {}",
            other.type_str()
        )),
    }
}

/// A template that is the media_id of `file` (relative to the rules file's folder), once the
/// server has uploaded it.
fn media_file(
    at: &At<'_>,
    file: &str,
    reply: &'static str,
    kind: &'static str,
    title: Option<String>,
    description: Option<String>,
) -> Template {
    Template(vec![Piece::File(std::sync::Arc::new(MediaSlot {
        path: at.dir.join(file),
        shown: file.to_owned(),
        kind,
        reply,
        rule: at.rule.clone(),
        line: at.line,
        title,
        description,
        media_id: Default::default(),
    }))])
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

    /// `file = "..."`, a path (the reply's media comes from it).
    fn file(&mut self) -> Result<Option<String>, String> {
        match self.table.remove("file") {
            None => Ok(None),
            Some(toml::Value::String(f)) if !f.trim().is_empty() => Ok(Some(f)),
            Some(other) => Err(format!(
                "{}.file must be a path, not {}",
                self.what,
                other.type_str()
            )),
        }
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
