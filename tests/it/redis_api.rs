//! The WeChat API side of several instances on one real Redis, against the real `wxmp fake-api`:
//! one access_token for all (one fetch, one refresh per shared rejection), one upload per
//! picture, and a late `kf` answer sent once whichever instances WeChat's attempts land on.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use serde_json::Value;
use wxmp::api::{ApiConfig, Client, Secret, TokenEndpoint};
use wxmp::log::{Capture, Log};
use wxmp::server::redis_token::RedisTokens;
use wxmp::server::shared::{Shared, StoreConfig};

use crate::api::{Fake, APPID, PNG, SECRET};
use crate::forward::{endpoint, forward_rules};
use crate::helpers::text_xml;
use crate::kit::binary::Wxmp;
use crate::kit::http::request as http;
use crate::kit::signed::target as signed;
use crate::kit::tempdir;
use crate::kit::wait::{self, secs};
use crate::redis::Redis;

const TOKEN: &str = "redisapi1";
const SEND: &str = "/cgi-bin/message/custom/send";

/// An instance on `redis` using the API at `fake`, with a token cache of its own (so only
/// Redis can share the token), its metrics listener on.
fn instance(redis: &Redis, fake: &Fake, rules: &Path) -> Wxmp {
    let cache = tempdir().join("token.json");
    Wxmp::builder()
        .args(&[
            "--token",
            TOKEN,
            "--rules",
            rules.to_str().unwrap(),
            "--store",
            &redis.url(),
            "--appid",
            APPID,
            "--api-base",
            &fake.base,
            "--token-cache",
            cache.to_str().unwrap(),
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .env("WXMP_SECRET", SECRET)
        .start()
}

fn token_requests(fake: &Fake) -> u64 {
    fake.stats()["token_requests"].as_u64().unwrap()
}

fn errcodes(fake: &Fake, code: i64) -> u64 {
    fake.stats()["errcodes"][code.to_string()]
        .as_u64()
        .unwrap_or(0)
}

/// The fake's stable token replaced by a forced refresh, as another holder of the AppSecret
/// (or WeChat itself) would: every token wxmp holds is refused from now on.
fn invalidate(fake: &Fake) {
    let body = serde_json::json!({
        "grant_type": "client_credential",
        "appid": APPID,
        "secret": SECRET,
        "force_refresh": true,
    })
    .to_string();
    let addr = fake.base.trim_start_matches("http://");
    let (status, answer) = http(addr, "POST", "/cgi-bin/stable_token", body.as_bytes());
    assert_eq!(status, 200, "{answer}");
    let v: Value = serde_json::from_str(&answer).unwrap();
    assert!(v["access_token"].is_string(), "{answer}");
}

/// One push to each instance at once (each its first attempt, so each instance makes its own
/// call and sends its own late answer), each answered the fallback in time.
fn one_push_each(servers: &[&Wxmp], first_id: u64) {
    let handles: Vec<_> = servers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let addr = s.addr.clone();
            let body = text_xml(&format!("o_tok{i}"), "hello", first_id + i as u64);
            thread::spawn(move || http(&addr, "POST", &signed(TOKEN), body.as_bytes()))
        })
        .collect();
    for h in handles {
        let (status, answer) = h.join().unwrap();
        assert_eq!(status, 200);
        assert!(answer.contains("稍等"), "the fallback, got {answer:?}");
    }
}

/// The token Redis holds for the AppID.
fn token_in_redis(redis: &Redis) -> String {
    let (_, ttl, value) = redis
        .dump()
        .into_iter()
        .find(|(k, _, _)| *k == format!("wxmp:token:{APPID}"))
        .expect("the token is in Redis");
    assert!(
        ttl > 0 && ttl <= 7140 * 1000,
        "the token's key expires before WeChat's expiry: {ttl} ms"
    );
    let v: Value = serde_json::from_slice(&value).unwrap();
    v["access_token"].as_str().unwrap().to_owned()
}

