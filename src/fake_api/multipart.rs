//! A bounded `multipart/form-data` reader for the fake's upload endpoints.
//!
//! The body is already in memory (the HTTP edge caps it), so this only splits it: at most
//! [`MAX_PARTS`] parts, each with at most [`MAX_HEADER`] bytes of headers, no copy of the data.
//! Anything malformed is an error, never a panic: every slice is bounds-checked.

use crate::api::media::{find, Part};

/// More parts than any WeChat upload has (it has one or two).
pub const MAX_PARTS: usize = 16;
/// The headers of one part.
pub const MAX_HEADER: usize = 8 * 1024;

/// The boundary named by a `Content-Type: multipart/form-data; boundary=...` header.
pub fn boundary(content_type: &str) -> Option<&str> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let v = v.trim().trim_matches('"');
        // RFC 2046: 1 to 70 characters.
        (!v.is_empty() && v.len() <= 70).then_some(v)
    })
}

/// The parts of `body`; an error says what is wrong.
pub fn parse<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<Part<'a>>, String> {
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let start = find(body, delimiter).ok_or("no boundary in the body")?;
    let mut rest = body.get(start + delimiter.len()..).unwrap_or_default();
    let mut parts = Vec::new();
    let next_delimiter = [b"\r\n".as_slice(), delimiter].concat();
    loop {
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        rest = rest
            .strip_prefix(b"\r\n")
            .ok_or("a boundary line is not followed by CRLF")?;
        if parts.len() == MAX_PARTS {
            return Err(format!("more than {MAX_PARTS} parts"));
        }
        let header_end = find(
            rest.get(..MAX_HEADER.min(rest.len())).unwrap_or(rest),
            b"\r\n\r\n",
        )
        .ok_or("a part's headers are unterminated or too long")?;
        let headers = std::str::from_utf8(rest.get(..header_end).unwrap_or_default())
            .map_err(|_| "a part's headers are not UTF-8")?;
        let after = rest.get(header_end + 4..).unwrap_or_default();
        let end = find(after, &next_delimiter).ok_or("a part has no closing boundary")?;
        let data = after.get(..end).unwrap_or_default();
        rest = after.get(end + next_delimiter.len()..).unwrap_or_default();
        let mut name = None;
        let mut filename = None;
        let mut content_type = None;
        for line in headers.split("\r\n") {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            if k.trim().eq_ignore_ascii_case("content-disposition") {
                name = param(v, "name");
                filename = param(v, "filename");
            } else if k.trim().eq_ignore_ascii_case("content-type") {
                content_type = Some(v.trim());
            }
        }
        let name = name.ok_or("a part has no name")?;
        parts.push(Part {
            name,
            filename,
            content_type,
            data,
        });
    }
}

/// A `key="value"` (or `key=value`) parameter of a header value.
fn param<'a>(value: &'a str, key: &str) -> Option<&'a str> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(key)
            .then(|| v.trim().trim_matches('"'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::media::multipart;

    #[test]
    fn what_the_client_builds_reads_back() {
        let parts = [
            Part {
                name: "media",
                filename: Some("a.png"),
                content_type: Some("image/png"),
                data: b"\x89PNG\r\n\x1a\n--not-a-boundary\r\n",
            },
            Part {
                name: "description",
                filename: None,
                content_type: None,
                data: "{\"title\":\"标题\"}".as_bytes(),
            },
        ];
        let (ct, body) = multipart(&parts);
        let b = boundary(&ct).unwrap();
        assert_eq!(parse(&body, b).unwrap(), parts);
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        let b = "XyZ";
        for body in [
            &b""[..],
            b"--XyZ",
            b"--XyZ\r\n",
            b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\ndata",
            b"--XyZ\r\n\r\n\r\n--XyZ--",
            b"--XyZjunk",
            b"\xff\xfe--XyZ\r\n\xff: x\r\n\r\n\r\n--XyZ--",
        ] {
            assert!(
                parse(body, b).is_err(),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        let mut many = Vec::new();
        for _ in 0..=MAX_PARTS {
            many.extend_from_slice(
                b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\r\n",
            );
        }
        many.extend_from_slice(b"--XyZ--\r\n");
        assert!(parse(&many, b).unwrap_err().contains("more than"));
        assert_eq!(boundary("multipart/form-data; boundary=\"q\""), Some("q"));
        assert_eq!(boundary("application/json"), None);
        assert_eq!(boundary("multipart/form-data; boundary="), None);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz: every prefix and every one-byte change of a valid body.
        let (ct, body) = multipart(&[Part {
            name: "media",
            filename: Some("x.jpg"),
            content_type: None,
            data: b"\xff\xd8\xff",
        }]);
        let b = boundary(&ct).unwrap();
        for n in 0..body.len() {
            let _ = parse(&body[..n], b);
            let mut changed = body.clone();
            changed[n] ^= 0x5a;
            let _ = parse(&changed, b);
        }
    }
}
