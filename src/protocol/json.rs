//! The JSON shape of WeChat Cloud Hosting (微信云托管): a push as a JSON object, and a passive
//! reply read back from one. Code written for Cloud Hosting runs behind wxmp unchanged.
//!
//! A push: the XML element names as keys, nested elements as nested objects, a repeated element
//! (`item` in `PicList`) as an array; `CreateTime` and `MsgId`/`MsgID` are JSON numbers when they
//! are numbers (MsgIds exceed 2^53, so JavaScript must read them as BigInt or text), everything
//! else a string, as in the XML. A reply: `{"MsgType":"text","Content":"..."}`,
//! `{"MsgType":"image","Image":{"MediaId":"..."}}`, ..., `{"MsgType":"news","Articles":[...]}`;
//! keys are matched without regard to case, and `ToUserName`, `FromUserName` and `CreateTime`
//! are ignored (the server fills them in from the push).

use std::fmt;

use serde_json::{Map, Value};
#[cfg(test)]
use xmltree::{Element, XMLNode};

use crate::protocol::message::{FieldSink, Message};
use crate::protocol::reply::{
    Adjustment, Answering, Article, Music, Reply, ReplyError, Video, MAX_ARTICLES,
};
use crate::protocol::xml;

/// Top-level fields that are JSON numbers when their text is a number.
const NUMBERS: [&str; 3] = ["CreateTime", "MsgId", "MsgID"];

/// The push as Cloud Hosting's JSON object.
pub fn push_json(msg: &Message) -> Value {
    // Written from the same walk of the fields as the XML (`Message::write_fields`), so that the
    // JSON carries exactly WeChat's names and nesting for every kind, unknown fields included.
    // It used to render the XML and parse it back: 7% of a forwarded push's CPU.
    let mut tree = Tree {
        open: vec![Vec::new()],
    };
    msg.write_fields(&mut tree);
    let top = tree.open.into_iter().next().unwrap_or_default();
    let mut out = Map::new();
    for (name, value) in top {
        let value = match value {
            Value::String(s) if NUMBERS.contains(&name.as_str()) => s
                .trim()
                .parse::<u64>()
                .map_or(Value::String(s), |n| Value::Number(n.into())),
            other => other,
        };
        insert(&mut out, name, value);
    }
    Value::Object(out)
}

/// The fields as (name, value) pairs, one list per element still open (the push's own first).
struct Tree {
    open: Vec<Vec<(String, Value)>>,
}

impl Tree {
    fn push(&mut self, name: &str, value: Value) {
        if let Some(fields) = self.open.last_mut() {
            fields.push((name.to_owned(), value));
        }
    }
}

impl FieldSink for Tree {
    fn text(&mut self, name: &str, text: &str) {
        // What an XML reader gives back for the text: XML 1.0 characters only.
        self.push(name, Value::String(xml::strip_forbidden(text).into_owned()));
    }

    fn bare(&mut self, name: &str, v: &str) {
        self.text(name, v);
    }

    fn open(&mut self, _name: &str) {
        self.open.push(Vec::new());
    }

    fn close(&mut self, name: &str) {
        if self.open.len() < 2 {
            return;
        }
        let kids = self.open.pop().unwrap_or_default();
        let value = if kids.is_empty() {
            Value::String(String::new())
        } else if kids.iter().all(|(n, _)| n == "item") {
            // A list of `item`s (PicList) is an array even with one item.
            Value::Array(kids.into_iter().map(|(_, v)| v).collect())
        } else {
            let mut map = Map::new();
            for (n, v) in kids {
                insert(&mut map, n, v);
            }
            Value::Object(map)
        };
        self.push(name, value);
    }
}

/// The push's JSON as it was made before [`push_json`] walked the fields: render the XML, parse
/// it back. Kept as the oracle its tests compare against.
#[cfg(test)]
fn push_json_via_xml(msg: &Message) -> Value {
    let rendered = msg.to_xml();
    let root = xml::sanitize(rendered.as_bytes())
        .ok()
        .and_then(|clean| xml::parse(&clean).ok());
    let mut out = Map::new();
    if let Some(root) = root {
        for (name, value) in children(&root) {
            let value = match value {
                Value::String(s) if NUMBERS.contains(&name.as_str()) => s
                    .trim()
                    .parse::<u64>()
                    .map_or(Value::String(s), |n| Value::Number(n.into())),
                other => other,
            };
            insert(&mut out, name, value);
        }
    }
    Value::Object(out)
}

