//! wxmp patch: a strict, bounded HTTP/1 request-head parser and chunked decoder.
//!
//! Upstream read lines without a bound, treated any `Transfer-Encoding` as chunked, took the
//! first of several `Content-Length`s, accepted any bytes in a method and answered unsupported
//! versions by deadlocking. Everything here works on a `BufRead`, holds at most the limits below,
//! and turns bad input into the status code HTTP prescribes, after which the connection closes.
//! No I/O policy (timeouts, sockets) lives here, so the fuzz target drives exactly this code.

use std::io::{self, BufRead, ErrorKind, Read};
use std::str::FromStr;

use ascii::AsciiString;

use crate::common::{HTTPVersion, Header, HeaderField, Method};

/// Longest request line or header line, CRLF included (a longer request line is 414, a longer
/// header 431).
pub const MAX_LINE: usize = 8 * 1024;
/// Most header fields in one request (or trailer section).
pub const MAX_HEADERS: usize = 100;
/// Most bytes in one request head, request line included (431 past it).
pub const MAX_HEAD: usize = 32 * 1024;
/// Longest chunk-size line (size, extensions, CRLF).
pub const MAX_CHUNK_LINE: usize = 1024;
/// Empty lines tolerated before a request line (RFC 9112 §2.2: some clients send a CRLF after a
/// body).
const MAX_LEADING_EMPTY_LINES: usize = 4;

/// Why a request head or body was refused; every variant but `Io` is answered, then the
/// connection closes.
#[derive(Debug)]
pub enum ParseError {
    /// The peer went away or the socket failed: nothing can be answered.
    Io(io::Error),
    /// The request is malformed or unsupported: answer `status` and close.
    Status(u16, &'static str),
}

impl From<io::Error> for ParseError {
    fn from(e: io::Error) -> Self {
        ParseError::Io(e)
    }
}

impl ParseError {
    fn bad(reason: &'static str) -> Self {
        ParseError::Status(400, reason)
    }
}

/// How the request body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked,
}

/// A parsed request head.
#[derive(Debug)]
pub struct Head {
    pub method: Method,
    pub target: String,
    pub version: HTTPVersion,
    pub headers: Vec<Header>,
    pub framing: Framing,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    /// No further request may be read after this one (`Connection: close`, an HTTP/1.0 request
    /// without keep-alive, or an upgrade, which this server does not perform).
    pub last: bool,
}

