//! Generates inputs for `scripts/bench.sh` that its shell and wrk's Lua cannot make themselves.
//!
//! `gen_safe requests PREFIX PARTS COUNT FIRST_ID`: COUNT distinct safe-mode pushes (the W2 text
//! message, MsgIds FIRST_ID.., encrypted with the official sample key), dealt round-robin into
//! PREFIX.0 .. PREFIX.{PARTS-1}, one per line as `query body` (the query: signature, timestamp,
//! nonce and msg_signature). Each wrk thread reads its own file, so no body is sent twice (wrk's
//! LuaJIT has no AES or SHA-1, and msg_signature covers the ciphertext).
//!
//! `gen_safe queries PREFIX PARTS COUNT FIRST_NONCE`: COUNT plain signed queries
//! (`signature=…&timestamp=…&nonce=…`), timestamped now, nonces FIRST_NONCE.., dealt the same
//! way. The server's replay window refuses an old timestamp and a query reused on another body,
//! so every request of a run takes its own, from a pool made just before the run.
//!
//! `gen_safe account-queries PREFIX PARTS COUNT FIRST_NONCE ACCOUNTS`: the same, each a whole
//! target for one of ACCOUNTS accounts in turn (`/weixin/aI?openid=…&signature=…`, signed with
//! account I's token `benchtokenIIIII`), for W2 spread over many accounts.
//!
//! `gen_safe accounts N`: prints an accounts file of N such accounts (`aI` at `/weixin/aI`).
//!
//! `gen_safe rules N`: prints N regex rules that match none of the benchmark texts.
//!
//! `gen_safe cache MB`: fills a retry cache with a budget of MB MiB with W2 pushes through the
//! real pipeline and prints `entries accounted_bytes` once it is full (wxmp's own accounting).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::Arc;
use std::time::Instant;

use wxmp::protocol::query::Query;
use wxmp::protocol::verify::Token;
use wxmp::server::account::Account;
use wxmp::server::env::SystemEnv;
use wxmp::server::pipeline::{Pipeline, Push};
use wxmp::server::store::Limits;

#[path = "common.rs"]
mod common;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["requests", prefix, parts, count, first] => {
            let parts: usize = parts.parse().expect("PARTS is a number");
            let count: u64 = count.parse().expect("COUNT is a number");
            let first: u64 = first.parse().expect("FIRST_ID is a number");
            requests(prefix, parts.max(1), count, first).expect("cannot write the requests");
        }
        ["queries", prefix, parts, count, first] => {
            let parts: usize = parts.parse().expect("PARTS is a number");
            let count: u64 = count.parse().expect("COUNT is a number");
            let first: u64 = first.parse().expect("FIRST_NONCE is a number");
            queries(prefix, parts.max(1), count, first).expect("cannot write the queries");
        }
        ["account-queries", prefix, parts, count, first, accounts] => {
            let parts: usize = parts.parse().expect("PARTS is a number");
            let count: u64 = count.parse().expect("COUNT is a number");
            let first: u64 = first.parse().expect("FIRST_NONCE is a number");
            let accounts: u64 = accounts.parse().expect("ACCOUNTS is a number");
            account_queries(prefix, parts.max(1), count, first, accounts.max(1))
                .expect("cannot write the queries");
        }
        ["accounts", n] => {
            for i in 0..n.parse::<u64>().expect("N is a number") {
                println!(
                    "[[account]]\nname = \"a{i}\"\ntoken = \"{}\"\n",
                    account_token(i)
                );
            }
        }
        ["cache", mb] => {
            let (entries, bytes) = fill_cache(mb.parse().expect("MB is a number"));
            println!("{entries} {bytes}");
        }
        ["rules", n] => print!("{}", common::extra_rules(n.parse().expect("N is a number"))),
        _ => {
            eprintln!("usage: gen_safe requests PREFIX PARTS COUNT FIRST_ID | gen_safe queries PREFIX PARTS COUNT FIRST_NONCE | gen_safe account-queries PREFIX PARTS COUNT FIRST_NONCE ACCOUNTS | gen_safe accounts N | gen_safe rules N | gen_safe cache MB");
            std::process::exit(2);
        }
    }
}

