//! WeChat's pushes as one model: XML → a typed [`Message`] ([`Message::parse`]) and back
//! ([`Message::to_xml`]). The server parses with it; the simulator, the tests, the fuzz seeds and
//! the benchmarks build their pushes with it.
//!
//! In scope: every MsgType and event an Official Account receives, with WeChat's field names mapped
//! to snake_case (`FromUserName` → `from_user_name`). Out of scope: where the XML came from (plain
//! body or decrypted `Encrypt`) and what to answer.
//!
//! A genuine push must never be refused for an odd field: only a document that cannot be a push
//! at all (not XML, a DOCTYPE, no `MsgType`) is an error. Every other field may be absent
//! (`None`); a number that does not parse is kept as its text ([`Numeric::Raw`]); top-level
//! fields this version does not know are kept in [`Message::extra`], so nothing WeChat sent is
//! lost on the way to the user's own code.

use std::fmt;
use std::str::FromStr;

use xmltree::{Element, XMLNode};

use crate::protocol::xml::{self, child_text, push_cdata_element, Clean, XmlError};

/// One push from WeChat: the fields every push carries, what kind of push it is, and any
/// top-level field this version does not interpret.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// `ToUserName`: the Official Account's original id (`gh_…`).
    pub to_user_name: Option<String>,
    /// `FromUserName`: the user's OpenID.
    pub from_user_name: Option<String>,
    /// `CreateTime`, seconds since the Unix epoch.
    pub create_time: Option<Numeric<u64>>,
    /// `MsgId` (messages), or `MsgID` as WeChat spells it on the *JOBFINISH events. Kept as text:
    /// MsgIds exceed 2^53.
    pub msg_id: Option<String>,
    pub kind: Kind,
    /// Top-level fields not read into `kind`, in document order (e.g. `MsgDataId`, `Idx`, the
    /// fields of an unknown MsgType or event).
    pub extra: Vec<(String, Node)>,
}

/// An uninterpreted field: its text, or its child elements.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Text(String),
    /// Child elements in document order (never empty: an element without children is `Text`).
    Tree(Vec<(String, Node)>),
}

/// The MsgTypes WeChat pushes to an Official Account: each is a [`Kind`] but `Other`.
pub const MSG_TYPES: &[&str] = &[
    "text",
    "image",
    "voice",
    "video",
    "shortvideo",
    "location",
    "link",
    "miniprogrampage",
    "event",
];

/// The events the model reads field by field, in WeChat's spelling: each is an [`Event`] but
/// `Other`.
pub const EVENTS: &[&str] = &[
    "subscribe",
    "unsubscribe",
    "SCAN",
    "LOCATION",
    "CLICK",
    "VIEW",
    "view_miniprogram",
    "scancode_push",
    "scancode_waitmsg",
    "pic_sysphoto",
    "pic_photo_or_album",
    "pic_weixin",
    "location_select",
    "TEMPLATESENDJOBFINISH",
    "MASSSENDJOBFINISH",
];

/// A push's MsgType, with the fields that type carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Text {
        content: Option<String>,
    },
    Image {
        pic_url: Option<String>,
        media_id: Option<String>,
    },
    Voice {
        media_id: Option<String>,
        format: Option<String>,
        /// Speech recognition result, when the account has it switched on.
        recognition: Option<String>,
    },
    Video(Video),
    ShortVideo(Video),
    Location {
        /// `Location_X`: latitude.
        location_x: Option<Numeric<f64>>,
        /// `Location_Y`: longitude.
        location_y: Option<Numeric<f64>>,
        scale: Option<Numeric<u32>>,
        label: Option<String>,
    },
    Link {
        title: Option<String>,
        description: Option<String>,
        url: Option<String>,
    },
    MiniProgramPage {
        title: Option<String>,
        app_id: Option<String>,
        page_path: Option<String>,
        thumb_url: Option<String>,
        thumb_media_id: Option<String>,
    },
    Event(Event),
    /// A MsgType this version does not know; its fields are in [`Message::extra`].
    Other {
        msg_type: String,
    },
}

