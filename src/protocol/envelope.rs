//! The safe-mode (安全模式) envelope, both ways: sealing a push or a reply into `Encrypt` plus its
//! `msg_signature`, and opening one, checking the signature and the AppID inside.
//!
//! A push travels as `<xml><ToUserName/><Encrypt/></xml>` (compatible mode keeps the plaintext
//! fields beside `Encrypt`), with `msg_signature`, `timestamp` and `nonce` in the query. A reply
//! travels as `<xml><Encrypt/><MsgSignature/><TimeStamp/><Nonce/></xml>`. The server, the
//! simulator, the tests, the benchmarks and the fuzz targets all seal and open through here.
//!
//! Pure: the timestamp, the nonce and the 16 random bytes are parameters.

use std::fmt;

use crate::protocol::crypto::{self, AesKey, CryptoError};
use crate::protocol::verify::{self, Token};
use crate::protocol::xml::{self, push_cdata_element, XmlError};

/// What safe and compatible mode need besides the token: the decoded EncodingAESKey, and the
/// AppID that every payload names and every check compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafeMode {
    pub key: AesKey,
    pub app_id: String,
}

/// How a push travels between WeChat and the server, as chosen in the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 明文: plaintext body, plain signature.
    Plain,
    /// 兼容: the plaintext fields and `Encrypt`, both signatures.
    Compat,
    /// 安全: only `ToUserName` and `Encrypt`.
    Safe,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Plain => "plain",
            Mode::Compat => "compat",
            Mode::Safe => "safe",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A sealed payload: the `Encrypt` text and the `msg_signature` that covers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub encrypt: String,
    pub msg_signature: String,
}

/// Why an envelope could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvelopeError {
    /// `msg_signature` (or a reply's `MsgSignature`), `timestamp` or `nonce` is absent.
    MissingSignature,
    /// The signature does not cover this `Encrypt` with this token.
    SignatureMismatch,
    /// The body has no `Encrypt` field, or is not XML at all.
    NoEncrypt,
    /// `Encrypt` does not decrypt to WeChat's framing: not base64, a wrong key, a cut payload.
    Decrypt(CryptoError),
    /// The payload decrypts, but names another AppID.
    AppIdMismatch { expected: String, got: String },
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvelopeError::MissingSignature => f.write_str("missing msg_signature"),
            EnvelopeError::SignatureMismatch => f.write_str("msg_signature mismatch"),
            EnvelopeError::NoEncrypt => f.write_str("no Encrypt field"),
            EnvelopeError::Decrypt(e) => e.fmt(f),
            EnvelopeError::AppIdMismatch { expected, got } => {
                write!(
                    f,
                    "AppID {got:?} in the message does not match {expected:?}"
                )
            }
        }
    }
}

impl std::error::Error for EnvelopeError {}

impl SafeMode {
    /// Encrypts `xml` (with `random` as the 16-byte prefix, from the OS random source except in
    /// tests) and signs the result.
    pub fn seal(
        &self,
        token: &Token,
        xml: &str,
        timestamp: &str,
        nonce: &str,
        random: &[u8; 16],
    ) -> Sealed {
        let encrypt = crypto::encrypt(&self.key, &self.app_id, random, xml);
        let msg_signature = verify::msg_signature(token, timestamp, nonce, &encrypt);
        Sealed {
            encrypt,
            msg_signature,
        }
    }

    /// Checks `msg_signature` over `encrypt`, decrypts it and checks the AppID: the inner XML.
    pub fn open(
        &self,
        token: &Token,
        encrypt: &str,
        timestamp: Option<&str>,
        nonce: Option<&str>,
        msg_signature: Option<&str>,
    ) -> Result<String, EnvelopeError> {
        let (Some(ts), Some(nonce), Some(sig)) = (timestamp, nonce, msg_signature) else {
            return Err(EnvelopeError::MissingSignature);
        };
        let expected = verify::msg_signature(token, ts, nonce, encrypt);
        if !verify::signatures_match(&expected, sig) {
            return Err(EnvelopeError::SignatureMismatch);
        }
        let d = crypto::decrypt(&self.key, encrypt).map_err(EnvelopeError::Decrypt)?;
        if d.app_id != self.app_id {
            return Err(EnvelopeError::AppIdMismatch {
                expected: self.app_id.clone(),
                got: d.app_id,
            });
        }
        Ok(d.xml)
    }

    /// Reads a reply envelope as WeChat does and opens it.
    pub fn open_reply(&self, token: &Token, body: &str) -> Result<String, EnvelopeError> {
        let fields = ReplyEnvelope::read(body).ok_or(EnvelopeError::NoEncrypt)?;
        self.open(
            token,
            &fields.encrypt,
            fields.timestamp.as_deref().map(str::trim),
            fields.nonce.as_deref(),
            fields.msg_signature.as_deref(),
        )
    }
}

impl Sealed {
    /// The reply envelope WeChat expects from a server in safe mode.
    pub fn reply_xml(&self, timestamp: u64, nonce: &str) -> String {
        let mut out = String::with_capacity(self.encrypt.len() + 200);
        out.push_str("<xml>");
        push_cdata_element(&mut out, "Encrypt", &self.encrypt);
        push_cdata_element(&mut out, "MsgSignature", &self.msg_signature);
        xml::push_number_element(&mut out, "TimeStamp", timestamp);
        push_cdata_element(&mut out, "Nonce", nonce);
        out.push_str("</xml>");
        out
    }

