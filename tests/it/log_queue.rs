//! The log off the hot path, against the real binary: a server whose stderr nobody reads keeps
//! answering WeChat, counts the log lines it had to drop, says how many once stderr is read
//! again, and still stops on SIGTERM within its grace period.
//!
//! Regression (issue 20): every handler wrote its access line to stderr itself, so once the
//! pipe was full (64 KiB on Linux) every push and `/healthz` hung, and SIGTERM could not stop
//! the server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::helpers::text_xml;
use crate::kit::binary::Wxmp;
use crate::kit::signed;
use crate::kit::wait::{self, secs};

const TOKEN: &str = "blockedtoken";
const PUSHES: u64 = 2_000;
const CONNECTIONS: u64 = 4;
/// Longest any one answer may take; a handler blocked on stderr never answers at all.
const ANSWER_BOUND: Duration = Duration::from_secs(5);
/// `run::SHUTDOWN_GRACE`, and some slack for a loaded machine.
const STOP_BOUND: Duration = Duration::from_secs(8 + 3);

/// A server with its stderr piped to this test, which does not read it until asked to.
fn blocked() -> Wxmp {
    Wxmp::builder()
        .args(&["--token", TOKEN, "--metrics-addr", "127.0.0.1:0"])
        .unread_stderr()
        .start()
}

/// `wxmp_log_lines_dropped_total` from /metrics.
fn dropped(server: &Wxmp) -> u64 {
    let (status, body) = get(&server.metrics_addr(), "/metrics");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix("wxmp_log_lines_dropped_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no wxmp_log_lines_dropped_total in /metrics: {body}"))
}

/// A keep-alive connection speaking just enough HTTP/1.1.
struct Conn {
    reader: BufReader<TcpStream>,
    addr: String,
}

impl Conn {
    fn open(addr: &str) -> Conn {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(ANSWER_BOUND)).unwrap();
        s.set_write_timeout(Some(ANSWER_BOUND)).unwrap();
        s.set_nodelay(true).unwrap();
        Conn {
            reader: BufReader::new(s),
            addr: addr.to_owned(),
        }
    }

    /// One request and its answer, failing if the answer takes longer than [`ANSWER_BOUND`].
    fn call(&mut self, method: &str, target: &str, body: &[u8]) -> (u16, String) {
        let started = Instant::now();
        let head = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        // One write: a body sent after its head waits for the head's delayed ACK.
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        self.reader.get_mut().write_all(&request).unwrap();
        let mut status_line = String::new();
        if let Err(e) = self.reader.read_line(&mut status_line) {
            panic!(
                "no answer to {method} {target} within {ANSWER_BOUND:?} ({e}): a handler is blocked"
            );
        }
        let status = status_line
            .get(9..12)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let mut length = 0;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            if line.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).unwrap();
        let took = started.elapsed();
        assert!(
            took < ANSWER_BOUND,
            "{method} {target} took {took:?}, more than {ANSWER_BOUND:?}"
        );
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

fn get(addr: &str, target: &str) -> (u16, String) {
    Conn::open(addr).call("GET", target, b"")
}

/// [`PUSHES`] pushes over [`CONNECTIONS`] keep-alive connections, each answered 200 with a
/// reply in time.
fn push_all(addr: &str) {
    let started = Instant::now();
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let addr = addr.to_owned();
            thread::spawn(move || {
                let mut conn = Conn::open(&addr);
                for i in 0..PUSHES / CONNECTIONS {
                    let id = c * 1_000_000 + i + 1;
                    let (status, body) = conn.call(
                        "POST",
                        &signed::target(TOKEN),
                        text_xml("oBlocked", "你好", id).as_bytes(),
                    );
                    assert_eq!(status, 200, "push {id}: {body}");
                    assert!(body.contains("<xml>"), "push {id}: {body}");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    eprintln!("{PUSHES} pushes in {:?}", started.elapsed());
}

/// A `wxmp tail` that asks for pages over and over and never reads one, until `stop`.
fn slow_tail_reader(metrics: &str, stop: Arc<AtomicBool>) -> thread::JoinHandle<()> {
    let s = TcpStream::connect(metrics).unwrap();
    s.set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    thread::spawn(move || {
        let mut s = s;
        let ask = "GET /tail?after=0&history=256 HTTP/1.1\r\nHost: tail\r\n\r\n";
        while !stop.load(Ordering::Relaxed) {
            // Once the server stops reading (its answers pile up unread), writes time out.
            if s.write_all(ask.as_bytes()).is_err() {
                thread::sleep(Duration::from_millis(20));
            }
        }
    })
}

#[test]
fn a_server_whose_stderr_nobody_reads_keeps_answering_and_stops_on_sigterm() {
    let server = blocked();
    let stop_tail = Arc::new(AtomicBool::new(false));
    let tail = slow_tail_reader(&server.metrics_addr(), Arc::clone(&stop_tail));
    push_all(&server.addr);
    assert_eq!(get(&server.addr, "/healthz"), (200, "ok".into()));
    let dropped = dropped(&server);
    assert!(
        dropped > 0,
        "{PUSHES} access lines into a full pipe, yet no dropped line counted"
    );
    // The live view got every push, whatever stderr and the slow reader did.
    let (status, page) = get(&server.metrics_addr(), "/tail?history=1");
    assert_eq!(status, 200, "{page}");
    let last: u64 = page
        .split("last=")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(last >= PUSHES, "the live view has {last} lines: {page}");
    stop_tail.store(true, Ordering::Relaxed);
    tail.join().unwrap();
    // Still nobody reads stderr: the stop gives up on the queued lines, not on stopping.
    assert_eq!(server.terminate_within(STOP_BOUND).0, Some(0));
}

#[test]
fn the_lines_lost_to_an_unread_stderr_are_told_once_it_is_read_again() {
    let mut server = blocked();
    push_all(&server.addr);
    assert!(dropped(&server) > 0, "no dropped line counted");
    let stderr = server.take_stderr();
    let log = Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let log = Arc::clone(&log);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        })
    };
    let wait_for = |needle: &str| {
        wait::until_ok(
            secs(10),
            format_args!("{needle:?} in the log once stderr is read again"),
            || {
                let log = log.lock().unwrap();
                if log.contains(needle) {
                    return Ok(());
                }
                let end: Vec<_> = log.lines().rev().take(5).collect();
                Err(format!("its end:\n{}", end.join("\n")))
            },
        )
    };
    wait_for(" log lines lost: ");
    // Caught up: a request now is logged, after the lost-lines line.
    assert_eq!(get(&server.addr, "/healthz"), (200, "ok".into()));
    wait_for("GET /healthz 200");
    // Now that the writer has caught up, the count is final.
    let dropped = dropped(&server);
    assert_eq!(server.terminate_within(STOP_BOUND).0, Some(0));
    reader.join().unwrap();
    let log = log.lock().unwrap().clone();
    let told: Vec<u64> = log
        .lines()
        .filter_map(|l| l.split(" WARN ").nth(1))
        .filter_map(|l| l.split_once(" log lines lost: "))
        .map(|(n, _)| n.parse().unwrap())
        .collect();
    assert_eq!(
        told.iter().sum::<u64>(),
        dropped,
        "lost-lines lines {told:?} against {dropped} counted; the log's end:\n{}",
        log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    let (lost_at, healthz_at) = (log.find(" log lines lost: "), log.find("GET /healthz 200"));
    assert!(lost_at < healthz_at, "{log}");
    assert!(log.trim_end().ends_with(" INFO stopped"), "{log}");
}
