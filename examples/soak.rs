//! Soak load generator for `make soak` (see scripts/soak.sh): many keep-alive connections send a
//! mix of valid plaintext and safe-mode pushes, retries of earlier pushes and every kind of bad
//! input, check every answer exactly, and watch the server's memory.
//!
//! ```text
//! cargo run --release --example soak -- --addr 127.0.0.1:8080 --token T \
//!     --aes-key KEY --appid wx... [--pid PID] [--requests 1000000] [--connections 50]
//! ```
//!
//! Exits non-zero on any 5xx, any wrong answer or I/O failure, or RSS growing more than 10%
//! between the first 100 000 requests and the end (judged only on runs of 1 000 000 or more).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wxmp::protocol::crypto::AesKey;
use wxmp::protocol::envelope::SafeMode;
use wxmp::protocol::message::{Kind as MsgKind, Message};
use wxmp::protocol::reply::{Rendered, Reply};
use wxmp::protocol::verify::{self, Token};
use wxmp::server::routes::MAX_BODY;

const ACCOUNT: &str = "gh_soak";
const RSS_GROWTH_LIMIT: f64 = 0.10;
/// RSS is measured after this many requests and at the end; with scripts/soak.sh's cache size
/// the retry cache has filled and turned over by then.
const RSS_CHECKPOINT: u64 = 100_000;
/// Retries go to pushes answered at most this long ago.
const RETRY_WINDOW: Duration = Duration::from_millis(500);
/// Answers slower than this are counted (a stalled server thread or a dropped SYN).
const SLOW: Duration = Duration::from_secs(1);
/// Mismatches printed in full; the rest are only counted.
const SHOWN_MISMATCHES: usize = 20;

/// What a request is, for the per-kind counts. The order is the order of the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Weather,
    ControlChars,
    Safe,
    Retry,
    TooLarge,
    TooLargeDeclared,
    NotXml,
    Truncated,
    Empty,
    InvalidUtf8,
    NoMsgType,
    Doctype,
    BadSignature,
    NoSignature,
    BadMsgSignature,
    WrongMethod,
    UnknownPath,
}

const KINDS: [Kind; 18] = [
    Kind::Plain,
    Kind::Weather,
    Kind::ControlChars,
    Kind::Safe,
    Kind::Retry,
    Kind::TooLarge,
    Kind::TooLargeDeclared,
    Kind::NotXml,
    Kind::Truncated,
    Kind::Empty,
    Kind::InvalidUtf8,
    Kind::NoMsgType,
    Kind::Doctype,
    Kind::BadSignature,
    Kind::NoSignature,
    Kind::BadMsgSignature,
    Kind::WrongMethod,
    Kind::UnknownPath,
];

/// Per mille of requests of each kind (sums to 1000).
fn pick(roll: u64) -> Kind {
    const SHARES: [(Kind, u64); 18] = [
        (Kind::Plain, 360),
        (Kind::Weather, 20),
        (Kind::ControlChars, 30),
        (Kind::Safe, 200),
        (Kind::Retry, 170),
        (Kind::TooLarge, 1),
        (Kind::TooLargeDeclared, 4),
        (Kind::NotXml, 20),
        (Kind::Truncated, 20),
        (Kind::Empty, 15),
        (Kind::InvalidUtf8, 20),
        (Kind::NoMsgType, 20),
        (Kind::Doctype, 20),
        (Kind::BadSignature, 20),
        (Kind::NoSignature, 15),
        (Kind::BadMsgSignature, 20),
        (Kind::WrongMethod, 15),
        (Kind::UnknownPath, 30),
    ];
    let mut r = roll % 1000;
    for (kind, share) in SHARES {
        if r < share {
            return kind;
        }
        r -= share;
    }
    Kind::Plain
}

/// What a correct answer looks like.
#[derive(Debug, Clone)]
enum Expect {
    Status(u16),
    /// A plaintext text reply to `user` saying `content`.
    Text {
        user: String,
        content: String,
    },
    /// The same, encrypted and signed.
    SafeText {
        user: String,
        content: String,
    },
    /// Byte for byte the answer to the first attempt.
    Same(Vec<u8>),
}

