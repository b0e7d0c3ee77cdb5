//! The XML edge shared by `message`, `reply` and `crypto`: turning untrusted bytes into an
//! `xmltree::Element` safely, and writing CDATA that stays well-formed for any text.
//!
//! Hostile input is handled before the parser sees it: a `<!DOCTYPE` is refused outright (WeChat
//! never sends one, and refusing it shuts out XXE and entity bombs), characters XML 1.0 forbids
//! are stripped (WeChat really sends U+0010 and U+001D inside user text), and nesting deeper than
//! [`MAX_DEPTH`] is refused because xmltree builds the tree recursively.

use std::borrow::Cow;
use std::fmt;

use xmltree::Element;

/// WeChat's deepest payload (`SendPicsInfo/PicList/item/PicMd5Sum`) is five levels deep.
pub const MAX_DEPTH: usize = 32;

/// Why bytes could not be turned into an XML tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XmlError {
    /// The body is empty or only white space.
    Empty,
    /// The body is not UTF-8 (WeChat always sends UTF-8).
    InvalidUtf8,
    /// The body contains a document type declaration.
    Doctype,
    /// Elements nest deeper than [`MAX_DEPTH`].
    TooDeep,
    /// The XML parser refused the document (truncated, mismatched tags, ...).
    Malformed(String),
}

impl fmt::Display for XmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XmlError::Empty => f.write_str("empty body"),
            XmlError::InvalidUtf8 => f.write_str("body is not valid UTF-8"),
            XmlError::Doctype => f.write_str("DOCTYPE is not allowed"),
            XmlError::TooDeep => f.write_str("XML nests too deeply"),
            XmlError::Malformed(why) => write!(f, "malformed XML: {why}"),
        }
    }
}

impl std::error::Error for XmlError {}

/// XML 1.0 `Char`: #x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF].
/// Rust `char`s are never surrogates, so only the low controls and U+FFFE/U+FFFF are left out.
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
}

/// Checks and cleans an untrusted body; borrows when there is nothing to strip (the common case).
pub fn sanitize(body: &[u8]) -> Result<Cow<'_, str>, XmlError> {
    let text = std::str::from_utf8(body).map_err(|_| XmlError::InvalidUtf8)?;
    if text.trim().is_empty() {
        return Err(XmlError::Empty);
    }
    // Strip first, then look for a DOCTYPE: a control character hidden inside `<\x01!DOCTYPE`
    // would otherwise slip past the check and be removed afterwards (found by fuzzing).
    let clean = if text.chars().all(is_xml_char) {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(text.chars().filter(|&c| is_xml_char(c)).collect())
    };
    if scan(clean.as_bytes()).doctype {
        return Err(XmlError::Doctype);
    }
    Ok(clean)
}

/// Parses a sanitized document into a tree, refusing deep nesting before xmltree recurses.
pub fn parse(text: &str) -> Result<Element, XmlError> {
    if scan(text.as_bytes()).depth > MAX_DEPTH {
        return Err(XmlError::TooDeep);
    }
    Element::parse(text.as_bytes()).map_err(|e| XmlError::Malformed(e.to_string()))
}

/// What a cheap pass over the markup finds before the parser runs.
struct Scan {
    /// The deepest element nesting; over-counts nothing the parser would accept.
    depth: usize,
    /// A `<!DOCTYPE` in markup. Inside CDATA it is only text (a user may send the characters
    /// `<!DOCTYPE`), so CDATA sections, comments and processing instructions are skipped.
    doctype: bool,
}

