//! The layers stay layered, no function grows past a hundred lines, and the toolchain claim
//! stays true.
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
    check_layer("rules", &["rules", "protocol", "text"]);
}

#[test]
fn the_server_never_imports_the_simulator_or_the_command_line() {
    check_layer(
        "server",
        &[
            "server", "rules", "protocol", "api", "log", "net", "config", "text",
        ],
    );
}

/// The configuration is what the server is built from, so it cannot know the server: its
/// defaults and the shapes of its parts live in `config` (`server::build` takes a `Config`).
#[test]
fn the_configuration_never_imports_the_server() {
    check_layer(
        "config",
        &["config", "api", "log", "protocol", "usage", "text"],
    );
}

#[test]
fn the_simulator_imports_only_the_protocol() {
    check_layer("send", &["send", "protocol", "net", "usage", "text"]);
}

#[test]
fn the_api_client_imports_only_the_protocol() {
    check_layer("api", &["api", "protocol", "net", "text"]);
}

#[test]
fn the_fake_api_imports_only_api_and_protocol_types() {
    check_layer(
        "fake_api",
        &["fake_api", "api", "protocol", "usage", "text"],
    );
}

#[test]
fn the_api_commands_never_import_the_server_or_the_fake() {
    check_layer(
        "api_cmd",
        &[
            "api_cmd", "api", "config", "rules", "protocol", "log", "usage", "text",
        ],
    );
}

#[test]
fn the_live_view_client_imports_only_the_protocol() {
    // `wxmp tail` meets the server over HTTP only, never through its types.
    check_layer("tail", &["tail", "protocol", "net", "usage", "text"]);
}

