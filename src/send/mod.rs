//! `wxmp send`: plays the WeChat platform against any WeChat backend. It builds a push exactly as
//! WeChat does, signs it, encrypts it in safe or compatible mode, posts it, then checks the reply
//! the way WeChat would (envelope signature, AppID, To/From swapped, well-formed XML, non-empty
//! text, limits) and prints it in one readable line.
//!
//! [`build_push`], [`build_request`] and [`check_reply`] are pure; [`run`] does the I/O.

use std::fmt;
use std::time::{Duration, Instant};

use lexopt::prelude::*;

use crate::cli::{CliError, Command};
use crate::protocol::crypto::{self, AesKey};
use crate::protocol::query::percent_encode;
use crate::protocol::reply::{Reply, ReplyParseError};
use crate::protocol::verify::{self, Token};
use crate::protocol::xml::{self, child_text, push_cdata_element, push_number_element};

pub const DEFAULT_URL: &str = "http://127.0.0.1:8080/weixin";
/// The token `make run` uses when WXMP_TOKEN is unset, so the two work together out of the box.
pub const DEV_TOKEN: &str = "devtoken";
/// WeChat gives a server 5 seconds to answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);

pub const USAGE: &str = "\
wxmp send — play the WeChat platform against a server, without a phone

Usage: wxmp send [OPTIONS] KIND [ARGS]

Kinds:
  verify                      the GET echostr handshake (URL check in the console)
  text CONTENT                a text message
  image                       [--pic-url URL] [--media-id ID]
  voice                       [--recognition TEXT] [--media-id ID] [--format amr]
  video | shortvideo          [--media-id ID] [--thumb-media-id ID]
  location --lat X --lng Y    [--label TEXT] [--scale N]
  link                        [--title T] [--description D] [--link-url URL]
  event NAME                  subscribe, unsubscribe, SCAN, LOCATION, CLICK, VIEW, ... [--key KEY]
                              [--ticket T] (LOCATION: --lat --lng [--precision P])
  file FILE.xml               send any XML body as it is (signed; encrypted in safe mode)

Options:
  --url URL          server message URL            [default: http://127.0.0.1:8080/weixin]
  --token TOKEN      token                          [default: WXMP_TOKEN, else devtoken]
  --aes-key KEY      EncodingAESKey                 [default: WXMP_AES_KEY]
  --appid APPID      AppID                          [default: WXMP_APPID]
  --mode MODE        plain | compat | safe          [default: safe with a key, else plain]
  --from OPENID      the user (FromUserName)        [default: o_wxmp_send]
  --to GH_ID         the account (ToUserName)       [default: gh_wxmp_send]
  --msg-id ID        MsgId                          [default: random]
  --repeat N         send the same push N times, as WeChat's retries do, and compare replies
  --xml              print the (decrypted) reply XML instead of the summary

Exit status: 0 the reply is one WeChat accepts; 1 it is not, or the server failed or is
unreachable; 2 usage error.
";

/// How the push travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 明文: plaintext body, plain signature.
    Plain,
    /// 兼容: plaintext fields and `Encrypt`, both signatures.
    Compat,
    /// 安全: only `ToUserName` and `Encrypt`.
    Safe,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Plain => "plain",
            Mode::Compat => "compat",
            Mode::Safe => "safe",
        })
    }
}

/// What to send, with every field filled (defaults applied at parse time).
#[derive(Debug, Clone, PartialEq)]
pub enum Push {
    Verify,
    Text {
        content: String,
    },
    Image {
        pic_url: String,
        media_id: String,
    },
    Voice {
        media_id: String,
        format: String,
        recognition: Option<String>,
    },
    Video {
        short: bool,
        media_id: String,
        thumb_media_id: String,
    },
    Location {
        lat: String,
        lng: String,
        scale: String,
        label: String,
    },
    Link {
        title: String,
        description: String,
        url: String,
    },
    Event {
        name: String,
        key: Option<String>,
        ticket: Option<String>,
        location: Option<(String, String, String)>,
    },
    File {
        xml: String,
    },
}

