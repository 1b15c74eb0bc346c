//! Asking another model: the request body with its top-level `model` replaced. Only
//! that value's bytes change; everything else goes upstream byte for byte, so the cost
//! is one pass that skips the rest of the body unparsed, and one copy.

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Deserialize)]
struct ModelSpan<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
}

/// `body` with `model` as its top-level `"model"` value; `None` if the body is not a
/// JSON object with one (it was checked before forwarding, so this means a bug).
pub fn with_model(body: &[u8], model: &str) -> Option<Bytes> {
    // A struct also deserialises from a JSON array; only an object has a `model` key.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    let span: ModelSpan<'_> = serde_json::from_slice(body).ok()?;
    let raw = span.model?.get().as_bytes();
    // `raw` borrows from `body`: its offset is where the old value starts.
    let start = (raw.as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
    let end = start.checked_add(raw.len())?;
    if end > body.len() {
        return None;
    }
    let value = serde_json::to_vec(model).ok()?;
    let mut out = BytesMut::with_capacity(body.len() - raw.len() + value.len());
    out.extend_from_slice(&body[..start]);
    out.extend_from_slice(&value);
    out.extend_from_slice(&body[end..]);
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_top_level_model_changes() {
        let body = br#"{"messages":[{"role":"user","content":"{\"model\":\"x\"}"}], "model" : "smart","n":1}"#;
        let out = with_model(body, "gpt-4o-\"mini\"").unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"messages":[{"role":"user","content":"{\"model\":\"x\"}"}], "model" : "gpt-4o-\"mini\"","n":1}"#
        );
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json["model"], "gpt-4o-\"mini\"");
        assert_eq!(
            with_model(br#"{"model":"a"}"#, "b").unwrap(),
            &br#"{"model":"b"}"#[..]
        );
        assert!(with_model(br#"{"n":1}"#, "b").is_none());
        assert!(with_model(b"[1]", "b").is_none());
    }
}
