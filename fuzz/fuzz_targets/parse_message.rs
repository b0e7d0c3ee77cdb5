//! Untrusted push bodies: sanitise + parse must never panic, a message that parses renders back
//! to XML that parses to the same message, and it gets a reply that reads back the way WeChat
//! would read it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wxmp::protocol::message::{Kind, Message};
use wxmp::protocol::reply::{Reply, MAX_TEXT_BYTES};
use wxmp::protocol::xml as wxml;
use wxmp::rules::RuleSet;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = Message::parse_bytes(data) else {
        return;
    };
    // An independent check of the DOCTYPE refusal: the XML parser itself saw none.
    let clean = wxml::sanitize(data).expect("parsed, so it sanitizes");
    let mut reader = xml::reader::EventReader::new(clean.as_bytes());
    loop {
        match reader.next() {
            Ok(xml::reader::XmlEvent::StartElement { .. }) => {
                assert_eq!(reader.doctype(), None, "a DOCTYPE got through");
                break;
            }
            Ok(xml::reader::XmlEvent::EndDocument) | Err(_) => break,
            Ok(_) => {}
        }
    }
    // The one model renders what it parsed; compared as XML, since NaN != NaN.
    let rendered = msg.to_xml();
    let again = Message::parse(&rendered)
        .unwrap_or_else(|e| panic!("rendered push does not parse ({e}): {rendered:?}"));
    assert_eq!(again.to_xml(), rendered, "render(parse(render(m))) differs");
    let _ = (
        msg.msg_type(),
        msg.said(),
        msg.event().map(|e| (e.name(), e.scene())),
    );
    let decision = RuleSet::builtin().decide(&msg);
    let body = decision
        .reply
        .render(msg.from_user(), msg.to_user(), 1_700_000_000);
    let back =
        Reply::parse(&body).unwrap_or_else(|e| panic!("reply does not read back ({e}): {body:?}"));
    // The built-in default echoes text; short text must come back unchanged.
    if let (
        Kind::Text {
            content: Some(content),
        },
        Reply::Text(echo),
    ) = (&msg.kind, &back.reply)
    {
        if content.len() <= MAX_TEXT_BYTES && content != "天气" {
            assert_eq!(echo.as_str(), content, "echo differs");
        }
    }
});
