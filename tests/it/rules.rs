//! The documented rules file through the HTTP handler, and retry de-duplication.

use std::sync::atomic::Ordering;

use wxmp::protocol::reply::Reply;
use wxmp::rules::RuleSet;

use crate::helpers::*;

fn example_rules() -> RuleSet {
    let text = std::fs::read_to_string(format!(
        "{}/examples/rules.toml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    RuleSet::parse(&text, "rules.toml").unwrap()
}

fn event_xml(event: &str, key: Option<&str>, time: u64) -> String {
    let key = key.map_or(String::new(), |k| {
        format!("<EventKey><![CDATA[{k}]]></EventKey>")
    });
    format!("<xml><ToUserName><![CDATA[gh_test]]></ToUserName><FromUserName><![CDATA[o_user]]></FromUserName><CreateTime>{time}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[{event}]]></Event>{key}</xml>")
}

#[test]
fn each_documented_rule_answers_through_http() {
    let h = harness_with(None, example_rules());
    assert_eq!(
        text_of(&h.post(&text_xml("o", "天气", 1)).body),
        "北京天气挺好的！"
    );
    assert_eq!(
        text_of(&h.post(&text_xml("o", "订单 12345", 2)).body),
        "订单 12345 正在配送中"
    );
    match parse_reply(&h.post(&text_xml("o", "需要帮助吗", 3)).body).reply {
        Reply::News(n) => {
            assert_eq!(n.articles().len(), 1);
            assert_eq!(n.articles()[0].title, "使用帮助");
            assert_eq!(n.articles()[0].url, "https://example.com/help");
            assert_eq!(n.articles()[0].pic_url, "https://example.com/help.png");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        text_of(&h.post(&fixture("event_subscribe_qrscene.xml")).body),
        "欢迎关注！123123"
    );
    assert_eq!(
        text_of(&h.post(&fixture("event_subscribe.xml")).body),
        "欢迎关注！"
    );
    match parse_reply(
        &h.post(&event_xml("click", Some("V1001_TODAY_MUSIC"), 5))
            .body,
    )
    .reply
    {
        Reply::Music(m) => {
            assert_eq!(m.title.as_deref(), Some("今日歌曲"));
            assert_eq!(
                m.hq_music_url.as_deref(),
                Some("https://example.com/a_hq.mp3")
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.post(&fixture("event_click.xml")).body, "success");
    assert_eq!(text_of(&h.post(&fixture("image.xml")).body), "收到图片");
    assert_eq!(
        text_of(&h.post(&text_xml("o", "随便说说", 6)).body),
        "随便说说"
    );
    // The samples share one MsgId and user; a real user's messages never do (the retry cache
    // would rightly answer the voice with the image's reply).
    let voice = fixture("voice.xml").replace("1234567890123456", "99");
    assert_eq!(h.post(&voice).body, "success");
}

#[test]
fn a_retried_message_gets_identical_bytes_and_runs_once() {
    let h = harness();
    let msg = text_xml("o_user", "hello", 4242);
    let first = h.post(&msg);
    // Five seconds later WeChat retries; a fresh render would carry a new CreateTime.
    h.env.now.store(NOW + 5, Ordering::SeqCst);
    let retry = h.post(&msg);
    assert_eq!(first.body, retry.body);
    assert_eq!(parse_reply(&retry.body).create_time, NOW);
    // The same MsgId from another user is a different message.
    let other_user = h.post(&text_xml("o_other", "hello", 4242));
    assert_eq!(parse_reply(&other_user.body).create_time, NOW + 5);
}

#[test]
fn a_retried_event_gets_identical_bytes() {
    let h = harness_with(None, example_rules());
    let first = h.post(&fixture("event_subscribe_qrscene.xml"));
    h.env.now.store(NOW + 3, Ordering::SeqCst);
    assert_eq!(
        h.post(&fixture("event_subscribe_qrscene.xml")).body,
        first.body
    );
    // Same user and time, another event key: a different event.
    let other =
        h.post(&fixture("event_subscribe_qrscene.xml").replace("qrscene_123123", "qrscene_9"));
    assert_eq!(text_of(&other.body), "欢迎关注！9");
}

#[test]
fn replies_expire_from_the_retry_cache() {
    let h = harness();
    let msg = text_xml("o_user", "hello", 5151);
    let first = h.post(&msg);
    h.env.now.store(NOW + 3600, Ordering::SeqCst);
    let later = h.post(&msg);
    assert_ne!(first.body, later.body);
    assert_eq!(parse_reply(&later.body).create_time, NOW + 3600);
}

#[test]
fn rules_swap_while_serving() {
    let h = harness();
    assert_eq!(text_of(&h.post(&text_xml("o", "ping", 1)).body), "ping");
    h.service.pipeline.account().rules.replace(
        RuleSet::parse("[[rules]]\ntext = \"ping\"\nreply.text = \"pong\"\n", "t").unwrap(),
    );
    assert_eq!(text_of(&h.post(&text_xml("o", "ping", 2)).body), "pong");
}
