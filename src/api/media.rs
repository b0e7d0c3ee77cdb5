//! Media files for WeChat's material (`material/add_material`) and temporary media
//! (`media/upload`) APIs: the four types, WeChat's size limits, the format of a file by its
//! content, and the multipart body that carries one.
//!
//! Pure: bytes in, values out. The client (`Client::upload`), `check-rules` and the fake API
//! all judge a file with [`check`], so a file `check-rules` passes is one the fake takes.
//!
//! The limits are the strictest WeChat has documented (its pages disagree: image 2 MB on the
//! older pages and in the temporary-media notes, 10 MB on the current material page), so a file
//! that passes here passes there; WeChat's own answer stays the final word.

use std::fmt;

/// A media type, as WeChat's `type=` parameter names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MediaType {
    Image,
    Voice,
    Video,
    /// A thumbnail (music and video covers): a small JPEG.
    Thumb,
}

/// Every type, in the order help texts list them.
pub const TYPES: [MediaType; 4] = [
    MediaType::Image,
    MediaType::Voice,
    MediaType::Video,
    MediaType::Thumb,
];

const MB: usize = 1024 * 1024;

impl MediaType {
    /// WeChat's name (`image`, `voice`, `video`, `thumb`).
    pub fn name(self) -> &'static str {
        match self {
            MediaType::Image => "image",
            MediaType::Voice => "voice",
            MediaType::Video => "video",
            MediaType::Thumb => "thumb",
        }
    }

    pub fn parse(name: &str) -> Option<MediaType> {
        TYPES.into_iter().find(|t| t.name() == name)
    }

    /// The largest file WeChat takes, in bytes.
    pub fn max_bytes(self) -> usize {
        match self {
            MediaType::Image | MediaType::Voice => 2 * MB,
            MediaType::Video => 10 * MB,
            MediaType::Thumb => 64 * 1024,
        }
    }

    /// The type with its article, for sentences (`an image`, `a thumb`).
    pub fn with_article(self) -> &'static str {
        match self {
            MediaType::Image => "an image",
            MediaType::Voice => "a voice",
            MediaType::Video => "a video",
            MediaType::Thumb => "a thumb",
        }
    }

    /// The limit as people write it (`2 MB`, `64 KB`).
    pub fn limit_text(self) -> &'static str {
        match self {
            MediaType::Image | MediaType::Voice => "2 MB",
            MediaType::Video => "10 MB",
            MediaType::Thumb => "64 KB",
        }
    }

    /// The formats WeChat takes for this type.
    pub fn formats(self) -> &'static [Format] {
        match self {
            MediaType::Image => &[Format::Jpeg, Format::Png, Format::Gif, Format::Bmp],
            MediaType::Voice => &[Format::Mp3, Format::Amr, Format::Wav, Format::Wma],
            MediaType::Video => &[Format::Mp4],
            MediaType::Thumb => &[Format::Jpeg],
        }
    }

    /// The formats, for messages (`jpg, png, gif or bmp`).
    pub fn formats_text(self) -> String {
        let names: Vec<&str> = self.formats().iter().map(|f| f.extension()).collect();
        match names.split_last() {
            Some((last, [])) => (*last).to_owned(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        }
    }

    /// The type a file of this format is uploaded as when none is named: pictures are images,
    /// sounds voice, MP4 video.
    pub fn of(format: Format) -> MediaType {
        match format {
            Format::Jpeg | Format::Png | Format::Gif | Format::Bmp => MediaType::Image,
            Format::Mp3 | Format::Amr | Format::Wav | Format::Wma => MediaType::Voice,
            Format::Mp4 => MediaType::Video,
        }
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A file format, told by the file's first bytes (never by its name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jpeg,
    Png,
    Gif,
    Bmp,
    Mp3,
    Amr,
    Wav,
    Wma,
    Mp4,
}

impl Format {
    /// The usual file extension, which the multipart filename carries (WeChat wants one).
    pub fn extension(self) -> &'static str {
        match self {
            Format::Jpeg => "jpg",
            Format::Png => "png",
            Format::Gif => "gif",
            Format::Bmp => "bmp",
            Format::Mp3 => "mp3",
            Format::Amr => "amr",
            Format::Wav => "wav",
            Format::Wma => "wma",
            Format::Mp4 => "mp4",
        }
    }

    pub fn mime(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
            Format::Gif => "image/gif",
            Format::Bmp => "image/bmp",
            Format::Mp3 => "audio/mpeg",
            Format::Amr => "audio/amr",
            Format::Wav => "audio/wav",
            Format::Wma => "audio/x-ms-wma",
            Format::Mp4 => "video/mp4",
        }
    }
}

