//! The framework floor for `make bench`: a bare rouille handler doing the least a WeChat server
//! must (read the body, parse the XML, echo `Content` in a text reply). wxmp's W2 is reported as a
//! ratio of this, so what our own code costs on top of rouille + xmltree is visible.
//!
//! Usage: `floor [--port PORT] [--threads N]`; port 0 picks a free port. Prints the address.

use std::io::{Read, Write};

use rouille::{Request, Response};

const MAX_BODY: u64 = 1 << 20;

fn handle(req: &Request) -> Response {
    let Some(data) = req.data() else {
        return Response::text("no body").with_status_code(400);
    };
    let mut body = Vec::with_capacity(1024);
    if data.take(MAX_BODY + 1).read_to_end(&mut body).is_err() || body.len() as u64 > MAX_BODY {
        return Response::text("bad body").with_status_code(400);
    }
    let Ok(root) = xmltree::Element::parse(body.as_slice()) else {
        return Response::text("bad xml").with_status_code(400);
    };
    let field = |name: &str| {
        root.get_child(name)
            .and_then(|e| e.get_text())
            .unwrap_or_default()
            .into_owned()
    };
    let reply = format!(
        "<xml><ToUserName><![CDATA[{}]]></ToUserName><FromUserName><![CDATA[{}]]></FromUserName>\
         <CreateTime>{}</CreateTime><MsgType><![CDATA[text]]></MsgType>\
         <Content><![CDATA[{}]]></Content></xml>",
        field("FromUserName"),
        field("ToUserName"),
        field("CreateTime"),
        field("Content"),
    );
    Response::from_data("application/xml; charset=utf-8", reply.into_bytes())
}

fn main() {
    let mut port = 0u16;
    let mut threads = 8usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_default();
        match arg.as_str() {
            "--port" => port = value.parse().expect("--port takes a number"),
            "--threads" => threads = value.parse().expect("--threads takes a number"),
            other => panic!("unknown argument {other}; usage: floor [--port P] [--threads N]"),
        }
    }
    let server = rouille::Server::new(("127.0.0.1", port), handle)
        .expect("cannot listen")
        .pool_size(threads);
    println!("floor listening on http://{}", server.server_addr());
    let _ = std::io::stdout().flush();
    server.run();
}
