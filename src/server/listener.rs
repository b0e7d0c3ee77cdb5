//! A side listener (the metrics listener, the API gateway): a rouille server on its own thread,
//! polled until the server stops. One of the HTTP edges, with `routes`, `run` and `monitor`.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use rouille::{Request, Response};

/// The listener, running on its own thread until `stop` is set.
pub struct Running {
    pub addr: SocketAddr,
    thread: JoinHandle<()>,
}

impl Running {
    /// Waits for the listener's thread after `stop` was set: at most one poll interval, plus
    /// the requests in flight, which each listener bounds.
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

/// Why a listener could not bind, in words.
pub fn why(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::AddrInUse => "the port is already in use".to_owned(),
        io::ErrorKind::PermissionDenied => {
            "permission denied (ports below 1024 need root)".to_owned()
        }
        io::ErrorKind::AddrNotAvailable => "that address is not on this machine".to_owned(),
        _ => error.to_string(),
    }
}

/// Binds `addr` and serves `handler` there with `threads` handler threads until `stop` is set.
pub fn spawn(
    addr: SocketAddr,
    name: &str,
    threads: usize,
    handler: impl Fn(&Request) -> Response + Send + Sync + 'static,
    stop: Arc<AtomicBool>,
) -> Result<Running, io::Error> {
    let server = rouille::Server::new(addr, handler)
        .map_err(|e| match e.downcast::<io::Error>() {
            Ok(e) => *e,
            Err(other) => io::Error::other(other.to_string()),
        })?
        .pool_size(threads);
    let addr = server.server_addr();
    let thread = thread::Builder::new().name(name.into()).spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            server.poll_timeout(Duration::from_millis(100));
        }
        server.join();
    })?;
    Ok(Running { addr, thread })
}
