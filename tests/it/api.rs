//! The API side, end to end: the real `wxmp` binary against the real `wxmp fake-api` on
//! loopback. Token reuse across runs, refresh ahead, the one retry, every errcode sentence, the
//! menu round trip and customer-service messages in the fake's output.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use wxmp::api::menu::Menu;

use crate::kit::binary::{command, Wxmp};
use crate::kit::http::request;
use crate::kit::tempdir;
use crate::kit::wait::{self, secs};

pub const APPID: &str = "wxapitest0000001";
pub const SECRET: &str = "apitest-secret-0123456789abcdef";

/// A command with none of the caller's `WXMP_*` settings, and a cache directory of its own:
/// tests never touch the real ~/.cache.
fn clean(args: &[&str], cache_home: &Path) -> Command {
    let mut c = command(args);
    c.env("XDG_CACHE_HOME", cache_home).env("HOME", cache_home);
    c
}

/// A running `wxmp fake-api` on a free port, killed on drop; its stdout is collected.
pub struct Fake {
    child: Child,
    pub base: String,
    out: Arc<Mutex<String>>,
}

impl Fake {
    pub fn start(extra: &[&str]) -> Fake {
        let dir = tempdir();
        let mut args = vec![
            "fake-api", "--port", "0", "--appid", APPID, "--secret", SECRET,
        ];
        args.extend_from_slice(extra);
        let mut child = clean(&args, &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let banner = lines.next().unwrap().unwrap();
        let base = banner
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {banner:?}"))
            .to_owned();
        assert!(
            !banner.contains(SECRET),
            "the banner shows a given secret: {banner}"
        );
        let out = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&out);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let mut o = sink.lock().unwrap();
                o.push_str(&line);
                o.push('\n');
            }
        });
        Fake { child, base, out }
    }

    pub fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Waits until the fake's output contains `needle`; fails, showing the output, if it does
    /// not within `within`.
    #[track_caller]
    pub fn wait_for(&self, needle: &str, within: std::time::Duration) {
        wait::until_ok(
            within,
            format_args!("{needle:?} in the fake's output"),
            || {
                let out = self.output();
                if out.contains(needle) {
                    Ok(())
                } else {
                    Err(format!("\n{out}"))
                }
            },
        );
    }

    pub fn stats(&self) -> Value {
        let addr = self.base.trim_start_matches("http://");
        let (status, body) = request(addr, "GET", "/fake/stats", b"");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    pub fn count(&self, path: &str) -> u64 {
        self.stats()["calls"][path].as_u64().unwrap_or(0)
    }

    fn token_requests(&self) -> u64 {
        self.stats()["token_requests"].as_u64().unwrap()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One client run against `fake`: the options come after the command words, as users type
/// them, with a token cache in `dir`.
fn wxmp(fake: &Fake, dir: &Path, args: &[&str]) -> Output {
    run_against(&fake.base, SECRET, &dir.join("token.json"), args)
}

/// A client run against the API at `base`; checks that neither the AppSecret nor a token
/// was printed.
fn run_against(base: &str, secret: &str, cache: &Path, args: &[&str]) -> Output {
    let mut all = args.to_vec();
    let cache = cache.to_str().unwrap();
    all.extend_from_slice(&[
        "--api-base",
        base,
        "--appid",
        APPID,
        "--secret",
        secret,
        "--token-cache",
        cache,
    ]);
    let home = Path::new(cache).parent().unwrap();
    let o = clean(&all, home).output().unwrap();
    let both = format!("{}{}", text(&o.stdout), text(&o.stderr));
    assert!(!both.contains(secret), "the AppSecret was printed: {both}");
    assert!(!both.contains("FAKE_"), "a token was printed: {both}");
    o
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The run's stdout and stderr, once it is known to have exited with `code`.
fn exited(o: &Output, code: i32) -> (String, String) {
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(code), "stdout: {out}\nstderr: {err}");
    (out, err)
}

/// The stdout of a run that succeeded.
fn ok(o: &Output) -> String {
    exited(o, 0).0
}

/// The stderr of a run that WeChat refused or could not be reached (exit 1).
fn refused(o: &Output) -> String {
    exited(o, 1).1
}

/// A one-button click menu in `dir`, its fourth line `last`.
fn menu_file(dir: &Path, name: &str, last: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    let text = format!("[[button]]\nname = \"a\"\ntype = \"click\"\n{last}\n");
    std::fs::write(&path, text).unwrap();
    path
}

fn example(name: &str) -> String {
    format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn menu_push_show_and_delete_round_trip_through_the_fake() {
    let fake = Fake::start(&[]);
    let dir = tempdir();
    let out = ok(&wxmp(&fake, &dir, &["menu", "push", &example("menu.toml")]));
    assert!(out.starts_with("menu pushed: 6 buttons"), "{out}");
    fake.wait_for("menu created: 6 buttons", secs(10));

    let shown = wxmp(&fake, &dir, &["menu", "show"]);
    let toml = ok(&shown);
    let (back, _) = Menu::parse_toml(&toml).unwrap();
    let example_text = std::fs::read_to_string(example("menu.toml")).unwrap();
    let (original, _) = Menu::parse_toml(&example_text).unwrap();
    assert_eq!(back.to_json(), original.to_json());
    assert!(text(&shown.stderr).contains("the menu has 6 buttons"));

    // What show prints, push accepts.
    let file = dir.join("shown.toml");
    std::fs::write(&file, &toml).unwrap();
    ok(&wxmp(
        &fake,
        &dir,
        &["menu", "push", file.to_str().unwrap()],
    ));

    assert_eq!(
        ok(&wxmp(&fake, &dir, &["menu", "delete"])).trim(),
        "menu deleted"
    );
    let e = refused(&wxmp(&fake, &dir, &["menu", "show"]));
    assert!(
        e.contains("errcode 46003") && e.contains("wxmp menu push"),
        "{e}"
    );
    // Five runs, one token: the cache carried it from run to run.
    assert_eq!(fake.token_requests(), 1);
}

#[test]
fn a_second_run_reuses_the_cached_token_and_the_cache_is_private() {
    let fake = Fake::start(&[]);
    let dir = tempdir();
    ok(&wxmp(&fake, &dir, &["menu", "delete"]));
    ok(&wxmp(&fake, &dir, &["menu", "delete"]));
    assert_eq!(fake.token_requests(), 1);
    assert_eq!(fake.count("/cgi-bin/menu/delete"), 2);

    let cache = dir.join("token.json");
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let cached: Value = serde_json::from_str(&std::fs::read_to_string(&cache).unwrap()).unwrap();
    assert!(!cached.to_string().contains(SECRET));

    let info = ok(&wxmp(&fake, &dir, &["token"]));
    assert!(
        info.contains(&format!("token cache: {}", cache.display())),
        "{info}"
    );
    assert!(
        info.contains(&format!(
            "a token is cached, fetched with POST {}/cgi-bin/stable_token",
            fake.base
        )),
        "{info}"
    );
    assert!(
        info.contains("\nit expires at") && info.contains("wxmp fetches the next one from"),
        "{info}"
    );
    // --show prints the token alone on stdout (the check in `wxmp` above would fail on it, so
    // run this one directly).
    let shown = clean(
        &[
            "token",
            "--show",
            "--appid",
            APPID,
            "--token-cache",
            cache.to_str().unwrap(),
            "--api-base",
            &fake.base,
        ],
        &dir,
    )
    .output()
    .unwrap();
    assert_eq!(
        text(&shown.stdout).trim(),
        cached["access_token"].as_str().unwrap()
    );
    assert!(text(&shown.stderr).contains("a token is cached, fetched with"));
    assert_eq!(fake.token_requests(), 1);
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn a_token_within_five_minutes_of_expiry_is_refreshed_ahead() {
    let fake = Fake::start(&[]);
    let dir = tempdir();
    ok(&wxmp(&fake, &dir, &["kf", "typing", "o1"]));
    // Make the cached token two hours old with 200 s left: still valid, but due.
    let cache = dir.join("token.json");
    let mut cached: Value =
        serde_json::from_str(&std::fs::read_to_string(&cache).unwrap()).unwrap();
    cached["fetched_at"] = (now() - 7000).into();
    cached["expires_at"] = (now() + 200).into();
    std::fs::write(&cache, cached.to_string()).unwrap();
    ok(&wxmp(&fake, &dir, &["kf", "typing", "o1"]));
    assert_eq!(fake.token_requests(), 2, "{}", fake.output());
    let again: Value = serde_json::from_str(&std::fs::read_to_string(&cache).unwrap()).unwrap();
    assert!(again["expires_at"].as_u64().unwrap() > now() + 7000);
}

#[test]
fn a_short_lived_token_is_replaced_before_it_expires() {
    // The fake's tokens live 2 s; wxmp uses one for half its life, then fetches the next,
    // so WeChat never sees an expired token (42001).
    let fake = Fake::start(&["--expires-in", "2"]);
    let dir = tempdir();
    let mut runs = 0;
    wait::until_ok(secs(20), "a third token fetched", || {
        runs += 1;
        ok(&wxmp(&fake, &dir, &["kf", "typing", "o1"]));
        if fake.token_requests() >= 3 {
            Ok(())
        } else {
            Err(format!("after {runs} runs: {}", fake.output()))
        }
    });
    let stats = fake.stats();
    assert_eq!(stats["errcodes"].get("42001"), None, "{stats}");
    assert_eq!(stats["errcodes"].get("40001"), None, "{stats}");
}

#[test]
fn a_rejected_token_is_replaced_and_the_call_retried_once() {
    let fake = Fake::start(&["--fail", "40001:once"]);
    let dir = tempdir();
    let out = ok(&wxmp(&fake, &dir, &["kf", "send", "o1", "text", "retried"]));
    assert!(out.contains("(sent)"), "{out}");
    let stats = fake.stats();
    assert_eq!(stats["token_requests"], 2);
    assert_eq!(stats["forced_refreshes"], 1);
    assert_eq!(fake.count("/cgi-bin/message/custom/send"), 2);
    fake.wait_for("kf send → o1: text \"retried\"", secs(10));

    // Rejected again after the retry: reported, not retried a second time.
    let fake = Fake::start(&["--fail", "40001"]);
    let e = refused(&wxmp(&fake, &tempdir(), &["kf", "send", "o1", "text", "x"]));
    assert!(
        e.contains("errcode 40001") && e.contains("refused a freshly fetched one"),
        "{e}"
    );
    assert_eq!(fake.count("/cgi-bin/message/custom/send"), 2);
    assert_eq!(fake.token_requests(), 2);
}

#[test]
fn every_errcode_is_printed_as_its_sentence_and_never_retried() {
    let cases: &[(&str, &[&str])] = &[
        (
            "40013",
            &[
                "does not know this AppID",
                "--appid / WXMP_APPID",
                "基本配置",
            ],
        ),
        ("40125", &["AppSecret is wrong", "--secret / WXMP_SECRET"]),
        (
            "40164",
            &[
                "the IP 127.0.0.1 is not on the account's IP whitelist",
                "IP白名单",
            ],
        ),
        ("61004", &["the IP 127.0.0.1 is not on", "IP白名单"]),
        (
            "89503",
            &["administrator must confirm calls from the IP 127.0.0.1"],
        ),
        ("45009", &["daily quota", "customer-service", "50,000"]),
        ("45011", &["per-minute quota", "try again in a minute"]),
        (
            "48001",
            &[
                "lacks the API",
                "personal and unverified subscription accounts",
                "test account (测试号) does",
            ],
        ),
        ("45015", &["48-hour window"]),
        (
            "45047",
            &["customer-service quota for this user is used up"],
        ),
    ];
    for (code, needles) in cases {
        let fake = Fake::start(&["--fail", code]);
        let e = refused(&wxmp(
            &fake,
            &tempdir(),
            &["kf", "send", "o1", "text", "hi"],
        ));
        assert!(e.starts_with("wxmp: "), "{e}");
        assert!(e.contains(&format!("errcode {code}")), "{code}: {e}");
        assert!(e.contains("[rid fake-"), "{code}: {e}");
        for n in *needles {
            assert!(e.contains(n), "{code}: {e:?} lacks {n:?}");
        }
        assert!(
            fake.count("/cgi-bin/message/custom/send") <= 1,
            "{code} was retried"
        );
        assert!(fake.token_requests() <= 1, "{code} fetched twice");
    }
}

#[test]
fn kf_send_and_typing_show_up_in_the_fakes_output() {
    let fake = Fake::start(&[]);
    let dir = tempdir();
    let out = ok(&wxmp(
        &fake,
        &dir,
        &["kf", "send", "o_user", "text", "你好", "世界"],
    ));
    assert_eq!(out.trim(), "kf send → o_user: text \"你好 世界\" (sent)");
    ok(&wxmp(
        &fake,
        &dir,
        &["kf", "send", "o_user", "image", "MEDIA_1"],
    ));
    ok(&wxmp(
        &fake,
        &dir,
        &[
            "kf",
            "send",
            "o_user",
            "news",
            "--title",
            "标题",
            "--url",
            "https://example.com/a",
        ],
    ));
    ok(&wxmp(
        &fake,
        &dir,
        &[
            "kf",
            "send",
            "o_user",
            "msgmenu",
            "101=满意",
            "102=不满意",
            "--head-content",
            "满意吗?",
        ],
    ));
    ok(&wxmp(
        &fake,
        &dir,
        &[
            "kf",
            "send",
            "o_user",
            "music",
            "--music-url",
            "https://e.com/a.mp3",
            "--thumb-media-id",
            "TH1",
            "--title",
            "歌",
        ],
    ));
    ok(&wxmp(
        &fake,
        &dir,
        &["kf", "send", "o_user", "wxcard", "CARD_1"],
    ));
    ok(&wxmp(&fake, &dir, &["kf", "typing", "o_user"]));
    ok(&wxmp(&fake, &dir, &["kf", "typing", "o_user", "--cancel"]));
    for line in [
        "kf send → o_user: text \"你好 世界\"",
        "kf send → o_user: image MEDIA_1",
        "kf send → o_user: news \"标题\" https://example.com/a",
        "kf send → o_user: msgmenu \"满意吗?\" 101=满意 102=不满意",
        "kf send → o_user: music \"歌\" https://e.com/a.mp3",
        "kf send → o_user: wxcard CARD_1",
        "kf typing → o_user: Typing",
        "kf typing → o_user: CancelTyping",
    ] {
        fake.wait_for(line, secs(10));
    }
    // The fake refuses `\uXXXX`-escaped Chinese with 40033, as WeChat does: wxmp never sent one.
    assert_eq!(fake.stats()["errcodes"].get("40033"), None);
}

#[test]
fn menu_check_locates_errors_and_warns_about_unanswered_keys() {
    let dir = tempdir();
    let check = |args: &[&str]| clean(args, &dir).output().unwrap();
    let o = check(&[
        "menu",
        "check",
        &example("menu.toml"),
        "--rules",
        &example("rules.toml"),
    ]);
    let out = ok(&o);
    assert!(
        out.contains("1. 今日歌曲: click V1001_TODAY_MUSIC  (line 4)"),
        "{out}"
    );
    assert!(
        out.contains("     2.1 搜索: view https://www.soso.com/"),
        "{out}"
    );
    assert!(
        out.ends_with("menu.toml: 3 buttons, 3 sub-buttons OK\n"),
        "{out}"
    );
    assert_eq!(text(&o.stderr), "");

    let bad = menu_file(&dir, "bad.toml", "url = \"https://e.com/\"");
    let e = exited(&check(&["menu", "check", bad.to_str().unwrap()]), 2).1;
    assert!(
        e.starts_with(&format!(
            "wxmp: {}:4: button 1 (a): a click button takes key, not url",
            bad.display()
        )),
        "{e}"
    );

    let lonely = menu_file(&dir, "lonely.toml", "key = \"LONELY\"");
    let o = check(&["menu", "check", lonely.to_str().unwrap()]);
    assert_eq!(text(&o.stderr), "", "no --rules, no cross-check");
    let o = clean(&["menu", "check", lonely.to_str().unwrap()], &dir)
        .env("WXMP_RULES", example("rules.toml"))
        .output()
        .unwrap();
    ok(&o);
    let e = text(&o.stderr);
    assert!(
        e.contains(":4: no rule in ") && e.contains("answers click key \"LONELY\""),
        "{e}"
    );
    assert!(
        e.contains(
            "rules.toml:18: rule 5 answers CLICK key \"V1001_TODAY_MUSIC\", which no button"
        ),
        "{e}"
    );
}

#[test]
fn an_invalid_menu_is_never_pushed() {
    let fake = Fake::start(&[]);
    let dir = tempdir();
    let bad = dir.join("four.toml");
    std::fs::write(
        &bad,
        "[[button]]\nname = \"a\"\ntype = \"click\"\nkey = \"k\"\n".repeat(4),
    )
    .unwrap();
    let o = wxmp(&fake, &dir, &["menu", "push", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let e = text(&o.stderr);
    assert!(
        e.contains("four.toml:13: button 4 (a): WeChat allows 3 top-level buttons"),
        "{e}"
    );
    assert!(e.contains("nothing was sent"), "{e}");
    assert_eq!(fake.stats()["calls"], serde_json::json!({}));
}

#[test]
fn the_default_token_cache_is_per_appid_under_xdg_cache_home() {
    let fake = Fake::start(&[]);
    let home = tempdir();
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--api-base", &fake.base]);
        clean(&all, &home)
            .env("WXMP_APPID", APPID)
            .env("WXMP_SECRET", SECRET)
            .output()
            .unwrap()
    };
    ok(&run(&["kf", "typing", "o1"]));
    let file = home.join("wxmp").join(format!("access_token-{APPID}.json"));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let dir_mode = std::fs::metadata(file.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700);
    let out = ok(&run(&["token"]));
    assert!(
        out.contains(&format!("token cache: {}", file.display())),
        "{out}"
    );
    ok(&run(&["kf", "typing", "o1"]));
    assert_eq!(fake.token_requests(), 1);
}

#[test]
fn the_classic_endpoint_works_and_keeps_the_secret_out_of_errors() {
    let fake = Fake::start(&[]);
    let dir = tempdir();
    ok(&wxmp(
        &fake,
        &dir,
        &["kf", "typing", "o1", "--token-endpoint", "classic"],
    ));
    assert_eq!(fake.stats()["classic_token_requests"], 1);
    let wrong = run_against(
        &fake.base,
        "wrong-secret-xyz",
        &dir.join("t2.json"),
        &["kf", "typing", "o1", "--token-endpoint", "classic"],
    );
    let e = refused(&wrong);
    assert!(e.contains("errcode 40125"), "{e}");
}

#[test]
fn an_unreachable_api_exits_1_and_configuration_errors_exit_2() {
    let dir = tempdir();
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let o = run_against(&base, SECRET, &dir.join("t.json"), &["menu", "show"]);
    let e = refused(&o);
    assert!(
        e.contains(&format!(
            "cannot reach the WeChat API at {base}/cgi-bin/stable_token"
        )),
        "{e}"
    );

    for (args, needle) in [
        (
            vec!["menu", "show", "--appid", APPID],
            "--secret or set WXMP_SECRET",
        ),
        (
            vec!["kf", "typing", "o1", "--secret", SECRET],
            "--appid or set WXMP_APPID",
        ),
        (
            vec![
                "menu",
                "show",
                "--appid",
                APPID,
                "--secret",
                SECRET,
                "--api-base",
                "api.weixin.qq.com",
            ],
            "(--api-base / WXMP_API_BASE)",
        ),
        (
            vec![
                "menu",
                "show",
                "--appid",
                APPID,
                "--secret",
                SECRET,
                "--token-endpoint",
                "fast",
            ],
            "(--token-endpoint / WXMP_TOKEN_ENDPOINT)",
        ),
        (vec!["menu", "push"], "needs one FILE"),
        (
            vec!["menu", "check", "/no/such/menu.toml"],
            "cannot read /no/such/menu.toml",
        ),
    ] {
        let o = clean(&args, &dir).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let e = text(&o.stderr);
        assert!(
            e.starts_with("wxmp: ") && e.contains(needle),
            "{args:?}: {e}"
        );
    }
}

#[test]
fn wxmp_send_accepts_https_urls() {
    // A peer that answers in plain HTTP, so the TLS handshake fails at once: a network failure
    // (exit 1), not a refused URL (exit 2). That shows https:// is accepted and TLS is built in.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            use std::io::Write;
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let url = format!("https://{addr}/weixin");
    let o = clean(&["send", "--url", &url, "text", "hi"], &tempdir())
        .output()
        .unwrap();
    let e = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("cannot reach the server"), "{e}");
}

/// The serve options take the API settings (issue 14 builds a client from them); the
/// "AppID without a key" warning is not raised then (unit-tested in `config`).
#[test]
fn the_server_starts_with_the_api_settings() {
    let dir = tempdir();
    let server = Wxmp::builder()
        .args(&[
            "--token",
            "tok123",
            "--appid",
            APPID,
            "--token-endpoint",
            "classic",
        ])
        .env("WXMP_SECRET", SECRET)
        .env("WXMP_TOKEN_CACHE", dir.join("t.json").to_str().unwrap())
        .start();
    assert_eq!(server.request("GET", "/healthz", b""), (200, "ok".into()));
    assert!(!server.log().contains(SECRET));
}

/// Regression (issue 19): the `--api-base` error suggested port 9000 (the example bot) for
/// `wxmp fake-api`, which listens on 8090.
#[test]
fn a_bad_api_base_suggests_the_port_the_fake_really_listens_on() {
    let o = clean(
        &["token", "--appid", APPID, "--api-base", "ftp://x"],
        &tempdir(),
    )
    .env("WXMP_SECRET", SECRET)
    .output()
    .unwrap();
    let e = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    let fake = format!(
        "http://127.0.0.1:{} for wxmp fake-api",
        wxmp::fake_api::args::DEFAULT_PORT
    );
    assert!(e.contains(&fake), "{e}");
}

/// Regression (issue 19, N7): a password in `--api-base` (a proxy's) showed in the errors.
#[test]
fn a_password_in_the_api_base_never_shows() {
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://proxy:s3cretpw@{}", gone.local_addr().unwrap());
    drop(gone);
    let o = clean(
        &["token", "--fetch", "--appid", APPID, "--api-base", &base],
        &tempdir(),
    )
    .env("WXMP_SECRET", SECRET)
    .output()
    .unwrap();
    let e = text(&o.stderr) + &text(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("http://proxy:***@127.0.0.1:"), "{e}");
    let bad = clean(
        &[
            "token",
            "--appid",
            APPID,
            "--api-base",
            "ftp://proxy:s3cretpw@x",
        ],
        &tempdir(),
    )
    .env("WXMP_SECRET", SECRET)
    .output()
    .unwrap();
    let e = e + &text(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{e}");
    assert!(!e.contains("s3cretpw"), "{e}");
}

/// A picture WeChat takes: a PNG signature and a header chunk (the type is told by content).
pub const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0";

#[test]
fn media_upload_prints_the_media_id_and_media_list_shows_it() {
    // The first upload's token is refused: the client refreshes and sends the file again.
    let fake = Fake::start(&["--fail", "40001@/cgi-bin/material/add_material:once"]);
    let dir = tempdir();
    let pic = dir.join("menu.png");
    std::fs::write(&pic, PNG).unwrap();
    let pic = pic.to_str().unwrap();
    let id = ok(&wxmp(&fake, &dir, &["media", "upload", pic]));
    let id = id.trim();
    assert!(id.starts_with("MAT_"), "{id}");
    fake.wait_for(
        &format!("material added: image {id} (menu.png,"),
        std::time::Duration::from_secs(10),
    );
    let tmp = ok(&wxmp(&fake, &dir, &["media", "upload", pic, "--temporary"]));
    assert!(tmp.trim().starts_with("TMP_"), "{tmp}");
    let list = ok(&wxmp(&fake, &dir, &["media", "list", "--type", "image"]));
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 1, "{list}");
    assert!(
        lines[0].starts_with(id) && lines[0].ends_with("menu.png"),
        "{list}"
    );
    assert_eq!(fake.count("/cgi-bin/material/add_material"), 2, "one retry");
    assert_eq!(fake.stats()["materials"], 1);
    assert_eq!(fake.count("/cgi-bin/media/upload"), 1);
}

#[test]
fn a_file_wechat_would_refuse_is_never_uploaded() {
    let fake = Fake::start(&[]);
    let dir = tempdir();
    let page = dir.join("photo.png");
    std::fs::write(&page, b"<html>not a picture</html>").unwrap();
    let pic = dir.join("cover.jpg");
    std::fs::write(&pic, PNG).unwrap();
    let (_, err) = exited(
        &wxmp(&fake, &dir, &["media", "upload", page.to_str().unwrap()]),
        2,
    );
    assert!(err.contains("not a picture, sound or video"), "{err}");
    let (_, err) = exited(
        &wxmp(
            &fake,
            &dir,
            &["media", "upload", pic.to_str().unwrap(), "--type", "thumb"],
        ),
        2,
    );
    assert!(
        err.contains("by its content it is a png file; a thumb must be jpg"),
        "{err}"
    );
    let (_, err) = exited(
        &wxmp(
            &fake,
            &dir,
            &["media", "upload", pic.to_str().unwrap(), "--type", "video"],
        ),
        2,
    );
    assert!(err.contains("needs --title"), "{err}");
    assert_eq!(fake.count("/cgi-bin/material/add_material"), 0);
    assert_eq!(fake.token_requests(), 0);
}
