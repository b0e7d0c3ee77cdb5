//! The access log: one record per request on the public port, successes included, and its
//! renderings: the text line and the JSON object of the [`Log`], the metrics (a [`Series`]), and the
//! live view's line (`recent::line`), all over the same phrases, written here once.
//!
//! `routes` builds one [`Record`] per request from the status, the duration, what the request
//! was ([`What`]: a push with the pipeline's [`Outcome`], a passed URL check, or another) and
//! the user's label. A record holds the method, the path without its query, the status, the
//! rejection reason, and for a push the mode, MsgType/Event/EventKey, the user, the rule, the
//! reply type and how it was answered. Never the token, the keys or message content: the
//! outcome's content sample is taken out before the record is built. OpenIDs are personal
//! data, so a user is shown as a prefix and a short hash ([`user_label`]) unless
//! `--log-openid` asks for the full OpenID.

use std::fmt::Write as _;
use std::time::Duration;

use crate::log::{Field, Format, Level, Log};
use crate::protocol::envelope::Mode;
use crate::server::forward::timing::ATTEMPTS;
use crate::server::metrics::Series;
use crate::server::pipeline::{Answered, Decided, Outcome, PushKind};
use crate::server::sample::quoted;

/// What the access log shows is configuration (`--quiet`, `--log-openid`).
pub use crate::config::AccessOptions;

/// What a request was, as `routes` saw it.
#[derive(Debug, Clone, Copy)]
pub enum What<'a> {
    /// A push (answered or refused), and what the pipeline recorded.
    Push(&'a Outcome),
    /// A passed URL check (the console's GET handshake).
    UrlCheck,
    /// Anything else: `/healthz`, a wrong path, a refused URL check.
    Other,
}

/// One request, as every rendering sees it.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Printable: control characters already escaped by `routes`.
    pub method: &'a str,
    /// Without the query (it holds signatures: noise, not secrets).
    pub path: &'a str,
    pub status: u16,
    /// Why the request was refused.
    pub reason: Option<&'a str>,
    /// For a push, from arrival to answer (the outcome's); else the time in the handler.
    pub duration: Duration,
    pub what: What<'a>,
    /// The push's user as the log shows it ([`user_label`]), computed once for the log and the
    /// live view.
    pub user: Option<&'a str>,
    /// The account whose path the request named, with an accounts file (`None` with one
    /// account, and for paths no account has).
    pub account: Option<&'a str>,
}

/// How a user is shown: a prefix and a hash, or (`--log-openid`) the whole OpenID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    Hashed,
    Full,
}

/// Whether a push's EventKey is written beside its Event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKey {
    Shown,
    /// The live view shows it with the sample instead.
    Hidden,
}

/// What a passed URL check says, in every rendering.
pub const URL_CHECK_PASSED: &str = "URL check passed, echostr sent back";

/// Characters of an OpenID shown before the hash: enough to recognise the account's style,
/// too few to name anyone.
const PREFIX_CHARS: usize = 4;

/// Characters of an EventKey kept in a JSON record.
const EVENT_KEY_CHARS: usize = 128;

/// A short, stable, non-reversible name for a user: `o_wx…(3f2a9c)`, the OpenID's first
/// characters and 6 hex digits of SHA-1 over a fixed prefix and the OpenID. The same OpenID
/// gives the same label across lines and restarts, so one user can be followed; shown
/// [`Shown::Full`], the OpenID itself (escaped, cut to 64 characters).
pub fn user_label(openid: &str, shown: Shown) -> String {
    if shown == Shown::Full {
        let cut: String = openid.chars().take(64).collect();
        return cut.escape_debug().to_string();
    }
    let prefix_len = PREFIX_CHARS.min(openid.chars().count() / 2);
    let prefix: String = openid.chars().take(prefix_len).collect();
    format!("{}…({})", prefix.escape_debug(), openid_hash(openid))
}

/// 6 hex digits of SHA-1 over `wxmp-openid\0` and the OpenID.
pub fn openid_hash(openid: &str) -> String {
    let mut h = sha1_smol::Sha1::new();
    h.update(b"wxmp-openid\0");
    h.update(openid.as_bytes());
    let digest = h.digest().bytes();
    hex::encode(digest.get(..3).unwrap_or_default())
}

/// Appends `rule 2 (line 6)` or `default`.
fn write_decided(out: &mut String, d: Option<Decided>) {
    match d {
        Some(Decided::Rule { index, line }) => {
            let _ = write!(out, "rule {index} (line {line})");
        }
        Some(Decided::Default) => out.push_str("default"),
        None => out.push('?'),
    }
}

/// Appends a name from a push (MsgType, Event) as one word: as it is when it is a plain
/// identifier, as every name WeChat sends is; quoted, escaped and cut otherwise.
fn write_word(out: &mut String, s: &str) {
    let plain =
        !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if plain {
        out.push_str(s);
    } else {
        out.push_str(&quoted(s));
    }
}

