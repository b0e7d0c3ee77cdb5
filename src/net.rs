//! Why an outgoing HTTP call got no answer, told once for every client wxmp has: `wxmp send`,
//! the forwarder, the API client and `wxmp tail`.
//!
//! ureq's `Display` of a transport error starts with the URL, query and all (the API's query
//! carries the AppSecret or the access_token), and a time limit can surface wrapped in several
//! ways. So the kind is read from the cause, and the words are the OS's own ("Connection
//! refused") when there is an OS error, never the URL.

use std::fmt;
use std::io;

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetError {
    pub kind: NetErrorKind,
    /// The underlying error's text; never the URL.
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetErrorKind {
    /// The time limit ran out (connecting, or waiting for or reading the answer).
    Timeout,
    /// The host name did not resolve.
    Dns,
    /// The connection was refused or broke, or TLS failed.
    Connection,
    /// The URL itself is unusable (a bad `--api-base`, an unknown scheme).
    Url,
}

impl NetError {
    /// A failure before any answer: connecting, TLS, sending, or waiting for the status line.
    pub fn from_transport(t: &ureq::Transport) -> NetError {
        let source = std::error::Error::source(t);
        let os = source.and_then(|s| s.downcast_ref::<io::Error>());
        let kind = if os.is_some_and(is_timeout) || t.to_string().contains("timed out") {
            NetErrorKind::Timeout
        } else {
            match t.kind() {
                ureq::ErrorKind::Dns => NetErrorKind::Dns,
                ureq::ErrorKind::InvalidUrl | ureq::ErrorKind::UnknownScheme => NetErrorKind::Url,
                _ => NetErrorKind::Connection,
            }
        };
        let detail = match (os, t.message(), source) {
            (Some(e), _, _) => e.to_string(),
            (None, Some(m), Some(s)) => format!("{m}: {s}"),
            (None, Some(m), None) => m.to_owned(),
            (None, None, Some(s)) => s.to_string(),
            (None, None, None) => t.kind().to_string(),
        };
        NetError { kind, detail }
    }

    /// A failure while reading an answer's body.
    pub fn from_read(e: &io::Error) -> NetError {
        NetError {
            kind: if is_timeout(e) {
                NetErrorKind::Timeout
            } else {
                NetErrorKind::Connection
            },
            detail: e.to_string(),
        }
    }

    pub fn is_timeout(&self) -> bool {
        self.kind == NetErrorKind::Timeout
    }
}

/// A socket time limit shows as `TimedOut` or, on a read with `SO_RCVTIMEO`, `WouldBlock`.
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            NetErrorKind::Timeout => "no answer in time",
            NetErrorKind::Dns => "the host name does not resolve",
            NetErrorKind::Connection => "the connection failed",
            NetErrorKind::Url => "the URL is not usable",
        };
        if self.detail.is_empty() {
            f.write_str(what)
        } else {
            write!(f, "{what}: {}", self.detail)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::Duration;

    fn transport(url: &str, timeout: Duration) -> ureq::Transport {
        let agent = ureq::AgentBuilder::new().timeout(timeout).build();
        match agent.get(url).call() {
            Err(ureq::Error::Transport(t)) => t,
            other => panic!("expected a transport error, got {other:?}"),
        }
    }

    #[test]
    fn a_refused_connection_is_told_in_the_os_words_without_the_url() {
        // A port just freed: nothing listens there.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/x?secret=s3cr3t");
        let e = NetError::from_transport(&transport(&url, Duration::from_secs(5)));
        assert_eq!(e.kind, NetErrorKind::Connection, "{e:?}");
        assert!(e.detail.contains("refused"), "{e:?}");
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
    }

    #[test]
    fn a_silent_server_is_a_timeout() {
        // Accepts (the backlog does) but never answers.
        let quiet = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", quiet.local_addr().unwrap());
        let e = NetError::from_transport(&transport(&url, Duration::from_millis(200)));
        assert!(e.is_timeout(), "{e:?}");
    }

    #[test]
    fn an_unknown_scheme_is_a_bad_url() {
        let e = NetError::from_transport(&transport("gopher://x/", Duration::from_secs(1)));
        assert_eq!(e.kind, NetErrorKind::Url, "{e:?}");
        assert!(!e.detail.is_empty());
    }

    #[test]
    fn reading_tells_a_time_limit_from_a_reset() {
        let timed_out = io::Error::new(io::ErrorKind::WouldBlock, "x");
        assert!(NetError::from_read(&timed_out).is_timeout());
        let reset = io::Error::new(io::ErrorKind::ConnectionReset, "reset");
        let e = NetError::from_read(&reset);
        assert_eq!(
            (e.kind, e.to_string().as_str()),
            (NetErrorKind::Connection, "the connection failed: reset")
        );
    }
}
