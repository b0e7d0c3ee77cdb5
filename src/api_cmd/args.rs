//! The command line of `wxmp menu`, `wxmp kf` and `wxmp token`: raw words and options, then a
//! validated [`Job`]. Options may come anywhere after the command word.

use std::path::PathBuf;

use crate::api::media::MediaType;
use crate::api::{kf, ApiConfig};
use crate::config;
use crate::usage::{self, Args, Env, Setting, Spec, UsageError};

const HEAD: &str = "\
wxmp menu | kf | token | media — talk to the WeChat API

Usage:
  wxmp menu check FILE [--rules RULES]   validate a menu file and print its tree (no network);
                                         with --rules, warn about click keys no rule answers
  wxmp menu push FILE [--rules RULES]    check, then make it the account's custom menu
  wxmp menu show                         print the current menu as TOML on stdout
  wxmp menu delete                       delete the custom menu
  wxmp kf send OPENID text CONTENT       send a customer-service message to a user
  wxmp kf send OPENID image|voice MEDIA_ID
  wxmp kf send OPENID video MEDIA_ID     [--title T] [--description D] [--thumb-media-id ID]
  wxmp kf send OPENID music --music-url URL --thumb-media-id ID
                                         [--hq-music-url URL] [--title T] [--description D]
  wxmp kf send OPENID news --title T --url URL [--description D] [--pic-url URL]
  wxmp kf send OPENID mpnews MEDIA_ID    a news material
  wxmp kf send OPENID mpnewsarticle ARTICLE_ID
  wxmp kf send OPENID wxcard CARD_ID
  wxmp kf send OPENID msgmenu ID=CHOICE...  [--head-content H] [--tail-content T]
  wxmp kf send OPENID miniprogrampage --title T --miniprogram-appid APPID --pagepath PATH
                                         --thumb-media-id ID
  wxmp kf typing OPENID [--cancel]       show (or end) \"typing...\" to the user
  wxmp token [--fetch] [--show]          whether a token is cached, where it came from and
                                         when it expires; --fetch gets one if needed, --show
                                         prints the token itself (alone on stdout)
  wxmp media upload FILE [--type image|voice|video|thumb] [--temporary]
                                         upload as permanent material (material/add_material),
                                         or for 3 days (media/upload); prints the media_id alone
                                         on stdout. The type defaults to the file's, by content;
                                         a permanent video needs --title [--description D]
  wxmp media list --type image|voice|video
                                         list permanent material: media_id, date, name

Options (each also read from the environment variable shown; a flag wins):
";

const FOOT: &str = "
Exit status: 0 done; 1 WeChat refused (the errcode and what to do are printed) or could not be
reached; 2 usage, file or configuration error. Try them on this machine with wxmp fake-api.
";

/// The options of `wxmp menu`, `kf`, `token` and `media`: the server's API settings, and their own.
#[rustfmt::skip]
pub const SETTINGS: &[Setting] = &[
    config::APPID,
    config::SECRET,
    config::API_BASE,
    config::TOKEN_CACHE,
    config::TOKEN_ENDPOINT,
    Setting::value("rules", "FILE", "rules file, for menu check and push").env("WXMP_RULES"),
    Setting::value("accounts", "FILE", "an accounts file: with --account, its AppID and AppSecret").env("WXMP_ACCOUNTS"),
    Setting::value("account", "NAME", "the account of --accounts whose API to call"),
    Setting::switch("fetch", "wxmp token: get a token if none is cached"),
    Setting::switch("show", "wxmp token: print the token itself"),
    Setting::switch("cancel", "wxmp kf typing: end \"typing...\""),
    Setting::value("type", "TYPE", "wxmp media: image, voice, video or thumb"),
    Setting::switch("temporary", "wxmp media upload: for 3 days (media/upload), not permanent"),
];

/// The command line of `wxmp COMMAND` (`menu`, `kf`, `token` or `media`).
pub fn spec(command: &str) -> Spec {
    Spec {
        help: match command {
            "menu" => "wxmp menu --help",
            "kf" => "wxmp kf --help",
            "media" => "wxmp media --help",
            _ => "wxmp token --help",
        },
        settings: SETTINGS,
        fields: KF_FIELDS,
        words: true,
    }
}

/// `wxmp menu --help` (and `kf`, `token`).
pub fn usage() -> String {
    format!("{HEAD}{}{FOOT}", usage::help(SETTINGS))
}

