//! The README is the front door: it must list every option the binary has, and the Dockerfile
//! must stay in step with what the README says about the container.

fn read(name: &str) -> String {
    std::fs::read_to_string(format!("{}/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn readme_table_lists_every_serve_flag_and_variable() {
    let readme = read("README.md");
    let options: Vec<&str> = wxmp::cli::USAGE
        .lines()
        .skip_while(|l| !l.starts_with("Serve options"))
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .collect();
    assert!(options.len() >= 10, "{options:?}");
    for line in options {
        let flag = format!("`--{}", line.split_whitespace().next().unwrap());
        let var = line
            .split_whitespace()
            .find(|w| w.starts_with("WXMP_"))
            .unwrap();
        assert!(readme.contains(&flag), "README lacks {flag}");
        assert!(readme.contains(&format!("`{var}`")), "README lacks {var}");
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
fn readme_shows_the_real_example_rules_file() {
    let example = read("examples/rules.toml");
    assert!(
        read("README.md").contains(&format!("```toml\n{example}```")),
        "README's copy of examples/rules.toml is out of date"
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
fn readme_shows_the_real_example_menu_file() {
    let example = read("examples/menu.toml");
    assert!(
        read("README.md").contains(&format!("```toml\n{example}```")),
        "README's copy of examples/menu.toml is out of date"
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

/// Issue 12: the README's Metrics table names every metric the server exposes.
#[test]
fn readme_documents_every_metric() {
    let readme = read("README.md");
    let metrics = wxmp::server::metrics::Metrics::new();
    metrics.watch_store(Default::default, Default::default());
    metrics.watch_forwarding(|| 0, || 0);
    metrics.watch_api(Default::default, || None);
    let names = metrics.registry().names();
    assert!(names.len() >= 10, "{names:?}");
    for name in names {
        assert!(
            readme.contains(&format!("| `{name}` |")),
            "README's Metrics table lacks {name}"
        );
    }
}
