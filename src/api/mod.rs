//! The WeChat API client: the access_token done right, the custom menu and customer-service
//! messages.
//!
//! In scope: [`Client`] (one per process, shared through an `Arc`), which gets a token from
//! [`token::Tokens`] (refreshed ahead, one refresher, a cache file between runs), makes the
//! call with a time limit, retries once with a fresh token when WeChat rejects the token
//! (40001/40014/42001), and turns any other errcode into an [`ApiError`] whose `Display` says
//! what to do; [`menu`] (the menu file and WeChat's menu JSON) and [`kf`] (customer-service
//! messages, built from a passive reply or the command line).
//!
//! Out of scope: the command line and printing (`api_cmd`), the server (which may hold a
//! `Client` to send late replies), HTTP serving (the fake API is `fake_api`). This module
//! imports only `protocol`.

pub mod error;
pub mod http;
pub mod kf;
pub mod media;
pub mod menu;
pub mod token;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::text::redact_url;

use serde_json::{json, Value};

pub use error::{ApiError, Call};
use http::{Method, Transport};
use media::MediaType;
use token::{AccessToken, Held, Refresh, Tokens};

use crate::protocol::query::percent_encode;

/// The AppSecret. Its `Debug` is redacted; only [`Secret::expose`] shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Secret {
        Secret(secret.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Which endpoint hands out tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenEndpoint {
    /// `POST /cgi-bin/stable_token`: repeated calls return the same token and never invalidate
    /// another holder's, and it is isolated from the classic endpoint. The default.
    Stable,
    /// `GET /cgi-bin/token`: every call invalidates the previous token.
    Classic,
}

impl TokenEndpoint {
    pub fn name(self) -> &'static str {
        match self {
            TokenEndpoint::Stable => "stable",
            TokenEndpoint::Classic => "classic",
        }
    }

    pub fn method(self) -> &'static str {
        match self {
            TokenEndpoint::Stable => "POST",
            TokenEndpoint::Classic => "GET",
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            TokenEndpoint::Stable => "/cgi-bin/stable_token",
            TokenEndpoint::Classic => "/cgi-bin/token",
        }
    }
}

/// What the client needs; `config` builds it from flags and `WXMP_*` variables.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub app_id: String,
    pub secret: Secret,
    /// `https://api.weixin.qq.com`, a proxy, or a fake; without a trailing slash.
    pub api_base: String,
    /// Where the token is kept between runs; `None`: in memory only.
    pub token_cache: Option<PathBuf>,
    pub token_endpoint: TokenEndpoint,
    /// The limit on each request, connecting included (connecting alone: at most 5 s).
    pub timeout: Duration,
}

/// The `errcode` [`ApiStats`] counts a request under when there was no answer at all.
pub const NETWORK_ERROR: i64 = -2;
/// The `errcode` [`ApiStats`] counts a request under when the answer was not WeChat's JSON.
pub const BAD_RESPONSE: i64 = -3;

/// Requests made so far, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiStats {
    /// Every HTTP request (token fetches and retries included) by the errcode it got: 0 for
    /// success, WeChat's code for a refusal, [`NETWORK_ERROR`] (-2) for no answer (a timeout
    /// included) and [`BAD_RESPONSE`] (-3) for an answer that is not WeChat's JSON. (-1 is
    /// WeChat's own "system busy".)
    pub calls: BTreeMap<i64, u64>,
    /// Token fetches attempted, whatever their outcome.
    pub token_fetches: u64,
}

/// What a request carries.
enum Payload<'a> {
    None,
    Json(&'a str),
    Form {
        content_type: &'a str,
        body: &'a [u8],
    },
}

/// A file to upload.
#[derive(Debug, Clone)]
pub struct Upload<'a> {
    pub ty: MediaType,
    /// The file's name; its extension is set from its content.
    pub name: &'a str,
    pub data: &'a [u8],
    /// A permanent video's title and introduction (WeChat requires the title).
    pub title: &'a str,
    pub introduction: &'a str,
}

/// What an upload made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub media_id: String,
    /// A permanent image's URL (usable only inside Tencent's domains).
    pub url: Option<String>,
}

