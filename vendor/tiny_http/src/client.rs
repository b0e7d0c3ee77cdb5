//! wxmp patch: one connection's life, on its own thread, rewritten from upstream's
//! `ClientConnection` iterator.
//!
//! Upstream read the next request while earlier ones were still being answered (no bound on
//! pipelining: one client that never read its answers grew memory without limit), read chunked,
//! `Expect: 100-continue` and `Connection: upgrade` bodies on the request-handler threads with
//! only a per-read timeout (a trickling client held a handler thread forever), had the handler
//! threads write responses straight to the socket (a client that stops reading held them too),
//! and deadlocked answering an unsupported HTTP version (a thread and its descriptors leaked per
//! request). Here one thread per connection:
//!
//! 1. waits up to [`IDLE_TIMEOUT`] for the next request;
//! 2. reads its head with [`http1::read_head`] and, up to [`EAGER_BODY_LIMIT`], its body, all
//!    within [`REQUEST_DEADLINE`] of the first byte (a total deadline, not a per-read timeout);
//!    bad input is answered with its status (400, 408, 414, 431, 501, 505, ...), logged, and the
//!    connection closed;
//! 3. hands the request out and relays the response the handler writes into a [`ResponseSink`]
//!    to the socket, each piece within [`WRITE_DEADLINE`], so handler threads never block on a
//!    slow client;
//! 4. only then reads the next request: at most one request per connection is in flight.

