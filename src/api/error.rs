//! Why an API call failed, as a sentence that says what to do.
//!
//! WeChat answers almost every failure with HTTP 200 and `{"errcode":N,"errmsg":"..."}`; the
//! numbers are terse and the messages English shorthand, and the same few (a wrong AppSecret, the
//! IP whitelist, an account type without the API) are most of every SDK's support tracker. So
//! each common code becomes a plain sentence naming the flag, the console page or the limit
//! involved, with the code kept in it for searching.

use std::fmt;
use std::net::IpAddr;

use crate::text::redact_url;

pub use crate::net::{NetError, NetErrorKind};

/// Which API a call was for: errors name it, and quotas differ per API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `stable_token` or the classic `token`.
    Token,
    MenuCreate,
    MenuGet,
    MenuDelete,
    CustomSend,
    Typing,
    /// `material/add_material`: a permanent file.
    MaterialAdd,
    /// `media/upload`: a temporary file (3 days).
    MediaUpload,
    /// `material/batchget_material`.
    MaterialList,
}

impl Call {
    /// What the call does, in words.
    pub fn what(self) -> &'static str {
        match self {
            Call::Token => "fetching an access_token",
            Call::MenuCreate => "creating the menu (menu/create)",
            Call::MenuGet => "reading the menu (menu/get)",
            Call::MenuDelete => "deleting the menu (menu/delete)",
            Call::CustomSend => "sending a customer-service message (message/custom/send)",
            Call::Typing => "the typing status (message/custom/typing)",
            Call::MaterialAdd => "uploading a permanent file (material/add_material)",
            Call::MediaUpload => "uploading a temporary file (media/upload)",
            Call::MaterialList => "listing permanent material (material/batchget_material)",
        }
    }

    /// The daily quota WeChat documents for this API (API_Call_Limits), when it documents one.
    fn daily_quota(self) -> Option<&'static str> {
        match self {
            Call::Token => Some("2,000 access_token fetches a day (the test account: 200)"),
            Call::MenuCreate | Call::MenuDelete => {
                Some("1,000 menu changes a day (the test account: 100)")
            }
            Call::MenuGet => Some("10,000 menu reads a day (the test account: 1,000)"),
            Call::CustomSend => {
                Some("500,000 customer-service messages a day (the test account: 50,000)")
            }
            Call::MediaUpload => Some("5,000 uploads a day (the test account: 500)"),
            Call::Typing | Call::MaterialAdd | Call::MaterialList => None,
        }
    }
}

/// Where the AppID and AppSecret are shown, for the sentences that send the user there.
const CREDENTIALS_PAGE: &str = "mp.weixin.qq.com → 设置与开发 → 基本配置 (the test account's page shows appID and appsecret at the top)";
/// Where the API IP whitelist is edited.
const WHITELIST_PAGE: &str = "mp.weixin.qq.com → 设置与开发 → 基本配置 → IP白名单";

/// An API call that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// WeChat answered, with a non-zero `errcode`.
    WeChat {
        call: Call,
        errcode: i64,
        errmsg: String,
    },
    /// No answer: the connection, TLS or the time limit failed. `url` has no query string (the
    /// query can carry the AppSecret or the access_token).
    Network {
        call: Call,
        url: String,
        cause: NetError,
    },
    /// An answer that is not WeChat's: a non-200 status (a proxy, a wrong `--api-base`), a body
    /// that is not JSON, or a token answer without a token.
    BadResponse {
        call: Call,
        url: String,
        problem: String,
    },
}

impl ApiError {
    /// WeChat's errcode, when WeChat answered with one.
    pub fn errcode(&self) -> Option<i64> {
        match self {
            ApiError::WeChat { errcode, .. } => Some(*errcode),
            _ => None,
        }
    }

    /// Which API the failed call was for.
    pub fn call(&self) -> Call {
        match self {
            ApiError::WeChat { call, .. }
            | ApiError::Network { call, .. }
            | ApiError::BadResponse { call, .. } => *call,
        }
    }
}

/// The codes that mean "this access_token is no good": fetch a fresh one and retry once.
pub fn is_token_rejection(errcode: i64) -> bool {
    matches!(errcode, 40001 | 40014 | 42001)
}

/// The IP address WeChat names in an errmsg such as
/// `invalid ip 203.0.113.7 ipv6 ::ffff:203.0.113.7, not in whitelist rid: ...`.
pub fn ip_in(errmsg: &str) -> Option<IpAddr> {
    errmsg
        .split(|c: char| c.is_whitespace() || c == ',' || c == ';')
        .find_map(|w| w.parse::<IpAddr>().ok())
}

