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