struct Req {
    kind: Kind,
    method: &'static str,
    target: String,
    body: Vec<u8>,
    /// A Content-Length to claim instead of the body's (`TooLargeDeclared`).
    declared: Option<u64>,
    expect: Expect,
}

/// A valid push that was answered correctly, kept to send again as a retry.
struct Sent {
    at: Instant,
    method: &'static str,
    target: String,
    body: Vec<u8>,
    answer: Vec<u8>,
}

struct Resp {
    status: u16,
    close: bool,
    body: Vec<u8>,
}

struct Config {
    addr: String,
    token: Token,
    safe: SafeMode,
    pid: Option<u32>,
    requests: u64,
    connections: usize,
}

#[derive(Default)]
struct Totals {
    by_kind: [u64; KINDS.len()],
    five_xx: u64,
    mismatches: u64,
    io_errors: u64,
    reconnects: u64,
    /// 413s that did not say `Connection: close` (see the `send` comment).
    unannounced_close: u64,
    max_latency: Duration,
    /// Requests slower than [`SLOW`].
    slow: u64,
    shown: Vec<String>,
}

fn main() -> ExitCode {
    let cfg = match parse_args() {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::from(2);
        }
    };
    let checkpoint = RSS_CHECKPOINT.min(cfg.requests / 10).max(1);
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let rss_at_checkpoint = Arc::new(Mutex::new(None));
    let totals = Arc::new(Mutex::new(Totals::default()));
    // A different MsgId range each run, so a server left running never answers from its cache.
    let run_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        % 100_000;
    let started = Instant::now();
    println!(
        "soak: {} requests over {} connections to {}",
        cfg.requests, cfg.connections, cfg.addr
    );

    let workers: Vec<_> = (0..cfg.connections)
        .map(|w| {
            let (cfg, next, done) = (Arc::clone(&cfg), Arc::clone(&next), Arc::clone(&done));
            let (rss, totals) = (Arc::clone(&rss_at_checkpoint), Arc::clone(&totals));
            thread::spawn(move || {
                let mut worker = Worker::new(&cfg, w as u64, run_id);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= cfg.requests {
                        break;
                    }
                    worker.one(i);
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if n == checkpoint || n % RSS_CHECKPOINT == 0 {
                        let now = cfg.pid.and_then(rss_kib);
                        if n == checkpoint {
                            *rss.lock().unwrap() = now;
                        }
                        println!(
                            "soak: {n} done in {:.1}s, server RSS {} KiB",
                            started.elapsed().as_secs_f64(),
                            now.map_or("?".into(), |k| k.to_string())
                        );
                    }
                }
                worker.merge_into(&mut totals.lock().unwrap());
            })
        })
        .collect();
    for w in workers {
        if w.join().is_err() {
            eprintln!("soak: a worker panicked");
            return ExitCode::FAILURE;
        }
    }
    let elapsed = started.elapsed();
    let rss_end = cfg.pid.and_then(rss_kib);
    let rss_start = *rss_at_checkpoint.lock().unwrap();
    let t = totals.lock().unwrap();
    report(&cfg, &t, elapsed, checkpoint, rss_start, rss_end)
}

