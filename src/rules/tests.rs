use super::*;
use crate::protocol::message::{Event, Kind, Message};
use crate::protocol::reply::{Article, Music, Reply};

fn msg(kind: Kind) -> Message {
    Message::new("gh_1", "o_user", 1, kind).with_msg_id(1)
}

fn text(s: &str) -> Message {
    msg(Kind::Text {
        content: Some(s.into()),
    })
}

fn event(e: Event) -> Message {
    msg(Kind::Event(e))
}

fn text_reply(s: &str) -> Reply {
    Reply::text(s).0
}

fn load(toml: &str) -> RuleSet {
    RuleSet::parse(toml, "t.toml").unwrap()
}

fn load_err(toml: &str) -> RulesError {
    RuleSet::parse(toml, "t.toml").unwrap_err()
}

const EXAMPLE: &str = include_str!("../../examples/rules.toml");

#[test]
fn builtin_rules_are_the_flask_behaviour() {
    let set = RuleSet::builtin();
    assert_eq!(set.rules().len(), 1);
    assert_eq!(
        set.decide(&text("天气")).reply,
        text_reply("北京天气挺好的！")
    );
    assert_eq!(set.decide(&text("天气 ")).reply, text_reply("天气 "));
    assert_eq!(
        set.decide(&text("a]]><evil/>")).reply,
        text_reply("a]]><evil/>")
    );
    let image = msg(Kind::Image {
        pic_url: Some("u".into()),
        media_id: Some("m".into()),
    });
    assert_eq!(set.decide(&image).reply, Reply::Success);
    assert_eq!(set.decide(&event(Event::Unsubscribe)).reply, Reply::Success);
    // A voice message is answered success even with recognition text (the Flask app did so).
    let voice = msg(Kind::Voice {
        media_id: Some("m".into()),
        format: Some("amr".into()),
        recognition: Some("你好".into()),
    });
    assert_eq!(set.decide(&voice).reply, Reply::Success);
}

#[test]
fn example_file_loads_and_every_rule_answers() {
    let set = load(EXAMPLE);
    assert_eq!(set.rules().len(), 6);
    assert_eq!(
        set.decide(&text("天气")).reply,
        text_reply("北京天气挺好的！")
    );
    assert_eq!(
        set.decide(&text("订单 12345")).reply,
        text_reply("订单 12345 正在配送中")
    );
    assert_eq!(
        set.decide(&text("订单12")).reply,
        text_reply("订单 12 正在配送中")
    );
    let news = set.decide(&text("我需要帮助")).reply;
    assert_eq!(
        news,
        Reply::news(
            vec![Article {
                title: "使用帮助".into(),
                description: "点击查看".into(),
                pic_url: "https://example.com/help.png".into(),
                url: "https://example.com/help".into(),
            }],
            crate::protocol::reply::Answering::Message
        )
        .unwrap()
    );
    let sub = event(Event::Subscribe {
        event_key: Some("qrscene_123".into()),
        ticket: Some("T".into()),
    });
    assert_eq!(set.decide(&sub).reply, text_reply("欢迎关注！123"));
    let plain_sub = event(Event::Subscribe {
        event_key: None,
        ticket: None,
    });
    assert_eq!(set.decide(&plain_sub).reply, text_reply("欢迎关注！"));
    let click = event(Event::Click {
        event_key: Some("V1001_TODAY_MUSIC".into()),
    });
    assert_eq!(
        set.decide(&click).reply,
        Reply::music(Music {
            title: Some("今日歌曲".into()),
            description: Some("每天一首".into()),
            music_url: Some("https://example.com/a.mp3".into()),
            hq_music_url: Some("https://example.com/a_hq.mp3".into()),
            thumb_media_id: Some("THUMB_MEDIA_ID".into()),
        })
    );
    let other_click = event(Event::Click {
        event_key: Some("OTHER".into()),
    });
    assert_eq!(set.decide(&other_click).reply, Reply::Success);
    let image = msg(Kind::Image {
        pic_url: Some("u".into()),
        media_id: Some("m".into()),
    });
    assert_eq!(set.decide(&image).reply, text_reply("收到图片"));
    assert_eq!(set.decide(&text("随便")).reply, text_reply("随便"));
    assert_eq!(set.decide(&text("随便")).rule, None);
    assert_eq!(
        set.decide(&text("天气")).rule,
        Some(Matched { index: 1, line: 2 })
    );
}

