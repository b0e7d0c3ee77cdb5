//! The HTTP exchange with the server under test.

use crate::net::NetError;
use crate::send::check::SendError;
use crate::text::redact_url;

/// Status and body, or why there is none.
pub fn exchange(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    body: &str,
) -> Result<(u16, String), SendError> {
    let bare = redact_url(url.split('?').next().unwrap_or(url));
    let req = agent
        .request(method, url)
        .set("Content-Type", "text/xml; charset=utf-8");
    let result = if method == "GET" {
        req.call()
    } else {
        req.send_string(body)
    };
    match result {
        Ok(resp) => {
            let status = resp.status();
            let text = resp.into_string().map_err(|e| {
                SendError::Unreachable(format!("{bare}: {}", NetError::from_read(&e).detail))
            })?;
            Ok((status, text))
        }
        Err(ureq::Error::Status(code, _)) => Err(SendError::Status(code)),
        Err(ureq::Error::Transport(t)) => {
            let e = NetError::from_transport(&t);
            if e.is_timeout() {
                return Err(SendError::Timeout);
            }
            Err(SendError::Unreachable(format!("{bare}: {}", e.detail)))
        }
    }
}