fn report(
    cfg: &Config,
    t: &Totals,
    elapsed: Duration,
    checkpoint: u64,
    rss_start: Option<u64>,
    rss_end: Option<u64>,
) -> ExitCode {
    let total: u64 = t.by_kind.iter().sum();
    println!("\n== soak summary");
    println!(
        "requests: {total} in {:.1}s ({:.0}/s), max latency {} ms, {} over {} s, reconnects {}",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        t.max_latency.as_millis(),
        t.slow,
        SLOW.as_secs(),
        t.reconnects
    );
    for (kind, n) in KINDS.iter().zip(t.by_kind) {
        println!("  {:<18} {n}", format!("{kind:?}"));
    }
    println!("5xx: {}", t.five_xx);
    println!("wrong answers: {}", t.mismatches);
    println!("I/O errors: {}", t.io_errors);
    if t.unannounced_close > 0 {
        println!(
            "warning: {} of the 413 answers lacked `Connection: close`",
            t.unannounced_close
        );
    }
    for line in &t.shown {
        println!("  ! {line}");
    }
    let mut ok = t.five_xx == 0 && t.mismatches == 0 && t.io_errors == 0 && total == cfg.requests;
    match (rss_start, rss_end) {
        (Some(a), Some(b)) => {
            let growth = (b as f64 - a as f64) / a as f64;
            println!(
                "RSS: {a} KiB after {checkpoint}, {b} KiB at the end ({:+.1}%)",
                growth * 100.0
            );
            if checkpoint < RSS_CHECKPOINT {
                println!("  (not judged: the run is too short to warm the retry cache)");
            } else if growth > RSS_GROWTH_LIMIT {
                println!("RSS grew more than {:.0}%", RSS_GROWTH_LIMIT * 100.0);
                ok = false;
            }
        }
        _ if cfg.pid.is_some() => {
            println!("RSS: could not read /proc/PID/status");
            ok = false;
        }
        _ => println!("RSS: not checked (no --pid)"),
    }
    println!("result: {}", if ok { "PASS" } else { "FAIL" });
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn parse_args() -> Result<Config, String> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let (mut addr, mut token, mut key, mut app_id, mut pid) = (None, None, None, None, None);
    let (mut requests, mut connections) = (1_000_000u64, 50usize);
    let err = |e: lexopt::Error| e.to_string();
    fn value(p: &mut lexopt::Parser) -> Result<String, String> {
        p.value()
            .map_err(|e| e.to_string())?
            .into_string()
            .map_err(|_| "arguments must be UTF-8".to_owned())
    }
    while let Some(arg) = p.next().map_err(err)? {
        match arg {
            Long("addr") => addr = Some(value(&mut p)?),
            Long("token") => token = Some(value(&mut p)?),
            Long("aes-key") => key = Some(value(&mut p)?),
            Long("appid") => app_id = Some(value(&mut p)?),
            Long("pid") => pid = Some(value(&mut p)?.parse().map_err(|_| "--pid: not a number")?),
            Long("requests") => {
                requests = value(&mut p)?
                    .parse()
                    .map_err(|_| "--requests: not a number")?
            }
            Long("connections") => {
                connections = value(&mut p)?
                    .parse()
                    .map_err(|_| "--connections: not a number")?
            }
            other => return Err(other.unexpected().to_string()),
        }
    }
    let need = |v: Option<String>, flag: &str| v.ok_or(format!("{flag} is required"));
    Ok(Config {
        addr: need(addr, "--addr")?,
        token: Token::new(&need(token, "--token")?).map_err(|e| e.to_string())?,
        safe: SafeMode {
            key: AesKey::from_encoding_aes_key(&need(key, "--aes-key")?)
                .map_err(|e| e.to_string())?,
            app_id: need(app_id, "--appid")?,
        },
        pid,
        requests,
        connections: connections.max(1),
    })
}

/// The server's resident set size in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// splitmix64: a cheap, reproducible spread of request numbers over kinds and contents.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

struct Worker<'a> {
    cfg: &'a Config,
    id: u64,
    run_id: u64,
    conn: Option<Conn>,
    /// Recent valid pushes and their answers, for retries.
    history: VecDeque<Sent>,
    totals: Totals,
}