#[test]
fn first_match_wins() {
    let set = load(
        "[[rules]]\ncontains = \"a\"\nreply.text = \"first\"\n[[rules]]\ntext = \"abc\"\nreply.text = \"second\"\n",
    );
    assert_eq!(set.decide(&text("abc")).reply, text_reply("first"));
}

#[test]
fn voice_recognition_is_matched_like_text() {
    let set = load("[[rules]]\ncontains = \"天气\"\nreply.text = \"晴 {content}\"\n[default]\nreply = \"success\"\n");
    let voice = msg(Kind::Voice {
        media_id: Some("m".into()),
        format: Some("amr".into()),
        recognition: Some("今天天气".into()),
    });
    assert_eq!(set.decide(&voice).reply, text_reply("晴 今天天气"));
    let silent = msg(Kind::Voice {
        media_id: Some("m".into()),
        format: Some("amr".into()),
        recognition: None,
    });
    assert_eq!(set.decide(&silent).reply, Reply::Success);
}

fn voice(recognition: &str) -> Message {
    msg(Kind::Voice {
        media_id: None,
        format: None,
        recognition: Some(recognition.into()),
    })
}

/// Issue 10: WeChat's recognition ends in punctuation, so `text = "天气"` never matched speech.
#[test]
fn voice_recognition_matches_without_its_trailing_punctuation() {
    let set = load("[[rules]]\ntext = \"天气\"\nreply.text = \"晴\"\n[[rules]]\nregex = '^订单(\\d+)$'\nreply.text = \"#${1}\"\n[default]\nreply = \"success\"\n");
    for said in ["天气", "天气。", "天气！", "天气？ ", "天气...", "天气～"] {
        assert_eq!(set.decide(&voice(said)).reply, text_reply("晴"), "{said:?}");
    }
    assert_eq!(set.decide(&voice("订单42。")).reply, text_reply("#42"));
    // Text messages stay exact.
    assert_eq!(set.decide(&text("天气。")).reply, Reply::Success);
    // Only the end is trimmed.
    assert_eq!(set.decide(&voice("。天气")).reply, Reply::Success);
}

#[test]
fn misspelt_names_and_risky_replies_load_with_warnings_at_their_lines() {
    let set = load("[[rules]]\nmsg_type = \"imgae\"\nreply.text = \"x\"\n\n[[rules]]\nevent = \"clik\"\nreply.music = { title = \"t\" }\n[[rules]]\nevent = \"user_get_card\"\nreply = \"success\"\n");
    let w: Vec<String> = set.warnings().iter().map(ToString::to_string).collect();
    assert_eq!(w.len(), 3, "{w:?}");
    assert!(
        w[0].starts_with("t.toml:2: rule 1: msg_type \"imgae\"")
            && w[0].contains("did you mean \"image\""),
        "{w:?}"
    );
    assert!(
        w[1].starts_with("t.toml:6: rule 2: event \"clik\"") && w[1].contains("\"CLICK\""),
        "{w:?}"
    );
    assert!(
        w[2].starts_with("t.toml:7: rule 2: reply.music has no thumb_media_id"),
        "{w:?}"
    );
    let long = format!(
        "[[rules]]\ntext = \"a\"\nreply.text = \"{}\"\n",
        "x".repeat(3000)
    );
    let w = load(&long).warnings()[0].to_string();
    assert!(
        w.starts_with("t.toml:3: rule 1: reply.text is 3000 bytes"),
        "{w}"
    );
    assert!(load(crate::rules::BUILTIN).warnings().is_empty());
}

#[test]
fn errors_point_at_the_offending_key() {
    let e = |t: &str| RuleSet::parse(t, "t.toml").unwrap_err().to_string();
    assert!(
        e("[[rules]]\ntext = \"a\"\n\nregex = '(oops'\nreply.text = \"x\"\n")
            .starts_with("t.toml:1: rule 1: needs exactly one")
    );
    assert!(e("[[rules]]\n\nregex = '(oops'\nreply.text = \"x\"\n")
        .starts_with("t.toml:3: rule 1: bad regex"));
    assert!(e("[[rules]]\ntext = \"a\"\n\nreply.txt = \"x\"\n")
        .starts_with("t.toml:4: rule 1: unknown reply kind"));
    assert!(e("[default]\n\nreply = \"nope\"\n").starts_with("t.toml:3: [default]"));
}

