//! Many accounts in one wxmp (`--accounts FILE`), through the real binary, with `wxmp send` as
//! WeChat: each account answers at its own path with its own token, key and rules; the
//! accounts file's errors carry their lines; the retry store never shares an answer between
//! accounts.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::kit::binary::{command as wxmp, Wxmp};
use crate::kit::tempdir;
use crate::kit::wait::{secs, until};

const KEY_B: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const KEY_C: &str = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut";

/// A folder with three rules files, each answering `who` with its account's kind, and an
/// accounts file naming them: plain (`a`), compatible (`b`) and safe (`c`).
fn three_accounts() -> (PathBuf, PathBuf) {
    let dir = tempdir();
    for (name, answer) in [("a", "plain-a"), ("b", "compat-b"), ("c", "safe-c")] {
        std::fs::write(
            dir.join(format!("{name}.toml")),
            format!("[[rules]]\ntext = \"who\"\nreply.text = \"{answer}\"\n"),
        )
        .unwrap();
    }
    let file = dir.join("accounts.toml");
    std::fs::write(
        &file,
        format!(
            "[[account]]\nname = \"a\"\ntoken = \"tokena1\"\nrules = \"a.toml\"\n\n\
             [[account]]\nname = \"b\"\npath = \"/wx/b\"\ntoken = \"tokenb2\"\naes_key = \"{KEY_B}\"\nappid = \"wxbbbb\"\nrules = \"b.toml\"\n\n\
             [[account]]\nname = \"c\"\ntoken_env = \"WXMP_TEST_TOKEN_C\"\naes_key_file = \"c.key\"\nappid = \"wxcccc\"\nrules = \"c.toml\"\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("c.key"), format!("{KEY_C}\n")).unwrap();
    (dir, file)
}

fn start(file: &Path) -> Wxmp {
    Wxmp::builder()
        .args(&["--accounts", file.to_str().unwrap()])
        .env("WXMP_TEST_TOKEN_C", "tokenc3")
        .start()
}

/// `wxmp send` against `path` on `server`, as one account's WeChat.
fn send(server: &Wxmp, path: &str, args: &[&str]) -> Output {
    let url = format!("http://{}{path}", server.addr);
    let mut c = wxmp(&["send", "--url", &url]);
    c.args(args);
    c.output().unwrap()
}

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const A: [&str; 2] = ["--token", "tokena1"];
const B: [&str; 8] = [
    "--token",
    "tokenb2",
    "--aes-key",
    KEY_B,
    "--appid",
    "wxbbbb",
    "--mode",
    "compat",
];
const C: [&str; 8] = [
    "--token",
    "tokenc3",
    "--aes-key",
    KEY_C,
    "--appid",
    "wxcccc",
    "--mode",
    "safe",
];

#[test]
fn three_accounts_each_answer_with_their_own_token_key_and_rules() {
    let (_dir, file) = three_accounts();
    let server = start(&file);
    assert!(
        server.banner.contains("for 3 accounts from"),
        "{}",
        server.banner
    );
    for (path, args, answer) in [
        ("/weixin/a", &A[..], "plain-a"),
        ("/wx/b", &B[..], "compat-b"),
        ("/weixin/c", &C[..], "safe-c"),
    ] {
        let mut all = args.to_vec();
        all.extend(["text", "who"]);
        let o = send(&server, path, &all);
        assert!(o.status.success(), "{path}: {}", out(&o));
        assert!(out(&o).contains(answer), "{path}: {}", out(&o));
    }
    // Signed with another account's token: refused by the account whose path it hit.
    let mut wrong = A.to_vec();
    wrong.extend(["text", "who"]);
    let o = send(&server, "/wx/b", &wrong);
    assert!(out(&o).contains("HTTP 403"), "{}", out(&o));
    // Safe mode with another account's key does not open.
    let mut wrong_key = C.to_vec();
    wrong_key[3] = KEY_B;
    wrong_key.extend(["text", "who"]);
    let o = send(&server, "/weixin/c", &wrong_key);
    assert!(!o.status.success(), "{}", out(&o));
    // A path no account has is 404; the old single path is no account's.
    let o = send(&server, "/weixin", &["--token", "tokena1", "text", "who"]);
    assert!(out(&o).contains("HTTP 404"), "{}", out(&o));
    assert_eq!(server.request("GET", "/healthz", b"").0, 200);
    let (code, log) = server.terminate();
    assert_eq!(code, Some(0), "{log}");
    // Each line names the account whose path it hit; a path no account has names none.
    assert!(
        log.contains("[b] POST /wx/b 403 signature mismatch"),
        "{log}"
    );
    assert!(log.contains("[c] POST /weixin/c 200 safe text"), "{log}");
    assert!(log.contains("INFO GET /healthz 200"), "{log}");
    assert!(log.contains("WARN POST /weixin 404 no such path"), "{log}");
    for secret in ["tokena1", "tokenb2", "tokenc3", KEY_B, KEY_C] {
        assert!(!log.contains(secret), "a secret in the log: {log}");
    }
}

#[test]
fn the_same_msg_id_on_two_accounts_never_shares_an_answer() {
    let (_dir, file) = three_accounts();
    let server = Wxmp::builder()
        .args(&["--accounts", file.to_str().unwrap(), "--log-format", "json"])
        .env("WXMP_TEST_TOKEN_C", "tokenc3")
        .start();
    let id = "7000000000000000042";
    let mut first = A.to_vec();
    first.extend(["--msg-id", id, "--from", "o_same", "text", "who"]);
    let o = send(&server, "/weixin/a", &first);
    assert!(out(&o).contains("plain-a"), "{}", out(&o));
    // The same user, MsgId and mode on account b: its own rules answer, not a's stored reply.
    let mut second = vec!["--token", "tokenb2"];
    second.extend(["--msg-id", id, "--from", "o_same", "text", "who"]);
    let o = send(&server, "/wx/b", &second);
    assert!(out(&o).contains("compat-b"), "{}", out(&o));
    // A retry on a is still a's stored answer.
    let o = send(&server, "/weixin/a", &first);
    assert!(out(&o).contains("plain-a"), "{}", out(&o));
    let (_, log) = server.terminate();
    assert!(
        log.contains(r#""account":"a","method":"POST","path":"/weixin/a","status":200"#)
            && log.contains(r#""answered":"cached""#),
        "the retry on a was not a cached answer of account a: {log}"
    );
    assert!(
        log.contains(r#""account":"b","method":"POST","path":"/wx/b""#),
        "{log}"
    );
}

#[test]
fn check_accounts_lists_where_secrets_come_from_and_never_their_values() {
    let (_dir, file) = three_accounts();
    let mut c = wxmp(&["check-accounts", file.to_str().unwrap()]);
    c.env("WXMP_TEST_TOKEN_C", "tokenc3");
    let o = c.output().unwrap();
    let all = out(&o);
    assert!(o.status.success(), "{all}");
    assert!(all.contains("token from $WXMP_TEST_TOKEN_C"), "{all}");
    assert!(all.contains("aes_key from file"), "{all}");
    assert!(all.contains("/wx/b") && all.contains("/weixin/c"), "{all}");
    assert!(all.contains("3 accounts OK"), "{all}");
    for secret in ["tokena1", "tokenb2", "tokenc3", KEY_B, KEY_C] {
        assert!(!all.contains(secret), "a secret shown: {all}");
    }
}

#[cfg(unix)]
#[test]
fn check_accounts_warns_about_inline_secrets_others_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir();
    let file = dir.join("accounts.toml");
    std::fs::write(&file, "[[account]]\nname = \"a\"\ntoken = \"tokena1\"\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = wxmp(&["check-accounts", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out(&o));
    assert!(
        out(&o).contains("holds secrets inline and is readable by others (mode 644)"),
        "{}",
        out(&o)
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = wxmp(&["check-accounts", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out(&o).contains("warning"), "{}", out(&o));
}

#[test]
fn check_accounts_reports_every_error_with_its_line() {
    let dir = tempdir();
    std::fs::write(
        dir.join("broken.toml"),
        "[[rules]]\ntext = \"x\"\nreply.txt = \"y\"\n",
    )
    .unwrap();
    let file = dir.join("accounts.toml");
    std::fs::write(
        &file,
        "[[account]]\n\
         name = \"a\"\n\
         token = \"tokena1\"\n\
         \n\
         [[account]]\n\
         name = \"a\"\n\
         path = \"/weixin/a\"\n\
         token_env = \"WXMP_TEST_UNSET_VAR\"\n\
         aes_key = \"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG\"\n\
         secret_file = \"missing.secret\"\n\
         \n\
         [[account]]\n\
         name = \"c\"\n",
    )
    .unwrap();
    let o = wxmp(&["check-accounts", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let f = file.display().to_string();
    for needle in [
        format!("{f}:6: account \"a\": duplicate name \"a\": line 2 has it too"),
        format!("{f}:7: account \"a\": duplicate path \"/weixin/a\""),
        format!("{f}:8: account \"a\": token_env: the variable WXMP_TEST_UNSET_VAR is not set"),
        format!("{f}:9: account \"a\": an aes_key needs its appid"),
        format!("{f}:10: account \"a\": secret_file: cannot read"),
        format!("{f}:12: account \"c\": no token"),
    ] {
        assert!(err.contains(&needle), "missing {needle:?} in:\n{err}");
    }
    // A rules file the accounts name is checked too, with its own line.
    std::fs::write(
        &file,
        "[[account]]\nname = \"a\"\ntoken = \"tokena1\"\nrules = \"broken.toml\"\n",
    )
    .unwrap();
    let o = wxmp(&["check-accounts", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    assert!(out(&o).contains("broken.toml:3:"), "{}", out(&o));
    // The server refuses to start on either, with the same lines.
    let o = wxmp(&["--accounts", file.to_str().unwrap(), "--port", "0"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    assert!(out(&o).contains("broken.toml:3:"), "{}", out(&o));
}

#[test]
fn single_account_flags_are_refused_with_an_accounts_file() {
    let (_dir, file) = three_accounts();
    let o = wxmp(&[
        "--accounts",
        file.to_str().unwrap(),
        "--token",
        "tok123",
        "--rules",
        "r.toml",
    ])
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    let err = out(&o);
    assert!(
        err.contains("--token / WXMP_TOKEN cannot be used with --accounts / WXMP_ACCOUNTS")
            && err.contains("token, token_env or token_file")
            && err.contains("so are --rules"),
        "{err}"
    );
}

/// Forwarding capacity is per account: one account's slow code, holding all its slots, takes
/// nothing from another account, whose pushes still reach its own code.
#[test]
fn one_accounts_upstream_held_leaves_another_account_unaffected() {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use crate::forward::endpoint;

    let slow = endpoint(
        Duration::from_secs(20),
        200,
        r#"{"MsgType":"text","Content":"late"}"#,
    );
    let fast = endpoint(
        Duration::ZERO,
        200,
        r#"{"MsgType":"text","Content":"fast-b"}"#,
    );
    let dir = tempdir();
    for (name, url) in [("slow", &slow.url), ("fast", &fast.url)] {
        std::fs::write(
            dir.join(format!("{name}.toml")),
            format!("[default]\nreply.forward = {{ url = \"{url}\", fallback = {{ text = \"fallback-{name}\" }} }}\n"),
        )
        .unwrap();
    }
    let file = dir.join("accounts.toml");
    std::fs::write(
        &file,
        "[[account]]\nname = \"a\"\ntoken = \"tokena1\"\nrules = \"slow.toml\"\nforward_capacity = 2\n\n\
         [[account]]\nname = \"b\"\ntoken = \"tokenb2\"\nrules = \"fast.toml\"\nforward_capacity = 2\n",
    )
    .unwrap();
    let server = start(&file);
    let holders: Vec<_> = (0..2)
        .map(|i| {
            let addr = server.addr.clone();
            let target = format!("/weixin/a?{}", crate::kit::signed::query("tokena1"));
            std::thread::spawn(move || {
                crate::kit::http::request(
                    &addr,
                    "POST",
                    &target,
                    crate::helpers::text_xml("o", "hold", 9000 + i).as_bytes(),
                )
            })
        })
        .collect();
    until(
        secs(30),
        "account a's 2 pushes to reach its endpoint",
        || slow.calls.load(Ordering::SeqCst) >= 2,
    );
    // Account a is at its capacity: its next push gets its fallback at once.
    let o = send(
        &server,
        "/weixin/a",
        &["--token", "tokena1", "text", "more"],
    );
    assert!(out(&o).contains("fallback-slow"), "{}", out(&o));
    // Account b's pushes still reach its code, several times over its own capacity of 2.
    for i in 0..3 {
        let id = format!("{}", 8000 + i);
        let o = send(
            &server,
            "/weixin/b",
            &["--token", "tokenb2", "--msg-id", &id, "text", "hi"],
        );
        assert!(out(&o).contains("fast-b"), "push {i} on b: {}", out(&o));
    }
    assert_eq!(fast.calls.load(Ordering::SeqCst), 3);
    for h in holders {
        assert_eq!(h.join().unwrap().0, 200);
    }
}

/// Writes `text` to `file` through a rename, as the README advises.
fn replace(file: &Path, text: &str) {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

fn answer(server: &Wxmp, path: &str, token: &str) -> String {
    out(&send(server, path, &["--token", token, "text", "who"]))
}

#[test]
fn a_live_add_remove_and_change_and_a_bad_edit_keeps_the_set_in_force() {
    let dir = tempdir();
    std::fs::write(
        dir.join("a.toml"),
        "[[rules]]\ntext = \"who\"\nreply.text = \"rules-a\"\n",
    )
    .unwrap();
    let file = dir.join("accounts.toml");
    std::fs::write(
        &file,
        "[[account]]\nname = \"a\"\ntoken = \"tokena1\"\nrules = \"a.toml\"\n\n\
         [[account]]\nname = \"b\"\ntoken = \"tokenb2\"\n",
    )
    .unwrap();
    let server = start(&file);
    assert!(answer(&server, "/weixin/a", "tokena1").contains("rules-a"));
    assert!(answer(&server, "/weixin/b", "tokenb2").contains("[HTTP 200"));

    // Remove a, change b's token, add d on a's rules file.
    replace(
        &file,
        "[[account]]\nname = \"b\"\ntoken = \"tokenb9\"\n\n\
         [[account]]\nname = \"d\"\ntoken = \"tokend4\"\nrules = \"a.toml\"\n",
    );
    server.wait_for_log(
        "accounts reloaded (file changed): 2 accounts from",
        secs(15),
    );
    assert!(
        server.log().contains("added d; removed a; changed b"),
        "{}",
        server.log()
    );
    assert!(answer(&server, "/weixin/a", "tokena1").contains("HTTP 404"));
    assert!(answer(&server, "/weixin/b", "tokenb2").contains("HTTP 403"));
    assert!(answer(&server, "/weixin/b", "tokenb9").contains("[HTTP 200"));
    assert!(answer(&server, "/weixin/d", "tokend4").contains("rules-a"));

    // The rules file keeps its own hot reload.
    replace(
        &dir.join("a.toml"),
        "[[rules]]\ntext = \"who\"\nreply.text = \"rules-a v2\"\n",
    );
    until(
        secs(15),
        "account d to answer with the edited rules",
        || answer(&server, "/weixin/d", "tokend4").contains("rules-a v2"),
    );

    // A bad edit keeps the accounts in force and says why, with the line.
    replace(
        &file,
        "[[account]]\nname = \"b\"\ntoken = \"tokenb9\"\n\n[[account]]\nname = \"b\"\ntoken = \"tokend4\"\n",
    );
    server.wait_for_log(
        "accounts reload failed (file changed), keeping the 2 accounts in force",
        secs(15),
    );
    assert!(
        server
            .log()
            .contains("accounts.toml:6: account \"b\": duplicate name \"b\""),
        "{}",
        server.log()
    );
    assert!(answer(&server, "/weixin/d", "tokend4").contains("rules-a v2"));
    assert!(answer(&server, "/weixin/b", "tokenb9").contains("[HTTP 200"));

    // SIGHUP reloads it on demand: still broken, still kept.
    server.signal("HUP");
    server.wait_for_log("accounts reload failed (SIGHUP)", secs(15));
    let (code, log) = server.terminate();
    assert_eq!(code, Some(0), "{log}");
    for secret in ["tokena1", "tokenb2", "tokenb9", "tokend4"] {
        assert!(!log.contains(secret), "a secret in the log: {log}");
    }
}

/// `wxmp tail --account NAME` shows that account's lines only.
#[test]
fn tail_shows_one_accounts_lines_with_account() {
    use std::io::Read;
    use std::sync::{Arc, Mutex};

    let (_dir, file) = three_accounts();
    let server = Wxmp::builder()
        .args(&[
            "--accounts",
            file.to_str().unwrap(),
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .env("WXMP_TEST_TOKEN_C", "tokenc3")
        .start();
    let mut a = A.to_vec();
    a.extend(["text", "who"]);
    assert!(out(&send(&server, "/weixin/a", &a)).contains("plain-a"));
    let mut b = vec!["--token", "tokenb2"];
    b.extend(["text", "who"]);
    assert!(out(&send(&server, "/wx/b", &b)).contains("compat-b"));
    let mut tail = wxmp(&[
        "tail",
        "--metrics-addr",
        &server.metrics_addr(),
        "--account",
        "b",
    ])
    .stdout(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let seen = Arc::new(Mutex::new(String::new()));
    let mut stdout = tail.stdout.take().unwrap();
    {
        let seen = Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
    }
    until(
        secs(15),
        "account b's push in wxmp tail --account b",
        || seen.lock().unwrap().contains("[b] text"),
    );
    let _ = tail.kill();
    let _ = tail.wait();
    let shown = seen.lock().unwrap().clone();
    assert!(
        !shown.contains("[a]"),
        "account a's line under --account b: {shown}"
    );
}

/// `wxmp send --accounts FILE --account NAME` takes the path, token, key and AppID from the file.
#[test]
fn send_plays_wechat_for_an_account_of_the_file() {
    let (_dir, file) = three_accounts();
    let server = start(&file);
    let port = server.addr.rsplit(':').next().unwrap().to_owned();
    let send_as = |account: &str| {
        let o = wxmp(&[
            "send",
            "--accounts",
            file.to_str().unwrap(),
            "--account",
            account,
        ])
        .args(["text", "who"])
        .env("WXMP_HOST", "127.0.0.1")
        .env("WXMP_PORT", &port)
        .env("WXMP_TEST_TOKEN_C", "tokenc3")
        .output()
        .unwrap();
        out(&o)
    };
    let c = send_as("c");
    assert!(
        c.contains("safe-c") && c.contains("safe mode, encrypted"),
        "{c}"
    );
    let b = send_as("b");
    assert!(b.contains("compat-b") && b.contains("safe mode"), "{b}");
    assert!(send_as("a").contains("plain-a"));
    let none = send_as("z");
    assert!(
        none.contains("no account \"z\" in") && none.contains("it has a, b, c"),
        "{none}"
    );
}

/// `wxmp kf` (and `menu`, `token`) with `--accounts FILE --account NAME` call the API with that
/// account's AppID and AppSecret.
#[test]
fn the_api_commands_use_an_accounts_appid_and_secret() {
    use crate::api::{Fake, APPID, SECRET};

    let fake = Fake::start(&[]);
    let dir = tempdir();
    std::fs::write(dir.join("secret"), format!("{SECRET}\n")).unwrap();
    let file = dir.join("accounts.toml");
    std::fs::write(
        &file,
        format!(
            "[[account]]\nname = \"a\"\ntoken = \"tokena1\"\n\n\
             [[account]]\nname = \"k\"\ntoken = \"tokenk1\"\nappid = \"{APPID}\"\nsecret_file = \"secret\"\n"
        ),
    )
    .unwrap();
    let kf = |account: &str| {
        let o = wxmp(&[
            "kf",
            "send",
            "o_user",
            "text",
            "hi",
            "--accounts",
            file.to_str().unwrap(),
        ])
        .args(["--account", account, "--api-base", &fake.base])
        .env("XDG_CACHE_HOME", &dir)
        .env("HOME", &dir)
        .output()
        .unwrap();
        (o.status.code(), out(&o))
    };
    let (code, shown) = kf("k");
    assert_eq!(code, Some(0), "{shown}");
    assert!(
        shown.contains("kf send → o_user: text \"hi\" (sent)"),
        "{shown}"
    );
    assert!(
        !shown.contains(SECRET),
        "the AppSecret was printed: {shown}"
    );
    // Account a has no AppSecret: the command says so, as without a file.
    let (code, shown) = kf("a");
    assert_eq!(code, Some(2), "{shown}");
    assert!(shown.contains("no AppSecret"), "{shown}");
}

/// `wxmp media` takes the account's AppID and AppSecret from the file the same way: an upload
/// and the listing that shows it, both as account `k`; an account without an AppSecret is
/// refused before any call.
#[test]
fn media_uploads_and_lists_with_an_accounts_appid_and_secret() {
    use crate::api::{Fake, APPID, PNG, SECRET};

    let fake = Fake::start(&[]);
    let dir = tempdir();
    let pic = dir.join("pic.png");
    std::fs::write(&pic, PNG).unwrap();
    let file = dir.join("accounts.toml");
    std::fs::write(
        &file,
        format!(
            "[[account]]\nname = \"a\"\ntoken = \"tokena1\"\n\n\
             [[account]]\nname = \"k\"\ntoken = \"tokenk1\"\nappid = \"{APPID}\"\nsecret_env = \"WXMP_TEST_SECRET_K\"\n"
        ),
    )
    .unwrap();
    let media = |account: &str, args: &[&str]| {
        let o = wxmp(&["media"])
            .args(args)
            .args(["--accounts", file.to_str().unwrap(), "--account", account])
            .args(["--api-base", &fake.base])
            .env("WXMP_TEST_SECRET_K", SECRET)
            .env("XDG_CACHE_HOME", &dir)
            .env("HOME", &dir)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).trim().to_owned(),
            out(&o),
        )
    };
    let (code, id, shown) = media("k", &["upload", pic.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{shown}");
    assert!(!id.is_empty() && !id.contains(' '), "{shown}");
    let (code, _, shown) = media("k", &["list", "--type", "image"]);
    assert_eq!(code, Some(0), "{shown}");
    assert!(shown.contains(&id) && shown.contains("pic.png"), "{shown}");
    assert!(
        !shown.contains(SECRET),
        "the AppSecret was printed: {shown}"
    );
    assert_eq!(fake.count("/cgi-bin/material/add_material"), 1);
    let (code, _, shown) = media("a", &["list", "--type", "image"]);
    assert_eq!(code, Some(2), "{shown}");
    assert!(shown.contains("no AppSecret"), "{shown}");
    assert_eq!(fake.count("/cgi-bin/material/batchget_material"), 1);
}

/// SIGHUP means "read the files again" in both modes. With an accounts file it reloads the
/// accounts file and each rules file its accounts name; accounts on the built-in rules add
/// nothing. Regression: it also logged the single-account "no rules file to reload ... pass
/// --rules FILE" warning, naming a flag the accounts file refuses.
#[test]
fn sighup_reloads_the_accounts_file_and_its_rules_files_only() {
    let dir = tempdir();
    let file = dir.join("accounts.toml");
    std::fs::write(
        &file,
        "[[account]]\nname = \"a\"\ntoken = \"tokena1\"\n\n\
         [[account]]\nname = \"b\"\ntoken = \"tokenb2\"\n",
    )
    .unwrap();
    let server = start(&file);
    server.signal("HUP");
    server.wait_for_log("accounts reloaded (SIGHUP): 2 accounts from", secs(15));
    // The rules watchers poll every 250 ms: four polls for a wrong line to show up.
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(
        !server.log().contains("no rules file to reload"),
        "{}",
        server.log()
    );
    // An account gets a rules file: the next SIGHUP reloads that file too.
    std::fs::write(
        dir.join("b.toml"),
        "[[rules]]\ntext = \"who\"\nreply.text = \"rules-b\"\n",
    )
    .unwrap();
    replace(
        &file,
        "[[account]]\nname = \"a\"\ntoken = \"tokena1\"\n\n\
         [[account]]\nname = \"b\"\ntoken = \"tokenb2\"\nrules = \"b.toml\"\n",
    );
    server.wait_for_log("changed b", secs(15));
    assert!(answer(&server, "/weixin/b", "tokenb2").contains("rules-b"));
    server.signal("HUP");
    server.wait_for_log("rules reloaded (SIGHUP): 1 rules from", secs(15));
    let (code, log) = server.terminate();
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(
        log.matches("accounts reloaded (SIGHUP)").count(),
        2,
        "{log}"
    );
    assert!(!log.contains("no rules file to reload"), "{log}");
}

/// The variables an accounts file names in `<key>_env` leave wxmp's environment at start: the
/// programs `reply.command` runs see neither them nor their values (in their environment or in
/// wxmp's `/proc/PID/environ`), and a reload still resolves them from the values read at start.
/// Regression: they stayed in the environment, so every command inherited the account's token.
#[test]
fn env_secrets_of_the_accounts_file_never_reach_the_programs_it_runs() {
    let dir = tempdir();
    std::fs::write(
        dir.join("bot.sh"),
        "cat >/dev/null\n\
         if env | grep -q acctoksecret1; then c=leaked; else c=clean; fi\n\
         if grep -q acctoksecret1 /proc/$PPID/environ; then p=leaked; else p=clean; fi\n\
         printf '{\"MsgType\":\"text\",\"Content\":\"%s %s %s\"}' \"$c\" \"$p\" \"${WXMP_TEST_ACC_TOKEN:-unset}\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("bot.toml"),
        "[default]\nreply.command = { argv = [\"sh\", \"bot.sh\"], fallback = { text = \"wait\" } }\n",
    )
    .unwrap();
    let file = dir.join("accounts.toml");
    let a =
        "[[account]]\nname = \"a\"\ntoken_env = \"WXMP_TEST_ACC_TOKEN\"\nrules = \"bot.toml\"\n";
    std::fs::write(&file, a).unwrap();
    let server = Wxmp::builder()
        .args(&["--accounts", file.to_str().unwrap()])
        .env("WXMP_TEST_ACC_TOKEN", "acctoksecret1")
        .start();
    let shown = answer(&server, "/weixin/a", "acctoksecret1");
    assert!(shown.contains("text: clean clean unset"), "{shown}");
    let environ = std::fs::read(format!("/proc/{}/environ", server.pid)).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        !environ.contains("acctoksecret1") && !environ.contains("WXMP_TEST_ACC_TOKEN"),
        "the variable is still in the server's /proc/PID/environ"
    );
    // A reload resolves token_env from the value read at start.
    replace(
        &file,
        &format!("{a}\n[[account]]\nname = \"b\"\ntoken = \"tokenb2\"\n"),
    );
    server.wait_for_log(
        "accounts reloaded (file changed): 2 accounts from",
        secs(15),
    );
    assert!(server.log().contains("added b"), "{}", server.log());
    let shown = answer(&server, "/weixin/a", "acctoksecret1");
    assert!(shown.contains("text: clean clean unset"), "{shown}");
    let (code, log) = server.terminate();
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("acctoksecret1"), "a secret in the log: {log}");
}

/// With an accounts file the per-push series carry `account="NAME"`, one set per account in
/// the file (never a name a client sent); a path no account has is counted without it. A live
/// edit that removes an account takes its series off `/metrics`; an added one gets its own.
#[test]
fn metrics_carry_the_account_and_follow_live_changes() {
    use crate::kit::http::request;

    let dir = tempdir();
    let file = dir.join("accounts.toml");
    let a = "[[account]]\nname = \"a\"\ntoken = \"tokena1\"\n";
    std::fs::write(
        &file,
        format!("{a}\n[[account]]\nname = \"b\"\ntoken = \"tokenb2\"\n"),
    )
    .unwrap();
    let server = Wxmp::builder()
        .args(&[
            "--accounts",
            file.to_str().unwrap(),
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .start();
    let scrape = || {
        let (status, body) = request(&server.metrics_addr(), "GET", "/metrics", b"");
        assert_eq!(status, 200, "{body}");
        body
    };
    for _ in 0..2 {
        assert!(answer(&server, "/weixin/a", "tokena1").contains("[HTTP 200"));
    }
    assert!(answer(&server, "/weixin/b", "tokenb2").contains("[HTTP 200"));
    assert!(answer(&server, "/weixin/b", "tokena1").contains("HTTP 403"));
    assert!(answer(&server, "/weixin/nope", "tokena1").contains("HTTP 404"));
    let wanted = [
        "wxmp_pushes_total{account=\"a\",msg_type=\"text\",event=\"\"} 2\n",
        "wxmp_pushes_total{account=\"b\",msg_type=\"text\",event=\"\"} 1\n",
        "wxmp_http_requests_total{account=\"a\",class=\"2xx\",mode=\"plain\"} 2\n",
        "wxmp_http_requests_total{account=\"b\",class=\"2xx\",mode=\"plain\"} 1\n",
        "wxmp_http_requests_total{account=\"b\",class=\"4xx\",mode=\"plain\"} 1\n",
        "wxmp_answers_total{account=\"a\",answered=\"fresh\"} 2\n",
        "wxmp_push_duration_seconds_count{account=\"b\"} 1\n",
        "wxmp_forward_calls_total{account=\"b\",outcome=\"on_time\"} 0\n",
        // The path no account has: no account label.
        "wxmp_http_requests_total{class=\"4xx\",mode=\"none\"} 1\n",
    ];
    crate::kit::wait::until_ok(secs(10), "both accounts' series", || {
        let text = scrape();
        match wanted.iter().find(|l| !text.contains(*l)) {
            None => Ok(()),
            Some(l) => Err(format!("no {l:?} in\n{text}")),
        }
    });
    let text = scrape();
    assert!(
        !text.contains("wxmp_pushes_total{msg_type="),
        "a push counted without its account:\n{text}"
    );

    // Remove b and add c: b's series go, c's come (at 0), a's counts go on.
    replace(
        &file,
        &format!("{a}\n[[account]]\nname = \"c\"\ntoken = \"tokenc3\"\n"),
    );
    until(secs(15), "account b's series to leave /metrics", || {
        !scrape().contains("account=\"b\"")
    });
    let text = scrape();
    for line in [
        "wxmp_answers_total{account=\"c\",answered=\"fresh\"} 0\n",
        "wxmp_pushes_total{account=\"a\",msg_type=\"text\",event=\"\"} 2\n",
    ] {
        assert!(text.contains(line), "no {line:?} in\n{text}");
    }
}

/// Late `kf` answers go out with the right account's token: two accounts with different AppIDs
/// forward to the same slow code; each push's late answer reaches `wxmp fake-api` (serving both
/// AppIDs) with its own account's token and to its own user, and each account's API calls are
/// counted under its name.
#[test]
fn late_kf_answers_go_out_with_each_accounts_own_token() {
    use std::time::Duration;

    use crate::api::{Fake, APPID, SECRET};
    use crate::forward::{endpoint, forward_rules};

    const APPID_B: &str = "wxacctwo00000002";
    let fake = Fake::start(&["--account", &format!("{APPID_B}:secrettwo")]);
    let ep = endpoint(
        Duration::from_secs(7),
        200,
        r#"{"MsgType":"text","Content":"late but here"}"#,
    );
    // One rules file for both AppIDs: it sends no files, so it may serve several.
    let rules = forward_rules(&ep.url);
    let (rules_a, rules_b) = (rules.to_str().unwrap(), rules.to_str().unwrap());
    let dir = tempdir();
    let file = dir.join("accounts.toml");
    std::fs::write(
        &file,
        format!(
            "[[account]]\nname = \"a\"\ntoken = \"tokena1\"\nappid = \"{APPID}\"\nsecret_env = \"WXMP_TEST_SECRET_A\"\nlate = \"kf\"\nrules = \"{rules_a}\"\n\n\
             [[account]]\nname = \"b\"\ntoken = \"tokenb2\"\nappid = \"{APPID_B}\"\nsecret_env = \"WXMP_TEST_SECRET_B\"\nlate = \"kf\"\nrules = \"{rules_b}\"\n"
        ),
    )
    .unwrap();
    let server = Wxmp::builder()
        .args(&[
            "--accounts",
            file.to_str().unwrap(),
            "--api-base",
            &fake.base,
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .env("WXMP_TEST_SECRET_A", SECRET)
        .env("WXMP_TEST_SECRET_B", "secrettwo")
        .env("XDG_CACHE_HOME", dir.to_str().unwrap())
        .env("HOME", dir.to_str().unwrap())
        .start();
    let pushes: Vec<_> = [("a", "tokena1", "o_user_a"), ("b", "tokenb2", "o_user_b")]
        .into_iter()
        .map(|(name, token, user)| {
            let url = format!("http://{}/weixin/{name}", server.addr);
            std::thread::spawn(move || {
                wxmp(&["send", "--url", &url, "--token", token, "--from", user])
                    .args(["text", "hello"])
                    .output()
                    .unwrap()
            })
        })
        .collect();
    for p in pushes {
        let o = p.join().unwrap();
        assert!(out(&o).contains("text: 稍等"), "{}", out(&o));
    }
    let mut sent = Vec::new();
    crate::kit::wait::until_ok(secs(60), "both late answers at the fake", || {
        let kf = fake.stats()["kf"].clone();
        sent = kf
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                let field = |k: &str| m[k].as_str().unwrap_or("").to_owned();
                (field("appid"), field("touser"), field("summary"))
            })
            .collect();
        if sent.len() >= 2 {
            Ok(())
        } else {
            Err(format!("{sent:?}\n{}", fake.output()))
        }
    });
    sent.sort();
    let late = "text \"late but here\"".to_owned();
    assert_eq!(
        sent,
        [
            (APPID_B.to_owned(), "o_user_b".to_owned(), late.clone()),
            (APPID.to_owned(), "o_user_a".to_owned(), late),
        ],
        "{}",
        fake.output()
    );
    assert_eq!(ep.calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    // Each account's API calls (its token fetch and its message) and its late answer, by name.
    crate::kit::wait::until_ok(secs(10), "each account's API calls in /metrics", || {
        let (_, metrics) =
            crate::kit::http::request(&server.metrics_addr(), "GET", "/metrics", b"");
        for account in ["a", "b"] {
            let calls = format!("wxmp_api_calls_total{{account=\"{account}\",errcode=\"0\"}} ");
            let n: f64 = metrics
                .lines()
                .find_map(|l| l.strip_prefix(&calls)?.parse().ok())
                .unwrap_or(0.0);
            let late = format!(
                "wxmp_forward_calls_total{{account=\"{account}\",outcome=\"late_kf\"}} 1\n"
            );
            if n < 2.0 || !metrics.contains(&late) {
                return Err(format!("{calls}{n}, {late:?} in\n{metrics}"));
            }
        }
        Ok(())
    });
    let (code, log) = server.terminate();
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("secrettwo") && !log.contains(SECRET), "{log}");
}

/// The reference parser reads the exposition of many accounts (series with and without the
/// `account` label in one family) and finds each account's counts under its name.
#[test]
#[ignore = "needs python3 with prometheus_client: run by make test when it is installed"]
fn prometheus_client_parses_the_metrics_of_many_accounts() {
    use std::io::Write;
    use std::process::{Command, Stdio};

    let dir = tempdir();
    let file = dir.join("accounts.toml");
    std::fs::write(
        &file,
        "[[account]]\nname = \"a\"\ntoken = \"tokena1\"\n\n[[account]]\nname = \"b\"\ntoken = \"tokenb2\"\n",
    )
    .unwrap();
    let server = Wxmp::builder()
        .args(&[
            "--accounts",
            file.to_str().unwrap(),
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .start();
    assert!(answer(&server, "/weixin/a", "tokena1").contains("[HTTP 200"));
    assert!(answer(&server, "/weixin/b", "tokenb2").contains("[HTTP 200"));
    assert!(answer(&server, "/weixin/nope", "tokenb2").contains("HTTP 404"));
    let (status, text) = crate::kit::http::request(&server.metrics_addr(), "GET", "/metrics", b"");
    assert_eq!(status, 200);
    let script = format!(
        "{}/tests/interop/prometheus_parse.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the exposition:\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let families: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let value = |family: &str, sample: &str, labels: serde_json::Value| {
        families
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["name"] == family)
            .flat_map(|f| f["samples"].as_array().unwrap().iter())
            .find(|s| s["name"] == sample && s["labels"] == labels)
            .and_then(|s| s["value"].as_f64())
    };
    for account in ["a", "b"] {
        let labels = serde_json::json!({"account": account, "msg_type": "text", "event": ""});
        assert_eq!(
            value("wxmp_pushes", "wxmp_pushes_total", labels),
            Some(1.0),
            "{text}"
        );
    }
    let no_account = serde_json::json!({"class": "4xx", "mode": "none"});
    assert_eq!(
        value("wxmp_http_requests", "wxmp_http_requests_total", no_account),
        Some(1.0),
        "{text}"
    );
}

/// A rules file that sends a file serves one AppID: its media_ids belong to the AppID that
/// uploaded them. Shared by accounts of two AppIDs, the server refuses to start and says why,
/// with the rule's line.
#[test]
fn a_rules_file_that_sends_files_is_refused_for_two_appids() {
    let dir = tempdir();
    std::fs::write(dir.join("menu.png"), b"\x89PNG\r\n\x1a\n0000").unwrap();
    std::fs::write(
        dir.join("rules.toml"),
        "[[rules]]\ntext = \"hi\"\nreply.text = \"hello\"\n\n[[rules]]\ntext = \"menu\"\nreply.image = { file = \"menu.png\" }\n",
    )
    .unwrap();
    let file = dir.join("accounts.toml");
    std::fs::write(
        &file,
        "[[account]]\nname = \"a\"\ntoken = \"tokena1\"\nappid = \"wxaaaa\"\nsecret = \"sa\"\nrules = \"rules.toml\"\n\n\
         [[account]]\nname = \"b\"\ntoken = \"tokenb2\"\nappid = \"wxbbbb\"\nsecret = \"sb\"\nrules = \"rules.toml\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut child = wxmp(&[
        "--accounts",
        file.to_str().unwrap(),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
    ])
    .env("XDG_CACHE_HOME", dir.to_str().unwrap())
    .env("HOME", dir.to_str().unwrap())
    .env("WXMP_API_BASE", "http://127.0.0.1:9")
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let mut code = None;
    crate::kit::wait::until_ok(
        secs(20),
        "the server to refuse its accounts file and exit",
        || {
            code = child.try_wait().unwrap().map(|s| s.code());
            code.map(|_| ()).ok_or_else(|| "still running".to_owned())
        },
    );
    let o = child.wait_with_output().unwrap();
    let err = out(&o);
    assert_eq!(code, Some(Some(2)), "{err}");
    assert!(
        err.contains("rule 2: reply.image = { file = \"menu.png\" }")
            && err.contains("serves accounts of several AppIDs"),
        "{err}"
    );
}
