//! Criterion micro-benchmarks of the pipeline's pieces (`cargo bench --bench micro`), each on the
//! inputs `scripts/bench.sh` drives the server with, plus the whole pipeline without HTTP.
//! Short default timings keep `make bench` within minutes; criterion's flags override them.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

use wxmp::protocol::crypto;
use wxmp::protocol::message::Message;
use wxmp::protocol::query::Query;
use wxmp::protocol::reply::{Answering, Article, Music, Reply};
use wxmp::protocol::verify::{self, Token};
use wxmp::protocol::xml;
use wxmp::rules::RuleSet;
use wxmp::server::account::Account;
use wxmp::server::env::SystemEnv;
use wxmp::server::pipeline::{retry_key, Answer, Pipeline, Push, Sealing};
use wxmp::server::store::{Begin, Limits, MemoryStore, RetryStore};

#[path = "common.rs"]
mod common;

fn token() -> Token {
    common::token()
}

/// The `Encrypt` payload of a sealed W2 push.
fn sealed_text(id: u64) -> String {
    common::safe_mode()
        .seal(
            &token(),
            &common::text_message("hello 你好", id),
            common::TIMESTAMP,
            common::NONCE,
            &[7; 16],
        )
        .encrypt
}

/// examples/rules.toml followed by 500 regex rules that match nothing (the W5 rules file).
fn rules_500() -> RuleSet {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/rules.toml");
    let mut text = std::fs::read_to_string(path).unwrap();
    text.push_str(&common::extra_rules(500));
    RuleSet::parse(&text, "rules_500.toml").unwrap()
}

fn signature(c: &mut Criterion) {
    let token = token();
    let sig = verify::signature(&token, common::TIMESTAMP, common::NONCE);
    let encrypt = sealed_text(1);
    c.bench_function("signature/plain", |b| {
        b.iter(|| {
            verify::signature(
                &token,
                black_box(common::TIMESTAMP),
                black_box(common::NONCE),
            )
        })
    });
    c.bench_function("signature/plain_check", |b| {
        b.iter(|| {
            let expected = verify::signature(
                &token,
                black_box(common::TIMESTAMP),
                black_box(common::NONCE),
            );
            verify::signatures_match(&expected, black_box(&sig))
        })
    });
    c.bench_function("signature/msg_signature", |b| {
        b.iter(|| {
            verify::msg_signature(
                &token,
                common::TIMESTAMP,
                common::NONCE,
                black_box(&encrypt),
            )
        })
    });
}

/// Every fixture that is an incoming message or event (not replies, not the hostile inputs).
fn parse(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .collect();
    files.sort();
    let mut group = c.benchmark_group("parse");
    for path in files {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if ["reply_", "hostile_", "java_vector_"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            continue;
        }
        let body = std::fs::read(&path).unwrap();
        if Message::parse_bytes(&body).is_err() {
            continue;
        }
        group.bench_function(&name, |b| {
            b.iter(|| Message::parse_bytes(black_box(&body)).unwrap())
        });
    }
    group.finish();

    // The two readers behind `parse`: the tree parser (xmltree) and the flat reader W4 uses for
    // its envelope, on the envelope and on a plain text push (both are flat documents).
    let (_, envelope) = common::sealed_push(&common::text_message("hello 你好", 1), &[7; 16]);
    let mut group = c.benchmark_group("xml");
    for (name, doc) in [
        ("w4_envelope", envelope),
        ("text", common::text_message("hello 你好", 1)),
    ] {
        group.bench_function(format!("tree/{name}"), |b| {
            b.iter(|| {
                let clean = xml::sanitize(black_box(doc.as_bytes())).unwrap();
                xml::parse(&clean).unwrap()
            })
        });
        group.bench_function(format!("flat/{name}"), |b| {
            b.iter(|| {
                let clean = xml::sanitize(black_box(doc.as_bytes())).unwrap();
                xml::flat_fields(&clean).unwrap().len()
            })
        });
    }
    group.finish();
}

fn render(c: &mut Criterion) {
    let (text, _) = Reply::text("hello 你好");
    let news = Reply::news(
        vec![Article {
            title: "使用帮助".into(),
            description: "点击查看".into(),
            pic_url: "https://example.com/help.png".into(),
            url: "https://example.com/help".into(),
        }],
        Answering::Message,
    )
    .unwrap();
    let music = Reply::music(Music {
        title: Some("今日歌曲".into()),
        description: Some("每天一首".into()),
        music_url: Some("https://example.com/a.mp3".into()),
        hq_music_url: Some("https://example.com/a_hq.mp3".into()),
        thumb_media_id: None,
    });
    let mut group = c.benchmark_group("render");
    for (name, reply) in [("text", &text), ("news", &news), ("music", &music)] {
        group.bench_function(name, |b| {
            b.iter(|| black_box(reply).render(common::FROM_USER, common::TO_USER, 1_700_000_000))
        });
    }
    group.finish();
}

