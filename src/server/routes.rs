//! The HTTP edge: turns a rouille request into calls on the [`Pipeline`] and the results into
//! responses. The only place that maps failures to status codes (`status_of`). Every request
//! ends in one [`Record`], built here once, which is logged, counted and (for the message
//! path) written as one line in the live view's buffer.

use std::io::Read;
use std::sync::Arc;

use rouille::{Request, Response};

use crate::log::Log;
use crate::protocol::envelope::EnvelopeError;
use crate::protocol::query::Query;
use crate::server::access::{reply_context, user_label, AccessOptions, Record, Shown, What};
use crate::server::metrics::{Metrics, Series};
use crate::server::pipeline::{Outcome, Pipeline, Push, Rejection};
use crate::server::recent::{self, Recent};

/// Largest body accepted; WeChat's pushes are a few hundred bytes.
pub const MAX_BODY: usize = 1 << 20;

/// What the HTTP layer needs: the pipeline (its account says the message path), the log and
/// how it treats requests, the metrics, and the live view's buffer.
pub struct Service {
    pub pipeline: Arc<Pipeline>,
    pub log: Log,
    pub access: AccessOptions,
    pub metrics: Arc<Metrics>,
    /// Where the requests on the account's path are counted: [`Metrics::account`].
    pub series: Arc<Series>,
    /// `None` when nobody can watch (no loopback metrics listener).
    pub recent: Option<Arc<Recent>>,
    /// The account's API client (its one token holder), which the API gateway calls with.
    pub api: Option<Arc<crate::api::Client>>,
}

impl Service {
    pub fn new(pipeline: Arc<Pipeline>, log: Log) -> Service {
        let metrics = Arc::new(Metrics::new());
        Service {
            pipeline,
            log,
            access: AccessOptions::default(),
            series: Arc::clone(metrics.unlabelled()),
            metrics,
            recent: None,
            api: None,
        }
    }

    pub fn with_api(mut self, api: Option<Arc<crate::api::Client>>) -> Service {
        self.api = api;
        self
    }

    pub fn with_access(mut self, access: AccessOptions) -> Service {
        self.access = access;
        self
    }

    /// Counts in `metrics`, the requests on the account's path in its series
    /// ([`Metrics::account`] of the account's name).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Service {
        self.series = metrics.account(&self.pipeline.account().name);
        self.metrics = metrics;
        self
    }

    /// Keeps a line per request on the message path here, for `wxmp tail`. The pipeline should
    /// be built `with_samples`, or the lines say nothing of the content.
    pub fn with_recent(mut self, recent: Option<Arc<Recent>>) -> Service {
        self.recent = recent;
        self
    }
}

/// Why the HTTP layer refused a request, before or after the pipeline.
#[derive(Debug, Clone, PartialEq)]
enum Failure {
    Rejected(Rejection),
    NotFound,
    MethodNotAllowed(&'static str),
    /// The body is larger than [`MAX_BODY`].
    TooLarge,
    /// The body could not be read (the client went away, a malformed chunk).
    BodyUnreadable(String),
}

impl From<Rejection> for Failure {
    fn from(r: Rejection) -> Self {
        Failure::Rejected(r)
    }
}

/// The one mapping from failures to HTTP: status and a short fixed body. Details go to the log.
fn status_of(f: &Failure) -> (u16, &'static str) {
    use Rejection as R;
    match f {
        Failure::Rejected(
            R::MissingSignature
            | R::SignatureMismatch
            | R::Replay(_)
            | R::Envelope(
                EnvelopeError::MissingSignature
                | EnvelopeError::SignatureMismatch
                | EnvelopeError::AppIdMismatch { .. },
            ),
        ) => (403, "forbidden"),
        Failure::Rejected(
            R::BadQuery(_)
            | R::MissingEchostr
            | R::Xml(_)
            | R::NotAPush(_)
            | R::NoEncrypt
            | R::NoAesKey
            | R::Envelope(EnvelopeError::NoEncrypt | EnvelopeError::Decrypt(_))
            | R::Decrypted(_),
        )
        | Failure::BodyUnreadable(_) => (400, "bad request"),
        Failure::TooLarge => (413, "payload too large"),
        Failure::NotFound => (404, "not found"),
        Failure::MethodNotAllowed(_) => (405, "method not allowed"),
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Rejected(r) => r.fmt(f),
            Failure::NotFound => f.write_str("no such path"),
            Failure::MethodNotAllowed(_) => f.write_str("method not allowed"),
            Failure::TooLarge => f.write_str("body too large"),
            Failure::BodyUnreadable(why) => write!(f, "could not read body: {why}"),
        }
    }
}

/// What `dispatch` saw, for the record.
enum Seen {
    /// A push, and what the pipeline recorded.
    Push(Outcome),
    /// A URL check that passed.
    UrlCheck,
    Other,
}