/// The request id WeChat appends to errmsg (`rid: 6650...`), which its diagnosis tool takes.
fn rid_in(errmsg: &str) -> Option<&str> {
    let at = errmsg.find("rid:")?;
    errmsg[at + 4..].split_whitespace().next()
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::WeChat {
                call,
                errcode,
                errmsg,
            } => {
                sentence(f, *call, *errcode, errmsg)?;
                if let Some(rid) = rid_in(errmsg) {
                    write!(f, " [rid {rid}]")?;
                }
                Ok(())
            }
            ApiError::Network { call, url, cause } => write!(
                f,
                "cannot reach the WeChat API at {} ({}): {cause}; check the network and --api-base / WXMP_API_BASE",
                redact_url(url),
                call.what()
            ),
            ApiError::BadResponse { call, url, problem } => write!(
                f,
                "{} did not answer like the WeChat API ({}): {problem}; check --api-base / WXMP_API_BASE (a proxy must pass WeChat's JSON through)",
                redact_url(url),
                call.what()
            ),
        }
    }
}

impl std::error::Error for ApiError {}

/// The sentence for one errcode. Every arm keeps the code in the text.
fn sentence(f: &mut fmt::Formatter<'_>, call: Call, code: i64, errmsg: &str) -> fmt::Result {
    let ip = ip_in(errmsg).map_or_else(|| "of this machine".to_owned(), |ip| ip.to_string());
    match code {
        40001 | 40014 | 42001 => {
            let why = match code {
                40001 => "is not valid or not the latest",
                40014 => "is not valid",
                _ => "has expired",
            };
            if call == Call::Token {
                write!(
                    f,
                    "WeChat refused the AppID and AppSecret (errcode {code}): check --secret / WXMP_SECRET against {CREDENTIALS_PAGE}"
                )
            } else {
                write!(
                    f,
                    "WeChat says the access_token {why} (errcode {code}), and refused a freshly fetched one too: was the AppSecret reset (check --secret / WXMP_SECRET), or does another program force new tokens for this AppID?"
                )
            }
        }
        40013 => write!(
            f,
            "WeChat does not know this AppID (errcode 40013): check --appid / WXMP_APPID against {CREDENTIALS_PAGE}"
        ),
        40125 => write!(
            f,
            "the AppSecret is wrong (errcode 40125): check --secret / WXMP_SECRET against {CREDENTIALS_PAGE}; after a reset (重置) only the new one works"
        ),
        40243 => write!(
            f,
            "the AppSecret is frozen (errcode 40243): unfreeze it where it is managed, {CREDENTIALS_PAGE}"
        ),
        40164 | 61004 => write!(
            f,
            "the IP {ip} is not on the account's IP whitelist (errcode {code}): add it under {WHITELIST_PAGE} (the test account has no whitelist)"
        ),
        89503 => write!(
            f,
            "an administrator must confirm calls from the IP {ip} (errcode 89503): confirm the request WeChat sent to the account's admin, or add the IP under {WHITELIST_PAGE}, then try again"
        ),
        45009 => {
            write!(
                f,
                "the daily quota for {} is used up (errcode 45009)",
                call.what()
            )?;
            if let Some(q) = call.daily_quota() {
                write!(f, ": WeChat allows {q}")?;
            }
            f.write_str("; it resets the next day, and a verified account can reset it early with the clear_quota API (10 times a month)")
        }
        45011 => write!(
            f,
            "the per-minute quota for {} is used up (errcode 45011): slow down and try again in a minute",
            call.what()
        ),
        48001 => write!(
            f,
            "this account type lacks the API for {} (errcode 48001): personal and unverified subscription accounts (订阅号) do not have it; the test account (测试号) does, so develop there, or verify the account",
            call.what()
        ),
        45015 => f.write_str(
            "the user is outside the 48-hour window (errcode 45015): customer-service messages may only be sent within 48 hours of the user's last message to the account (and never after they unsubscribed); wait for them to write again",
        ),
        45047 => f.write_str(
            "the customer-service quota for this user is used up (errcode 45047): WeChat allows only a few messages per interaction (5 in the 48 hours after a user's message); wait for the user to write again",
        ),
        46003 => f.write_str(
            "this account has no custom menu set through the API (errcode 46003): push one with wxmp menu push FILE",
        ),
        40003 => f.write_str(
            "WeChat does not know this OpenID (errcode 40003): an OpenID belongs to one account; take it from a push to this account (its FromUserName)",
        ),
        43004 => f.write_str(
            "the user does not follow the account (errcode 43004): messages can only go to followers",
        ),
        45002 | 45008 => write!(
            f,
            "the message is over WeChat's limits (errcode {code}: {errmsg}): shorten it (a customer-service news message carries one article)"
        ),
        40004 | 40005 | 40006 | 41005 | 44001 | 45001 | 40009..=40012 => write!(
            f,
            "WeChat refused the file (errcode {code}: {errmsg}): a picture must be jpg, png, gif or bmp of at most 2 MB, a voice mp3, amr, wav or wma of at most 2 MB and 60 s, a video mp4 of at most 10 MB, a thumb jpg of at most 64 KB"
        ),
        -1 => f.write_str("WeChat is busy (errcode -1): try again in a few seconds"),
        _ => write!(
            f,
            "WeChat refused {} (errcode {code}: {errmsg})",
            call.what()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(call: Call, errcode: i64, errmsg: &str) -> String {
        ApiError::WeChat {
            call,
            errcode,
            errmsg: errmsg.to_owned(),
        }
        .to_string()
    }

    #[test]
    fn every_documented_errcode_has_a_sentence_that_keeps_the_code() {
        let cases: &[(Call, i64, &str, &[&str])] = &[
            (Call::Token, 40013, "invalid appid", &["AppID", "--appid", "WXMP_APPID", "基本配置"]),
            (Call::Token, 40125, "invalid appsecret", &["AppSecret is wrong", "--secret", "WXMP_SECRET"]),
            (
                Call::Token,
                40164,
                "invalid ip 203.0.113.7 ipv6 ::ffff:203.0.113.7, not in whitelist rid: 6650a1b2-1c2d3e4f-5a6b7c8d",
                &["203.0.113.7", "IP白名单", "whitelist"],
            ),
            (Call::Token, 61004, "access clientip 198.51.100.9 is not registered", &["198.51.100.9", "IP白名单"]),
            (Call::Token, 45009, "reach max api daily quota limit", &["daily quota", "fetching an access_token", "200"]),
            (Call::CustomSend, 45009, "reach max api daily quota limit", &["daily quota", "customer-service", "50,000"]),
            (Call::MenuCreate, 45011, "api minute-quota reach limit", &["per-minute quota", "menu"]),
            (Call::CustomSend, 48001, "api unauthorized", &["personal and unverified subscription accounts", "test account (测试号) does"]),
            (Call::CustomSend, 45015, "response out of time limit", &["48-hour window"]),
            (Call::CustomSend, 45047, "out of response count limit", &["customer-service quota", "used up"]),
            (Call::MenuCreate, 89503, "此次调用需要管理员确认 invalid ip 192.0.2.1", &["administrator must confirm", "192.0.2.1"]),
            (Call::CustomSend, 40001, "invalid credential", &["refused a freshly fetched one", "--secret"]),
            (Call::MenuGet, 46003, "menu no exist", &["no custom menu", "wxmp menu push"]),
            (Call::MenuGet, 99999, "something new", &["WeChat refused reading the menu", "something new"]),
        ];
        for (call, code, errmsg, needles) in cases {
            let text = said(*call, *code, errmsg);
            assert!(text.contains(&format!("errcode {code}")), "{text}");
            for n in *needles {
                assert!(text.contains(n), "{code}: {text:?} lacks {n:?}");
            }
        }
    }

    #[test]
    fn the_rid_is_kept_for_wechats_diagnosis_tool() {
        let text = said(
            Call::Token,
            40164,
            "invalid ip 1.2.3.4, not in whitelist rid: abc-123",
        );
        assert!(text.ends_with("[rid abc-123]"), "{text}");
    }

    #[test]
    fn the_ip_is_read_from_either_errmsg_shape() {
        assert_eq!(
            ip_in("invalid ip 203.0.113.7 ipv6 ::ffff:203.0.113.7, not in whitelist"),
            "203.0.113.7".parse().ok()
        );
        assert_eq!(
            ip_in("invalid ip ::1, not in whitelist"),
            "::1".parse().ok()
        );
        assert_eq!(ip_in("no address here"), None);
        assert!(said(Call::Token, 40164, "not in whitelist").contains("the IP of this machine"));
    }

    #[test]
    fn only_token_rejections_are_retried() {
        for code in [40001, 40014, 42001] {
            assert!(is_token_rejection(code));
        }
        for code in [
            0, -1, 40013, 40125, 40164, 45009, 45011, 48001, 45015, 45047, 89503,
        ] {
            assert!(!is_token_rejection(code), "{code}");
        }
    }

    #[test]
    fn network_errors_name_the_url_but_never_a_query() {
        let e = ApiError::Network {
            call: Call::Token,
            url: "https://api.weixin.qq.com/cgi-bin/token".into(),
            cause: NetError {
                kind: NetErrorKind::Timeout,
                detail: String::new(),
            },
        };
        let text = e.to_string();
        assert!(
            text.contains("no answer in time") && text.contains("--api-base"),
            "{text}"
        );
        assert_eq!(e.errcode(), None);
    }
}
