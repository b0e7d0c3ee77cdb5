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
            SendError::Status(s) => write!(f, "the server answered HTTP {s}; WeChat only accepts 200. {}", status_advice(*s)),
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

/// What a non-200 status from a WeChat backend usually means, and what to check.
pub fn status_advice(status: u16) -> &'static str {
    match status {
        400 => "The server could not read the push; its log says why (in safe mode: is --aes-key / WXMP_AES_KEY the same as the server's?)",
        403 => "The server refused the signature: is --token / WXMP_TOKEN the same as the server's? (wxmp send uses devtoken when WXMP_TOKEN is unset, like make run; a server started with WXMP_TOKEN=mytoken123 needs --token mytoken123 here too; in safe mode also compare --appid)",
        404 => "There is no such path: does --url end in the server's --path / WXMP_PATH (default /weixin)?",
        405 => "The server does not take this method on that path: is --url the message URL?",
        413 => "The body is larger than the server accepts (wxmp: 1 MiB)",
        429 | 503 => "The server is busy or over its connection limit; try again, or raise its limits",
        500..=599 => "The server failed; WeChat would retry it three times and then show the user 该公众号暂时无法提供服务. Its log says why",
        _ => "WeChat treats any other answer as a failure and retries",
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
