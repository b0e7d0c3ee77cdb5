//! The access log: one record per request on the public port, successes included, rendered as
//! text or JSON by [`Log`], and the same request counted in the [`Metrics`].
//!
//! `routes` builds one [`Access`] per request from the status, the duration and (for a push)
//! the pipeline's [`Outcome`]. A record holds the method, the path without its query, the
//! status, the rejection reason, and for a push the mode, MsgType/Event/EventKey, the user, the
//! rule, the reply type and how it was answered. Never the token, the keys or message content:
//! the outcome's content sample is taken out before the record is built. OpenIDs are personal
//! data, so a user is shown as a prefix and a short hash ([`user_label`]) unless
//! `--log-openid` asks for the full OpenID.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::time::Duration;

use crate::log::{Field, Format, Level, Log};
use crate::protocol::envelope::Mode;
use crate::server::metrics::{event_label, msg_type_label, Metrics};
use crate::server::pipeline::{Answered, Decided, Outcome};
use crate::server::sample::quoted;

/// What the access log shows is configuration (`--quiet`, `--log-openid`).
pub use crate::config::AccessOptions;

/// One request, as the access log and the metrics see it.
#[derive(Debug, Clone, Copy)]
pub struct Access<'a> {
    /// Printable: control characters already escaped by `routes`.
    pub method: &'a str,
    /// Without the query (it holds signatures: noise, not secrets).
    pub path: &'a str,
    pub status: u16,
    /// Why the request was refused.
    pub reason: Option<&'a str>,
    /// For a push, from arrival to answer (the outcome's); else the time in the handler.
    pub duration: Duration,
    /// A passed URL check (the console's GET handshake).
    pub url_check: bool,
    /// What the pipeline recorded, for a push.
    pub outcome: Option<&'a Outcome>,
    /// The push's user as the log shows it ([`user_label`]), computed once for the log and the
    /// live view.
    pub user: Option<&'a str>,
}

/// Characters of an OpenID shown before the hash: enough to recognise the account's style,
/// too few to name anyone.
const PREFIX_CHARS: usize = 4;

/// A short, stable, non-reversible name for a user: `o_wx…(3f2a9c)`, the OpenID's first
/// characters and 6 hex digits of SHA-1 over a fixed prefix and the OpenID. The same OpenID
/// gives the same label across lines and restarts, so one user can be followed; with `full`,
/// the OpenID itself (escaped, cut to 64 characters).
pub fn user_label(openid: &str, full: bool) -> String {
    if full {
        let cut: String = openid.chars().take(64).collect();
        return cut.escape_debug().to_string();
    }
    let shown = PREFIX_CHARS.min(openid.chars().count() / 2);
    let prefix: String = openid.chars().take(shown).collect();
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

/// `rule 2 (line 6)` or `default`.
pub fn decided_text(d: Decided) -> String {
    match d {
        Decided::Rule { index, line } => format!("rule {index} (line {line})"),
        Decided::Default => "default".into(),
    }
}

/// A name from a push (MsgType, Event) as one word: as it is when it is a plain identifier,
/// as every name WeChat sends is; quoted, escaped and cut otherwise.
pub fn word(s: &str) -> Cow<'_, str> {
    let plain =
        !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if plain {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(quoted(s))
    }
}

/// Appends `text`, or `event CLICK`, and with `key` the EventKey: `event CLICK key "V1001"`.
pub fn write_kind(out: &mut String, o: &Outcome, key: bool) {
    match (&o.event, &o.msg_type) {
        (Some(e), _) => {
            out.push_str("event ");
            out.push_str(&word(e));
            if let Some(k) = o.event_key.as_deref().filter(|_| key) {
                out.push_str(" key ");
                out.push_str(&quoted(k));
            }
        }
        (None, Some(t)) => out.push_str(&word(t)),
        (None, None) => out.push_str("push"),
    }
}