impl<'a> Worker<'a> {
    fn new(cfg: &'a Config, id: u64, run_id: u64) -> Worker<'a> {
        Worker {
            cfg,
            id,
            run_id,
            conn: None,
            history: VecDeque::new(),
            totals: Totals::default(),
        }
    }

    fn one(&mut self, i: u64) {
        let req = self.build(i);
        let started = Instant::now();
        let result = self.send(&req);
        let took = started.elapsed();
        self.totals.max_latency = self.totals.max_latency.max(took);
        if took > SLOW {
            self.totals.slow += 1;
        }
        let kind_ix = KINDS.iter().position(|k| *k == req.kind).unwrap_or(0);
        self.totals.by_kind[kind_ix] += 1;
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                self.totals.io_errors += 1;
                self.note(format!("#{i} {:?}: I/O error: {e}", req.kind));
                return;
            }
        };
        if resp.status >= 500 {
            self.totals.five_xx += 1;
        }
        match check(self.cfg, &req.expect, &resp) {
            Ok(()) => {
                if matches!(req.expect, Expect::Text { .. } | Expect::SafeText { .. }) {
                    if self.history.len() == 64 {
                        self.history.pop_front();
                    }
                    self.history.push_back(Sent {
                        at: Instant::now(),
                        method: req.method,
                        target: req.target,
                        body: req.body,
                        answer: resp.body,
                    });
                }
            }
            Err(why) => {
                self.totals.mismatches += 1;
                self.note(format!("#{i} {:?}: {why}", req.kind));
            }
        }
    }

    fn note(&mut self, line: String) {
        if self.totals.shown.len() < SHOWN_MISMATCHES {
            self.totals.shown.push(line);
        }
    }

    fn merge_into(self, t: &mut Totals) {
        for (a, b) in t.by_kind.iter_mut().zip(self.totals.by_kind) {
            *a += b;
        }
        t.five_xx += self.totals.five_xx;
        t.mismatches += self.totals.mismatches;
        t.io_errors += self.totals.io_errors;
        t.reconnects += self.totals.reconnects;
        t.unannounced_close += self.totals.unannounced_close;
        t.max_latency = t.max_latency.max(self.totals.max_latency);
        t.slow += self.totals.slow;
        let room = SHOWN_MISMATCHES.saturating_sub(t.shown.len());
        t.shown.extend(self.totals.shown.into_iter().take(room));
    }

    /// Sends one request, reconnecting once if a kept-alive connection turns out to be closed.
    fn send(&mut self, req: &Req) -> std::io::Result<Resp> {
        let fresh = self.conn.is_none();
        let result = self.try_send(req);
        let result = match result {
            Err(_) if !fresh => {
                self.conn = None;
                self.try_send(req)
            }
            other => other,
        };
        // The server drops the connection after a 413 whose body it did not read, whether or
        // not the response says `Connection: close`, so never reuse one.
        match &result {
            Ok(r) if r.status == 413 && !r.close => {
                self.totals.unannounced_close += 1;
                self.conn = None;
            }
            Ok(r) if !r.close => {}
            _ => self.conn = None,
        }
        result
    }

    fn try_send(&mut self, req: &Req) -> std::io::Result<Resp> {
        if self.conn.is_none() {
            self.conn = Some(Conn::open(&self.cfg.addr)?);
            self.totals.reconnects += 1;
        }
        let conn = self.conn.as_mut().expect("just opened");
        conn.roundtrip(req)
    }

    fn build(&mut self, i: u64) -> Req {
        let roll = mix(i);
        let mut kind = pick(roll);
        // A retry must find its answer still cached; the soak server's cache holds only a couple
        // of seconds of this traffic (see scripts/soak.sh), so a worker that stalled starts over.
        while self
            .history
            .front()
            .is_some_and(|s| s.at.elapsed() > RETRY_WINDOW)
        {
            self.history.pop_front();
        }
        if kind == Kind::Retry && self.history.is_empty() {
            kind = Kind::Plain;
        }
        let user = format!("o_soak_{}", roll % 997);
        let msg_id = self.run_id * 10_000_000_000 + i;
        // Signed now, with a nonce no other request of the run has (the MsgId is unique), as
        // WeChat signs each push: the server refuses old timestamps and reused queries.
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .to_string();
        let nonce = msg_id.to_string();
        let signed = format!(
            "/weixin?signature={}&timestamp={ts}&nonce={nonce}",
            verify::signature(&self.cfg.token, &ts, &nonce)
        );
        let content = format!(
            "soak {i} from worker {}: 你好 <&> ]]> {}",
            self.id,
            "x".repeat((roll % 200) as usize)
        );
        let text = |content: &str| Expect::Text {
            user: user.clone(),
            content: content.to_owned(),
        };
        let (mut method, mut target, mut declared) = ("POST", signed.clone(), None);
        let (body, expect) = match kind {
            Kind::Plain => (text_xml(&user, &content, msg_id), text(&content)),
            Kind::Weather => (text_xml(&user, "天气", msg_id), text("北京天气挺好的！")),
            Kind::ControlChars => {
                // Built by hand: push_cdata would drop the characters under test.
                let raw = format!("ctl\u{1d}a\u{10}b\u{0}\u{ffff} {i}");
                let xml = String::from_utf8(text_xml(&user, "@", msg_id)).expect("UTF-8");
                let xml = xml.replace("[@]", &format!("[{raw}]"));
                (xml.into_bytes(), text(&format!("ctlab {i}")))
            }
            Kind::Safe | Kind::BadMsgSignature => {
                let xml = text_xml(&user, &content, msg_id);
                let random = (u128::from(roll) | u128::from(i) << 64).to_le_bytes();
                let xml = String::from_utf8(xml).expect("built from strings");
                let sealed = self
                    .cfg
                    .safe
                    .seal(&self.cfg.token, &xml, &ts, &nonce, &random);
                let mut msg_sig = sealed.msg_signature.clone();
                let expect = if kind == Kind::Safe {
                    Expect::SafeText {
                        user: user.clone(),
                        content,
                    }
                } else {
                    msg_sig =
                        if msg_sig.starts_with('0') { "1" } else { "0" }.to_owned() + &msg_sig[1..];
                    Expect::Status(403)
                };
                target = format!("{signed}&openid={user}&encrypt_type=aes&msg_signature={msg_sig}");
                (sealed.push_xml(ACCOUNT).into_bytes(), expect)
            }
            Kind::Retry => {
                let sent = &self.history[(roll >> 20) as usize % self.history.len()];
                (method, target) = (sent.method, sent.target.clone());
                (sent.body.clone(), Expect::Same(sent.answer.clone()))
            }
            Kind::TooLarge => {
                let mut body = text_xml(&user, &content, msg_id);
                body.resize(MAX_BODY + 1, b' ');
                (body, Expect::Status(413))
            }
            Kind::TooLargeDeclared => {
                // Claims far more than the limit and sends only the start of it.
                declared = Some(1 << 40);
                (text_xml(&user, &content, msg_id), Expect::Status(413))
            }
            Kind::NotXml => (b"hello, this is not XML".to_vec(), Expect::Status(400)),
            Kind::Truncated => {
                let xml = text_xml(&user, &content, msg_id);
                let cut = xml.len() / 2 + (roll % (xml.len() as u64 / 3)) as usize;
                (xml[..cut].to_vec(), Expect::Status(400))
            }
            Kind::Empty => (Vec::new(), Expect::Status(400)),
            Kind::InvalidUtf8 => {
                let mut body = text_xml(&user, "bad \u{1F600} utf8", msg_id);
                let at = body.iter().position(|&b| b == 0xF0).unwrap_or(0);
                body[at + 1] = 0xFF;
                (body, Expect::Status(400))
            }
            Kind::NoMsgType => {
                let xml = String::from_utf8(text_xml(&user, &content, msg_id)).expect("UTF-8");
                let xml = xml.replace("<MsgType><![CDATA[text]]></MsgType>", "");
                (xml.into_bytes(), Expect::Status(400))
            }
            Kind::Doctype => {
                let xml = String::from_utf8(text_xml(&user, "@", msg_id)).expect("UTF-8");
                let xml = xml.replace("<![CDATA[@]]>", "&a;");
                let body = format!("<!DOCTYPE xml [<!ENTITY a \"entity\">]>{xml}");
                (body.into_bytes(), Expect::Status(400))
            }
            Kind::BadSignature => {
                let zeros = "0".repeat(40);
                target = format!("/weixin?signature={zeros}&timestamp={ts}&nonce={nonce}");
                (text_xml(&user, &content, msg_id), Expect::Status(403))
            }
            Kind::NoSignature => {
                target = "/weixin".into();
                (text_xml(&user, &content, msg_id), Expect::Status(403))
            }
            Kind::WrongMethod => {
                method = ["PUT", "DELETE", "PATCH"][(roll % 3) as usize];
                (text_xml(&user, &content, msg_id), Expect::Status(405))
            }
            Kind::UnknownPath => {
                match roll % 3 {
                    0 => (method, target) = ("GET", "/nope".into()),
                    1 => target = signed.replacen("/weixin", "/weixin/x", 1),
                    _ => target = signed.replacen("/weixin", "/wechat", 1),
                }
                (text_xml(&user, &content, msg_id), Expect::Status(404))
            }
        };
        Req {
            kind,
            method,
            target,
            body,
            declared,
            expect,
        }
    }
}