#[test]
fn three_instances_fetch_one_token_and_one_shared_rejection_causes_one_refresh() {
    let redis = Redis::start();
    let fake = Fake::start(&[]);
    let up = endpoint(
        Duration::from_secs(6),
        200,
        r#"{"MsgType":"text","Content":"late but here"}"#,
    );
    let rules = forward_rules(&up.url);
    let servers = [0, 1, 2].map(|_| instance(&redis, &fake, &rules));
    let all: Vec<&Wxmp> = servers.iter().collect();

    // Three late answers at once, one per instance: one token for all three.
    one_push_each(&all, 8001);
    wait::until(secs(30), "three customer-service messages", || {
        fake.count(SEND) >= 3
    });
    assert_eq!(
        token_requests(&fake),
        1,
        "one token fetch across the instances"
    );
    let first = token_in_redis(&redis);

    // The token is refused from now on; each instance's next call fails with 40001.
    invalidate(&fake);
    let fetched = token_requests(&fake);
    one_push_each(&all, 8101);
    wait::until_ok(secs(30), "three more messages delivered", || {
        let sends = fake.count(SEND);
        let refused = errcodes(&fake, 40001);
        // Each refused send is sent again with the new token.
        if sends >= 6 + refused && refused >= 1 {
            Ok(())
        } else {
            Err(format!("{sends} sends, {refused} refused"))
        }
    });
    assert_eq!(
        token_requests(&fake),
        fetched + 1,
        "one refresh for the rejection, whichever instances saw it ({} saw 40001)",
        errcodes(&fake, 40001)
    );
    let second = token_in_redis(&redis);
    assert_ne!(first, second);
    for (key, ttl, value) in redis.dump() {
        assert!(ttl > 0, "{key} has no expiry ({ttl})");
        assert!(!String::from_utf8_lossy(&value).contains(SECRET), "{key}");
    }
    for s in &servers {
        let log = s.log();
        for t in [&first, &second] {
            assert!(!log.contains(t.as_str()), "the token is in a log:\n{log}");
        }
        assert!(!log.contains(SECRET));
    }
    assert_eq!(up.calls(), 6);
}

/// Redis stopped: the late answer still goes out, with a token the instance fetched itself
/// (one line says so); Redis back: the token is shared again (one line), and the next answer
/// fetches nothing.
#[test]
fn without_redis_an_instance_fetches_its_own_token_and_shares_again_when_it_is_back() {
    let mut redis = Redis::start();
    let fake = Fake::start(&[]);
    let up = endpoint(
        Duration::from_secs(6),
        200,
        r#"{"MsgType":"text","Content":"late anyway"}"#,
    );
    let rules = forward_rules(&up.url);
    let server = instance(&redis, &fake, &rules);

    redis.stop();
    one_push_each(&[&server], 8401);
    fake.wait_for("kf send → o_tok0: text \"late anyway\"", secs(30));
    assert_eq!(token_requests(&fake), 1);
    server.wait_for_log(
        "token: the store is unavailable; this instance fetches",
        secs(5),
    );

    redis.restart();
    wait::until(
        secs(15),
        "/healthz back to ok after Redis's restart",
        || server.request("GET", "/healthz", b"").1 == "ok",
    );
    // The instance's own token, still fresh, goes to Redis instead of a new fetch.
    one_push_each(&[&server], 8402);
    wait::until(secs(30), "the second message", || fake.count(SEND) >= 2);
    server.wait_for_log("is shared through the store again", secs(5));
    assert_eq!(token_requests(&fake), 1, "no second fetch");
    assert!(!token_in_redis(&redis).is_empty());
    let log = server.log();
    assert_eq!(
        log.matches("token: the store is unavailable").count(),
        1,
        "one line per outage:\n{log}"
    );
}

/// The same protocol in process, step by step, so the order is certain: three holders on one
/// Redis each see the token refused, one after another; one forced fetch in all.
#[test]
fn holders_that_see_the_same_rejection_refresh_once_and_the_others_take_the_new_token() {
    let redis = Redis::start();
    let fake = Fake::start(&[]);
    let log = Log::to(Arc::new(Capture::default()));
    let config = StoreConfig {
        url: Some(redis.url()),
        ..StoreConfig::default()
    };
    let shared = Shared::open(&config, &redis.url(), 4, log.clone()).unwrap();
    let clients: Vec<Client> = (0..3)
        .map(|_| {
            let c = Client::new(ApiConfig {
                app_id: APPID.into(),
                secret: Secret::new(SECRET),
                api_base: fake.base.clone(),
                token_cache: None,
                token_endpoint: TokenEndpoint::Stable,
                timeout: Duration::from_secs(5),
            });
            c.share_tokens(Arc::new(RedisTokens::new(
                Arc::clone(&shared),
                APPID,
                &fake.base,
                Duration::from_secs(5),
                log.clone(),
            )));
            c
        })
        .collect();
    let tokens: Vec<_> = clients.iter().map(|c| c.token().unwrap().token).collect();
    assert!(tokens.iter().all(|t| *t == tokens[0]));
    assert_eq!(token_requests(&fake), 1);

    invalidate(&fake);
    let fresh: Vec<_> = clients
        .iter()
        .map(|c| c.replace_token(&tokens[0]).unwrap().token)
        .collect();
    assert!(fresh.iter().all(|t| *t == fresh[0] && *t != tokens[0]));
    assert_eq!(
        token_requests(&fake),
        3,
        "the test's refresh and one of the holders'"
    );
    // A rejected token seen again later (a slow caller) costs nothing either.
    assert_eq!(
        clients[2].replace_token(&tokens[0]).unwrap().token,
        fresh[0]
    );
    assert_eq!(token_requests(&fake), 3);
}

