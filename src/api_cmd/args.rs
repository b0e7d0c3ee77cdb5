//! The command line of `wxmp menu`, `wxmp kf` and `wxmp token`: raw words and options, then a
//! validated [`Job`]. Options may come anywhere after the command word.

use std::path::PathBuf;

use lexopt::prelude::*;

use crate::api::{kf, ApiConfig, Secret};
use crate::config::{self, ConfigError, RawApi};
use crate::usage::{self, UsageError};

pub const USAGE: &str = "\
wxmp menu | kf | token — talk to the WeChat API

Usage:
  wxmp menu check FILE [--rules RULES]   validate a menu file and print its tree (no network);
                                         with --rules, warn about click keys no rule answers
  wxmp menu push FILE [--rules RULES]    check, then make it the account's custom menu
  wxmp menu show                         print the current menu as TOML on stdout
  wxmp menu delete                       delete the custom menu
  wxmp kf send OPENID text CONTENT       send a customer-service message to a user
  wxmp kf send OPENID image|voice MEDIA_ID
  wxmp kf send OPENID video MEDIA_ID     [--title T] [--description D] [--thumb-media-id ID]
  wxmp kf send OPENID music --music-url URL
                                         [--hq-music-url URL] [--thumb-media-id ID] [--title T]
                                         [--description D]
  wxmp kf send OPENID news --title T --url URL [--description D] [--pic-url URL]
  wxmp kf typing OPENID [--cancel]       show (or end) \"typing...\" to the user
  wxmp token [--fetch] [--show]          whether a token is cached, where it came from and
                                         when it expires; --fetch gets one if needed, --show
                                         prints the token itself (alone on stdout)

Options (each also read from the environment variable shown; a flag wins):
  --appid APPID          AppID                        WXMP_APPID
  --secret SECRET        AppSecret (never printed)    WXMP_SECRET
  --api-base URL         the API's address            WXMP_API_BASE  [default: https://api.weixin.qq.com]
  --token-cache FILE     where the token is kept      WXMP_TOKEN_CACHE
                         [default: $XDG_CACHE_HOME or ~/.cache, /wxmp/access_token-APPID.json]
  --token-endpoint E     stable or classic            WXMP_TOKEN_ENDPOINT  [default: stable]
  --rules FILE           rules file for menu check    WXMP_RULES

Exit status: 0 done; 1 WeChat refused (the errcode and what to do are printed) or could not be
reached; 2 usage, file or configuration error. Try them on this machine with wxmp fake-api.
";

/// A configuration mistake in a command's flags is a usage error too (exit 2).
impl From<ConfigError> for UsageError {
    fn from(e: ConfigError) -> Self {
        UsageError(e.0)
    }
}

/// The words and options as given.
#[derive(Debug, Clone, Default)]
pub struct RawCmd {
    /// `menu push FILE`, `kf send OPENID text hello`, `token`.
    pub words: Vec<String>,
    pub appid: Option<String>,
    pub api: RawApi,
    pub rules: Option<String>,
    pub show: bool,
    pub fetch: bool,
    pub cancel: bool,
    /// `wxmp kf send` message options (`--title`, `--url`, ...), by name.
    pub fields: Vec<(String, String)>,
}

/// What `wxmp menu|kf|token ...` asked for.
#[derive(Debug)]
pub enum Parsed {
    Help,
    Run(Box<RawCmd>),
}

const KF_FIELDS: &[&str] = &[
    "title",
    "description",
    "url",
    "pic-url",
    "thumb-media-id",
    "music-url",
    "hq-music-url",
];

