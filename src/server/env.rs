//! The clock and the random source, injected so tests are reproducible byte for byte.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// What the pipeline reads from the world besides the request.
pub trait Env: Send + Sync {
    /// Seconds since the Unix epoch: a reply's CreateTime, the retry store's expiry.
    fn now(&self) -> u64;
    /// Monotonic time, for deadlines measured from a push's arrival (the wall clock can jump).
    fn monotonic(&self) -> Instant;
    /// Fills `buf` from a secure random source (the reply IV prefix and nonce).
    fn fill_random(&self, buf: &mut [u8]);
}

/// The real clocks and the OS random source.
pub struct SystemEnv;

impl Env for SystemEnv {
    fn now(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    fn monotonic(&self) -> Instant {
        Instant::now()
    }

    fn fill_random(&self, buf: &mut [u8]) {
        if getrandom::getrandom(buf).is_err() {
            // The OS random source is gone; a predictable IV prefix would weaken safe mode, so
            // refuse to continue rather than send it.
            eprintln!("wxmp: the OS random source failed; stopping");
            std::process::abort();
        }
    }
}
