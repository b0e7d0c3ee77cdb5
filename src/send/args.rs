//! `wxmp send`'s command line: the raw options, then a validated [`Job`] whose push is built
//! with the one message model.

use crate::protocol::envelope::{Mode, SafeMode};
use crate::protocol::message::{Event, Kind, Message, Numeric, Video};
use crate::protocol::verify::Token;
pub use crate::usage::UsageError;
use crate::usage::{self, Args, Env, Setting, Spec};

/// Where `make run` serves when no `WXMP_HOST`/`WXMP_PORT`/`WXMP_PATH` says otherwise.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080/weixin";
/// WeChat tries a push three times, each attempt abandoned after 5 s.
pub const WECHAT_TRIES: usize = 3;
/// The token `make run` uses when WXMP_TOKEN is unset, so the two work together out of the box.
pub const DEV_TOKEN: &str = "devtoken";
pub const DEFAULT_FROM: &str = "o_wxmp_send";
pub const DEFAULT_TO: &str = "gh_wxmp_send";

const HEAD: &str = "\
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
";

const FOOT: &str = "
Exit status: 0 the reply is one WeChat accepts; 1 it is not, or the server failed or is
unreachable; 2 usage error.
";

/// `wxmp send`'s options.
#[rustfmt::skip]
pub const SETTINGS: &[Setting] = &[
    Setting::value("url", "URL", "server message URL").default("from WXMP_HOST, WXMP_PORT and WXMP_PATH, else http://127.0.0.1:8080/weixin"),
    Setting::value("token", "TOKEN", "the server's Token").env("WXMP_TOKEN").default(DEV_TOKEN).secret(),
    Setting::value("aes-key", "KEY", "EncodingAESKey").env("WXMP_AES_KEY").secret(),
    Setting::value("appid", "APPID", "AppID").env("WXMP_APPID"),
    Setting::value("accounts", "FILE", "an accounts file: with --account, its path, token, key and AppID").env("WXMP_ACCOUNTS"),
    Setting::value("account", "NAME", "the account of --accounts to play WeChat for"),
    Setting::value("mode", "MODE", "plain | compat | safe").default("safe with a key, else plain"),
    Setting::value("from", "OPENID", "the user (FromUserName)").default(DEFAULT_FROM),
    Setting::value("to", "GH_ID", "the account (ToUserName)").default(DEFAULT_TO),
    Setting::value("msg-id", "ID", "MsgId").default("random"),
    Setting::value("repeat", "N", "send the same push N times, as WeChat's retries do").default("1").range(1, 100, ""),
    Setting::value("retries", "N", "like WeChat: the same push again after 5 s, N tries in all; 1 = a single attempt").default("3, as WeChat").range(1, 10, "WeChat makes 3 tries"),
    Setting::switch("xml", "print the (decrypted) reply XML instead of the summary"),
];

/// `wxmp send`'s command line: the options, a message's fields, and the KIND and its words.
pub const SPEC: Spec = Spec {
    help: "wxmp send --help",
    settings: SETTINGS,
    fields: KIND_FIELDS,
    words: true,
};

/// `wxmp send --help`.
pub fn usage() -> String {
    format!("{HEAD}{}{FOOT}", usage::help(SETTINGS))
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

/// Applies defaults (flags, then `WXMP_*` variables, then built-ins) and validates.
pub fn resolve(raw: Args, env: Env<'_>) -> Result<Job, UsageError> {
    let raw = raw.with_env(env);
    let token = raw.get("token").unwrap_or_else(|| DEV_TOKEN.to_owned());
    let token = Token::new(&token)
        .map_err(|e| UsageError(format!("invalid token (--token / WXMP_TOKEN): {e}")))?;
    let safe: Option<SafeMode> = usage::safe_mode(raw.get("aes-key"), raw.get("appid"))?;
    let mode = match raw.get("mode").as_deref() {
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
    let repeat = raw.number("repeat", 1usize)?;
    let retries = raw.number("retries", WECHAT_TRIES)?;
    let from = raw.get("from").unwrap_or_else(|| DEFAULT_FROM.into());
    let to = raw.get("to").unwrap_or_else(|| DEFAULT_TO.into());
    let payload = payload(&raw, &from, &to)?;
    let url = match raw.get("url") {
        Some(url) => url,
        None => server_url(env)?,
    };
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
        msg_id: raw.get("msg-id"),
        repeat,
        retries,
        xml: raw.switch("xml")?,
        payload,
    })
}

