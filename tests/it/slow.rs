//! Slow and idle clients must not hold up anyone else: 200 of them at once against the real
//! binary while ordinary signed pushes keep being answered promptly.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use wxmp::protocol::verify::{self, Token};

use crate::binary::{http, Server};
use crate::helpers::{text_of, text_xml, NONCE, TS};

const IDLE: usize = 100;
const SLOW_BODY: usize = 50;
const SLOW_HEADERS: usize = 50;
const WORKERS: usize = 8;
const PER_WORKER: usize = 40;
/// Generous: a push normally takes well under a millisecond.
const MAX_LATENCY: Duration = Duration::from_secs(2);

#[test]
fn idle_and_trickling_clients_do_not_block_others() {
    let server = Server::start(&["--token", "slowtoken"]);
    let sig = verify::signature(&Token::new("slowtoken").unwrap(), TS, NONCE);
    let target = format!("/weixin?signature={sig}&timestamp={TS}&nonce={NONCE}");

    // Connected and silent.
    let idle: Vec<TcpStream> = (0..IDLE)
        .map(|_| TcpStream::connect(&server.addr).unwrap())
        .collect();
    // Headers sent, then the body one byte a second. Over 1 KiB: tiny_http as published read
    // such bodies on the handler threads, so these would have taken all of them.
    let mut trickling: Vec<TcpStream> = (0..SLOW_BODY)
        .map(|_| {
            let mut s = TcpStream::connect(&server.addr).unwrap();
            let head =
                format!("POST {target} HTTP/1.1\r\nHost: slow\r\nContent-Length: 4000\r\n\r\n");
            s.write_all(head.as_bytes()).unwrap();
            s
        })
        .collect();
    // The request head itself one byte a second.
    let mut head_bytes = format!("POST {target} HTTP/1.1\r\nHost: slow\r\n").into_bytes();
    head_bytes.reverse();
    trickling.extend((0..SLOW_HEADERS).map(|_| TcpStream::connect(&server.addr).unwrap()));

    let stop = Arc::new(AtomicBool::new(false));
    let trickler = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut second = 0;
            while !stop.load(Ordering::Relaxed) {
                let header_byte = head_bytes.pop().unwrap_or(b'X');
                for (i, s) in trickling.iter_mut().enumerate() {
                    let byte = if i < SLOW_BODY { b'<' } else { header_byte };
                    // The server may give up on a client; that is its right.
                    let _ = s.write_all(&[byte]);
                }
                second += 1;
                for _ in 0..10 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    thread::sleep(Duration::from_millis(100));
                }
            }
            (trickling, second)
        })
    };
    // Let every slow client be accepted and start trickling before the real traffic.
    thread::sleep(Duration::from_millis(1500));

    let started = Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (addr, target) = (server.addr.clone(), target.clone());
            thread::spawn(move || {
                let mut slowest = Duration::ZERO;
                for n in 0..PER_WORKER {
                    let id = (w * PER_WORKER + n) as u64;
                    let content = format!("ping {id}");
                    let t = Instant::now();
                    let (status, body) = http(
                        &addr,
                        "POST",
                        &target,
                        text_xml("o", &content, id).as_bytes(),
                    );
                    slowest = slowest.max(t.elapsed());
                    assert_eq!(status, 200, "{body}");
                    assert_eq!(text_of(&body), content);
                }
                slowest
            })
        })
        .collect();
    let slowest = workers
        .into_iter()
        .map(|w| w.join().unwrap())
        .max()
        .unwrap();
    let elapsed = started.elapsed();

    stop.store(true, Ordering::Relaxed);
    let (trickling, seconds) = trickler.join().unwrap();
    assert!(
        seconds >= 2,
        "the slow clients were not trickling meanwhile"
    );
    assert!(
        slowest < MAX_LATENCY,
        "a request took {slowest:?} with {} slow clients connected",
        IDLE + SLOW_BODY + SLOW_HEADERS
    );
    // Still being served after all the traffic above.
    assert_eq!(server.request("GET", "/healthz", b""), (200, "ok".into()));
    eprintln!(
        "{} pushes in {elapsed:?} (slowest {slowest:?}) beside {} idle and {} trickling clients",
        WORKERS * PER_WORKER,
        idle.len(),
        trickling.len()
    );
}