/// Appends `text`, or `event CLICK`, and with the key shown the EventKey:
/// `event CLICK key "V1001"`.
pub fn write_kind(out: &mut String, push: Option<&PushKind>, key: EventKey) {
    let Some(p) = push else {
        out.push_str("push");
        return;
    };
    let Some(event) = p.event() else {
        write_word(out, p.msg_type());
        return;
    };
    out.push_str("event ");
    write_word(out, event);
    if let Some(k) = p.event_key.as_deref().filter(|_| key == EventKey::Shown) {
        out.push_str(" key ");
        out.push_str(&quoted(k));
    }
}

/// Appends how a push was answered: `rule 1 (line 2): <reply>` when decided now (`reply`
/// says what was answered, in the rendering's words), or which earlier attempt answered it.
pub fn write_answer(out: &mut String, o: &Outcome, reply: Option<&str>) {
    match o.answered {
        Some(Answered::Fresh) => {
            write_decided(out, o.decided);
            out.push_str(": ");
            out.push_str(reply.unwrap_or("?"));
        }
        Some(Answered::Cached) => out.push_str("the cached answer (a retry)"),
        Some(Answered::Joined) => out.push_str("the answer of the attempt in flight (a retry)"),
        None => out.push('?'),
    }
}

/// "reply to text (rule 2, line 6)": which push and which rule a reply warning is about.
pub fn reply_context(o: &Outcome) -> String {
    let what = o
        .push
        .as_ref()
        .map_or("?", |p| p.event().unwrap_or(p.msg_type()));
    match o.decided {
        Some(Decided::Rule { index, line }) => {
            format!("reply to {what} (rule {index}, line {line})")
        }
        Some(Decided::Default) => format!("reply to {what} (the default)"),
        None => format!("reply to {what}"),
    }
}

