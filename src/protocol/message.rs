//! Incoming WeChat pushes: XML → a typed [`Message`].
//!
//! In scope: every MsgType and event an Official Account receives, with WeChat's field names mapped
//! to snake_case (`FromUserName` → `from_user_name`). Out of scope: where the XML came from (plain
//! body or decrypted `Encrypt`) and what to answer.
//!
//! A required field that is missing, or a required number that does not parse, is an error;
//! optional numbers that do not parse are kept as their raw text ([`Numeric::Raw`]).

use std::fmt;
use std::str::FromStr;

use xmltree::Element;

use crate::protocol::xml::{self, child_text, Clean, XmlError};

/// One push from WeChat: the fields every push carries, and what kind of push it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// `ToUserName`: the Official Account's original id (`gh_…`).
    pub to_user_name: String,
    /// `FromUserName`: the user's OpenID.
    pub from_user_name: String,
    /// `CreateTime`, seconds since the Unix epoch.
    pub create_time: u64,
    /// `MsgId` (messages), or `MsgID` as WeChat spells it on the *JOBFINISH events.
    pub msg_id: Option<String>,
    pub kind: Kind,
}

/// A push's MsgType, with the fields that type carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Text {
        content: String,
    },
    Image {
        pic_url: String,
        media_id: String,
    },
    Voice {
        media_id: String,
        format: String,
        /// Speech recognition result, when the account has it switched on.
        recognition: Option<String>,
    },
    Video(Video),
    ShortVideo(Video),
    Location {
        /// `Location_X`: latitude.
        location_x: f64,
        /// `Location_Y`: longitude.
        location_y: f64,
        scale: Option<Numeric<u32>>,
        label: String,
    },
    Link {
        title: String,
        description: String,
        url: String,
    },
    MiniProgramPage {
        title: String,
        app_id: String,
        page_path: String,
        thumb_url: String,
        thumb_media_id: String,
    },
    Event(Event),
    /// A MsgType this version does not know; every top-level field is kept as text.
    Other {
        msg_type: String,
        fields: Vec<(String, String)>,
    },
}

/// `video` and `shortvideo` carry the same fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Video {
    pub media_id: String,
    pub thumb_media_id: String,
}

/// A number from an optional field: parsed when it parses, otherwise kept as sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Numeric<T> {
    Parsed(T),
    Raw(String),
}

impl<T: FromStr> Numeric<T> {
    fn from_text(s: &str) -> Numeric<T> {
        match s.trim().parse() {
            Ok(v) => Numeric::Parsed(v),
            Err(_) => Numeric::Raw(s.to_owned()),
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
        event_key: String,
        ticket: Option<String>,
    },
    /// `LOCATION`: the periodic location report.
    Location {
        latitude: f64,
        longitude: f64,
        precision: Option<Numeric<f64>>,
    },
    Click {
        event_key: String,
    },
    View {
        event_key: String,
        menu_id: Option<String>,
    },
    ViewMiniprogram {
        event_key: String,
        menu_id: Option<String>,
    },
    ScancodePush(ScanCode),
    ScancodeWaitmsg(ScanCode),
    PicSysphoto(SendPics),
    PicPhotoOrAlbum(SendPics),
    PicWeixin(SendPics),
    LocationSelect {
        event_key: String,
        send_location_info: SendLocationInfo,
    },
    TemplateSendJobFinish {
        status: String,
    },
    MassSendJobFinish {
        status: String,
        total_count: Option<Numeric<u64>>,
        filter_count: Option<Numeric<u64>>,
        sent_count: Option<Numeric<u64>>,
        error_count: Option<Numeric<u64>>,
    },
    /// An event this version does not know; every top-level field is kept as text.
    Other {
        event: String,
        event_key: Option<String>,
        fields: Vec<(String, String)>,
    },
}

/// `scancode_push` / `scancode_waitmsg`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanCode {
    pub event_key: String,
    /// `ScanCodeInfo/ScanType`, e.g. `qrcode`.
    pub scan_type: String,
    /// `ScanCodeInfo/ScanResult`.
    pub scan_result: String,
}

/// `pic_sysphoto` / `pic_photo_or_album` / `pic_weixin`.
#[derive(Debug, Clone, PartialEq)]
pub struct SendPics {
    pub event_key: String,
    /// `SendPicsInfo/Count` as sent.
    pub count: Option<Numeric<u32>>,
    /// `SendPicsInfo/PicList/item/PicMd5Sum`, one per picture.
    pub pic_md5_sums: Vec<String>,
}

/// `location_select`'s `SendLocationInfo`.
#[derive(Debug, Clone, PartialEq)]
pub struct SendLocationInfo {
    pub location_x: Option<Numeric<f64>>,
    pub location_y: Option<Numeric<f64>>,
    pub scale: Option<Numeric<u32>>,
    pub label: String,
    pub poiname: String,
}

