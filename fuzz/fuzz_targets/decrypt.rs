//! The `Encrypt` field: decrypting anything must not panic; encrypt → decrypt must round-trip.
#![no_main]

use aes::cipher::{block_padding::NoPadding, BlockEncryptMut, KeyIvInit};
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use wxmp::protocol::crypto::{self, AesKey};

const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const APP_ID: &str = "wx2c2769f8efd9abc2";

fn raw_key() -> [u8; 32] {
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    engine.decode(KEY).unwrap().try_into().unwrap()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let key = AesKey::from_encoding_aes_key(KEY).unwrap();
    match mode % 4 {
        // The field as sent: any text.
        0 => {
            let _ = crypto::decrypt(&key, &String::from_utf8_lossy(rest));
        }
        // Any plaintext under the right key, so the padding and length checks are reached.
        1 => {
            let raw = raw_key();
            let mut buf = rest.to_vec();
            buf.resize(buf.len().div_ceil(16).max(1) * 16, 0);
            let len = buf.len();
            let cipher = cbc::Encryptor::<aes::Aes256>::new(&raw.into(), raw[..16].into())
                .encrypt_padded_mut::<NoPadding>(&mut buf, len)
                .unwrap()
                .to_vec();
            let b64 = base64::engine::general_purpose::STANDARD.encode(cipher);
            if let Ok(d) = crypto::decrypt(&key, &b64) {
                assert!(d.xml.len() + d.app_id.len() + 20 <= len);
            }
        }
        // Round trip of any message and AppID.
        2 => {
            let text = String::from_utf8_lossy(rest);
            let (xml, app_id) = text.split_once('\u{0}').unwrap_or((&text, APP_ID));
            let enc = crypto::encrypt(&key, app_id, b"0123456789abcdef", xml);
            let d = crypto::decrypt(&key, &enc).expect("round trip");
            assert_eq!((d.xml.as_str(), d.app_id.as_str()), (xml, app_id));
        }
        // The EncodingAESKey from the command line.
        _ => {
            let _ = AesKey::from_encoding_aes_key(&String::from_utf8_lossy(rest));
        }
    }
});
