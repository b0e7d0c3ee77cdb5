//! Rules files: parsing any text must not panic, and a file that loads must answer every sample
//! message with a reply WeChat can read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wxmp::protocol::message::Message;
use wxmp::protocol::reply::Reply;
use wxmp::rules::RuleSet;

const SAMPLES: &[&str] = &[
    include_str!("../../tests/fixtures/text.xml"),
    include_str!("../../tests/fixtures/voice_recognition.xml"),
    include_str!("../../tests/fixtures/image.xml"),
    include_str!("../../tests/fixtures/event_subscribe_qrscene.xml"),
    include_str!("../../tests/fixtures/event_scan.xml"),
    include_str!("../../tests/fixtures/event_click.xml"),
    include_str!("../../tests/fixtures/event_view.xml"),
    "<xml><ToUserName>gh</ToUserName><FromUserName>o</FromUserName><CreateTime>1</CreateTime><MsgType>text</MsgType><Content>订单 12345</Content><MsgId>1</MsgId></xml>",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(set) = RuleSet::parse(text, "fuzz.toml") else {
        return;
    };
    // `check-rules` prints every rule.
    for rule in set.rules() {
        let _ = rule.to_string();
    }
    let _ = set.default_action().to_string();
    for sample in SAMPLES {
        let msg = Message::parse_bytes(sample.as_bytes()).unwrap();
        let decision = set.decide(&msg);
        let body = decision
            .reply
            .render(msg.from_user(), msg.to_user(), 1_700_000_000);
        if let Err(e) = Reply::parse(&body) {
            panic!("reply does not read back ({e}): {body:?}");
        }
    }
});
