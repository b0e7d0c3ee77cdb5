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
    /// The XML parser refused the document (truncated, mismatched tags, ...): what kind of
    /// fault, in words of our own, and where (1-based line and column, when the parser says).
    /// Never the parser's message itself, which quotes element names from the body (decrypted
    /// ones, in safe mode).
    Malformed {
        kind: &'static str,
        at: Option<(u64, u64)>,
    },
}

impl fmt::Display for XmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XmlError::Empty => f.write_str("empty body"),
            XmlError::InvalidUtf8 => f.write_str("body is not valid UTF-8"),
            XmlError::Doctype => f.write_str("DOCTYPE is not allowed"),
            XmlError::TooDeep => f.write_str("XML nests too deeply"),
            XmlError::Malformed { kind, at: None } => write!(f, "malformed XML: {kind}"),
            XmlError::Malformed {
                kind,
                at: Some((line, column)),
            } => write!(f, "malformed XML: {kind} at line {line}, column {column}"),
        }
    }
}

impl std::error::Error for XmlError {}

/// XML 1.0 `Char`: #x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF].
/// Rust `char`s are never surrogates, so only the low controls and U+FFFE/U+FFFF are left out.
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
}

/// True when every character of `text` is an XML 1.0 `Char`. Works on bytes: in UTF-8 the only
/// non-ASCII characters left out are U+FFFE and U+FFFF (`EF BF BE`, `EF BF BF`). Every body
/// passes here, so the control check is one pass without early exits, which the compiler
/// turns into vector code (a byte-at-a-time `match` was 5% of a plain push's instructions).
fn all_xml_chars(text: &str) -> bool {
    let b = text.as_bytes();
    let (mut controls, mut ef) = (false, false);
    for &c in b {
        controls |= (c < 0x20) & (c != b'\t') & (c != b'\n') & (c != b'\r');
        ef |= c == 0xEF;
    }
    // `EF` also starts common characters (full-width punctuation): look closer only then.
    let noncharacter = || {
        b.windows(3)
            .any(|w| w[0] == 0xEF && w[1] == 0xBF && w[2] >= 0xBE)
    };
    !controls && (!ef || !noncharacter())
}

/// `text` without the characters XML 1.0 forbids; borrowed when there are none (the common case).
pub fn strip_forbidden(text: &str) -> Cow<'_, str> {
    if all_xml_chars(text) {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(text.chars().filter(|&c| is_xml_char(c)).collect())
    }
}

/// Text that passed [`sanitize`]: UTF-8, XML 1.0 characters only, no DOCTYPE, nesting within
/// [`MAX_DEPTH`]. Only [`parse`] takes it, so nothing unchecked reaches the parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clean<'a>(Cow<'a, str>);

impl std::ops::Deref for Clean<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

/// Checks and cleans an untrusted body; borrows when there is nothing to strip (the common case).
pub fn sanitize(body: &[u8]) -> Result<Clean<'_>, XmlError> {
    let text = std::str::from_utf8(body).map_err(|_| XmlError::InvalidUtf8)?;
    if text.trim().is_empty() {
        return Err(XmlError::Empty);
    }
    // Strip first, then look for a DOCTYPE: a control character hidden inside `<\x01!DOCTYPE`
    // would otherwise slip past the check and be removed afterwards (found by fuzzing).
    let clean = strip_forbidden(text);
    let found = scan(clean.as_bytes());
    if found.doctype {
        return Err(XmlError::Doctype);
    }
    if found.depth > MAX_DEPTH {
        return Err(XmlError::TooDeep);
    }
    Ok(Clean(clean))
}

/// Parses a sanitized document into a tree (xmltree recurses, hence the depth check before).
pub fn parse(clean: &Clean<'_>) -> Result<Element, XmlError> {
    Element::parse(clean.as_bytes()).map_err(|e| malformed(&e))
}

