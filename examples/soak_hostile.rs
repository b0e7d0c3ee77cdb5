//! The hostile half of `make soak` (see scripts/soak.sh): while examples/soak.rs sends normal
//! pushes and checks every answer, this sends the traffic of each finding of issue 9 in a loop,
//! one thread per kind, until a stop file appears, and checks each hostile exchange's outcome.
//!
//! ```text
//! cargo run --release --example soak_hostile -- --addr 127.0.0.1:8080 --token T \
//!     --stop-file PATH [--pid PID] [--idle 300] [--kinds smuggling,idle-flood,...]
//! ```
//!
//! Prints a table (kind, exchanges, unexpected outcomes) and the server's peak RSS and
//! descriptors while it ran; exits non-zero on any unexpected outcome.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use wxmp::protocol::verify::{self, Token};

/// Unexpected outcomes printed in full; the rest are only counted.
const SHOWN: usize = 10;

struct Config {
    addr: String,
    token: Token,
    pid: Option<u32>,
    stop_file: PathBuf,
    idle: usize,
    /// Only these kinds (by name); all when empty.
    kinds: Vec<String>,
}

impl Config {
    /// The message path with a query signed now and a nonce of its own, as WeChat signs each
    /// push (the server refuses old timestamps and reused queries).
    fn target(&self) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .to_string();
        let nonce = NEXT.fetch_add(1, Ordering::Relaxed).to_string();
        let sig = verify::signature(&self.token, &ts, &nonce);
        format!("/weixin?signature={sig}&timestamp={ts}&nonce={nonce}")
    }
}

/// One kind of hostile traffic: its name, which finding it is, and one round of it, which
/// returns `Err(what happened)` when the server did not answer as it must.
type Round = fn(&Config) -> Result<(), String>;

const KINDS: [(&str, &str, Round); 9] = [
    ("http2-and-h2c", "1", versions),
    ("idle-flood", "2", idle_flood),
    ("pipeline-unread", "3", pipeline_unread),
    ("endless-chunk-size", "4", endless_chunk_size),
    ("trickled-bodies", "5", trickled_bodies),
    ("smuggling", "7", smuggling),
    ("oversized-heads", "8", oversized_heads),
    ("control-in-method", "9", control_in_method),
    ("expect-and-upgrade", "5", expect_and_upgrade),
];

#[derive(Default)]
struct Count {
    rounds: AtomicU64,
    unexpected: AtomicU64,
}

