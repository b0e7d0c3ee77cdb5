//! Pictures in rules by file (issue 21), against the real binary and the real `wxmp fake-api`:
//! a rule with `image = { file = ... }` answers the uploaded media_id, a restart uploads
//! nothing again, a changed file is uploaded again, a refused upload answers `success` and is
//! not retried within a minute, and check-rules checks the files without the API.

use std::path::{Path, PathBuf};

use crate::api::{Fake, APPID, PNG, SECRET};
use crate::helpers::text_xml;
use crate::kit::binary::{command, Wxmp};
use crate::kit::signed;
use crate::kit::tempdir;
use crate::kit::wait::{at_most, secs};

const TOKEN: &str = "medtok1";

/// A rules file whose rule 1 answers 菜单 with pics/menu.png, and the picture.
fn rules_with_picture(dir: &Path) -> PathBuf {
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

fn serve(fake: &Fake, dir: &Path, rules: &Path) -> Wxmp {
    let cache = dir.join("cache/token.json");
    Wxmp::builder()
        .args(&[
            "--token",
            TOKEN,
            "--appid",
            APPID,
            "--api-base",
            &fake.base,
            "--rules",
            rules.to_str().unwrap(),
        ])
        .env("WXMP_SECRET", SECRET)
        .env("WXMP_TOKEN_CACHE", cache.to_str().unwrap())
        .start()
}

/// Sends 菜单 as a new message; the reply's MediaId, if it is an image.
fn ask(server: &Wxmp, id: u64) -> Option<String> {
    let target = signed::target(TOKEN);
    let (status, body) = server.request("POST", &target, text_xml("o_m", "菜单", id).as_bytes());
    assert_eq!(status, 200, "{body}");
    let start = body.find("<MediaId><![CDATA[")? + "<MediaId><![CDATA[".len();
    let end = start + body[start..].find("]]>")?;
    Some(body[start..end].to_owned())
}

fn uploads(fake: &Fake) -> u64 {
    fake.count("/cgi-bin/material/add_material")
}

#[test]
fn a_picture_by_file_is_uploaded_once_and_answered_across_restarts() {
    let fake = Fake::start(&[]);
    let dir = tempdir();
    let rules = rules_with_picture(&dir);
    let server = serve(&fake, &dir, &rules);
    let mut n = 1;
    let mut answered = None;
    let found = at_most(secs(20), || {
        n += 1;
        answered = ask(&server, n);
        answered.is_some()
    });
    assert!(
        found,
        "no image reply within 20 s; log:\n{}\nfake:\n{}",
        server.log(),
        fake.output()
    );
    let id = answered.unwrap_or_default();
    assert!(id.starts_with("MAT_"), "{id}");
    assert_eq!(uploads(&fake), 1);
    // The log has a writer thread of its own: the line may follow the answer.
    server.wait_for_log("media: uploaded pics/menu.png", secs(10));
    let state = std::fs::read_to_string(dir.join(format!("cache/media-{APPID}.json"))).unwrap();
    assert!(state.contains(&id), "{state}");
    drop(server);

    // A restart answers the same picture at once and uploads nothing.
    let server = serve(&fake, &dir, &rules);
    assert_eq!(ask(&server, 1000).as_deref(), Some(id.as_str()));
    assert_eq!(uploads(&fake), 1, "uploaded again after a restart");

    // A changed picture is uploaded again on the next reload.
    let mut changed = PNG.to_vec();
    changed.extend_from_slice(b"changed");
    std::fs::write(dir.join("pics/menu.png"), &changed).unwrap();
    server.signal("HUP");
    let mut fresh = None;
    let found = at_most(secs(20), || {
        n += 1;
        fresh = ask(&server, 2000 + n).filter(|f| *f != id);
        fresh.is_some()
    });
    assert!(
        found,
        "the changed picture was not answered; log:\n{}",
        server.log()
    );
    assert_eq!(uploads(&fake), 2);
}

#[test]
fn a_refused_upload_answers_success_and_is_not_retried_within_a_minute() {
    let fake = Fake::start(&["--fail", "48001@/cgi-bin/material/add_material"]);
    let dir = tempdir();
    let rules = rules_with_picture(&dir);
    let server = serve(&fake, &dir, &rules);
    server.wait_for_log("(errcode 48001)", secs(20));
    assert_eq!(
        ask(&server, 1),
        None,
        "answered an image without a media_id"
    );
    server.signal("HUP");
    server.wait_for_log("refused less than a minute ago", secs(20));
    assert_eq!(uploads(&fake), 1, "retried within a minute");
}

#[test]
fn a_file_reply_without_the_api_is_a_load_error_that_says_what_to_add() {
    let dir = tempdir();
    let rules = rules_with_picture(&dir);
    let o = command(&[
        "--token",
        TOKEN,
        "--port",
        "0",
        "--rules",
        rules.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("rules.toml:3: rule 1:"), "{e}");
    assert!(e.contains("pass --appid and --secret"), "{e}");
}

#[test]
fn check_rules_checks_each_file_by_content_and_size_and_names_the_rule() {
    let dir = tempdir();
    let rules = rules_with_picture(&dir);
    let o = command(&["check-rules", rules.to_str().unwrap()])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("image file pics/menu.png"), "{out}");
    for (content, needle) in [
        (
            b"<html>a page</html>".to_vec(),
            "by its content it is not a picture",
        ),
        (
            [b"\xff\xd8\xff".to_vec(), vec![0; 3 << 20]].concat(),
            "WeChat takes an image of at most 2 MB",
        ),
    ] {
        std::fs::write(dir.join("pics/menu.png"), content).unwrap();
        let o = command(&["check-rules", rules.to_str().unwrap()])
            .output()
            .unwrap();
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{e}");
        assert!(
            e.contains("rules.toml:3: rule 1: reply.image file \"pics/menu.png\""),
            "{e}"
        );
        assert!(e.contains(needle), "{e}");
    }
    std::fs::remove_file(dir.join("pics/menu.png")).unwrap();
    let o = command(&["check-rules", rules.to_str().unwrap()])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("cannot read"), "{e}");
}