/// The message URL of a server started with the same `WXMP_*` variables in this shell, as
/// `make run` starts it (port 8080 unless `WXMP_PORT` says otherwise). A server listening on
/// every address (`0.0.0.0`, `::`) is called on loopback.
fn server_url(env: Env<'_>) -> Result<String, UsageError> {
    let var = |name: &str| {
        env(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let host = match var("WXMP_HOST").as_deref() {
        None | Some("0.0.0.0") => "127.0.0.1".to_owned(),
        Some("::" | "[::]") => "[::1]".to_owned(),
        Some(h) if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
        Some(h) => h.to_owned(),
    };
    let port = match var("WXMP_PORT") {
        None => 8080,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => {
                return Err(UsageError(format!(
                "WXMP_PORT={p:?} does not name the server's port: pass --url http://HOST:PORT/PATH"
            )))
            }
        },
    };
    let path = var("WXMP_PATH").unwrap_or_else(|| "/weixin".to_owned());
    let slash = if path.starts_with('/') { "" } else { "/" };
    Ok(format!("http://{host}:{port}{slash}{path}"))
}

fn payload(raw: &Args, from: &str, to: &str) -> Result<Payload, UsageError> {
    let field = |name: &str| raw.get(name);
    let f = |name: &str, default: &str| Some(field(name).unwrap_or_else(|| default.to_owned()));
    let (kind, args) = match raw.words.split_first() {
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
    let number = |name: &str| number(raw, name);
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
                recognition: field("recognition"),
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
        "event" => push(Kind::Event(event_from(raw, &one_arg("event NAME")?)?)),
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

/// A number given as `--name`, as WeChat writes it.
fn number(raw: &Args, name: &str) -> Result<Option<Numeric<f64>>, UsageError> {
    match raw.get(name) {
        Some(v) if v.trim().parse::<f64>().is_err() => {
            Err(UsageError(format!("--{name} {v:?} is not a number")))
        }
        v => Ok(v.map(|v| Numeric::from_text(&v))),
    }
}

/// `wxmp send event NAME` with its options (`--key`, `--ticket`, and for LOCATION `--lat`,
/// `--lng`, `--precision`).
fn event_from(raw: &Args, name: &str) -> Result<Event, UsageError> {
    let location = if name.eq_ignore_ascii_case("LOCATION") {
        let (Some(lat), Some(lng)) = (number(raw, "lat")?, number(raw, "lng")?) else {
            return Err(UsageError("event LOCATION needs --lat and --lng".into()));
        };
        let precision = raw
            .get("precision")
            .unwrap_or_else(|| "30.000000".to_owned());
        Some((lat, lng, Some(precision)))
    } else {
        None
    };
    Ok(event(name, raw.get("key"), raw.get("ticket"), location))
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

    /// `wxmp send ARGS...` as parsed.
    pub(crate) fn raw(args: &[&str]) -> Args {
        match usage::parse(lexopt::Parser::from_args(args.iter().copied()), &SPEC) {
            Ok(usage::Parsed::Args(a)) => a,
            other => panic!("{other:?}"),
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

    /// Regression (issue 19): `make run PORT=8081` then `wxmp send` still called :8080, though
    /// the README says send reads the same `WXMP_*` variables as the server.
    #[test]
    fn the_default_url_follows_the_servers_variables() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let url = |pairs| resolve(raw(&["verify"]), &env(pairs)).map(|j| j.url);
        assert_eq!(url(&[]).unwrap(), DEFAULT_URL);
        assert_eq!(
            url(&[("WXMP_PORT", "8081")]).unwrap(),
            "http://127.0.0.1:8081/weixin"
        );
        assert_eq!(
            url(&[
                ("WXMP_HOST", "0.0.0.0"),
                ("WXMP_PORT", "9"),
                ("WXMP_PATH", "/wx")
            ])
            .unwrap(),
            "http://127.0.0.1:9/wx"
        );
        assert_eq!(
            url(&[("WXMP_HOST", "::1"), ("WXMP_PATH", "wx")]).unwrap(),
            "http://[::1]:8080/wx"
        );
        assert_eq!(
            url(&[("WXMP_HOST", "::")]).unwrap(),
            "http://[::1]:8080/weixin"
        );
        assert!(url(&[("WXMP_PORT", "0")]).unwrap_err().0.contains("--url"));
        // --url wins.
        let given = raw(&["--url", "http://example.com/x", "verify"]);
        assert_eq!(
            resolve(given, &env(&[("WXMP_PORT", "1")])).unwrap().url,
            "http://example.com/x"
        );
    }

    #[test]
    fn a_push_is_tried_three_times_like_wechat_unless_told() {
        assert_eq!(job(&["text", "x"]).retries, 3);
        assert_eq!(job(&["--retries", "1", "text", "x"]).retries, 1);
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
        let err = |r: Args| resolve(r, &no_env).unwrap_err().0;
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
        assert!(err(raw(&["verify", "--mode", "safe"])).contains("--aes-key"));
        assert!(err(raw(&["verify", "--repeat", "0"])).contains("--repeat"));
        assert!(err(raw(&["verify", "--retries", "11"])).contains("WeChat makes 3 tries"));
        assert!(err(raw(&["verify", "--url", "ftp://x"])).contains("--url"));
        let tunnel = raw(&["verify", "--url", "https://ab12.ngrok-free.app/weixin"]);
        assert_eq!(
            resolve(tunnel, &no_env).unwrap().url,
            "https://ab12.ngrok-free.app/weixin"
        );
    }

    #[test]
    fn events_come_out_typed() {
        let r = raw(&["event", "subscribe", "--key", "qrscene_42", "--ticket", "T"]);
        let j = resolve(r, &no_env).unwrap();
        assert_eq!(
            kind_of(&j),
            &Kind::Event(Event::Subscribe {
                event_key: Some("qrscene_42".into()),
                ticket: Some("T".into())
            })
        );
        let r = raw(&["event", "location", "--lat", "1", "--lng", "2.5"]);
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
