//! # Simple usage
//!
//! ## Creating the server
//!
//! The easiest way to create a server is to call `Server::http()`.
//!
//! The `http()` function returns an `IoResult<Server>` which will return an error
//! in the case where the server creation fails (for example if the listening port is already
//! occupied).
//!
//! ```no_run
//! let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! ```
//!
//! A newly-created `Server` will immediately start listening for incoming connections and HTTP
//! requests.
//!
//! ## Receiving requests
//!
//! Calling `server.recv()` will block until the next request is available.
//! This function returns an `IoResult<Request>`, so you need to handle the possible errors.
//!
//! ```no_run
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//!
//! loop {
//!     // blocks until the next request is received
//!     let request = match server.recv() {
//!         Ok(rq) => rq,
//!         Err(e) => { println!("error: {}", e); break }
//!     };
//!
//!     // do something with the request
//!     // ...
//! }
//! ```
//!
//! In a real-case scenario, you will probably want to spawn multiple worker tasks and call
//! `server.recv()` on all of them. Like this:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use std::thread;
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! let server = Arc::new(server);
//! let mut guards = Vec::with_capacity(4);
//!
//! for _ in (0 .. 4) {
//!     let server = server.clone();
//!
//!     let guard = thread::spawn(move || {
//!         loop {
//!             let rq = server.recv().unwrap();
//!
//!             // ...
//!         }
//!     });
//!
//!     guards.push(guard);
//! }
//! ```
//!
//! If you don't want to block, you can call `server.try_recv()` instead.
//!
//! ## Handling requests
//!
//! The `Request` object returned by `server.recv()` contains informations about the client's request.
//! The most useful methods are probably `request.method()` and `request.url()` which return
//! the requested method (`GET`, `POST`, etc.) and url.
//!
//! To handle a request, you need to create a `Response` object. See the docs of this object for
//! more infos. Here is an example of creating a `Response` from a file:
//!
//! ```no_run
//! # use std::fs::File;
//! # use std::path::Path;
//! let response = tiny_http::Response::from_file(File::open(&Path::new("image.png")).unwrap());
//! ```
//!
//! All that remains to do is call `request.respond()`:
//!
//! ```no_run
//! # use std::fs::File;
//! # use std::path::Path;
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! # let request = server.recv().unwrap();
//! # let response = tiny_http::Response::from_file(File::open(&Path::new("image.png")).unwrap());
//! let _ = request.respond(response);
//! ```
#![forbid(unsafe_code)]
// wxmp: upstream code kept as published; unused items are not ours to prune.
#![allow(dead_code, unused_imports)]
#![deny(rust_2018_idioms)]
#![allow(clippy::match_like_matches_macro)]

#[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
use zeroize::Zeroizing;

use std::error::Error;
use std::io::Error as IoError;
use std::io::ErrorKind as IoErrorKind;
use std::io::Result as IoResult;
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use connection::Connection;
use util::MessagesQueue;

pub use common::{HTTPVersion, Header, HeaderField, Method, StatusCode};

/// wxmp patch: read/write timeout on every accepted socket (idle keep-alive, stalled peers).
pub const SOCKET_TIMEOUT: Duration = Duration::from_secs(30);
pub use connection::{ConfigListenAddr, ListenAddr, Listener};
#[doc(hidden)]
pub use http1::fuzz_requests;
pub use request::{ReadWrite, Request};
pub use response::{Response, ResponseBox};
pub use test::TestRequest;

mod client;
mod common;
mod connection;
pub mod control;
mod http1;
mod request;
mod response;
mod ssl;
mod test;
mod util;

/// The main class of this library.
///
/// Destroying this object will immediately close the listening socket and the reading
///  part of all the client's connections. Requests that have already been returned by
///  the `recv()` function will not close and the responses will be transferred to the client.
pub struct Server {
    // should be false as long as the server exists
    // when set to true, all the subtasks will close within a few hundreds ms
    close: Arc<AtomicBool>,