#[cfg(test)]
fn elements(e: &Element) -> impl Iterator<Item = &Element> {
    e.children.iter().filter_map(XMLNode::as_element)
}

#[cfg(test)]
/// An element's children as (name, JSON value) pairs, in order.
fn children(e: &Element) -> Vec<(String, Value)> {
    elements(e)
        .map(|c| (c.name.clone(), element_value(c)))
        .collect()
}

#[cfg(test)]
fn element_value(e: &Element) -> Value {
    let kids: Vec<&Element> = elements(e).collect();
    if kids.is_empty() {
        return Value::String(e.get_text().map(|t| t.into_owned()).unwrap_or_default());
    }
    // A list of `item`s (PicList) is an array even with one item.
    if kids.iter().all(|k| k.name == "item") {
        return Value::Array(kids.into_iter().map(element_value).collect());
    }
    let mut map = Map::new();
    for (name, value) in children(e) {
        insert(&mut map, name, value);
    }
    Value::Object(map)
}

/// Adds `name`; a name seen before turns into an array of its values.
fn insert(map: &mut Map<String, Value>, name: String, value: Value) {
    match map.get_mut(&name) {
        None => {
            map.insert(name, value);
        }
        Some(Value::Array(items)) if !matches!(value, Value::Array(_)) => items.push(value),
        Some(existing) => {
            let first = std::mem::take(existing);
            *existing = Value::Array(vec![first, value]);
        }
    }
}

/// Why a body is not a passive reply wxmp can send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonReplyError {
    /// The body is neither `success`, empty, nor JSON.
    NotJson(String),
    /// The JSON is not an object.
    NotAnObject,
    /// No `MsgType` string.
    NoMsgType,
    /// A `MsgType` that is not a passive reply type.
    UnknownMsgType(String),
    /// A field the MsgType needs is missing or not a string.
    Missing(&'static str),
    /// The reply breaks a platform limit (9 articles, an empty MediaId, ...).
    Limit(ReplyError),
}

impl fmt::Display for JsonReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonReplyError::NotJson(e) => write!(f, "the answer is not JSON ({e})"),
            JsonReplyError::NotAnObject => f.write_str("the answer is JSON but not an object"),
            JsonReplyError::NoMsgType => f.write_str("the answer has no MsgType"),
            JsonReplyError::UnknownMsgType(t) => {
                write!(f, "MsgType {t:?} is not a passive reply type")
            }
            JsonReplyError::Missing(name) => write!(f, "the answer has no {name}"),
            JsonReplyError::Limit(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for JsonReplyError {}

impl From<ReplyError> for JsonReplyError {
    fn from(e: ReplyError) -> Self {
        JsonReplyError::Limit(e)
    }
}

/// A reply read from the user's code, and any change made to fit WeChat's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonReply {
    pub reply: Reply,
    pub adjustment: Option<Adjustment>,
}

