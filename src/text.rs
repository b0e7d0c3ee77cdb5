//! Showing text that came from outside (a request, a config value, a peer's answer) in a log
//! line or on a terminal: one line, no escape codes, no characters that make it read backwards,
//! and no password a URL carries; and the line of a file an error points at. Pure; imports
//! nothing of the crate, so every layer can use it.

use std::borrow::Cow;
use std::fmt::Write;

/// The 1-based line of `text` that byte `offset` is on: TOML's errors and spans are byte offsets,
/// and the user fixes their rules or accounts file by line. An offset past the end is the last line.
pub fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()
        .get(..offset.min(text.len()))
        .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
        + 1
}

/// A character a log line or a terminal must never get raw: the control characters (C0, DEL
/// and C1, NEL included), the line and paragraph separators, and the bidi marks, embeddings,
/// overrides and isolates (U+061C, U+200E/F, U+202A–E, U+2066–9), which are invisible and can
/// make a line read differently from what it holds.
pub fn is_hidden_control(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `s` with each [hidden control](is_hidden_control) written as `\u{...}` (`\n`, `\r`, `\t`
/// as such) and backslashes doubled, so the escape cannot be forged; borrowed when there is
/// nothing to escape (the usual case).
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c == '\\' || is_hidden_control(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_hidden_control(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `url` with the password of its userinfo (`http://user:pass@host/`) replaced by `***`, for
/// every place a URL is logged or printed (a forward URL, `--api-base`, `wxmp send --url`).
/// The user name stays, so the line still says which account; userinfo without a colon is
/// hidden whole. Anything not shaped like a URL with userinfo comes back unchanged.
pub fn redact_url(url: &str) -> Cow<'_, str> {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return Cow::Borrowed(url);
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    // The last '@' ends the userinfo: a password may hold an unescaped '@'.
    let Some(at) = authority.rfind('@') else {
        return Cow::Borrowed(url);
    };
    // `user:password` keeps the user; a lone value (`token@host`) may be the secret itself.
    let user = match authority[..at].find(':') {
        Some(colon) => &authority[..colon + 1],
        None => "",
    };
    Cow::Owned(format!("{}{user}***{}", &url[..scheme_end], &rest[at..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_byte_offset_is_on_its_line() {
        let text = "a = 1\nb = [\n  2\n";
        assert_eq!(line_of(text, 0), 1);
        assert_eq!(line_of(text, 5), 1, "the line end belongs to its line");
        assert_eq!(line_of(text, 6), 2);
        assert_eq!(line_of(text, 14), 3);
        assert_eq!(
            line_of(text, 1_000),
            4,
            "past the end: after the last line end"
        );
    }

    #[test]
    fn a_urls_password_never_shows() {
        for (url, shown) in [
            (
                "http://user:s3cret@host:9/path?q=1",
                "http://user:***@host:9/path?q=1",
            ),
            ("https://s3cret@host/", "https://***@host/"),
            ("http://u:p@ss:s3cret@host/x", "http://u:***@host/x"),
            ("http://user:s3cret@host", "http://user:***@host"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        for plain in [
            "http://127.0.0.1:9000/wechat",
            "http://host/path@x",
            "http://host/?u=a@b",
            "not a url",
            "",
        ] {
            assert_eq!(redact_url(plain), plain);
        }
    }

    #[test]
    fn printable_escapes_every_hidden_control_and_keeps_the_rest() {
        assert!(matches!(printable("o_wx 天气 👍"), Cow::Borrowed(_)));
        let shown = printable("a\u{1b}[31mb\u{202e}c\u{85}d\ne\\u{1b}");
        assert_eq!(shown, "a\\u{1b}[31mb\\u{202e}c\\u{85}d\\ne\\\\u{1b}");
        assert!(!shown.chars().any(is_hidden_control));
    }
}
