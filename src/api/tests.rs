//! The client against a scripted transport: the one retry, what is never retried, and that
//! secrets stay out of errors.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::error::{NetError, NetErrorKind};
use super::http::Answer;
use super::*;

const SECRET: &str = "s3cr3t-app-secret";

/// A request as the transport saw it: method, URL, body.
type Seen = (Method, String, Option<String>);

/// Answers requests from a script and records them.
#[derive(Clone, Default)]
struct Script {
    answers: Arc<Mutex<VecDeque<Result<Answer, NetError>>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Script {
    fn then(self, body: &str) -> Script {
        self.answers.lock().unwrap().push_back(Ok(Answer {
            status: 200,
            body: body.to_owned(),
        }));
        self
    }

    fn then_err(self, kind: NetErrorKind) -> Script {
        self.answers.lock().unwrap().push_back(Err(NetError {
            kind,
            detail: "scripted".into(),
        }));
        self
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn paths(&self) -> Vec<String> {
        self.seen()
            .into_iter()
            .map(|(_, url, _)| {
                let path = url.split('?').next().unwrap_or("").to_owned();
                path.trim_start_matches("https://api.example").to_owned()
            })
            .collect()
    }
}

impl Transport for Script {
    fn send(&self, method: Method, url: &str, body: Option<&str>) -> Result<Answer, NetError> {
        self.seen
            .lock()
            .unwrap()
            .push((method, url.to_owned(), body.map(str::to_owned)));
        self.answers
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| panic!("unscripted request to {url}"))
    }

    fn send_form(&self, url: &str, content_type: &str, body: &[u8]) -> Result<Answer, NetError> {
        let shown = format!("{content_type}\n{}", String::from_utf8_lossy(body));
        self.send(Method::Post, url, Some(&shown))
    }
}

struct Fixed(u64);

impl Clock for Fixed {
    fn now(&self) -> u64 {
        self.0
    }
}

fn config(endpoint: TokenEndpoint) -> ApiConfig {
    ApiConfig {
        app_id: "wx1".into(),
        secret: Secret::new(SECRET),
        api_base: "https://api.example".into(),
        token_cache: None,
        token_endpoint: endpoint,
        timeout: Duration::from_secs(5),
    }
}

fn client(script: &Script) -> Client {
    Client::with(
        config(TokenEndpoint::Stable),
        Box::new(script.clone()),
        Box::new(Fixed(1_000_000)),
    )
}

const TOKEN1: &str = r#"{"access_token":"TOKEN_ONE","expires_in":7200}"#;
const TOKEN2: &str = r#"{"access_token":"TOKEN_TWO","expires_in":7200}"#;
const OK: &str = r#"{"errcode":0,"errmsg":"ok"}"#;

fn text() -> kf::Message {
    kf::Message::Text {
        content: "hi".into(),
    }
}

#[test]
fn the_stable_endpoint_is_asked_without_forcing_and_the_token_reused() {
    let script = Script::default().then(TOKEN1).then(OK).then(OK);
    let c = client(&script);
    c.send_custom("o1", &text()).unwrap();
    c.typing("o1").unwrap();
    let seen = script.seen();
    assert_eq!(
        script.paths(),
        [
            "/cgi-bin/stable_token",
            "/cgi-bin/message/custom/send",
            "/cgi-bin/message/custom/typing"
        ]
    );
    let body: Value = serde_json::from_str(seen[0].2.as_deref().unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"grant_type":"client_credential","appid":"wx1","secret":SECRET,"force_refresh":false})
    );
    assert!(seen[1].1.ends_with("?access_token=TOKEN_ONE"));
    assert!(seen[2].1.ends_with("?access_token=TOKEN_ONE"));
    let typing: Value = serde_json::from_str(seen[2].2.as_deref().unwrap()).unwrap();
    assert_eq!(typing, json!({"touser":"o1","command":"Typing"}));
    assert_eq!(c.stats().calls.get(&0), Some(&3));
    assert_eq!(c.stats().token_fetches, 1);
    assert_eq!(
        c.token_expires_at(),
        Some(UNIX_EPOCH + Duration::from_secs(1_000_000 + 7200))
    );
}

