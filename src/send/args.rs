//! `wxmp send`'s command line: the raw options, then a validated [`Job`] whose push is built
//! with the one message model.

use lexopt::prelude::*;

use crate::protocol::crypto::AesKey;
use crate::protocol::envelope::{Mode, SafeMode};
use crate::protocol::message::{Event, Kind, Message, Numeric, Video};
use crate::protocol::verify::Token;
use crate::usage;
pub use crate::usage::UsageError;

pub const DEFAULT_URL: &str = "http://127.0.0.1:8080/weixin";
/// The token `make run` uses when WXMP_TOKEN is unset, so the two work together out of the box.
pub const DEV_TOKEN: &str = "devtoken";
pub const DEFAULT_FROM: &str = "o_wxmp_send";
pub const DEFAULT_TO: &str = "gh_wxmp_send";

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
  --retries N        like WeChat: abandon an attempt after 5 s and send it again, N tries in all
                     (WeChat makes 3)                [default: 1]
  --xml              print the (decrypted) reply XML instead of the summary

Exit status: 0 the reply is one WeChat accepts; 1 it is not, or the server failed or is
unreachable; 2 usage error.
";

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
    pub retries: Option<String>,
    pub xml: bool,
    pub kind: Vec<String>,
    /// Per-kind options (`--lat`, `--key`, ...), by name.
    pub fields: Vec<(String, String)>,
}

/// What `wxmp send ...` asked for.
#[derive(Debug)]
pub enum Parsed {
    Help,
    Send(Box<RawSend>),
}

/// What to send.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// The GET handshake.
    Verify,
    /// A push; its `CreateTime` and `MsgId` are filled in when it is sent.
    Push(Box<Message>),
    /// A file's XML, sent as it is.
    File(String),
}

/// A ready-to-run `send`.
#[derive(Debug, Clone)]
pub struct Job {
    pub url: String,
    pub token: Token,
    pub safe: Option<SafeMode>,
    pub mode: Mode,
    /// `--from` / `--to`, used where the payload does not say (the GET handshake's `openid`).
    pub from: String,
    pub to: String,
    pub msg_id: Option<String>,
    pub repeat: usize,
    /// Tries of one push, each abandoned after WeChat's 5 s (WeChat makes 3).
    pub retries: usize,
    pub xml: bool,
    pub payload: Payload,
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
pub fn parse(mut parser: lexopt::Parser) -> Result<Parsed, UsageError> {
    let mut raw = RawSend::default();
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Long("xml") => raw.xml = true,
            Long(name) => {
                let name = name.to_owned();
                let value = usage::value(&mut parser, &name)?;
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
                    "retries" => &mut raw.retries,
                    other if KIND_FIELDS.contains(&other) => {
                        raw.fields.push((name, value));
                        continue;
                    }
                    _ => {
                        return Err(UsageError(format!(
                            "unknown option --{name} (see wxmp send --help)"
                        )))
                    }
                };
                *slot = Some(value);
            }
            Value(v) => raw.kind.push(v.string()?),
            other => {
                return Err(UsageError(format!(
                    "{} (see wxmp send --help)",
                    other.unexpected()
                )))
            }
        }
    }
    Ok(Parsed::Send(Box::new(raw)))
}

fn field(raw: &RawSend, name: &str) -> Option<String> {
    raw.fields
        .iter()
        .rev()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

/// Applies defaults (flags, then `WXMP_*` variables, then built-ins) and validates.
pub fn resolve(raw: RawSend, env: &dyn Fn(&str) -> Option<String>) -> Result<Job, UsageError> {
    let pick =
        |flag: Option<String>, var: &str| flag.or_else(|| env(var)).filter(|v| !v.is_empty());
    let token = pick(raw.token.clone(), "WXMP_TOKEN").unwrap_or_else(|| DEV_TOKEN.to_owned());
    let token = Token::new(&token)
        .map_err(|e| UsageError(format!("invalid token (--token / WXMP_TOKEN): {e}")))?;
    let safe = match (
        pick(raw.aes_key.clone(), "WXMP_AES_KEY"),
        pick(raw.appid.clone(), "WXMP_APPID"),
    ) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(UsageError(
                "an AES key needs an AppID: pass --appid or set WXMP_APPID".into(),
            ))
        }
        (Some(k), Some(app_id)) => Some(SafeMode {
            key: AesKey::from_encoding_aes_key(k.trim()).map_err(|e| {
                UsageError(format!("invalid AES key (--aes-key / WXMP_AES_KEY): {e}"))
            })?,
            app_id,
        }),
    };
    let mode = match raw.mode.as_deref() {
        None if safe.is_some() => Mode::Safe,
        None | Some("plain") => Mode::Plain,
        Some("compat") => Mode::Compat,
        Some("safe") => Mode::Safe,
        Some(other) => {
            return Err(UsageError(format!(
                "unknown --mode {other:?}: expected plain, compat or safe"
            )))
        }
    };
    if mode != Mode::Plain && safe.is_none() {
        return Err(UsageError(format!(
            "--mode {mode} needs --aes-key and --appid (or WXMP_AES_KEY and WXMP_APPID)"
        )));
    }
    let repeat = match raw.repeat.as_deref() {
        None => 1,
        Some(n) => match n.parse::<usize>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => {
                return Err(UsageError(format!(
                    "invalid --repeat {n:?}: expected 1 to 100"
                )))
            }
        },
    };
    let retries = match raw.retries.as_deref() {
        None => 1,
        Some(n) => match n.parse::<usize>() {
            Ok(n) if (1..=10).contains(&n) => n,
            _ => {
                return Err(UsageError(format!(
                    "invalid --retries {n:?}: expected 1 to 10 (WeChat makes 3 tries)"
                )))
            }
        },
    };
    let from = raw.from.clone().unwrap_or_else(|| DEFAULT_FROM.into());
    let to = raw.to.clone().unwrap_or_else(|| DEFAULT_TO.into());
    let payload = payload(&raw, &from, &to)?;
    let url = raw.url.clone().unwrap_or_else(|| DEFAULT_URL.to_owned());
    // https:// works too (rustls, built-in roots), so a public ngrok address can be tested.
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(UsageError(format!(
            "invalid --url {url:?}: expected http://HOST[:PORT]/PATH or https://HOST/PATH"
        )));
    }
    Ok(Job {
        url,
        token,
        safe,
        mode,
        from,
        to,
        msg_id: raw.msg_id.clone(),
        repeat,
        retries,
        xml: raw.xml,
        payload,
    })
}