    // queue for messages received by child threads
    messages: Arc<MessagesQueue<Message>>,

    // result of TcpListener::local_addr()
    listening_addr: ListenAddr,

    // wxmp patch: when the current run of requests returned by `recv_timeout` began.
    run_started: std::sync::Mutex<Option<std::time::Instant>>,

    // wxmp patch: lets `control::shutdown` wake this server's accept loop.
    _listener_entry: control::ListenerEntry,
}

enum Message {
    Error(IoError),
    NewRequest(Request),
}

impl From<IoError> for Message {
    fn from(e: IoError) -> Message {
        Message::Error(e)
    }
}

impl From<Request> for Message {
    fn from(rq: Request) -> Message {
        Message::NewRequest(rq)
    }
}

// this trait is to make sure that Server implements Share and Send
#[doc(hidden)]
trait MustBeShareDummy: Sync + Send {}
#[doc(hidden)]
impl MustBeShareDummy for Server {}

pub struct IncomingRequests<'a> {
    server: &'a Server,
}

/// Represents the parameters required to create a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The addresses to try to listen to.
    pub addr: ConfigListenAddr,

    /// If `Some`, then the server will use SSL to encode the communications.
    pub ssl: Option<SslConfig>,
}

/// Configuration of the server for SSL.
#[derive(Debug, Clone)]
pub struct SslConfig {
    /// Contains the public certificate to send to clients.
    pub certificate: Vec<u8>,
    /// Contains the ultra-secret private key used to decode communications.
    pub private_key: Vec<u8>,
}