/// Why a push could not be understood.
#[derive(Debug, Clone, PartialEq)]
pub enum ParseError {
    /// The bytes are not acceptable XML (see [`XmlError`]).
    Xml(XmlError),
    /// The root element is not `<xml>`.
    WrongRoot(String),
    /// A field this MsgType requires is absent.
    MissingField(&'static str),
    /// A required number does not parse.
    BadNumber { field: &'static str, value: String },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Xml(e) => e.fmt(f),
            ParseError::WrongRoot(name) => write!(f, "root element is <{name}>, expected <xml>"),
            ParseError::MissingField(name) => write!(f, "missing {name}"),
            ParseError::BadNumber { field, .. } => write!(f, "{field} is not a number"),
        }
    }
}

impl std::error::Error for ParseError {}

impl From<XmlError> for ParseError {
    fn from(e: XmlError) -> Self {
        ParseError::Xml(e)
    }
}

impl Message {
    /// Sanitizes and parses a push body.
    pub fn parse_bytes(body: &[u8]) -> Result<Message, ParseError> {
        Message::parse_clean(&xml::sanitize(body)?)
    }

    /// Sanitizes and parses a push given as text.
    pub fn parse(text: &str) -> Result<Message, ParseError> {
        Message::parse_bytes(text.as_bytes())
    }

    /// Parses a document that already went through [`xml::sanitize`].
    pub fn parse_clean(clean: &Clean<'_>) -> Result<Message, ParseError> {
        Message::from_element(&xml::parse(clean)?)
    }

    /// Reads a push from its `<xml>` element.
    pub fn from_element(root: &Element) -> Result<Message, ParseError> {
        if root.name != "xml" {
            return Err(ParseError::WrongRoot(root.name.clone()));
        }
        let f = Fields(root);
        let msg_type = f.required("MsgType")?;
        let kind = match msg_type.as_str() {
            "text" => Kind::Text {
                content: f.required("Content")?,
            },
            "image" => Kind::Image {
                pic_url: f.text("PicUrl"),
                media_id: f.required("MediaId")?,
            },
            "voice" => Kind::Voice {
                media_id: f.required("MediaId")?,
                format: f.text("Format"),
                recognition: f.optional("Recognition"),
            },
            "video" => Kind::Video(f.video()?),
            "shortvideo" => Kind::ShortVideo(f.video()?),
            "location" => Kind::Location {
                location_x: f.required_number("Location_X")?,
                location_y: f.required_number("Location_Y")?,
                scale: f.numeric("Scale"),
                label: f.text("Label"),
            },
            "link" => Kind::Link {
                title: f.text("Title"),
                description: f.text("Description"),
                url: f.required("Url")?,
            },
            "miniprogrampage" => Kind::MiniProgramPage {
                title: f.text("Title"),
                app_id: f.text("AppId"),
                page_path: f.text("PagePath"),
                thumb_url: f.text("ThumbUrl"),
                thumb_media_id: f.text("ThumbMediaId"),
            },
            "event" => Kind::Event(parse_event(&f)?),
            _ => Kind::Other {
                msg_type: msg_type.clone(),
                fields: f.all(),
            },
        };
        Ok(Message {
            to_user_name: f.required("ToUserName")?,
            from_user_name: f.required("FromUserName")?,
            create_time: f.required_number("CreateTime")?,
            msg_id: f.optional("MsgId").or_else(|| f.optional("MsgID")),
            kind,
        })
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
            Kind::Other { msg_type, .. } => msg_type,
        }
    }

    /// What the user said: a text's `Content`, or a voice message's `Recognition` when present.
    pub fn said(&self) -> Option<&str> {
        match &self.kind {
            Kind::Text { content } => Some(content),
            Kind::Voice {
                recognition: Some(r),
                ..
            } => Some(r),
            _ => None,
        }
    }

    pub fn event(&self) -> Option<&Event> {
        match &self.kind {
            Kind::Event(e) => Some(e),
            _ => None,
        }
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

    /// The `EventKey`, for the events that carry one.
    pub fn event_key(&self) -> Option<&str> {
        match self {
            Event::Subscribe { event_key, .. } | Event::Other { event_key, .. } => {
                event_key.as_deref()
            }
            Event::Scan { event_key, .. }
            | Event::Click { event_key }
            | Event::View { event_key, .. }
            | Event::ViewMiniprogram { event_key, .. }
            | Event::LocationSelect { event_key, .. } => Some(event_key),
            Event::ScancodePush(s) | Event::ScancodeWaitmsg(s) => Some(&s.event_key),
            Event::PicSysphoto(p) | Event::PicPhotoOrAlbum(p) | Event::PicWeixin(p) => {
                Some(&p.event_key)
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
            Event::Scan { event_key, .. } => Some(event_key),
            _ => None,
        }
    }
}

fn parse_event(f: &Fields<'_>) -> Result<Event, ParseError> {
    let name = f.required("Event")?;
    let key = || f.text("EventKey");
    let lower = name.to_ascii_lowercase();
    Ok(match lower.as_str() {
        "subscribe" => Event::Subscribe {
            event_key: f.optional("EventKey").filter(|k| !k.is_empty()),
            ticket: f.optional("Ticket"),
        },
        "unsubscribe" => Event::Unsubscribe,
        "scan" => Event::Scan {
            event_key: key(),
            ticket: f.optional("Ticket"),
        },
        "location" => Event::Location {
            latitude: f.required_number("Latitude")?,
            longitude: f.required_number("Longitude")?,
            precision: f.numeric("Precision"),
        },
        "click" => Event::Click { event_key: key() },
        "view" => Event::View {
            event_key: key(),
            menu_id: f.optional("MenuId"),
        },
        "view_miniprogram" => Event::ViewMiniprogram {
            event_key: key(),
            menu_id: f.optional("MenuId"),
        },
        "scancode_push" => Event::ScancodePush(f.scan_code()),
        "scancode_waitmsg" => Event::ScancodeWaitmsg(f.scan_code()),
        "pic_sysphoto" => Event::PicSysphoto(f.send_pics()),
        "pic_photo_or_album" => Event::PicPhotoOrAlbum(f.send_pics()),
        "pic_weixin" => Event::PicWeixin(f.send_pics()),
        "location_select" => {
            let info = f.0.get_child("SendLocationInfo");
            let sub = |name: &str| info.and_then(|i| child_text(i, name));
            Event::LocationSelect {
                event_key: key(),
                send_location_info: SendLocationInfo {
                    location_x: sub("Location_X").map(|s| Numeric::from_text(&s)),
                    location_y: sub("Location_Y").map(|s| Numeric::from_text(&s)),
                    scale: sub("Scale").map(|s| Numeric::from_text(&s)),
                    label: sub("Label").unwrap_or_default(),
                    poiname: sub("Poiname").unwrap_or_default(),
                },
            }
        }
        "templatesendjobfinish" => Event::TemplateSendJobFinish {
            status: f.text("Status"),
        },
        "masssendjobfinish" => Event::MassSendJobFinish {
            status: f.text("Status"),
            total_count: f.numeric("TotalCount"),
            filter_count: f.numeric("FilterCount"),
            sent_count: f.numeric("SentCount"),
            error_count: f.numeric("ErrorCount"),
        },
        _ => Event::Other {
            event: name.clone(),
            event_key: f.optional("EventKey"),
            fields: f.all(),
        },
    })
}

/// Field access on the `<xml>` root.
struct Fields<'a>(&'a Element);

