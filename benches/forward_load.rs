//! The forwarding workloads of `scripts/bench.sh`: the user's endpoint, and WeChat holding
//! pushes on it.
//!
//! `forward_load endpoint DELAY_MS`: an HTTP endpoint on a free loopback port (it prints
//! `listening on http://127.0.0.1:PORT/wechat`) that answers every forwarded push after
//! DELAY_MS with a text echoing its `Content`, over keep-alive connections. Every second in
//! which something changed it prints `connections C requests R`: the connections it accepted
//! and the requests it answered so far (how well wxmp reuses its connections).
//!
//! `forward_load hold ADDR TOKEN N SECONDS [PATH]`: N loops that each behave like WeChat for
//! `hold` pushes to PATH (default `/weixin`): send one, abandon it after 5 s without an answer
//! and send it again, three tries in all, then the next push; for SECONDS. Prints the pushes
//! and attempts it made.
//!
//! `forward_load storm TOKEN SECONDS CONNS ADDR...`: a retry storm on several instances: CONNS
//! loops, each with a keep-alive connection to every ADDR, send each push (signed once) to all
//! of them at once, as WeChat's attempts would land on different instances, and check that
//! every answer is 200, the same, and the endpoint's echo. Prints `storm: P pushes R requests
//! S seconds E errors M differing F fallbacks`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use wxmp::protocol::message::{Kind, Message};
use wxmp::protocol::verify::{self, Token};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["endpoint", delay] => endpoint(Duration::from_millis(delay.parse().unwrap_or(0))),
        ["hold", addr, token, n, secs, rest @ ..] if rest.len() <= 1 => hold(
            addr,
            token,
            n.parse().unwrap_or(200),
            Duration::from_secs(secs.parse().unwrap_or(10)),
            rest.first().copied().unwrap_or("/weixin"),
        ),
        ["storm", token, secs, conns, addrs @ ..] if !addrs.is_empty() => storm(
            token,
            Duration::from_secs(secs.parse().unwrap_or(10)),
            conns.parse().unwrap_or(50),
            addrs,
        ),
        _ => {
            eprintln!(
                "usage: forward_load endpoint DELAY_MS | forward_load hold ADDR TOKEN N SECONDS [PATH] | forward_load storm TOKEN SECONDS CONNS ADDR..."
            );
            std::process::exit(2);
        }
    }
}

fn endpoint(delay: Duration) {
    let listener = match TcpListener::bind("127.0.0.1:0") {
        Ok(l) => l,
        Err(e) => {
            eprintln!("endpoint: {e}");
            std::process::exit(1);
        }
    };
    if let Ok(addr) = listener.local_addr() {
        println!("listening on http://{addr}/wechat");
    }
    let connections = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    {
        let (connections, requests) = (Arc::clone(&connections), Arc::clone(&requests));
        thread::spawn(move || {
            let mut last = (0, 0);
            loop {
                thread::sleep(Duration::from_secs(1));
                let now = (
                    connections.load(Ordering::Relaxed),
                    requests.load(Ordering::Relaxed),
                );
                if now != last {
                    println!("connections {} requests {}", now.0, now.1);
                    last = now;
                }
            }
        });
    }
    for stream in listener.incoming().flatten() {
        let _ = stream.set_nodelay(true);
        connections.fetch_add(1, Ordering::Relaxed);
        let requests = Arc::clone(&requests);
        thread::spawn(move || serve(stream, delay, &requests));
    }
}

/// One keep-alive connection: read a request, answer it, until the peer closes.
fn serve(stream: TcpStream, delay: Duration, requests: &AtomicU64) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let h = line.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let content = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["Content"].as_str().map(str::to_owned))
            .unwrap_or_default();
        thread::sleep(delay);
        let answer = serde_json::json!({"MsgType": "text", "Content": content}).to_string();
        // One write: a head and a body in two would meet Nagle's algorithm and the client's
        // delayed ACK, 40 ms per answer.
        let out = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if writer.write_all(out.as_bytes()).is_err() {
            return;
        }
        requests.fetch_add(1, Ordering::Relaxed);
    }
}