impl Server {
    /// Shortcut for a simple server on a specific address.
    #[inline]
    pub fn http<A>(addr: A) -> Result<Server, Box<dyn Error + Send + Sync + 'static>>
    where
        A: ToSocketAddrs,
    {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::from_socket_addrs(addr)?,
            ssl: None,
        })
    }

    /// Shortcut for an HTTPS server on a specific address.
    #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
    #[inline]
    pub fn https<A>(
        addr: A,
        config: SslConfig,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>>
    where
        A: ToSocketAddrs,
    {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::from_socket_addrs(addr)?,
            ssl: Some(config),
        })
    }

    #[cfg(unix)]
    #[inline]
    /// Shortcut for a UNIX socket server at a specific path
    pub fn http_unix(
        path: &std::path::Path,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::unix_from_path(path),
            ssl: None,
        })
    }

    /// Builds a new server that listens on the specified address.
    pub fn new(config: ServerConfig) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        let listener = config.addr.bind()?;
        Self::from_listener(listener, config.ssl)
    }

    /// Builds a new server using the specified TCP listener.
    ///
    /// This is useful if you've constructed TcpListener using some less usual method
    /// such as from systemd. For other cases, you probably want the `new()` function.
    pub fn from_listener<L: Into<Listener>>(
        listener: L,
        ssl_config: Option<SslConfig>,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        let listener = listener.into();
        // building the "close" variable
        let close_trigger = Arc::new(AtomicBool::new(false));

        // building the TcpListener
        let (server, local_addr) = {
            let local_addr = listener.local_addr()?;
            log::debug!("Server listening on {}", local_addr);
            (listener, local_addr)
        };

        // building the SSL capabilities
        #[cfg(all(feature = "ssl-openssl", feature = "ssl-rustls"))]
        compile_error!(
            "Features 'ssl-openssl' and 'ssl-rustls' must not be enabled at the same time"
        );
        #[cfg(not(any(feature = "ssl-openssl", feature = "ssl-rustls")))]
        type SslContext = ();
        #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
        type SslContext = crate::ssl::SslContextImpl;
        let ssl: Option<SslContext> = {
            match ssl_config {
                #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
                Some(config) => Some(SslContext::from_pem(
                    config.certificate,
                    Zeroizing::new(config.private_key),
                )?),
                #[cfg(not(any(feature = "ssl-openssl", feature = "ssl-rustls")))]
                Some(_) => return Err(
                    "Building a server with SSL requires enabling the `ssl` feature in tiny-http"
                        .into(),
                ),
                None => None,
            }
        };

        // creating a task where server.accept() is continuously called
        // and ClientConnection objects are pushed in the messages queue
        let messages = MessagesQueue::with_capacity(8);

        let inside_close_trigger = close_trigger.clone();
        let inside_messages = messages.clone();
        // wxmp patch: a fallible spawn (upstream panicked), and an accept loop that outlives any
        // panic and any error: it owns the listener, so its death closed the port for good while
        // the process lived on. TLS is not built in this copy, so `ssl` is always `None` here.
        let max_connections = control::max_connections();
        debug_assert!(ssl.is_none());
        thread::Builder::new()
            .name("tiny_http accept".into())
            .spawn(move || {
                let accept = AcceptLoop {
                    listener: server,
                    tasks_pool: util::TaskPool::new(),
                    close: inside_close_trigger,
                    messages: inside_messages,
                    open: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
                    max_connections,
                    refused_log: control::RateLimitedLog::new(),
                    error_log: control::RateLimitedLog::new(),
                };
                log::debug!("Running accept thread");
                loop {
                    let run =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| accept.run()));
                    match run {
                        Ok(()) => break,
                        Err(_) => {
                            log::error!("the accept loop panicked; restarting it");
                            thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
                log::debug!("Terminating accept thread");
            })?;

        // result
        Ok(Server {
            messages,
            close: close_trigger,
            _listener_entry: control::register_listener(local_addr.clone()),
            listening_addr: local_addr,
            run_started: std::sync::Mutex::new(None),
        })
    }

    /// Returns an iterator for all the incoming requests.
    ///
    /// The iterator will return `None` if the server socket is shutdown.
    #[inline]
    pub fn incoming_requests(&self) -> IncomingRequests<'_> {
        IncomingRequests { server: self }
    }

    /// Returns the address the server is listening to.
    #[inline]
    pub fn server_addr(&self) -> ListenAddr {
        self.listening_addr.clone()
    }

    /// Returns the number of clients currently connected to the server.
    pub fn num_connections(&self) -> usize {
        unimplemented!()
        //self.requests_receiver.lock().len()
    }

    /// Blocks until an HTTP request has been submitted and returns it.
    pub fn recv(&self) -> IoResult<Request> {
        match self.messages.pop() {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(rq),
            None => Err(IoError::new(IoErrorKind::Other, "thread unblocked")),
        }
    }

    /// Same as `recv()` but doesn't block longer than timeout
    ///
    /// wxmp patch: under steady load, at least one `Ok(None)` per `timeout`. rouille's
    /// `poll_timeout` loops while this returns requests, so upstream's never returned to its
    /// caller under load, and a server could not be stopped.
    pub fn recv_timeout(&self, timeout: Duration) -> IoResult<Option<Request>> {
        {
            let mut run = self.run_started.lock().unwrap_or_else(|e| e.into_inner());
            match *run {
                Some(started) if started.elapsed() >= timeout => {
                    *run = None;
                    return Ok(None);
                }
                Some(_) => {}
                None => *run = Some(std::time::Instant::now()),
            }
        }
        let message = self.messages.pop_timeout(timeout);
        if message.is_none() {
            *self.run_started.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        match message {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(Some(rq)),
            None => Ok(None),
        }
    }

    /// Same as `recv()` but doesn't block.
    pub fn try_recv(&self) -> IoResult<Option<Request>> {
        match self.messages.try_pop() {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(Some(rq)),
            None => Ok(None),
        }
    }

    /// Unblock thread stuck in recv() or incoming_requests().
    /// If there are several such threads, only one is unblocked.
    /// This method allows graceful shutdown of server.
    pub fn unblock(&self) {
        self.messages.unblock();
    }
}