/// Unix seconds; a trait so tests move time by hand.
pub trait Clock: Send + Sync {
    fn now(&self) -> u64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// The API client. Thread-safe: share one per process through an `Arc`, so there is one token
/// holder and one refresher. Every call is bounded by the configured timeout and returns an
/// error rather than panicking.
pub struct Client {
    config: ApiConfig,
    transport: Box<dyn Transport>,
    clock: Box<dyn Clock>,
    tokens: Tokens,
    stats: Mutex<ApiStats>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("app_id", &self.config.app_id)
            .field("api_base", &redact_url(&self.config.api_base))
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client over HTTPS (rustls, built-in roots) with the configured timeout.
    pub fn new(config: ApiConfig) -> Client {
        let transport = http::Ureq::new(config.timeout);
        Client::with(config, Box::new(transport), Box::new(SystemClock))
    }

    /// A client over any transport and clock (tests).
    pub fn with(config: ApiConfig, transport: Box<dyn Transport>, clock: Box<dyn Clock>) -> Client {
        let tokens = Tokens::new(&config.app_id, &config.api_base, config.token_cache.clone());
        Client {
            config,
            transport,
            clock,
            tokens,
            stats: Mutex::new(ApiStats::default()),
        }
    }

    pub fn config(&self) -> &ApiConfig {
        &self.config
    }

    /// Keeps the token in `store`, shared with other instances (`--store`); a caller waits at
    /// most the request timeout for another instance's refresh. Set once, before the first
    /// call.
    pub fn share_tokens(&self, store: std::sync::Arc<dyn token::SharedTokens>) {
        self.tokens.share(store, self.config.timeout);
    }

    /// Sends a customer-service message (`message/custom/send`) to the user `openid`.
    pub fn send_custom(&self, openid: &str, msg: &kf::Message) -> Result<(), ApiError> {
        self.call(Call::CustomSend, Method::Post, Some(&msg.to_json(openid)))
            .map(drop)
    }

    /// Shows "typing…" to the user `openid` (`message/custom/typing`, command `Typing`); WeChat
    /// shows it for up to 15 s, within 30 s of the user's last message, and a sent message
    /// ends it.
    pub fn typing(&self, openid: &str) -> Result<(), ApiError> {
        self.typing_command(openid, "Typing")
    }

    /// Ends the typing status early (`CancelTyping`).
    pub fn cancel_typing(&self, openid: &str) -> Result<(), ApiError> {
        self.typing_command(openid, "CancelTyping")
    }

    fn typing_command(&self, openid: &str, command: &str) -> Result<(), ApiError> {
        let body = json!({ "touser": openid, "command": command });
        self.call(Call::Typing, Method::Post, Some(&body)).map(drop)
    }

    /// Replaces the custom menu (`menu/create`).
    pub fn create_menu(&self, menu: &menu::Menu) -> Result<(), ApiError> {
        self.call(Call::MenuCreate, Method::Post, Some(&menu.to_json()))
            .map(drop)
    }

    /// The menu set through the API (`menu/get`), as WeChat sends it; errcode 46003 when
    /// there is none. (`get_current_selfmenu_info` would also show a menu made in the console,
    /// but in another shape, with types the API cannot create; `menu/get` round-trips.)
    pub fn get_menu(&self) -> Result<Value, ApiError> {
        self.call(Call::MenuGet, Method::Get, None)
    }

    /// Deletes the custom menu (`menu/delete`).
    pub fn delete_menu(&self) -> Result<(), ApiError> {
        self.call(Call::MenuDelete, Method::Get, None).map(drop)
    }

    /// Uploads a file as permanent material (`material/add_material`) or, with `permanent`
    /// false, as temporary media (`media/upload`, kept 3 days). The file is checked first as
    /// WeChat would (its type by content, the size limit), so a bad file costs no call. A
    /// video's `title` is required for permanent material.
    pub fn upload(&self, file: &Upload<'_>, permanent: bool) -> Result<Uploaded, ApiError> {
        let call = if permanent {
            Call::MaterialAdd
        } else {
            Call::MediaUpload
        };
        let format = media::check(file.ty, file.data).map_err(|e| ApiError::WeChat {
            call,
            errcode: e.errcode(),
            errmsg: format!("refused before sending: {e}"),
        })?;
        // WeChat wants an extension on the filename, and the right one.
        let stem = file
            .name
            .rsplit_once('.')
            .map_or(file.name, |(stem, _)| stem);
        let stem = if stem.is_empty() { "file" } else { stem };
        let filename = format!("{stem}.{}", format.extension());
        let description =
            json!({"title": file.title, "introduction": file.introduction}).to_string();
        let mut parts = vec![media::Part {
            name: "media",
            filename: Some(&filename),
            content_type: Some(format.mime()),
            data: file.data,
        }];
        if permanent && file.ty == MediaType::Video {
            parts.push(media::Part {
                name: "description",
                filename: None,
                content_type: None,
                data: description.as_bytes(),
            });
        }
        let (content_type, body) = media::multipart(&parts);
        let query = format!("&type={}", file.ty.name());
        let value = self.call_with(
            call,
            Method::Post,
            &query,
            &Payload::Form {
                content_type: &content_type,
                body: &body,
            },
        )?;
        let media_id = value
            .get("media_id")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .ok_or_else(|| ApiError::BadResponse {
                call,
                url: self.config.api_base.clone(),
                problem: "the answer has no media_id".into(),
            })?;
        Ok(Uploaded {
            media_id: media_id.to_owned(),
            url: value.get("url").and_then(Value::as_str).map(str::to_owned),
        })
    }