fn text_xml(user: &str, content: &str, msg_id: u64) -> Vec<u8> {
    let kind = MsgKind::Text {
        content: Some(content.to_owned()),
    };
    Message::new(ACCOUNT, user, 1_700_000_000, kind)
        .with_msg_id(msg_id)
        .to_xml()
        .into_bytes()
}

fn check(cfg: &Config, expect: &Expect, resp: &Resp) -> Result<(), String> {
    let want_status = match expect {
        Expect::Status(s) => *s,
        _ => 200,
    };
    let body = String::from_utf8_lossy(&resp.body);
    if resp.status != want_status {
        return Err(format!(
            "status {} (want {want_status}): {:.200}",
            resp.status, body
        ));
    }
    match expect {
        Expect::Status(_) => Ok(()),
        Expect::Same(first) if *first == resp.body => Ok(()),
        Expect::Same(first) => Err(format!(
            "retry answered differently:\n    first {:.300}\n    retry {:.300}",
            String::from_utf8_lossy(first),
            body
        )),
        Expect::Text { user, content } => text_reply(&body, user, content),
        Expect::SafeText { user, content } => {
            let plain = open_envelope(cfg, &body)?;
            text_reply(&plain, user, content)
        }
    }
}

fn text_reply(body: &str, user: &str, content: &str) -> Result<(), String> {
    let r: Rendered = Reply::parse(body).map_err(|e| format!("reply does not parse ({e})"))?;
    match &r.reply {
        Reply::Text(t)
            if t.as_str() == content && r.to_user_name == user && r.from_user_name == ACCOUNT =>
        {
            Ok(())
        }
        _ => Err(format!(
            "wrong reply: want {content:?} to {user}, got {:.300}",
            body
        )),
    }
}

