//! The README is the front door: it must list every option the binary has, and the Dockerfile
//! must stay in step with what the README says about the container. What moved out of it
//! (`docs/`, `CONTRIBUTING.md`) is checked where it now lives, and every link between them
//! resolves.

fn read(name: &str) -> String {
    std::fs::read_to_string(format!("{}/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// The README's configuration table is the declarations of `wxmp serve`'s settings, row by
/// row: a row out of place, missing or stale fails here. The message carries the table as it
/// should read, to paste in.
#[test]
fn readme_configuration_table_is_the_serve_declarations() {
    let readme = read("README.md");
    let expected = wxmp::usage::readme_table(wxmp::config::SERVE);
    let found: Vec<&str> = readme
        .lines()
        .skip_while(|l| *l != expected[0])
        .take_while(|l| l.starts_with('|'))
        .collect();
    assert!(
        found == expected,
        "README's configuration table differs from the declarations in src/config.rs; it should read:\n{}\n",
        expected.join("\n")
    );
    // Exactly one such table, and every row of it in one block.
    assert_eq!(readme.matches(&expected[0]).count(), 1);
    for setting in wxmp::config::SERVE {
        let rows = readme.matches(&format!("\n| `--{} ", setting.long)).count()
            + readme
                .matches(&format!("\n| `--{}` ", setting.long))
                .count();
        assert_eq!(rows, 1, "--{} has one row", setting.long);
    }
}

/// The errors table quotes the usage errors as the code words them.
#[test]
fn readme_errors_table_quotes_the_usage_errors() {
    let readme = read("README.md");
    let no_env = |_: &str| None;
    for args in [
        &["--token", "tok123", "--threads", "0"][..],
        &["--prot", "80"],
        &["--port"],
    ] {
        let e =
            wxmp::config::Config::from_args(args.iter().copied(), &no_env).expect_err("refused");
        let line = format!("wxmp: {e}");
        assert!(readme.contains(&line), "README lacks {line:?}");
    }
}

/// `wxmp --help` is written from the same declarations: each flag, then its variable.
#[test]
fn serve_help_lists_every_setting_with_its_variable() {
    let help = wxmp::cli::usage();
    for setting in wxmp::config::SERVE {
        let flag = format!("  --{}", setting.long);
        let at = help
            .lines()
            .position(|l| l == flag || l.starts_with(&format!("{flag} ")))
            .unwrap_or_else(|| panic!("--help lacks --{}:\n{help}", setting.long));
        let entry: Vec<&str> = help.lines().skip(at).take(2).collect();
        if let Some(var) = setting.env {
            assert!(entry.join("\n").contains(var), "{entry:?}");
        }
    }
}

#[test]
fn readme_documents_every_send_kind() {
    let readme = read("README.md");
    for kind in [
        "verify",
        "text CONTENT",
        "image",
        "voice",
        "video",
        "shortvideo",
        "location",
        "link",
        "event NAME",
        "file FILE.xml",
    ] {
        assert!(
            readme.contains(&format!("`{kind}")),
            "README lacks send kind {kind}"
        );
    }
}

#[test]
fn dockerfile_runs_on_port_80_as_the_readme_says() {
    let docker = read("Dockerfile");
    assert!(docker.contains("EXPOSE 80"));
    assert!(docker.contains("WXMP_PORT=80"));
    assert!(docker.contains("FROM ubuntu:"), "runs on plain Ubuntu");
    assert!(
        docker.contains("FROM rust:"),
        "builds with the official Rust image"
    );
    let readme = read("README.md");
    assert!(readme.contains("-p 80:80"));
}

#[test]
fn the_rules_doc_shows_the_real_example_rules_file() {
    let example = read("examples/rules.toml");
    assert!(
        read("docs/rules.md").contains(&format!("```toml\n{example}```")),
        "docs/rules.md's copy of examples/rules.toml is out of date"
    );
}

/// The errors table quotes what the binary prints; these reasons come from the code itself.
#[test]
fn readme_errors_table_quotes_the_real_log_reasons() {
    use wxmp::protocol::crypto::CryptoError;
    use wxmp::protocol::envelope::EnvelopeError;
    use wxmp::server::pipeline::Rejection;
    let readme = read("README.md");
    for reason in [
        Rejection::SignatureMismatch.to_string(),
        Rejection::Envelope(EnvelopeError::Decrypt(CryptoError::Padding)).to_string(),
        Rejection::Envelope(EnvelopeError::SignatureMismatch).to_string(),
        Rejection::NoAesKey
            .to_string()
            .split(" (")
            .next()
            .unwrap()
            .to_owned(),
    ] {
        assert!(readme.contains(&reason), "README lacks {reason:?}");
    }
    // What a wrong key does NOT say: the old table blamed msg_signature for it.
    assert!(!readme.contains("403 msg_signature mismatch` / `AppID"));
}

#[test]
fn the_api_doc_shows_the_real_example_menu_file() {
    let example = read("examples/menu.toml");
    assert!(
        read("docs/api.md").contains(&format!("```toml\n{example}```")),
        "docs/api.md's copy of examples/menu.toml is out of date"
    );
}

/// The API rows of the errors table quote the client's own sentences, up to the errcode.
#[test]
fn readme_errors_table_quotes_the_api_sentences() {
    use wxmp::api::error::{ApiError, Call};
    let readme = read("README.md");
    for (call, errcode, errmsg) in [
        (Call::Token, 40013, "invalid appid"),
        (Call::Token, 40125, "invalid appsecret"),
        (
            Call::Token,
            40164,
            "invalid ip 203.0.113.7, not in whitelist",
        ),
        (Call::Token, 89503, "ip 203.0.113.7"),
        (Call::CustomSend, 40001, "invalid credential"),
        (Call::CustomSend, 45015, ""),
        (Call::CustomSend, 45047, ""),
        (Call::MenuGet, 46003, ""),
    ] {
        let sentence = ApiError::WeChat {
            call,
            errcode,
            errmsg: errmsg.into(),
        }
        .to_string();
        let tag = format!("(errcode {errcode})");
        let head = &sentence[..sentence.find(&tag).unwrap() + tag.len()];
        assert!(readme.contains(head), "README lacks {head:?}");
    }
}

/// Issue 12: the Metrics table (docs/observability.md) names every metric the server exposes.
#[test]
fn the_metrics_table_documents_every_metric() {
    let readme = read("docs/observability.md");
    let metrics = wxmp::server::metrics::Metrics::new();
    metrics.watch_store(Default::default, Default::default());
    metrics.watch_forwarding(|| 0, || 0);
    metrics.watch_api(Default::default, || None);
    let names = metrics.registry().names();
    assert!(names.len() >= 10, "{names:?}");
    for name in names {
        assert!(
            readme.contains(&format!("| `{name}` |")),
            "docs/observability.md's Metrics table lacks {name}"
        );
    }
}

/// Regression (issue 19): `make test` needs curl, patch, rustfmt and clippy beyond Rust and
/// make, and said so one tool at a time, halfway through. Now every missing tool is named up
/// front with how to install it. A PATH with bash and a `cargo` that has neither rustfmt nor
/// clippy stands for a fresh machine.
#[test]
fn make_test_names_every_missing_tool_and_how_to_install_it() {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let dir = crate::kit::tempdir();
    for tool in ["bash", "dirname"] {
        let found = std::env::split_paths(&std::env::var_os("PATH").unwrap())
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("no {tool} on PATH"));
        symlink(found, dir.join(tool)).unwrap();
    }
    let cargo = dir.join("cargo");
    std::fs::write(
        &cargo,
        "#!/bin/bash\necho \"error: no such command: \\`$1\\`\" >&2\nexit 101\n",
    )
    .unwrap();
    std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = std::process::Command::new(format!("{}/scripts/test.sh", env!("CARGO_MANIFEST_DIR")))
        .env("PATH", &dir)
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    for needed in [
        "rustfmt: rustup component add rustfmt",
        "clippy: rustup component add clippy",
        "curl: apt-get install curl",
        "patch: apt-get install patch",
    ] {
        assert!(e.contains(needed), "lacks {needed:?}: {e}");
    }
}

/// Regression (issue 19): every section after Quick start writes a bare `wxmp`, and nothing
/// said how to get it onto PATH.
#[test]
fn the_readme_says_how_to_put_wxmp_on_path_before_it_first_uses_a_bare_wxmp() {
    let makefile = read("Makefile");
    assert!(
        makefile.contains("\ninstall:") && read("scripts/install.sh").contains("cargo install"),
        "no make install"
    );
    let readme = read("README.md");
    let install = readme
        .find("make install")
        .expect("README lacks make install");
    let bare = readme
        .lines()
        .scan(0, |at, l| {
            let start = *at;
            *at += l.len() + 1;
            Some((start, l))
        })
        .find(|(_, l)| l.starts_with("wxmp ") || l.starts_with("$ wxmp "))
        .map(|(at, _)| at)
        .expect("no bare wxmp command");
    assert!(
        install < bare,
        "make install comes after the first bare wxmp"
    );
}

/// Issue 18: the README stays a user's front door; reference and lab notes live in `docs/`.
#[test]
fn readme_is_under_700_lines() {
    let lines = read("README.md").lines().count();
    assert!(
        lines < 700,
        "README.md has {lines} lines: move reference material to docs/"
    );
}

/// Every relative link in the README, CONTRIBUTING.md and docs/ names a file that exists and,
/// with `#anchor`, a heading of that file (as GitHub spells the anchor).
#[test]
fn links_between_the_docs_resolve() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md"), root.join("CONTRIBUTING.md")];
    let mut docs: Vec<_> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    assert!(docs.len() >= 4, "{docs:?}");
    files.extend(docs);
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for link in links(&text) {
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = link.split_once('#').unwrap_or((&link, ""));
            let target = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            let shown = format!("{}: {link}", file.strip_prefix(root).unwrap().display());
            if !target.exists() {
                broken.push(format!("{shown} (no such file)"));
            } else if !anchor.is_empty()
                && !anchors(&std::fs::read_to_string(&target).unwrap()).contains(&anchor.to_owned())
            {
                broken.push(format!("{shown} (no such heading)"));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// The targets of `[text](target)` links outside code blocks.
fn links(markdown: &str) -> Vec<String> {
    let mut fenced = false;
    let mut out = Vec::new();
    for line in markdown.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        }
        if fenced {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            rest = &rest[i + 2..];
            if let Some(end) = rest.find(')') {
                out.push(rest[..end].to_owned());
                rest = &rest[end..];
            }
        }
    }
    out
}

/// GitHub's anchors for the headings of `markdown`: lower case, spaces to `-`, punctuation other
/// than `-` and `_` dropped, a repeated one suffixed `-1`, `-2`, ...
fn anchors(markdown: &str) -> Vec<String> {
    let mut fenced = false;
    let mut out: Vec<String> = Vec::new();
    for line in markdown.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        }
        let Some(heading) = line.trim_start_matches('#').strip_prefix(' ') else {
            continue;
        };
        if fenced || !line.starts_with('#') {
            continue;
        }
        let slug: String = heading
            .trim()
            .chars()
            .flat_map(char::to_lowercase)
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        let seen = out
            .iter()
            .filter(|a| **a == slug || a.starts_with(&format!("{slug}-")))
            .count();
        out.push(if seen == 0 {
            slug
        } else {
            format!("{slug}-{seen}")
        });
    }
    out
}

#[test]
fn anchors_are_spelled_as_github_spells_them() {
    let doc = "# Live view: `wxmp tail`\n## The WeChat API: menu, access_token\n```\n# not a heading\n```\n## Connect (测试号) now\n## Retries\n## Retries\n";
    assert_eq!(
        anchors(doc),
        [
            "live-view-wxmp-tail",
            "the-wechat-api-menu-access_token",
            "connect-测试号-now",
            "retries",
            "retries-1"
        ]
    );
    assert_eq!(
        links("see [a](docs/a.md#x) and [b](#y)\n```\n[c](nope)\n```\n"),
        ["docs/a.md#x", "#y"]
    );
}
