//! The start-up line for scripts and tests. The human banner before it may be reworded at any
//! time; this line keeps its shape, so nobody has to scrape the banner for a port chosen with
//! `--port 0`.

use std::net::SocketAddr;

/// One JSON line naming the bound addresses: `{"listening":{"http":"127.0.0.1:8080","metrics":null}}`.
/// `metrics` is `null` without a metrics listener. Addresses need no JSON escaping.
pub fn listening_line(http: SocketAddr, metrics: Option<SocketAddr>) -> String {
    let metrics = metrics.map_or("null".to_owned(), |m| format!("\"{m}\""));
    format!("{{\"listening\":{{\"http\":\"{http}\",\"metrics\":{metrics}}}}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_both_listeners_or_null() {
        let http: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let metrics: SocketAddr = "[::1]:9090".parse().unwrap();
        assert_eq!(
            listening_line(http, Some(metrics)),
            r#"{"listening":{"http":"127.0.0.1:8080","metrics":"[::1]:9090"}}"#
        );
        assert_eq!(
            listening_line(http, None),
            r#"{"listening":{"http":"127.0.0.1:8080","metrics":null}}"#
        );
    }
}