/// Reads one line ending in CRLF into `buf` (without the CRLF). `Ok(false)` is a clean EOF
/// before the first byte. A line longer than `max` is `too_long`.
fn read_line<R: BufRead>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
    too_long: ParseError,
) -> Result<bool, ParseError> {
    buf.clear();
    loop {
        let available = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if available.is_empty() {
            if buf.is_empty() {
                return Ok(false);
            }
            return Err(io::Error::new(ErrorKind::UnexpectedEof, "eof inside a line").into());
        }
        let (used, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        if buf.len() + used > max {
            return Err(too_long);
        }
        buf.extend_from_slice(&available[..used]);
        r.consume(used);
        if done {
            buf.pop(); // \n
            if buf.pop() != Some(b'\r') {
                return Err(ParseError::bad("line not ended by CRLF"));
            }
            return Ok(true);
        }
    }
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// Reads a request head. `Ok(None)`: the peer closed the connection cleanly between requests.
pub fn read_head<R: BufRead>(r: &mut R) -> Result<Option<Head>, ParseError> {
    let mut line = Vec::with_capacity(256);
    let mut empty = 0;
    loop {
        if !read_line(
            r,
            &mut line,
            MAX_LINE,
            ParseError::Status(414, "request line too long"),
        )? {
            return Ok(None);
        }
        if !line.is_empty() {
            break;
        }
        empty += 1;
        if empty > MAX_LEADING_EMPTY_LINES {
            return Err(ParseError::bad("empty lines instead of a request"));
        }
    }
    let mut head_size = line.len() + 2;
    let (method, target, version) = parse_request_line(&line)?;

    let mut headers = Vec::new();
    loop {
        if !read_line(
            r,
            &mut line,
            MAX_LINE,
            ParseError::Status(431, "header line too long"),
        )? {
            return Err(io::Error::new(ErrorKind::UnexpectedEof, "eof inside the head").into());
        }
        head_size += line.len() + 2;
        if head_size > MAX_HEAD {
            return Err(ParseError::Status(431, "request head too large"));
        }
        if line.is_empty() {
            break;
        }
        if headers.len() >= MAX_HEADERS {
            return Err(ParseError::Status(431, "too many header fields"));
        }
        headers.push(parse_header(&line)?);
    }

    let framing = framing(&version, &headers)?;
    let expect_continue = match find(&headers, "Expect") {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("100-continue") => true,
        Some(_) => return Err(ParseError::Status(417, "unsupported expectation")),
    };
    let connection: Vec<String> = headers
        .iter()
        .filter(|h| h.field.equiv("Connection"))
        .flat_map(|h| h.value.as_str().split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    let has = |t: &str| connection.iter().any(|c| c == t);
    let last =
        has("close") || has("upgrade") || (version == HTTPVersion(1, 0) && !has("keep-alive"));
    Ok(Some(Head {
        method,
        target,
        version,
        headers,
        framing,
        expect_continue,
        last,
    }))
}

/// `method SP request-target SP HTTP-version`, exactly.
fn parse_request_line(line: &[u8]) -> Result<(Method, String, HTTPVersion), ParseError> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::bad("malformed request line"));
    };
    // The version first: `PRI * HTTP/2.0` (the h2c preface) and `GET / HTTP/2.0` are 505, not 400.
    let version = parse_version(version)?;
    if !is_token(method) {
        return Err(ParseError::bad("malformed method"));
    }
    if target.is_empty() || !target.iter().all(|&b| (0x21..0x7f).contains(&b)) {
        return Err(ParseError::bad("malformed request target"));
    }
    let method = std::str::from_utf8(method)
        .ok()
        .and_then(|m| Method::from_str(m).ok())
        .ok_or_else(|| ParseError::bad("malformed method"))?;
    let target = String::from_utf8(target.to_vec())
        .map_err(|_| ParseError::bad("malformed request target"))?;
    Ok((method, target, version))
}

fn parse_version(v: &[u8]) -> Result<HTTPVersion, ParseError> {
    match v {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            match (major - b'0', minor - b'0') {
                (1, 0) => Ok(HTTPVersion(1, 0)),
                // RFC 9110 §2.5: a later 1.x is answered as 1.1.
                (1, _) => Ok(HTTPVersion(1, 1)),
                _ => Err(ParseError::Status(505, "unsupported HTTP version")),
            }
        }
        _ => Err(ParseError::bad("malformed HTTP version")),
    }
}

/// `field-name ":" OWS field-value OWS`; no space before the colon, no obs-fold, and a value of
/// visible ASCII, spaces and tabs only.
fn parse_header(line: &[u8]) -> Result<Header, ParseError> {
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(|| ParseError::bad("header without a colon"))?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if !is_token(name) {
        return Err(ParseError::bad("malformed header name"));
    }
    if !value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        return Err(ParseError::bad("header value is not visible ASCII"));
    }
    let value = trim_ows(value);
    let field =
        HeaderField::from_bytes(name.to_vec()).map_err(|_| ParseError::bad("malformed header"))?;
    let value =
        AsciiString::from_ascii(value.to_vec()).map_err(|_| ParseError::bad("malformed header"))?;
    Ok(Header { field, value })
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

fn find<'a>(headers: &'a [Header], name: &'static str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.field.equiv(name))
        .map(|h| h.value.as_str())
}