/// Handles one request. Never panics on request data; every request is logged (refusals with
/// their reason) and counted.
pub fn handle(service: &Service, req: &Request) -> Response {
    let env = service.pipeline.env();
    let arrived = env.monotonic();
    let raw_url = req.raw_url();
    let (path, query) = raw_url.split_once('?').unwrap_or((raw_url, ""));
    let (result, mut seen) = dispatch(service, req, Url { path, query }, arrived);
    // Message content leaves the outcome here, for the live view only; the log and the metrics
    // read what is left.
    let sample = match &mut seen {
        Seen::Push(o) => o.sample.take(),
        Seen::UrlCheck | Seen::Other => None,
    };
    if let Seen::Push(o) = &seen {
        for w in &o.warnings {
            service.log.warn(&format!("{}: {w}", reply_context(o)));
        }
    }
    let (resp, reason) = match result {
        Ok(resp) => (resp, None),
        Err(failure) => (refusal(&failure), Some(failure.to_string())),
    };
    // The path is logged only up to the query: the query holds signatures, not secrets, but it
    // is noise; the body is never logged.
    let (method, shown_path) = (printable(req.method()), printable(path));
    let what = match &seen {
        Seen::Push(o) => What::Push(o),
        Seen::UrlCheck => What::UrlCheck,
        Seen::Other => What::Other,
    };
    let outcome = match what {
        What::Push(o) => Some(o),
        What::UrlCheck | What::Other => None,
    };
    let shown = if service.access.full_openid {
        Shown::Full
    } else {
        Shown::Hashed
    };
    // Hashing the OpenID is the record's dearest part: only when a line will show it.
    let user = outcome
        .and_then(|o| o.from_user.as_deref())
        .filter(|_| !service.access.quiet || service.recent.is_some())
        .map(|u| user_label(u, shown));
    let record = Record {
        method: &method,
        path: &shown_path,
        status: resp.status_code,
        reason: reason.as_deref(),
        duration: outcome.map_or_else(
            || env.monotonic().saturating_duration_since(arrived),
            |o| o.duration,
        ),
        what,
        user: user.as_deref(),
        account: Some(&*service.pipeline.account().name)
            .filter(|n| !n.is_empty() && path == service.pipeline.account().path),
    };
    record.log(&service.log, service.access);
    // Only the account's own path counts as the account's; `/healthz` and unknown paths are
    // no account's.
    match record.account {
        Some(_) => record.count(&service.series),
        None => record.count(service.metrics.unlabelled()),
    }
    if let Some(recent) = &service.recent {
        if !matches!(record.what, What::Other) || record.status >= 400 {
            recent.push(recent::line(env.now(), &record, sample.as_deref()));
        }
    }
    resp
}

/// The response to a refused request: its status and short fixed body.
fn refusal(failure: &Failure) -> Response {
    let (status, body) = status_of(failure);
    let mut resp = Response::text(format!("{body}\n")).with_status_code(status);
    if let Failure::MethodNotAllowed(allow) = failure {
        resp = resp.with_unique_header("Allow", *allow);
    }
    if status == 413 {
        // The rest of an oversized body is never read; don't reuse the connection.
        resp = resp.with_unique_header("Connection", "close");
    }
    resp
}

/// A request's URL, split once: the path, and the raw query after `?`.
#[derive(Clone, Copy)]
struct Url<'a> {
    path: &'a str,
    query: &'a str,
}

/// The response, and what the request was.
fn dispatch(
    service: &Service,
    req: &Request,
    url: Url<'_>,
    arrived: std::time::Instant,
) -> (Result<Response, Failure>, Seen) {
    let method = req.method();
    let fixed = |text: &'static str| match method {
        "GET" | "HEAD" => Ok(Response::text(text)),
        _ => Err(Failure::MethodNotAllowed("GET, HEAD")),
    };
    let pipeline = &service.pipeline;
    let result = match url.path {
        "/" => fixed("Hello World!"),
        // Pushes are answered either way: degraded says this instance works alone.
        "/healthz" => fixed(if pipeline.degraded() {
            "degraded"
        } else {
            "ok"
        }),
        p if p == pipeline.account().path => {
            let query = match Query::parse(url.query) {
                Ok(q) => q,
                Err(e) => return (Err(Rejection::BadQuery(e).into()), Seen::Other),
            };
            match method {
                "GET" => {
                    return match pipeline.verify_url(&query) {
                        Ok(echostr) => (Ok(Response::text(echostr)), Seen::UrlCheck),
                        Err(r) => (Err(r.into()), Seen::Other),
                    }
                }
                "POST" => {
                    let body = match read_body(req) {
                        Ok(b) => b,
                        Err(f) => return (Err(f), Seen::Other),
                    };
                    let handled = pipeline.handle_message(Push {
                        query: &query,
                        body: &body,
                        arrived,
                    });
                    let result = handled.result.map(|answer| {
                        let content_type = if answer.xml {
                            "application/xml; charset=utf-8"
                        } else {
                            "text/plain; charset=utf-8"
                        };
                        Response::from_data(content_type, answer.body.as_bytes().to_vec())
                    });
                    return (result.map_err(Failure::from), Seen::Push(handled.outcome));
                }
                _ => Err(Failure::MethodNotAllowed("GET, POST")),
            }
        }
        _ => Err(Failure::NotFound),
    };
    (result, Seen::Other)
}

/// Reads at most `MAX_BODY + 1` bytes: enough to tell "too large" without reading more.
fn read_body(req: &Request) -> Result<Vec<u8>, Failure> {
    let declared = req
        .header("Content-Length")
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(Failure::TooLarge);
    }
    let Some(data) = req.data() else {
        return Ok(Vec::new());
    };
    let mut body = Vec::with_capacity(declared.map_or(1024, |n| n as usize));
    data.take(MAX_BODY as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| Failure::BodyUnreadable(e.to_string()))?;
    if body.len() > MAX_BODY {
        return Err(Failure::TooLarge);
    }
    Ok(body)
}

/// Keeps log lines one line: control characters in a hostile method or path are escaped.
fn printable(s: &str) -> String {
    // The usual method and path need no escaping: skip the work.
    if s.len() <= 200
        && s.bytes()
            .all(|b| (b' '..=b'~').contains(&b) && !b"\\\"'".contains(&b))
    {
        return s.to_owned();
    }
    let cut: String = s.chars().take(200).collect();
    cut.escape_debug().to_string()
}