/// The kind and position of a parser error, without its message's names. xml-rs writes
/// `LINE:COLUMN MESSAGE`; the message is matched against its fixed openings (xml-rs's
/// `SyntaxError` texts), and anything unrecognised is a plain "syntax error".
fn malformed(e: &xmltree::ParseError) -> XmlError {
    let xmltree::ParseError::MalformedXml(e) = e else {
        // xmltree's own refusal: an end tag that does not close the open element.
        return XmlError::Malformed {
            kind: "unexpected closing tag",
            at: None,
        };
    };
    let text = e.to_string();
    let (pos, msg) = text.split_once(' ').unwrap_or(("", &text));
    let at = pos
        .split_once(':')
        .and_then(|(l, c)| Some((l.parse().ok()?, c.parse().ok()?)));
    const KINDS: &[(&str, &str)] = &[
        ("Unexpected closing tag", "unexpected closing tag"),
        ("Unexpected end of stream", "unexpected end of document"),
        ("Unexpected EOF", "unexpected end of document"),
        ("Unclosed <![CDATA[", "unclosed CDATA section"),
        (
            "Unexpected token inside closing tag",
            "unexpected character in a closing tag",
        ),
        (
            "Unexpected token inside opening tag",
            "unexpected character in an opening tag",
        ),
        (
            "Unexpected characters outside the root element",
            "text outside the root element",
        ),
        ("Unexpected token inside entity", "bad entity"),
        ("Undefined entity", "undefined entity"),
        ("Unexpected entity", "bad entity"),
        ("Invalid numeric entity", "bad entity"),
        ("Invalid character U+", "bad character reference"),
        ("Encountered empty entity", "bad entity"),
        ("Entity too big", "entity too big"),
        ("Unexpected token inside qualified name", "invalid name"),
        ("Qualified name is invalid", "invalid name"),
        ("Unexpected name", "unexpected name"),
        ("Unexpected token", "unexpected character"),
        ("Attribute", "bad attribute"),
        ("'<' is not allowed in attributes", "bad attribute"),
        ("Element", "unbound namespace prefix"),
        ("Namespace", "bad namespace"),
        ("Cannot", "bad namespace"),
        ("Default XMLNS", "bad namespace"),
        (
            "Invalid processing instruction",
            "misplaced XML declaration",
        ),
        (
            "Encountered processing instruction",
            "bad processing instruction",
        ),
        (
            "Unexpected token inside processing",
            "bad processing instruction",
        ),
        ("Invalid XML version", "bad XML declaration"),
        ("Invalid standalone", "bad XML declaration"),
        ("Unsupported encoding", "bad XML declaration"),
        ("Declared encoding", "bad XML declaration"),
        ("Unknown markup declaration", "unknown markup declaration"),
        ("This document is larger", "over the parser's limits"),
    ];
    let kind = KINDS
        .iter()
        .find(|(opening, _)| msg.starts_with(opening))
        .map_or("syntax error", |&(_, kind)| kind);
    XmlError::Malformed { kind, at }
}

