//! WeChat's own sample XML: every message and event parses with every field, and every reply
//! renders to the documented XML.

use wxmp::protocol::message::{
    Event, Kind, Message, Numeric, ScanCode, SendLocationInfo, SendPics, Video,
};
use wxmp::protocol::reply::{Answering, Article, Music, Reply, Video as VideoReply};

use crate::helpers::fixture;

fn parse(name: &str) -> Message {
    Message::parse_bytes(fixture(name).as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn header(m: &Message, to: &str, from: &str, time: u64, msg_id: Option<&str>) {
    assert_eq!(m.to_user_name.as_deref(), Some(to));
    assert_eq!(m.from_user_name.as_deref(), Some(from));
    assert_eq!(m.create_time, Some(Numeric::Parsed(time)));
    assert_eq!(m.msg_id.as_deref(), msg_id);
}

#[test]
fn text() {
    let m = parse("text.xml");
    header(
        &m,
        "toUser",
        "fromUser",
        1348831860,
        Some("1234567890123456"),
    );
    assert_eq!(
        m.kind,
        Kind::Text {
            content: Some("this is a test".into())
        }
    );
}

#[test]
fn image() {
    let m = parse("image.xml");
    header(
        &m,
        "toUser",
        "fromUser",
        1348831860,
        Some("1234567890123456"),
    );
    assert_eq!(
        m.kind,
        Kind::Image {
            pic_url: Some("this is a url".into()),
            media_id: Some("media_id".into())
        }
    );
}

#[test]
fn voice_with_and_without_recognition() {
    let m = parse("voice.xml");
    header(
        &m,
        "toUser",
        "fromUser",
        1357290913,
        Some("1234567890123456"),
    );
    assert_eq!(
        m.kind,
        Kind::Voice {
            media_id: Some("media_id".into()),
            format: Some("Format".into()),
            recognition: None
        }
    );
    let m = parse("voice_recognition.xml");
    assert_eq!(
        m.kind,
        Kind::Voice {
            media_id: Some("media_id".into()),
            format: Some("Format".into()),
            recognition: Some("腾讯微信团队".into())
        }
    );
    assert_eq!(m.said(), Some("腾讯微信团队"));
}

#[test]
fn video_and_shortvideo() {
    let v = Video {
        media_id: Some("media_id".into()),
        thumb_media_id: Some("thumb_media_id".into()),
    };
    let m = parse("video.xml");
    header(
        &m,
        "toUser",
        "fromUser",
        1357290913,
        Some("1234567890123456"),
    );
    assert_eq!(m.kind, Kind::Video(v.clone()));
    assert_eq!(parse("shortvideo.xml").kind, Kind::ShortVideo(v));
}

#[test]
fn location() {
    let m = parse("location.xml");
    header(
        &m,
        "toUser",
        "fromUser",
        1351776360,
        Some("1234567890123456"),
    );
    assert_eq!(
        m.kind,
        Kind::Location {
            location_x: Some(Numeric::Parsed(23.134521)),
            location_y: Some(Numeric::Parsed(113.358803)),
            scale: Some(Numeric::Parsed(20)),
            label: Some("位置信息".into())
        }
    );
}

#[test]
fn link() {
    let m = parse("link.xml");
    header(
        &m,
        "toUser",
        "fromUser",
        1351776360,
        Some("1234567890123456"),
    );
    assert_eq!(
        m.kind,
        Kind::Link {
            title: Some("公众平台官网链接".into()),
            description: Some("公众平台官网链接".into()),
            url: Some("url".into())
        }
    );
}

#[test]
fn miniprogrampage() {
    let m = parse("miniprogrampage.xml");
    header(
        &m,
        "toUser",
        "fromUser",
        1482048670,
        Some("1234567890123456"),
    );
    assert_eq!(
        m.kind,
        Kind::MiniProgramPage {
            title: Some("title".into()),
            app_id: Some("appid".into()),
            page_path: Some("pagepath".into()),
            thumb_url: Some("thumburl".into()),
            thumb_media_id: Some("thumbmediaid".into())
        }
    );
}

#[test]
fn unknown_msg_type_keeps_every_field() {
    let m = parse("unknown.xml");
    match &m.kind {
        Kind::Other { msg_type } => {
            assert_eq!(msg_type, "notsure");
            // The common fields are read as for any push; the rest is kept in `extra`.
            header(
                &m,
                "toUser",
                "fromUser",
                1348831860,
                Some("1234567890123456"),
            );
            let names: Vec<&str> = m.extra.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, ["Content", "MsgDataId", "Idx"]);
            assert_eq!(m.extra_text("Content"), Some("this is a test"));
        }
        other => panic!("{other:?}"),
    }
}

fn event(name: &str) -> (Message, Event) {
    let m = parse(name);
    let e = m
        .event()
        .cloned()
        .unwrap_or_else(|| panic!("{name} is not an event"));
    (m, e)
}

#[test]
fn subscribe_unsubscribe_and_qr_scene() {
    let (m, e) = event("event_subscribe.xml");
    header(&m, "toUser", "FromUser", 123456789, None);
    assert_eq!(
        e,
        Event::Subscribe {
            event_key: None,
            ticket: None
        }
    );
    assert_eq!(event("event_unsubscribe.xml").1, Event::Unsubscribe);
    let (_, e) = event("event_subscribe_qrscene.xml");
    assert_eq!(
        e,
        Event::Subscribe {
            event_key: Some("qrscene_123123".into()),
            ticket: Some("TICKET".into())
        }
    );
    assert_eq!(e.scene(), Some("123123"));
}

#[test]
fn scan() {
    let (_, e) = event("event_scan.xml");
    assert_eq!(
        e,
        Event::Scan {
            event_key: Some("SCENE_VALUE".into()),
            ticket: Some("TICKET".into())
        }
    );
    assert_eq!(e.scene(), Some("SCENE_VALUE"));
    assert_eq!(e.name(), "SCAN");
}

#[test]
fn location_event() {
    let (m, e) = event("event_location.xml");
    header(&m, "toUser", "fromUser", 123456789, None);
    assert_eq!(
        e,
        Event::Location {
            latitude: Some(Numeric::Parsed(23.137466)),
            longitude: Some(Numeric::Parsed(113.352425)),
            precision: Some(Numeric::Parsed(119.38504))
        }
    );
}

#[test]
fn menu_events() {
    assert_eq!(
        event("event_click.xml").1,
        Event::Click {
            event_key: Some("EVENTKEY".into())
        }
    );
    assert_eq!(
        event("event_view.xml").1,
        Event::View {
            event_key: Some("www.qq.com".into()),
            menu_id: Some("MENUID".into())
        }
    );
    assert_eq!(
        event("event_view_miniprogram.xml").1,
        Event::ViewMiniprogram {
            event_key: Some("pages/index/index".into()),
            menu_id: Some("MENUID".into())
        }
    );
}

#[test]
fn scancode_events() {
    let (m, e) = event("event_scancode_push.xml");
    header(
        &m,
        "gh_e136c6e50636",
        "oMgHVjngRipVsoxg6TuX3vz6glDg",
        1408090502,
        None,
    );
    assert_eq!(
        e,
        Event::ScancodePush(ScanCode {
            event_key: Some("6".into()),
            scan_type: Some("qrcode".into()),
            scan_result: Some("1".into())
        })
    );
    let (m, e) = event("event_scancode_waitmsg.xml");
    assert_eq!(m.create_time, Some(Numeric::Parsed(1408090606)));
    assert_eq!(
        e,
        Event::ScancodeWaitmsg(ScanCode {
            event_key: Some("6".into()),
            scan_type: Some("qrcode".into()),
            scan_result: Some("2".into())
        })
    );
}

#[test]
fn picture_events() {
    let (m, e) = event("event_pic_sysphoto.xml");
    assert_eq!(m.create_time, Some(Numeric::Parsed(1408090651)));
    assert_eq!(
        e,
        Event::PicSysphoto(SendPics {
            event_key: Some("6".into()),
            count: Some(Numeric::Parsed(1)),
            pic_md5_sums: vec!["1b5f7c23b5bf75682a53e7b6d163e185".into()]
        })
    );
    let other = SendPics {
        event_key: Some("6".into()),
        count: Some(Numeric::Parsed(1)),
        pic_md5_sums: vec!["5a75aaca956d97be686719218f275c6b".into()],
    };
    let (m, e) = event("event_pic_photo_or_album.xml");
    assert_eq!(m.create_time, Some(Numeric::Parsed(1408090816)));
    assert_eq!(e, Event::PicPhotoOrAlbum(other.clone()));
    assert_eq!(event("event_pic_weixin.xml").1, Event::PicWeixin(other));
}

#[test]
fn location_select() {
    let (m, e) = event("event_location_select.xml");
    assert_eq!(m.create_time, Some(Numeric::Parsed(1408091189)));
    assert_eq!(
        e,
        Event::LocationSelect {
            event_key: Some("6".into()),
            send_location_info: SendLocationInfo {
                location_x: Some(Numeric::Parsed(23.0)),
                location_y: Some(Numeric::Parsed(113.0)),
                scale: Some(Numeric::Parsed(15)),
                label: Some("广州市海珠区客村艺苑路 106号".into()),
                poiname: Some(String::new())
            }
        }
    );
}

#[test]
fn job_finish_events_read_msg_id_spelled_msgid() {
    let (m, e) = event("event_templatesendjobfinish.xml");
    header(&m, "touser", "fromuser", 1395658920, Some("200163836"));
    assert_eq!(
        e,
        Event::TemplateSendJobFinish {
            status: Some("success".into())
        }
    );
    let (m, e) = event("event_masssendjobfinish.xml");
    header(
        &m,
        "gh_4d00ed8d6399",
        "oV5CrjpxgaGXNHIQigzNlgLTnwic",
        1481013459,
        Some("1000001625"),
    );
    assert_eq!(
        e,
        Event::MassSendJobFinish {
            status: Some("err(30003)".into()),
            total_count: Some(Numeric::Parsed(0)),
            filter_count: Some(Numeric::Parsed(0)),
            sent_count: Some(Numeric::Parsed(0)),
            error_count: Some(Numeric::Parsed(0))
        }
    );
}

/// Compares XML ignoring the line breaks between elements in the documented samples.
fn squash(xml: &str) -> String {
    xml.lines().map(str::trim).collect()
}

#[test]
fn every_reply_renders_to_the_documented_xml() {
    let cases: Vec<(&str, Reply)> = vec![
        ("reply_text.xml", Reply::text("你好").0),
        ("reply_image.xml", Reply::image("media_id").unwrap()),
        ("reply_voice.xml", Reply::voice("media_id").unwrap()),
        (
            "reply_video.xml",
            Reply::video(VideoReply {
                media_id: "media_id".into(),
                title: Some("title".into()),
                description: Some("description".into()),
            })
            .unwrap(),
        ),
        (
            "reply_music.xml",
            Reply::music(Music {
                title: Some("TITLE".into()),
                description: Some("DESCRIPTION".into()),
                music_url: Some("MUSIC_Url".into()),
                hq_music_url: Some("HQ_MUSIC_Url".into()),
                thumb_media_id: Some("media_id".into()),
            }),
        ),
        (
            "reply_news.xml",
            Reply::news(
                vec![Article {
                    title: "title1".into(),
                    description: "description1".into(),
                    pic_url: "picurl".into(),
                    url: "url".into(),
                }],
                Answering::Message,
            )
            .unwrap(),
        ),
    ];
    for (name, reply) in cases {
        assert_eq!(
            reply.render("toUser", "fromUser", 12345678),
            squash(&fixture(name)),
            "{name}"
        );
        assert_eq!(
            Reply::parse(&fixture(name)).unwrap().reply,
            reply,
            "{name} parses back"
        );
    }
    let kf = [
        ("reply_transfer_customer_service.xml", None),
        (
            "reply_transfer_customer_service_kf.xml",
            Some("test1@test".to_owned()),
        ),
    ];
    for (name, account) in kf {
        let reply = Reply::transfer_customer_service(account);
        assert_eq!(
            reply.render("touser", "fromuser", 1399197672),
            squash(&fixture(name)),
            "{name}"
        );
    }
}

/// Issue 10: a genuine signed push is never refused for a missing or odd field. WeChat would
/// retry a 400 three times and then show the user 该公众号暂时无法提供服务.
#[test]
fn pushes_with_missing_or_odd_fields_are_answered_not_refused() {
    let h = crate::helpers::harness();
    for (name, expected) in [
        ("image_2013.xml", None),
        ("text_without_content.xml", None),
        ("voice_without_media_id.xml", None),
        ("video_without_media_id.xml", None),
        ("link_without_url.xml", None),
        ("location_without_coordinates.xml", None),
        ("event_location_without_coordinates.xml", None),
        ("text_odd_numbers.xml", Some("odd numbers")),
    ] {
        let r = h.post(&fixture(name));
        assert_eq!(r.status, 200, "{name}: {}", r.body);
        match expected {
            None => assert_eq!(r.body, "success", "{name}"),
            Some(text) => assert_eq!(crate::helpers::text_of(&r.body), text, "{name}"),
        }
        let m = parse(name);
        assert_eq!(parse(name), Message::parse(&m.to_xml()).unwrap(), "{name}");
    }
    let m = parse("image_2013.xml");
    assert_eq!(
        m.kind,
        Kind::Image {
            pic_url: Some("this is a url".into()),
            media_id: None
        }
    );
    let m = parse("text_odd_numbers.xml");
    assert_eq!(m.create_time, Some(Numeric::Raw(" 1348831860x ".into())));
    assert_eq!(m.msg_id.as_deref(), Some("not-a-number"));
}