fn payload(raw: &RawSend, from: &str, to: &str) -> Result<Payload, UsageError> {
    let f =
        |name: &str, default: &str| Some(field(raw, name).unwrap_or_else(|| default.to_owned()));
    let (kind, args) = match raw.kind.split_first() {
        Some((k, rest)) => (k.as_str(), rest),
        None => return Err(UsageError("a KIND is needed: verify, text, image, voice, video, shortvideo, location, link, event or file (see wxmp send --help)".into())),
    };
    let one_arg = |what: &str| -> Result<String, UsageError> {
        match args {
            [a] => Ok(a.clone()),
            _ => Err(UsageError(format!("{kind} takes one {what}"))),
        }
    };
    let no_args = || -> Result<(), UsageError> {
        match args.first() {
            None => Ok(()),
            Some(a) => Err(UsageError(format!(
                "{kind} takes no arguments, but {a:?} was given"
            ))),
        }
    };
    let number = |name: &str| -> Result<Option<Numeric<f64>>, UsageError> {
        match field(raw, name) {
            Some(v) if v.trim().parse::<f64>().is_err() => {
                Err(UsageError(format!("--{name} {v:?} is not a number")))
            }
            v => Ok(v.map(|v| Numeric::from_text(&v))),
        }
    };
    let push = |kind: Kind| Ok(Payload::Push(Box::new(Message::new(to, from, 0, kind))));
    match kind {
        "verify" => {
            no_args()?;
            Ok(Payload::Verify)
        }
        "text" => {
            if args.is_empty() {
                return Err(UsageError(
                    "text needs CONTENT, e.g. wxmp send text 你好".into(),
                ));
            }
            // `wxmp send text hello world` means the text "hello world".
            push(Kind::Text {
                content: Some(args.join(" ")),
            })
        }
        "image" => {
            no_args()?;
            push(Kind::Image {
                pic_url: f("pic-url", "http://mmbiz.qpic.cn/wxmp_send.jpg"),
                media_id: f("media-id", "wxmp_send_media"),
            })
        }
        "voice" => {
            no_args()?;
            push(Kind::Voice {
                media_id: f("media-id", "wxmp_send_media"),
                format: f("format", "amr"),
                recognition: field(raw, "recognition"),
            })
        }
        "video" | "shortvideo" => {
            no_args()?;
            let v = Video {
                media_id: f("media-id", "wxmp_send_media"),
                thumb_media_id: f("thumb-media-id", "wxmp_send_thumb"),
            };
            push(if kind == "video" {
                Kind::Video(v)
            } else {
                Kind::ShortVideo(v)
            })
        }
        "location" => {
            no_args()?;
            let (Some(lat), Some(lng)) = (number("lat")?, number("lng")?) else {
                return Err(UsageError("location needs --lat and --lng".into()));
            };
            push(Kind::Location {
                location_x: Some(lat),
                location_y: Some(lng),
                scale: f("scale", "15").map(|s| Numeric::from_text(&s)),
                label: f("label", ""),
            })
        }
        "link" => {
            no_args()?;
            push(Kind::Link {
                title: f("title", "wxmp"),
                description: f("description", ""),
                url: f("link-url", "https://example.com/"),
            })
        }
        "event" => {
            let name = one_arg("event NAME")?;
            let location = if name.eq_ignore_ascii_case("LOCATION") {
                let (Some(lat), Some(lng)) = (number("lat")?, number("lng")?) else {
                    return Err(UsageError("event LOCATION needs --lat and --lng".into()));
                };
                Some((lat, lng, f("precision", "30.000000")))
            } else {
                None
            };
            push(Kind::Event(event(
                &name,
                field(raw, "key"),
                field(raw, "ticket"),
                location,
            )))
        }
        "file" => {
            let path = one_arg("FILE")?;
            let xml = std::fs::read_to_string(&path)
                .map_err(|e| UsageError(format!("cannot read {path}: {e}")))?;
            Ok(Payload::File(xml))
        }
        other => Err(UsageError(format!(
            "unknown KIND {other:?} (see wxmp send --help)"
        ))),
    }
}