/// `video` and `shortvideo` carry the same fields.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Video {
    pub media_id: Option<String>,
    pub thumb_media_id: Option<String>,
}

/// A number as sent: parsed when it parses, otherwise kept as the text.
#[derive(Debug, Clone, PartialEq)]
pub enum Numeric<T> {
    Parsed(T),
    Raw(String),
}

impl<T: FromStr> Numeric<T> {
    pub fn from_text(s: &str) -> Numeric<T> {
        match s.trim().parse() {
            Ok(v) => Numeric::Parsed(v),
            Err(_) => Numeric::Raw(s.to_owned()),
        }
    }
}

impl<T: Copy> Numeric<T> {
    /// The number, when it parsed.
    pub fn value(&self) -> Option<T> {
        match self {
            Numeric::Parsed(v) => Some(*v),
            Numeric::Raw(_) => None,
        }
    }
}

impl<T: fmt::Display> fmt::Display for Numeric<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Numeric::Parsed(v) => v.fmt(f),
            Numeric::Raw(s) => f.write_str(s),
        }
    }
}

/// `MsgType=event`, by `Event` name (compared case-insensitively).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `subscribe`; from a parametric QR code it carries `EventKey=qrscene_<scene>` and `Ticket`.
    Subscribe {
        event_key: Option<String>,
        ticket: Option<String>,
    },
    Unsubscribe,
    /// `SCAN`: an already-subscribed user scanned a parametric QR code; `EventKey` is the scene.
    Scan {
        event_key: Option<String>,
        ticket: Option<String>,
    },
    /// `LOCATION`: the periodic location report.
    Location {
        latitude: Option<Numeric<f64>>,
        longitude: Option<Numeric<f64>>,
        precision: Option<Numeric<f64>>,
    },
    Click {
        event_key: Option<String>,
    },
    View {
        event_key: Option<String>,
        menu_id: Option<String>,
    },
    ViewMiniprogram {
        event_key: Option<String>,
        menu_id: Option<String>,
    },
    ScancodePush(ScanCode),
    ScancodeWaitmsg(ScanCode),
    PicSysphoto(SendPics),
    PicPhotoOrAlbum(SendPics),
    PicWeixin(SendPics),
    LocationSelect {
        event_key: Option<String>,
        send_location_info: SendLocationInfo,
    },
    TemplateSendJobFinish {
        status: Option<String>,
    },
    MassSendJobFinish {
        status: Option<String>,
        total_count: Option<Numeric<u64>>,
        filter_count: Option<Numeric<u64>>,
        sent_count: Option<Numeric<u64>>,
        error_count: Option<Numeric<u64>>,
    },
    /// An event this version does not know (its name as sent, `""` when `Event` is absent); its
    /// other fields are in [`Message::extra`].
    Other {
        event: String,
        event_key: Option<String>,
    },
}

/// `scancode_push` / `scancode_waitmsg`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScanCode {
    pub event_key: Option<String>,
    /// `ScanCodeInfo/ScanType`, e.g. `qrcode`.
    pub scan_type: Option<String>,
    /// `ScanCodeInfo/ScanResult`.
    pub scan_result: Option<String>,
}

/// `pic_sysphoto` / `pic_photo_or_album` / `pic_weixin`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SendPics {
    pub event_key: Option<String>,
    /// `SendPicsInfo/Count` as sent.
    pub count: Option<Numeric<u32>>,
    /// `SendPicsInfo/PicList/item/PicMd5Sum`, one per picture.
    pub pic_md5_sums: Vec<String>,
}

/// `location_select`'s `SendLocationInfo`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SendLocationInfo {
    pub location_x: Option<Numeric<f64>>,
    pub location_y: Option<Numeric<f64>>,
    pub scale: Option<Numeric<u32>>,
    pub label: Option<String>,
    pub poiname: Option<String>,
}

/// Why a document cannot be a push at all.
#[derive(Debug, Clone, PartialEq)]
pub enum ParseError {
    /// The bytes are not acceptable XML (see [`XmlError`]).
    Xml(XmlError),
    /// The root element is not `<xml>` (its name is not kept: it comes from the body).
    WrongRoot,
    /// There is no `MsgType`, so nothing says what the document is.
    NoMsgType,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Xml(e) => e.fmt(f),
            ParseError::WrongRoot => f.write_str("the root element is not <xml>"),
            ParseError::NoMsgType => f.write_str("missing MsgType"),
        }
    }
}

