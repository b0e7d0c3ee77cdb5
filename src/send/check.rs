//! Checking a reply the way WeChat would: status 200 within 5 s, the envelope's signature and
//! AppID, To/From swapped, well-formed XML, a known reply type and the platform's limits.

use std::fmt;
use std::time::Duration;

use crate::protocol::envelope::{EnvelopeError, Mode, ReplyEnvelope};
use crate::protocol::reply::{Reply, ReplyParseError};
use crate::send::args::Job;

/// WeChat gives a server 5 seconds to answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// A reply WeChat would not accept, or a server that did not answer properly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    Unreachable(String),
    Timeout,
    Status(u16),
    Reply(ReplyParseError),
    EnvelopeSignature,
    Crypto(String),
    AppId { expected: String, got: String },
    NotEncrypted,
    NotSwapped { to: String, from: String },
    VerifyFailed(String),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Unreachable(why) => write!(f, "cannot reach the server: {why} (is it running? check --url)"),
            SendError::Timeout => write!(f, "no answer within {} s: WeChat would give up and show the user an error", TIMEOUT.as_secs()),
            SendError::Status(s) => write!(f, "the server answered HTTP {s}; WeChat only accepts 200"),
            SendError::Reply(e) => write!(f, "WeChat would reject this reply: {e}"),
            SendError::EnvelopeSignature => f.write_str("WeChat would reject this reply: the envelope's MsgSignature does not match (wrong token?)"),
            SendError::Crypto(e) => write!(f, "WeChat would reject this reply: cannot decrypt it: {e}"),
            SendError::AppId { expected, got } => write!(f, "WeChat would reject this reply: it is encrypted for AppID {got:?}, not {expected:?}"),
            SendError::NotEncrypted => f.write_str("WeChat would reject this reply: safe mode needs an encrypted reply (or success)"),
            SendError::NotSwapped { to, from } => write!(
                f,
                "WeChat would reject this reply: ToUserName/FromUserName must be the push's FromUserName/ToUserName swapped (got To={to:?}, From={from:?})"
            ),
            SendError::VerifyFailed(why) => write!(f, "URL verification failed: {why}"),
        }
    }
}

/// A checked reply: what WeChat would show, and the XML it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub reply: Reply,
    /// The decrypted reply XML (or `success`).
    pub xml: String,
    pub encrypted: bool,
}

/// Checks a 200 reply body to a push from `user` to `account` as WeChat would.
pub fn check_reply(job: &Job, user: &str, account: &str, body: &str) -> Result<Checked, SendError> {
    let trimmed = body.trim();
    if trimmed.is_empty() || trimmed == "success" {
        return Ok(Checked {
            reply: Reply::Success,
            xml: trimmed.to_owned(),
            encrypted: false,
        });
    }
    let (xml, encrypted) = match (ReplyEnvelope::read(trimmed), &job.safe) {
        (Some(_), Some(safe)) => match safe.open_reply(&job.token, trimmed) {
            Ok(xml) => (xml, true),
            Err(EnvelopeError::MissingSignature | EnvelopeError::SignatureMismatch) => {
                return Err(SendError::EnvelopeSignature)
            }
            Err(EnvelopeError::AppIdMismatch { expected, got }) => {
                return Err(SendError::AppId { expected, got })
            }
            Err(e) => return Err(SendError::Crypto(e.to_string())),
        },
        (Some(_), None) => {
            return Err(SendError::Crypto(
                "the reply is encrypted but no --aes-key was given".into(),
            ))
        }
        (None, _) if job.mode == Mode::Safe => return Err(SendError::NotEncrypted),
        (None, _) => (trimmed.to_owned(), false),
    };
    let rendered = Reply::parse(&xml).map_err(SendError::Reply)?;
    if rendered.reply != Reply::Success
        && (rendered.to_user_name != user || rendered.from_user_name != account)
    {
        return Err(SendError::NotSwapped {
            to: rendered.to_user_name,
            from: rendered.from_user_name,
        });
    }
    Ok(Checked {
        reply: rendered.reply,
        xml,
        encrypted,
    })
}

/// One readable line for a reply: `text: 北京天气挺好的！`.
pub fn summary(reply: &Reply) -> String {
    let opt = |o: &Option<String>| o.clone().unwrap_or_default();
    match reply {
        Reply::Success => "success".into(),
        Reply::Text(t) => format!("text: {}", t.as_str()),
        Reply::Image { media_id } => format!("image: media_id={media_id}"),
        Reply::Voice { media_id } => format!("voice: media_id={media_id}"),
        Reply::Video(v) => format!(
            "video: media_id={} title={:?} description={:?}",
            v.media_id,
            opt(&v.title),
            opt(&v.description)
        ),
        Reply::Music(m) => format!(
            "music: {} — {} (music_url={} hq_music_url={}{})",
            opt(&m.title),
            opt(&m.description),
            opt(&m.music_url),
            opt(&m.hq_music_url),
            m.thumb_media_id
                .as_ref()
                .map_or(String::new(), |t| format!(" thumb_media_id={t}"))
        ),
        Reply::News(n) => {
            let items: Vec<String> = n
                .articles()
                .iter()
                .map(|a| {
                    format!(
                        "{} — {} <{}> [pic {}]",
                        a.title, a.description, a.url, a.pic_url
                    )
                })
                .collect();
            format!("news: {} article(s): {}", items.len(), items.join("; "))
        }
        Reply::TransferCustomerService { kf_account: None } => "transfer_customer_service".into(),
        Reply::TransferCustomerService {
            kf_account: Some(kf),
        } => format!("transfer_customer_service: {kf}"),
    }
}