/// Parses the rest of the command line after the command word `command`.
pub fn parse(command: &str, mut parser: lexopt::Parser) -> Result<Parsed, UsageError> {
    let mut raw = RawCmd {
        words: vec![command.to_owned()],
        ..RawCmd::default()
    };
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Long("show") => raw.show = true,
            Long("fetch") => raw.fetch = true,
            Long("cancel") => raw.cancel = true,
            Long(name) => {
                let name = name.to_owned();
                let value = usage::value(&mut parser, &name)?;
                match name.as_str() {
                    "appid" => raw.appid = Some(value),
                    "secret" => raw.api.secret = Some(Secret::new(value)),
                    "api-base" => raw.api.api_base = Some(value),
                    "token-cache" => raw.api.token_cache = Some(value),
                    "token-endpoint" => raw.api.token_endpoint = Some(value),
                    "rules" => raw.rules = Some(value),
                    f if KF_FIELDS.contains(&f) => raw.fields.push((name, value)),
                    _ => {
                        return Err(UsageError(format!(
                            "unknown option --{name} (see wxmp {command} --help)"
                        )))
                    }
                }
            }
            Value(v) => raw.words.push(v.string()?),
            other => {
                return Err(UsageError(format!(
                    "{} (see wxmp {command} --help)",
                    other.unexpected()
                )))
            }
        }
    }
    Ok(Parsed::Run(Box::new(raw)))
}

/// A ready-to-run command.
#[derive(Debug)]
pub enum Job {
    MenuCheck {
        file: PathBuf,
        rules: Option<PathBuf>,
    },
    MenuPush {
        file: PathBuf,
        rules: Option<PathBuf>,
        api: ApiConfig,
    },
    MenuShow(ApiConfig),
    MenuDelete(ApiConfig),
    KfSend {
        openid: String,
        message: kf::Message,
        api: ApiConfig,
    },
    KfTyping {
        openid: String,
        cancel: bool,
        api: ApiConfig,
    },
    Token(TokenJob),
}

/// `wxmp token`: the cache to read, and the client when `--fetch` may get a token.
#[derive(Debug)]
pub struct TokenJob {
    pub app_id: String,
    pub api_base: String,
    pub cache: Option<PathBuf>,
    pub fetch: Option<ApiConfig>,
    pub show: bool,
}

/// Applies the `WXMP_*` variables and validates.
pub fn resolve(raw: RawCmd, env: &dyn Fn(&str) -> Option<String>) -> Result<Job, UsageError> {
    let words: Vec<&str> = raw.words.iter().map(String::as_str).collect();
    let api = || config::require_api(raw.appid.clone(), raw.api.clone(), env);
    let rules = || {
        raw.rules
            .clone()
            .or_else(|| env("WXMP_RULES"))
            .filter(|r| !r.is_empty())
            .map(PathBuf::from)
    };
    let only = |n: usize, usage: &str| -> Result<(), UsageError> {
        match words.get(n) {
            None => Ok(()),
            Some(extra) => Err(UsageError(format!("unexpected {extra:?}; usage: {usage}"))),
        }
    };
    if raw.cancel && words.get(..2) != Some(&["kf", "typing"]) {
        return Err(UsageError("--cancel belongs to wxmp kf typing".into()));
    }
    if (raw.show || raw.fetch) && words.first() != Some(&"token") {
        return Err(UsageError("--show and --fetch belong to wxmp token".into()));
    }
    match words.as_slice() {
        ["menu", verb @ ("check" | "push"), rest @ ..] => {
            let usage = format!("wxmp menu {verb} FILE [--rules RULES]");
            let [file] = rest else {
                return Err(UsageError(format!("menu {verb} needs one FILE; usage: {usage}")));
            };
            let file = PathBuf::from(file);
            if *verb == "check" {
                Ok(Job::MenuCheck {
                    file,
                    rules: rules(),
                })
            } else {
                Ok(Job::MenuPush {
                    file,
                    rules: rules(),
                    api: api()?,
                })
            }
        }
        ["menu", "show", ..] => {
            only(2, "wxmp menu show")?;
            Ok(Job::MenuShow(api()?))
        }
        ["menu", "delete", ..] => {
            only(2, "wxmp menu delete")?;
            Ok(Job::MenuDelete(api()?))
        }
        ["menu", ..] => Err(UsageError(
            "wxmp menu needs check FILE, push FILE, show or delete (see wxmp menu --help)".into(),
        )),
        ["kf", "send", openid, kind, args @ ..] => {
            let message = kf_message(kind, args, &raw.fields)?;
            Ok(Job::KfSend {
                openid: openid.to_string(),
                message,
                api: api()?,
            })
        }
        ["kf", "send", ..] => Err(UsageError(
            "usage: wxmp kf send OPENID text CONTENT (or image, voice, video, music, news; see wxmp kf --help)".into(),
        )),
        ["kf", "typing", openid, ..] => {
            only(3, "wxmp kf typing OPENID [--cancel]")?;
            Ok(Job::KfTyping {
                openid: openid.to_string(),
                cancel: raw.cancel,
                api: api()?,
            })
        }
        ["kf", ..] => Err(UsageError(
            "wxmp kf needs send OPENID KIND ... or typing OPENID (see wxmp kf --help)".into(),
        )),
        ["token", ..] => {
            only(1, "wxmp token [--fetch] [--show]")?;
            let (app_id, api_base, cache) =
                config::token_cache_of(raw.appid.clone(), raw.api.clone(), env)?;
            let fetch = if raw.fetch { Some(api()?) } else { None };
            Ok(Job::Token(TokenJob {
                app_id,
                api_base,
                cache,
                fetch,
                show: raw.show,
            }))
        }
        _ => Err(UsageError("unknown command (see wxmp --help)".into())),
    }
}

