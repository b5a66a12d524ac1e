//! Base64 for SASL PLAIN responses (RFC 4648 §4, the standard alphabet),
//! with the `base64` crate: the rule here is only how strict to be.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};

/// Decodes standard-alphabet base64. Padding is optional, but if present it
/// must complete the final quantum. Whitespace and any byte outside the
/// alphabet are rejected: a SASL response is a single token.
pub(crate) fn decode(input: &[u8]) -> Option<Vec<u8>> {
    let engine = if input.contains(&b'=') { &STANDARD } else { &STANDARD_NO_PAD };
    engine.decode(input).ok()
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    use super::decode;

    fn encode(input: &[u8]) -> String {
        STANDARD.encode(input)
    }

    #[test]
    fn rfc4648_test_vectors() {
        let vectors: [(&str, &str); 7] = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(decode(encoded.as_bytes()).as_deref(), Some(plain.as_bytes()), "{encoded}");
            assert_eq!(encode(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn sasl_plain_message() {
        assert_eq!(decode(b"AHVzZXIxAHNlY3JldA==").as_deref(), Some(&b"\0user1\0secret"[..]));
    }

    #[test]
    fn padding_is_optional_but_must_be_well_placed() {
        assert_eq!(decode(b"Zg").as_deref(), Some(&b"f"[..]));
        assert_eq!(decode(b"Zm8").as_deref(), Some(&b"fo"[..]));
        assert_eq!(decode(b"Zg="), None);
        assert_eq!(decode(b"Zg==="), None);
        assert_eq!(decode(b"Z=g="), None);
        assert_eq!(decode(b"="), None);
    }

    #[test]
    fn rejects_garbage() {
        for bad in [&b"Z"[..], b"Zm9v YmFy", b"Zm9v\r\n", b"Zm9-", b"\xff\xfe", b"Zm9v*A=="] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn round_trips_all_byte_values_and_lengths() {
        let data: Vec<u8> = (0..=255u8).collect();
        for len in 0..data.len() {
            let encoded = encode(&data[..len]);
            assert_eq!(decode(encoded.as_bytes()).as_deref(), Some(&data[..len]));
        }
    }
}