/// The helpers every client and subcommand shares sit below all of them.
#[test]
fn the_shared_client_helpers_import_nothing_of_the_crate() {
    check_layer("net", &["net"]);
    // `usage` knows the protocol only to build safe mode from a key and an AppID.
    check_layer("usage", &["usage", "protocol"]);
    check_layer("text", &["text"]);
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
    // API is an HTTP server too, with its edge in fake_api/run.rs; the API gateway's is
    // gateway.rs; the side listeners' thread is listener.rs.
    let edge = [
        src().join("server/routes.rs"),
        src().join("server/run.rs"),
        src().join("server/monitor.rs"),
        src().join("server/gateway.rs"),
        src().join("server/listener.rs"),
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
            "{} names rouille; only server/routes.rs, server/run.rs, server/monitor.rs, server/gateway.rs, server/listener.rs and fake_api/run.rs may",
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

/// `src/a/b.rs` and `src/a/b/mod.rs` are module `a::b`; `lib.rs` is the root.
fn module_of(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

/// The text without comments and without its `#[cfg(test)]` modules (inline, by brace
/// matching), and the names of test modules kept in files of their own (`mod tests;`).
fn without_tests(text: &str) -> (String, Vec<String>) {
    let code: Vec<&str> = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect();
    let (mut out, mut external, mut depth) = (String::new(), Vec::new(), None::<i64>);
    let mut test_attr = false;
    for line in code {
        if let Some(d) = depth.as_mut() {
            *d += line.matches('{').count() as i64 - line.matches('}').count() as i64;
            if *d <= 0 {
                depth = None;
            }
            continue;
        }
        let trimmed = line.trim();
        if trimmed == "#[cfg(test)]" {
            test_attr = true;
            continue;
        }
        if test_attr && trimmed.starts_with("mod ") {
            if let Some(name) = trimmed
                .strip_prefix("mod ")
                .and_then(|r| r.strip_suffix(';'))
            {
                external.push(name.trim().to_owned());
            } else {
                let d = line.matches('{').count() as i64 - line.matches('}').count() as i64;
                depth = (d > 0).then_some(d);
            }
            test_attr = false;
            continue;
        }
        test_attr = false;
        out.push_str(line);
        out.push('\n');
    }
    (out, external)
}

/// Every path a `crate::` path in `code` names, groups expanded:
/// `crate::a::{b, c::{D, e}}` is `a::b`, `a::c::D` and `a::c::e`.
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    fn tree(s: &[char], i: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
        let mut path = prefix.to_vec();
        loop {
            while s.get(*i).is_some_and(|c| c.is_whitespace()) {
                *i += 1;
            }
            if s.get(*i) == Some(&'{') {
                *i += 1;
                loop {
                    tree(s, i, &path, out);
                    while s.get(*i).is_some_and(|c| c.is_whitespace()) {
                        *i += 1;
                    }
                    match s.get(*i) {
                        Some(',') => *i += 1,
                        Some('}') => {
                            *i += 1;
                            return;
                        }
                        _ => return,
                    }
                    while s.get(*i).is_some_and(|c| c.is_whitespace()) {
                        *i += 1;
                    }
                    if s.get(*i) == Some(&'}') {
                        *i += 1;
                        return;
                    }
                }
            }
            let start = *i;
            while s.get(*i).is_some_and(|c| c.is_alphanumeric() || *c == '_') {
                *i += 1;
            }
            let word: String = s[start..*i].iter().collect();
            if word.is_empty() {
                break;
            }
            path.push(word);
            if s.get(*i) == Some(&':') && s.get(*i + 1) == Some(&':') {
                *i += 2;
            } else {
                break;
            }
        }
        out.push(path);
    }
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut at = 0;
    while at + 7 <= chars.len() {
        let is_crate = chars[at..at + 7].iter().collect::<String>() == "crate::"
            && (at == 0 || !(chars[at - 1].is_alphanumeric() || chars[at - 1] == '_'));
        if is_crate {
            let mut i = at + 7;
            tree(&chars, &mut i, &[], &mut out);
            at = i.max(at + 1);
        } else {
            at += 1;
        }
    }
    out
}

/// Which file each file imports through `crate::` paths (test modules left out): a path
/// points at the file of the deepest module it names.
fn file_graph() -> Vec<(String, Vec<String>)> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.retain(|f| f.file_name().is_some_and(|n| n != "main.rs"));
    let texts: Vec<(PathBuf, String, Vec<String>)> = files
        .iter()
        .map(|f| {
            let (code, tests) = without_tests(&std::fs::read_to_string(f).unwrap());
            (f.clone(), code, tests)
        })
        .collect();
    // Test modules kept in files of their own are not part of the graph either.
    let test_files: Vec<Vec<String>> = texts
        .iter()
        .flat_map(|(f, _, tests)| {
            let parent = module_of(f);
            tests.iter().map(move |t| {
                let mut m = parent.clone();
                m.push(t.clone());
                m
            })
        })
        .collect();
    let modules: Vec<Vec<String>> = texts
        .iter()
        .map(|(f, _, _)| module_of(f))
        .filter(|m| !test_files.contains(m))
        .collect();
    texts
        .iter()
        .filter(|(f, _, _)| modules.contains(&module_of(f)))
        .map(|(f, code, _)| {
            let me = module_of(f);
            let mut to: Vec<String> = crate_paths(code)
                .into_iter()
                .filter_map(|p| {
                    (1..=p.len())
                        .rev()
                        .map(|n| p[..n].to_vec())
                        .find(|m| modules.contains(m))
                })
                .filter(|m| *m != me)
                .map(|m| m.join("::"))
                .collect();
            to.sort();
            to.dedup();
            (me.join("::"), to)
        })
        .collect()
}

/// A cycle in `graph`, as the files along it, if there is one.
fn find_cycle(graph: &[(String, Vec<String>)]) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &[(String, Vec<String>)],
        state: &mut std::collections::HashMap<String, bool>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(node) {
            // On the stack: the path from there back to here is a cycle.
            Some(false) => {
                let from = stack.iter().position(|n| n == node).unwrap_or(0);
                let mut cycle = stack[from..].to_vec();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            Some(true) => return None,
            None => {}
        }
        state.insert(node.to_owned(), false);
        stack.push(node.to_owned());
        let next = graph
            .iter()
            .find(|(n, _)| n == node)
            .map(|(_, to)| to.as_slice())
            .unwrap_or_default();
        for to in next {
            if let Some(c) = visit(to, graph, state, stack) {
                return Some(c);
            }
        }
        stack.pop();
        state.insert(node.to_owned(), true);
        None
    }
    let mut state = std::collections::HashMap::new();
    graph
        .iter()
        .find_map(|(n, _)| visit(n, graph, &mut state, &mut Vec::new()))
}

