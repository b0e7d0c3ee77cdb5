//! The fake's HTTP edge: bind, print the banner, serve until killed. The only rouille code
//! outside the server.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::fake_api::args::{FakeConfig, DEFAULT_SECRET};
use crate::fake_api::platform::{Platform, Request};

/// The body limit: the largest upload WeChat takes (a 10 MB video) and room for the multipart
/// framing.
const MAX_BODY: u64 = 10 * 1024 * 1024 + 64 * 1024;

/// Serves until the process is stopped; an error only when it cannot listen.
pub fn serve(config: FakeConfig) -> Result<(), String> {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id());
    let platform = Arc::new(Platform::new(config.clone(), seed));
    let handler = {
        let platform = Arc::clone(&platform);
        move |req: &rouille::Request| handle(&platform, req)
    };
    let addr = format!("{}:{}", config.host, config.port);
    let server = rouille::Server::new((config.host.as_str(), config.port), handler)
        .map_err(|e| format!("cannot listen on {addr}: {e}; pick another port with --port"))?;
    let url = format!("http://{}", server.server_addr());
    let secret = if config.default_secret {
        DEFAULT_SECRET
    } else {
        "as given"
    };
    let more: Vec<&str> = config.more.iter().map(|(a, _)| a.as_str()).collect();
    println!(
        "wxmp fake-api listening on {url} (AppID {}, AppSecret {secret}{}, tokens live {} s{})",
        config.app_id,
        if more.is_empty() {
            String::new()
        } else {
            format!("; also AppID {}", more.join(", "))
        },
        config.expires_in,
        if config.fail.is_empty() {
            String::new()
        } else {
            format!(", {} --fail rule(s)", config.fail.len())
        }
    );
    if config.default_secret {
        println!(
            "try: wxmp menu push examples/menu.toml --api-base {url} --appid {} --secret {DEFAULT_SECRET}",
            config.app_id
        );
    }
    let _ = io::stdout().flush();
    server.run();
    Ok(())
}

fn handle(platform: &Platform, req: &rouille::Request) -> rouille::Response {
    let mut body = Vec::new();
    if let Some(data) = req.data() {
        if data.take(MAX_BODY + 1).read_to_end(&mut body).is_err() || body.len() as u64 > MAX_BODY {
            return rouille::Response::text("body too large or unreadable").with_status_code(413);
        }
    }
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let answer = platform.handle(&Request {
        method: req.method(),
        path: req.url().as_str(),
        query: req.raw_query_string(),
        content_type: req.header("Content-Type").unwrap_or(""),
        body: &body,
        peer: req.remote_addr().ip(),
        now_ms,
    });
    if !answer.lines.is_empty() {
        let mut text = answer.lines.join("\n");
        text.push('\n');
        // One write per answer, so lines from concurrent requests never interleave.
        let mut out = io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }
    let mut response = rouille::Response::from_data(answer.content_type, answer.body)
        .with_status_code(answer.status);
    if let Some(d) = answer.disposition {
        response = response.with_additional_header("Content-Disposition", d);
    }
    response
}