impl Access<'_> {
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
            return;
        }
        let fields = self.fields();
        let borrowed: Vec<(&str, Field<'_>)> = fields
            .iter()
            .map(|(k, v)| {
                (
                    *k,
                    match v {
                        Value::Str(s) => Field::Str(s),
                        Value::Int(n) => Field::Int(*n),
                        Value::Millis(ms) => Field::Millis(*ms),
                    },
                )
            })
            .collect();
        log.record(self.level(), "", &borrowed);
    }

    fn millis(&self) -> f64 {
        self.duration.as_secs_f64() * 1000.0
    }

    /// The text form: today's `METHOD PATH STATUS reason 0.123ms` for a refusal; for a push,
    /// `POST /weixin 200 plain text from o_wx…(3f2a9c) → rule 1 (line 2): text, fresh 0.412ms`.
    pub fn text(&self) -> String {
        // One buffer, no intermediate strings: this runs for every request.
        let mut out = String::with_capacity(128);
        let _ = write!(out, "{} {} {}", self.method, self.path, self.status);
        if let Some(reason) = self.reason {
            out.push(' ');
            out.push_str(reason);
        } else if let Some(o) = self.outcome {
            out.push(' ');
            out.push_str(o.mode.map_or("?", Mode::as_str));
            out.push(' ');
            write_kind(&mut out, o, true);
            if let Some(u) = self.user {
                out.push_str(" from ");
                out.push_str(u);
            }
            out.push_str(" → ");
            match o.answered {
                Some(Answered::Fresh) => {
                    out.push_str(&o.decided.map_or("?".into(), decided_text));
                    out.push_str(": ");
                    let forwarded = o.forward.map(|_| "forwarded");
                    out.push_str(o.reply.or(forwarded).unwrap_or("?"));
                    out.push_str(", fresh");
                }
                Some(Answered::Cached) => out.push_str("the cached answer (a retry)"),
                Some(Answered::Joined) => {
                    out.push_str("the answer of the attempt in flight (a retry)")
                }
                None => out.push('?'),
            }
            if let Some(f) = o.forward {
                let _ = write!(
                    out,
                    "; forward attempt {} of {}: {}",
                    f.number,
                    crate::server::forward::timing::ATTEMPTS,
                    f.delivered.as_str()
                );
            }
        } else if self.url_check {
            out.push_str(" URL check passed, echostr sent back");
        }
        let _ = write!(out, " {:.3}ms", self.millis());
        out
    }

    /// The JSON fields, after `time` and `level`.
    fn fields(&self) -> Vec<(&'static str, Value)> {
        let mut f = vec![
            ("kind", Value::Str("access".into())),
            ("method", Value::Str(self.method.into())),
            ("path", Value::Str(self.path.into())),
            ("status", Value::Int(self.status.into())),
            ("duration_ms", Value::Millis(self.millis())),
        ];
        if let Some(reason) = self.reason {
            f.push(("reason", Value::Str(reason.into())));
        }
        if self.url_check {
            f.push(("url_check", Value::Str("passed".into())));
        }
        let Some(o) = self.outcome else {
            return f;
        };
        let mut put = |k: &'static str, v: Option<String>| {
            if let Some(v) = v {
                f.push((k, Value::Str(v)));
            }
        };
        put("mode", o.mode.map(|m| m.as_str().into()));
        put("msg_type", o.msg_type.clone());
        put("event", o.event.clone());
        put(
            "event_key",
            o.event_key.as_ref().map(|k| k.chars().take(128).collect()),
        );
        put("user", self.user.map(str::to_owned));
        match o.decided {
            Some(Decided::Rule { index, line }) => {
                f.push(("decided", Value::Str("rule".into())));
                f.push(("rule", Value::Int(index as u64)));
                f.push(("rule_line", Value::Int(line as u64)));
            }
            Some(Decided::Default) => f.push(("decided", Value::Str("default".into()))),
            None => {}
        }
        if let Some(r) = o.reply {
            f.push(("reply", Value::Str(r.into())));
        }
        if let Some(a) = o.answered {
            f.push(("answered", Value::Str(a.as_str().into())));
        }
        if let Some(fw) = o.forward {
            f.push(("forward_attempt", Value::Int(fw.number.into())));
            f.push(("forward", Value::Str(fw.delivered.as_str().into())));
        }
        f
    }

    /// Counts the request: by status class and mode; a push by name; an answered push's
    /// duration and how it was answered.
    pub fn count(&self, metrics: &Metrics) {
        let class = match self.status / 100 {
            1 => "1xx",
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            _ => "5xx",
        };
        let mode = self
            .outcome
            .and_then(|o| o.mode)
            .map_or("none", Mode::as_str);
        metrics.requests.with(&[class, mode]).inc();
        let Some(o) = self.outcome else {
            return;
        };
        if let Some(t) = &o.msg_type {
            let event = o.event.as_deref().map_or("", event_label);
            metrics.pushes.with(&[msg_type_label(t), event]).inc();
        }
        if self.status == 200 {
            metrics.push_duration.observe(self.duration);
            if let Some(a) = o.answered {
                metrics.answers.with(&[a.as_str()]).inc();
            }
        }
    }
}

/// An owned JSON value, borrowed into a [`Field`] when written.
enum Value {
    Str(String),
    Int(u64),
    Millis(f64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_is_a_prefix_and_a_stable_hash() {
        let a = user_label("oAbcdefghijklmnopqrstuvwxyz1", false);
        assert!(a.starts_with("oAbc…(") && a.ends_with(')'), "{a}");
        assert_eq!(a.chars().count(), 4 + 1 + 8);
        assert!(!a.contains("defgh"));
        assert_eq!(a, user_label("oAbcdefghijklmnopqrstuvwxyz1", false));
        assert_ne!(a, user_label("oAbcdefghijklmnopqrstuvwxyz2", false));
        // The hash is fixed across versions and restarts (documented in the README).
        assert_eq!(openid_hash("o_wxmp_send"), openid_hash("o_wxmp_send"));
        assert_eq!(openid_hash("o_wxmp_send").len(), 6);
        // Short ids show at most half of themselves.
        assert_eq!(user_label("ab", false).chars().next(), Some('a'));
        assert!(user_label("", false).starts_with("…("));
        assert_eq!(user_label("oAbc", true), "oAbc");
        assert_eq!(user_label("o\n", true), "o\\n");
    }

    #[test]
    fn requests_are_counted_by_class_and_mode() {
        let m = Metrics::new();
        let o = Outcome {
            mode: Some(Mode::Safe),
            msg_type: Some("event".into()),
            event: Some("somethingNew".into()),
            answered: Some(Answered::Cached),
            ..Outcome::default()
        };
        let push = Access {
            method: "POST",
            path: "/weixin",
            status: 200,
            reason: None,
            duration: Duration::from_millis(2),
            url_check: false,
            outcome: Some(&o),
            user: None,
        };
        push.count(&m);
        Access {
            status: 404,
            outcome: None,
            ..push
        }
        .count(&m);
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