    /// One page of permanent material of a type (`material/batchget_material`): WeChat's JSON,
    /// `{"total_count", "item_count", "item": [{"media_id", "name", "update_time", "url"}]}`.
    /// `count` is 1 to 20.
    pub fn list_materials(
        &self,
        ty: MediaType,
        offset: u64,
        count: u64,
    ) -> Result<Value, ApiError> {
        let body = json!({"type": ty.name(), "offset": offset, "count": count});
        self.call(Call::MaterialList, Method::Post, Some(&body))
    }

    /// A fresh token, from memory, the cache file or WeChat (`wxmp token --fetch`).
    pub fn token(&self) -> Result<Held, ApiError> {
        self.fresh_token()?;
        self.tokens.current().ok_or_else(|| ApiError::BadResponse {
            call: Call::Token,
            url: self.config.api_base.clone(),
            problem: "no token was kept".into(),
        })
    }

    /// A replacement for `rejected`, which WeChat refused or a caller asked to refresh: a newer
    /// token another caller already got, else a forced fetch.
    pub fn replace_token(&self, rejected: &AccessToken) -> Result<Held, ApiError> {
        self.tokens
            .replace(rejected, &|| self.clock.now(), &|force| {
                self.fetch_token(force)
            })?;
        self.tokens.current().ok_or_else(|| ApiError::BadResponse {
            call: Call::Token,
            url: self.config.api_base.clone(),
            problem: "no token was kept".into(),
        })
    }

    /// Counts a request someone else sent with this client's token (the API gateway), so the
    /// API metrics cover it.
    pub fn record(&self, errcode: i64) {
        self.count(errcode);
    }

    /// Unix seconds by the client's clock.
    pub fn now(&self) -> u64 {
        self.clock.now()
    }

    /// Requests so far, by errcode.
    pub fn stats(&self) -> ApiStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// When the token held in memory expires (none held yet: `None`).
    pub fn token_expires_at(&self) -> Option<SystemTime> {
        self.tokens
            .current()
            .map(|h| UNIX_EPOCH + Duration::from_secs(h.expires_at))
    }

    /// Problems with the token cache file since the last call (the token still works from
    /// memory), for the caller to log.
    pub fn take_notes(&self) -> Vec<String> {
        self.tokens.take_notes()
    }

    fn fresh_token(&self) -> Result<AccessToken, ApiError> {
        self.tokens
            .get(&|| self.clock.now(), &|refresh| self.fetch_token(refresh))
    }

    /// One API call; a rejected token is replaced and the call retried, once.
    fn call(&self, call: Call, method: Method, body: Option<&Value>) -> Result<Value, ApiError> {
        let body = body.map(Value::to_string);
        let payload = match &body {
            Some(b) => Payload::Json(b),
            None => Payload::None,
        };
        self.call_with(call, method, "", &payload)
    }

    /// [`Client::call`] with more query parameters (`&type=image`) and any payload.
    fn call_with(
        &self,
        call: Call,
        method: Method,
        query: &str,
        payload: &Payload<'_>,
    ) -> Result<Value, ApiError> {
        let token = self.fresh_token()?;
        match self.request(call, method, &token, query, payload) {
            Err(e) if e.errcode().is_some_and(error::is_token_rejection) => {
                let fresh = self
                    .tokens
                    .replace(&token, &|| self.clock.now(), &|refresh| {
                        self.fetch_token(refresh)
                    })?;
                self.request(call, method, &fresh, query, payload)
            }
            other => other,
        }
    }

