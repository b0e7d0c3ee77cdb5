//! The rules file format: TOML → a validated [`RuleSet`], with file:line errors.

use std::ops::Range;

use regex::Regex;
use serde::Deserialize;
use toml::Spanned;

use super::template::{Piece, Template};
use super::{Action, ArticleSpec, KeyMatch, Matcher, ReplySpec, Rule, RuleSet, RulesError};
use crate::protocol::reply;

impl RuleSet {
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

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()
        .get(..offset.min(text.len()))
        .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
        + 1
}
