//! Raw HTTP/1.1 over loopback sockets, for talking to the real binary.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// How long a read or write on a test connection may block.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// One request over a fresh connection (`Connection: close`): the status (0 if the answer had
/// none) and the body.
pub fn request(addr: &str, method: &str, target: &str, body: &[u8]) -> (u16, String) {
    let mut s = connect(addr);
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

/// A connection whose reads and writes block for at most 10 s.
pub fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// Sends `raw` on a fresh connection and reads until the server closes it (None: no close
/// within 10 s, or the connection failed).
pub fn exchange(addr: &str, raw: &[u8]) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(IO_TIMEOUT)).ok()?;
    s.write_all(raw).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// The status codes of the responses in `raw`, in order.
pub fn statuses(raw: &str) -> Vec<u16> {
    raw.match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| raw.get(i + 9..i + 12)?.parse().ok())
        .collect()
}
