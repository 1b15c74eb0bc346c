//! Pixel sizes of images sent inline as base64 `data:` URLs, for pre-request token
//! estimates. Only the header bytes are decoded: the size of a multi-megabyte image is
//! read from at most [`MAX_DECODED`] bytes of it.

use std::io::ErrorKind;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Most bytes decoded from one payload: enough for PNG, GIF and WebP headers (under 64
/// bytes) and for the SOF marker of nearly every JPEG, which follows the EXIF, ICC and
/// thumbnail segments. A JPEG whose SOF lies further in reports no size.
pub const MAX_DECODED: usize = 64 * 1024;

/// Decoded-byte budgets tried in turn: most images need only the first, so a large JPEG
/// is the only case that decodes the full [`MAX_DECODED`].
const BUDGETS: [usize; 2] = [1024, MAX_DECODED];

/// Longest `data:` header searched for the comma that starts the payload.
const MAX_HEADER: usize = 256;

/// Standard alphabet; the payload may end with or without `=` padding.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Width and height of a `data:<type>;base64,<payload>` image URL, read from its header
/// bytes (PNG, JPEG, GIF or WebP, the formats OpenAI accepts).
///
/// `None` for anything else: http(s) URLs, file ids, non-base64 data URLs, invalid base64,
/// unsupported or corrupt images, zero-sized images, and JPEGs whose SOF marker lies past
/// the first [`MAX_DECODED`] bytes. The media type is not checked, since the bytes are
/// sniffed. Never decodes more than [`MAX_DECODED`] bytes of the payload.
pub fn data_url_size(url: &str) -> Option<(u32, u32)> {
    let payload = base64_payload(url.as_bytes())?;
    let mut decoded = Vec::new();
    let mut consumed = 0;
    for budget in BUDGETS {
        let limit = budget / 3 * 4;
        let end = if payload.len() <= limit {
            payload.len()
        } else {
            // Whole 4-character groups, so the prefix decodes on its own.
            limit
        };
        BASE64
            .decode_vec(payload.get(consumed..end)?, &mut decoded)
            .ok()?;
        consumed = end;
        match imagesize::blob_size(&decoded) {
            Ok(size) => {
                let width = u32::try_from(size.width).ok()?;
                let height = u32::try_from(size.height).ok()?;
                return (width > 0 && height > 0).then_some((width, height));
            }
            // Ran out of bytes before the size: decode more if any are left.
            Err(imagesize::ImageError::IoError(error))
                if error.kind() == ErrorKind::UnexpectedEof && consumed < payload.len() => {}
            Err(_) => return None,
        }
    }
    None
}

/// The base64 payload of a `data:...;base64,` URL (the scheme and the `base64` flag are
/// case-insensitive, as RFC 2397 allows).
fn base64_payload(url: &[u8]) -> Option<&[u8]> {
    let scheme = url.get(..5)?;
    if !scheme.eq_ignore_ascii_case(b"data:") {
        return None;
    }
    let comma = url.iter().take(MAX_HEADER).position(|&b| b == b',')?;
    let header = url.get(5..comma)?;
    let flag = header.rsplit(|&b| b == b';').next()?;
    if header.len() == flag.len() || !flag.eq_ignore_ascii_case(b"base64") {
        return None;
    }
    url.get(comma + 1..)
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};

    use super::*;

    /// PNG signature and IHDR for `width`×`height`; imagesize needs nothing more.
    fn png(width: u32, height: u32) -> Vec<u8> {
        let mut bytes = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
        bytes.extend(width.to_be_bytes());
        bytes.extend(height.to_be_bytes());
        bytes.extend(b"\x08\x06\x00\x00\x00");
        bytes.extend([0x5a; 4]); // CRC, unchecked
        bytes
    }

    fn gif(width: u16, height: u16) -> Vec<u8> {
        let mut bytes = b"GIF89a".to_vec();
        bytes.extend(width.to_le_bytes());
        bytes.extend(height.to_le_bytes());
        bytes.extend(b"\x80\x00\x00");
        bytes
    }

    /// SOI, an APP0 segment padded by `filler` bytes, then SOF0 for `width`×`height`.
    fn jpeg(width: u16, height: u16, filler: usize) -> Vec<u8> {
        let mut bytes = b"\xff\xd8".to_vec();
        let mut remaining = filler;
        // Segments hold at most 65533 payload bytes each.
        loop {
            let chunk = remaining.min(60_000);
            bytes.extend(b"\xff\xe1");
            bytes.extend(u16::try_from(chunk + 2).unwrap_or(u16::MAX).to_be_bytes());
            bytes.extend(std::iter::repeat_n(0u8, chunk));
            remaining -= chunk;
            if remaining == 0 {
                break;
            }
        }
        bytes.extend(b"\xff\xc0\x00\x11\x08");
        bytes.extend(height.to_be_bytes());
        bytes.extend(width.to_be_bytes());
        bytes.extend(b"\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01");
        bytes.extend(b"\xff\xd9");
        bytes
    }

    /// A lossless (VP8L) WebP header.
    fn webp(width: u32, height: u32) -> Vec<u8> {
        let mut bytes = b"RIFF\x00\x00\x00\x00WEBPVP8L\x00\x00\x00\x00\x2f".to_vec();
        let bits = (width - 1) | ((height - 1) << 14);
        bytes.extend(bits.to_le_bytes());
        bytes
    }

    fn with_garbage(mut bytes: Vec<u8>, len: usize) -> Vec<u8> {
        bytes.extend((0..len).map(|i| (i * 7 % 251) as u8));
        bytes
    }

    fn data_url(media: &str, bytes: &[u8]) -> String {
        format!("data:{media};base64,{}", STANDARD.encode(bytes))
    }

    #[test]
    fn sizes_of_data_urls() {
        let cases: Vec<(String, Option<(u32, u32)>)> = vec![
            (
                data_url("image/png", &with_garbage(png(300, 200), 5000)),
                Some((300, 200)),
            ),
            (data_url("image/png", &png(1, 1)), Some((1, 1))),
            (
                data_url("image/gif", &with_garbage(gif(64, 32), 100)),
                Some((64, 32)),
            ),
            (
                data_url("image/jpeg", &jpeg(1920, 1080, 20)),
                Some((1920, 1080)),
            ),
            // SOF past the first budget: the second one finds it.
            (
                data_url("image/jpeg", &jpeg(800, 600, 30_000)),
                Some((800, 600)),
            ),
            // SOF past MAX_DECODED: not found.
            (data_url("image/jpeg", &jpeg(800, 600, 70_000)), None),
            (data_url("image/webp", &webp(640, 480)), Some((640, 480))),
            // The media type is not trusted; the bytes are sniffed.
            (data_url("image/jpeg", &png(10, 20)), Some((10, 20))),
            (
                data_url("application/octet-stream", &png(10, 20)),
                Some((10, 20)),
            ),
            (
                data_url("image/png;charset=x", &png(10, 20)),
                Some((10, 20)),
            ),
            (
                format!("DATA:image/png;BASE64,{}", STANDARD.encode(png(7, 9))),
                Some((7, 9)),
            ),
            // Unpadded payloads decode too.
            (
                format!(
                    "data:image/png;base64,{}",
                    STANDARD_NO_PAD.encode(png(5, 6))
                ),
                Some((5, 6)),
            ),
            (data_url("image/png", &png(0, 200)), None),
            (data_url("image/png", &with_garbage(Vec::new(), 3000)), None),
            (data_url("image/png", b"\x89PNG\r\n\x1a\n\x00\x00"), None),
            ("data:image/png;base64,".to_owned(), None),
            ("data:image/png;base64,!!!!not base64!!!!".to_owned(), None),
            ("data:image/png;base64,A".to_owned(), None),
            ("data:image/png;base64,iVBORw0KGgo=AAAA".to_owned(), None),
            (
                format!("data:image/png,{}", STANDARD.encode(png(3, 3))),
                None,
            ),
            ("data:image/png;base64".to_owned(), None),
            ("data:".to_owned(), None),
            ("data:é;base64,ü€".to_owned(), None),
            ("https://example.com/cat.png".to_owned(), None),
            ("file-abc123".to_owned(), None),
            (String::new(), None),
        ];
        for (url, want) in cases {
            let shown: String = url.chars().take(60).collect();
            assert_eq!(data_url_size(&url), want, "{shown}");
        }
    }

    #[test]
    fn huge_data_url_reads_only_the_header() {
        let bytes = with_garbage(png(4000, 3000), 10 * 1024 * 1024);
        let url = data_url("image/png", &bytes);
        assert_eq!(data_url_size(&url), Some((4000, 3000)));
        // Garbage in the payload past the budget is never looked at.
        let mut corrupt = url.clone();
        corrupt.push_str("!!!not base64!!!");
        assert_eq!(data_url_size(&corrupt), Some((4000, 3000)));
    }
}
