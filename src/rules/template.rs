//! Placeholders in reply strings: `{content}`, `{from_user}`, ..., `${1}`.

use std::fmt;

use super::ReplySpec;
use crate::protocol::message::Message;

/// Text with placeholders: `{content}`, `{from_user}`, `{to_user}`, `{event_key}`, `{scene}`,
/// regex captures `${1}` / `${name}`; `{{` and `}}` are literal braces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(pub(super) Vec<Piece>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Piece {
    Lit(String),
    Content,
    FromUser,
    ToUser,
    EventKey,
    Scene,
    Group(usize),
    Named(String),
    /// A file's media_id, once the server has uploaded it (empty until then).
    File(std::sync::Arc<super::MediaSlot>),
}

/// What a template is rendered against: the push and the regex captures, if any.
pub(super) struct Ctx<'a, 'm> {
    pub(super) msg: &'m Message,
    pub(super) caps: Option<&'a regex::Captures<'a>>,
}

impl ReplySpec {
    /// Every template in the reply, for load-time checks.
    pub(super) fn templates(&self) -> Vec<&Template> {
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

    /// The text, when the template has no placeholders.
    pub(super) fn literal(&self) -> Option<&str> {
        match self.0.as_slice() {
            [] => Some(""),
            [Piece::Lit(s)] => Some(s),
            _ => None,
        }
    }

    /// True when the template can only ever render as "" (so a text reply would be empty).
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The files this template sends, by media_id once uploaded.
    pub(super) fn files(&self) -> impl Iterator<Item = &std::sync::Arc<super::MediaSlot>> {
        self.0.iter().filter_map(|p| match p {
            Piece::File(slot) => Some(slot),
            _ => None,
        })
    }

    pub(super) fn uses_captures(&self) -> impl Iterator<Item = &Piece> {
        self.0
            .iter()
            .filter(|p| matches!(p, Piece::Group(_) | Piece::Named(_)))
    }

    pub(super) fn render(&self, ctx: &Ctx<'_, '_>) -> String {
        if let [Piece::Lit(s)] = self.0.as_slice() {
            return s.clone();
        }
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Lit(s) => out.push_str(s),
                Piece::File(slot) => out.push_str(&slot.media_id().unwrap_or_default()),
                Piece::Content => out.push_str(ctx.msg.said().unwrap_or("")),
                Piece::FromUser => out.push_str(ctx.msg.from_user()),
                Piece::ToUser => out.push_str(ctx.msg.to_user()),
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
        // A file stands alone (`reply.image = { file = ... }`), and is shown as one.
        if let [Piece::File(slot)] = self.0.as_slice() {
            return write!(f, "file {}", slot.shown);
        }
        let mut s = String::new();
        for p in &self.0 {
            match p {
                Piece::Lit(l) => s.push_str(&l.replace('{', "{{").replace('}', "}}")),
                Piece::File(slot) => s.push_str(&format!("file {}", slot.shown)),
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