/// Reads an answer: `success` or an empty body mean no reply (`Reply::Success`).
pub fn reply_from_json(body: &[u8], answering: Answering) -> Result<JsonReply, JsonReplyError> {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() || text == "success" {
        return Ok(JsonReply {
            reply: Reply::Success,
            adjustment: None,
        });
    }
    let value: Value =
        serde_json::from_str(text).map_err(|e| JsonReplyError::NotJson(e.to_string()))?;
    let obj = value.as_object().ok_or(JsonReplyError::NotAnObject)?;
    let msg_type = field(obj, "MsgType")
        .and_then(Value::as_str)
        .ok_or(JsonReplyError::NoMsgType)?;
    let media = |outer: &'static str| -> Result<String, JsonReplyError> {
        field(obj, outer)
            .and_then(|o| o.as_object())
            .and_then(|o| string(o, "MediaId"))
            .ok_or(JsonReplyError::Missing("MediaId"))
    };
    let mut adjustment = None;
    let reply = match msg_type.to_ascii_lowercase().as_str() {
        "text" => {
            let content = string(obj, "Content").ok_or(JsonReplyError::Missing("Content"))?;
            let (reply, adj) = Reply::text(content);
            adjustment = adj;
            reply
        }
        "image" => Reply::image(media("Image")?)?,
        "voice" => Reply::voice(media("Voice")?)?,
        "video" => {
            let v = field(obj, "Video")
                .and_then(Value::as_object)
                .ok_or(JsonReplyError::Missing("Video"))?;
            Reply::video(Video {
                media_id: string(v, "MediaId").ok_or(JsonReplyError::Missing("MediaId"))?,
                title: string(v, "Title"),
                description: string(v, "Description"),
            })?
        }
        "music" => {
            let m = field(obj, "Music")
                .and_then(Value::as_object)
                .ok_or(JsonReplyError::Missing("Music"))?;
            Reply::music(Music {
                title: string(m, "Title"),
                description: string(m, "Description"),
                music_url: string(m, "MusicUrl"),
                hq_music_url: string(m, "HQMusicUrl"),
                thumb_media_id: string(m, "ThumbMediaId"),
            })
        }
        "news" => {
            let items = field(obj, "Articles")
                .and_then(Value::as_array)
                .ok_or(JsonReplyError::Missing("Articles"))?;
            if items.len() > MAX_ARTICLES {
                return Err(ReplyError::TooManyArticles {
                    count: items.len(),
                    max: MAX_ARTICLES,
                }
                .into());
            }
            let articles = items
                .iter()
                .map(|a| {
                    let a = a.as_object().ok_or(JsonReplyError::Missing("Articles"))?;
                    let f = |n| string(a, n).unwrap_or_default();
                    Ok(Article {
                        title: f("Title"),
                        description: f("Description"),
                        pic_url: f("PicUrl"),
                        url: f("Url"),
                    })
                })
                .collect::<Result<Vec<_>, JsonReplyError>>()?;
            Reply::news(articles, answering)?
        }
        "transfer_customer_service" => Reply::transfer_customer_service(
            field(obj, "TransInfo")
                .and_then(Value::as_object)
                .and_then(|t| string(t, "KfAccount")),
        ),
        _ => return Err(JsonReplyError::UnknownMsgType(msg_type.to_owned())),
    };
    Ok(JsonReply { reply, adjustment })
}

/// A field by name, without regard to case (some tools lower-case the keys).
fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