/// The options as given on the command line (env defaults are applied in [`resolve`]).
#[derive(Debug, Clone, Default)]
pub struct RawSend {
    pub url: Option<String>,
    pub token: Option<String>,
    pub aes_key: Option<String>,
    pub appid: Option<String>,
    pub mode: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub msg_id: Option<String>,
    pub repeat: Option<String>,
    pub xml: bool,
    pub kind: Vec<String>,
    /// Per-kind options (`--lat`, `--key`, ...), by name.
    pub fields: Vec<(String, String)>,
}

/// A ready-to-run `send`.
#[derive(Debug, Clone)]
pub struct Send {
    pub url: String,
    pub token: Token,
    pub safe: Option<(AesKey, String)>,
    pub mode: Mode,
    pub from: String,
    pub to: String,
    pub msg_id: Option<String>,
    pub repeat: usize,
    pub xml: bool,
    pub push: Push,
}

const KIND_FIELDS: &[&str] = &[
    "pic-url",
    "media-id",
    "recognition",
    "format",
    "thumb-media-id",
    "lat",
    "lng",
    "label",
    "scale",
    "title",
    "description",
    "link-url",
    "key",
    "ticket",
    "precision",
];

/// Parses `wxmp send ...` (the parser is positioned after `send`).
pub fn parse_args(mut parser: lexopt::Parser) -> Result<Command, CliError> {
    let mut raw = RawSend::default();
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::SendHelp),
            Long("xml") => raw.xml = true,
            Long(name) => {
                let name = name.to_owned();
                let value = parser
                    .value()
                    .map_err(|_| CliError(format!("--{name} needs a value")))?
                    .string()?;
                let slot = match name.as_str() {
                    "url" => &mut raw.url,
                    "token" => &mut raw.token,
                    "aes-key" => &mut raw.aes_key,
                    "appid" => &mut raw.appid,
                    "mode" => &mut raw.mode,
                    "from" => &mut raw.from,
                    "to" => &mut raw.to,
                    "msg-id" => &mut raw.msg_id,
                    "repeat" => &mut raw.repeat,
                    other if KIND_FIELDS.contains(&other) => {
                        raw.fields.push((name, value));
                        continue;
                    }
                    _ => {
                        return Err(CliError(format!(
                            "unknown option --{name} (see wxmp send --help)"
                        )))
                    }
                };
                *slot = Some(value);
            }
            Value(v) => raw.kind.push(v.string()?),
            other => {
                return Err(CliError(format!(
                    "{} (see wxmp send --help)",
                    other.unexpected()
                )))
            }
        }
    }
    Ok(Command::Send(Box::new(raw)))
}