fn main() -> ExitCode {
    let cfg = match parse_args() {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("soak_hostile: {e}");
            return ExitCode::from(2);
        }
    };
    let counts: Arc<Vec<Count>> = Arc::new(KINDS.iter().map(|_| Count::default()).collect());
    let shown = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = KINDS
        .iter()
        .enumerate()
        .filter(|(_, (name, _, _))| cfg.kinds.is_empty() || cfg.kinds.iter().any(|k| k == name))
        .map(|(i, &(name, _, round))| {
            let (cfg, counts, shown, stop) = (
                Arc::clone(&cfg),
                Arc::clone(&counts),
                Arc::clone(&shown),
                Arc::clone(&stop),
            );
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let outcome = round(&cfg);
                    counts[i].rounds.fetch_add(1, Ordering::SeqCst);
                    if let Err(what) = outcome {
                        counts[i].unexpected.fetch_add(1, Ordering::SeqCst);
                        let mut shown = shown.lock().unwrap_or_else(|e| e.into_inner());
                        if shown.len() < SHOWN {
                            shown.push(format!("{name}: {what}"));
                        }
                    }
                }
            })
        })
        .collect();

    let (mut peak_rss, mut peak_fds, mut peak_threads) = (0, 0, 0);
    while !cfg.stop_file.exists() {
        if let Some(pid) = cfg.pid {
            peak_rss = peak_rss.max(status_field(pid, "VmRSS:").unwrap_or(0));
            peak_threads = peak_threads.max(status_field(pid, "Threads:").unwrap_or(0));
            peak_fds = peak_fds
                .max(std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64));
        }
        thread::sleep(Duration::from_millis(250));
    }
    stop.store(true, Ordering::SeqCst);
    let panicked = workers.into_iter().filter_map(|w| w.join().err()).count();

    println!(
        "\n== hostile mix ({:.0}s beside the soak)",
        started.elapsed().as_secs_f64()
    );
    println!(
        "{:<20} {:>7} {:>9} {:>11}",
        "kind", "finding", "exchanges", "unexpected"
    );
    let mut unexpected = 0;
    for ((name, finding, _), count) in KINDS.iter().zip(counts.iter()) {
        let (r, u) = (
            count.rounds.load(Ordering::SeqCst),
            count.unexpected.load(Ordering::SeqCst),
        );
        unexpected += u;
        println!("{name:<20} {finding:>7} {r:>9} {u:>11}");
    }
    for line in shown.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        println!("  ! {line}");
    }
    if cfg.pid.is_some() {
        println!(
            "server while the mix ran: peak RSS {} MiB, peak {peak_fds} descriptors, peak {peak_threads} threads",
            peak_rss / 1024
        );
    }
    let ok = unexpected == 0 && panicked == 0;
    println!("hostile result: {}", if ok { "PASS" } else { "FAIL" });
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn parse_args() -> Result<Config, String> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let (mut addr, mut token, mut pid, mut stop_file, mut idle) = (None, None, None, None, 300);
    let mut kinds = Vec::new();
    fn value(p: &mut lexopt::Parser) -> Result<String, String> {
        p.value()
            .map_err(|e| e.to_string())?
            .into_string()
            .map_err(|_| "arguments must be UTF-8".to_owned())
    }
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Long("addr") => addr = Some(value(&mut p)?),
            Long("token") => token = Some(value(&mut p)?),
            Long("pid") => pid = Some(value(&mut p)?.parse().map_err(|_| "--pid: not a number")?),
            Long("stop-file") => stop_file = Some(PathBuf::from(value(&mut p)?)),
            Long("idle") => idle = value(&mut p)?.parse().map_err(|_| "--idle: not a number")?,
            Long("kinds") => {
                kinds = value(&mut p)?.split(',').map(str::to_owned).collect();
                if let Some(k) = kinds.iter().find(|k| !KINDS.iter().any(|(n, _, _)| n == k)) {
                    return Err(format!("--kinds: no kind {k:?}"));
                }
            }
            other => return Err(other.unexpected().to_string()),
        }
    }
    let token = Token::new(&token.ok_or("--token is required")?).map_err(|e| e.to_string())?;
    Ok(Config {
        addr: addr.ok_or("--addr is required")?,
        token,
        pid,
        stop_file: stop_file.ok_or("--stop-file is required")?,
        idle,
        kinds,
    })
}