fn scan(b: &[u8]) -> Scan {
    let (mut i, mut depth, mut max) = (0usize, 0usize, 0usize);
    let mut doctype = false;
    while i < b.len() {
        if b[i] != b'<' {
            i += 1;
            continue;
        }
        let rest = &b[i..];
        let skip_to = |end: &[u8]| find(rest, end).map_or(b.len(), |p| i + p + end.len());
        if rest.starts_with(b"<![CDATA[") {
            i = skip_to(b"]]>");
        } else if rest.starts_with(b"<!--") {
            i = skip_to(b"-->");
        } else if rest.starts_with(b"<?") {
            i = skip_to(b"?>");
        } else if rest.len() >= 9 && rest[..9].eq_ignore_ascii_case(b"<!doctype") {
            doctype = true;
            i += 9;
        } else if rest.starts_with(b"</") {
            depth = depth.saturating_sub(1);
            i = skip_to(b">");
        } else {
            // A start tag: find its end outside quoted attribute values.
            let mut j = i + 1;
            let mut quote = None;
            while j < b.len() {
                match (quote, b[j]) {
                    (None, b'"' | b'\'') => quote = Some(b[j]),
                    (Some(q), c) if c == q => quote = None,
                    (None, b'>') => break,
                    _ => {}
                }
                j += 1;
            }
            let self_closing = j > i + 1 && b.get(j - 1) == Some(&b'/');
            if !self_closing {
                depth += 1;
                max = max.max(depth);
            }
            i = j + 1;
        }
    }
    Scan {
        depth: max,
        doctype,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The text of a direct child element (text and CDATA joined), if the child exists.
pub fn child_text(elem: &Element, name: &str) -> Option<String> {
    elem.get_child(name)
        .map(|c| c.get_text().map(Cow::into_owned).unwrap_or_default())
}

/// Writes `<![CDATA[text]]>`, splitting any `]]>` so the section cannot end early, and dropping
/// characters XML 1.0 forbids so the output is always well-formed.
pub fn push_cdata(out: &mut String, text: &str) {
    out.push_str("<![CDATA[");
    let clean: Cow<'_, str> = if text.chars().all(is_xml_char) {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(text.chars().filter(|&c| is_xml_char(c)).collect())
    };
    let mut rest: &str = &clean;
    while let Some(pos) = rest.find("]]>") {
        out.push_str(&rest[..pos]);
        out.push_str("]]]]><![CDATA[>");
        rest = &rest[pos + 3..];
    }
    out.push_str(rest);
    out.push_str("]]>");
}

/// Writes `<name><![CDATA[text]]></name>`.
pub fn push_cdata_element(out: &mut String, name: &str, text: &str) {
    out.push('<');
    out.push_str(name);
    out.push('>');
    push_cdata(out, text);
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

/// Writes `<name>number</name>` (numbers need no CDATA).
pub fn push_number_element(out: &mut String, name: &str, n: u64) {
    use std::fmt::Write;
    // Writing into a String cannot fail.
    let _ = write!(out, "<{name}>{n}</{name}>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sanitize_strips_control_chars_wechat_really_sends() {
        let body = "<xml><Content><![CDATA[ \u{1d}c\u{10}d]]></Content></xml>";
        let clean = sanitize(body.as_bytes()).unwrap();
        assert_eq!(clean, "<xml><Content><![CDATA[ cd]]></Content></xml>");
        assert!(matches!(sanitize(b"<xml/>").unwrap(), Cow::Borrowed(_)));
    }

    #[test]
    fn doctype_hidden_by_a_control_character_is_still_refused() {
        // Regression (fuzzing): the check ran before stripping, so `<\x01!DOCTYPE` got through.
        let body = "<\u{1}!DOCTYPE xml [<!ENTITY a \"x\">]><xml><Content>&a;</Content></xml>";
        assert_eq!(sanitize(body.as_bytes()), Err(XmlError::Doctype));
    }

    #[test]
    fn doctype_as_text_inside_cdata_is_only_text() {
        let body = "<xml><Content><![CDATA[<!DOCTYPE html> is how pages start]]></Content></xml>";
        let tree = parse(&sanitize(body.as_bytes()).unwrap()).unwrap();
        assert_eq!(
            child_text(&tree, "Content").unwrap(),
            "<!DOCTYPE html> is how pages start"
        );
    }

    #[test]
    fn sanitize_refuses_doctype_in_any_case() {
        for body in [
            "<!DOCTYPE x><xml/>",
            "<?xml version='1.0'?><!doctype x []><xml/>",
            "<xml><!DocType</xml>",
        ] {
            assert_eq!(sanitize(body.as_bytes()), Err(XmlError::Doctype), "{body}");
        }
    }

    #[test]
    fn sanitize_refuses_empty_and_non_utf8() {
        assert_eq!(sanitize(b""), Err(XmlError::Empty));
        assert_eq!(sanitize(b" \n "), Err(XmlError::Empty));
        assert_eq!(sanitize(b"<xml>\xff</xml>"), Err(XmlError::InvalidUtf8));
    }

    #[test]
    fn depth_counts_elements_not_cdata_or_comments() {
        assert_eq!(scan(b"<xml><a><b/></a></xml>").depth, 2);
        assert_eq!(
            scan(b"<xml><a><![CDATA[<x><y><z>]]></a><!-- <q><r> --></xml>").depth,
            2
        );
        assert_eq!(scan(b"<xml><a t='>'><b></b></a></xml>").depth, 3);
    }

    #[test]
    fn parse_refuses_deep_nesting_without_overflowing_the_stack() {
        let deep = "<a>".repeat(100_000);
        assert_eq!(parse(&deep), Err(XmlError::TooDeep));
        let ok = format!("{}{}", "<a>".repeat(MAX_DEPTH), "</a>".repeat(MAX_DEPTH));
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn parse_reports_truncated_xml() {
        assert!(matches!(parse("<xml><a>"), Err(XmlError::Malformed(_))));
        assert!(matches!(parse("not xml"), Err(XmlError::Malformed(_))));
    }

    #[test]
    fn cdata_splits_terminator() {
        let mut out = String::new();
        push_cdata(&mut out, "a]]><evil/>");
        assert_eq!(out, "<![CDATA[a]]]]><![CDATA[><evil/>]]>");
    }

    proptest! {
        #[test]
        fn cdata_round_trips_any_text(s in any::<String>()) {
            let mut doc = String::from("<xml>");
            push_cdata_element(&mut doc, "Content", &s);
            doc.push_str("</xml>");
            let tree = parse(&doc).unwrap();
            let expected: String = s.chars().filter(|&c| is_xml_char(c)).collect();
            // xml-rs normalises CR and CRLF line ends to LF, as XML 1.0 requires.
            let expected = expected.replace("\r\n", "\n").replace('\r', "\n");
            prop_assert_eq!(child_text(&tree, "Content").unwrap(), expected);
        }
    }
}
