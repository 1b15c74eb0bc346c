//! tollgate's own API keys: `tg-` and 43 base62 characters holding 32 random bytes.
//! Only the SHA-256 of a key is stored, with a short prefix for display; the key itself
//! exists once, in the response that created it.

use sha2::{Digest, Sha256};

use crate::config::Secret;

pub const KEY_PREFIX: &str = "tg-";
/// Characters shown for display: `tg-` and 8 of the random part (~47 bits; enough to
/// tell keys apart, far from enough to guess one).
const DISPLAY_LEN: usize = 11;
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// ceil(256 / log2(62)): every 32-byte value fits in 43 base62 digits.
const DIGITS: usize = 43;

/// A freshly minted key.
pub struct NewKey {
    pub secret: Secret,
    pub hash: [u8; 32],
    pub prefix: String,
}

/// Mints a key from the operating system's CSPRNG.
pub fn generate() -> Result<NewKey, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let secret = format!("{KEY_PREFIX}{}", base62(bytes));
    Ok(NewKey {
        hash: hash(&secret),
        prefix: secret[..DISPLAY_LEN].to_owned(),
        secret: Secret::new(secret),
    })
}

pub fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Whether `given` is the same secret as the one whose digest is `expected`, in constant
/// time: every byte of the digests is compared whatever the first difference, so the
/// time taken reveals nothing about how much of a guess was right. Comparing digests
/// rather than the secrets also hides the secret's length. The admin key is checked
/// here; tollgate keys are looked up by their digest in a map, where timing could at
/// most reveal a digest prefix, which says nothing about the key (SHA-256 preimages).
pub fn matches(given: &str, expected: &[u8; 32]) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(hash(given).ct_eq(expected))
}

/// Whether a bearer is shaped like a tollgate key (it may still be unknown).
pub fn looks_like_key(bearer: &str) -> bool {
    bearer.len() == KEY_PREFIX.len() + DIGITS
        && bearer.starts_with(KEY_PREFIX)
        && bearer[KEY_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric())
}

/// Fixed-width base62 of a 256-bit big-endian number, by repeated division.
fn base62(mut number: [u8; 32]) -> String {
    let mut digits = [b'0'; DIGITS];
    for digit in digits.iter_mut().rev() {
        let mut remainder = 0u32;
        for byte in &mut number {
            let value = (remainder << 8) | u32::from(*byte);
            *byte = u8::try_from(value / 62).unwrap_or(0);
            remainder = value % 62;
        }
        *digit = ALPHABET[remainder as usize];
    }
    digits.iter().map(|&b| char::from(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_tg_and_43_base62_characters() {
        let key = generate().unwrap();
        let text = key.secret.expose();
        assert!(looks_like_key(text), "{text}");
        assert_eq!(text.len(), 46);
        assert!(text.starts_with(&key.prefix));
        assert_eq!(key.prefix.len(), 11);
        assert_eq!(hash(text), key.hash);
        assert_ne!(generate().unwrap().secret.expose(), text, "random");
    }

    #[test]
    fn base62_is_exact_at_the_edges() {
        assert_eq!(base62([0; 32]), "0".repeat(43));
        let mut one = [0; 32];
        one[31] = 61;
        assert_eq!(base62(one), format!("{}z", "0".repeat(42)));
        one[31] = 62;
        assert_eq!(base62(one), format!("{}10", "0".repeat(41)));
        // 2^256 - 1 still fits in 43 digits, so no two keys share an encoding.
        assert!(base62([255; 32]).as_bytes()[0] != b'0');
    }

    #[test]
    fn secrets_match_only_their_own_digest() {
        let expected = hash("admin-key");
        assert!(matches("admin-key", &expected));
        for wrong in ["", "admin-ke", "admin-key ", "admin-kez", "Admin-key", "x"] {
            assert!(!matches(wrong, &expected), "{wrong:?}");
        }
        // The comparison is subtle's: a digest differing in its last byte only, or in
        // its first, is refused the same way.
        let mut last = expected;
        last[31] ^= 1;
        let mut first = expected;
        first[0] ^= 0x80;
        for digest in [last, first, [0; 32]] {
            assert!(!matches("admin-key", &digest));
        }
    }

    #[test]
    fn only_key_shaped_bearers_look_like_keys() {
        assert!(!looks_like_key("sk-abc"));
        assert!(!looks_like_key("tg-short"));
        assert!(!looks_like_key(&format!("tg-{}!", "a".repeat(42))));
    }
}