#[test]
fn msg_type_and_event_match_case_insensitively() {
    let set = load(
        "[[rules]]\nmsg_type = \"LOCATION\"\nreply.text = \"loc\"\n[[rules]]\nevent = \"click\"\nkey_regex = '^V\\d+$'\nreply.text = \"k={event_key}\"\n",
    );
    let loc = msg(Kind::Location {
        location_x: None,
        location_y: None,
        scale: None,
        label: None,
    });
    assert_eq!(set.decide(&loc).reply, text_reply("loc"));
    let click = event(Event::Click {
        event_key: Some("V12".into()),
    });
    assert_eq!(set.decide(&click).reply, text_reply("k=V12"));
    let no = event(Event::Click {
        event_key: Some("X12".into()),
    });
    assert_eq!(set.decide(&no).reply, Reply::Success);
}

#[test]
fn placeholders_fill_from_the_message() {
    let set = load(
        "[[rules]]\nregex = '^(?P<cmd>\\w+) (\\d+)$'\nreply.text = \"{from_user}->{to_user}: ${cmd}/${2} {{literal}} {content}\"\n",
    );
    assert_eq!(
        set.decide(&text("buy 42")).reply,
        text_reply("o_user->gh_1: buy/42 {literal} buy 42")
    );
}

#[test]
fn default_can_be_success_or_a_reply() {
    let set = load("[default]\nreply = \"success\"\n");
    assert_eq!(set.decide(&text("hi")).reply, Reply::Success);
    let set = load("[default]\nreply.text = \"不明白：{content}\"\n");
    assert_eq!(set.decide(&text("hi")).reply, text_reply("不明白：hi"));
    assert_eq!(
        set.decide(&event(Event::Unsubscribe)).reply,
        text_reply("不明白：")
    );
}

#[test]
fn every_reply_kind_loads() {
    let set = load(
        r#"
[[rules]]
text = "img"
reply.image = "MEDIA"
[[rules]]
text = "voice"
reply.voice = { media_id = "V" }
[[rules]]
text = "video"
reply.video = { media_id = "M", title = "T" }
[[rules]]
text = "kf"
reply.transfer_customer_service = { kf_account = "a@b" }
[[rules]]
text = "kf2"
reply.transfer_customer_service = true
[[rules]]
text = "ok"
reply = "success"
"#,
    );
    assert_eq!(
        set.decide(&text("img")).reply,
        Reply::image("MEDIA").unwrap()
    );
    assert_eq!(set.decide(&text("voice")).reply, Reply::voice("V").unwrap());
    assert!(
        matches!(set.decide(&text("video")).reply, Reply::Video(v) if v.title.as_deref() == Some("T"))
    );
    assert_eq!(
        set.decide(&text("kf")).reply,
        Reply::transfer_customer_service(Some("a@b".into()))
    );
    assert_eq!(
        set.decide(&text("kf2")).reply,
        Reply::transfer_customer_service(None)
    );
    assert_eq!(set.decide(&text("ok")).reply, Reply::Success);
}

#[test]
fn news_with_several_articles_sends_one_to_a_message_and_all_to_an_event() {
    let set = load(
        "[[rules]]\ncontains = \"n\"\nreply.news = [{title=\"a\"},{title=\"b\"}]\n[[rules]]\nevent = \"subscribe\"\nreply.news = [{title=\"a\"},{title=\"b\"}]\n",
    );
    let d = set.decide(&text("n"));
    assert!(matches!(&d.reply, Reply::News(n) if n.articles().len() == 1));
    assert_eq!(d.warnings.len(), 1);
    let d = set.decide(&event(Event::Subscribe {
        event_key: None,
        ticket: None,
    }));
    assert!(matches!(&d.reply, Reply::News(n) if n.articles().len() == 2));
}

#[test]
fn text_that_renders_empty_becomes_success_with_a_warning() {
    let set = load("[[rules]]\nevent = \"CLICK\"\nreply.text = \"{event_key}\"\n");
    let d = set.decide(&event(Event::Click {
        event_key: Some(String::new()),
    }));
    assert_eq!(d.reply, Reply::Success);
    assert_eq!(d.warnings.len(), 1);
}