/// No two files of `src/` import each other, however indirectly: dependencies point one way
/// inside the layers too (`server::pipeline` → `server::forward` → `server::store`).
#[test]
fn no_import_cycle_between_files() {
    let graph = file_graph();
    assert!(
        graph.len() > 50,
        "the graph covers the crate: {} files",
        graph.len()
    );
    let edges = |from: &str| {
        graph
            .iter()
            .find(|(n, _)| n == from)
            .map(|(_, to)| to.clone())
            .unwrap_or_default()
    };
    // The check reads grouped imports: pipeline's `use crate::server::{…}` lines name these.
    for to in ["server::forward", "server::store", "protocol::envelope"] {
        assert!(
            edges("server::pipeline").iter().any(|t| t == to),
            "server::pipeline → {to} not seen: {:?}",
            edges("server::pipeline")
        );
    }
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle between files: {}", cycle.join(" → "));
    }
}

#[test]
fn the_cycle_check_sees_a_cycle_and_grouped_paths() {
    let g = |edges: &[(&str, &[&str])]| -> Vec<(String, Vec<String>)> {
        edges
            .iter()
            .map(|(n, to)| (n.to_string(), to.iter().map(|t| t.to_string()).collect()))
            .collect()
    };
    assert_eq!(
        find_cycle(&g(&[("a", &["b"]), ("b", &["c"]), ("c", &[])])),
        None
    );
    assert_eq!(
        find_cycle(&g(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"])])),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    let paths = crate_paths("use crate::a::{b, c::{D, e}};\nlet x = crate::f::g();");
    let joined: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(joined, ["a::b", "a::c::D", "a::c::e", "f::g"]);
    let (code, external) = without_tests(
        "use crate::a;\n#[cfg(test)]\nmod tests {\n    use crate::b;\n}\n#[cfg(test)]\nmod more;\nuse crate::c;\n",
    );
    assert_eq!(crate_paths(&code).len(), 2, "{code}");
    assert_eq!(external, ["more"]);
}

/// Issue 18's bound: a function over 100 lines hides several steps that deserve names. Tables of
/// cases are the exception the issue allows, and none is that long today.
const MAX_FUNCTION_LINES: usize = 100;

/// The line without the insides of its string and char literals, so braces there do not count.
fn without_literals(line: &str) -> String {
    let (mut out, mut chars) = (String::new(), line.chars().peekable());
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                out.push('"');
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
                out.push('"');
            }
            '\'' if matches!(chars.peek(), Some('{') | Some('}')) => {
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

/// The name of the function a line declares, if it does.
fn declared_fn(line: &str) -> Option<String> {
    let mut rest = line.trim_start();
    for prefix in [
        "pub(crate) ",
        "pub(super) ",
        "pub ",
        "const ",
        "unsafe ",
        "async ",
    ] {
        rest = rest.strip_prefix(prefix).unwrap_or(rest);
    }
    let name: String = rest
        .strip_prefix("fn ")?
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

/// Each function in `code` longer than `max` lines: its name and length.
fn long_functions(code: &str, max: usize) -> Vec<(String, usize)> {
    let lines: Vec<String> = code.lines().map(without_literals).collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = declared_fn(line) else {
            continue;
        };
        let (mut depth, mut started) = (0i64, false);
        for (j, body) in lines.iter().enumerate().skip(i) {
            for c in body.chars() {
                match c {
                    '{' => (depth, started) = (depth + 1, true),
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if !started && body.trim_end().ends_with(';') {
                break;
            }
            if started && depth <= 0 {
                if j - i + 1 > max {
                    found.push((name, j - i + 1));
                }
                break;
            }
        }
    }
    found
}

#[test]
fn no_function_outside_tests_is_over_a_hundred_lines() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut long = Vec::new();
    for file in files {
        if file.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let (code, _) = without_tests(&text);
        for (name, lines) in long_functions(&code, MAX_FUNCTION_LINES) {
            long.push(format!("{} {name}: {lines} lines", file.display()));
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_FUNCTION_LINES} lines (split them into named steps):\n{}",
        long.join("\n")
    );
}

#[test]
fn the_length_check_sees_a_long_function_and_ignores_braces_in_strings() {
    let body = "    let x = \"}\";\n".repeat(5);
    let code = format!(
        "fn short() {{\n{body}}}\nfn long() {{\n{}}}\n",
        "    f();\n".repeat(7)
    );
    assert_eq!(long_functions(&code, 8), vec![("long".to_owned(), 9)]);
}