impl Iterator for IncomingRequests<'_> {
    type Item = Request;
    fn next(&mut self) -> Option<Request> {
        self.server.recv().ok()
    }
}

/// Connects briefly to a listener to unblock its accept thread.
pub(crate) fn wake_accept(listening_addr: &ListenAddr) {
    let maybe_stream = match listening_addr {
        ListenAddr::IP(addr) => TcpStream::connect(addr).map(Connection::from),
        #[cfg(unix)]
        ListenAddr::Unix(addr) => match addr.as_pathname() {
            // TODO: use connect_addr when its stabilized.
            Some(path) => std::os::unix::net::UnixStream::connect(path).map(Connection::from),
            None => return,
        },
    };
    if let Ok(stream) = maybe_stream {
        let _ = stream.shutdown(Shutdown::Both);
    }
}

/// wxmp patch: the accept loop, which survives running out of descriptors or threads and caps
/// the connections it holds open.
struct AcceptLoop {
    listener: Listener,
    tasks_pool: util::TaskPool,
    close: Arc<AtomicBool>,
    messages: Arc<MessagesQueue<Message>>,
    /// Connections of this server now open.
    open: Arc<std::sync::atomic::AtomicUsize>,
    max_connections: usize,
    refused_log: control::RateLimitedLog,
    error_log: control::RateLimitedLog,
}

/// The whole answer to a connection over the cap, sent without reading the request.
const BUSY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Length: 5\r\nRetry-After: 1\r\nConnection: close\r\n\r\nbusy\n";

impl AcceptLoop {
    fn stopping(&self) -> bool {
        self.close.load(Relaxed) || control::is_shutting_down()
    }

    fn run(&self) {
        let mut backoff = control::Backoff::new();
        while !self.stopping() {
            let sock = match self.listener.accept() {
                Ok((sock, _)) => sock,
                Err(e) => {
                    // EMFILE/ENFILE (no descriptors), ENOBUFS/ENOMEM: the pending connection
                    // stays queued; wait for descriptors to come back and retry.
                    self.error_log
                        .warn(&format_args!("cannot accept a connection: {}", e));
                    backoff.sleep();
                    continue;
                }
            };
            backoff.reset();
            if self.stopping() {
                break;
            }
            if self.open.load(std::sync::atomic::Ordering::SeqCst) >= self.max_connections {
                busy(&sock);
                self.refused_log.warn(&format_args!(
                    "503 Service Unavailable: {} connections open, the most allowed (--max-connections)",
                    self.max_connections
                ));
                continue;
            }
            sock.set_timeouts(SOCKET_TIMEOUT);
            let registration = control::register(sock.clone(), &self.open);
            let spare = sock.clone();
            let messages = self.messages.clone();
            let close = self.close.clone();
            let mut job = Some((sock, registration));
            let spawned = self.tasks_pool.spawn(Box::new(move || {
                if let Some((sock, registration)) = job.take() {
                    client::serve(sock, registration, messages.clone(), close.clone());
                }
            }));
            if let Err(e) = spawned {
                busy(&spare);
                self.error_log.warn(&format_args!(
                    "503 Service Unavailable: cannot start a thread: {}",
                    e
                ));
                backoff.sleep();
            }
        }
    }
}

/// Answers 503 without blocking and closes.
fn busy(sock: &Connection) {
    use std::io::Write;
    let _ = sock.set_nonblocking(true);
    let _ = (&*sock).write(BUSY);
    let _ = sock.shutdown(Shutdown::Write);
}

impl Drop for Server {
    fn drop(&mut self) {
        self.close.store(true, Relaxed);
        wake_accept(&self.listening_addr);

        #[cfg(unix)]
        if let ListenAddr::Unix(addr) = &self.listening_addr {
            if let Some(path) = addr.as_pathname() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}