impl std::error::Error for ParseError {}

impl From<XmlError> for ParseError {
    fn from(e: XmlError) -> Self {
        ParseError::Xml(e)
    }
}

/// The fields every push carries, read by [`Message::from_element`] before the kind's own.
const COMMON: [&str; 6] = [
    "ToUserName",
    "FromUserName",
    "CreateTime",
    "MsgType",
    "MsgId",
    "MsgID",
];

impl Message {
    /// A push of `kind` from `from` to `to`, with no MsgId and no extra fields.
    pub fn new(to: &str, from: &str, create_time: u64, kind: Kind) -> Message {
        Message {
            to_user_name: Some(to.to_owned()),
            from_user_name: Some(from.to_owned()),
            create_time: Some(Numeric::Parsed(create_time)),
            msg_id: None,
            kind,
            extra: Vec::new(),
        }
    }

    /// The same push with `MsgId` set.
    pub fn with_msg_id(mut self, msg_id: impl ToString) -> Message {
        self.msg_id = Some(msg_id.to_string());
        self
    }

    /// Sanitizes and parses a push body.
    pub fn parse_bytes(body: &[u8]) -> Result<Message, ParseError> {
        Message::parse_clean(&xml::sanitize(body)?)
    }

    /// Sanitizes and parses a push given as text.
    pub fn parse(text: &str) -> Result<Message, ParseError> {
        Message::parse_bytes(text.as_bytes())
    }

    /// Parses a document that already went through [`xml::sanitize`]. A flat push (every
    /// push but the menu events with nested info) is read without the tree parser, which was
    /// more than half of a plain push's CPU (xml-rs lexes one character at a time);
    /// [`xml::flat_fields`] accepts only documents the parser reads the same way.
    pub fn parse_clean(clean: &Clean<'_>) -> Result<Message, ParseError> {
        match xml::flat_fields(clean) {
            Some(fields) => Message::read(&Fields::new(Source::Flat(&fields))),
            None => Message::from_element(&xml::parse(clean)?),
        }
    }

    /// Reads a push from its `<xml>` element.
    pub fn from_element(root: &Element) -> Result<Message, ParseError> {
        if root.name != "xml" {
            return Err(ParseError::WrongRoot);
        }
        Message::read(&Fields::new(Source::Tree(root)))
    }

    /// Reads a push from the fields of its `<xml>` root.
    fn read(f: &Fields<'_>) -> Result<Message, ParseError> {
        let msg_type = f.get("MsgType").ok_or(ParseError::NoMsgType)?;
        let kind = match msg_type.as_str() {
            "text" => Kind::Text {
                content: f.get("Content"),
            },
            "image" => Kind::Image {
                pic_url: f.get("PicUrl"),
                media_id: f.get("MediaId"),
            },
            "voice" => Kind::Voice {
                media_id: f.get("MediaId"),
                format: f.get("Format"),
                recognition: f.get("Recognition"),
            },
            "video" => Kind::Video(f.video()),
            "shortvideo" => Kind::ShortVideo(f.video()),
            "location" => Kind::Location {
                location_x: f.numeric("Location_X"),
                location_y: f.numeric("Location_Y"),
                scale: f.numeric("Scale"),
                label: f.get("Label"),
            },
            "link" => Kind::Link {
                title: f.get("Title"),
                description: f.get("Description"),
                url: f.get("Url"),
            },
            "miniprogrampage" => Kind::MiniProgramPage {
                title: f.get("Title"),
                app_id: f.get("AppId"),
                page_path: f.get("PagePath"),
                thumb_url: f.get("ThumbUrl"),
                thumb_media_id: f.get("ThumbMediaId"),
            },
            "event" => Kind::Event(parse_event(f)),
            _ => Kind::Other {
                msg_type: msg_type.clone(),
            },
        };
        Ok(Message {
            to_user_name: f.get("ToUserName"),
            from_user_name: f.get("FromUserName"),
            create_time: f.numeric("CreateTime"),
            msg_id: f.get("MsgId").or_else(|| f.get("MsgID")),
            kind,
            extra: f.rest(),
        })
    }