    fn request(
        &self,
        call: Call,
        method: Method,
        token: &AccessToken,
        query: &str,
        payload: &Payload<'_>,
    ) -> Result<Value, ApiError> {
        let path = match call {
            Call::Token => "/cgi-bin/stable_token",
            Call::MenuCreate => "/cgi-bin/menu/create",
            Call::MenuGet => "/cgi-bin/menu/get",
            Call::MenuDelete => "/cgi-bin/menu/delete",
            Call::CustomSend => "/cgi-bin/message/custom/send",
            Call::Typing => "/cgi-bin/message/custom/typing",
            Call::MaterialAdd => "/cgi-bin/material/add_material",
            Call::MediaUpload => "/cgi-bin/media/upload",
            Call::MaterialList => "/cgi-bin/material/batchget_material",
        };
        let shown = format!("{}{path}", self.config.api_base);
        let url = format!(
            "{shown}?access_token={}{query}",
            percent_encode(token.expose())
        );
        self.exchange(call, method, &url, &shown, payload)
    }

    /// Sends, reads WeChat's JSON and its errcode, and counts the outcome. `shown` is the URL
    /// without its query, for errors.
    fn exchange(
        &self,
        call: Call,
        method: Method,
        url: &str,
        shown: &str,
        payload: &Payload<'_>,
    ) -> Result<Value, ApiError> {
        let bad = |problem: String| {
            self.count(BAD_RESPONSE);
            ApiError::BadResponse {
                call,
                url: shown.to_owned(),
                problem,
            }
        };
        let sent = match payload {
            Payload::None => self.transport.send(method, url, None),
            Payload::Json(body) => self.transport.send(method, url, Some(body)),
            Payload::Form { content_type, body } => {
                self.transport.send_form(url, content_type, body)
            }
        };
        let answer = sent.map_err(|cause| {
            self.count(NETWORK_ERROR);
            ApiError::Network {
                call,
                url: shown.to_owned(),
                cause,
            }
        })?;
        if answer.status != 200 {
            return Err(bad(format!(
                "HTTP {} (WeChat answers 200, with an errcode for failures)",
                answer.status
            )));
        }
        let value: Value = serde_json::from_str(&answer.body)
            .map_err(|e| bad(format!("the answer is not JSON ({e})")))?;
        let errcode = value.get("errcode").and_then(Value::as_i64).unwrap_or(0);
        self.count(errcode);
        if errcode != 0 {
            let errmsg = value.get("errmsg").and_then(Value::as_str).unwrap_or("");
            return Err(ApiError::WeChat {
                call,
                errcode,
                errmsg: errmsg.to_owned(),
            });
        }
        Ok(value)
    }

    fn fetch_token(&self, refresh: Refresh) -> Result<Held, ApiError> {
        if let Ok(mut s) = self.stats.lock() {
            s.token_fetches += 1;
        }
        let c = &self.config;
        let endpoint = c.token_endpoint;
        let value = match endpoint {
            TokenEndpoint::Stable => {
                let url = format!("{}{}", c.api_base, endpoint.path());
                let body = json!({
                    "grant_type": "client_credential",
                    "appid": c.app_id,
                    "secret": c.secret.expose(),
                    "force_refresh": refresh == Refresh::Force,
                });
                self.exchange(
                    Call::Token,
                    Method::Post,
                    &url,
                    &url,
                    &Payload::Json(&body.to_string()),
                )?
            }
            TokenEndpoint::Classic => {
                // The classic endpoint takes the secret in the query: `shown` keeps it out of
                // every error.
                let shown = format!("{}{}", c.api_base, endpoint.path());
                let url = format!(
                    "{shown}?grant_type=client_credential&appid={}&secret={}",
                    percent_encode(&c.app_id),
                    percent_encode(c.secret.expose())
                );
                self.exchange(Call::Token, Method::Get, &url, &shown, &Payload::None)?
            }
        };
        let now = self.clock.now();
        let bad = |problem: &str| {
            self.count(BAD_RESPONSE);
            ApiError::BadResponse {
                call: Call::Token,
                url: c.api_base.clone(),
                problem: problem.to_owned(),
            }
        };
        let token = value
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad("the token answer has no access_token"))?;
        let expires_in = value
            .get("expires_in")
            .and_then(Value::as_u64)
            .filter(|s| *s > 0)
            .ok_or_else(|| bad("the token answer has no positive expires_in"))?;
        Ok(Held {
            token: AccessToken::new(token),
            fetched_at: now,
            expires_at: now.saturating_add(expires_in),
            endpoint,
            api_base: c.api_base.clone(),
        })
    }

    fn count(&self, errcode: i64) {
        if let Ok(mut s) = self.stats.lock() {
            *s.calls.entry(errcode).or_insert(0) += 1;
        }
    }
}

#[cfg(test)]
mod tests;