/// The format of `bytes` by its magic number; `None` for anything WeChat does not take.
pub fn sniff(bytes: &[u8]) -> Option<Format> {
    let starts = |magic: &[u8]| bytes.starts_with(magic);
    if starts(&[0xFF, 0xD8, 0xFF]) {
        Some(Format::Jpeg)
    } else if starts(b"\x89PNG\r\n\x1a\n") {
        Some(Format::Png)
    } else if starts(b"GIF87a") || starts(b"GIF89a") {
        Some(Format::Gif)
    } else if starts(b"BM") && bytes.len() >= 26 {
        Some(Format::Bmp)
    } else if starts(b"#!AMR") {
        Some(Format::Amr)
    } else if starts(b"RIFF") && bytes.get(8..12) == Some(b"WAVE") {
        Some(Format::Wav)
    } else if starts(&[0x30, 0x26, 0xB2, 0x75, 0x8E, 0x66, 0xCF, 0x11]) {
        Some(Format::Wma)
    } else if bytes.get(4..8) == Some(b"ftyp") {
        Some(Format::Mp4)
    } else if starts(b"ID3") || (bytes.len() >= 2 && bytes[0] == 0xFF && bytes[1] & 0xE0 == 0xE0) {
        // An ID3 tag, or an MPEG audio frame sync (11 set bits).
        Some(Format::Mp3)
    } else {
        None
    }
}

/// Why a file is not one WeChat takes as the given type; each carries WeChat's errcode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaError {
    /// No bytes at all (44001).
    Empty,
    /// Over the type's limit (45001).
    TooLarge { ty: MediaType, size: usize },
    /// Not a format of the type, or no known format (40005).
    WrongFormat {
        ty: MediaType,
        found: Option<Format>,
    },
}

impl MediaError {
    /// The errcode WeChat answers with.
    pub fn errcode(&self) -> i64 {
        match self {
            MediaError::Empty => 44001,
            MediaError::TooLarge { .. } => 45001,
            MediaError::WrongFormat { .. } => 40005,
        }
    }
}

impl fmt::Display for MediaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MediaError::Empty => f.write_str("the file is empty"),
            MediaError::TooLarge { ty, size } => write!(
                f,
                "the file has {size} bytes; WeChat takes {} of at most {} ({} bytes)",
                ty.with_article(),
                ty.limit_text(),
                ty.max_bytes()
            ),
            MediaError::WrongFormat { ty, found } => {
                let what = match found {
                    Some(format) => format!("a {} file", format.extension()),
                    None => "not a picture, sound or video WeChat knows".to_owned(),
                };
                write!(
                    f,
                    "by its content it is {what}; {} must be {}",
                    ty.with_article(),
                    ty.formats_text()
                )
            }
        }
    }
}

/// Checks a file against a type's formats and size limit; its format when it passes.
pub fn check(ty: MediaType, bytes: &[u8]) -> Result<Format, MediaError> {
    if bytes.is_empty() {
        return Err(MediaError::Empty);
    }
    let found = sniff(bytes);
    let format = found
        .filter(|f| ty.formats().contains(f))
        .ok_or(MediaError::WrongFormat { ty, found })?;
    if bytes.len() > ty.max_bytes() {
        return Err(MediaError::TooLarge {
            ty,
            size: bytes.len(),
        });
    }
    Ok(format)
}

