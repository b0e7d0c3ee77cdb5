//! Safe (安全) and compatible (兼容) mode: WeChat's AES-256-CBC message encryption.
//!
//! Plaintext layout: `random(16) ‖ len(4, big-endian) ‖ xml ‖ appid`, PKCS#7-padded to 32-byte
//! blocks (WeChat pads to 32 even though AES blocks are 16), encrypted with key = the decoded
//! EncodingAESKey and IV = its first 16 bytes, then base64. The random prefix is a parameter:
//! callers supply OS randomness, tests supply fixed bytes.
//!
//! Out of scope: signatures and the XML around `Encrypt` (see `envelope`), and HTTP.

use std::fmt;

use aes::cipher::{block_padding::NoPadding, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;

type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;

/// WeChat pads to 32-byte blocks.
const PAD_BLOCK: usize = 32;

/// Standard base64 for the `Encrypt` payload.
const B64: GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The EncodingAESKey decoder: WeChat's console and its own samples produce keys whose last
/// character carries non-zero trailing bits, which strict decoders reject.
const KEY_B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A decoded EncodingAESKey; only exists if valid. `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct AesKey([u8; 32]);

impl fmt::Debug for AesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AesKey(***)")
    }
}

/// Why an EncodingAESKey was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// Not exactly 43 characters.
    Length(usize),
    /// A character outside the base64 alphabet.
    NotBase64,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Length(n) => write!(f, "the AES key must be 43 characters, got {n}"),
            KeyError::NotBase64 => f.write_str("the AES key must be base64 (A-Z, a-z, 0-9, +, /)"),
        }
    }
}

impl std::error::Error for KeyError {}

impl AesKey {
    /// Decodes the 43-character EncodingAESKey from the WeChat console.
    pub fn from_encoding_aes_key(key: &str) -> Result<AesKey, KeyError> {
        let n = key.chars().count();
        if n != 43 {
            return Err(KeyError::Length(n));
        }
        let bytes = KEY_B64.decode(key).map_err(|_| KeyError::NotBase64)?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| KeyError::NotBase64)?;
        Ok(AesKey(arr))
    }

    fn iv(&self) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&self.0[..16]);
        iv
    }
}

/// Why an `Encrypt` payload was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CryptoError {
    /// `Encrypt` is not valid base64.
    Base64,
    /// The ciphertext is empty or not a whole number of AES blocks.
    CipherLength(usize),
    /// The PKCS#7 padding is not 1..=32 bytes of the same value.
    Padding,
    /// The 4-byte length prefix points past the end of the plaintext.
    Length,
    /// The embedded XML is not UTF-8.
    Utf8,
}

impl fmt::Display for CryptoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CryptoError::Base64 => f.write_str("Encrypt is not valid base64"),
            CryptoError::CipherLength(n) => {
                write!(f, "ciphertext length {n} is not a multiple of 16")
            }
            CryptoError::Padding => f.write_str("bad padding after decryption"),
            CryptoError::Length => f.write_str("bad length prefix after decryption"),
            CryptoError::Utf8 => f.write_str("decrypted message is not UTF-8"),
        }
    }
}

impl std::error::Error for CryptoError {}

/// A decrypted payload: the XML and the AppID it was addressed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decrypted {
    pub xml: String,
    pub app_id: String,
}

/// Decrypts `Encrypt`; the caller checks the AppID (see `envelope::SafeMode::open`).
pub fn decrypt(key: &AesKey, encrypt: &str) -> Result<Decrypted, CryptoError> {
    let mut buf = B64
        .decode(encrypt.trim())
        .map_err(|_| CryptoError::Base64)?;
    if buf.is_empty() || buf.len() % 16 != 0 {
        return Err(CryptoError::CipherLength(buf.len()));
    }
    let plain = Aes256CbcDec::new(&key.0.into(), &key.iv().into())
        .decrypt_padded_mut::<NoPadding>(&mut buf)
        .map_err(|_| CryptoError::Padding)?;
    let pad = usize::from(*plain.last().ok_or(CryptoError::Padding)?);
    if pad == 0 || pad > PAD_BLOCK || pad > plain.len() {
        return Err(CryptoError::Padding);
    }
    let (content, padding) = plain.split_at(plain.len() - pad);
    if padding.iter().any(|&b| usize::from(b) != pad) {
        return Err(CryptoError::Padding);
    }
    let len_bytes: [u8; 4] = content
        .get(16..20)
        .and_then(|s| s.try_into().ok())
        .ok_or(CryptoError::Length)?;
    let len = u32::from_be_bytes(len_bytes) as usize;
    let xml_end = 20usize.checked_add(len).ok_or(CryptoError::Length)?;
    let app_id = content.get(xml_end..).ok_or(CryptoError::Length)?;
    let app_id = String::from_utf8(app_id.to_vec()).map_err(|_| CryptoError::Utf8)?;
    // The XML is taken out of the buffer in place rather than copied.
    buf.truncate(xml_end);
    buf.drain(..20);
    Ok(Decrypted {
        xml: String::from_utf8(buf).map_err(|_| CryptoError::Utf8)?,
        app_id,
    })
}

/// Encrypts a reply; `random` must come from a secure source except in tests.
pub fn encrypt(key: &AesKey, app_id: &str, random: &[u8; 16], xml: &str) -> String {
    let body_len = 16 + 4 + xml.len() + app_id.len();
    let pad = PAD_BLOCK - body_len % PAD_BLOCK;
    let mut buf = Vec::with_capacity(body_len + pad);
    buf.extend_from_slice(random);
    // A reply longer than 4 GiB cannot exist: bodies are capped far below that.
    buf.extend_from_slice(&(xml.len() as u32).to_be_bytes());
    buf.extend_from_slice(xml.as_bytes());
    buf.extend_from_slice(app_id.as_bytes());
    buf.resize(body_len + pad, pad as u8);
    let len = buf.len();
    // Encrypted in place and encoded from there; the length is a whole number of blocks, so
    // this cannot fail.
    Aes256CbcEnc::new(&key.0.into(), &key.iv().into())
        .encrypt_padded_mut::<NoPadding>(&mut buf, len)
        .map(|cipher| B64.encode(cipher))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(s: &str) -> AesKey {
        AesKey::from_encoding_aes_key(s).unwrap()
    }

    const SAMPLE_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

    /// Decrypts and checks the AppID, as the envelope does.
    fn decrypt_for(k: &AesKey, app_id: &str, enc: &str) -> Result<String, String> {
        let d = decrypt(k, enc).map_err(|e| e.to_string())?;
        if d.app_id != app_id {
            return Err(format!("AppID {}", d.app_id));
        }
        Ok(d.xml)
    }

    #[test]
    fn keys_with_trailing_bits_decode_leniently() {
        for k in [
            SAMPLE_KEY,
            "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR",
            "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert!(AesKey::from_encoding_aes_key(k).is_ok(), "{k}");
        }
        assert_eq!(
            key("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").0,
            [0u8; 32]
        );
    }

    #[test]
    fn bad_keys_are_refused() {
        assert_eq!(
            AesKey::from_encoding_aes_key("abc"),
            Err(KeyError::Length(3))
        );
        assert_eq!(
            AesKey::from_encoding_aes_key(&"!".repeat(43)),
            Err(KeyError::NotBase64)
        );
        assert_eq!(format!("{:?}", key(SAMPLE_KEY)), "AesKey(***)");
    }

    #[test]
    fn official_worked_example_encrypts_byte_for_byte() {
        // developers.weixin.qq.com message-push doc: the reply encrypted with a fixed random.
        let k = key("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
        let out = encrypt(
            &k,
            "wxba5fad812f8e6fb9",
            b"707722b803182950",
            "{\"demo_resp\":\"good luck\"}",
        );
        assert_eq!(out, "ELGduP2YcVatjqIS+eZbp80MNLoAUWvzzyJxgGzxZO/5sAvd070Bs6qrLARC9nVHm48Y4hyRbtzve1L32tmxSQ==");
    }

    #[test]
    fn official_worked_example_decrypts() {
        let k = key("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
        let enc = "+qdx1OKCy+5JPCBFWw70tm0fJGb2Jmeia4FCB7kao+/Q5c/ohsOzQHi8khUOb05JCpj0JB4RvQMkUyus8TPxLKJGQqcvZqzDpVzazhZv6JsXUnnR8XGT740XgXZUXQ7vJVnAG+tE8NUd4yFyjPy7GgiaviNrlCTj+l5kdfMuFUPpRSrfMZuMcp3Fn2Pede2IuQrKEYwKSqFIZoNqJ4M8EajAsjLY2km32IIjdf8YL/P50F7mStwntrA2cPDrM1kb6mOcfBgRtWygb3VIYnSeOBrebufAlr7F9mFUPAJGj04=";
        let xml = decrypt_for(&k, "wxba5fad812f8e6fb9", enc).unwrap();
        assert_eq!(xml, "{\"ToUserName\":\"gh_97417a04a28d\",\"FromUserName\":\"o9AgO5Kd5ggOC-bXrbNODIiE3bGY\",\"CreateTime\":1714112445,\"MsgType\":\"event\",\"Event\":\"debug_demo\",\"debug_str\":\"hello world\"}");
        assert_eq!(xml.len(), 167);
    }

    #[test]
    fn java_sample_vectors_encrypt_byte_for_byte() {
        let k = key(SAMPLE_KEY);
        assert_eq!(
            encrypt(&k, "wxb11529c136998cb6", b"aaaabbbbccccdddd", "我是中文abcd123"),
            "jn1L23DB+6ELqJ+6bruv21Y6MD7KeIfP82D6gU39rmkgczbWwt5+3bnyg5K55bgVtVzd832WzZGMhkP72vVOfg=="
        );
        let plain = include_str!("../../tests/fixtures/java_vector_b_plain.xml");
        let expected = "jn1L23DB+6ELqJ+6bruv23M2GmYfkv0xBh2h+XTBOKVKcgDFHle6gqcZ1cZrk3e1qjPQ1F4RsLWzQRG9udbKWesxlkupqcEcW7ZQweImX9+wLMa0GaUzpkycA8+IamDBxn5loLgZpnS7fVAbExOkK5DYHBmv5tptA9tklE/fTIILHR8HLXa5nQvFb3tYPKAlHF3rtTeayNf0QuM+UW/wM9enGIDIJHF7CLHiDNAYxr+r+OrJCmPQyTy8cVWlu9iSvOHPT/77bZqJucQHQ04sq7KZI27OcqpQNSto2OdHCoTccjggX5Z9Mma0nMJBU+jLKJ38YB1fBIz+vBzsYjrTmFQ44YfeEuZ+xRTQwr92vhA9OxchWVINGC50qE/6lmkwWTwGX9wtQpsJKhP+oS7rvTY8+VdzETdfakjkwQ5/Xka042OlUb1/slTwo4RscuQ+RdxSGvDahxAJ6+EAjLt9d8igHngxIbf6YyqqROxuxqIeIch3CssH/LqRs+iAcILvApYZckqmA7FNERspKA5f8GoJ9sv8xmGvZ9Yrf57cExWtnX8aCMMaBropU/1k+hKP5LVdzbWCG0hGwx/dQudYR/eXp3P0XxjlFiy+9DMlaFExWUZQDajPkdPrEeOwofJb";
        assert_eq!(
            encrypt(&k, "wxb11529c136998cb6", b"aaaabbbbccccdddd", plain),
            expected
        );
        assert_eq!(
            decrypt_for(&k, "wxb11529c136998cb6", expected).unwrap(),
            plain
        );
    }

    #[test]
    fn tencent_compat_sample_decrypts() {
        let k = key(SAMPLE_KEY);
        let enc = "hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PGHQHFVAFmOD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jisa+h6tEDYsVticbSnyU8dKOIbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tCOp3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJvnhvQl+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM669WuMyVWQLCzpu9GhglF2PE=";
        let d = decrypt(&k, enc).unwrap();
        assert_eq!(d.app_id, "wx2c2769f8efd9abc2");
        assert_eq!(
            d.xml,
            include_str!("../../tests/fixtures/safe_compat_sample_decrypted.xml")
        );
        assert_eq!(
            decrypt_for(&k, "wxOTHER", enc),
            Err("AppID wx2c2769f8efd9abc2".to_owned())
        );
    }

    #[test]
    fn malformed_payloads_are_errors_not_panics() {
        let k = key(SAMPLE_KEY);
        assert_eq!(decrypt(&k, "not base64!"), Err(CryptoError::Base64));
        assert_eq!(decrypt(&k, ""), Err(CryptoError::CipherLength(0)));
        assert_eq!(
            decrypt(&k, &B64.encode([0u8; 15])),
            Err(CryptoError::CipherLength(15))
        );
        // A block that decrypts to garbage: padding or length must catch it.
        let garbage = B64.encode([7u8; 64]);
        assert!(matches!(
            decrypt(&k, &garbage),
            Err(CryptoError::Padding | CryptoError::Length | CryptoError::Utf8)
        ));
    }

    /// Encrypts `raw` plaintext bytes exactly as given (no framing or padding added).
    fn encrypt_raw(k: &AesKey, raw: &[u8]) -> String {
        let mut buf = raw.to_vec();
        let len = buf.len();
        let c = Aes256CbcEnc::new(&k.0.into(), &k.iv().into())
            .encrypt_padded_mut::<NoPadding>(&mut buf, len)
            .unwrap()
            .to_vec();
        B64.encode(c)
    }

    #[test]
    fn padding_and_length_are_bounds_checked() {
        let k = key(SAMPLE_KEY);
        // Padding byte 33 is out of range.
        assert_eq!(
            decrypt(&k, &encrypt_raw(&k, &[33u8; 64])),
            Err(CryptoError::Padding)
        );
        // Padding bytes disagree.
        let mut p = vec![0u8; 62];
        p.extend([1, 2]);
        assert_eq!(decrypt(&k, &encrypt_raw(&k, &p)), Err(CryptoError::Padding));
        // Length prefix larger than the payload.
        let mut l = vec![0u8; 16];
        l.extend(u32::MAX.to_be_bytes());
        l.resize(32, b'x');
        l.extend([32u8; 32]);
        assert_eq!(decrypt(&k, &encrypt_raw(&k, &l)), Err(CryptoError::Length));
        // Too short to hold the random prefix and length.
        assert_eq!(
            decrypt(&k, &encrypt_raw(&k, &[16u8; 16])),
            Err(CryptoError::Length)
        );
        // Any pad 1..=32 is accepted (some peers pad to 16).
        let mut ok = vec![0u8; 16];
        ok.extend(2u32.to_be_bytes());
        ok.extend(b"<x");
        ok.extend(b"app");
        ok.resize(32, 7);
        // 16 + 4 + 2 + 3 = 25 bytes of content, 7 bytes of padding with value 7.
        assert_eq!(decrypt_for(&k, "app", &encrypt_raw(&k, &ok)).unwrap(), "<x");
    }

    proptest! {
        #[test]
        fn encrypt_then_decrypt_round_trips(xml in any::<String>(), random in any::<[u8; 16]>(), app in "[a-z0-9]{0,18}") {
            let k = key(SAMPLE_KEY);
            let enc = encrypt(&k, &app, &random, &xml);
            prop_assert_eq!(decrypt_for(&k, &app, &enc).unwrap(), xml);
        }

        #[test]
        fn decrypt_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let k = key(SAMPLE_KEY);
            let _ = decrypt(&k, &encrypt_raw(&k, &{
                let mut b = bytes.clone();
                b.resize(b.len().div_ceil(16) * 16, 0);
                b
            }));
        }
    }
}
