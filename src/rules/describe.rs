//! One line per rule, for `wxmp check-rules`.

use std::fmt;

use crate::text::redact_url;

use super::{Action, KeyMatch, Matcher, ReplySpec, Rule, Target};

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {} → {}", self.line, self.matcher, self.action)
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Matcher::Text(t) => write!(f, "text is {t:?}"),
            Matcher::Contains(t) => write!(f, "text contains {t:?}"),
            Matcher::Regex(r) => write!(f, "text matches /{}/", r.as_str()),
            Matcher::MsgType(t) => write!(f, "MsgType is {t}"),
            Matcher::Event { name, key: None } => write!(f, "event {name}"),
            Matcher::Event {
                name,
                key: Some(KeyMatch::Exact(k)),
            } => write!(f, "event {name} with EventKey {k:?}"),
            Matcher::Event {
                name,
                key: Some(KeyMatch::Regex(r)),
            } => write!(f, "event {name} with EventKey matching /{}/", r.as_str()),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Echo => f.write_str("echo the text (success for anything else)"),
            Action::Success => f.write_str("success"),
            Action::Forward { target, fallback } => {
                match target {
                    Target::Http { url } => write!(f, "forward to {}", redact_url(url))?,
                    Target::Command { argv, dir } => {
                        write!(f, "run {argv:?} in {}", dir.display())?
                    }
                }
                write!(f, " (fallback: {fallback})")
            }
            Action::Reply(spec) => match spec {
                ReplySpec::Text(t) => write!(f, "text {t}"),
                ReplySpec::Image(t) => write!(f, "image {t}"),
                ReplySpec::Voice(t) => write!(f, "voice {t}"),
                ReplySpec::Video { media_id, .. } => write!(f, "video {media_id}"),
                ReplySpec::Music { title, .. } => match title {
                    Some(t) => write!(f, "music {t}"),
                    None => f.write_str("music"),
                },
                ReplySpec::News(a) => {
                    let titles: Vec<String> = a.iter().map(|a| a.title.to_string()).collect();
                    write!(f, "news ({} article(s): {})", a.len(), titles.join(", "))
                }
                ReplySpec::TransferCustomerService(None) => {
                    f.write_str("transfer to customer service")
                }
                ReplySpec::TransferCustomerService(Some(kf)) => {
                    write!(f, "transfer to customer service agent {kf}")
                }
            },
        }
    }
}