#[test]
fn errors_name_the_file_line_and_reason() {
    let e = load_err("[[rules]]\ntext = \"a\"\nreply.text = \"b\"\n\n[[rules]]\ntxt = \"a\"\nreply.text = \"b\"\n");
    assert_eq!(e.file, "t.toml");
    assert_eq!(e.line, Some(6));
    assert!(e.reason.contains("unknown field `txt`"), "{e}");
    assert!(e.to_string().starts_with("t.toml:6: "), "{e}");

    let e = load_err("[[rules]]\nregex = '(unclosed'\nreply.text = \"b\"\n");
    assert!(e.reason.contains("bad regex"), "{e}");
    assert!(e.line.is_some());

    let e = load_err("[[rules]]\ntext = \"a\"\nreply.news = []\n");
    assert!(e.reason.contains("0 articles"), "{e}");
    let nine = ["{title=\"x\"}"; 9].join(",");
    let e = load_err(&format!("[[rules]]\ntext = \"a\"\nreply.news = [{nine}]\n"));
    assert!(e.reason.contains("9 articles"), "{e}");

    let e = load_err("[[rules]]\ntext = \"a\"\nreply.text = \"\"\n");
    assert!(e.reason.contains("empty"), "{e}");
    // Regression (fuzzing): text of only characters XML cannot carry is empty too.
    let e = load_err("[default]\nreply.text = \"\\u0001\"\n");
    assert!(e.reason.contains("empty"), "{e}");

    let e = load_err("[[rules]]\ntext = \"a\"\nreply.txt = \"b\"\n");
    assert!(e.reason.contains("unknown reply kind `txt`"), "{e}");

    let e =
        load_err("[[rules]]\ntext = \"a\"\nreply.video = { media_id = \"m\", titel = \"t\" }\n");
    assert!(e.reason.contains("unknown key `titel`"), "{e}");

    let e = load_err("[[rules]]\ntext = \"a\"\ncontains = \"b\"\nreply.text = \"b\"\n");
    assert!(e.reason.contains("exactly one"), "{e}");

    let e = load_err("[[rules]]\ntext = \"a\"\nreply.text = \"{scen}\"\n");
    assert!(e.reason.contains("unknown placeholder {scen}"), "{e}");

    let e = load_err("[[rules]]\ntext = \"a\"\nreply.text = \"${1}\"\n");
    assert!(e.reason.contains("need a `regex` rule"), "{e}");

    let e = load_err("[[rules]]\nregex = 'a(b)'\nreply.text = \"${2}\"\n");
    assert!(e.reason.contains("only 1 group"), "{e}");

    let e = load_err("[[rules]]\ntext = \"a\"\n");
    assert!(e.reason.contains("missing field `reply`"), "{e}");

    let e = load_err("[default]\nreply = \"shout\"\n");
    assert!(e.reason.contains("[default]"), "{e}");

    let e = load_err("this is not toml");
    assert_eq!(e.line, Some(1));
}

#[test]
fn display_prints_one_line_per_rule() {
    let set = load(EXAMPLE);
    let lines: Vec<String> = set.rules().iter().map(|r| r.to_string()).collect();
    assert_eq!(
        lines[0],
        "line 2: text is \"天气\" → text \"北京天气挺好的！\""
    );
    assert_eq!(
        lines[1],
        "line 6: text matches /^订单\\s*(\\d+)$/ → text \"订单 ${1} 正在配送中\""
    );
    assert!(
        lines[4].starts_with("line 18: event CLICK with EventKey \"V1001_TODAY_MUSIC\" → music")
    );
    assert!(lines.iter().all(|l| !l.contains('\n')));
}

#[test]
fn hundreds_of_regex_rules_still_pick_the_first_match() {
    let mut toml = String::new();
    for i in 0..500 {
        toml.push_str(&format!(
            "[[rules]]\nregex = '^nomatch{i}-(\\d+)$'\nreply.text = \"r{i} ${{1}}\"\n"
        ));
    }
    toml.push_str("[[rules]]\nregex = '^nomatch499-(\\d+)$'\nreply.text = \"late\"\n");
    let set = load(&toml);
    assert_eq!(
        set.decide(&text("nomatch499-7")).reply,
        text_reply("r499 7")
    );
    assert_eq!(set.decide(&text("nomatch3-1")).reply, text_reply("r3 1"));
    assert_eq!(set.decide(&text("hello")).reply, text_reply("hello"));
}

