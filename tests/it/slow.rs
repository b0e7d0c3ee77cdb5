//! Slow and idle clients must not hold up anyone else: 200 of them at once against the real
//! binary while ordinary signed pushes keep being answered. Every push must be answered; how
//! fast is for `make bench`, not for a test on a shared machine.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::helpers::{text_of, text_xml};
use crate::kit::binary::Wxmp;
use crate::kit::http::request as http;
use crate::kit::signed;
use crate::kit::wait::{self, secs};

const IDLE: usize = 100;
const SLOW_BODY: usize = 50;
const SLOW_HEADERS: usize = 50;
const WORKERS: usize = 8;
const PER_WORKER: usize = 40;

#[test]
fn idle_and_trickling_clients_do_not_block_others() {
    let server = Wxmp::start(&["--token", "slowtoken"]);
    // For the clients that never finish a request; each worker's push is signed afresh.
    let target = signed::target("slowtoken");

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
    let rounds = Arc::new(AtomicUsize::new(0));
    let trickler = {
        let (stop, rounds) = (Arc::clone(&stop), Arc::clone(&rounds));
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
                rounds.store(second, Ordering::SeqCst);
                // The trickle itself: one byte a second per client.
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
    // Every slow client has sent its first byte before the real traffic starts.
    wait::until(secs(30), "the trickler's first round", || {
        rounds.load(Ordering::SeqCst) >= 1
    });

    let started = Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let addr = server.addr.clone();
            thread::spawn(move || {
                let mut served = 0;
                for n in 0..PER_WORKER {
                    let id = (w * PER_WORKER + n) as u64;
                    let content = format!("ping {id}");
                    let (status, body) = http(
                        &addr,
                        "POST",
                        &signed::target("slowtoken"),
                        text_xml("o", &content, id).as_bytes(),
                    );
                    assert_eq!(status, 200, "{body}");
                    assert_eq!(text_of(&body), content);
                    served += 1;
                }
                served
            })
        })
        .collect();
    let served: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let elapsed = started.elapsed();

    stop.store(true, Ordering::Relaxed);
    let (trickling, seconds) = trickler.join().unwrap();
    assert_eq!(
        served,
        WORKERS * PER_WORKER,
        "every push is answered beside {} slow clients",
        IDLE + SLOW_BODY + SLOW_HEADERS
    );
    // Still being served after all the traffic above.
    assert_eq!(server.request("GET", "/healthz", b""), (200, "ok".into()));
    eprintln!(
        "{served} pushes in {elapsed:?} beside {} idle and {} trickling clients ({seconds} s of trickle)",
        idle.len(),
        trickling.len()
    );
}
