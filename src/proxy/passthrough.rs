//! Pass-through: the `/v1` requests tollgate does not meter, streamed to the upstream
//! as received, and the path and body limits every route applies first.

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Response, header};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::{Proxy, upstream, upstream_failure};
use crate::error::ApiError;

/// Dot segments, plain or percent-encoded, would let a pass-through path climb out of
/// the upstream's base path once the URL is normalised.
pub fn check_path(path: &str) -> Result<(), ApiError> {
    // The common path has none of the bytes a trick needs: skip the allocations.
    if !path.bytes().any(|b| matches!(b, b'.' | b'%' | b'\\')) {
        return Ok(());
    }
    let dot_segment = path.split('/').any(|segment| {
        let decoded = segment.replace("%2e", ".").replace("%2E", ".");
        decoded == "." || decoded == ".."
    });
    // An encoded backslash too: servers on Windows, and frameworks that normalise `\`
    // to `/` after decoding, would read `%5c..%5c` as a climb.
    let lower = path.to_ascii_lowercase();
    let encoded_separator = lower.contains("%2f") || lower.contains("%5c");
    if dot_segment || path.contains('\\') || encoded_separator {
        return Err(ApiError::InvalidField {
            param: "path",
            message: "The request path contains a dot segment or an encoded separator.".to_owned(),
        });
    }
    Ok(())
}

pub(crate) async fn passthrough(
    proxy: &Proxy,
    path: &str,
    parts: Parts,
    body: Body,
) -> Result<Response<Body>, ApiError> {
    // Until the upstream's response head: the body then streams on its own.
    let _in_flight = proxy.metrics.in_flight();
    let limit = proxy.server.max_upload_bytes;
    check_declared_length(&parts.headers, limit)?;
    let upstream = proxy
        .upstreams
        .route(None)
        .ok_or_else(|| ApiError::NotFound {
            method: parts.method.to_string(),
            path: format!("/v1{path}"),
        })?;
    let limited = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    let body = reqwest::Body::wrap_stream(limited.into_data_stream());
    let send = upstream
        .client
        .request(parts.method.clone(), upstream.url(path, parts.uri.query()))
        .headers(upstream.request_headers(&parts.headers, false, proxy.auth.mode))
        .timeout(upstream.total_timeout)
        .body(body)
        .send();
    let response = match tokio::time::timeout(upstream.first_byte_timeout, send).await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) if is_length_limit(&error) => return Err(ApiError::BodyTooLarge { limit }),
        Ok(Err(error)) => return Err(upstream_failure(&upstream.name, &error)),
        Err(_elapsed) => {
            return Err(ApiError::UpstreamTimeout {
                upstream: upstream.name.clone(),
            });
        }
    };
    let status = response.status();
    let mut response = response;
    let headers = upstream::response_headers_from(std::mem::take(response.headers_mut()));
    let mut client = Response::new(Body::from_stream(response.bytes_stream()));
    *client.status_mut() = status;
    *client.headers_mut() = headers;
    Ok(client)
}

pub(crate) async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: u64,
) -> Result<Bytes, ApiError> {
    check_declared_length(headers, limit)?;
    let limited = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(ApiError::BodyTooLarge { limit }),
        Err(error) => Err(ApiError::InvalidJson {
            detail: format!("the request body could not be read ({error})"),
        }),
    }
}

/// Refuses an over-long body from its Content-Length before reading a byte of it.
fn check_declared_length(headers: &HeaderMap, limit: u64) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(length) if length > limit => Err(ApiError::BodyTooLarge { limit }),
        _ => Ok(()),
    }
}

fn is_length_limit(error: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if cause.is::<LengthLimitError>() {
            return true;
        }
        source = cause.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_refused_in_every_spelling() {
        for bad in [
            "/../admin",
            "/files/./x",
            "/%2e%2e/admin",
            "/%2E%2e",
            "/a%2Fb",
            "/a\\..\\b",
            "/%5c..%5cadmin",
            "/%5C..%5Cadmin",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
        for good in [
            "/models",
            "/files/file-abc/content",
            "/fine_tuning/jobs",
            "",
            "/a.b/..c",
        ] {
            assert!(check_path(good).is_ok(), "{good}");
        }
    }
}
