//! The shared test kit (modelled on ripgrep's `tests/util.rs`): the real binary with a builder
//! ([`binary`]), raw HTTP over a socket ([`http`]), the one way to wait ([`wait`]), the one
//! request signer ([`signed`]), and a fresh directory per use ([`tempdir`]).

pub mod binary;
pub mod http;
pub mod signed;
pub mod wait;

/// A fresh directory under the system's temp dir (no tempfile crate needed).
pub fn tempdir() -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "wxmp-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
