//! The HTTP exchange with the server under test.

use crate::send::check::SendError;

/// Status and body, or why there is none.
pub fn exchange(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    body: &str,
) -> Result<(u16, String), SendError> {
    let bare = url.split('?').next().unwrap_or(url);
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
            let text = resp
                .into_string()
                .map_err(|e| SendError::Unreachable(e.to_string()))?;
            Ok((status, text))
        }
        Err(ureq::Error::Status(code, _)) => Err(SendError::Status(code)),
        Err(ureq::Error::Transport(t)) => {
            let io = std::error::Error::source(&t).and_then(|s| s.downcast_ref::<std::io::Error>());
            let timed_out = io.is_some_and(|e| {
                matches!(
                    e.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                )
            }) || t.to_string().contains("timed out");
            if timed_out {
                return Err(SendError::Timeout);
            }
            let why = match io {
                Some(e) => e.to_string(),
                None => t
                    .message()
                    .map_or_else(|| t.kind().to_string(), str::to_owned),
            };
            Err(SendError::Unreachable(format!("{bare}: {why}")))
        }
    }
}
