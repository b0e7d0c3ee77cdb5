//! The metrics listener (`--metrics-addr`, off by default): `GET /metrics` in the Prometheus
//! text format and `GET /tail`, the live view's lines for `wxmp tail`, on a port of its own so
//! nothing new is exposed on the public port WeChat calls.
//!
//! `/tail` shows message content, so it is served only when the listener is on a loopback
//! address (`run` leaves the buffer out otherwise), and only to requests addressed to a
//! loopback host with no foreign `Origin`: a web page whose name an attacker re-points at
//! 127.0.0.1 (DNS rebinding) sends its own name as `Host`, and is refused with 403. This
//! listener is not in the access log: it
//! is the operator's own channel, and a scrape every few seconds or a tail polling would drown
//! the pushes.
//!
//! Besides `routes` and `run`, the one module that names rouille: it is the edge of a second,
//! small HTTP server.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use rouille::{Request, Response};

use crate::log::Log;
use crate::server::listener::{self, Running};
use crate::server::metrics::{Metrics, CONTENT_TYPE};
use crate::server::recent::{Ask, Recent, DEFAULT_HISTORY};

/// Handler threads: a scrape and a couple of waiting tails at once (see `recent::MAX_WAITERS`).
const THREADS: usize = 4;

/// What the metrics listener serves.
pub struct Monitor {
    pub metrics: Arc<Metrics>,
    /// `None` when the listener is not on loopback: no live view.
    pub recent: Option<Arc<Recent>>,
    /// Where a refused `/tail` request is told, one line each.
    pub log: Log,
}

/// Handles one request on the metrics listener.
pub fn handle(monitor: &Monitor, req: &Request) -> Response {
    let path = req.raw_url().split('?').next().unwrap_or("");
    if req.method() != "GET" && req.method() != "HEAD" {
        return Response::text("method not allowed\n")
            .with_status_code(405)
            .with_unique_header("Allow", "GET, HEAD");
    }
    match path {
        "/metrics" => {
            Response::from_data(CONTENT_TYPE, monitor.metrics.render().into_bytes())
        }
        "/tail" => match &monitor.recent {
            Some(_) if !addressed_to_loopback(req.header("Host"), req.header("Origin")) => {
                monitor.log.warn(&format!(
                    "metrics listener: GET /tail from {} refused (403): Host {} / Origin {} is not loopback; the live view answers only local clients such as wxmp tail, never a web page",
                    req.remote_addr(),
                    shown(req.header("Host")),
                    shown(req.header("Origin")),
                ));
                Response::text(
                    "forbidden: the live view answers only requests to a loopback host (Host: 127.0.0.1, [::1] or localhost) with no foreign Origin\n",
                )
                .with_status_code(403)
            }
            Some(recent) => Response::text(recent.page(ask(req)).render()),
            None => Response::text(
                "the live view is off: it is served only when --metrics-addr is a loopback address\n",
            )
            .with_status_code(404),
        },
        "/" => Response::text("wxmp metrics listener: /metrics (Prometheus), /tail (wxmp tail)\n"),
        _ => Response::text("not found\n").with_status_code(404),
    }
}

/// True when `Host` names a loopback host (any port) and `Origin`, if sent, is a loopback
/// `http://` origin. A missing `Host` is refused: every client that should see the live view
/// (`wxmp tail`, curl, a browser on the same machine) sends one.
fn addressed_to_loopback(host: Option<&str>, origin: Option<&str>) -> bool {
    let host_ok = host.is_some_and(is_loopback_authority);
    let origin_ok = match origin {
        None => true,
        Some(o) => o
            .strip_prefix("http://")
            .or_else(|| o.strip_prefix("https://"))
            .is_some_and(|a| !a.contains('/') && is_loopback_authority(a)),
    };
    host_ok && origin_ok
}

/// `HOST[:PORT]` where HOST is `localhost`, an IPv4 address in 127/8 or `[::1]`.
fn is_loopback_authority(authority: &str) -> bool {
    let authority = authority.trim();
    let host = if let Some(rest) = authority.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip, port)) if port.is_empty() || port.starts_with(':') => ip,
            _ => return false,
        }
    } else {
        match authority.split_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            Some(_) => return false,
            None => authority,
        }
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A header value as the log line shows it: escaped and cut, `-` when absent.
fn shown(value: Option<&str>) -> String {
    match value {
        None => "-".to_owned(),
        Some(v) => {
            let cut: String = v.chars().take(100).collect();
            format!("{:?}", crate::text::printable(&cut))
        }
    }
}

/// `/tail?after=SEQ&epoch=E&history=N&wait=SECS`; anything unreadable is left at its default.
fn ask(req: &Request) -> Ask {
    let num = |name: &str| {
        req.get_param(name)
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    Ask {
        after: num("after"),
        epoch: num("epoch"),
        history: num("history").map_or(DEFAULT_HISTORY, |n| n as usize),
        wait: req
            .get_param("wait")
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|w| w.is_finite() && *w > 0.0)
            .map_or(Duration::ZERO, |w| Duration::from_secs_f64(w.min(60.0))),
    }
}

/// Binds `addr` and serves `monitor` there until `stop` is set.
pub fn spawn(
    addr: SocketAddr,
    monitor: Monitor,
    stop: Arc<AtomicBool>,
) -> Result<Running, io::Error> {
    listener::spawn(
        addr,
        "metrics",
        THREADS,
        move |req| handle(&monitor, req),
        stop,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (issue 19, N10): `/tail` answered any `Host` and `Origin`, so a web page
    /// re-pointed at 127.0.0.1 by DNS rebinding could read message content.
    #[test]
    fn only_loopback_hosts_and_origins_reach_the_live_view() {
        for host in [
            "127.0.0.1:9100",
            "127.0.0.1",
            "127.1.2.3:80",
            "localhost:9100",
            "LOCALHOST",
            "[::1]:9100",
            "[::1]",
        ] {
            assert!(addressed_to_loopback(Some(host), None), "{host}");
            assert!(
                addressed_to_loopback(Some(host), Some("http://localhost:9100")),
                "{host}"
            );
        }
        for host in [
            "evil.example:9100",
            "evil.example",
            "127.0.0.1.evil.example",
            "localhost.evil.example:9100",
            "10.0.0.1:9100",
            "[::2]:9100",
            "127.0.0.1:9100@evil",
            "[::1]x",
            "",
        ] {
            assert!(!addressed_to_loopback(Some(host), None), "{host}");
        }
        assert!(!addressed_to_loopback(None, None));
        for origin in [
            "http://evil.example",
            "null",
            "http://127.0.0.1.evil:9100",
            "file://",
        ] {
            assert!(
                !addressed_to_loopback(Some("127.0.0.1:9100"), Some(origin)),
                "{origin}"
            );
        }
    }
}