#[test]
fn a_rejected_token_is_force_refreshed_and_the_call_retried_once() {
    for code in [40001, 40014, 42001] {
        let rejected = format!(r#"{{"errcode":{code},"errmsg":"invalid credential"}}"#);
        let script = Script::default()
            .then(TOKEN1)
            .then(&rejected)
            .then(TOKEN2)
            .then(OK);
        let c = client(&script);
        c.send_custom("o1", &text()).unwrap();
        let seen = script.seen();
        let forced: Value = serde_json::from_str(seen[2].2.as_deref().unwrap()).unwrap();
        assert_eq!(forced["force_refresh"], json!(true), "{code}");
        assert!(seen[3].1.ends_with("access_token=TOKEN_TWO"));
        assert_eq!(c.stats().calls.get(&code), Some(&1));
    }
}

#[test]
fn a_second_rejection_is_reported_not_retried_again() {
    let rejected = r#"{"errcode":40001,"errmsg":"invalid credential"}"#;
    let script = Script::default()
        .then(TOKEN1)
        .then(rejected)
        .then(TOKEN2)
        .then(rejected);
    let c = client(&script);
    let e = c.send_custom("o1", &text()).unwrap_err();
    assert_eq!(e.errcode(), Some(40001));
    assert!(
        e.to_string().contains("refused a freshly fetched one"),
        "{e}"
    );
    assert_eq!(script.seen().len(), 4);
}

#[test]
fn other_errcodes_are_reported_at_once() {
    for code in [45009, 45011, 45015, 45047, 48001, 89503, -1] {
        let script = Script::default()
            .then(TOKEN1)
            .then(&format!(r#"{{"errcode":{code},"errmsg":"x"}}"#));
        let e = client(&script).send_custom("o1", &text()).unwrap_err();
        assert_eq!(e.errcode(), Some(code));
        assert_eq!(script.seen().len(), 2, "{code} was retried");
    }
}

#[test]
fn a_refused_token_fetch_is_the_error() {
    let script =
        Script::default().then(r#"{"errcode":40125,"errmsg":"invalid appsecret rid: r-1"}"#);
    let c = client(&script);
    let e = c.create_menu(&sample_menu()).unwrap_err();
    assert_eq!(e.errcode(), Some(40125));
    assert_eq!(e.call(), Call::Token);
    assert!(e.to_string().ends_with("[rid r-1]"), "{e}");
    assert_eq!(script.seen().len(), 1);
}

#[test]
fn network_failures_and_foreign_answers_are_counted_and_never_show_secrets() {
    let script = Script::default().then_err(NetErrorKind::Timeout);
    let c = Client::with(
        config(TokenEndpoint::Classic),
        Box::new(script.clone()),
        Box::new(Fixed(1)),
    );
    let e = c.delete_menu().unwrap_err();
    assert!(matches!(e, ApiError::Network { .. }), "{e:?}");
    let text = format!("{e} {e:?}");
    assert!(!text.contains(SECRET), "{text}");
    assert!(text.contains("https://api.example/cgi-bin/token"), "{text}");
    // The classic endpoint has the secret in its query; only the request carries it.
    assert!(script.seen()[0].1.contains(SECRET));
    assert_eq!(c.stats().calls.get(&NETWORK_ERROR), Some(&1));

    let script = Script::default()
        .then(TOKEN1)
        .then("<html>502 Bad Gateway</html>");
    let c = client(&script);
    let e = c.delete_menu().unwrap_err();
    assert!(e.to_string().contains("not JSON"), "{e}");
    assert!(!e.to_string().contains("TOKEN_ONE"), "{e}");
    assert_eq!(c.stats().calls.get(&BAD_RESPONSE), Some(&1));

    let script = Script::default().then(r#"{"expires_in":7200}"#);
    let e = client(&script).delete_menu().unwrap_err();
    assert!(e.to_string().contains("no access_token"), "{e}");
}

#[test]
fn debug_output_redacts_the_secret() {
    let shown = format!("{:?}", config(TokenEndpoint::Stable));
    assert!(
        !shown.contains(SECRET) && shown.contains("Secret(***)"),
        "{shown}"
    );
    let c = client(&Script::default());
    assert!(!format!("{c:?}").contains(SECRET));
}

fn sample_menu() -> menu::Menu {
    menu::Menu::parse_toml("[[button]]\nname = \"a\"\ntype = \"click\"\nkey = \"K\"\n")
        .unwrap()
        .0
}

#[test]
fn menu_calls_send_wechats_json() {
    let script = Script::default()
        .then(TOKEN1)
        .then(OK)
        .then(r#"{"menu":{"button":[{"type":"click","name":"a","key":"K","sub_button":[]}]}}"#);
    let c = client(&script);
    c.create_menu(&sample_menu()).unwrap();
    let got = c.get_menu().unwrap();
    let (menu, _) = menu::Menu::from_json(&got).unwrap();
    assert_eq!(menu.to_json(), sample_menu().to_json());
    let seen = script.seen();
    assert_eq!(
        seen[1].2.as_deref(),
        Some(r#"{"button":[{"name":"a","type":"click","key":"K"}]}"#)
    );
    assert_eq!(seen[2].0, Method::Get);
}

/// The server shares one client between its handler threads (issue 14).
#[test]
fn a_client_can_be_shared_between_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<Client>();
    shared::<std::sync::Arc<Client>>();
    let c = client(&Script::default());
    assert_eq!(c.token_expires_at(), None, "nothing fetched yet");
    assert_eq!(c.stats(), ApiStats::default());
}

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

fn picture() -> Upload<'static> {
    Upload {
        ty: MediaType::Image,
        name: "menu.jpeg",
        data: PNG,
        title: "",
        introduction: "",
    }
}

#[test]
fn an_upload_is_multipart_with_the_type_and_is_retried_once_with_the_same_body() {
    let script = Script::default()
        .then(TOKEN1)
        .then(r#"{"errcode":40001,"errmsg":"invalid credential"}"#)
        .then(TOKEN2)
        .then(r#"{"media_id":"MEDIA_1","url":"http://mmbiz.qpic.cn/x"}"#);
    let c = client(&script);
    let up = c.upload(&picture(), true).unwrap();
    assert_eq!(up.media_id, "MEDIA_1");
    let seen = script.seen();
    assert!(
        seen[1]
            .1
            .ends_with("/cgi-bin/material/add_material?access_token=TOKEN_ONE&type=image"),
        "{}",
        seen[1].1
    );
    assert!(
        seen[3].1.ends_with("?access_token=TOKEN_TWO&type=image"),
        "{}",
        seen[3].1
    );
    assert_eq!(seen[1].2, seen[3].2, "the retry sends the same body");
    let body = seen[1].2.as_deref().unwrap();
    assert!(body.starts_with("multipart/form-data; boundary="), "{body}");
    // The extension follows the content, not the name it was given.
    assert!(
        body.contains("name=\"media\"; filename=\"menu.png\""),
        "{body}"
    );
}

#[test]
fn a_file_wechat_would_refuse_is_refused_before_any_call() {
    let script = Script::default();
    let c = client(&script);
    let thumb = Upload {
        ty: MediaType::Thumb,
        ..picture()
    };
    let e = c.upload(&thumb, false).unwrap_err();
    assert_eq!(e.errcode(), Some(40005));
    assert!(e.to_string().contains("a thumb must be jpg"), "{e}");
    assert!(script.seen().is_empty());
}