use std::convert::TryFrom;
use std::io::{self, BufRead, BufReader, Cursor, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{HTTPVersion, Header, StatusCode};
use crate::connection::Connection;
use crate::control::{self, Registration};
use crate::http1::{self, Chunked, Framing, ParseError};
use crate::request::EAGER_BODY_LIMIT;
use crate::util::{CloseHandle, MessagesQueue};
use crate::{Message, Request, Response};

/// How long a keep-alive connection may stay silent between requests.
pub const IDLE_TIMEOUT: Duration = crate::SOCKET_TIMEOUT;
/// A request's head and its buffered body must have arrived this long after its first byte; a
/// larger body read by the handler must have arrived by then too.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(30);
/// Each piece of a response (at most [`SINK_CHUNK`] bytes) must be written within this.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(30);
/// Bodies buffered in memory by all connections together; past it a request is answered 503.
pub const BODY_BUDGET: usize = 64 << 20;
/// The most of a body left unread by the handler that is read and dropped to keep the
/// connection; past it the connection closes.
pub const MAX_DRAIN: u64 = 64 * 1024;
/// A response is passed from the handler to the connection thread in pieces of this size.
pub const SINK_CHUNK: usize = 64 * 1024;
/// A connection keeps its response buffer for the next response up to this capacity.
const KEPT_BUFFER: usize = 16 * 1024;
/// After answering and before closing, input is read and dropped for this long (at most
/// [`MAX_DRAIN`] bytes), so the close does not reset the connection and destroy the answer.
const LINGER: Duration = Duration::from_secs(1);

/// Bytes held by buffered bodies, against [`BODY_BUDGET`].
static BUFFERED: AtomicUsize = AtomicUsize::new(0);

/// Serves one accepted connection until it closes. `closed` is the server's own stop flag.
pub(crate) fn serve(
    socket: Connection,
    registration: Registration,
    messages: Arc<MessagesQueue<Message>>,
    closed: Arc<AtomicBool>,
) {
    let peer_addr = socket.clone().peer_addr().ok().flatten();
    let mut conn = Conn {
        spare: Vec::new(),
        write_timeout: CallTimeout(Some(crate::SOCKET_TIMEOUT)),
        reader: Some(BufReader::with_capacity(
            4096,
            SocketReader {
                socket: socket.clone(),
                deadline: None,
                // Set on every accepted socket by the accept loop.
                timeout: CallTimeout(Some(crate::SOCKET_TIMEOUT)),
            },
        )),
        peer: peer_addr.map_or_else(|| "-".to_owned(), |a| a.to_string()),
        peer_addr,
        socket,
        registration,
        messages,
        closed,
    };
    if let Ok(true) = conn.run() {
        conn.linger();
    }
}

struct Conn {
    socket: Connection,
    write_timeout: CallTimeout,
    /// The buffer the next response is written into, handed back with the last response's
    /// bytes. Reusing it keeps handler threads from allocating each response and this thread
    /// from freeing it: with hundreds of connection threads, glibc's per-thread caches kept
    /// such foreign chunks and the heap fragmented (RSS crept up under a flood).
    spare: Vec<u8>,
    /// Lent to the handler, with the request, while it reads a large body.
    reader: Option<BufReader<SocketReader>>,
    peer: String,
    peer_addr: Option<SocketAddr>,
    registration: Registration,
    messages: Arc<MessagesQueue<Message>>,
    closed: Arc<AtomicBool>,
}

/// What happens after a request.
enum Next {
    /// Read the next request.
    KeepAlive,
    /// Close; `true` if something was answered, so the close should linger.
    Close(bool),
}

impl Conn {
    /// Serves requests until the connection ends; `Ok(true)` if the close should linger.
    fn run(&mut self) -> io::Result<bool> {
        loop {
            let stopping = self.closed.load(Ordering::SeqCst) || control::is_shutting_down();
            let reader = self.reader.as_mut().ok_or(ErrorKind::BrokenPipe)?;
            if reader.buffer().is_empty() {
                // Idle from here: a stop may close the connection now. The stop raises its flag
                // before it looks for idle connections, so one of the two sees the other.
                if !self.registration.state.set_idle() || stopping || control::is_shutting_down() {
                    return Ok(false);
                }
                reader.get_mut().deadline = Some(Instant::now() + IDLE_TIMEOUT);
                // EOF, or silence for IDLE_TIMEOUT: close without a word (RFC 9112 §9.5).
                if reader.fill_buf()?.is_empty() {
                    return Ok(false);
                }
            }
            if !self.registration.state.set_busy() {
                return Ok(false);
            }
            reader.get_mut().deadline = Some(Instant::now() + REQUEST_DEADLINE);
            let head = match http1::read_head(reader) {
                Ok(Some(head)) => head,
                Ok(None) => return Ok(false),
                Err(ParseError::Status(code, why)) => return self.refuse(code, why),
                Err(ParseError::Io(e)) if is_timeout(&e) => {
                    return self.refuse(408, "request head not received in time")
                }
                Err(ParseError::Io(_)) => return Ok(false),
            };
            match self.exchange(head)? {
                Next::KeepAlive => continue,
                Next::Close(answered) => return Ok(answered),
            }
        }
    }

    /// Reads the body of the request `head` starts, hands the request out and relays its
    /// response.
    fn exchange(&mut self, head: http1::Head) -> io::Result<Next> {
        let mut last = head.last;
        let mut lent = None;
        let mut must_send_continue = false;
        let (body, length): (Box<dyn Read + Send>, Option<usize>) = match head.framing {
            Framing::Length(0) => (Box::new(io::empty()), Some(0)),
            Framing::Length(n) if n <= EAGER_BODY_LIMIT as u64 => {
                if head.expect_continue {
                    self.write_continue(&head.version)?;
                }
                let n = n as usize;
                match self.read_length(n) {
                    Ok(body) => (Box::new(body), Some(n)),
                    Err(refusal) => return self.refused(refusal),
                }
            }
            Framing::Length(n) => {
                // Too large to buffer: the handler reads it (or refuses it by its length), within
                // the request deadline.
                let (back, returned) = mpsc::channel();
                let reader = self.reader.take().ok_or(ErrorKind::BrokenPipe)?;
                lent = Some(returned);
                must_send_continue = head.expect_continue;
                let body = LentBody {
                    reader: Some(reader),
                    left: n,
                    back,
                };
                (Box::new(body), usize::try_from(n).ok())
            }
            Framing::Chunked => {
                if head.expect_continue {
                    self.write_continue(&head.version)?;
                }
                match self.read_chunked() {
                    Ok(body) => {
                        // The rest of an over-long body was not read: no request can follow it.
                        last |= body.too_long;
                        (Box::new(body), None)
                    }
                    Err(refusal) => return self.refused(refusal),
                }
            }
        };

        let close = Arc::new(CloseHandle::new(None));
        let (sink, pieces) = mpsc::sync_channel(2);
        let request = crate::request::from_connection(
            head.method,
            head.target,
            head.version,
            head.headers,
            self.peer_addr,
            body,
            length,
            must_send_continue,
            Box::new(ResponseSink::new(sink, std::mem::take(&mut self.spare))),
            Arc::clone(&close),
        );
        self.messages.push(request.into());
        let written = self.relay(pieces);

        if let Some(returned) = lent {
            let (reader, left) = match self.wait(&returned) {
                Some(back) => back,
                None => return Ok(Next::Close(false)),
            };
            self.reader = Some(reader);
            if left > 0 && (left > MAX_DRAIN || !self.drain(left)) {
                last = true;
            }
        }
        if !written {
            return Ok(Next::Close(false));
        }
        if last
            || close.is_closed()
            || self.closed.load(Ordering::SeqCst)
            || control::is_shutting_down()
        {
            return Ok(Next::Close(true));
        }
        Ok(Next::KeepAlive)
    }

    /// Reads a `Content-Length` body of `n` bytes into memory.
    fn read_length(&mut self, n: usize) -> Result<Buffered, Refusal> {
        let reader = self.reader.as_mut().ok_or(Refusal::Gone)?;
        let mut reservation = Reservation(0);
        let mut data = Vec::new();
        while data.len() < n {
            let step = (n - data.len()).min(64 * 1024);
            if !reservation.grow(step) {
                return Err(Refusal::Budget);
            }
            // Exactly what the budget granted: read_to_end alone would double the capacity.
            data.reserve_exact(step);
            let got = reader
                .by_ref()
                .take(step as u64)
                .read_to_end(&mut data)
                .map_err(Refusal::from)?;
            if got < step {
                return Err(Refusal::Gone);
            }
        }
        Ok(Buffered {
            data: Cursor::new(data),
            too_long: false,
            _reservation: reservation,
        })
    }

    /// Reads a chunked body into memory, up to `EAGER_BODY_LIMIT` bytes.
    fn read_chunked(&mut self) -> Result<Buffered, Refusal> {
        let reader = self.reader.as_mut().ok_or(Refusal::Gone)?;
        let mut reservation = Reservation(0);
        let mut data = Vec::new();
        // A refusal by the budget comes back from the decoder as this 503.
        let mut grow = |step: usize| {
            if reservation.grow(step) {
                Ok(())
            } else {
                Err(ParseError::Status(
                    503,
                    "buffered request bodies over budget",
                ))
            }
        };
        let outcome = http1::read_chunked(reader, &mut data, EAGER_BODY_LIMIT - 1, &mut grow)
            .map_err(|e| match e {
                ParseError::Status(503, _) => Refusal::Budget,
                ParseError::Status(code, why) => Refusal::Status(code, why),
                ParseError::Io(e) => Refusal::from(e),
            })?;
        Ok(Buffered {
            data: Cursor::new(data),
            too_long: outcome == Chunked::TooLong,
            _reservation: reservation,
        })
    }

    fn refused(&mut self, refusal: Refusal) -> io::Result<Next> {
        let answered = match refusal {
            Refusal::Gone => false,
            Refusal::Late => self.refuse(408, "request body not received in time")?,
            Refusal::Budget => self.refuse(503, "buffered request bodies over budget")?,
            Refusal::Status(code, why) => self.refuse(code, why)?,
        };
        Ok(Next::Close(answered))
    }

    /// Answers `code` with `Connection: close` and logs why; the caller then closes.
    fn refuse(&mut self, code: u16, why: &'static str) -> io::Result<bool> {
        let status = StatusCode(code);
        log::warn!(
            "{} {} {}: {}",
            self.peer,
            code,
            status.default_reason_phrase(),
            why
        );
        let text = format!("{}\n", status.default_reason_phrase().to_ascii_lowercase());
        let mut response = Response::from_string(text).with_status_code(status);
        if let Ok(close) = Header::from_bytes(&b"Connection"[..], &b"close"[..]) {
            response.add_header(close);
        }
        let mut bytes = Vec::with_capacity(256);
        response.raw_print(&mut bytes, HTTPVersion(1, 1), &[], false, None)?;
        write_all_by(
            &self.socket,
            &mut self.write_timeout,
            &bytes,
            Instant::now() + WRITE_DEADLINE,
        )?;
        Ok(true)
    }

    /// `100 Continue` for a client that waits for it before sending its body (never to an
    /// HTTP/1.0 client, RFC 9110 §15.2).
    fn write_continue(&mut self, version: &HTTPVersion) -> io::Result<()> {
        if *version < HTTPVersion(1, 1) {
            return Ok(());
        }
        write_all_by(
            &self.socket,
            &mut self.write_timeout,
            b"HTTP/1.1 100 Continue\r\n\r\n",
            Instant::now() + WRITE_DEADLINE,
        )
    }

    /// Writes the pieces of a response as the handler produces them, until it is done. False if
    /// the socket failed (the rest is dropped, and the handler never blocks on it).
    fn relay(&mut self, pieces: Receiver<Vec<u8>>) -> bool {
        let mut ok = true;
        loop {
            match pieces.recv_timeout(Duration::from_secs(1)) {
                Ok(mut piece) => {
                    if ok {
                        let deadline = Instant::now() + WRITE_DEADLINE;
                        ok = write_all_by(&self.socket, &mut self.write_timeout, &piece, deadline)
                            .is_ok();
                    }
                    if piece.capacity() <= KEPT_BUFFER {
                        piece.clear();
                        self.spare = piece;
                    }
                }
                Err(RecvTimeoutError::Timeout) if self.closed.load(Ordering::SeqCst) => {
                    return false
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return ok,
            }
        }
    }

    /// Waits for the handler to give back a lent reader (it does when the request is dropped).
    fn wait<T>(&self, returned: &Receiver<T>) -> Option<T> {
        loop {
            match returned.recv_timeout(Duration::from_secs(1)) {
                Ok(back) => return Some(back),
                Err(RecvTimeoutError::Timeout) if !self.closed.load(Ordering::SeqCst) => {}
                Err(_) => return None,
            }
        }
    }

    /// Reads and drops the `left` unread bytes of a body; true if they all came in time.
    fn drain(&mut self, left: u64) -> bool {
        let Some(reader) = self.reader.as_mut() else {
            return false;
        };
        reader.get_mut().deadline = Some(Instant::now() + REQUEST_DEADLINE);
        matches!(io::copy(&mut reader.by_ref().take(left), &mut io::sink()), Ok(n) if n == left)
    }

    /// Ends the connection politely after an answer: stop sending, then read and drop what the
    /// client still sends for a moment. Closing with unread input would reset the connection,
    /// and a reset can destroy the answer before the client reads it.
    fn linger(&mut self) {
        let _ = self.socket.shutdown(Shutdown::Write);
        if let Some(reader) = self.reader.as_mut() {
            reader.get_mut().deadline = Some(Instant::now() + LINGER);
            let _ = io::copy(&mut reader.by_ref().take(MAX_DRAIN), &mut io::sink());
        }
    }
}

/// Why a body was not read.
enum Refusal {
    /// The client went away or the socket failed: nothing to answer.
    Gone,
    /// The body did not arrive within the request deadline: 408.
    Late,
    /// Buffering it would pass [`BODY_BUDGET`]: 503.
    Budget,
    /// Malformed: answer this status.
    Status(u16, &'static str),
}

impl From<io::Error> for Refusal {
    fn from(e: io::Error) -> Self {
        if is_timeout(&e) {
            Refusal::Late
        } else {
            Refusal::Gone
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock)
}

fn timed_out() -> io::Error {
    io::Error::new(ErrorKind::TimedOut, "deadline passed")
}

/// The socket's read side, held to a deadline: every read waits at most until then, however
/// the bytes trickle in.
pub(crate) struct SocketReader {
    socket: Connection,
    deadline: Option<Instant>,
    timeout: CallTimeout,
}

impl Read for SocketReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let wait = match self.deadline {
            Some(deadline) => deadline.saturating_duration_since(Instant::now()),
            None => IDLE_TIMEOUT,
        };
        if wait.is_zero() {
            return Err(timed_out());
        }
        let socket = &self.socket;
        self.timeout.fit(wait, |t| socket.set_read_timeout(t))?;
        match (&self.socket).read(buf) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => Err(timed_out()),
            other => other,
        }
    }
}

/// The timeout in place on one direction of the socket (`SO_RCVTIMEO`/`SO_SNDTIMEO` bound each
/// call, not a total). The one in place is kept while it ends no earlier than the deadline and
/// at most [`SLACK`] after it, which saves a system call on nearly every read and write.
struct CallTimeout(Option<Duration>);

/// How far past its deadline a read or write may block.
const SLACK: Duration = Duration::from_secs(1);

impl CallTimeout {
    fn fit(
        &mut self,
        wait: Duration,
        set: impl FnOnce(Option<Duration>) -> io::Result<()>,
    ) -> io::Result<()> {
        // A zero timeout would mean "wait forever".
        let wait = wait.max(Duration::from_millis(1));
        if matches!(self.0, Some(t) if t >= wait && t <= wait + SLACK) {
            return Ok(());
        }
        set(Some(wait))?;
        self.0 = Some(wait);
        Ok(())
    }
}

/// Writes all of `data` by `deadline`.
fn write_all_by(
    socket: &Connection,
    timeout: &mut CallTimeout,
    mut data: &[u8],
    deadline: Instant,
) -> io::Result<()> {
    while !data.is_empty() {
        let wait = deadline.saturating_duration_since(Instant::now());
        if wait.is_zero() {
            return Err(timed_out());
        }
        timeout.fit(wait, |t| socket.set_write_timeout(t))?;
        match (&*socket).write(data) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Err(timed_out()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Bytes counted against [`BODY_BUDGET`] until dropped.
struct Reservation(usize);

impl Reservation {
    fn grow(&mut self, n: usize) -> bool {
        let mut current = BUFFERED.load(Ordering::SeqCst);
        loop {
            if current + n > BODY_BUDGET {
                return false;
            }
            match BUFFERED.compare_exchange(
                current,
                current + n,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => {
                    self.0 += n;
                    return true;
                }
                Err(now) => current = now,
            }
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        BUFFERED.fetch_sub(self.0, Ordering::SeqCst);
    }
}

/// A body read into memory before the request was handed out.
struct Buffered {
    data: Cursor<Vec<u8>>,
    /// Only the first `EAGER_BODY_LIMIT` bytes were kept; reading past them is an error, never
    /// a silently truncated body.
    too_long: bool,
    _reservation: Reservation,
}

impl Read for Buffered {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.data.read(buf)?;
        if n == 0 && self.too_long && !buf.is_empty() {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                "request body over the buffered limit",
            ));
        }
        Ok(n)
    }
}

/// A body too large to buffer, read by the handler straight from the connection's reader,
/// which goes back to the connection when this is dropped.
struct LentBody {
    reader: Option<BufReader<SocketReader>>,
    left: u64,
    back: Sender<(BufReader<SocketReader>, u64)>,
}

impl Read for LentBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(reader) = self.reader.as_mut() else {
            return Ok(0);
        };
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = reader.read(&mut buf[..want])?;
        if n == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        self.left -= n as u64;
        Ok(n)
    }
}

