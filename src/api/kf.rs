//! Customer-service messages (客服消息): what `message/custom/send` takes, built from a passive
//! [`Reply`] (for replies that come too late for the 5-second window) or from the command line.
//!
//! The JSON shapes are WeChat's (`{"touser":…,"msgtype":"text","text":{"content":…}}`). A
//! customer-service news message carries one article (more is refused with 45008), so a news
//! reply keeps its first; music without a thumbnail (refused with 47001) goes as a text with its
//! link. Out of scope: when sending is allowed (the 48-hour window and the
//! per-interaction quota are WeChat's to enforce; its errors say so).

use serde_json::{json, Map, Value};

use crate::protocol::reply::Reply;

/// One customer-service message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Text {
        content: String,
    },
    Image {
        media_id: String,
    },
    Voice {
        media_id: String,
    },
    Video {
        media_id: String,
        thumb_media_id: Option<String>,
        title: Option<String>,
        description: Option<String>,
    },
    Music {
        title: Option<String>,
        description: Option<String>,
        music_url: Option<String>,
        hq_music_url: Option<String>,
        thumb_media_id: Option<String>,
    },
    News(Article),
    /// A news material (图文素材) by its `media_id`.
    MpNews {
        media_id: String,
    },
    /// A published article by its `article_id` (from the publish API).
    MpNewsArticle {
        article_id: String,
    },
    /// A menu of choices; a tap comes back as a text message with a `bizmsgmenuid`. WeChat
    /// refuses it on test and unverified accounts (40200).
    MsgMenu {
        head_content: String,
        /// `(id, content)` of each choice.
        list: Vec<(String, String)>,
        tail_content: String,
    },
    /// A card or coupon by its `card_id`.
    WxCard {
        card_id: String,
    },
    /// A mini-program card (the mini program must be linked to the account).
    MiniProgramPage {
        title: String,
        appid: String,
        pagepath: String,
        thumb_media_id: String,
    },
}

/// Every `msgtype` [`Message`] knows, in the order help texts list them.
pub const MSG_TYPES: &[&str] = &[
    "text",
    "image",
    "voice",
    "video",
    "music",
    "news",
    "mpnews",
    "mpnewsarticle",
    "msgmenu",
    "wxcard",
    "miniprogrampage",
];

/// A customer-service news message's one article.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Article {
    pub title: String,
    pub description: String,
    pub url: String,
    pub pic_url: String,
}

impl Message {
    /// The customer-service message that says what `reply` says; `None` for `success` and
    /// `transfer_customer_service`, which have no message to send.
    pub fn from_reply(reply: &Reply) -> Option<Message> {
        Some(match reply {
            Reply::Success | Reply::TransferCustomerService { .. } => return None,
            Reply::Text(t) => Message::Text {
                content: t.as_str().to_owned(),
            },
            Reply::Image { media_id } => Message::Image {
                media_id: media_id.clone(),
            },
            Reply::Voice { media_id } => Message::Voice {
                media_id: media_id.clone(),
            },
            Reply::Video(v) => Message::Video {
                media_id: v.media_id.clone(),
                thumb_media_id: None,
                title: v.title.clone(),
                description: v.description.clone(),
            },
            Reply::Music(m) if m.thumb_media_id.is_some() => Message::Music {
                title: m.title.clone(),
                description: m.description.clone(),
                music_url: m.music_url.clone(),
                hq_music_url: m.hq_music_url.clone(),
                thumb_media_id: m.thumb_media_id.clone(),
            },
            // A customer-service music message needs its thumbnail (WeChat refuses one without
            // with 47001), and a passive one may go without: the user still gets what the
            // reply said, as a text with the title, description and link.
            Reply::Music(m) => {
                let link = m.music_url.as_ref().or(m.hq_music_url.as_ref());
                let lines: Vec<&str> = [m.title.as_ref(), m.description.as_ref(), link]
                    .into_iter()
                    .flatten()
                    .map(|s| s.trim())
                    .filter(|s| !s.is_empty())
                    .collect();
                if lines.is_empty() {
                    return None;
                }
                Message::Text {
                    content: lines.join("\n"),
                }
            }
            // A news reply always has at least one article; customer service takes one.
            Reply::News(news) => {
                let a = news.articles().first()?;
                Message::News(Article {
                    title: a.title.clone(),
                    description: a.description.clone(),
                    url: a.url.clone(),
                    pic_url: a.pic_url.clone(),
                })
            }
        })
    }

