//! Safe mode against an independent implementation: Python's wechatpy encrypts a message as the
//! platform does, and must verify and decrypt wxmp's reply.
//!
//! Ignored by a plain `cargo test`, so a machine without wechatpy reports it as ignored rather
//! than passed; `make test` runs it when wechatpy is importable (and CI, which installs it, sets
//! WXMP_REQUIRE_INTEROP so that it cannot be skipped there).

use std::process::Command;

use crate::kit::binary::Wxmp;

const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const APPID: &str = "wx2c2769f8efd9abc2";

fn wechatpy_available() -> bool {
    Command::new("python3")
        .args(["-c", "import wechatpy.crypto"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
#[ignore = "needs python3 with wechatpy: run by make test when it is installed, and by make interop"]
fn wechatpy_encrypts_and_decrypts_against_the_real_binary() {
    assert!(
        wechatpy_available(),
        "python3 cannot import wechatpy (pip install wechatpy cryptography)"
    );
    let server = Wxmp::start(&["--token", "interop1", "--aes-key", KEY, "--appid", APPID]);
    let script = format!(
        "{}/tests/interop/wechatpy_peer.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let url = format!("http://{}/weixin", server.addr);
    let out = Command::new("python3")
        .args([script.as_str(), &url, "interop1", KEY, APPID])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "wechatpy peer failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 21: an unchanged wechatpy `WeChatClient` with a dummy AppSecret, its API base the
/// gateway, creates and reads the menu, sends a customer-service message, uploads a picture as
/// temporary media and as permanent material (which the real `wxmp fake-api` then holds byte
/// for byte), and downloads both back through the gateway.
#[test]
#[ignore = "needs python3 with wechatpy: run by make test when it is installed, and by make interop"]
fn wechatpy_calls_the_api_through_the_gateway_with_a_dummy_secret() {
    assert!(
        wechatpy_available(),
        "python3 cannot import wechatpy (pip install wechatpy cryptography)"
    );
    let fake = crate::api::Fake::start(&[]);
    let gw = crate::gateway::start(&fake.base, &[]);
    let script = format!(
        "{}/tests/interop/wechatpy_gateway.py",
        env!("CARGO_MANIFEST_DIR")
    );
    // A PNG of 1.5 MB: past the gateway's JSON sniff, with every byte value in it.
    let image = crate::kit::tempdir().join("picture.png");
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend((0..1_500_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    std::fs::write(&image, &png).unwrap();
    let out = Command::new("python3")
        .args([
            script.as_str(),
            &format!("http://{}", gw.addr),
            crate::api::APPID,
            image.to_str().unwrap(),
            &fake.base,
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "wechatpy failed:\n{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        gw.server.log()
    );
    assert!(stdout.contains("menu.get: 今日歌曲"), "{stdout}");
    for line in [
        "the fake holds both: 1500008 bytes, identical",
        "media.download: 1500008 bytes, identical",
        "material.get: 1500008 bytes, identical",
    ] {
        assert!(stdout.contains(line), "{line:?} missing: {stdout}");
    }
    for line in [
        "gateway POST /cgi-bin/media/upload?type&access_token 200 errcode 0",
        "gateway POST /cgi-bin/material/add_material?access_token&type 200 errcode 0",
        "gateway GET /cgi-bin/media/get?media_id&access_token 200 errcode 0",
        "gateway POST /cgi-bin/material/get_material?access_token 200 errcode 0",
    ] {
        gw.server.wait_for_log(line, crate::kit::wait::secs(10));
    }
    assert!(
        crate::kit::wait::at_most(crate::kit::wait::secs(10), || fake
            .output()
            .contains("kf send → o_wechatpy_user: text \"来自 wechatpy\"")),
        "{}",
        fake.output()
    );
    assert!(!gw.server.log().contains("ANY_TOKEN_THE_GATEWAY_REPLACES"));
}

/// Issue 21: a bot written for Cloud Hosting (it refuses a push without `X-WX-SOURCE`, reads
/// the sender from `X-WX-OPENID`, and calls `http://api.weixin.qq.com` with no token) answers
/// behind wxmp, with `HTTP_PROXY` pointing at the gateway.
#[test]
#[ignore = "needs python3: run by make test when wechatpy is installed, and by make interop"]
fn a_cloud_hosting_bot_answers_behind_wxmp_unchanged() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let fake = crate::api::Fake::start(&[]);
    // The bot needs the gateway's address before wxmp starts: a first server gives it.
    let gw = crate::gateway::start(&fake.base, &[]);
    let script = format!(
        "{}/tests/interop/cloud_hosting_bot.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut bot = Command::new("python3")
        .arg(&script)
        .env("HTTP_PROXY", format!("http://{}", gw.addr))
        .env("http_proxy", format!("http://{}", gw.addr))
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = String::new();
    BufReader::new(bot.stdout.take().unwrap())
        .read_line(&mut port)
        .unwrap();
    let dir = crate::kit::tempdir();
    let rules = dir.join("rules.toml");
    std::fs::write(
        &rules,
        format!(
            "[default]\nreply.forward = {{ url = \"http://127.0.0.1:{}/\", fallback = {{ text = \"稍等\" }} }}\n",
            port.trim()
        ),
    )
    .unwrap();
    // The push server is the gateway's own process, with the forwarding rules on reload.
    let server = Wxmp::start(&[
        "--token",
        "interop1",
        "--rules",
        rules.to_str().unwrap(),
        "--appid",
        crate::api::APPID,
    ]);
    let url = format!("http://{}/weixin", server.addr);
    let out = Command::new(env!("CARGO_BIN_EXE_wxmp"))
        .args(["send", "--url", &url, "--token", "interop1"])
        .args(["--from", "o_cloud_user", "text", "你好"])
        .env_remove("WXMP_TOKEN")
        .output()
        .unwrap();
    let _ = bot.kill();
    let _ = bot.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("text: hello o_cloud_user, errcode 0"),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    assert!(
        fake.output()
            .contains("kf send → o_cloud_user: text \"云托管 bot got: 你好\""),
        "{}",
        fake.output()
    );
    gw.server.wait_for_log(
        "gateway POST /cgi-bin/message/custom/send 200 errcode 0",
        crate::kit::wait::secs(10),
    );
}

/// The fake API as wechatpy's users meet it: the shapes and errcodes SDKs rely on (issue 21).
#[test]
#[ignore = "needs python3 with wechatpy: run by make test when it is installed, and by make interop"]
fn wechatpy_uses_the_fake_api_as_it_uses_wechat() {
    assert!(
        wechatpy_available(),
        "python3 cannot import wechatpy (pip install wechatpy cryptography)"
    );
    let fake = crate::api::Fake::start(&[]);
    let script = format!(
        "{}/tests/interop/wechatpy_fake_api.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = Command::new("python3")
        .args([
            script.as_str(),
            &fake.base,
            crate::api::APPID,
            crate::api::SECRET,
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "wechatpy against the fake failed:\n{stdout}\n{}\nthe fake printed:\n{}",
        String::from_utf8_lossy(&out.stderr),
        fake.output()
    );
    assert!(
        stdout.contains("material: add image/thumb/video"),
        "{stdout}"
    );
}