fn string(obj: &Map<String, Value>, name: &str) -> Option<String> {
    match field(obj, name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::message::{Event, Kind, SendPics};
    use serde_json::json;

    #[test]
    fn a_text_push_is_cloud_hostings_json() {
        let m = Message::new(
            "gh_919b00572d95",
            "oVneZ57wJnV-ObtCiGv26PRrOz2g",
            1651049934,
            Kind::Text {
                content: Some("回复文本".into()),
            },
        )
        .with_msg_id(23637352235060880u64);
        assert_eq!(
            push_json(&m),
            json!({"ToUserName":"gh_919b00572d95","FromUserName":"oVneZ57wJnV-ObtCiGv26PRrOz2g",
                   "CreateTime":1651049934,"MsgType":"text","Content":"回复文本","MsgId":23637352235060880u64})
        );
    }

    #[test]
    fn nested_and_repeated_elements_become_objects_and_arrays() {
        let m = Message::new(
            "gh",
            "o",
            1,
            Kind::Event(Event::PicSysphoto(SendPics {
                event_key: Some("6".into()),
                count: Some(crate::protocol::message::Numeric::Parsed(2)),
                pic_md5_sums: vec!["a".into(), "b".into()],
            })),
        );
        let j = push_json(&m);
        assert_eq!(j["Event"], "pic_sysphoto");
        assert_eq!(
            j["SendPicsInfo"],
            json!({"Count":"2","PicList":[{"PicMd5Sum":"a"},{"PicMd5Sum":"b"}]})
        );
        let one = Message::new(
            "gh",
            "o",
            1,
            Kind::Event(Event::PicWeixin(SendPics {
                event_key: None,
                count: None,
                pic_md5_sums: vec!["a".into()],
            })),
        );
        assert_eq!(
            push_json(&one)["SendPicsInfo"]["PicList"],
            json!([{"PicMd5Sum":"a"}])
        );
    }

    #[test]
    fn odd_numbers_stay_strings() {
        let mut m = Message::new("gh", "o", 1, Kind::Text { content: None }).with_msg_id("x1");
        m.create_time = Some(crate::protocol::message::Numeric::Raw("soon".into()));
        let j = push_json(&m);
        assert_eq!(
            (j["CreateTime"].clone(), j["MsgId"].clone()),
            (json!("soon"), json!("x1"))
        );
    }

    fn read(body: &str) -> Result<Reply, JsonReplyError> {
        reply_from_json(body.as_bytes(), Answering::Message).map(|r| r.reply)
    }

    #[test]
    fn every_passive_reply_type_reads_from_json() {
        assert_eq!(read(""), Ok(Reply::Success));
        assert_eq!(read(" success\n"), Ok(Reply::Success));
        assert_eq!(
            read(r#"{"MsgType":"text","Content":"hi","ToUserName":"ignored"}"#),
            Ok(Reply::text("hi").0)
        );
        assert_eq!(
            read(r#"{"msgtype":"image","image":{"mediaid":"M"}}"#),
            Reply::image("M").map_err(Into::into)
        );
        assert_eq!(
            read(r#"{"MsgType":"voice","Voice":{"MediaId":"V"}}"#),
            Reply::voice("V").map_err(Into::into)
        );
        assert!(matches!(
            read(r#"{"MsgType":"video","Video":{"MediaId":"V","Title":"T"}}"#),
            Ok(Reply::Video(_))
        ));
        assert!(matches!(
            read(r#"{"MsgType":"music","Music":{"Title":"T","ThumbMediaId":"X"}}"#),
            Ok(Reply::Music(_))
        ));
        assert!(matches!(
            read(r#"{"MsgType":"news","ArticleCount":1,"Articles":[{"Title":"a","Url":"u"}]}"#),
            Ok(Reply::News(_))
        ));
        assert_eq!(
            read(r#"{"MsgType":"transfer_customer_service"}"#),
            Ok(Reply::transfer_customer_service(None))
        );
    }

    #[test]
    fn answers_that_break_a_rule_are_errors() {
        assert!(matches!(read("<xml/>"), Err(JsonReplyError::NotJson(_))));
        assert_eq!(read("[1]"), Err(JsonReplyError::NotAnObject));
        assert_eq!(read("{}"), Err(JsonReplyError::NoMsgType));
        assert_eq!(
            read(r#"{"MsgType":"dance"}"#),
            Err(JsonReplyError::UnknownMsgType("dance".into()))
        );
        let nine = format!(
            r#"{{"MsgType":"news","Articles":[{}]}}"#,
            [r#"{"Title":"a"}"#; 9].join(",")
        );
        assert!(matches!(
            reply_from_json(nine.as_bytes(), Answering::Event),
            Err(JsonReplyError::Limit(ReplyError::TooManyArticles {
                count: 9,
                ..
            }))
        ));
        // A user's message gets one article at most.
        assert!(matches!(
            read(r#"{"MsgType":"news","Articles":[{"Title":"a"},{"Title":"b"}]}"#),
            Err(JsonReplyError::Limit(ReplyError::TooManyArticles {
                count: 2,
                max: 1
            }))
        ));
        assert_eq!(
            read(r#"{"MsgType":"image","Image":{}}"#),
            Err(JsonReplyError::Missing("MediaId"))
        );
    }

    #[test]
    fn long_text_is_cut_and_says_so() {
        let body = format!(r#"{{"MsgType":"text","Content":"{}"}}"#, "x".repeat(3000));
        let r = reply_from_json(body.as_bytes(), Answering::Message).unwrap();
        assert!(matches!(r.reply, Reply::Text(ref t) if t.as_str().len() == 2048));
        assert!(matches!(
            r.adjustment,
            Some(Adjustment::TextTruncated { from: 3000, .. })
        ));
    }
}

/// `push_json` walks the fields instead of rendering the XML and parsing it back (7% of a
/// forwarded push's CPU); these pin that the JSON did not change.
#[cfg(test)]
mod same_as_through_xml {
    use super::*;
    use crate::protocol::message::Kind;
    use proptest::prelude::*;

    #[test]
    fn for_every_fixture() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "xml") {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            let Ok(msg) = Message::parse_bytes(&bytes) else {
                continue;
            };
            assert_eq!(push_json(&msg), push_json_via_xml(&msg), "{path:?}");
            seen += 1;
        }
        assert!(seen >= 30, "only {seen} fixtures parsed");
    }

    proptest! {
        /// Any text, unknown fields and all: the same JSON either way. Carriage returns are
        /// left out: an XML reader turns them into line feeds, and a push read from WeChat's
        /// XML has none left to turn.
        #[test]
        fn for_any_text(content in "[^\r]{0,40}", extra in "[^\r]{0,20}", id in "[0-9a-z ]{0,8}") {
            let mut msg = Message::new("gh_1", "o_user", 1_700_000_000, Kind::Text {
                content: Some(content),
            });
            msg.msg_id = Some(id);
            msg.extra.push(("Extra".into(), crate::protocol::message::Node::Text(extra)));
            prop_assert_eq!(push_json(&msg), push_json_via_xml(&msg));
        }
    }
}