    /// WeChat's `msgtype`.
    pub fn msg_type(&self) -> &'static str {
        match self {
            Message::Text { .. } => "text",
            Message::Image { .. } => "image",
            Message::Voice { .. } => "voice",
            Message::Video { .. } => "video",
            Message::Music { .. } => "music",
            Message::News(_) => "news",
            Message::MpNews { .. } => "mpnews",
            Message::MpNewsArticle { .. } => "mpnewsarticle",
            Message::MsgMenu { .. } => "msgmenu",
            Message::WxCard { .. } => "wxcard",
            Message::MiniProgramPage { .. } => "miniprogrampage",
        }
    }

    /// The body of `message/custom/send` for the user `openid`.
    pub fn to_json(&self, openid: &str) -> Value {
        let ty = self.msg_type();
        let inner = match self {
            Message::Text { content } => json!({ "content": content }),
            Message::Image { media_id } | Message::Voice { media_id } => {
                json!({ "media_id": media_id })
            }
            Message::Video {
                media_id,
                thumb_media_id,
                title,
                description,
            } => object(&[
                ("media_id", Some(media_id)),
                ("thumb_media_id", thumb_media_id.as_ref()),
                ("title", title.as_ref()),
                ("description", description.as_ref()),
            ]),
            Message::Music {
                title,
                description,
                music_url,
                hq_music_url,
                thumb_media_id,
            } => object(&[
                ("title", title.as_ref()),
                ("description", description.as_ref()),
                ("musicurl", music_url.as_ref()),
                ("hqmusicurl", hq_music_url.as_ref()),
                ("thumb_media_id", thumb_media_id.as_ref()),
            ]),
            Message::News(a) => json!({ "articles": [{
                "title": a.title,
                "description": a.description,
                "url": a.url,
                "picurl": a.pic_url,
            }] }),
            Message::MpNews { media_id } => json!({ "media_id": media_id }),
            Message::MpNewsArticle { article_id } => json!({ "article_id": article_id }),
            Message::MsgMenu {
                head_content,
                list,
                tail_content,
            } => json!({
                "head_content": head_content,
                "list": list.iter().map(|(id, content)| json!({"id": id, "content": content})).collect::<Vec<_>>(),
                "tail_content": tail_content,
            }),
            Message::WxCard { card_id } => json!({ "card_id": card_id }),
            Message::MiniProgramPage {
                title,
                appid,
                pagepath,
                thumb_media_id,
            } => json!({
                "title": title,
                "appid": appid,
                "pagepath": pagepath,
                "thumb_media_id": thumb_media_id,
            }),
        };
        json!({ "touser": openid, "msgtype": ty, ty: inner })
    }

    /// Reads a `message/custom/send` body back: the OpenID and the message (the fake API
    /// checks what it is sent with this). An error is WeChat's errcode and a reason: 45008 for
    /// news with more than one article, 47001 for anything else malformed.
    pub fn from_json(body: &Value) -> Result<(String, Message), (i64, String)> {
        Message::read(body).map_err(|e| match e {
            ReadError::Articles(n) => (
                45008,
                format!("article size out of limit: news carries 1 article, got {n}"),
            ),
            ReadError::Format(reason) => (47001, format!("data format error: {reason}")),
        })
    }

    fn read(body: &Value) -> Result<(String, Message), ReadError> {
        let openid = str_at(body, "touser").ok_or("no touser")?;
        let ty = str_at(body, "msgtype").ok_or("no msgtype")?;
        let inner = body
            .get(&ty)
            .ok_or_else(|| format!("msgtype {ty:?} but no {ty:?} object"))?;
        let opt = |name: &str| str_at(inner, name);
        let req = |name: &str| opt(name).ok_or_else(|| format!("{ty} needs {name}"));
        let message = match ty.as_str() {
            "text" => Message::Text {
                content: req("content")?,
            },
            "image" => Message::Image {
                media_id: req("media_id")?,
            },
            "voice" => Message::Voice {
                media_id: req("media_id")?,
            },
            "video" => Message::Video {
                media_id: req("media_id")?,
                thumb_media_id: opt("thumb_media_id"),
                title: opt("title"),
                description: opt("description"),
            },
            // WeChat's docs mark thumb_media_id required for a customer-service music message.
            "music" => Message::Music {
                title: opt("title"),
                description: opt("description"),
                music_url: opt("musicurl"),
                hq_music_url: opt("hqmusicurl"),
                thumb_media_id: Some(req("thumb_media_id")?),
            },
            "news" => {
                let articles = inner
                    .get("articles")
                    .and_then(Value::as_array)
                    .ok_or("news needs articles")?;
                let [a] = articles.as_slice() else {
                    if articles.is_empty() {
                        return Err("news needs 1 article, got 0".into());
                    }
                    return Err(ReadError::Articles(articles.len()));
                };
                let get = |n: &str| str_at(a, n).unwrap_or_default();
                Message::News(Article {
                    title: get("title"),
                    description: get("description"),
                    url: get("url"),
                    pic_url: get("picurl"),
                })
            }
            "mpnews" => Message::MpNews {
                media_id: req("media_id")?,
            },
            "mpnewsarticle" => Message::MpNewsArticle {
                article_id: req("article_id")?,
            },
            "msgmenu" => {
                let list = inner
                    .get("list")
                    .and_then(Value::as_array)
                    .filter(|l| !l.is_empty())
                    .ok_or("msgmenu needs a list of {id, content}")?;
                let list = list
                    .iter()
                    .map(|item| match (str_at(item, "id"), str_at(item, "content")) {
                        (Some(id), Some(content)) => Ok((id, content)),
                        _ => Err("each msgmenu list item needs an id and a content".to_owned()),
                    })
                    .collect::<Result<_, _>>()?;
                Message::MsgMenu {
                    head_content: opt("head_content").unwrap_or_default(),
                    list,
                    tail_content: opt("tail_content").unwrap_or_default(),
                }
            }
            "wxcard" => Message::WxCard {
                card_id: req("card_id")?,
            },
            "miniprogrampage" => Message::MiniProgramPage {
                title: req("title")?,
                appid: req("appid")?,
                pagepath: req("pagepath")?,
                thumb_media_id: req("thumb_media_id")?,
            },
            other => return Err(format!("unknown msgtype {other:?}").into()),
        };
        Ok((openid, message))
    }

    /// One line saying what the message is, for people (`text "你好"`, `image MEDIA_ID`).
    pub fn summary(&self) -> String {
        match self {
            Message::Text { content } => format!("text {content:?}"),
            Message::Image { media_id } => format!("image {media_id}"),
            Message::Voice { media_id } => format!("voice {media_id}"),
            Message::Video {
                media_id, title, ..
            } => match title {
                Some(t) => format!("video {media_id} {t:?}"),
                None => format!("video {media_id}"),
            },
            Message::Music {
                title, music_url, ..
            } => format!(
                "music {:?} {}",
                title.as_deref().unwrap_or(""),
                music_url.as_deref().unwrap_or("")
            )
            .trim_end()
            .to_owned(),
            Message::News(a) => format!("news {:?} {}", a.title, a.url)
                .trim_end()
                .to_owned(),
            Message::MpNews { media_id } => format!("mpnews {media_id}"),
            Message::MpNewsArticle { article_id } => format!("mpnewsarticle {article_id}"),
            Message::MsgMenu {
                head_content, list, ..
            } => {
                let items: Vec<String> = list.iter().map(|(id, c)| format!("{id}={c}")).collect();
                format!("msgmenu {head_content:?} {}", items.join(" "))
            }
            Message::WxCard { card_id } => format!("wxcard {card_id}"),
            Message::MiniProgramPage {
                title, pagepath, ..
            } => format!("miniprogrampage {title:?} {pagepath}"),
        }
    }
}

