//! What a push said and what it was answered, in words, for the live view (`wxmp tail`) and
//! nothing else: this is message content, which the access log never carries.
//!
//! Each piece is cut to [`MAX_CHARS`] characters and quoted with Rust's escapes, so one sample
//! is at most a few hundred bytes and always one line, whatever the push held.

use std::fmt;

use crate::protocol::message::{Event, Kind, Message};
use crate::protocol::reply::Reply;

/// Longest piece of text kept from a push or a reply, in characters.
pub const MAX_CHARS: usize = 120;

/// The content of one exchange, in words. `Debug` does not show it, so a stray `{:?}` of an
/// `Outcome` cannot put content in a log.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Sample {
    /// The push: `"天气"` for a text, `key "qrscene_123" (scene 123)` for an event, ...
    pub said: Option<String>,
    /// The reply: `text "北京天气挺好的！"`, `news "标题" (+2)`, `success`, ...
    pub reply: Option<String>,
}

impl fmt::Debug for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sample { .. }")
    }
}

impl Sample {
    /// What `msg` said.
    pub fn of(msg: &Message) -> Sample {
        Sample {
            said: said(msg),
            reply: None,
        }
    }
}

/// `"text"`, cut to [`MAX_CHARS`] and escaped (quotes, newlines, control characters).
pub fn quoted(text: &str) -> String {
    let mut cut: String = text.chars().take(MAX_CHARS).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

fn said(msg: &Message) -> Option<String> {
    let media = |id: &Option<String>| id.as_deref().map(|id| format!("MediaId {}", quoted(id)));
    match &msg.kind {
        Kind::Text { content } => content.as_deref().map(quoted),
        Kind::Voice {
            recognition: Some(r),
            ..
        } => Some(format!("{} (recognised)", quoted(r))),
        Kind::Voice { media_id, .. } | Kind::Image { media_id, .. } => media(media_id),
        Kind::Video(v) | Kind::ShortVideo(v) => media(&v.media_id),
        Kind::Location {
            location_x,
            location_y,
            label,
            ..
        } => Some(format!(
            "({}, {}){}",
            location_x.as_ref().map_or("?".into(), ToString::to_string),
            location_y.as_ref().map_or("?".into(), ToString::to_string),
            label
                .as_deref()
                .map_or(String::new(), |l| format!(" {}", quoted(l)))
        )),
        Kind::Link { title, url, .. } => Some(format!(
            "{} {}",
            quoted(title.as_deref().unwrap_or("")),
            quoted(url.as_deref().unwrap_or(""))
        )),
        Kind::MiniProgramPage {
            title, page_path, ..
        } => Some(format!(
            "{} {}",
            quoted(title.as_deref().unwrap_or("")),
            quoted(page_path.as_deref().unwrap_or(""))
        )),
        Kind::Event(e) => event(e),
        Kind::Other { .. } => None,
    }
}

fn event(e: &Event) -> Option<String> {
    if let Event::Location {
        latitude,
        longitude,
        ..
    } = e
    {
        return Some(format!(
            "({}, {})",
            latitude.as_ref().map_or("?".into(), ToString::to_string),
            longitude.as_ref().map_or("?".into(), ToString::to_string)
        ));
    }
    let key = e.event_key()?;
    Some(match e.scene() {
        Some(scene) if matches!(e, Event::Subscribe { .. }) => {
            format!("key {} (scene {})", quoted(key), quoted(scene))
        }
        _ => format!("key {}", quoted(key)),
    })
}

/// The reply in words.
pub fn reply(reply: &Reply) -> String {
    match reply {
        Reply::Success => "success".into(),
        Reply::Text(t) => format!("text {}", quoted(t.as_str())),
        Reply::Image { media_id } => format!("image {}", quoted(media_id)),
        Reply::Voice { media_id } => format!("voice {}", quoted(media_id)),
        Reply::Video(v) => format!("video {}", quoted(&v.media_id)),
        Reply::Music(m) => match &m.title {
            Some(t) => format!("music {}", quoted(t)),
            None => "music".into(),
        },
        Reply::News(n) => {
            let first = n
                .articles()
                .first()
                .map_or(String::new(), |a| quoted(&a.title));
            match n.articles().len() {
                0 | 1 => format!("news {first}"),
                more => format!("news {first} (+{})", more - 1),
            }
        }
        Reply::TransferCustomerService { kf_account: None } => {
            "transfer to customer service".into()
        }
        Reply::TransferCustomerService {
            kf_account: Some(kf),
        } => format!("transfer to customer service agent {}", quoted(kf)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> Message {
        Message::parse(xml).unwrap()
    }

    #[test]
    fn text_is_quoted_and_cut() {
        let m = parse("<xml><MsgType>text</MsgType><Content>天气\n\"x\"</Content></xml>");
        assert_eq!(Sample::of(&m).said.as_deref(), Some("\"天气\\n\\\"x\\\"\""));
        let long = "长".repeat(500);
        let q = quoted(&long);
        assert_eq!(q.chars().count(), MAX_CHARS + 3, "{q}");
        assert!(q.ends_with("…\""));
    }

    #[test]
    fn a_qr_subscribe_shows_key_and_scene() {
        let m = parse("<xml><MsgType>event</MsgType><Event>subscribe</Event><EventKey>qrscene_123</EventKey></xml>");
        assert_eq!(
            Sample::of(&m).said.as_deref(),
            Some("key \"qrscene_123\" (scene \"123\")")
        );
        let plain = parse("<xml><MsgType>event</MsgType><Event>subscribe</Event></xml>");
        assert_eq!(Sample::of(&plain).said, None);
    }

    #[test]
    fn debug_never_shows_content() {
        let s = Sample {
            said: Some("secret".into()),
            reply: Some("text \"secret\"".into()),
        };
        assert!(!format!("{s:?}").contains("secret"));
    }

    #[test]
    fn replies_in_words() {
        assert_eq!(reply(&Reply::text("好").0), "text \"好\"");
        assert_eq!(reply(&Reply::Success), "success");
        assert_eq!(
            reply(&Reply::transfer_customer_service(Some("kf@x".into()))),
            "transfer to customer service agent \"kf@x\""
        );
    }
}