const KF_FIELDS: &[&str] = &[
    "title",
    "description",
    "url",
    "pic-url",
    "thumb-media-id",
    "music-url",
    "hq-music-url",
    "head-content",
    "tail-content",
    "miniprogram-appid",
    "pagepath",
];

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
    MediaUpload {
        file: PathBuf,
        /// `None`: the file's own, by content.
        ty: Option<MediaType>,
        temporary: bool,
        title: Option<String>,
        introduction: Option<String>,
        api: ApiConfig,
    },
    MediaList {
        ty: MediaType,
        api: ApiConfig,
    },
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
pub fn resolve(raw: Args, env: Env<'_>) -> Result<Job, UsageError> {
    let raw = raw.with_env(env);
    let words: Vec<&str> = raw.words.iter().map(String::as_str).collect();
    let api = || config::require_api(&raw, env);
    let only = |n: usize, usage: &str| only_words(&words, n, usage);
    let flags = Flags::of(&raw, &words)?;
    let (temporary, ty) = (flags.temporary, flags.ty);
    match words.as_slice() {
        ["menu", verb @ ("check" | "push"), rest @ ..] => menu_file_job(verb, rest, &raw, env),
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
            let message = kf_message(kind, args, &kf_fields(&raw))?;
            Ok(Job::KfSend {
                openid: openid.to_string(),
                message,
                api: api()?,
            })
        }
        ["kf", "send", ..] => Err(UsageError(
            "usage: wxmp kf send OPENID text CONTENT (or image, voice, video, music, news, mpnews, mpnewsarticle, msgmenu, wxcard, miniprogrampage; see wxmp kf --help)".into(),
        )),
        ["kf", "typing", openid, ..] => {
            only(3, "wxmp kf typing OPENID [--cancel]")?;
            Ok(Job::KfTyping {
                openid: openid.to_string(),
                cancel: flags.cancel,
                api: api()?,
            })
        }
        ["kf", ..] => Err(UsageError(
            "wxmp kf needs send OPENID KIND ... or typing OPENID (see wxmp kf --help)".into(),
        )),
        ["token", ..] => {
            only(1, "wxmp token [--fetch] [--show]")?;
            token_job(&raw, env, &flags)
        }
        ["media", "upload", rest @ ..] => {
            let usage = "wxmp media upload FILE [--type image|voice|video|thumb] [--temporary]";
            let [file] = rest else {
                return Err(UsageError(format!("media upload needs one FILE; usage: {usage}")));
            };
            let (title, introduction) = video_fields(&raw, &flags)?;
            Ok(Job::MediaUpload {
                file: PathBuf::from(file),
                ty,
                temporary,
                title,
                introduction,
                api: api()?,
            })
        }
        ["media", "list", ..] => {
            only(2, "wxmp media list --type image|voice|video")?;
            let ty = ty.filter(|t| *t != MediaType::Thumb).ok_or_else(|| {
                UsageError("wxmp media list needs --type image, voice or video".into())
            })?;
            Ok(Job::MediaList { ty, api: api()? })
        }
        ["media", ..] => Err(UsageError(
            "wxmp media needs upload FILE or list --type TYPE (see wxmp media --help)".into(),
        )),
        _ => Err(UsageError("unknown command (see wxmp --help)".into())),
    }
}

/// The switches and `--type`, each refused outside the command it belongs to, checked
/// before the words so a misplaced option is named rather than the command's usage.
struct Flags {
    cancel: bool,
    show: bool,
    fetch: bool,
    temporary: bool,
    ty: Option<MediaType>,
}

impl Flags {
    /// Reads and places every option in one spot, in the order users are told about them.
    fn of(raw: &Args, words: &[&str]) -> Result<Flags, UsageError> {
        let (cancel, show, fetch) = (
            raw.switch("cancel")?,
            raw.switch("show")?,
            raw.switch("fetch")?,
        );
        if cancel && words.get(..2) != Some(&["kf", "typing"]) {
            return Err(UsageError("--cancel belongs to wxmp kf typing".into()));
        }
        if (show || fetch) && words.first() != Some(&"token") {
            return Err(UsageError("--show and --fetch belong to wxmp token".into()));
        }
        let temporary = raw.switch("temporary")?;
        if temporary && words.get(..2) != Some(&["media", "upload"]) {
            return Err(UsageError(
                "--temporary belongs to wxmp media upload".into(),
            ));
        }
        let ty = match raw.get("type") {
            None => None,
            Some(_) if words.first() != Some(&"media") => {
                return Err(UsageError("--type belongs to wxmp media".into()))
            }
            Some(t) => Some(MediaType::parse(t.trim()).ok_or_else(|| {
                UsageError(format!(
                    "invalid --type {t:?}: expected image, voice, video or thumb"
                ))
            })?),
        };
        Ok(Flags {
            cancel,
            show,
            fetch,
            temporary,
            ty,
        })
    }
}