    /// The push as WeChat sends it in plaintext mode. [`Message::parse`] reads it back to an
    /// equal `Message`.
    pub fn to_xml(&self) -> String {
        let mut xml = Xml(String::with_capacity(320));
        xml.0.push_str("<xml>");
        self.write_fields(&mut xml);
        xml.0.push_str("</xml>");
        xml.0
    }

    /// Walks the push's fields in WeChat's names and order (absent fields left out) into
    /// `sink`: the XML above and Cloud Hosting's JSON (`json::push_json`) are both written from
    /// this one walk, so they cannot disagree on a field.
    pub fn write_fields(&self, sink: &mut dyn FieldSink) {
        let mut w = Writer(sink);
        w.text("ToUserName", &self.to_user_name);
        w.text("FromUserName", &self.from_user_name);
        w.number("CreateTime", &self.create_time);
        w.text("MsgType", &Some(self.msg_type().to_owned()));
        match &self.kind {
            Kind::Text { content } => w.text("Content", content),
            Kind::Image { pic_url, media_id } => {
                w.text("PicUrl", pic_url);
                w.text("MediaId", media_id);
            }
            Kind::Voice {
                media_id,
                format,
                recognition,
            } => {
                w.text("MediaId", media_id);
                w.text("Format", format);
                w.text("Recognition", recognition);
            }
            Kind::Video(v) | Kind::ShortVideo(v) => {
                w.text("MediaId", &v.media_id);
                w.text("ThumbMediaId", &v.thumb_media_id);
            }
            Kind::Location {
                location_x,
                location_y,
                scale,
                label,
            } => {
                w.number("Location_X", location_x);
                w.number("Location_Y", location_y);
                w.number("Scale", scale);
                w.text("Label", label);
            }
            Kind::Link {
                title,
                description,
                url,
            } => {
                w.text("Title", title);
                w.text("Description", description);
                w.text("Url", url);
            }
            Kind::MiniProgramPage {
                title,
                app_id,
                page_path,
                thumb_url,
                thumb_media_id,
            } => {
                w.text("Title", title);
                w.text("AppId", app_id);
                w.text("PagePath", page_path);
                w.text("ThumbUrl", thumb_url);
                w.text("ThumbMediaId", thumb_media_id);
            }
            Kind::Event(e) => w.event(e),
            Kind::Other { .. } => {}
        }
        // WeChat spells it MsgID on the job-finish events, MsgId everywhere else.
        let msg_id_name = match self.event() {
            Some(Event::TemplateSendJobFinish { .. } | Event::MassSendJobFinish { .. }) => "MsgID",
            _ => "MsgId",
        };
        w.raw_number(msg_id_name, &self.msg_id);
        for (name, node) in &self.extra {
            w.node(name, node);
        }
    }

    /// The MsgType as WeChat names it (`text`, `event`, ...).
    pub fn msg_type(&self) -> &str {
        match &self.kind {
            Kind::Text { .. } => "text",
            Kind::Image { .. } => "image",
            Kind::Voice { .. } => "voice",
            Kind::Video(_) => "video",
            Kind::ShortVideo(_) => "shortvideo",
            Kind::Location { .. } => "location",
            Kind::Link { .. } => "link",
            Kind::MiniProgramPage { .. } => "miniprogrampage",
            Kind::Event(_) => "event",
            Kind::Other { msg_type } => msg_type,
        }
    }

    /// Where the MsgType stands in [`MSG_TYPES`]; `None` for [`Kind::Other`].
    pub fn msg_type_index(&self) -> Option<usize> {
        Some(match &self.kind {
            Kind::Text { .. } => 0,
            Kind::Image { .. } => 1,
            Kind::Voice { .. } => 2,
            Kind::Video(_) => 3,
            Kind::ShortVideo(_) => 4,
            Kind::Location { .. } => 5,
            Kind::Link { .. } => 6,
            Kind::MiniProgramPage { .. } => 7,
            Kind::Event(_) => 8,
            Kind::Other { .. } => return None,
        })
    }