/// RFC 9112 §6.3, strictly: any ambiguity about where the body ends is a 400, because a proxy in
/// front may have drawn the line elsewhere (request smuggling).
fn framing(version: &HTTPVersion, headers: &[Header]) -> Result<Framing, ParseError> {
    let te: Vec<String> = headers
        .iter()
        .filter(|h| h.field.equiv("Transfer-Encoding"))
        .flat_map(|h| h.value.as_str().split(','))
        .map(|c| c.trim().to_ascii_lowercase())
        .collect();
    let lengths: Vec<&str> = headers
        .iter()
        .filter(|h| h.field.equiv("Content-Length"))
        .map(|h| h.value.as_str())
        .collect();
    if headers.iter().any(|h| h.field.equiv("Transfer-Encoding")) {
        if *version == HTTPVersion(1, 0) {
            return Err(ParseError::bad("Transfer-Encoding in an HTTP/1.0 request"));
        }
        if !lengths.is_empty() {
            return Err(ParseError::bad("both Transfer-Encoding and Content-Length"));
        }
        let chunked = te.iter().filter(|c| *c == "chunked").count();
        if chunked != 1 || te.last().map(String::as_str) != Some("chunked") {
            return Err(ParseError::bad("chunked is not the final transfer coding"));
        }
        if te.len() > 1 {
            return Err(ParseError::Status(501, "unsupported transfer coding"));
        }
        return Ok(Framing::Chunked);
    }
    match lengths.as_slice() {
        [] => Ok(Framing::Length(0)),
        [one] => parse_length(one).map(Framing::Length),
        _ => Err(ParseError::bad("more than one Content-Length")),
    }
}

/// `1*DIGIT`, nothing else (no sign, no list, no spaces).
fn parse_length(v: &str) -> Result<u64, ParseError> {
    if v.is_empty() || v.len() > 18 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::bad("invalid Content-Length"));
    }
    v.parse()
        .map_err(|_| ParseError::bad("invalid Content-Length"))
}

/// Outcome of reading a chunked body into memory.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunked {
    /// The whole body (and its trailers) was read.
    Complete,
    /// The body is longer than the limit: `limit + 1` bytes were kept and the rest is unread, so
    /// the connection cannot carry another request.
    TooLong,
}

/// Decodes a chunked body from `r` into `out`, keeping at most `limit + 1` bytes. `grow` is asked
/// before `out` grows by each step and may refuse (a memory budget), which ends decoding with the
/// error it returns.
pub fn read_chunked<R: BufRead>(
    r: &mut R,
    out: &mut Vec<u8>,
    limit: usize,
    grow: &mut dyn FnMut(usize) -> Result<(), ParseError>,
) -> Result<Chunked, ParseError> {
    let mut line = Vec::with_capacity(32);
    loop {
        if !read_line(
            r,
            &mut line,
            MAX_CHUNK_LINE,
            ParseError::bad("chunk-size line too long"),
        )? {
            return Err(
                io::Error::new(ErrorKind::UnexpectedEof, "eof inside a chunked body").into(),
            );
        }
        let size = chunk_size(&line)?;
        if size == 0 {
            break;
        }
        let mut left = size;
        while left > 0 {
            let room = (limit + 1).saturating_sub(out.len());
            if room == 0 {
                return Ok(Chunked::TooLong);
            }
            let step = left.min(room as u64).min(64 * 1024) as usize;
            grow(step)?;
            // Exactly what `grow` granted: read_to_end alone would double the capacity.
            out.reserve_exact(step);
            let start = out.len();
            let got = r.by_ref().take(step as u64).read_to_end(out)?;
            if got < step {
                out.truncate(start + got);
                return Err(io::Error::new(ErrorKind::UnexpectedEof, "eof inside a chunk").into());
            }
            left -= step as u64;
        }
        // A chunk that ends exactly one byte past the limit leaves no room check to catch it.
        if out.len() > limit {
            return Ok(Chunked::TooLong);
        }
        if !read_line(
            r,
            &mut line,
            2,
            ParseError::bad("chunk data longer than its size"),
        )? || !line.is_empty()
        {
            return Err(ParseError::bad("chunk data longer than its size"));
        }
    }
    // Trailer fields: read, bounded like headers, and dropped.
    let mut size = 0;
    let mut count = 0;
    loop {
        if !read_line(
            r,
            &mut line,
            MAX_LINE,
            ParseError::Status(431, "trailer line too long"),
        )? {
            return Err(io::Error::new(ErrorKind::UnexpectedEof, "eof inside trailers").into());
        }
        if line.is_empty() {
            return Ok(Chunked::Complete);
        }
        size += line.len() + 2;
        count += 1;
        if size > MAX_HEAD || count > MAX_HEADERS {
            return Err(ParseError::Status(431, "trailers too large"));
        }
        parse_header(&line)?;
    }
}