fn field(raw: &RawSend, name: &str) -> Option<String> {
    raw.fields
        .iter()
        .rev()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

/// Applies defaults (flags, then `WXMP_*` variables, then built-ins) and validates.
pub fn resolve(raw: RawSend, env: &dyn Fn(&str) -> Option<String>) -> Result<Send, CliError> {
    let pick =
        |flag: Option<String>, var: &str| flag.or_else(|| env(var)).filter(|v| !v.is_empty());
    let token = pick(raw.token.clone(), "WXMP_TOKEN").unwrap_or_else(|| DEV_TOKEN.to_owned());
    let token = Token::new(&token)
        .map_err(|e| CliError(format!("invalid token (--token / WXMP_TOKEN): {e}")))?;
    let safe = match (
        pick(raw.aes_key.clone(), "WXMP_AES_KEY"),
        pick(raw.appid.clone(), "WXMP_APPID"),
    ) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(CliError(
                "an AES key needs an AppID: pass --appid or set WXMP_APPID".into(),
            ))
        }
        (Some(k), Some(a)) => Some((
            AesKey::from_encoding_aes_key(k.trim()).map_err(|e| {
                CliError(format!("invalid AES key (--aes-key / WXMP_AES_KEY): {e}"))
            })?,
            a,
        )),
    };
    let mode = match raw.mode.as_deref() {
        None if safe.is_some() => Mode::Safe,
        None | Some("plain") => Mode::Plain,
        Some("compat") => Mode::Compat,
        Some("safe") => Mode::Safe,
        Some(other) => {
            return Err(CliError(format!(
                "unknown --mode {other:?}: expected plain, compat or safe"
            )))
        }
    };
    if mode != Mode::Plain && safe.is_none() {
        return Err(CliError(format!(
            "--mode {mode} needs --aes-key and --appid (or WXMP_AES_KEY and WXMP_APPID)"
        )));
    }
    let repeat = match raw.repeat.as_deref() {
        None => 1,
        Some(n) => match n.parse::<usize>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => {
                return Err(CliError(format!(
                    "invalid --repeat {n:?}: expected 1 to 100"
                )))
            }
        },
    };
    let push = parse_push(&raw)?;
    let url = raw.url.clone().unwrap_or_else(|| DEFAULT_URL.to_owned());
    if !url.starts_with("http://") {
        return Err(CliError(format!(
            "invalid --url {url:?}: expected http://HOST[:PORT]/PATH (for an ngrok tunnel, use its http:// address)"
        )));
    }
    Ok(Send {
        url,
        token,
        safe,
        mode,
        from: raw.from.clone().unwrap_or_else(|| "o_wxmp_send".into()),
        to: raw.to.clone().unwrap_or_else(|| "gh_wxmp_send".into()),
        msg_id: raw.msg_id.clone(),
        repeat,
        xml: raw.xml,
        push,
    })
}

fn parse_push(raw: &RawSend) -> Result<Push, CliError> {
    let f = |name: &str, default: &str| field(raw, name).unwrap_or_else(|| default.to_owned());
    let (kind, args) = match raw.kind.split_first() {
        Some((k, rest)) => (k.as_str(), rest),
        None => return Err(CliError("send needs a KIND: verify, text, image, voice, video, shortvideo, location, link, event or file (see wxmp send --help)".into())),
    };
    let one_arg = |what: &str| -> Result<String, CliError> {
        match args {
            [a] => Ok(a.clone()),
            _ => Err(CliError(format!("send {kind} takes one {what}"))),
        }
    };
    let no_args = || -> Result<(), CliError> {
        if args.is_empty() {
            Ok(())
        } else {
            Err(CliError(format!(
                "send {kind} takes no arguments; unexpected {:?}",
                args[0]
            )))
        }
    };
    let push = match kind {
        "verify" => {
            no_args()?;
            Push::Verify
        }
        "text" => {
            if args.is_empty() {
                return Err(CliError("send text needs CONTENT".into()));
            }
            // `wxmp send text hello world` means the text "hello world".
            Push::Text {
                content: args.join(" "),
            }
        }
        "image" => {
            no_args()?;
            Push::Image {
                pic_url: f("pic-url", "http://mmbiz.qpic.cn/wxmp_send.jpg"),
                media_id: f("media-id", "wxmp_send_media"),
            }
        }
        "voice" => {
            no_args()?;
            Push::Voice {
                media_id: f("media-id", "wxmp_send_media"),
                format: f("format", "amr"),
                recognition: field(raw, "recognition"),
            }
        }
        "video" | "shortvideo" => {
            no_args()?;
            Push::Video {
                short: kind == "shortvideo",
                media_id: f("media-id", "wxmp_send_media"),
                thumb_media_id: f("thumb-media-id", "wxmp_send_thumb"),
            }
        }
        "location" => {
            no_args()?;
            let (Some(lat), Some(lng)) = (field(raw, "lat"), field(raw, "lng")) else {
                return Err(CliError("send location needs --lat and --lng".into()));
            };
            for (name, v) in [("--lat", &lat), ("--lng", &lng)] {
                if v.parse::<f64>().is_err() {
                    return Err(CliError(format!("{name} {v:?} is not a number")));
                }
            }
            Push::Location {
                lat,
                lng,
                scale: f("scale", "15"),
                label: f("label", ""),
            }
        }
        "link" => {
            no_args()?;
            Push::Link {
                title: f("title", "wxmp"),
                description: f("description", ""),
                url: f("link-url", "https://example.com/"),
            }
        }
        "event" => {
            let name = one_arg("event NAME")?;
            let location = if name.eq_ignore_ascii_case("LOCATION") {
                let (Some(lat), Some(lng)) = (field(raw, "lat"), field(raw, "lng")) else {
                    return Err(CliError("send event LOCATION needs --lat and --lng".into()));
                };
                Some((lat, lng, f("precision", "30.000000")))
            } else {
                None
            };
            Push::Event {
                name,
                key: field(raw, "key"),
                ticket: field(raw, "ticket"),
                location,
            }
        }
        "file" => {
            let path = one_arg("FILE")?;
            let xml = std::fs::read_to_string(&path)
                .map_err(|e| CliError(format!("cannot read {path}: {e}")))?;
            Push::File { xml }
        }
        other => {
            return Err(CliError(format!(
                "unknown KIND {other:?} (see wxmp send --help)"
            )))
        }
    };
    Ok(push)
}

