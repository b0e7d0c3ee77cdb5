//! The start-up line for scripts and tests. The human banner before it may be reworded at any
//! time; this line keeps its shape, so nobody has to scrape the banner for a port chosen with
//! `--port 0`.

use std::net::SocketAddr;

/// One JSON line naming the bound addresses:
/// `{"listening":{"http":"127.0.0.1:8080","metrics":null,"api_proxy":null}}`. `metrics` is `null`
/// without a metrics listener, `api_proxy` without the API gateway. Addresses need no JSON
/// escaping.
pub fn listening_line(
    http: SocketAddr,
    metrics: Option<SocketAddr>,
    api_proxy: Option<SocketAddr>,
) -> String {
    let or_null = |a: Option<SocketAddr>| a.map_or("null".to_owned(), |m| format!("\"{m}\""));
    format!(
        "{{\"listening\":{{\"http\":\"{http}\",\"metrics\":{},\"api_proxy\":{}}}}}",
        or_null(metrics),
        or_null(api_proxy)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_both_listeners_or_null() {
        let http: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let metrics: SocketAddr = "[::1]:9090".parse().unwrap();
        assert_eq!(
            listening_line(http, Some(metrics), Some(http)),
            r#"{"listening":{"http":"127.0.0.1:8080","metrics":"[::1]:9090","api_proxy":"127.0.0.1:8080"}}"#
        );
        assert_eq!(
            listening_line(http, None, None),
            r#"{"listening":{"http":"127.0.0.1:8080","metrics":null,"api_proxy":null}}"#
        );
    }
}
