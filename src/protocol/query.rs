//! The query string WeChat appends to the server URL (`signature`, `timestamp`, `nonce`,
//! `echostr`, `openid`, `encrypt_type`, `msg_signature`).
//!
//! Values are percent-decoded and nothing else: a literal `+` stays `+` and `=` inside a value is
//! kept (rouille's `get_param` turns `+` into a space and cuts values at the second `=`, which
//! breaks base64-like values). The first occurrence of a name wins.

use std::fmt;

/// The parameters wxmp reads; unknown ones are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub signature: Option<String>,
    pub timestamp: Option<String>,
    pub nonce: Option<String>,
    pub echostr: Option<String>,
    pub openid: Option<String>,
    /// `encrypt_type=aes` marks a safe- or compatible-mode push.
    pub encrypt_type: Option<String>,
    pub msg_signature: Option<String>,
}

/// A query value that is not UTF-8 once percent-decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    pub name: String,
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "query parameter {} is not valid UTF-8", self.name)
    }
}

impl std::error::Error for QueryError {}

impl Query {
    /// Parses the part of the URL after `?` (without the `?`).
    pub fn parse(raw: &str) -> Result<Query, QueryError> {
        let mut q = Query::default();
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match name {
                "signature" => &mut q.signature,
                "timestamp" => &mut q.timestamp,
                "nonce" => &mut q.nonce,
                "echostr" => &mut q.echostr,
                "openid" => &mut q.openid,
                "encrypt_type" => &mut q.encrypt_type,
                "msg_signature" => &mut q.msg_signature,
                _ => continue,
            };
            if slot.is_none() {
                let decoded = percent_decode(value).ok_or_else(|| QueryError {
                    name: name.to_owned(),
                })?;
                *slot = Some(decoded);
            }
        }
        Ok(q)
    }

    /// True when WeChat marked the push as encrypted (safe or compatible mode).
    pub fn is_encrypted(&self) -> bool {
        self.encrypt_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("aes"))
    }
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits is kept as it is. `None` when
/// the result is not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Encodes everything but RFC 3986 unreserved characters, so any value survives a round trip.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wechat_query() {
        let q = Query::parse("signature=abc&timestamp=1&nonce=2&echostr=xyz&openid=o1&encrypt_type=aes&msg_signature=m").unwrap();
        assert_eq!(q.signature.as_deref(), Some("abc"));
        assert_eq!(q.timestamp.as_deref(), Some("1"));
        assert_eq!(q.nonce.as_deref(), Some("2"));
        assert_eq!(q.echostr.as_deref(), Some("xyz"));
        assert_eq!(q.openid.as_deref(), Some("o1"));
        assert!(q.is_encrypted());
        assert_eq!(q.msg_signature.as_deref(), Some("m"));
    }

    #[test]
    fn plus_and_equals_survive_unlike_rouille_get_param() {
        let q = Query::parse("echostr=a+b==&nonce=%2B%3D").unwrap();
        assert_eq!(q.echostr.as_deref(), Some("a+b=="));
        assert_eq!(q.nonce.as_deref(), Some("+="));
    }

    #[test]
    fn utf8_is_percent_decoded_and_bad_escapes_are_kept() {
        let q = Query::parse("echostr=%E4%BD%A0%E5%A5%BD%zz%4").unwrap();
        assert_eq!(q.echostr.as_deref(), Some("你好%zz%4"));
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        assert_eq!(
            Query::parse("echostr=%FF").unwrap_err(),
            QueryError {
                name: "echostr".into()
            }
        );
    }

    #[test]
    fn first_value_wins_and_flags_are_empty() {
        let q = Query::parse("nonce=1&nonce=2&echostr").unwrap();
        assert_eq!(q.nonce.as_deref(), Some("1"));
        assert_eq!(q.echostr.as_deref(), Some(""));
        assert!(!q.is_encrypted());
    }

    #[test]
    fn encode_then_decode_round_trips() {
        for s in ["a+b=c&d", "你好 world", "%41", ""] {
            assert_eq!(percent_decode(&percent_encode(s)).unwrap(), s);
        }
    }
}