    /// `FromUserName`, or `""` when absent.
    pub fn from_user(&self) -> &str {
        self.from_user_name.as_deref().unwrap_or("")
    }

    /// `ToUserName`, or `""` when absent.
    pub fn to_user(&self) -> &str {
        self.to_user_name.as_deref().unwrap_or("")
    }

    /// What the user said: a text's `Content`, or a voice message's `Recognition` when present.
    pub fn said(&self) -> Option<&str> {
        match &self.kind {
            Kind::Text { content } => content.as_deref(),
            Kind::Voice { recognition, .. } => recognition.as_deref(),
            _ => None,
        }
    }

    pub fn event(&self) -> Option<&Event> {
        match &self.kind {
            Kind::Event(e) => Some(e),
            _ => None,
        }
    }

    /// A field kept in [`Message::extra`], by name, when it is text.
    pub fn extra_text(&self, name: &str) -> Option<&str> {
        self.extra.iter().find_map(|(n, v)| match v {
            Node::Text(t) if n == name => Some(t.as_str()),
            _ => None,
        })
    }
}

impl Event {
    /// The `Event` name in WeChat's canonical spelling (or as sent, for unknown events).
    pub fn name(&self) -> &str {
        match self {
            Event::Subscribe { .. } => "subscribe",
            Event::Unsubscribe => "unsubscribe",
            Event::Scan { .. } => "SCAN",
            Event::Location { .. } => "LOCATION",
            Event::Click { .. } => "CLICK",
            Event::View { .. } => "VIEW",
            Event::ViewMiniprogram { .. } => "view_miniprogram",
            Event::ScancodePush(_) => "scancode_push",
            Event::ScancodeWaitmsg(_) => "scancode_waitmsg",
            Event::PicSysphoto(_) => "pic_sysphoto",
            Event::PicPhotoOrAlbum(_) => "pic_photo_or_album",
            Event::PicWeixin(_) => "pic_weixin",
            Event::LocationSelect { .. } => "location_select",
            Event::TemplateSendJobFinish { .. } => "TEMPLATESENDJOBFINISH",
            Event::MassSendJobFinish { .. } => "MASSSENDJOBFINISH",
            Event::Other { event, .. } => event,
        }
    }

    /// Where the event stands in [`EVENTS`]; `None` for [`Event::Other`].
    pub fn index(&self) -> Option<usize> {
        Some(match self {
            Event::Subscribe { .. } => 0,
            Event::Unsubscribe => 1,
            Event::Scan { .. } => 2,
            Event::Location { .. } => 3,
            Event::Click { .. } => 4,
            Event::View { .. } => 5,
            Event::ViewMiniprogram { .. } => 6,
            Event::ScancodePush(_) => 7,
            Event::ScancodeWaitmsg(_) => 8,
            Event::PicSysphoto(_) => 9,
            Event::PicPhotoOrAlbum(_) => 10,
            Event::PicWeixin(_) => 11,
            Event::LocationSelect { .. } => 12,
            Event::TemplateSendJobFinish { .. } => 13,
            Event::MassSendJobFinish { .. } => 14,
            Event::Other { .. } => return None,
        })
    }

    /// The `EventKey`, for the events that carry one.
    pub fn event_key(&self) -> Option<&str> {
        match self {
            Event::Subscribe { event_key, .. }
            | Event::Other { event_key, .. }
            | Event::Scan { event_key, .. }
            | Event::Click { event_key }
            | Event::View { event_key, .. }
            | Event::ViewMiniprogram { event_key, .. }
            | Event::LocationSelect { event_key, .. } => event_key.as_deref(),
            Event::ScancodePush(s) | Event::ScancodeWaitmsg(s) => s.event_key.as_deref(),
            Event::PicSysphoto(p) | Event::PicPhotoOrAlbum(p) | Event::PicWeixin(p) => {
                p.event_key.as_deref()
            }
            Event::Unsubscribe
            | Event::Location { .. }
            | Event::TemplateSendJobFinish { .. }
            | Event::MassSendJobFinish { .. } => None,
        }
    }