/// `chunk-size [ chunk-ext ]`: hex digits, then optionally `;` and extensions (ignored).
fn chunk_size(line: &[u8]) -> Result<u64, ParseError> {
    let end = line.iter().position(|&b| b == b';').unwrap_or(line.len());
    let digits = trim_ows(&line[..end]);
    if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(ParseError::bad("invalid chunk size"));
    }
    let text = std::str::from_utf8(digits).map_err(|_| ParseError::bad("invalid chunk size"))?;
    u64::from_str_radix(text, 16).map_err(|_| ParseError::bad("invalid chunk size"))
}

/// Fuzzing entry point (not an API): parses `data` as a stream of pipelined requests, as a
/// connection would, with bodies up to `body_limit`, and checks the parser's promises. Returns
/// the number of requests parsed.
#[doc(hidden)]
pub fn fuzz_requests(data: &[u8], body_limit: usize) -> usize {
    let mut r = io::BufReader::with_capacity(64, data);
    let mut n = 0;
    loop {
        let head = match read_head(&mut r) {
            Ok(Some(h)) => h,
            Ok(None) => return n,
            Err(ParseError::Status(code, _)) => {
                assert!([400, 414, 417, 431, 501, 505].contains(&code), "{}", code);
                return n;
            }
            Err(ParseError::Io(_)) => return n,
        };
        n += 1;
        assert!(head.headers.len() <= MAX_HEADERS);
        assert!(head.target.len() < MAX_LINE);
        assert!(head.method.as_str().bytes().all(is_tchar));
        assert!(head.version == HTTPVersion(1, 0) || head.version == HTTPVersion(1, 1));
        for h in &head.headers {
            let v = h.value.as_str();
            assert!(!v.starts_with([' ', '\t']) && !v.ends_with([' ', '\t']));
            assert!(!v.contains(['\r', '\n']));
        }
        let mut body = Vec::new();
        match head.framing {
            Framing::Length(len) => {
                if len > body_limit as u64 {
                    return n;
                }
                if (&mut r).take(len).read_to_end(&mut body).is_err() || body.len() as u64 != len {
                    return n;
                }
            }
            Framing::Chunked => {
                let mut granted = 0;
                let mut grow = |step: usize| {
                    granted += step;
                    Ok(())
                };
                match read_chunked(&mut r, &mut body, body_limit, &mut grow) {
                    Ok(Chunked::Complete) => assert!(body.len() <= body_limit),
                    Ok(Chunked::TooLong) => {
                        assert_eq!(body.len(), body_limit + 1);
                        return n;
                    }
                    Err(_) => return n,
                }
                assert!(body.len() <= granted);
            }
        }
        if head.last {
            return n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Result<Option<Head>, ParseError> {
        read_head(&mut io::BufReader::new(raw.as_bytes()))
    }

    fn status(raw: &str) -> u16 {
        match head(raw) {
            Err(ParseError::Status(code, _)) => code,
            other => panic!("{:?}: {:?}", raw, other),
        }
    }

    #[test]
    fn a_plain_request_parses() {
        let h = head("POST /weixin?a=1 HTTP/1.1\r\nHost: x\r\nContent-Length:  12 \r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.method, Method::Post);
        assert_eq!(h.target, "/weixin?a=1");
        assert_eq!(h.framing, Framing::Length(12));
        assert!(!h.last);
        assert!(head("").unwrap().is_none());
    }

    #[test]
    fn unsupported_versions_are_505() {
        assert_eq!(status("GET / HTTP/2.0\r\n\r\n"), 505);
        assert_eq!(status("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 505);
        assert_eq!(status("GET / HTTP/0.9\r\n\r\n"), 505);
        assert_eq!(status("GET / HTTP/1\r\n\r\n"), 400);
        let h = head("GET / HTTP/1.7\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.version, HTTPVersion(1, 1));
    }

    #[test]
    fn oversized_heads_are_414_and_431() {
        let long = "a".repeat(MAX_LINE);
        assert_eq!(status(&format!("GET /{long} HTTP/1.1\r\n\r\n")), 414);
        assert_eq!(status(&format!("GET / HTTP/1.1\r\nX: {long}\r\n\r\n")), 431);
        let many = "X: y\r\n".repeat(MAX_HEADERS + 1);
        assert_eq!(status(&format!("GET / HTTP/1.1\r\n{many}\r\n")), 431);
        let big = format!("X: {}\r\n", "b".repeat(4000)).repeat(9);
        assert_eq!(status(&format!("GET / HTTP/1.1\r\n{big}\r\n")), 431);
    }

    #[test]
    fn malformed_heads_are_400() {
        for raw in [
            "GE\x1bT / HTTP/1.1\r\n\r\n",
            "GET\n/ HTTP/1.1\r\n\r\n",
            "GET  / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\n\n",
            "GET /\x7f HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nX: caf\u{e9}\r\n\r\n",
            "GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
            "GET / HTTP/1.1\r\n X: folded\r\n\r\n",
            "GET / HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n",
            "GET / HTTP/1.1\r\n: empty\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            "GET / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            "GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(status(raw), 400, "{raw:?}");
        }
        assert_eq!(
            status("GET / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            501
        );
        assert_eq!(status("GET / HTTP/1.1\r\nExpect: 200-ok\r\n\r\n"), 417);
    }

    #[test]
    fn connection_state_follows_the_headers() {
        let last = |raw: &str| head(raw).unwrap().unwrap().last;
        assert!(last(
            "GET / HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n"
        ));
        assert!(last(
            "GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
        ));
        assert!(last("GET / HTTP/1.0\r\n\r\n"));
        assert!(!last("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
        assert!(!last("GET / HTTP/1.1\r\n\r\n"));
    }

    fn chunked(raw: &str, limit: usize) -> Result<(Chunked, Vec<u8>), ParseError> {
        let mut out = Vec::new();
        let mut r = io::BufReader::new(raw.as_bytes());
        read_chunked(&mut r, &mut out, limit, &mut |_| Ok(())).map(|c| (c, out))
    }

    #[test]
    fn chunked_bodies_decode_within_limits() {
        let (c, body) = chunked(
            "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n",
            100,
        )
        .unwrap();
        assert_eq!(
            (c, body.as_slice()),
            (Chunked::Complete, &b"hello world"[..])
        );
        let (c, body) = chunked("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", 6).unwrap();
        assert_eq!((c, body.len()), (Chunked::TooLong, 7));
        // One chunk of exactly limit + 1 bytes (found by the http_parser fuzz target).
        let (c, body) = chunked("11\r\n238ef01234567cdef\r\n0\r\n\r\n", 16).unwrap();
        assert_eq!((c, body.len()), (Chunked::TooLong, 17));
        let endless = format!("1{}", "0".repeat(MAX_CHUNK_LINE * 4));
        assert!(matches!(
            chunked(&endless, 100),
            Err(ParseError::Status(400, _))
        ));
        assert!(matches!(
            chunked("3\r\nabcd\r\n0\r\n\r\n", 100),
            Err(ParseError::Status(400, _))
        ));
        assert!(matches!(
            chunked("zz\r\n", 100),
            Err(ParseError::Status(400, _))
        ));
        assert!(matches!(chunked("5\r\nab", 100), Err(ParseError::Io(_))));
    }

    #[test]
    fn pipelined_requests_are_parsed_in_turn() {
        let raw = "GET /a HTTP/1.1\r\n\r\nPOST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
                   3\r\nGET\r\n0\r\n\r\nGET /c HTTP/1.1\r\nConnection: close\r\n\r\nGET /d HTTP/1.1\r\n\r\n";
        assert_eq!(fuzz_requests(raw.as_bytes(), 1024), 3);
    }
}