impl<'a> Record<'a> {
    /// The pipeline's record, for a push.
    pub fn outcome(&self) -> Option<&'a Outcome> {
        match self.what {
            What::Push(o) => Some(o),
            What::UrlCheck | What::Other => None,
        }
    }

    /// Rejections are warnings, server failures errors, the rest information.
    pub fn level(&self) -> Level {
        match self.status {
            500.. => Level::Error,
            400..=499 => Level::Warn,
            _ => Level::Info,
        }
    }

    /// Writes the record, unless `quiet` and the request was not refused.
    pub fn log(&self, log: &Log, opts: AccessOptions) {
        if opts.quiet && self.status < 400 {
            return;
        }
        if log.format() == Format::Text {
            log.record(self.level(), &self.text(), &[]);
        } else {
            log.record(self.level(), "", &self.fields());
        }
    }

    pub fn millis(&self) -> f64 {
        self.duration.as_secs_f64() * 1000.0
    }

    /// The text form: today's `METHOD PATH STATUS reason 0.123ms` for a refusal; for a push,
    /// `POST /weixin 200 plain text from o_wx…(3f2a9c) → rule 1 (line 2): text, fresh 0.412ms`.
    pub fn text(&self) -> String {
        // One buffer, no intermediate strings: this runs for every request.
        let mut out = String::with_capacity(128);
        if let Some(a) = self.account {
            let _ = write!(out, "[{a}] ");
        }
        let _ = write!(out, "{} {} {}", self.method, self.path, self.status);
        match (self.reason, self.what) {
            (Some(reason), _) => {
                out.push(' ');
                out.push_str(reason);
            }
            (None, What::Push(o)) => self.write_push(&mut out, o),
            (None, What::UrlCheck) => {
                out.push(' ');
                out.push_str(URL_CHECK_PASSED);
            }
            (None, What::Other) => {}
        }
        let _ = write!(out, " {:.3}ms", self.millis());
        out
    }

    fn write_push(&self, out: &mut String, o: &Outcome) {
        out.push(' ');
        out.push_str(o.mode.map_or("?", Mode::as_str));
        out.push(' ');
        write_kind(out, o.push.as_ref(), EventKey::Shown);
        if let Some(u) = self.user {
            out.push_str(" from ");
            out.push_str(u);
        }
        out.push_str(" → ");
        let forwarded = o.forward.map(|_| "forwarded");
        write_answer(out, o, o.reply.or(forwarded));
        if o.answered == Some(Answered::Fresh) {
            out.push_str(", fresh");
        }
        if let Some(f) = o.forward {
            let _ = write!(
                out,
                "; forward attempt {} of {ATTEMPTS}: {}",
                f.number,
                f.delivered.as_str()
            );
        }
    }

    /// The JSON fields, after `time` and `level`.
    fn fields(&self) -> Vec<(&'static str, Field<'a>)> {
        let mut f = vec![("kind", Field::Str("access"))];
        if let Some(a) = self.account {
            f.push(("account", Field::Str(a)));
        }
        f.extend([
            ("method", Field::Str(self.method)),
            ("path", Field::Str(self.path)),
            ("status", Field::Int(self.status.into())),
            ("duration_ms", Field::Millis(self.millis())),
        ]);
        if let Some(reason) = self.reason {
            f.push(("reason", Field::Str(reason)));
        }
        let o = match self.what {
            What::Push(o) => o,
            What::UrlCheck => {
                f.push(("url_check", Field::Str("passed")));
                return f;
            }
            What::Other => return f,
        };
        if let Some(m) = o.mode {
            f.push(("mode", Field::Str(m.as_str())));
        }
        if let Some(p) = &o.push {
            f.push(("msg_type", Field::Str(p.msg_type())));
            if let Some(e) = p.event() {
                f.push(("event", Field::Str(e)));
            }
            if let Some(k) = &p.event_key {
                let cut = k
                    .char_indices()
                    .nth(EVENT_KEY_CHARS)
                    .map_or(k.len(), |(i, _)| i);
                f.push(("event_key", Field::Str(k.get(..cut).unwrap_or(k))));
            }
        }
        if let Some(u) = self.user {
            f.push(("user", Field::Str(u)));
        }
        match o.decided {
            Some(Decided::Rule { index, line }) => {
                f.push(("decided", Field::Str("rule")));
                f.push(("rule", Field::Int(index as u64)));
                f.push(("rule_line", Field::Int(line as u64)));
            }
            Some(Decided::Default) => f.push(("decided", Field::Str("default"))),
            None => {}
        }
        if let Some(r) = o.reply {
            f.push(("reply", Field::Str(r)));
        }
        if let Some(a) = o.answered {
            f.push(("answered", Field::Str(a.as_str())));
        }
        if let Some(fw) = o.forward {
            f.push(("forward_attempt", Field::Int(fw.number.into())));
            f.push(("forward", Field::Str(fw.delivered.as_str())));
        }
        f
    }

    /// Counts the request in its account's `series`: by status class and mode; a push by
    /// name; an answered push's duration and how it was answered.
    pub fn count(&self, series: &Series) {
        let o = self.outcome();
        series.request(self.status, o.and_then(|o| o.mode));
        let Some(o) = o else {
            return;
        };
        if let Some(p) = &o.push {
            series.push(p);
        }
        if self.status == 200 {
            series.push_duration.observe(self.duration);
            if let Some(a) = o.answered {
                series.answered(a);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_is_a_prefix_and_a_stable_hash() {
        let a = user_label("oAbcdefghijklmnopqrstuvwxyz1", Shown::Hashed);
        assert!(a.starts_with("oAbc…(") && a.ends_with(')'), "{a}");
        assert_eq!(a.chars().count(), 4 + 1 + 8);
        assert!(!a.contains("defgh"));
        assert_eq!(a, user_label("oAbcdefghijklmnopqrstuvwxyz1", Shown::Hashed));
        assert_ne!(a, user_label("oAbcdefghijklmnopqrstuvwxyz2", Shown::Hashed));
        // The hash is fixed across versions and restarts: the README's samples show `wxmp send`'s
        // OpenID as `o_wx…(771ff5)`.
        assert_eq!(openid_hash("o_wxmp_send"), "771ff5");
        assert_eq!(user_label("o_wxmp_send", Shown::Hashed), "o_wx…(771ff5)");
        // Short ids show at most half of themselves.
        assert_eq!(user_label("ab", Shown::Hashed).chars().next(), Some('a'));
        assert!(user_label("", Shown::Hashed).starts_with("…("));
        assert_eq!(user_label("oAbc", Shown::Full), "oAbc");
        assert_eq!(user_label("o\n", Shown::Full), "o\\n");
    }

    #[test]
    fn requests_are_counted_by_class_and_mode() {
        let m = crate::server::metrics::Metrics::new();
        let o = Outcome {
            mode: Some(Mode::Safe),
            push: Some(PushKind::of(
                &crate::protocol::message::Message::parse(
                    "<xml><MsgType>event</MsgType><Event>somethingNew</Event></xml>",
                )
                .unwrap(),
            )),
            answered: Some(Answered::Cached),
            ..Outcome::default()
        };
        let push = Record {
            method: "POST",
            path: "/weixin",
            status: 200,
            reason: None,
            duration: Duration::from_millis(2),
            what: What::Push(&o),
            user: None,
            account: None,
        };
        push.count(m.unlabelled());
        Record {
            status: 404,
            what: What::Other,
            ..push
        }
        .count(m.unlabelled());
        let text = m.render();
        for line in [
            "wxmp_http_requests_total{class=\"2xx\",mode=\"safe\"} 1\n",
            "wxmp_http_requests_total{class=\"4xx\",mode=\"none\"} 1\n",
            "wxmp_pushes_total{msg_type=\"event\",event=\"other\"} 1\n",
            "wxmp_answers_total{answered=\"cached\"} 1\n",
            "wxmp_push_duration_seconds_bucket{le=\"0.0025\"} 1\n",
            "wxmp_push_duration_seconds_count 1\n",
        ] {
            assert!(text.contains(line), "{line}in\n{text}");
        }
    }
}
