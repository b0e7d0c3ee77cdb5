//! The HTTP exchange with the API, behind a small trait so the client's logic (token reuse,
//! the one retry, the error sentences) is tested without a network.
//!
//! The real transport is ureq 2 with rustls and the webpki-roots trust store compiled in: the
//! WeChat API is HTTPS only, and a pure-Rust TLS stack with built-in roots needs neither a
//! system OpenSSL at build time nor a CA package at run time (the Ubuntu image has none).

use std::time::Duration;

use crate::net::NetError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

/// What came back: any status, and the body as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// Sends one request. `url` may carry secrets in its query: implementations never put it in an
/// error.
pub trait Transport: Send + Sync {
    fn send(&self, method: Method, url: &str, json_body: Option<&str>) -> Result<Answer, NetError>;

    /// POSTs a file upload: `body` is `multipart/form-data`, `content_type` names its boundary.
    fn send_form(&self, url: &str, content_type: &str, body: &[u8]) -> Result<Answer, NetError>;
}

/// ureq with a connect and a total time limit on every request.
pub struct Ureq {
    agent: ureq::Agent,
}

impl Ureq {
    pub fn new(timeout: Duration) -> Ureq {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            // WeChat never redirects; a redirect would be a proxy's login page.
            .redirects(0)
            .user_agent(concat!("wxmp/", env!("CARGO_PKG_VERSION")))
            .build();
        Ureq { agent }
    }
}

impl Transport for Ureq {
    fn send(&self, method: Method, url: &str, json_body: Option<&str>) -> Result<Answer, NetError> {
        let result = match (method, json_body) {
            (Method::Get, _) => self.agent.get(url).call(),
            (Method::Post, body) => self
                .agent
                .post(url)
                .set("Content-Type", "application/json; charset=utf-8")
                .send_string(body.unwrap_or("{}")),
        };
        read(result)
    }

    fn send_form(&self, url: &str, content_type: &str, body: &[u8]) -> Result<Answer, NetError> {
        read(
            self.agent
                .post(url)
                .set("Content-Type", content_type)
                .send_bytes(body),
        )
    }
}

/// The status and body of an answer, any status; no answer is a [`NetError`].
fn read(result: Result<ureq::Response, ureq::Error>) -> Result<Answer, NetError> {
    let response = match result {
        Ok(r) => r,
        // Not a network failure: the caller explains a status other than 200.
        Err(ureq::Error::Status(_, r)) => r,
        Err(ureq::Error::Transport(t)) => return Err(NetError::from_transport(&t)),
    };
    let status = response.status();
    let body = response
        .into_string()
        .map_err(|e| NetError::from_read(&e))?;
    Ok(Answer { status, body })
}