/// Reads a flat document — `<xml>` holding only `<Name>text</Name>` or
/// `<Name><![CDATA[text]]></Name>` children — without the tree parser. `None` for anything else
/// (attributes, nesting, entities, comments, split CDATA, a declaration), which callers then
/// hand to [`parse`]; so this accepts only documents the parser would read the same way.
pub fn flat_fields<'a>(clean: &'a Clean<'_>) -> Option<Vec<(&'a str, &'a str)>> {
    let mut rest = clean.trim().strip_prefix("<xml>")?.strip_suffix("</xml>")?;
    let mut fields = Vec::with_capacity(4);
    loop {
        rest = rest.trim_start_matches([' ', '\t', '\r', '\n']);
        if rest.is_empty() {
            return Some(fields);
        }
        rest = rest.strip_prefix('<')?;
        let end = rest.find('>')?;
        let name = &rest[..end];
        // An XML name cannot start with a digit; the parser refuses one.
        if !name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return None;
        }
        rest = &rest[end + 1..];
        let value;
        if let Some(cdata) = rest.strip_prefix("<![CDATA[") {
            let end = find(cdata.as_bytes(), b"]]>")?;
            value = &cdata[..end];
            rest = &cdata[end + 3..];
        } else {
            let end = rest.find('<')?;
            value = match &rest[..end] {
                // The parser drops white space between tags: such an element has no text.
                v if v.bytes().all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n')) => "",
                // Entities; and a carriage return, which XML 1.0 asks a parser to turn into a
                // line feed (xml-rs 0.8 keeps it): the parser decides, whatever its version.
                v if v.contains(['&', '>', '\r']) => return None,
                v => v,
            };
            rest = &rest[end..];
        }
        rest = rest
            .strip_prefix("</")?
            .strip_prefix(name)?
            .strip_prefix('>')?;
        fields.push((name, value));
    }
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
        match position(&b[i..], b'<') {
            Some(p) => i += p,
            None => break,
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

/// Position of `needle` (never empty) in `haystack`: jump between occurrences of its first byte.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut from = 0;
    while let Some(p) = position(haystack.get(from..)?, first) {
        let at = from + p;
        if haystack.get(at + 1..at + needle.len()) == Some(rest) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Position of `byte` in `haystack`: the first 16 bytes one by one (the next tag is usually
/// that close), then 32 at a time, each chunk tested without early exits, which the compiler
/// turns into vector code; long CDATA (safe mode's base64) is crossed several times per push.
fn position(haystack: &[u8], byte: u8) -> Option<usize> {
    let near = haystack.len().min(16);
    if let Some(p) = haystack[..near].iter().position(|&c| c == byte) {
        return Some(p);
    }
    let mut chunks = haystack[near..].chunks_exact(32);
    let mut base = near;
    for chunk in &mut chunks {
        if chunk.iter().fold(false, |found, &c| found | (c == byte)) {
            return chunk.iter().position(|&c| c == byte).map(|p| base + p);
        }
        base += 32;
    }
    chunks
        .remainder()
        .iter()
        .position(|&c| c == byte)
        .map(|p| base + p)
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
    let clean = strip_forbidden(text);
    let mut rest: &str = &clean;
    // A byte search: `str::find` with a string pattern sets up a two-way searcher per call,
    // which was most of sealing a reply's CDATA.
    while let Some(pos) = find(rest.as_bytes(), b"]]>") {
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
        assert_eq!(&*clean, "<xml><Content><![CDATA[ cd]]></Content></xml>");
        assert!(matches!(
            sanitize(b"<xml/>").unwrap(),
            Clean(Cow::Borrowed(_))
        ));
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
        assert_eq!(sanitize(deep.as_bytes()), Err(XmlError::TooDeep));
        let ok = format!("{}{}", "<a>".repeat(MAX_DEPTH), "</a>".repeat(MAX_DEPTH));
        assert!(parse(&sanitize(ok.as_bytes()).unwrap()).is_ok());
    }

    #[test]
    fn parse_reports_truncated_xml() {
        let parse_str = |s: &str| parse(&sanitize(s.as_bytes()).unwrap());
        assert!(matches!(
            parse_str("<xml><a>"),
            Err(XmlError::Malformed { .. })
        ));
        assert!(matches!(
            parse_str("not xml"),
            Err(XmlError::Malformed { .. })
        ));
    }

    /// Regression (issue 19, N13): parser errors put element names from the body (decrypted,
    /// in safe mode) into the log. Now: the kind and the position, never a name.
    #[test]
    fn parser_errors_tell_the_kind_and_position_never_a_name_from_the_body() {
        let parse_str = |s: &str| parse(&sanitize(s.as_bytes()).unwrap()).unwrap_err();
        for (doc, shown) in [
            (
                "<xml><SecretTag>x</OtherSecret></xml>",
                "malformed XML: unexpected closing tag at line 1, column 31",
            ),
            (
                "<xml>\n<SecretTag>x",
                "malformed XML: unexpected end of document at line 2, column 13",
            ),
            (
                "<xml><SecretTag a='1' a='2'/></xml>",
                "malformed XML: bad attribute at line 1, column 24",
            ),
            (
                "<xml>&SecretEntity;</xml>",
                "malformed XML: bad entity at line 1, column 19",
            ),
            (
                "<xml><Secret:Tag/></xml>",
                "malformed XML: unbound namespace prefix at line 1, column 17",
            ),
        ] {
            let e = parse_str(doc).to_string();
            assert!(!e.contains("Secret"), "{doc}: {e}");
            assert_eq!(e, shown, "{doc}");
        }
    }

    #[test]
    fn the_byte_level_check_agrees_with_the_char_level_one() {
        for s in [
            "abc",
            "\u{FFFE}",
            "a\u{FFFF}b",
            "\u{FFFD}",
            "\u{EFBF}",
            "好\u{10}",
            "\t\r\n",
            "\u{10FFFF}",
            "\u{7F}",
        ] {
            assert_eq!(all_xml_chars(s), s.chars().all(is_xml_char), "{s:?}");
        }
    }

    proptest! {
        #[test]
        fn byte_level_check_matches_chars(s in any::<String>()) {
            prop_assert_eq!(all_xml_chars(&s), s.chars().all(is_xml_char));
        }

        #[test]
        fn position_agrees_with_iter(h in proptest::collection::vec(0u8..4, 0..100), b in 0u8..4) {
            prop_assert_eq!(position(&h, b), h.iter().position(|&c| c == b));
        }

        #[test]
        fn find_agrees_with_windows(h in proptest::collection::vec(0u8..4, 0..40), n in proptest::collection::vec(0u8..4, 1..4)) {
            prop_assert_eq!(find(&h, &n), h.windows(n.len()).position(|w| w == n.as_slice()));
        }
    }

    #[test]
    fn flat_fields_reads_the_safe_mode_envelope() {
        let doc = "<xml>\n<ToUserName><![CDATA[gh_1]]></ToUserName>\n<Encrypt><![CDATA[a+b/c==]]></Encrypt><N>12</N></xml>";
        let clean = sanitize(doc.as_bytes()).unwrap();
        assert_eq!(
            flat_fields(&clean),
            Some(vec![
                ("ToUserName", "gh_1"),
                ("Encrypt", "a+b/c=="),
                ("N", "12")
            ])
        );
    }

    #[test]
    fn flat_fields_leaves_everything_else_to_the_parser() {
        for doc in [
            "<xml><A><B>x</B></A></xml>",
            "<xml><A x=\"1\">x</A></xml>",
            "<xml><A>a&amp;b</A></xml>",
            "<xml><A><![CDATA[a]]]]><![CDATA[>b]]></A></xml>",
            "<xml><!-- c --><A>x</A></xml>",
            "<?xml version=\"1.0\"?><xml><A>x</A></xml>",
            "<xml><A>x</B></xml>",
            "<xml><A>x</A>",
            "<root><A>x</A></root>",
            "<xml><1A>x</1A></xml>",
            "<xml><A>a\r\nb</A></xml>",
        ] {
            let clean = sanitize(doc.as_bytes()).unwrap();
            assert_eq!(flat_fields(&clean), None, "{doc}");
        }
    }

    proptest! {
        /// Whatever flat_fields accepts, the tree parser reads the same way.
        #[test]
        fn flat_fields_agrees_with_the_parser(values in proptest::collection::vec("[^<&\\]]{0,12}", 0..4), cdata in any::<bool>()) {
            let mut doc = String::from("<xml>");
            for (i, v) in values.iter().enumerate() {
                if cdata {
                    doc.push_str(&format!("<F{i}><![CDATA[{v}]]></F{i}>"));
                } else {
                    doc.push_str(&format!("<F{i}>{v}</F{i}>"));
                }
            }
            doc.push_str("</xml>");
            let Ok(clean) = sanitize(doc.as_bytes()) else { return Ok(()) };
            if let Some(fields) = flat_fields(&clean) {
                let tree = parse(&clean).unwrap();
                for (name, value) in fields {
                    prop_assert_eq!(child_text(&tree, name).unwrap(), value);
                }
            }
        }
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
            let tree = parse(&sanitize(doc.as_bytes()).unwrap()).unwrap();
            let expected: String = s.chars().filter(|&c| is_xml_char(c)).collect();
            // xml-rs normalises CR and CRLF line ends to LF, as XML 1.0 requires.
            let expected = expected.replace("\r\n", "\n").replace('\r', "\n");
            prop_assert_eq!(child_text(&tree, "Content").unwrap(), expected);
        }
    }
}
