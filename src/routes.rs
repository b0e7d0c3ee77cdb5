//! The HTTP edge: turns a rouille request into calls on [`App`] and the results into responses.
//! The only place that maps failures to status codes ([`status_of`]).

use std::io::Read;
use std::time::Instant;

use rouille::{Request, Response};

use crate::app::{App, Rejection};
use crate::config::MAX_BODY;
use crate::log;
use crate::query::Query;

/// What the HTTP layer needs besides the pipeline.
pub struct Service {
    pub app: std::sync::Arc<App>,
    /// The message URL path configured in the WeChat console, e.g. `/weixin`.
    pub path: String,
}

/// Why the HTTP layer refused a request, before or after the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    Rejected(Rejection),
    NotFound,
    MethodNotAllowed(&'static str),
}

impl From<Rejection> for Failure {
    fn from(r: Rejection) -> Self {
        Failure::Rejected(r)
    }
}

/// The one mapping from failures to HTTP: status and a short fixed body. Details go to the log.
fn status_of(f: &Failure) -> (u16, &'static str) {
    match f {
        Failure::Rejected(Rejection::BadRequest(_)) => (400, "bad request"),
        Failure::Rejected(Rejection::Forbidden(_)) => (403, "forbidden"),
        Failure::Rejected(Rejection::TooLarge) => (413, "payload too large"),
        Failure::NotFound => (404, "not found"),
        Failure::MethodNotAllowed(_) => (405, "method not allowed"),
    }
}

/// Handles one request. Never panics on request data; every refusal is logged.
pub fn handle(service: &Service, req: &Request) -> Response {
    let started = Instant::now();
    let raw_url = req.raw_url();
    let (path, raw_query) = raw_url.split_once('?').unwrap_or((raw_url, ""));
    match dispatch(service, req, path, raw_query) {
        Ok(resp) => resp,
        Err(failure) => {
            let (status, body) = status_of(&failure);
            let reason = match &failure {
                Failure::Rejected(r) => r.to_string(),
                Failure::NotFound => "no such path".to_owned(),
                Failure::MethodNotAllowed(_) => "method not allowed".to_owned(),
            };
            // The path is logged only up to the query: the query holds signatures, not secrets,
            // but it is noise; the body is never logged.
            log::request(
                &printable(req.method()),
                &printable(path),
                status,
                &reason,
                started.elapsed(),
            );
            let mut resp = Response::text(format!("{body}\n")).with_status_code(status);
            if let Failure::MethodNotAllowed(allow) = failure {
                resp = resp.with_unique_header("Allow", allow);
            }
            if status == 413 {
                // The rest of an oversized body is never read; don't reuse the connection.
                resp = resp.with_unique_header("Connection", "close");
            }
            resp
        }
    }
}

fn dispatch(
    service: &Service,
    req: &Request,
    path: &str,
    raw_query: &str,
) -> Result<Response, Failure> {
    let method = req.method();
    match path {
        "/" => match method {
            "GET" | "HEAD" => Ok(Response::text("Hello World!")),
            _ => Err(Failure::MethodNotAllowed("GET, HEAD")),
        },
        "/healthz" => match method {
            "GET" | "HEAD" => Ok(Response::text("ok")),
            _ => Err(Failure::MethodNotAllowed("GET, HEAD")),
        },
        p if p == service.path => {
            let query =
                Query::parse(raw_query).map_err(|e| Rejection::BadRequest(e.to_string()))?;
            match method {
                "GET" => Ok(Response::text(service.app.verify_url(&query)?)),
                "POST" => {
                    let body = read_body(req)?;
                    let answer = service.app.handle_message(&query, &body)?;
                    let content_type = if answer.xml {
                        "application/xml; charset=utf-8"
                    } else {
                        "text/plain; charset=utf-8"
                    };
                    Ok(Response::from_data(
                        content_type,
                        answer.body.as_bytes().to_vec(),
                    ))
                }
                _ => Err(Failure::MethodNotAllowed("GET, POST")),
            }
        }
        _ => Err(Failure::NotFound),
    }
}

/// Reads at most `MAX_BODY + 1` bytes: enough to tell "too large" without reading more.
fn read_body(req: &Request) -> Result<Vec<u8>, Rejection> {
    let declared = req
        .header("Content-Length")
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(Rejection::TooLarge);
    }
    let Some(data) = req.data() else {
        return Ok(Vec::new());
    };
    let mut body = Vec::with_capacity(declared.map_or(1024, |n| n as usize));
    data.take(MAX_BODY as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| Rejection::BadRequest(format!("could not read body: {e}")))?;
    if body.len() > MAX_BODY {
        return Err(Rejection::TooLarge);
    }
    Ok(body)
}

/// Keeps log lines one line: control characters in a hostile method or path are escaped.
fn printable(s: &str) -> String {
    let cut: String = s.chars().take(200).collect();
    cut.escape_debug().to_string()
}