    /// The parametric QR code's scene: `EventKey` without `qrscene_` on subscribe, the raw
    /// `EventKey` on SCAN.
    pub fn scene(&self) -> Option<&str> {
        match self {
            Event::Subscribe {
                event_key: Some(key),
                ..
            } => key.strip_prefix("qrscene_"),
            Event::Scan { event_key, .. } => event_key.as_deref(),
            _ => None,
        }
    }
}

fn parse_event(f: &Fields<'_>) -> Event {
    let name = f.get("Event").unwrap_or_default();
    let key = || f.get("EventKey");
    match name.to_ascii_lowercase().as_str() {
        "subscribe" => Event::Subscribe {
            event_key: key(),
            ticket: f.get("Ticket"),
        },
        "unsubscribe" => Event::Unsubscribe,
        "scan" => Event::Scan {
            event_key: key(),
            ticket: f.get("Ticket"),
        },
        "location" => Event::Location {
            latitude: f.numeric("Latitude"),
            longitude: f.numeric("Longitude"),
            precision: f.numeric("Precision"),
        },
        "click" => Event::Click { event_key: key() },
        "view" => Event::View {
            event_key: key(),
            menu_id: f.get("MenuId"),
        },
        "view_miniprogram" => Event::ViewMiniprogram {
            event_key: key(),
            menu_id: f.get("MenuId"),
        },
        "scancode_push" => Event::ScancodePush(f.scan_code()),
        "scancode_waitmsg" => Event::ScancodeWaitmsg(f.scan_code()),
        "pic_sysphoto" => Event::PicSysphoto(f.send_pics()),
        "pic_photo_or_album" => Event::PicPhotoOrAlbum(f.send_pics()),
        "pic_weixin" => Event::PicWeixin(f.send_pics()),
        "location_select" => {
            let info = f.child("SendLocationInfo");
            let sub = |name: &str| info.and_then(|i| child_text(i, name));
            Event::LocationSelect {
                event_key: key(),
                send_location_info: SendLocationInfo {
                    location_x: sub("Location_X").map(|s| Numeric::from_text(&s)),
                    location_y: sub("Location_Y").map(|s| Numeric::from_text(&s)),
                    scale: sub("Scale").map(|s| Numeric::from_text(&s)),
                    label: sub("Label"),
                    poiname: sub("Poiname"),
                },
            }
        }
        "templatesendjobfinish" => Event::TemplateSendJobFinish {
            status: f.get("Status"),
        },
        "masssendjobfinish" => Event::MassSendJobFinish {
            status: f.get("Status"),
            total_count: f.numeric("TotalCount"),
            filter_count: f.numeric("FilterCount"),
            sent_count: f.numeric("SentCount"),
            error_count: f.numeric("ErrorCount"),
        },
        _ => Event::Other {
            event: name,
            event_key: key(),
        },
    }
}

/// Where a push's fields are: the parsed tree, or a flat document's `(name, text)` pairs in
/// document order ([`xml::flat_fields`]).
enum Source<'a> {
    Tree(&'a Element),
    Flat(&'a [(&'a str, &'a str)]),
}

/// Field access on the `<xml>` root that remembers which fields were read, so the rest can be
/// kept in [`Message::extra`].
struct Fields<'a> {
    root: Source<'a>,
    used: std::cell::RefCell<Vec<&'static str>>,
}

impl<'a> Fields<'a> {
    fn new(root: Source<'a>) -> Fields<'a> {
        Fields {
            root,
            used: std::cell::RefCell::new(COMMON.to_vec()),
        }
    }

    fn mark(&self, name: &'static str) {
        self.used.borrow_mut().push(name);
    }

    fn get(&self, name: &'static str) -> Option<String> {
        self.mark(name);
        match self.root {
            Source::Tree(root) => child_text(root, name),
            Source::Flat(fields) => fields
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned()),
        }
    }