fn hold(addr: &str, token: &str, n: usize, secs: Duration, path: &str) {
    let Ok(token) = Token::new(token) else {
        eprintln!("hold: bad token");
        std::process::exit(2);
    };
    let pushes = Arc::new(AtomicU64::new(0));
    let attempts = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + secs;
    let loops: Vec<_> = (0..n)
        .map(|i| {
            let (addr, token, path) = (addr.to_owned(), token.clone(), path.to_owned());
            let (pushes, attempts) = (Arc::clone(&pushes), Arc::clone(&attempts));
            thread::spawn(move || {
                let mut k = 0u64;
                while Instant::now() < until {
                    k += 1;
                    let msg_id = 6_000_000_000_000_000 + (i as u64) * 1_000_000 + k;
                    let body = Message::new(
                        "gh_7f083739789a",
                        "oia2TjjewbmiOUlr6X-1crbLOvLw",
                        1_700_000_000,
                        Kind::Text {
                            content: Some("hold".into()),
                        },
                    )
                    .with_msg_id(msg_id)
                    .to_xml();
                    // Signed now, with a nonce of its own, as WeChat signs each push; its
                    // retries below resend the same query and body, as WeChat's do.
                    let ts = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs())
                        .to_string();
                    let nonce = msg_id.to_string();
                    let target = format!(
                        "{path}?signature={}&timestamp={ts}&nonce={nonce}",
                        verify::signature(&token, &ts, &nonce)
                    );
                    pushes.fetch_add(1, Ordering::Relaxed);
                    for _ in 0..3 {
                        attempts.fetch_add(1, Ordering::Relaxed);
                        if post(&addr, &target, &body).is_some() {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    for l in loops {
        let _ = l.join();
    }
    println!(
        "hold: {} pushes, {} attempts over {} loops",
        pushes.load(Ordering::Relaxed),
        attempts.load(Ordering::Relaxed),
        n
    );
}

/// One attempt as WeChat makes it: `None` when no answer came within 5 s (abandoned).
fn post(addr: &str, target: &str, body: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let head = format!(
        "POST {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body.as_bytes()).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    String::from_utf8_lossy(&out)
        .get(9..12)
        .and_then(|c| c.parse().ok())
}

fn storm(token: &str, secs: Duration, conns: usize, addrs: &[&str]) {
    let Ok(token) = Token::new(token) else {
        eprintln!("storm: bad token");
        std::process::exit(2);
    };
    let counts = Arc::new([
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
    ]);
    let started = Instant::now();
    let until = started + secs;
    let loops: Vec<_> = (0..conns)
        .map(|i| {
            let token = token.clone();
            let addrs: Vec<String> = addrs.iter().map(|a| (*a).to_owned()).collect();
            let counts = Arc::clone(&counts);
            thread::spawn(move || storm_loop(i as u64, &token, &addrs, until, &counts))
        })
        .collect();
    for l in loops {
        let _ = l.join();
    }
    let [pushes, requests, errors, differing, fallbacks] = &*counts;
    println!(
        "storm: {} pushes {} requests {:.3} seconds {} errors {} differing {} fallbacks",
        pushes.load(Ordering::Relaxed),
        requests.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
        errors.load(Ordering::Relaxed),
        differing.load(Ordering::Relaxed),
        fallbacks.load(Ordering::Relaxed)
    );
}

/// One loop of the storm: counts pushes, requests, errors, pushes answered differently, and
/// pushes answered with something other than the endpoint's echo.
fn storm_loop(i: u64, token: &Token, addrs: &[String], until: Instant, counts: &[AtomicU64; 5]) {
    let connect = |a: &String| {
        let s = TcpStream::connect(a).ok()?;
        let _ = s.set_nodelay(true);
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        Some(BufReader::new(s))
    };
    let mut streams: Vec<Option<BufReader<TcpStream>>> = addrs.iter().map(connect).collect();
    let mut k = 0u64;
    while Instant::now() < until {
        k += 1;
        // 16 digits, as WeChat's, apart from the wrk scripts' (7…) and hold's (6…): a MsgId
        // another row answered would be a retry, answered from the store without a call.
        let msg_id = 8_000_000_000_000_000 + i * 10_000_000 + k;
        let body = Message::new(
            "gh_7f083739789a",
            "oia2TjjewbmiOUlr6X-1crbLOvLw",
            1_700_000_000,
            Kind::Text {
                content: Some("storm".into()),
            },
        )
        .with_msg_id(msg_id)
        .to_xml();
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .to_string();
        let nonce = msg_id.to_string();
        let target = format!(
            "/weixin?signature={}&timestamp={ts}&nonce={nonce}",
            verify::signature(token, &ts, &nonce)
        );
        let request = format!(
            "POST {target} HTTP/1.1\r\nHost: wxmp\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        counts[0].fetch_add(1, Ordering::Relaxed);
        // All attempts written first, then read: they are in flight together.
        for (s, a) in streams.iter_mut().zip(addrs) {
            if s.is_none() {
                *s = connect(a);
            }
            if let Some(st) = s {
                if st.get_mut().write_all(request.as_bytes()).is_err() {
                    *s = None;
                }
            }
        }
        let mut answers = Vec::with_capacity(addrs.len());
        for s in &mut streams {
            counts[1].fetch_add(1, Ordering::Relaxed);
            let got = s.as_mut().and_then(read_answer);
            if got.is_none() {
                *s = None;
                counts[2].fetch_add(1, Ordering::Relaxed);
            }
            answers.push(got);
        }
        let first = answers.first().cloned().flatten();
        if answers.iter().any(|a| a.is_some() && *a != first) {
            counts[3].fetch_add(1, Ordering::Relaxed);
        }
        // The endpoint echoes the text: anything else is a fallback (no call, or a failed one).
        let echoed = |a: &Vec<u8>| String::from_utf8_lossy(a).contains("[CDATA[storm]]");
        if answers.iter().flatten().any(|a| !echoed(a)) {
            counts[4].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One keep-alive answer: its body, if its status is 200.
fn read_answer(s: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if s.read_line(&mut line).ok()? == 0 || head.len() > 16 * 1024 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let ok = head.get(9..12) == Some("200");
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    s.read_exact(&mut body).ok()?;
    ok.then_some(body)
}