/// The event named `name` (any case, as the server compares) with the fields the command line
/// gave. Built as WeChat's XML and read back with the server's own parser, so the simulator
/// and the server can never disagree on which fields an event carries.
fn event(
    name: &str,
    key: Option<String>,
    ticket: Option<String>,
    location: Option<(Numeric<f64>, Numeric<f64>, Option<String>)>,
) -> Event {
    let mut m = Message::new(
        "",
        "",
        0,
        Kind::Event(Event::Other {
            event: name.to_owned(),
            event_key: key,
        }),
    );
    let text = |v: String| crate::protocol::message::Node::Text(v);
    if let Some(t) = ticket {
        m.extra.push(("Ticket".into(), text(t)));
    }
    if let Some((lat, lng, precision)) = location {
        m.extra.push(("Latitude".into(), text(lat.to_string())));
        m.extra.push(("Longitude".into(), text(lng.to_string())));
        if let Some(p) = precision {
            m.extra.push(("Precision".into(), text(p)));
        }
    }
    match Message::parse(&m.to_xml()).map(|m| m.kind) {
        Ok(Kind::Event(e)) => e,
        // The document above is always a well-formed event; keep the raw one if not.
        _ => Event::Other {
            event: name.to_owned(),
            event_key: None,
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The raw options of `wxmp send KIND...` with nothing else given.
    pub(crate) fn raw(kind: &[&str]) -> RawSend {
        RawSend {
            kind: kind.iter().map(|s| s.to_string()).collect(),
            ..RawSend::default()
        }
    }

    pub(crate) fn no_env(_: &str) -> Option<String> {
        None
    }

    fn job(kind: &[&str]) -> Job {
        resolve(raw(kind), &no_env).unwrap()
    }

    fn kind_of(j: &Job) -> &Kind {
        match &j.payload {
            Payload::Push(m) => &m.kind,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_work_with_make_run() {
        let j = job(&["text", "天气"]);
        assert_eq!(j.url, DEFAULT_URL);
        assert_eq!(j.token.expose(), DEV_TOKEN);
        assert_eq!(j.mode, Mode::Plain);
        assert_eq!(
            kind_of(&j),
            &Kind::Text {
                content: Some("天气".into())
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
        let j = resolve(raw(&["verify"]), &env).unwrap();
        assert_eq!(j.mode, Mode::Safe);
        assert_eq!(j.token.expose(), "envtoken");
    }

    #[test]
    fn usage_errors_are_clear() {
        let err = |r: RawSend| resolve(r, &no_env).unwrap_err().0;
        assert!(err(raw(&[])).contains("a KIND is needed"));
        assert!(err(raw(&["dance"])).contains("unknown KIND"));
        assert!(err(raw(&["text"])).contains("needs CONTENT"));
        assert_eq!(
            kind_of(&job(&["text", "hello", "world"])),
            &Kind::Text {
                content: Some("hello world".into())
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
        let tunnel = RawSend {
            url: Some("https://ab12.ngrok-free.app/weixin".into()),
            ..raw(&["verify"])
        };
        assert_eq!(
            resolve(tunnel, &no_env).unwrap().url,
            "https://ab12.ngrok-free.app/weixin"
        );
    }

    #[test]
    fn events_come_out_typed() {
        let mut r = raw(&["event", "subscribe"]);
        r.fields = vec![
            ("key".into(), "qrscene_42".into()),
            ("ticket".into(), "T".into()),
        ];
        let j = resolve(r, &no_env).unwrap();
        assert_eq!(
            kind_of(&j),
            &Kind::Event(Event::Subscribe {
                event_key: Some("qrscene_42".into()),
                ticket: Some("T".into())
            })
        );
        let mut r = raw(&["event", "location"]);
        r.fields = vec![("lat".into(), "1".into()), ("lng".into(), "2.5".into())];
        let j = resolve(r, &no_env).unwrap();
        assert_eq!(
            kind_of(&j),
            &Kind::Event(Event::Location {
                latitude: Some(Numeric::Parsed(1.0)),
                longitude: Some(Numeric::Parsed(2.5)),
                precision: Some(Numeric::Parsed(30.0))
            })
        );
    }
}