fn kf_message(
    kind: &str,
    args: &[&str],
    fields: &[(String, String)],
) -> Result<kf::Message, UsageError> {
    let field = |name: &str| {
        fields
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let allowed: &[&str] = match kind {
        "video" => &["title", "description", "thumb-media-id"],
        "music" => &[
            "title",
            "description",
            "music-url",
            "hq-music-url",
            "thumb-media-id",
        ],
        "news" => &["title", "description", "url", "pic-url"],
        _ => &[],
    };
    if let Some((n, _)) = fields.iter().find(|(n, _)| !allowed.contains(&n.as_str())) {
        return Err(UsageError(format!(
            "--{n} does not apply to a {kind} message"
        )));
    }
    let one = |what: &str| -> Result<String, UsageError> {
        match args {
            [a] if !a.trim().is_empty() => Ok(a.to_string()),
            _ => Err(UsageError(format!("{kind} takes one {what}"))),
        }
    };
    let none = || -> Result<(), UsageError> {
        match args.first() {
            None => Ok(()),
            Some(a) => Err(UsageError(format!("{kind} takes options, not {a:?}"))),
        }
    };
    let need = |name: &str| {
        field(name).ok_or_else(|| UsageError(format!("a {kind} message needs --{name}")))
    };
    Ok(match kind {
        "text" => {
            // `wxmp kf send o1 text hello world` sends "hello world".
            let content = args.join(" ");
            if content.trim().is_empty() {
                return Err(UsageError(
                    "text needs CONTENT, e.g. wxmp kf send OPENID text 你好".into(),
                ));
            }
            kf::Message::Text { content }
        }
        "image" => kf::Message::Image {
            media_id: one("MEDIA_ID")?,
        },
        "voice" => kf::Message::Voice {
            media_id: one("MEDIA_ID")?,
        },
        "video" => kf::Message::Video {
            media_id: one("MEDIA_ID")?,
            thumb_media_id: field("thumb-media-id"),
            title: field("title"),
            description: field("description"),
        },
        "music" => {
            none()?;
            kf::Message::Music {
                title: field("title"),
                description: field("description"),
                music_url: Some(need("music-url")?),
                hq_music_url: field("hq-music-url").or_else(|| field("music-url")),
                thumb_media_id: field("thumb-media-id"),
            }
        }
        "news" => {
            none()?;
            kf::Message::News(kf::Article {
                title: need("title")?,
                description: field("description").unwrap_or_default(),
                url: need("url")?,
                pic_url: field("pic-url").unwrap_or_default(),
            })
        }
        other => {
            return Err(UsageError(format!(
                "unknown message kind {other:?}: expected text, image, voice, video, music or news"
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(args: &[&str]) -> RawCmd {
        let (first, rest) = args.split_first().unwrap();
        let parser = lexopt::Parser::from_args(rest.iter().map(|s| s.to_string()));
        match parse(first, parser).unwrap() {
            Parsed::Run(raw) => *raw,
            Parsed::Help => panic!("help"),
        }
    }

    fn env(k: &str) -> Option<String> {
        match k {
            "WXMP_APPID" => Some("wxenv".into()),
            "WXMP_SECRET" => Some("envsecret".into()),
            _ => None,
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn options_may_follow_the_words() {
        let raw = parsed(&[
            "menu",
            "push",
            "m.toml",
            "--api-base",
            "http://127.0.0.1:9",
            "--appid",
            "wx1",
            "--secret",
            "s",
        ]);
        match resolve(raw, &no_env).unwrap() {
            Job::MenuPush { file, api, .. } => {
                assert_eq!(file, PathBuf::from("m.toml"));
                assert_eq!(api.api_base, "http://127.0.0.1:9");
                assert_eq!(api.app_id, "wx1");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn menu_check_needs_no_credentials_and_reads_wxmp_rules() {
        let rules_env = |k: &str| (k == "WXMP_RULES").then(|| "r.toml".to_owned());
        match resolve(parsed(&["menu", "check", "m.toml"]), &rules_env).unwrap() {
            Job::MenuCheck { rules, .. } => assert_eq!(rules, Some(PathBuf::from("r.toml"))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn kf_messages_from_the_command_line() {
        let job = resolve(parsed(&["kf", "send", "o1", "text", "你好", "世界"]), &env).unwrap();
        match job {
            Job::KfSend {
                openid,
                message,
                api,
            } => {
                assert_eq!(openid, "o1");
                assert_eq!(
                    message,
                    kf::Message::Text {
                        content: "你好 世界".into()
                    }
                );
                assert_eq!(api.app_id, "wxenv");
            }
            other => panic!("{other:?}"),
        }
        let job = resolve(
            parsed(&[
                "kf",
                "send",
                "o1",
                "news",
                "--title",
                "T",
                "--url",
                "https://e.com/",
            ]),
            &env,
        )
        .unwrap();
        assert!(matches!(
            job,
            Job::KfSend {
                message: kf::Message::News(_),
                ..
            }
        ));
        let err = |args: &[&str]| resolve(parsed(args), &env).unwrap_err().0;
        assert!(err(&["kf", "send", "o1", "news", "--title", "T"]).contains("--url"));
        assert!(err(&["kf", "send", "o1", "image"]).contains("MEDIA_ID"));
        assert!(err(&["kf", "send", "o1", "text", "x", "--title", "T"]).contains("--title"));
        assert!(err(&["kf", "send", "o1", "gif", "x"]).contains("unknown message kind"));
        assert!(err(&["kf", "send"]).contains("usage"));
    }

    #[test]
    fn usage_and_config_errors_say_what_is_missing() {
        let err = |args: &[&str]| resolve(parsed(args), &no_env).unwrap_err().0;
        assert!(err(&["menu", "push"]).contains("needs one FILE"));
        assert!(err(&["menu", "frobnicate"]).contains("check FILE, push FILE"));
        assert!(err(&["menu", "show"]).contains("--secret"));
        let e = err(&["menu", "show", "--secret", "s"]);
        assert!(e.contains("--appid") && e.contains("WXMP_APPID"), "{e}");
        assert!(err(&["token"]).contains("--appid"));
        assert!(err(&["menu", "show", "--show"]).contains("wxmp token"));
    }

    #[test]
    fn token_needs_only_the_appid_unless_it_fetches() {
        let appid = |k: &str| (k == "WXMP_APPID").then(|| "wx1".to_owned());
        assert!(resolve(parsed(&["token"]), &appid).is_ok());
        assert!(resolve(parsed(&["token", "--fetch"]), &appid)
            .unwrap_err()
            .0
            .contains("--secret"));
    }
}
