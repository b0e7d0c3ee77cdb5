//! The webhook transport: `POST` the push's JSON to the user's URL and read the answer.

use std::io::Read;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::CallError;
use crate::net::NetError;

/// The largest answer read; a passive reply is a few KiB at most.
pub const MAX_ANSWER: u64 = 1 << 20;

/// The secret that signs forwarded bodies is configuration (`--forward-secret`).
pub use crate::config::ForwardSecret;

impl ForwardSecret {
    /// `sha256=<hex HMAC-SHA256 of body>`, the `X-Wxmp-Signature` header.
    pub fn sign(&self, body: &[u8]) -> Option<String> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.expose()).ok()?;
        mac.update(body);
        Some(format!(
            "sha256={}",
            hex::encode(mac.finalize().into_bytes())
        ))
    }
}

/// One agent for all calls: no redirects (an answer must come from the URL the rules name).
pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .redirects(0)
        // Calls to one endpoint reuse connections, as many as run at once.
        .max_idle_connections(256)
        .max_idle_connections_per_host(64)
        .timeout_connect(Duration::from_secs(3))
        .user_agent(concat!("wxmp/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Posts `body` to `url` with `headers` and returns the answer's bytes; the whole call ends by
/// `deadline`.
pub fn call(
    agent: &ureq::Agent,
    url: &str,
    body: &[u8],
    headers: &[(&str, &str)],
    secret: Option<&ForwardSecret>,
    deadline: Instant,
) -> Result<Vec<u8>, CallError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(CallError::Timeout);
    }
    let mut req = agent
        .post(url)
        .timeout(left)
        .set("Content-Type", "application/json; charset=utf-8");
    for (name, value) in headers {
        req = req.set(name, value);
    }
    if let Some(sig) = secret.and_then(|s| s.sign(body)) {
        req = req.set("X-Wxmp-Signature", &sig);
    }
    match req.send_bytes(body) {
        Ok(resp) if resp.status() == 200 => {
            let mut out = Vec::new();
            resp.into_reader()
                .take(MAX_ANSWER + 1)
                .read_to_end(&mut out)
                .map_err(|e| {
                    let e = NetError::from_read(&e);
                    if e.is_timeout() {
                        CallError::Timeout
                    } else {
                        CallError::Io(e.detail)
                    }
                })?;
            if out.len() as u64 > MAX_ANSWER {
                return Err(CallError::TooLarge);
            }
            Ok(out)
        }
        Ok(resp) => Err(CallError::Status(resp.status())),
        Err(ureq::Error::Status(code, _)) => Err(CallError::Status(code)),
        Err(ureq::Error::Transport(t)) => {
            let e = NetError::from_transport(&t);
            if e.is_timeout() {
                Err(CallError::Timeout)
            } else {
                Err(CallError::Unreachable(e.detail))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let s = ForwardSecret::new("Jefe");
        assert_eq!(
            s.sign(b"what do ya want for nothing?").as_deref(),
            Some("sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
        assert_eq!(format!("{s:?}"), "ForwardSecret(***)");
    }
}
