//! Safe mode against an independent implementation: Python's wechatpy encrypts a message as the
//! platform does, and must verify and decrypt wxmp's reply. Skipped when wechatpy is missing,
//! unless WXMP_REQUIRE_INTEROP is set (CI sets it, so there it cannot be skipped).

use std::process::Command;

use crate::binary::Server;

const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const APPID: &str = "wx2c2769f8efd9abc2";

fn wechatpy_available() -> bool {
    Command::new("python3")
        .args(["-c", "import wechatpy.crypto"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn wechatpy_encrypts_and_decrypts_against_the_real_binary() {
    if !wechatpy_available() {
        assert!(
            std::env::var_os("WXMP_REQUIRE_INTEROP").is_none(),
            "WXMP_REQUIRE_INTEROP is set but python3 cannot import wechatpy"
        );
        eprintln!("skipped: python3 with wechatpy not found (pip install wechatpy cryptography)");
        return;
    }
    let server = Server::start(&["--token", "interop1", "--aes-key", KEY, "--appid", APPID]);
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