fn status_field(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn connect(cfg: &Config) -> Result<TcpStream, String> {
    let s = TcpStream::connect(&cfg.addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .and_then(|()| s.set_write_timeout(Some(Duration::from_secs(10))))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

/// Sends `raw` and reads until the server closes the connection.
fn exchange(cfg: &Config, raw: &[u8]) -> Result<String, String> {
    let mut s = connect(cfg)?;
    s.write_all(raw).map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .map_err(|e| format!("no answer and close: {e}"))?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The status codes of the responses in `raw`, in order.
fn statuses(raw: &str) -> Vec<u16> {
    raw.match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| raw.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

fn expect_statuses(cfg: &Config, raw: &[u8], expected: &[u16]) -> Result<(), String> {
    let answer = exchange(cfg, raw)?;
    let got = statuses(&answer);
    if got == expected {
        Ok(())
    } else {
        let shown: String = String::from_utf8_lossy(raw).chars().take(60).collect();
        Err(format!("{shown:?} got {got:?}, expected {expected:?}"))
    }
}

fn versions(cfg: &Config) -> Result<(), String> {
    for raw in [
        &b"GET / HTTP/2.0\r\n\r\n"[..],
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET / HTTP/3.0\r\nHost: x\r\n\r\n",
    ] {
        expect_statuses(cfg, raw, &[505])?;
    }
    Ok(())
}

/// Finding 2's traffic, below the cap: connections that say nothing, held for two seconds.
fn idle_flood(cfg: &Config) -> Result<(), String> {
    let held: Vec<TcpStream> = (0..cfg.idle)
        .map(|_| connect(cfg))
        .collect::<Result<_, _>>()?;
    thread::sleep(Duration::from_secs(2));
    for s in &held {
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 16];
        if let Ok(n) = (&*s).read(&mut buf) {
            if buf[..n].starts_with(b"HTTP/1.1 503") {
                return Err("an idle connection below the cap was refused".into());
            }
        }
    }
    Ok(())
}

/// Pipelined requests, never reading the answers, until TCP flow control stops the writer;
/// held a moment, then dropped.
fn pipeline_unread(cfg: &Config) -> Result<(), String> {
    let mut s = connect(cfg)?;
    s.set_write_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| e.to_string())?;
    let batch = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".repeat(1000);
    let mut written = 0;
    while s.write_all(&batch).is_ok() {
        written += batch.len();
        if written > 64 << 20 {
            return Err(
                "64 MiB of pipelined requests were read without an answer being read".into(),
            );
        }
    }
    thread::sleep(Duration::from_secs(1));
    Ok(())
}

fn endless_chunk_size(cfg: &Config) -> Result<(), String> {
    let mut s = connect(cfg)?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1",
        cfg.target()
    );
    s.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    let digits = vec![b'0'; 64 * 1024];
    let mut sent = 0;
    while sent < 16 << 20 && s.write_all(&digits).is_ok() {
        sent += digits.len();
    }
    if sent >= 16 << 20 {
        return Err("16 MiB of one chunk-size line were read".into());
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    // The 400 may be lost to the reset that closing on unread input causes; what matters is
    // that the server stopped reading.
    if !out.is_empty() && !out.starts_with(b"HTTP/1.1 400") {
        return Err(format!(
            "answered {:?}",
            String::from_utf8_lossy(&out[..out.len().min(40)])
        ));
    }
    Ok(())
}

/// Chunked, 100-continue and upgrade bodies trickled a byte every 100 ms for three seconds,
/// then abandoned.
fn trickled_bodies(cfg: &Config) -> Result<(), String> {
    let heads = [
        format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n",
            cfg.target()
        ),
        format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1000\r\n\r\n",
            cfg.target()
        ),
        format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: x\r\nContent-Length: 1000\r\n\r\n",
            cfg.target()
        ),
    ];
    let mut conns = Vec::new();
    for head in heads.iter().cycle().take(8) {
        let mut s = connect(cfg)?;
        s.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
        conns.push(s);
    }
    for _ in 0..30 {
        for s in &mut conns {
            let _ = s.write_all(b"<");
        }
        thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Expect: 100-continue and Connection: upgrade sent properly: answered like any push.
fn expect_and_upgrade(cfg: &Config) -> Result<(), String> {
    for extra in [
        "Expect: 100-continue\r\nConnection: close\r\n",
        "Connection: upgrade\r\nUpgrade: x\r\n",
    ] {
        let raw =
            format!("POST /missing HTTP/1.1\r\nHost: x\r\n{extra}Content-Length: 5\r\n\r\n<xml>");
        let answer = exchange(cfg, raw.as_bytes())?;
        let got: Vec<u16> = statuses(&answer)
            .into_iter()
            .filter(|&s| s != 100)
            .collect();
        if got != [404] {
            return Err(format!("{extra:?} got {got:?}"));
        }
    }
    Ok(())
}

fn smuggling(cfg: &Config) -> Result<(), String> {
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let chunk = format!("{:x}\r\n{smuggled}\r\n0\r\n\r\n", smuggled.len());
    let last = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let n = smuggled.len();
    let cases: [(String, &[u16]); 7] = [
        (format!("POST /missing HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}{last}"), &[404, 200]),
        (format!("PUT /healthz HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}{last}"), &[405, 200]),
        (format!("GET /healthz HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}{last}"), &[200, 200]),
        (format!("POST /healthz HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: {n}\r\n\r\n{smuggled}"), &[400]),
        (format!("POST /healthz HTTP/1.1\r\nContent-Length: 0, {n}\r\n\r\n{smuggled}"), &[400]),
        (format!("POST /healthz HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n{chunk}"), &[400]),
        (format!("POST /healthz HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n{chunk}"), &[400]),
    ];
    for (raw, expected) in cases {
        expect_statuses(cfg, raw.as_bytes(), expected)?;
    }
    Ok(())
}

fn oversized_heads(cfg: &Config) -> Result<(), String> {
    let long = "a".repeat(9 * 1024);
    let many: String = (0..101).map(|i| format!("X-{i}: y\r\n")).collect();
    expect_statuses(
        cfg,
        format!("GET /{long} HTTP/1.1\r\n\r\n").as_bytes(),
        &[414],
    )?;
    expect_statuses(
        cfg,
        format!("GET / HTTP/1.1\r\nX: {long}\r\n\r\n").as_bytes(),
        &[431],
    )?;
    expect_statuses(
        cfg,
        format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes(),
        &[431],
    )?;
    expect_statuses(cfg, b"GET / HTTP/1.1\r\nX: caf\xc3\xa9\r\n\r\n", &[400])
}

fn control_in_method(cfg: &Config) -> Result<(), String> {
    for method in ["X\nFORGED", "X\rFORGED", "X\x1b[2KFORGED"] {
        let raw = format!("{method} /missing HTTP/1.1\r\nHost: x\r\n\r\n");
        expect_statuses(cfg, raw.as_bytes(), &[400])?;
    }
    Ok(())
}