impl Fields<'_> {
    fn optional(&self, name: &str) -> Option<String> {
        child_text(self.0, name)
    }

    fn text(&self, name: &str) -> String {
        self.optional(name).unwrap_or_default()
    }

    fn required(&self, name: &'static str) -> Result<String, ParseError> {
        self.optional(name).ok_or(ParseError::MissingField(name))
    }

    fn required_number<T: FromStr>(&self, name: &'static str) -> Result<T, ParseError> {
        let raw = self.required(name)?;
        raw.trim().parse().map_err(|_| ParseError::BadNumber {
            field: name,
            value: raw,
        })
    }

    fn numeric<T: FromStr>(&self, name: &str) -> Option<Numeric<T>> {
        self.optional(name).map(|s| Numeric::from_text(&s))
    }

    fn video(&self) -> Result<Video, ParseError> {
        Ok(Video {
            media_id: self.required("MediaId")?,
            thumb_media_id: self.text("ThumbMediaId"),
        })
    }

    fn scan_code(&self) -> ScanCode {
        let info = self.0.get_child("ScanCodeInfo");
        let sub = |name: &str| info.and_then(|i| child_text(i, name)).unwrap_or_default();
        ScanCode {
            event_key: self.text("EventKey"),
            scan_type: sub("ScanType"),
            scan_result: sub("ScanResult"),
        }
    }

    fn send_pics(&self) -> SendPics {
        let info = self.0.get_child("SendPicsInfo");
        let pic_md5_sums = info
            .and_then(|i| i.get_child("PicList"))
            .map(|list| {
                list.children
                    .iter()
                    .filter_map(|n| n.as_element())
                    .filter(|e| e.name == "item")
                    .filter_map(|item| child_text(item, "PicMd5Sum"))
                    .collect()
            })
            .unwrap_or_default();
        SendPics {
            event_key: self.text("EventKey"),
            count: info
                .and_then(|i| child_text(i, "Count"))
                .map(|s| Numeric::from_text(&s)),
            pic_md5_sums,
        }
    }

    /// Every top-level child as (name, text), in document order, for the fallbacks.
    fn all(&self) -> Vec<(String, String)> {
        self.0
            .children
            .iter()
            .filter_map(|n| n.as_element())
            .map(|e| {
                let text = e.get_text().map(|t| t.into_owned()).unwrap_or_default();
                (e.name.clone(), text)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> Message {
        Message::parse_bytes(xml.as_bytes()).unwrap()
    }

    const TEXT: &str = "<xml><ToUserName><![CDATA[gh]]></ToUserName><FromUserName><![CDATA[o1]]></FromUserName><CreateTime>1348831860</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[天气]]></Content><MsgId>1234567890123456</MsgId></xml>";

    #[test]
    fn parses_text_message() {
        let m = parse(TEXT);
        assert_eq!(m.to_user_name, "gh");
        assert_eq!(m.from_user_name, "o1");
        assert_eq!(m.create_time, 1348831860);
        assert_eq!(m.msg_id.as_deref(), Some("1234567890123456"));
        assert_eq!(
            m.kind,
            Kind::Text {
                content: "天气".into()
            }
        );
        assert_eq!(m.said(), Some("天气"));
        assert_eq!(m.msg_type(), "text");
    }

    #[test]
    fn missing_msg_type_and_common_fields_are_errors() {
        let no_type = TEXT.replace("<MsgType><![CDATA[text]]></MsgType>", "");
        assert_eq!(
            Message::parse(&no_type),
            Err(ParseError::MissingField("MsgType"))
        );
        let no_from = TEXT.replace("<FromUserName><![CDATA[o1]]></FromUserName>", "");
        assert_eq!(
            Message::parse(&no_from),
            Err(ParseError::MissingField("FromUserName"))
        );
    }

    #[test]
    fn required_number_that_does_not_parse_is_an_error() {
        let bad = TEXT.replace("1348831860", "soon");
        assert_eq!(
            Message::parse(&bad),
            Err(ParseError::BadNumber {
                field: "CreateTime",
                value: "soon".into()
            })
        );
    }

    #[test]
    fn optional_number_that_does_not_parse_is_kept_raw() {
        let xml = "<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName><CreateTime>1</CreateTime><MsgType>location</MsgType><Location_X>1.5</Location_X><Location_Y>2</Location_Y><Scale>big</Scale></xml>";
        match parse(xml).kind {
            Kind::Location {
                scale, location_x, ..
            } => {
                assert_eq!(scale, Some(Numeric::Raw("big".into())));
                assert_eq!(location_x, 1.5);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wrong_root_is_an_error() {
        assert_eq!(
            Message::parse("<msg/>"),
            Err(ParseError::WrongRoot("msg".into()))
        );
    }

    #[test]
    fn event_names_compare_case_insensitively() {
        let xml = "<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName><CreateTime>1</CreateTime><MsgType>event</MsgType><Event>Click</Event><EventKey>K</EventKey></xml>";
        let m = parse(xml);
        assert_eq!(
            m.event(),
            Some(&Event::Click {
                event_key: "K".into()
            })
        );
        assert_eq!(m.event().map(Event::name), Some("CLICK"));
    }

    #[test]
    fn msg_id_is_read_in_both_spellings() {
        let xml = "<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName><CreateTime>1</CreateTime><MsgType>event</MsgType><Event>TEMPLATESENDJOBFINISH</Event><MsgID>42</MsgID><Status>success</Status></xml>";
        assert_eq!(parse(xml).msg_id.as_deref(), Some("42"));
    }

    #[test]
    fn unknown_event_keeps_its_fields() {
        let xml = "<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName><CreateTime>1</CreateTime><MsgType>event</MsgType><Event>new_thing</Event><Foo>bar</Foo></xml>";
        match parse(xml).event() {
            Some(Event::Other { event, fields, .. }) => {
                assert_eq!(event, "new_thing");
                assert!(fields.contains(&("Foo".into(), "bar".into())));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn scene_strips_qrscene_prefix_only_on_subscribe() {
        let sub = Event::Subscribe {
            event_key: Some("qrscene_123".into()),
            ticket: None,
        };
        assert_eq!(sub.scene(), Some("123"));
        let scan = Event::Scan {
            event_key: "123".into(),
            ticket: None,
        };
        assert_eq!(scan.scene(), Some("123"));
        assert_eq!(Event::Unsubscribe.scene(), None);
    }
}
