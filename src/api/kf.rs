//! Customer-service messages (客服消息): what `message/custom/send` takes, built from a passive
//! [`Reply`] (for replies that come too late for the 5-second window) or from the command line.
//!
//! The JSON shapes are WeChat's (`{"touser":…,"msgtype":"text","text":{"content":…}}`). A
//! customer-service news message carries one article (more is refused with 45008), so a news
//! reply keeps its first. Out of scope: when sending is allowed (the 48-hour window and the
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
}

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
            Reply::Music(m) => Message::Music {
                title: m.title.clone(),
                description: m.description.clone(),
                music_url: m.music_url.clone(),
                hq_music_url: m.hq_music_url.clone(),
                thumb_media_id: m.thumb_media_id.clone(),
            },
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
        };
        json!({ "touser": openid, "msgtype": ty, ty: inner })
    }

    /// Reads a `message/custom/send` body back: the OpenID and the message (the fake API
    /// checks what it is sent with this).
    pub fn from_json(body: &Value) -> Result<(String, Message), String> {
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
            "music" => Message::Music {
                title: opt("title"),
                description: opt("description"),
                music_url: opt("musicurl"),
                hq_music_url: opt("hqmusicurl"),
                thumb_media_id: opt("thumb_media_id"),
            },
            "news" => {
                let articles = inner
                    .get("articles")
                    .and_then(Value::as_array)
                    .ok_or("news needs articles")?;
                let [a] = articles.as_slice() else {
                    return Err(format!(
                        "news carries exactly 1 article, got {}",
                        articles.len()
                    ));
                };
                let get = |n: &str| str_at(a, n).unwrap_or_default();
                Message::News(Article {
                    title: get("title"),
                    description: get("description"),
                    url: get("url"),
                    pic_url: get("picurl"),
                })
            }
            other => return Err(format!("unknown msgtype {other:?}")),
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
        }
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
        ];
        for m in messages {
            let back = Message::from_json(&m.to_json("o9")).unwrap();
            assert_eq!(back, ("o9".to_owned(), m));
        }
        let two = json!({"touser":"o","msgtype":"news","news":{"articles":[{},{}]}});
        assert!(Message::from_json(&two).unwrap_err().contains("exactly 1"));
    }
}