    /// A safe-mode push body, as WeChat posts it: only the account and `Encrypt`.
    pub fn push_xml(&self, to_user_name: &str) -> String {
        let mut out = String::with_capacity(self.encrypt.len() + 100);
        out.push_str("<xml>");
        push_cdata_element(&mut out, "ToUserName", to_user_name);
        push_cdata_element(&mut out, "Encrypt", &self.encrypt);
        out.push_str("</xml>");
        out
    }

    /// A compatible-mode push body: the plaintext push with `Encrypt` added before `</xml>`.
    pub fn compat_push_xml(&self, plain_xml: &str) -> String {
        let mut enc = String::with_capacity(self.encrypt.len() + 40);
        push_cdata_element(&mut enc, "Encrypt", &self.encrypt);
        match plain_xml.rfind("</xml>") {
            Some(end) => format!("{}{enc}{}", &plain_xml[..end], &plain_xml[end..]),
            None => format!("{plain_xml}{enc}"),
        }
    }
}

/// The fields of a reply envelope, as read from the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyEnvelope {
    pub encrypt: String,
    pub msg_signature: Option<String>,
    pub timestamp: Option<String>,
    pub nonce: Option<String>,
}

impl ReplyEnvelope {
    /// `None` when `body` is not XML with an `Encrypt` field (a plaintext reply, `success`).
    pub fn read(body: &str) -> Option<ReplyEnvelope> {
        let root = read_xml(body).ok()?;
        let field = |n: &str| xml::child_text(&root, n);
        Some(ReplyEnvelope {
            encrypt: field("Encrypt")?,
            msg_signature: field("MsgSignature"),
            timestamp: field("TimeStamp"),
            nonce: field("Nonce"),
        })
    }
}

fn read_xml(body: &str) -> Result<xmltree::Element, XmlError> {
    xml::parse(&xml::sanitize(body.trim().as_bytes())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

    fn safe(app_id: &str) -> SafeMode {
        SafeMode {
            key: AesKey::from_encoding_aes_key(KEY).unwrap(),
            app_id: app_id.into(),
        }
    }

    fn token(t: &str) -> Token {
        Token::new(t).unwrap()
    }

    #[test]
    fn reply_envelope_matches_the_official_template() {
        let sealed = Sealed {
            encrypt: "E".into(),
            msg_signature: "S".into(),
        };
        assert_eq!(
            sealed.reply_xml(1713424427, "415670741"),
            "<xml><Encrypt><![CDATA[E]]></Encrypt><MsgSignature><![CDATA[S]]></MsgSignature><TimeStamp>1713424427</TimeStamp><Nonce><![CDATA[415670741]]></Nonce></xml>"
        );
    }

    #[test]
    fn a_sealed_reply_opens_with_the_same_token_key_and_app_id() {
        let s = safe("wx2c2769f8efd9abc2");
        let sealed = s.seal(&token("spamtest"), "<xml>hi</xml>", "5", "6", &[1; 16]);
        let body = sealed.reply_xml(5, "6");
        assert_eq!(
            s.open_reply(&token("spamtest"), &body).as_deref(),
            Ok("<xml>hi</xml>")
        );
        assert_eq!(
            s.open_reply(&token("othertoken"), &body),
            Err(EnvelopeError::SignatureMismatch)
        );
        assert_eq!(
            safe("wxOTHER").open_reply(&token("spamtest"), &body),
            Err(EnvelopeError::AppIdMismatch {
                expected: "wxOTHER".into(),
                got: "wx2c2769f8efd9abc2".into()
            })
        );
        assert_eq!(
            s.open_reply(&token("spamtest"), "<xml><Content>x</Content></xml>"),
            Err(EnvelopeError::NoEncrypt)
        );
    }

    #[test]
    fn a_sealed_push_opens_from_its_query_fields() {
        let s = safe("wx1");
        let t = token("spamtest");
        let sealed = s.seal(&t, "<xml/>", "1409735669", "1320562132", &[7; 16]);
        let open = |sig: Option<&str>| {
            s.open(
                &t,
                &sealed.encrypt,
                Some("1409735669"),
                Some("1320562132"),
                sig,
            )
        };
        assert_eq!(open(Some(&sealed.msg_signature)).as_deref(), Ok("<xml/>"));
        assert_eq!(open(None), Err(EnvelopeError::MissingSignature));
        assert_eq!(open(Some("0000")), Err(EnvelopeError::SignatureMismatch));
        assert!(sealed
            .push_xml("gh_1")
            .starts_with("<xml><ToUserName><![CDATA[gh_1]]></ToUserName><Encrypt>"));
        let compat = sealed.compat_push_xml("<xml><MsgType>text</MsgType></xml>");
        assert!(compat.starts_with("<xml><MsgType>text</MsgType><Encrypt><![CDATA["));
        assert!(compat.ends_with("]]></Encrypt></xml>"));
    }

    #[test]
    fn a_wrong_key_fails_to_decrypt_rather_than_to_verify() {
        let t = token("spamtest");
        let sealed = safe("wx1").seal(&t, "<xml/>", "1", "2", &[3; 16]);
        let other = SafeMode {
            key: AesKey::from_encoding_aes_key("kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR")
                .unwrap(),
            app_id: "wx1".into(),
        };
        assert!(matches!(
            other.open(
                &t,
                &sealed.encrypt,
                Some("1"),
                Some("2"),
                Some(&sealed.msg_signature)
            ),
            Err(EnvelopeError::Decrypt(_))
        ));
    }
}