/// Why a body is not a customer-service message.
enum ReadError {
    /// News with this many articles (more than 1).
    Articles(usize),
    Format(String),
}

impl From<String> for ReadError {
    fn from(s: String) -> ReadError {
        ReadError::Format(s)
    }
}

impl From<&str> for ReadError {
    fn from(s: &str) -> ReadError {
        ReadError::Format(s.to_owned())
    }
}

fn str_at(v: &Value, name: &str) -> Option<String> {
    v.get(name).and_then(Value::as_str).map(str::to_owned)
}

/// A JSON object of the fields that are present.
fn object(fields: &[(&str, Option<&String>)]) -> Value {
    let map: Map<String, Value> = fields
        .iter()
        .filter_map(|(k, v)| v.map(|v| ((*k).to_owned(), Value::String(v.clone()))))
        .collect();
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::reply::{self, Answering};

    #[test]
    fn replies_map_to_wechats_customer_service_json() {
        let text = Message::from_reply(&Reply::text("你好").0).unwrap();
        assert_eq!(
            text.to_json("o1"),
            json!({"touser":"o1","msgtype":"text","text":{"content":"你好"}})
        );
        let image = Message::from_reply(&Reply::image("M1").unwrap()).unwrap();
        assert_eq!(
            image.to_json("o1"),
            json!({"touser":"o1","msgtype":"image","image":{"media_id":"M1"}})
        );
        let voice = Message::from_reply(&Reply::voice("V1").unwrap()).unwrap();
        assert_eq!(voice.to_json("o1")["voice"], json!({"media_id":"V1"}));
        let video = Message::from_reply(
            &Reply::video(reply::Video {
                media_id: "V".into(),
                title: Some("T".into()),
                description: None,
            })
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            video.to_json("o1")["video"],
            json!({"media_id":"V","title":"T"})
        );
        let music = Message::from_reply(&Reply::music(reply::Music {
            title: Some("歌".into()),
            music_url: Some("https://e.com/a.mp3".into()),
            hq_music_url: Some("https://e.com/hq.mp3".into()),
            thumb_media_id: Some("TH".into()),
            description: None,
        }))
        .unwrap();
        assert_eq!(
            music.to_json("o1")["music"],
            json!({"title":"歌","musicurl":"https://e.com/a.mp3","hqmusicurl":"https://e.com/hq.mp3","thumb_media_id":"TH"})
        );
    }

    #[test]
    fn music_without_a_thumbnail_goes_out_as_a_text_with_its_link() {
        // Regression: it was sent as music without thumb_media_id, which WeChat refuses (47001).
        let music = |title: Option<&str>, url: Option<&str>, hq: Option<&str>| {
            Message::from_reply(&Reply::music(reply::Music {
                title: title.map(Into::into),
                description: Some("周杰伦".into()),
                music_url: url.map(Into::into),
                hq_music_url: hq.map(Into::into),
                thumb_media_id: None,
            }))
        };
        let m = music(Some("晴天"), Some("https://e.com/a.mp3"), None).unwrap();
        assert_eq!(
            m.to_json("o1"),
            json!({"touser":"o1","msgtype":"text","text":{"content":"晴天\n周杰伦\nhttps://e.com/a.mp3"}})
        );
        assert!(Message::from_json(&m.to_json("o1")).is_ok());
        let m = music(None, None, Some("https://e.com/hq.mp3")).unwrap();
        assert_eq!(
            m.to_json("o1")["text"]["content"],
            "周杰伦\nhttps://e.com/hq.mp3"
        );
        let nothing = Reply::music(reply::Music {
            title: Some(" ".into()),
            description: None,
            music_url: None,
            hq_music_url: None,
            thumb_media_id: None,
        });
        assert_eq!(Message::from_reply(&nothing), None);
    }

    #[test]
    fn news_carries_its_first_article_only() {
        let article = |t: &str| reply::Article {
            title: t.into(),
            description: "d".into(),
            pic_url: "https://e.com/p.png".into(),
            url: "https://e.com/".into(),
        };
        let news = Reply::news(vec![article("one"), article("two")], Answering::Event).unwrap();
        let m = Message::from_reply(&news).unwrap();
        assert_eq!(
            m.to_json("o1")["news"],
            json!({"articles":[{"title":"one","description":"d","url":"https://e.com/","picurl":"https://e.com/p.png"}]})
        );
    }

    #[test]
    fn success_and_transfer_have_no_message() {
        assert_eq!(Message::from_reply(&Reply::Success), None);
        assert_eq!(
            Message::from_reply(&Reply::transfer_customer_service(Some("kf@x".into()))),
            None
        );
    }

    #[test]
    fn every_message_reads_back_from_its_json() {
        let messages = [
            Message::Text {
                content: "a \"quoted\" <a href=\"x\">link</a>".into(),
            },
            Message::Image {
                media_id: "M".into(),
            },
            Message::Voice {
                media_id: "V".into(),
            },
            Message::Video {
                media_id: "V".into(),
                thumb_media_id: Some("T".into()),
                title: None,
                description: Some("d".into()),
            },
            Message::Music {
                title: None,
                description: None,
                music_url: Some("u".into()),
                hq_music_url: None,
                thumb_media_id: Some("t".into()),
            },
            Message::News(Article {
                title: "t".into(),
                ..Article::default()
            }),
            Message::MpNews {
                media_id: "M".into(),
            },
            Message::MpNewsArticle {
                article_id: "A".into(),
            },
            Message::MsgMenu {
                head_content: "您对本次服务是否满意呢?".into(),
                list: vec![
                    ("101".into(), "满意".into()),
                    ("102".into(), "不满意".into()),
                ],
                tail_content: "欢迎再次光临".into(),
            },
            Message::WxCard {
                card_id: "C".into(),
            },
            Message::MiniProgramPage {
                title: "t".into(),
                appid: "wxmini".into(),
                pagepath: "pages/index?foo=bar".into(),
                thumb_media_id: "T".into(),
            },
        ];
        assert_eq!(messages.len(), MSG_TYPES.len());
        for m in messages {
            assert!(MSG_TYPES.contains(&m.msg_type()));
            let back = Message::from_json(&m.to_json("o9")).unwrap();
            assert_eq!(back, ("o9".to_owned(), m));
        }
    }

    #[test]
    fn wechats_errcodes_for_what_it_refuses() {
        let two = json!({"touser":"o","msgtype":"news","news":{"articles":[{},{}]}});
        assert_eq!(Message::from_json(&two).unwrap_err().0, 45008);
        let music = json!({"touser":"o","msgtype":"music","music":{"musicurl":"u"}});
        let (code, why) = Message::from_json(&music).unwrap_err();
        assert_eq!(code, 47001);
        assert!(why.contains("thumb_media_id"), "{why}");
        let menu = json!({"touser":"o","msgtype":"msgmenu","msgmenu":{"list":[{"id":"1"}]}});
        assert_eq!(Message::from_json(&menu).unwrap_err().0, 47001);
    }

    #[test]
    fn the_json_sent_carries_chinese_and_emoji_unescaped() {
        // WeChat refuses `\uXXXX` escapes with 40033: serde_json must write UTF-8 as it is.
        let m = Message::Text {
            content: "你好 😀 \"q\"".into(),
        };
        let body = m.to_json("o1").to_string();
        assert!(body.contains("你好 😀"), "{body}");
        assert!(!body.contains("\\u"), "{body}");
    }
}
