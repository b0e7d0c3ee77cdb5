//! tiny_http's request-head parser and chunked decoder (vendored, `src/http1.rs`) on arbitrary
//! bytes read as a stream of pipelined requests, exactly as a connection reads them: never a
//! panic, and every parsed request within the limits (headers, line lengths, a method that is a
//! token, header values without CR/LF, HTTP/1.0 or 1.1 only, bodies within the limit, only the
//! statuses HTTP prescribes for what is refused). See `tiny_http::fuzz_requests`.
//!
//! Input: one byte choosing the body limit (`byte * 16`, so the over-limit paths are reached
//! with small inputs), then the bytes a client sends.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&limit, stream)) = data.split_first() else {
        return;
    };
    tiny_http::fuzz_requests(stream, usize::from(limit) * 16);
});