/// `menu check` and `menu push` share their FILE and --rules; only push needs the API,
/// so check works offline.
fn menu_file_job(verb: &str, rest: &[&str], raw: &Args, env: Env<'_>) -> Result<Job, UsageError> {
    let usage = format!("wxmp menu {verb} FILE [--rules RULES]");
    let [file] = rest else {
        return Err(UsageError(format!(
            "menu {verb} needs one FILE; usage: {usage}"
        )));
    };
    let file = PathBuf::from(file);
    let rules = raw.get("rules").map(PathBuf::from);
    if verb == "check" {
        Ok(Job::MenuCheck { file, rules })
    } else {
        Ok(Job::MenuPush {
            file,
            rules,
            api: config::require_api(raw, env)?,
        })
    }
}

/// `wxmp token` needs the API settings only with `--fetch`; without, it just reads the cache.
fn token_job(raw: &Args, env: Env<'_>, flags: &Flags) -> Result<Job, UsageError> {
    let (app_id, api_base, cache) = config::token_cache_of(raw, env)?;
    let fetch = if flags.fetch {
        Some(config::require_api(raw, env)?)
    } else {
        None
    };
    Ok(Job::Token(TokenJob {
        app_id,
        api_base,
        cache,
        fetch,
        show: flags.show,
    }))
}

/// Refuses words past the `n`th, so a stray word is not silently dropped.
fn only_words(words: &[&str], n: usize, usage: &str) -> Result<(), UsageError> {
    match words.get(n) {
        None => Ok(()),
        Some(extra) => Err(UsageError(format!("unexpected {extra:?}; usage: {usage}"))),
    }
}

/// Every kf option given, in order, so [`kf_message`] can refuse those its kind does not take.
fn kf_fields(raw: &Args) -> Vec<(String, String)> {
    KF_FIELDS
        .iter()
        .flat_map(|f| raw.all(f).into_iter().map(|v| (f.to_string(), v)))
        .collect()
}

/// `--title` and `--description` of a media upload: WeChat wants them for a permanent video
/// only, and refuses one without a title (41005), so both are caught here instead.
fn video_fields(raw: &Args, flags: &Flags) -> Result<(Option<String>, Option<String>), UsageError> {
    let permanent_video = flags.ty == Some(MediaType::Video) && !flags.temporary;
    let (title, introduction) = (raw.get("title"), raw.get("description"));
    if (title.is_some() || introduction.is_some()) && !permanent_video {
        return Err(UsageError(
            "--title and --description belong to a permanent video (--type video)".into(),
        ));
    }
    if permanent_video && title.as_deref().is_none_or(|t| t.trim().is_empty()) {
        return Err(UsageError(
            "a permanent video needs --title (WeChat refuses one without, 41005)".into(),
        ));
    }
    Ok((title, introduction))
}

/// The options a kf message kind takes, so the others are refused rather than ignored.
fn kf_allowed(kind: &str) -> &'static [&'static str] {
    match kind {
        "video" => &["title", "description", "thumb-media-id"],
        "music" => &[
            "title",
            "description",
            "music-url",
            "hq-music-url",
            "thumb-media-id",
        ],
        "news" => &["title", "description", "url", "pic-url"],
        "msgmenu" => &["head-content", "tail-content"],
        "miniprogrampage" => &["title", "miniprogram-appid", "pagepath", "thumb-media-id"],
        _ => &[],
    }
}

/// The words and options of one `wxmp kf send`, so each kind's checks name the kind alike.
struct KfInput<'a> {
    kind: &'a str,
    args: &'a [&'a str],
    fields: &'a [(String, String)],
}

impl KfInput<'_> {
    /// The last value of an option: a repeated option overrides, as elsewhere.
    fn field(&self, name: &str) -> Option<String> {
        self.fields
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    /// The single non-blank word a kind such as image or wxcard takes.
    fn one(&self, what: &str) -> Result<String, UsageError> {
        match self.args {
            [a] if !a.trim().is_empty() => Ok(a.to_string()),
            _ => Err(UsageError(format!("{} takes one {what}", self.kind))),
        }
    }

    /// Refuses words for a kind given by options alone, rather than dropping them.
    fn none(&self) -> Result<(), UsageError> {
        match self.args.first() {
            None => Ok(()),
            Some(a) => Err(UsageError(format!(
                "{} takes options, not {a:?}",
                self.kind
            ))),
        }
    }

    /// A required option, named in the error so the user knows what to add.
    fn need(&self, name: &str) -> Result<String, UsageError> {
        self.field(name)
            .ok_or_else(|| UsageError(format!("a {} message needs --{name}", self.kind)))
    }
}

/// The words of a text message, joined: `wxmp kf send o1 text hello world` sends "hello
/// world" without the user having to quote it.
fn text_content(args: &[&str]) -> Result<String, UsageError> {
    let content = args.join(" ");
    if content.trim().is_empty() {
        return Err(UsageError(
            "text needs CONTENT, e.g. wxmp kf send OPENID text 你好".into(),
        ));
    }
    Ok(content)
}

