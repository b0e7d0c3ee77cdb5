//! The metrics listener (`--metrics-addr`, off by default): `GET /metrics` in the Prometheus
//! text format and `GET /tail`, the live view's lines for `wxmp tail`, on a port of its own so
//! nothing new is exposed on the public port WeChat calls.
//!
//! `/tail` shows message content, so it is served only when the listener is on a loopback
//! address (`run` leaves the buffer out otherwise). This listener is not in the access log: it
//! is the operator's own channel, and a scrape every few seconds or a tail polling would drown
//! the pushes.
//!
//! Besides `routes` and `run`, the one module that names rouille: it is the edge of a second,
//! small HTTP server.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use rouille::{Request, Response};

use crate::server::metrics::{Metrics, CONTENT_TYPE};
use crate::server::recent::{Ask, Recent, DEFAULT_HISTORY};

/// Handler threads: a scrape and a couple of waiting tails at once (see `recent::MAX_WAITERS`).
const THREADS: usize = 4;

/// What the metrics listener serves.
pub struct Monitor {
    pub metrics: Arc<Metrics>,
    /// `None` when the listener is not on loopback: no live view.
    pub recent: Option<Arc<Recent>>,
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

/// The listener, running on its own thread until `stop` is set.
pub struct Running {
    pub addr: SocketAddr,
    thread: JoinHandle<()>,
}

impl Running {
    /// Waits for the listener's thread after `stop` was set (at most one poll interval, plus the
    /// requests in flight, which are bounded by `recent::MAX_WAIT`).
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

/// Binds `addr` and serves `monitor` there until `stop` is set.
pub fn spawn(
    addr: SocketAddr,
    monitor: Monitor,
    stop: Arc<AtomicBool>,
) -> Result<Running, io::Error> {
    let server = rouille::Server::new(addr, move |req: &Request| handle(&monitor, req))
        .map_err(|e| match e.downcast::<io::Error>() {
            Ok(e) => *e,
            Err(other) => io::Error::other(other.to_string()),
        })?
        .pool_size(THREADS);
    let addr = server.server_addr();
    let thread = thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                server.poll_timeout(Duration::from_millis(100));
            }
            server.join();
        })?;
    Ok(Running { addr, thread })
}