/// The push's XML as WeChat would send it in plaintext mode.
pub fn build_push(push: &Push, from: &str, to: &str, create_time: u64, msg_id: &str) -> String {
    let mut x = String::from("<xml>");
    let common = |x: &mut String, msg_type: &str| {
        push_cdata_element(x, "ToUserName", to);
        push_cdata_element(x, "FromUserName", from);
        push_number_element(x, "CreateTime", create_time);
        push_cdata_element(x, "MsgType", msg_type);
    };
    let plain = |x: &mut String, name: &str, v: &str| {
        x.push_str(&format!("<{name}>"));
        x.push_str(&v.replace('&', "&amp;").replace('<', "&lt;"));
        x.push_str(&format!("</{name}>"));
    };
    match push {
        Push::Verify => {}
        Push::File { xml } => return xml.clone(),
        Push::Text { content } => {
            common(&mut x, "text");
            push_cdata_element(&mut x, "Content", content);
        }
        Push::Image { pic_url, media_id } => {
            common(&mut x, "image");
            push_cdata_element(&mut x, "PicUrl", pic_url);
            push_cdata_element(&mut x, "MediaId", media_id);
        }
        Push::Voice {
            media_id,
            format,
            recognition,
        } => {
            common(&mut x, "voice");
            push_cdata_element(&mut x, "MediaId", media_id);
            push_cdata_element(&mut x, "Format", format);
            if let Some(r) = recognition {
                push_cdata_element(&mut x, "Recognition", r);
            }
        }
        Push::Video {
            short,
            media_id,
            thumb_media_id,
        } => {
            common(&mut x, if *short { "shortvideo" } else { "video" });
            push_cdata_element(&mut x, "MediaId", media_id);
            push_cdata_element(&mut x, "ThumbMediaId", thumb_media_id);
        }
        Push::Location {
            lat,
            lng,
            scale,
            label,
        } => {
            common(&mut x, "location");
            plain(&mut x, "Location_X", lat);
            plain(&mut x, "Location_Y", lng);
            plain(&mut x, "Scale", scale);
            push_cdata_element(&mut x, "Label", label);
        }
        Push::Link {
            title,
            description,
            url,
        } => {
            common(&mut x, "link");
            push_cdata_element(&mut x, "Title", title);
            push_cdata_element(&mut x, "Description", description);
            push_cdata_element(&mut x, "Url", url);
        }
        Push::Event {
            name,
            key,
            ticket,
            location,
        } => {
            common(&mut x, "event");
            push_cdata_element(&mut x, "Event", name);
            if let Some(k) = key {
                push_cdata_element(&mut x, "EventKey", k);
            }
            if let Some(t) = ticket {
                push_cdata_element(&mut x, "Ticket", t);
            }
            if let Some((lat, lng, precision)) = location {
                plain(&mut x, "Latitude", lat);
                plain(&mut x, "Longitude", lng);
                plain(&mut x, "Precision", precision);
            }
        }
    }
    // WeChat puts MsgId on messages; events are keyed by user, time and name instead.
    if !matches!(push, Push::Event { .. }) {
        push_number_element(&mut x, "MsgId", msg_id.parse().unwrap_or(0));
    }
    x.push_str("</xml>");
    x
}