/// msgmenu's ID=CHOICE words, refused one by one so the bad word is quoted.
fn msgmenu_choices(args: &[&str]) -> Result<Vec<(String, String)>, UsageError> {
    args.iter()
        .map(|a| match a.split_once('=') {
            Some((id, c)) if !id.trim().is_empty() && !c.trim().is_empty() => {
                Ok((id.to_owned(), c.to_owned()))
            }
            _ => Err(UsageError(format!(
                "msgmenu takes choices as ID=CHOICE, e.g. 101=满意; got {a:?}"
            ))),
        })
        .collect()
}

/// Builds one kf message from the words and options after its kind, refusing options the
/// kind does not take rather than dropping them.
fn kf_message(
    kind: &str,
    args: &[&str],
    fields: &[(String, String)],
) -> Result<kf::Message, UsageError> {
    let allowed = kf_allowed(kind);
    if let Some((n, _)) = fields.iter().find(|(n, _)| !allowed.contains(&n.as_str())) {
        return Err(UsageError(format!(
            "--{n} does not apply to a {kind} message"
        )));
    }
    let input = KfInput { kind, args, fields };
    let field = |name: &str| input.field(name);
    let one = |what: &str| input.one(what);
    let none = || input.none();
    let need = |name: &str| input.need(name);
    Ok(match kind {
        "text" => kf::Message::Text {
            content: text_content(args)?,
        },
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
                // WeChat's docs mark it required for a customer-service music message.
                thumb_media_id: Some(need("thumb-media-id")?),
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
        "mpnews" => kf::Message::MpNews {
            media_id: one("MEDIA_ID")?,
        },
        "mpnewsarticle" => kf::Message::MpNewsArticle {
            article_id: one("ARTICLE_ID")?,
        },
        "wxcard" => kf::Message::WxCard {
            card_id: one("CARD_ID")?,
        },
        "msgmenu" => {
            let list = msgmenu_choices(args)?;
            if list.is_empty() {
                return Err(UsageError(
                    "msgmenu needs at least one choice, e.g. wxmp kf send OPENID msgmenu 101=满意 102=不满意".into(),
                ));
            }
            kf::Message::MsgMenu {
                head_content: field("head-content").unwrap_or_default(),
                list,
                tail_content: field("tail-content").unwrap_or_default(),
            }
        }
        "miniprogrampage" => {
            none()?;
            kf::Message::MiniProgramPage {
                title: need("title")?,
                appid: need("miniprogram-appid")?,
                pagepath: need("pagepath")?,
                thumb_media_id: need("thumb-media-id")?,
            }
        }
        other => {
            return Err(UsageError(format!(
                "unknown message kind {other:?}: expected {}",
                kf::MSG_TYPES.join(", ")
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(args: &[&str]) -> Args {
        let (first, rest) = args.split_first().unwrap();
        let parser = lexopt::Parser::from_args(rest.iter().map(|s| s.to_string()));
        match usage::parse(parser, &spec(first)).unwrap() {
            usage::Parsed::Args(mut raw) => {
                raw.words.insert(0, first.to_string());
                raw
            }
            usage::Parsed::Help => panic!("help"),
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
        assert!(
            err(&["kf", "send", "o1", "music", "--music-url", "u"]).contains("--thumb-media-id")
        );
        assert!(err(&["kf", "send", "o1", "msgmenu"]).contains("at least one choice"));
        assert!(err(&["kf", "send", "o1", "msgmenu", "x"]).contains("ID=CHOICE"));
        assert!(
            err(&["kf", "send", "o1", "miniprogrampage", "--title", "T"])
                .contains("--miniprogram-appid")
        );
        let kind = |args: &[&str]| match resolve(parsed(args), &env).unwrap() {
            Job::KfSend { message, .. } => message,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            kind(&[
                "kf",
                "send",
                "o1",
                "msgmenu",
                "101=满意",
                "102=不满意",
                "--head-content",
                "H"
            ]),
            kf::Message::MsgMenu {
                head_content: "H".into(),
                list: vec![
                    ("101".into(), "满意".into()),
                    ("102".into(), "不满意".into())
                ],
                tail_content: String::new(),
            }
        );
        assert_eq!(
            kind(&["kf", "send", "o1", "wxcard", "C1"]).msg_type(),
            "wxcard"
        );
        assert_eq!(
            kind(&["kf", "send", "o1", "mpnews", "M1"]).msg_type(),
            "mpnews"
        );
        assert_eq!(
            kind(&["kf", "send", "o1", "mpnewsarticle", "A1"]).msg_type(),
            "mpnewsarticle"
        );
        let page = kind(&[
            "kf",
            "send",
            "o1",
            "miniprogrampage",
            "--title",
            "T",
            "--miniprogram-appid",
            "wxm",
            "--pagepath",
            "p/i",
            "--thumb-media-id",
            "TH",
        ]);
        assert_eq!(page.msg_type(), "miniprogrampage");
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
