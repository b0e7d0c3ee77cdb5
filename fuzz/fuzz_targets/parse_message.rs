//! Untrusted push bodies: sanitise + parse must never panic, and a message that parses must get
//! a reply that reads back the way WeChat would read it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wxmp::protocol::message::{Kind, Message};
use wxmp::protocol::reply::{Reply, MAX_TEXT_BYTES};
use wxmp::rules::RuleSet;
use wxmp::protocol::xml;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = Message::parse_bytes(data) else {
        return;
    };
    // An independent check of the DOCTYPE refusal: the XML parser itself saw none.
    let clean = xml::sanitize(data).expect("parsed, so it sanitizes");
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
    let _ = (
        msg.msg_type(),
        msg.said(),
        msg.event().map(|e| (e.name(), e.scene())),
    );
    let decision = RuleSet::builtin().decide(&msg);
    let body = decision
        .reply
        .render(&msg.from_user_name, &msg.to_user_name, 1_700_000_000);
    let back =
        Reply::parse(&body).unwrap_or_else(|e| panic!("reply does not read back ({e}): {body:?}"));
    // The built-in default echoes text; short text must come back unchanged.
    if let (Kind::Text { content }, Reply::Text(echo)) = (&msg.kind, &back.reply) {
        if content.len() <= MAX_TEXT_BYTES && content != "天气" {
            assert_eq!(echo.as_str(), content, "echo differs");
        }
    }
});