/// A request ready to go: the URL with its query and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub url: String,
    pub body: String,
}

/// Signs (and in compat/safe mode encrypts) a push as WeChat does.
pub fn build_request(
    send: &Send,
    xml: &str,
    timestamp: u64,
    nonce: &str,
    random: &[u8; 16],
) -> Outgoing {
    let ts = timestamp.to_string();
    let signature = verify::signature(&send.token, &ts, nonce);
    let mut url = format!(
        "{}{}signature={signature}&timestamp={ts}&nonce={nonce}&openid={}",
        send.url,
        if send.url.contains('?') { '&' } else { '?' },
        percent_encode(&send.from)
    );
    let body = match (&send.safe, send.mode) {
        (Some((key, app_id)), Mode::Compat | Mode::Safe) => {
            let encrypt = crypto::encrypt(key, app_id, random, xml);
            let msg_signature = verify::msg_signature(&send.token, &ts, nonce, &encrypt);
            url.push_str(&format!("&encrypt_type=aes&msg_signature={msg_signature}"));
            let mut enc = String::new();
            push_cdata_element(&mut enc, "Encrypt", &encrypt);
            if send.mode == Mode::Compat {
                match xml.rfind("</xml>") {
                    Some(end) => format!("{}{enc}{}", &xml[..end], &xml[end..]),
                    None => format!("{xml}{enc}"),
                }
            } else {
                let mut b = String::from("<xml>");
                push_cdata_element(&mut b, "ToUserName", &send.to);
                b.push_str(&enc);
                b.push_str("</xml>");
                b
            }
        }
        _ => xml.to_owned(),
    };
    Outgoing { url, body }
}

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

