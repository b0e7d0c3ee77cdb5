//! The layers stay layered, and the toolchain claim stays true.
//!
//! Dependencies point one way: `protocol` (pure WeChat protocol) ← `rules` ← `server`, and
//! `protocol` ← `send` (the simulator) and `tail` (the live view's client); `protocol` ← `api`
//! (the API client) ← `fake_api` (its simulator) and ← `api_cmd` (the commands, which may also
//! read the rules). Beneath the clients and subcommands sit two leaves of their own: `net` (why
//! an HTTP call got no answer) and `usage` (the declarations of settings, their parser, and the
//! usage error); `config` (the server's settings, validated) sits on `usage` and is what
//! `server` is built from, never the other way round. A module's `crate::`
//! paths are read straight from the source, so an import that points back up fails here, in
//! `make test`.

use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every top-level module a file names through `crate::` (in `use` lines and in paths).
fn crate_imports(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push(name);
            }
            rest = after;
        }
    }
    found
}

/// The files of `src/<layer>/` (or the one file `src/<layer>.rs`) and the top-level modules
/// they name.
fn imports_of(layer: &str) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    let leaf = src().join(format!("{layer}.rs"));
    if leaf.is_file() {
        files.push(leaf);
    } else {
        rust_files(&src().join(layer), &mut files);
    }
    assert!(!files.is_empty(), "no files under src/{layer}");
    files
        .into_iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(&f).unwrap();
            crate_imports(&text)
                .into_iter()
                .map(move |m| (f.clone(), m))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn check_layer(layer: &str, allowed: &[&str]) {
    let bad: Vec<String> = imports_of(layer)
        .into_iter()
        .filter(|(_, m)| !allowed.contains(&m.as_str()))
        .map(|(f, m)| format!("{} imports crate::{m}", f.display()))
        .collect();
    assert!(
        bad.is_empty(),
        "src/{layer} may only import {allowed:?}:\n{}",
        bad.join("\n")
    );
}

#[test]
fn protocol_modules_import_nothing_but_protocol() {
    check_layer("protocol", &["protocol"]);
}

#[test]
fn rules_import_only_the_protocol() {
    check_layer("rules", &["rules", "protocol"]);
}

#[test]
fn the_server_never_imports_the_simulator_or_the_command_line() {
    check_layer(
        "server",
        &["server", "rules", "protocol", "api", "log", "net", "config"],
    );
}

/// The configuration is what the server is built from, so it cannot know the server: its
/// defaults and the shapes of its parts live in `config` (`server::build` takes a `Config`).
#[test]
fn the_configuration_never_imports_the_server() {
    check_layer("config", &["config", "api", "log", "protocol", "usage"]);
}

#[test]
fn the_simulator_imports_only_the_protocol() {
    check_layer("send", &["send", "protocol", "net", "usage"]);
}

#[test]
fn the_api_client_imports_only_the_protocol() {
    check_layer("api", &["api", "protocol", "net"]);
}

#[test]
fn the_fake_api_imports_only_api_and_protocol_types() {
    check_layer("fake_api", &["fake_api", "api", "protocol", "usage"]);
}

#[test]
fn the_api_commands_never_import_the_server_or_the_fake() {
    check_layer(
        "api_cmd",
        &[
            "api_cmd", "api", "config", "rules", "protocol", "log", "usage",
        ],
    );
}

#[test]
fn the_live_view_client_imports_only_the_protocol() {
    // `wxmp tail` meets the server over HTTP only, never through its types.
    check_layer("tail", &["tail", "protocol", "net", "usage"]);
}

/// The helpers every client and subcommand shares sit below all of them.
#[test]
fn the_shared_client_helpers_import_nothing_of_the_crate() {
    check_layer("net", &["net"]);
    // `usage` knows the protocol only to build safe mode from a key and an AppID.
    check_layer("usage", &["usage", "protocol"]);
}

/// Message content for the live view travels in `Outcome::sample`; the code that writes the
/// access log and the metrics must never name it (routes takes it out before they run).
#[test]
fn the_log_and_the_metrics_never_touch_the_content_sample() {
    for file in ["log.rs", "server/access.rs", "server/metrics.rs"] {
        let text = std::fs::read_to_string(src().join(file)).unwrap();
        let code: String = text
            .lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect();
        assert!(
            !code.contains(".sample") && !code.contains("Sample"),
            "src/{file} reads the content sample"
        );
    }
}

#[test]
fn the_check_sees_a_wrong_import() {
    let text =
        "use crate::protocol::xml;\nfn f() { crate::server::run::serve(); } // crate::send\n";
    assert_eq!(crate_imports(text), ["protocol", "server"]);
}

#[test]
fn only_the_http_edge_names_rouille() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    // The public port's edge is routes and run; the metrics listener's is monitor; the fake
    // API is an HTTP server too, with its edge in fake_api/run.rs.
    let edge = [
        src().join("server/routes.rs"),
        src().join("server/run.rs"),
        src().join("server/monitor.rs"),
        src().join("fake_api/run.rs"),
    ];
    for f in files.iter().filter(|f| !edge.contains(f)) {
        let text = std::fs::read_to_string(f).unwrap();
        let code = text
            .lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .any(|l| l.contains("rouille::"));
        assert!(
            !code,
            "{} names rouille; only server/routes.rs, server/run.rs, server/monitor.rs and fake_api/run.rs may",
            f.display()
        );
    }
}

/// The highest `rust-version` any locked package declares, for this platform.
fn lockfile_msrv() -> (u32, u32) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let host = std::process::Command::new("rustc")
        .arg("-vV")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        })
        .expect("rustc -vV names the host");
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--offline",
            "--filter-platform",
            &host,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let resolved: Vec<&str> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["id"].as_str())
        .collect();
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["id"].as_str().is_some_and(|id| resolved.contains(&id)))
        .filter(|p| p["name"] != "wxmp")
        .filter_map(|p| p["rust_version"].as_str().map(minor))
        .max()
        .unwrap_or((1, 0))
}

fn minor(v: &str) -> (u32, u32) {
    let mut parts = v.split('.').map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(1), parts.next().unwrap_or(0))
}

#[test]
fn rust_version_is_what_the_lockfile_needs() {
    let needed = lockfile_msrv();
    let declared = minor(env!("CARGO_PKG_RUST_VERSION"));
    assert_eq!(
        declared,
        needed,
        "Cargo.toml says rust-version {}, the locked dependencies need {}.{}",
        env!("CARGO_PKG_RUST_VERSION"),
        needed.0,
        needed.1
    );
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let claim = format!("({}.{} or newer)", needed.0, needed.1);
    assert!(readme.contains(&claim), "README should say {claim}");
}