/// One part of a `multipart/form-data` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part<'a> {
    pub name: &'a str,
    /// `Some` for a file part.
    pub filename: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub data: &'a [u8],
}

/// A `multipart/form-data` body of `parts`, and its `Content-Type` header. The boundary is
/// chosen so that no part contains it.
pub fn multipart(parts: &[Part<'_>]) -> (String, Vec<u8>) {
    let mut n: u64 = 0x5758_4d50; // "WXMP"
    let boundary = loop {
        let b = format!("----wxmp-boundary-{n:016x}");
        if !parts
            .iter()
            .any(|p| contains(p.data, b.as_bytes()) || p.name.contains(&b))
        {
            break b;
        }
        n = n.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    };
    let mut body = Vec::new();
    for p in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let mut disposition = format!("Content-Disposition: form-data; name=\"{}\"", quote(p.name));
        if let Some(f) = p.filename {
            disposition.push_str(&format!("; filename=\"{}\"", quote(f)));
        }
        body.extend_from_slice(disposition.as_bytes());
        body.extend_from_slice(b"\r\n");
        if let Some(ct) = p.content_type {
            body.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(p.data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// A header value's quoted string: quotes and line breaks would end it early.
fn quote(s: &str) -> String {
    s.chars()
        .map(|c| {
            if matches!(c, '"' | '\r' | '\n') {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find(hay, needle).is_some()
}

/// Where `needle` first occurs in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
    pub const JPEG: &[u8] = &[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, b'J', b'F', b'I', b'F'];

    #[test]
    fn formats_are_told_by_content() {
        assert_eq!(sniff(PNG), Some(Format::Png));
        assert_eq!(sniff(JPEG), Some(Format::Jpeg));
        assert_eq!(sniff(b"GIF89a...."), Some(Format::Gif));
        assert_eq!(sniff(b"#!AMR\n...."), Some(Format::Amr));
        assert_eq!(sniff(b"ID3\x04\0\0"), Some(Format::Mp3));
        assert_eq!(sniff(b"RIFF\0\0\0\0WAVEfmt "), Some(Format::Wav));
        assert_eq!(sniff(b"\0\0\0\x18ftypmp42"), Some(Format::Mp4));
        assert_eq!(sniff(b"hello, world"), None);
        assert_eq!(sniff(b""), None);
        assert_eq!(sniff(b"\xFF"), None);
    }

    #[test]
    fn each_type_has_its_formats_and_limit() {
        assert_eq!(check(MediaType::Image, PNG), Ok(Format::Png));
        assert_eq!(check(MediaType::Thumb, JPEG), Ok(Format::Jpeg));
        let e = check(MediaType::Thumb, PNG).unwrap_err();
        assert_eq!(e.errcode(), 40005);
        assert_eq!(
            e.to_string(),
            "by its content it is a png file; a thumb must be jpg"
        );
        let mut big = JPEG.to_vec();
        big.resize(64 * 1024 + 1, 0);
        let e = check(MediaType::Thumb, &big).unwrap_err();
        assert_eq!(e.errcode(), 45001);
        assert!(e.to_string().contains("64 KB"), "{e}");
        assert_eq!(check(MediaType::Image, b"").unwrap_err().errcode(), 44001);
        let e = check(MediaType::Image, b"<html>").unwrap_err();
        assert!(e.to_string().contains("jpg, png, gif or bmp"), "{e}");
    }

    #[test]
    fn the_multipart_boundary_never_occurs_in_a_part() {
        let first = multipart(&[]).0;
        let boundary = first.split("boundary=").nth(1).unwrap().to_owned();
        let tricky = format!("x--{boundary}y");
        let (ct, body) = multipart(&[Part {
            name: "media",
            filename: Some("a\"b.png"),
            content_type: Some("image/png"),
            data: tricky.as_bytes(),
        }]);
        let b2 = ct.split("boundary=").nth(1).unwrap();
        assert_ne!(b2, boundary);
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("filename=\"a_b.png\""), "{text}");
        assert!(text.ends_with(&format!("--{b2}--\r\n")));
    }
}