#[test]
fn shared_rules_swap_atomically() {
    let shared = SharedRules::new(RuleSet::builtin());
    let before = shared.current();
    shared.replace(load("[default]\nreply = \"success\"\n"));
    assert_eq!(before.decide(&text("hi")).reply, text_reply("hi"));
    assert_eq!(shared.current().decide(&text("hi")).reply, Reply::Success);
}

#[test]
fn a_reply_by_file_answers_success_until_its_media_id_is_known() {
    let set = RuleSet::parse(
        "[[rules]]\ntext = \"a\"\nreply.image = { file = \"pics/menu.png\" }\n\n[[rules]]\ntext = \"b\"\nreply.video = { file = \"v.mp4\", title = \"T\" }\n\n[[rules]]\ntext = \"c\"\nreply.music = { music_url = \"https://e.com/a.mp3\", thumb = { file = \"cover.jpg\" } }\n\n[default]\nreply.voice = { file = \"hi.mp3\" }\n",
        "dir/rules.toml",
    )
    .unwrap();
    let files = set.media_files();
    let seen: Vec<_> = files
        .iter()
        .map(|f| (f.shown.as_str(), f.kind, f.reply, f.rule.as_str(), f.line))
        .collect();
    assert_eq!(
        seen,
        [
            ("pics/menu.png", "image", "image", "1", 3),
            ("v.mp4", "video", "video", "2", 7),
            ("cover.jpg", "thumb", "music", "3", 11),
            ("hi.mp3", "voice", "voice", "[default]", 14),
        ]
    );
    assert_eq!(files[0].path, std::path::Path::new("dir/pics/menu.png"));
    assert_eq!(files[1].title.as_deref(), Some("T"));
    let d = set.decide(&text("a"));
    assert_eq!(d.reply, Reply::Success);
    assert!(
        d.warnings[0].contains("not uploaded yet"),
        "{:?}",
        d.warnings
    );
    files[0].set("MEDIA_A".into());
    assert_eq!(
        set.decide(&text("a")).reply,
        Reply::image("MEDIA_A").unwrap()
    );
    assert_eq!(
        set.rules()[0].to_string(),
        "line 1: text is \"a\" → image file pics/menu.png"
    );
    files[2].set("THUMB".into());
    match set.decide(&text("c")).reply {
        Reply::Music(m) => assert_eq!(m.thumb_media_id.as_deref(), Some("THUMB")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_file_reply_is_refused_when_it_is_mixed_with_other_keys() {
    for (toml, needle) in [
        (
            "reply.image = { file = \"a.png\", media_id = \"M\" }",
            "`media_id` does not go with `file`",
        ),
        ("reply.image = { file = \"\" }", "file is empty"),
        (
            "reply.video = { file = \"v.mp4\", media_id = \"M\" }",
            "not both",
        ),
        (
            "reply.music = { thumb = \"c.jpg\" }",
            "thumb must be { file",
        ),
        (
            "reply.music = { thumb = { file = \"c.jpg\" }, thumb_media_id = \"T\" }",
            "not both",
        ),
    ] {
        let e = load_err(&format!("[[rules]]\ntext = \"a\"\n{toml}\n"));
        assert!(e.to_string().contains(needle), "{toml}: {e}");
    }
}

/// W5's memory: a regex rule keeps no compiled engine of its own until its rule is tried on a
/// text the set of all patterns matched (500 such engines were 26 MiB of W5's peak).
#[test]
fn a_regex_rule_is_compiled_only_once_its_rule_is_tried() {
    let set = load(
        r#"
[[rules]]
regex = '^order (\d+)$'
reply.text = "order ${1}"
[[rules]]
regex = '^track (\d+)$'
reply.text = "track ${1}"
[[rules]]
regex = '^help$'
reply.text = "help"
"#,
    );
    let compiled = |set: &RuleSet| -> Vec<bool> {
        set.rules()
            .iter()
            .map(|r| match &r.matcher {
                Matcher::Regex(p) => p.is_compiled(),
                _ => false,
            })
            .collect()
    };
    assert_eq!(compiled(&set), [false, false, false], "none after loading");
    assert_eq!(set.decide(&text("hello")).rule, None);
    assert_eq!(compiled(&set), [false, false, false], "the set said none");
    assert_eq!(set.decide(&text("track 42")).reply, text_reply("track 42"));
    // Rules are tried in order: the first was tried and did not match, the third never.
    assert_eq!(compiled(&set), [true, true, false]);
    assert_eq!(set.decide(&text("track 7")).reply, text_reply("track 7"));
}