/// Checks the safe-mode envelope's signature and AppID and returns the decrypted reply.
fn open_envelope(cfg: &Config, body: &str) -> Result<String, String> {
    cfg.safe
        .open_reply(&cfg.token, body)
        .map_err(|e| format!("envelope: {e}"))
}

/// One keep-alive connection with a minimal HTTP/1.1 client.
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn open(addr: &str) -> std::io::Result<Conn> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        s.set_write_timeout(Some(Duration::from_secs(20)))?;
        Ok(Conn {
            writer: s.try_clone()?,
            reader: BufReader::new(s),
        })
    }

    fn roundtrip(&mut self, req: &Req) -> std::io::Result<Resp> {
        let length = req.declared.unwrap_or(req.body.len() as u64);
        let mut out = format!(
            "{} {} HTTP/1.1\r\nHost: soak\r\nContent-Length: {length}\r\n\r\n",
            req.method, req.target
        )
        .into_bytes();
        out.extend_from_slice(&req.body);
        self.writer.write_all(&out)?;
        self.read_response()
    }

    fn read_response(&mut self) -> std::io::Result<Resp> {
        let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let status = line
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("bad status line"))?;
        let (mut length, mut chunked, mut close) = (None, false, false);
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let Some((name, value)) = l.split_once(':') else {
                return Err(bad("bad header line"));
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse().map_err(|_| bad("bad Content-Length"))?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim(), 16).map_err(|_| bad("bad chunk"))?;
                let mut chunk = vec![0; size + 2];
                self.reader.read_exact(&mut chunk)?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else {
            let n = length.ok_or_else(|| bad("no Content-Length"))?;
            body.resize(n, 0);
            self.reader.read_exact(&mut body)?;
        }
        Ok(Resp {
            status,
            close,
            body,
        })
    }
}