    /// A field's child elements; a flat document has none.
    fn child(&self, name: &'static str) -> Option<&'a Element> {
        self.mark(name);
        match self.root {
            Source::Tree(root) => root.get_child(name),
            Source::Flat(_) => None,
        }
    }

    fn numeric<T: FromStr>(&self, name: &'static str) -> Option<Numeric<T>> {
        self.get(name).map(|s| Numeric::from_text(&s))
    }

    fn video(&self) -> Video {
        Video {
            media_id: self.get("MediaId"),
            thumb_media_id: self.get("ThumbMediaId"),
        }
    }

    fn scan_code(&self) -> ScanCode {
        let info = self.child("ScanCodeInfo");
        let sub = |name: &str| info.and_then(|i| child_text(i, name));
        ScanCode {
            event_key: self.get("EventKey"),
            scan_type: sub("ScanType"),
            scan_result: sub("ScanResult"),
        }
    }

    fn send_pics(&self) -> SendPics {
        let info = self.child("SendPicsInfo");
        let pic_md5_sums = info
            .and_then(|i| i.get_child("PicList"))
            .map(|list| {
                elements(list)
                    .filter(|e| e.name == "item")
                    .filter_map(|item| child_text(item, "PicMd5Sum"))
                    .collect()
            })
            .unwrap_or_default();
        SendPics {
            event_key: self.get("EventKey"),
            count: info
                .and_then(|i| child_text(i, "Count"))
                .map(|s| Numeric::from_text(&s)),
            pic_md5_sums,
        }
    }

    /// Every top-level child not read above, in document order.
    fn rest(&self) -> Vec<(String, Node)> {
        let used = self.used.borrow();
        match self.root {
            Source::Tree(root) => elements(root)
                .filter(|e| !used.contains(&e.name.as_str()))
                .map(|e| (e.name.clone(), Node::of(e)))
                .collect(),
            Source::Flat(fields) => fields
                .iter()
                .filter(|(n, _)| !used.contains(n))
                .map(|(n, v)| ((*n).to_owned(), Node::Text((*v).to_owned())))
                .collect(),
        }
    }
}

fn elements(parent: &Element) -> impl Iterator<Item = &Element> {
    parent.children.iter().filter_map(XMLNode::as_element)
}

impl Node {
    fn of(e: &Element) -> Node {
        let children: Vec<(String, Node)> =
            elements(e).map(|c| (c.name.clone(), Node::of(c))).collect();
        if children.is_empty() {
            Node::Text(e.get_text().map(|t| t.into_owned()).unwrap_or_default())
        } else {
            Node::Tree(children)
        }
    }
}

/// Where [`Message::write_fields`] puts a push's fields.
pub trait FieldSink {
    /// A text field (in XML: `<name><![CDATA[text]]></name>`).
    fn text(&mut self, name: &str, text: &str);
    /// A number, or a field WeChat writes bare when it is a number (in XML: `<name>v</name>`).
    fn bare(&mut self, name: &str, v: &str);
    /// An element with child elements begins; the fields until [`FieldSink::close`] are its.
    fn open(&mut self, name: &str);
    fn close(&mut self, name: &str);
}

/// The push as XML, the way WeChat writes it.
struct Xml(String);

impl FieldSink for Xml {
    fn text(&mut self, name: &str, text: &str) {
        push_cdata_element(&mut self.0, name, text);
    }

    fn bare(&mut self, name: &str, v: &str) {
        self.0.push('<');
        self.0.push_str(name);
        self.0.push('>');
        self.0.push_str(v);
        self.0.push_str("</");
        self.0.push_str(name);
        self.0.push('>');
    }

    fn open(&mut self, name: &str) {
        self.0.push('<');
        self.0.push_str(name);
        self.0.push('>');
    }

    fn close(&mut self, name: &str) {
        self.0.push_str("</");
        self.0.push_str(name);
        self.0.push('>');
    }
}

/// Writes the push's elements into a sink; absent fields are left out.
struct Writer<'s>(&'s mut dyn FieldSink);

