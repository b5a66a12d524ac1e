//! A minimal, strict base64 decoder (RFC 4648 §4) for SASL PLAIN responses.
//!
//! Written here rather than pulled in as a crate because the server needs
//! exactly one direction of one alphabet.

/// Decodes standard-alphabet base64. Padding is optional, but if present it
/// must complete the final quantum. Whitespace and any byte outside the
/// alphabet are rejected: a SASL response is a single token.
pub(crate) fn decode(input: &[u8]) -> Option<Vec<u8>> {
    let pad = input.iter().rev().take_while(|&&b| b == b'=').count();
    if pad > 2 || (pad > 0 && input.len() % 4 != 0) {
        return None;
    }
    let data = &input[..input.len() - pad];
    if data.len() % 4 == 1 {
        // One leftover sextet cannot encode a whole octet.
        return None;
    }
    let mut out = Vec::with_capacity(data.len() / 4 * 3 + 2);
    for quantum in data.chunks(4) {
        let mut acc: u32 = 0;
        for &b in quantum {
            acc = (acc << 6) | u32::from(value(b)?);
        }
        // Left-align a short final quantum to 24 bits, then take the octets it carries.
        acc <<= 6 * (4 - quantum.len() as u32);
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..quantum.len()]);
    }
    Some(out)
}

fn value(b: u8) -> Option<u8> {
    match b {
        b'A'..=b'Z' => Some(b - b'A'),
        b'a'..=b'z' => Some(b - b'a' + 26),
        b'0'..=b'9' => Some(b - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::decode;

    /// Test-only encoder, to check decoding round-trips every length.
    fn encode(input: &[u8]) -> String {
        const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in input.chunks(3) {
            let mut acc = 0u32;
            for (i, &b) in chunk.iter().enumerate() {
                acc |= u32::from(b) << (16 - 8 * i);
            }
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[((acc >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
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