impl Drop for LentBody {
    fn drop(&mut self) {
        if let Some(reader) = self.reader.take() {
            let _ = self.back.send((reader, self.left));
        }
    }
}

/// Where a handler writes its response: bytes are collected and passed to the connection's
/// thread, which writes them to the socket. A client that does not read therefore holds its
/// own connection thread, never a request-handler thread (except while a response over
/// 2 x [`SINK_CHUNK`] waits for the client).
pub(crate) struct ResponseSink {
    buf: Vec<u8>,
    pieces: Option<SyncSender<Vec<u8>>>,
}

impl ResponseSink {
    /// `buf` (empty) is reused; its capacity is kept from earlier responses.
    fn new(pieces: SyncSender<Vec<u8>>, buf: Vec<u8>) -> Self {
        ResponseSink {
            buf,
            pieces: Some(pieces),
        }
    }

    fn pass(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let piece = std::mem::take(&mut self.buf);
        match self.pieces.as_ref().map(|p| p.send(piece)) {
            Some(Ok(())) => Ok(()),
            _ => {
                self.pieces = None;
                Err(ErrorKind::BrokenPipe.into())
            }
        }
    }
}

impl Write for ResponseSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.pieces.is_none() {
            return Err(ErrorKind::BrokenPipe.into());
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() >= SINK_CHUNK {
            self.pass()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.pass()
    }
}

impl Drop for ResponseSink {
    fn drop(&mut self) {
        let _ = self.pass();
    }
}