impl Writer<'_> {
    fn text(&mut self, name: &str, value: &Option<String>) {
        if let Some(v) = value {
            self.0.text(name, v);
        }
    }

    /// A number as WeChat writes it (bare); text that did not parse goes in CDATA, as sent.
    fn number<T: fmt::Display>(&mut self, name: &str, value: &Option<Numeric<T>>) {
        match value {
            Some(Numeric::Parsed(v)) => self.bare(name, &v.to_string()),
            Some(Numeric::Raw(s)) => self.0.text(name, s),
            None => {}
        }
    }

    /// A field WeChat writes bare when it is a number (MsgId), in CDATA otherwise.
    fn raw_number(&mut self, name: &str, value: &Option<String>) {
        match value {
            Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => self.bare(name, v),
            other => self.text(name, other),
        }
    }

    fn bare(&mut self, name: &str, v: &str) {
        self.0.bare(name, v);
    }

    fn open(&mut self, name: &str) {
        self.0.open(name);
    }

    fn close(&mut self, name: &str) {
        self.0.close(name);
    }

    fn node(&mut self, name: &str, node: &Node) {
        match node {
            Node::Text(t) => self.0.text(name, t),
            Node::Tree(children) => {
                self.open(name);
                for (n, c) in children {
                    self.node(n, c);
                }
                self.close(name);
            }
        }
    }

    fn event(&mut self, e: &Event) {
        self.text("Event", &Some(e.name().to_owned()));
        match e {
            Event::Subscribe { event_key, ticket } | Event::Scan { event_key, ticket } => {
                self.text("EventKey", event_key);
                self.text("Ticket", ticket);
            }
            Event::Unsubscribe => {}
            Event::Location {
                latitude,
                longitude,
                precision,
            } => {
                self.number("Latitude", latitude);
                self.number("Longitude", longitude);
                self.number("Precision", precision);
            }
            Event::Click { event_key } | Event::Other { event_key, .. } => {
                self.text("EventKey", event_key)
            }
            Event::View { event_key, menu_id } | Event::ViewMiniprogram { event_key, menu_id } => {
                self.text("EventKey", event_key);
                self.text("MenuId", menu_id);
            }
            Event::ScancodePush(s) | Event::ScancodeWaitmsg(s) => {
                self.text("EventKey", &s.event_key);
                if s.scan_type.is_some() || s.scan_result.is_some() {
                    self.open("ScanCodeInfo");
                    self.text("ScanType", &s.scan_type);
                    self.text("ScanResult", &s.scan_result);
                    self.close("ScanCodeInfo");
                }
            }
            Event::PicSysphoto(p) | Event::PicPhotoOrAlbum(p) | Event::PicWeixin(p) => {
                self.text("EventKey", &p.event_key);
                if p.count.is_some() || !p.pic_md5_sums.is_empty() {
                    self.open("SendPicsInfo");
                    self.number("Count", &p.count);
                    if !p.pic_md5_sums.is_empty() {
                        self.open("PicList");
                        for sum in &p.pic_md5_sums {
                            self.open("item");
                            self.0.text("PicMd5Sum", sum);
                            self.close("item");
                        }
                        self.close("PicList");
                    }
                    self.close("SendPicsInfo");
                }
            }
            Event::LocationSelect {
                event_key,
                send_location_info: i,
            } => {
                self.text("EventKey", event_key);
                let any = i.location_x.is_some()
                    || i.location_y.is_some()
                    || i.scale.is_some()
                    || i.label.is_some()
                    || i.poiname.is_some();
                if any {
                    self.open("SendLocationInfo");
                    self.number("Location_X", &i.location_x);
                    self.number("Location_Y", &i.location_y);
                    self.number("Scale", &i.scale);
                    self.text("Label", &i.label);
                    self.text("Poiname", &i.poiname);
                    self.close("SendLocationInfo");
                }
            }
            Event::TemplateSendJobFinish { status } => self.text("Status", status),
            Event::MassSendJobFinish {
                status,
                total_count,
                filter_count,
                sent_count,
                error_count,
            } => {
                self.text("Status", status);
                self.number("TotalCount", total_count);
                self.number("FilterCount", filter_count);
                self.number("SentCount", sent_count);
                self.number("ErrorCount", error_count);
            }
        }
    }
}

#[cfg(test)]
mod tests;