/// Checks a 200 reply body as WeChat would.
pub fn check_reply(send: &Send, body: &str) -> Result<Checked, SendError> {
    let trimmed = body.trim();
    if trimmed.is_empty() || trimmed == "success" {
        return Ok(Checked {
            reply: Reply::Success,
            xml: trimmed.to_owned(),
            encrypted: false,
        });
    }
    let envelope = xml::sanitize(trimmed.as_bytes())
        .ok()
        .and_then(|t| xml::parse(&t).ok())
        .filter(|root| root.get_child("Encrypt").is_some());
    let (xml, encrypted) = match (envelope, &send.safe) {
        (Some(root), Some((key, app_id))) => {
            let field = |n: &str| child_text(&root, n).unwrap_or_default();
            let (encrypt, sig, ts, nonce) = (
                field("Encrypt"),
                field("MsgSignature"),
                field("TimeStamp"),
                field("Nonce"),
            );
            let expected = verify::msg_signature(&send.token, ts.trim(), &nonce, &encrypt);
            if !verify::signatures_match(&expected, &sig) {
                return Err(SendError::EnvelopeSignature);
            }
            let d = crypto::decrypt(key, &encrypt).map_err(|e| SendError::Crypto(e.to_string()))?;
            if &d.app_id != app_id {
                return Err(SendError::AppId {
                    expected: app_id.clone(),
                    got: d.app_id,
                });
            }
            (d.xml, true)
        }
        (Some(_), None) => {
            return Err(SendError::Crypto(
                "the reply is encrypted but no --aes-key was given".into(),
            ))
        }
        (None, _) if send.mode == Mode::Safe => return Err(SendError::NotEncrypted),
        (None, _) => (trimmed.to_owned(), false),
    };
    let rendered = Reply::parse(&xml).map_err(SendError::Reply)?;
    if rendered.reply != Reply::Success
        && (rendered.to_user_name != send.from || rendered.from_user_name != send.to)
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

/// The HTTP exchange, for [`run`]: status and body, or why there is none.
fn exchange(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    body: &str,
) -> Result<(u16, String), SendError> {
    let bare = url.split('?').next().unwrap_or(url);
    let req = agent
        .request(method, url)
        .set("Content-Type", "text/xml; charset=utf-8");
    let result = if method == "GET" {
        req.call()
    } else {
        req.send_string(body)
    };
    match result {
        Ok(resp) => {
            let status = resp.status();
            let text = resp
                .into_string()
                .map_err(|e| SendError::Unreachable(e.to_string()))?;
            Ok((status, text))
        }
        Err(ureq::Error::Status(code, _)) => Err(SendError::Status(code)),
        Err(ureq::Error::Transport(t)) => {
            let io = std::error::Error::source(&t).and_then(|s| s.downcast_ref::<std::io::Error>());
            let timed_out = io.is_some_and(|e| {
                matches!(
                    e.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                )
            }) || t.to_string().contains("timed out");
            if timed_out {
                return Err(SendError::Timeout);
            }
            let why = match io {
                Some(e) => e.to_string(),
                None => t
                    .message()
                    .map_or_else(|| t.kind().to_string(), str::to_owned),
            };
            Err(SendError::Unreachable(format!("{bare}: {why}")))
        }
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // Only the simulator's nonces and IV prefix depend on this; a failure is not fatal there.
    let _ = getrandom::getrandom(&mut b);
    b
}

/// Runs a `send`, printing the outcome; returns the exit code (0, 1).
pub fn run(send: &Send) -> u8 {
    let agent = ureq::AgentBuilder::new().timeout(TIMEOUT).build();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let nonce = (u64::from_le_bytes(random_bytes::<8>()) % 10_000_000_000).to_string();
    if send.push == Push::Verify {
        let echostr =
            (u64::from_le_bytes(random_bytes::<8>()) % 10_000_000_000_000_000_000).to_string();
        let ts = now.to_string();
        let url = format!(
            "{}{}signature={}&timestamp={ts}&nonce={nonce}&echostr={echostr}",
            send.url,
            if send.url.contains('?') { '&' } else { '?' },
            verify::signature(&send.token, &ts, &nonce)
        );
        let started = Instant::now();
        let outcome = exchange(&agent, "GET", &url, "").and_then(|(status, body)| {
            if body == echostr {
                Ok(status)
            } else {
                Err(SendError::VerifyFailed(format!(
                    "the server answered {body:?}, not the echostr {echostr:?}"
                )))
            }
        });
        return match outcome {
            Ok(status) => {
                println!(
                    "verify: passed (echostr echoed)  [HTTP {status}, {}]",
                    ms(started)
                );
                0
            }
            Err(e) => {
                eprintln!("wxmp send: verify: {e}");
                1
            }
        };
    }
    let msg_id = send
        .msg_id
        .clone()
        .unwrap_or_else(|| (u64::from_le_bytes(random_bytes::<8>()) >> 1).to_string());
    let xml = build_push(&send.push, &send.from, &send.to, now, &msg_id);
    let out = build_request(send, &xml, now, &nonce, &random_bytes::<16>());
    let mut bodies: Vec<String> = Vec::new();
    for attempt in 1..=send.repeat {
        let started = Instant::now();
        let result = exchange(&agent, "POST", &out.url, &out.body)
            .and_then(|(status, body)| check_reply(send, &body).map(|c| (status, body, c)));
        match result {
            Ok((status, body, checked)) => {
                let tag = if send.repeat > 1 {
                    format!("#{attempt} ")
                } else {
                    String::new()
                };
                let enc = if checked.encrypted { ", encrypted" } else { "" };
                let meta = format!("[HTTP {status}, {}, {} mode{enc}]", ms(started), send.mode);
                if send.xml {
                    // The XML alone on stdout, so it can be piped; the status on stderr.
                    println!("{}", checked.xml);
                    eprintln!("{tag}{meta}");
                } else {
                    println!("{tag}{}  {meta}", summary(&checked.reply));
                }
                bodies.push(body);
            }
            Err(e) => {
                eprintln!("wxmp send: {e}");
                return 1;
            }
        }
    }
    if send.repeat > 1 {
        let identical = bodies.windows(2).all(|w| w[0] == w[1]);
        if identical {
            println!("retries: all {} replies byte-identical", bodies.len());
        } else {
            eprintln!("wxmp send: retries: the {} replies differ; WeChat's retries would get different answers", bodies.len());
            return 1;
        }
    }
    0
}

fn ms(started: Instant) -> String {
    format!("{:.1} ms", started.elapsed().as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::message::{Event, Kind, Message};

    fn raw(kind: &[&str]) -> RawSend {
        RawSend {
            kind: kind.iter().map(|s| s.to_string()).collect(),
            ..RawSend::default()
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn send(kind: &[&str]) -> Send {
        resolve(raw(kind), &no_env).unwrap()
    }

    #[test]
    fn defaults_work_with_make_run() {
        let s = send(&["text", "天气"]);
        assert_eq!(s.url, DEFAULT_URL);
        assert_eq!(s.token.expose(), DEV_TOKEN);
        assert_eq!(s.mode, Mode::Plain);
        assert_eq!(
            s.push,
            Push::Text {
                content: "天气".into()
            }
        );
    }

    #[test]
    fn a_key_from_the_environment_selects_safe_mode() {
        let env = |k: &str| match k {
            "WXMP_AES_KEY" => Some("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG".to_owned()),
            "WXMP_APPID" => Some("wx1".to_owned()),
            "WXMP_TOKEN" => Some("envtoken".to_owned()),
            _ => None,
        };
        let s = resolve(raw(&["verify"]), &env).unwrap();
        assert_eq!(s.mode, Mode::Safe);
        assert_eq!(s.token.expose(), "envtoken");
    }

    #[test]
    fn usage_errors_are_clear() {
        let err = |r: RawSend| resolve(r, &no_env).unwrap_err().0;
        assert!(err(raw(&[])).contains("needs a KIND"));
        assert!(err(raw(&["dance"])).contains("unknown KIND"));
        assert!(err(raw(&["text"])).contains("needs CONTENT"));
        assert_eq!(
            send(&["text", "hello", "world"]).push,
            Push::Text {
                content: "hello world".into()
            }
        );
        assert!(err(raw(&["location"])).contains("--lat and --lng"));
        assert!(err(RawSend {
            mode: Some("safe".into()),
            ..raw(&["verify"])
        })
        .contains("--aes-key"));
        assert!(err(RawSend {
            repeat: Some("0".into()),
            ..raw(&["verify"])
        })
        .contains("--repeat"));
        assert!(err(RawSend {
            url: Some("ftp://x".into()),
            ..raw(&["verify"])
        })
        .contains("--url"));
    }

    #[test]
    fn every_push_parses_as_wechat_would_send_it() {
        /// (KIND and arguments, per-kind options, expected MsgType)
        type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
        let cases: Vec<Case> = vec![
            (vec!["text", "a]]>b"], vec![], "text"),
            (vec!["image"], vec![], "image"),
            (vec!["voice"], vec![("recognition", "你好")], "voice"),
            (vec!["video"], vec![], "video"),
            (vec!["shortvideo"], vec![], "shortvideo"),
            (
                vec!["location"],
                vec![("lat", "23.1"), ("lng", "113.3"), ("label", "<广州>")],
                "location",
            ),
            (vec!["link"], vec![], "link"),
            (
                vec!["event", "subscribe"],
                vec![("key", "qrscene_42"), ("ticket", "T")],
                "event",
            ),
            (
                vec!["event", "LOCATION"],
                vec![("lat", "1"), ("lng", "2")],
                "event",
            ),
        ];
        for (kind, fields, msg_type) in cases {
            let mut r = raw(&kind);
            r.fields = fields
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            let s = resolve(r, &no_env).unwrap();
            let xml = build_push(&s.push, &s.from, &s.to, 1_700_000_000, "42");
            let m = Message::parse(&xml).unwrap_or_else(|e| panic!("{kind:?}: {e}: {xml}"));
            assert_eq!(m.msg_type(), msg_type);
            assert_eq!(m.from_user_name, "o_wxmp_send");
            assert_eq!(m.create_time, 1_700_000_000);
            match &m.kind {
                Kind::Text { content } => assert_eq!(content, "a]]>b"),
                Kind::Voice { recognition, .. } => assert_eq!(recognition.as_deref(), Some("你好")),
                Kind::Location {
                    label, location_x, ..
                } => {
                    assert_eq!(label, "<广州>");
                    assert_eq!(*location_x, 23.1);
                }
                Kind::Event(Event::Subscribe { event_key, .. }) => {
                    assert_eq!(event_key.as_deref(), Some("qrscene_42"));
                    assert_eq!(m.msg_id, None);
                }
                Kind::Event(Event::Location { latitude, .. }) => assert_eq!(*latitude, 1.0),
                _ => assert_eq!(m.msg_id.as_deref(), Some("42")),
            }
        }
    }

    fn safe_send() -> Send {
        let mut r = raw(&["text", "hi"]);
        r.aes_key = Some("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG".into());
        r.appid = Some("wx2c2769f8efd9abc2".into());
        r.token = Some("spamtest".into());
        resolve(r, &no_env).unwrap()
    }

    #[test]
    fn safe_request_carries_both_signatures_and_only_encrypt() {
        let s = safe_send();
        let xml = build_push(&s.push, &s.from, &s.to, 1, "1");
        let out = build_request(&s, &xml, 1409735669, "1320562132", &[7; 16]);
        assert!(out
            .url
            .contains("signature=16120ec1b8dbb870f510d87ce6bc2463eae6ca1a"));
        assert!(out.url.contains("encrypt_type=aes&msg_signature="));
        assert!(!out.body.contains("MsgType"));
        let mut compat = s.clone();
        compat.mode = Mode::Compat;
        let out = build_request(&compat, &xml, 1, "2", &[7; 16]);
        assert!(out.body.contains("<MsgType>") && out.body.contains("<Encrypt>"));
    }

    fn envelope(s: &Send, inner: &str, app_id: &str, token: &str) -> String {
        let (key, _) = s.safe.as_ref().unwrap();
        let enc = crypto::encrypt(key, app_id, &[1; 16], inner);
        let sig = verify::msg_signature(&Token::new(token).unwrap(), "5", "6", &enc);
        crypto::envelope(&enc, &sig, 5, "6")
    }

    #[test]
    fn check_reply_verifies_like_wechat() {
        let s = safe_send();
        let good = Reply::text("ok").0.render(&s.from, &s.to, 1);
        let checked =
            check_reply(&s, &envelope(&s, &good, "wx2c2769f8efd9abc2", "spamtest")).unwrap();
        assert_eq!(summary(&checked.reply), "text: ok");
        assert_eq!(
            check_reply(&s, &envelope(&s, &good, "wx2c2769f8efd9abc2", "wrongtoken")),
            Err(SendError::EnvelopeSignature)
        );
        assert!(matches!(
            check_reply(&s, &envelope(&s, &good, "wxOTHER", "spamtest")),
            Err(SendError::AppId { .. })
        ));
        assert_eq!(check_reply(&s, &good), Err(SendError::NotEncrypted));
        assert_eq!(check_reply(&s, "success").unwrap().reply, Reply::Success);
        let unswapped = Reply::text("ok").0.render(&s.to, &s.from, 1);
        assert!(matches!(
            check_reply(
                &s,
                &envelope(&s, &unswapped, "wx2c2769f8efd9abc2", "spamtest")
            ),
            Err(SendError::NotSwapped { .. })
        ));
        let empty = good.replace("<![CDATA[ok]]>", "<![CDATA[]]>");
        assert!(matches!(
            check_reply(&s, &envelope(&s, &empty, "wx2c2769f8efd9abc2", "spamtest")),
            Err(SendError::Reply(_))
        ));
    }
}