/// WeChat's three attempts at one push land on three instances; the answer comes after the
/// first attempt answered the fallback: one call, one customer-service message.
#[test]
fn a_late_kf_answer_is_sent_once_when_the_attempts_land_on_three_instances() {
    let redis = Redis::start();
    let fake = Fake::start(&[]);
    let up = endpoint(
        Duration::from_secs(8),
        200,
        r#"{"MsgType":"text","Content":"once only"}"#,
    );
    let rules = forward_rules(&up.url);
    let servers = [0, 1, 2].map(|_| instance(&redis, &fake, &rules));
    let target = signed(TOKEN);
    let body = text_xml("o_kf_once", "hello", 8201);
    for s in &servers {
        let (status, answer) = s.request("POST", &target, body.as_bytes());
        assert_eq!(status, 200);
        assert!(answer.contains("稍等"), "the fallback, got {answer:?}");
    }
    fake.wait_for("kf send → o_kf_once: text \"once only\"", secs(30));
    // Long enough for a second message, if any instance were to send one.
    thread::sleep(Duration::from_secs(3));
    assert_eq!(fake.count(SEND), 1, "{}", fake.output());
    assert_eq!(up.calls(), 1);
}

/// A rules file answering 菜单 with a picture, in a folder of its own.
fn rules_with_picture() -> PathBuf {
    let dir = tempdir();
    std::fs::create_dir_all(dir.join("pics")).unwrap();
    std::fs::write(dir.join("pics/menu.png"), PNG).unwrap();
    let rules = dir.join("rules.toml");
    std::fs::write(
        &rules,
        "[[rules]]\ntext = \"菜单\"\nreply.image = { file = \"pics/menu.png\" }\n",
    )
    .unwrap();
    rules
}

/// The MediaId an instance answers 菜单 with, once it has one.
fn media_id(server: &Wxmp, id: u64) -> Option<String> {
    let (status, body) = server.request(
        "POST",
        &signed(TOKEN),
        text_xml("o_pic", "菜单", id).as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    let start = body.find("<MediaId><![CDATA[")? + "<MediaId><![CDATA[".len();
    let end = start + body[start..].find("]]>")?;
    Some(body[start..end].to_owned())
}

#[test]
fn two_instances_with_the_same_picture_upload_it_once() {
    let redis = Redis::start();
    let fake = Fake::start(&[]);
    let rules = rules_with_picture();
    let (a, b) = (
        instance(&redis, &fake, &rules),
        instance(&redis, &fake, &rules),
    );
    let mut n = 8300;
    let mut ids = Vec::new();
    for s in [&a, &b] {
        let mut got = None;
        wait::until(
            secs(20),
            "an image reply with the uploaded media_id",
            || {
                n += 1;
                got = media_id(s, n);
                got.is_some()
            },
        );
        ids.push(got.unwrap_or_default());
    }
    assert_eq!(ids[0], ids[1], "both answer the same media_id");
    assert_eq!(fake.count("/cgi-bin/material/add_material"), 1);
    let key = redis
        .dump()
        .into_iter()
        .find(|(k, _, _)| k.starts_with(&format!("wxmp:media:{APPID}:")))
        .expect("the media_id is in Redis");
    assert!(key.1 > 0, "the media_id's key expires: {key:?}");
    assert!(String::from_utf8_lossy(&key.2).contains(&ids[0]));
    // A third instance, started later, answers it at once.
    let c = instance(&redis, &fake, &rules);
    assert_eq!(media_id(&c, 9000).as_deref(), Some(ids[0].as_str()));
    assert_eq!(fake.count("/cgi-bin/material/add_material"), 1);
}