fn crypto(c: &mut Criterion) {
    let key = common::safe_mode().key;
    let encrypt = sealed_text(1);
    let (reply, _) = Reply::text("hello 你好");
    let reply = reply.render(common::FROM_USER, common::TO_USER, 1_700_000_000);
    c.bench_function("crypto/decrypt", |b| {
        b.iter(|| crypto::decrypt(&key, black_box(&encrypt)).unwrap())
    });
    c.bench_function("crypto/encrypt", |b| {
        b.iter(|| crypto::encrypt(&key, common::APP_ID, &[7; 16], black_box(&reply)))
    });
}

fn rules(c: &mut Criterion) {
    let set = rules_500();
    let builtin = RuleSet::builtin();
    let msg = |text: &str| Message::parse(&common::text_message(text, 1)).unwrap();
    let (echo, weather, order) = (msg("hello 你好"), msg("天气"), msg("订单 12345"));
    let mut group = c.benchmark_group("rules");
    group.bench_function("builtin/echo", |b| {
        b.iter(|| builtin.decide(black_box(&echo)))
    });
    group.bench_function("500/no_match_echo", |b| {
        b.iter(|| set.decide(black_box(&echo)))
    });
    group.bench_function("500/first_rule", |b| {
        b.iter(|| set.decide(black_box(&weather)))
    });
    group.bench_function("500/regex_capture", |b| {
        b.iter(|| set.decide(black_box(&order)))
    });
    // Regex cost grows with the text: a chatty user costs more than `hello`.
    let long = msg(&("你好".repeat(100) + &"hello ".repeat(50)));
    group.bench_function("500/no_match_900B", |b| {
        b.iter(|| set.decide(black_box(&long)))
    });
    group.finish();
}

fn dedup(c: &mut Criterion) {
    let answer = Answer {
        body: Arc::from(
            Reply::text("hello 你好")
                .0
                .render(common::FROM_USER, common::TO_USER, 1),
        ),
        xml: true,
    };
    let key_of = |id: u64| {
        retry_key(
            &Message::parse(&common::text_message("x", id)).unwrap(),
            Sealing::Plain,
        )
        .unwrap()
    };
    // A cache holding 50 000 answers, as under load; lookups hit one of them.
    let cache: MemoryStore<Answer> = MemoryStore::new(Limits::default());
    for id in 0..50_000 {
        if let Begin::Fresh(t) = cache.begin(key_of(id), 1000) {
            t.complete(answer.clone(), 1000);
        }
    }
    let hit = key_of(25_000);
    c.bench_function("dedup/lookup_cached", |b| {
        b.iter(|| match cache.begin(black_box(hit.clone()), 1000) {
            Begin::Cached(a) => a,
            _ => unreachable!("the key was answered"),
        })
    });
    let mut next = 1_000_000u64;
    c.bench_function("dedup/fresh_complete", |b| {
        b.iter_batched(
            || {
                next += 1;
                key_of(next)
            },
            |k| match cache.begin(k, 1000) {
                Begin::Fresh(t) => t.complete(answer.clone(), 1000),
                _ => unreachable!("the key is new"),
            },
            BatchSize::SmallInput,
        )
    });
}

/// The whole pipeline minus HTTP (verify, the replay window, parse, dedup, rules, render; safe
/// mode adds decrypt, encrypt and signing), a fresh MsgId every time like the wrk workloads. Each
/// push is signed in the untimed setup with the current time and a nonce of its own, as WeChat
/// signs them, so the replay window's checks are measured too.
fn pipeline(c: &mut Criterion) {
    let token = token();
    let build =
        |account: Account| Pipeline::in_memory(account, Limits::default(), Arc::new(SystemEnv));
    let app = build(Account::new(token.clone()));
    let app_500 = build(Account::new(token.clone()).with_rules(rules_500()));
    let app_safe = build(Account::new(token.clone()).with_safe(Some(common::safe_mode())));
    let handle = |app: &Pipeline, q: &Query, body: &str| {
        app.handle_message(Push {
            query: q,
            body: body.as_bytes(),
            arrived: Instant::now(),
        })
        .result
        .unwrap()
    };
    let mut id = 0u64;
    let mut group = c.benchmark_group("pipeline");
    for (name, app, text) in [
        ("w2_echo", &app, "hello 你好"),
        ("w3_weather", &app, "天气"),
        ("w5_500_rules", &app_500, "hello 你好"),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    id += 1;
                    let (ts, nonce) = common::fresh(id);
                    let q = Query::parse(&format!(
                        "{}&openid={}",
                        common::signed_query(&ts, &nonce),
                        common::FROM_USER
                    ))
                    .unwrap();
                    (q, common::text_message(text, id))
                },
                |(q, body)| handle(app, &q, &body),
                BatchSize::SmallInput,
            )
        });
    }
    group.bench_function("w4_safe", |b| {
        b.iter_batched(
            || {
                id += 1;
                let (ts, nonce) = common::fresh(id);
                let (msg_sig, body) = common::sealed_push_at(
                    &common::text_message("hello 你好", id),
                    &[7; 16],
                    &ts,
                    &nonce,
                );
                let q = Query::parse(&format!(
                    "{}&encrypt_type=aes&msg_signature={msg_sig}",
                    common::signed_query(&ts, &nonce)
                ))
                .unwrap();
                (q, body)
            },
            |(q, body)| handle(&app_safe, &q, &body),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30)
        .without_plots();
    targets = signature, parse, render, crypto, rules, dedup, pipeline
}
criterion_main!(benches);