fn requests(prefix: &str, parts: usize, count: u64, first: u64) -> std::io::Result<()> {
    let mut files = (0..parts)
        .map(|i| File::create(format!("{prefix}.{i}")).map(BufWriter::new))
        .collect::<Result<Vec<_>, _>>()?;
    for n in 0..count {
        let msg_id = first + n;
        let xml = common::text_message("hello 你好", msg_id);
        // The random prefix only has to differ per message; it need not be secret here.
        let mut random = [0u8; 16];
        random[..8].copy_from_slice(&msg_id.to_le_bytes());
        // The MsgId is unique, so it makes a unique nonce too.
        let (ts, nonce) = (common::unix_now().to_string(), msg_id.to_string());
        let (sig, body) = common::sealed_push_at(&xml, &random, &ts, &nonce);
        let query = common::signed_query(&ts, &nonce);
        let out = &mut files[(n % parts as u64) as usize];
        writeln!(out, "{query}&msg_signature={sig} {body}")?;
    }
    for mut f in files {
        f.flush()?;
    }
    Ok(())
}

fn queries(prefix: &str, parts: usize, count: u64, first: u64) -> std::io::Result<()> {
    let mut files = (0..parts)
        .map(|i| File::create(format!("{prefix}.{i}")).map(BufWriter::new))
        .collect::<Result<Vec<_>, _>>()?;
    let ts = common::unix_now().to_string();
    for n in 0..count {
        let out = &mut files[(n % parts as u64) as usize];
        writeln!(
            out,
            "{}",
            common::signed_query(&ts, &(first + n).to_string())
        )?;
    }
    for mut f in files {
        f.flush()?;
    }
    Ok(())
}

/// Account `i`'s token in `gen_safe accounts`.
fn account_token(i: u64) -> String {
    format!("benchtoken{i:05}")
}

fn account_queries(
    prefix: &str,
    parts: usize,
    count: u64,
    first: u64,
    accounts: u64,
) -> std::io::Result<()> {
    let mut files = (0..parts)
        .map(|i| File::create(format!("{prefix}.{i}")).map(BufWriter::new))
        .collect::<Result<Vec<_>, _>>()?;
    let tokens: Vec<Token> = (0..accounts)
        .map(|i| Token::new(&account_token(i)).expect("bench token"))
        .collect();
    let ts = common::unix_now().to_string();
    for n in 0..count {
        let out = &mut files[(n % parts as u64) as usize];
        let i = (n / parts as u64) % accounts;
        let nonce = (first + n).to_string();
        let sig = wxmp::protocol::verify::signature(&tokens[i as usize], &ts, &nonce);
        writeln!(
            out,
            "/weixin/a{i}?openid={}&signature={sig}&timestamp={ts}&nonce={nonce}",
            common::FROM_USER
        )?;
    }
    for mut f in files {
        f.flush()?;
    }
    Ok(())
}

fn fill_cache(mb: usize) -> (usize, usize) {
    let token = common::token();
    let limits = Limits {
        max_bytes: mb << 20,
        ..Limits::default()
    };
    let pipeline = Pipeline::in_memory(Account::new(token), limits, Arc::new(SystemEnv));
    const BATCH: u64 = 10_000;
    let mut id = 0u64;
    let mut entries = 0;
    loop {
        for _ in 0..BATCH {
            id += 1;
            let body = common::text_message("hello 你好", id);
            let (ts, nonce) = common::fresh(id);
            let query = Query::parse(&common::signed_query(&ts, &nonce)).expect("query");
            pipeline
                .handle_message(Push {
                    query: &query,
                    body: body.as_bytes(),
                    arrived: Instant::now(),
                })
                .result
                .expect("the pipeline answers");
        }
        // Full when a batch barely grows it: every shard is evicting.
        let usage = pipeline.store_usage();
        let (now, bytes) = (usage.entries, usage.bytes);
        if now < entries + (BATCH / 100) as usize {
            return (now, bytes);
        }
        entries = now;
    }
}
