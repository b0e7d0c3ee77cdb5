//! WeChat request signatures: the plain `signature` on every push and URL check, and the
//! `msg_signature` that covers the `Encrypt` field in safe mode.
//!
//! Both are `hex(sha1(sorted(parts).join("")))`. Pure functions over strings: nothing here knows
//! about HTTP or where the parts came from.

use std::fmt;

/// The token configured in the WeChat console (服务器配置 → Token).
///
/// Its `Debug` and `Display` are redacted so it can never leak into a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

/// Why a token was refused at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// The token is the empty string.
    Empty,
    /// WeChat only accepts 3 to 32 ASCII letters and digits; anything else can never match.
    Invalid,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Empty => f.write_str("the token is empty"),
            TokenError::Invalid => f.write_str(
                "the token must be 3 to 32 ASCII letters or digits, as the WeChat console requires",
            ),
        }
    }
}

impl std::error::Error for TokenError {}

impl Token {
    /// Accepts what the WeChat console accepts (3–32 ASCII letters and digits).
    pub fn new(token: &str) -> Result<Token, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Empty);
        }
        if !(3..=32).contains(&token.len()) || !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(TokenError::Invalid);
        }
        Ok(Token(token.to_owned()))
    }

    /// The secret itself, for signing. Deliberately not `AsRef`/`Deref`: every use is explicit.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

/// `hex(sha1(sorted(parts).concat()))`, the scheme behind both WeChat signatures.
pub fn sign(parts: &mut [&str]) -> String {
    parts.sort_unstable();
    let mut sha = sha1_smol::Sha1::new();
    for part in parts.iter() {
        sha.update(part.as_bytes());
    }
    hex::encode(sha.digest().bytes())
}

/// The plain `signature` WeChat puts on every URL check and message push.
pub fn signature(token: &Token, timestamp: &str, nonce: &str) -> String {
    sign(&mut [token.expose(), timestamp, nonce])
}

/// The `msg_signature` of safe mode, which also covers the `Encrypt` payload.
pub fn msg_signature(token: &Token, timestamp: &str, nonce: &str, encrypt: &str) -> String {
    sign(&mut [token.expose(), timestamp, nonce, encrypt])
}

/// Compares a computed signature with the one the peer sent, in time independent of where they
/// differ (so the signature cannot be guessed byte by byte). Hex case is ignored.
pub fn signatures_match(expected: &str, given: &str) -> bool {
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| {
        acc | (x.to_ascii_lowercase() ^ y.to_ascii_lowercase())
    });
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(s: &str) -> Token {
        Token::new(s).unwrap()
    }

    #[test]
    fn official_get_verification_vector_matches() {
        // developers.weixin.qq.com message-push doc, Token "AAAAA".
        assert_eq!(
            signature(&token("AAAAA"), "1714036504", "1514711492"),
            "f464b24fc39322e44b38aa78f5edd27bd1441696"
        );
    }

    #[test]
    fn official_post_vectors_match() {
        assert_eq!(
            signature(&token("AAAAA"), "1714037059", "486452656"),
            "899cf89e464efb63f54ddac96b0a0a235f53aa78"
        );
        assert_eq!(
            signature(&token("AAAAA"), "1714112445", "415670741"),
            "6c5c811b55cc85e0e1b54100749188c20beb3f5d"
        );
    }

    #[test]
    fn official_reply_msg_signature_vector_matches() {
        assert_eq!(
            msg_signature(
                &token("AAAAA"),
                "1713424427",
                "415670741",
                "ELGduP2YcVatjqIS+eZbp80MNLoAUWvzzyJxgGzxZO/5sAvd070Bs6qrLARC9nVHm48Y4hyRbtzve1L32tmxSQ=="
            ),
            "1b9339964ed2e271e7c7b6ff2b0ef902fc94dea1"
        );
    }

    #[test]
    fn tencent_sample_plain_signature_matches() {
        assert_eq!(
            signature(&token("spamtest"), "1409735669", "1320562132"),
            "16120ec1b8dbb870f510d87ce6bc2463eae6ca1a"
        );
    }

    #[test]
    fn signatures_match_is_exact_but_case_insensitive() {
        let s = "f464b24fc39322e44b38aa78f5edd27bd1441696";
        assert!(signatures_match(s, s));
        assert!(signatures_match(s, &s.to_uppercase()));
        assert!(!signatures_match(
            s,
            "f464b24fc39322e44b38aa78f5edd27bd1441697"
        ));
        assert!(!signatures_match(s, &s[..39]));
        assert!(!signatures_match(s, ""));
    }

    #[test]
    fn token_is_validated_and_redacted() {
        assert_eq!(Token::new(""), Err(TokenError::Empty));
        assert_eq!(Token::new("ab"), Err(TokenError::Invalid));
        assert_eq!(Token::new("has space"), Err(TokenError::Invalid));
        assert_eq!(Token::new(&"a".repeat(33)), Err(TokenError::Invalid));
        let t = token("secret123");
        assert_eq!(format!("{t:?}"), "Token(***)");
        assert_eq!(t.expose(), "secret123");
    }
}
