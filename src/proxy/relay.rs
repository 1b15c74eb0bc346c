//! The relay: a task of its own reads the upstream body, meters it, and hands bytes to
//! the client's response over a small bounded channel. Because the task, not the
//! response body, owns the upstream stream and the ledger row, a client that hangs up
//! (even right after the last byte) can never cancel its own charge; because the
//! channel is bounded, a client that stops reading holds at most a few chunks in memory.
//! An upstream event that never ends is held up to `MAX_EVENT_BYTES`, then the stream is
//! relayed unparsed.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http_body::Frame;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout_at;

use super::exchange::{Exchange, Finish};
use super::sse::{MAX_EVENT_BYTES, SseParser, strip_null_usage};
use super::upstream::{X_UPSTREAM_REQUEST_ID, response_headers_from};
use crate::config::DisconnectPolicy;
use crate::error::ApiError;
use crate::ledger::Outcome;
use crate::metering::stream::{EventKind, StreamMeter};
use crate::metering::usage::{self, BodyUsage};
use crate::metering::{Usage, UsageSource};

/// Chunks buffered between the relay task and a slow client.
const CLIENT_BUFFER_CHUNKS: usize = 8;
/// A non-streamed body is kept whole for metering up to this size; past it only its
/// tail, where every endpoint puts `model` and `usage`, is kept.
pub(super) const BODY_KEEP_BYTES: usize = 4 * 1024 * 1024;
const BODY_TAIL_BYTES: usize = 64 * 1024;

pub(super) type ClientTx = mpsc::Sender<Result<Bytes, io::Error>>;

/// Relays an upstream response to the client's `reply` and records the exchange. Streams
/// (and error answers) go to the client as they arrive; a successful non-streamed answer
/// is read whole first, so its response can carry its cost and token counts in headers
/// (see `buffered`). Runs in the exchange's own task; a `reply` nobody receives any more
/// means the client has gone.
pub async fn run(
    exchange: Exchange,
    upstream: reqwest::Response,
    reply: oneshot::Sender<Response<Body>>,
) {
    let mut upstream = upstream;
    let status = upstream.status();
    let mut headers = response_headers_from(std::mem::take(upstream.headers_mut()));
    // Room for the rate-limit and cost headers added later, so the map grows (and
    // rehashes) at most once.
    headers.reserve(10);
    let is_sse = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if is_sse && exchange.hide_usage {
        // Events are rewritten, so the upstream's length (if any) no longer holds.
        headers.remove(header::CONTENT_LENGTH);
    }
    let upstream_request_id = headers
        .get(X_UPSTREAM_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut head = Head {
        status: client_status(status, &mut headers),
        headers,
        upstream_request_id,
    };
    let body = Box::pin(upstream.bytes_stream());
    if !is_sse && status.is_success() {
        return super::buffered::relay(exchange, body, head, reply).await;
    }
    let meter = if is_sse && status.is_success() {
        Meter::Sse(
            SseParser::new(),
            Box::new(StreamMeter::new(exchange.endpoint)),
        )
    } else {
        Meter::Body(BodyTee::default())
    };
    let (tx, client_body) = channel();
    // If the client has gone, the dropped response closes the channel: the pump sees it.
    let _ = reply.send(head.response(client_body));
    pump(
        exchange,
        body,
        tx,
        meter,
        // The row keeps the status the provider gave.
        status,
        head.upstream_request_id,
        None,
    )
    .await;
}

/// The header naming the provider's own status when tollgate answers with another.
pub const X_UPSTREAM_STATUS: HeaderName = HeaderName::from_static("x-upstream-status");

/// The status the client gets for the upstream's: Anthropic's 529 "overloaded" is
/// no status OpenAI's SDKs know to retry, so it goes out as 503 (which they do), with
/// the provider's body and its own status in `x-upstream-status`.
fn client_status(status: StatusCode, headers: &mut HeaderMap) -> StatusCode {
    if status.as_u16() == 529 {
        headers.insert(X_UPSTREAM_STATUS, HeaderValue::from_static("529"));
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    status
}

/// What the client's response starts with, taken from the upstream's.
pub(super) struct Head {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub upstream_request_id: Option<String>,
}

impl Head {
    /// The client's response; the headers move into it (a head answers once).
    pub fn response(&mut self, body: Body) -> Response<Body> {
        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        *response.headers_mut() = std::mem::take(&mut self.headers);
        response
    }
}

/// The upstream's body as the relay reads it.
pub(super) type UpstreamBody =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// Starts streaming to the client: a bounded channel the relay task fills.
pub(super) fn channel() -> (ClientTx, Body) {
    let (tx, rx) = mpsc::channel(CLIENT_BUFFER_CHUNKS);
    (tx, Body::new(ChannelBody(rx)))
}

pub(super) enum Meter {
    /// Boxed: a stream's meter is several times the size of a body's tee.
    Sse(SseParser, Box<StreamMeter>),
    /// A stream whose parser gave up on an event past `MAX_EVENT_BYTES`: the rest goes
    /// to the client unparsed and unchanged (a usage chunk tollgate asked for included),
    /// and the meter keeps what the events before it told.
    Unparsed(Box<StreamMeter>),
    Body(BodyTee),
}

impl Meter {
    /// Meters one read of the upstream body and returns the bytes the client should see.
    fn relay(&mut self, chunk: Bytes, hide_usage: bool, request_id: &str) -> Bytes {
        let (parser, stream) = match self {
            Self::Sse(parser, stream) => (parser, stream),
            Self::Unparsed(_) => return chunk,
            Self::Body(tee) => {
                tee.push(&chunk);
                return chunk;
            }
        };
        let out = relay_events(parser, stream, &chunk, hide_usage);
        let Some(overlong) = parser.take_overlong() else {
            return out;
        };
        tracing::warn!(
            request_id,
            limit = MAX_EVENT_BYTES,
            "an upstream event outgrew the limit: relaying the rest of the stream unparsed"
        );
        // The parser goes, the stream meter stays (`Body` only holds the place).
        let parsed = std::mem::replace(self, Self::Body(BodyTee::default()));
        if let Self::Sse(_, stream) = parsed {
            *self = Self::Unparsed(stream);
        }
        // An event this long began reads ago, so the events before it have gone out
        // already: `out` is empty unless one read brought more than the cap.
        if out.is_empty() {
            return overlong;
        }
        let mut both = BytesMut::from(out);
        both.extend_from_slice(&overlong);
        both.freeze()
    }
}

/// Reads the upstream body to its end (or the client's, under `abort`), feeding the
/// client and the meter, then records the row.
pub(super) async fn pump(
    exchange: Exchange,
    mut body: UpstreamBody,
    tx: ClientTx,
    mut meter: Meter,
    status: StatusCode,
    upstream_request_id: Option<String>,
    mut ttfb: Option<std::time::Duration>,
) {
    let deadline = exchange.deadline;
    let abort_on_disconnect = exchange.policy == DisconnectPolicy::Abort;
    let mut client_gone = false;
    let end = loop {
        let next = tokio::select! {
            biased;
            () = tx.closed(), if !client_gone => {
                client_gone = true;
                if abort_on_disconnect { break End::ClientGone } else { continue }
            }
            next = timeout_at(deadline.into(), body.next()) => next,
        };
        let chunk = match next {
            Err(_elapsed) => break End::Timeout,
            Ok(None) => break End::Eof,
            Ok(Some(Err(error))) => {
                tracing::warn!(request_id = %exchange.request_id, %error, "upstream body broke off");
                break End::Cut;
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        ttfb.get_or_insert_with(|| exchange.started.elapsed());
        let out = meter.relay(chunk, exchange.hide_usage, &exchange.request_id);
        if client_gone || out.is_empty() {
            continue;
        }
        match timeout_at(deadline.into(), tx.send(Ok(out))).await {
            Ok(Ok(())) => {}
            Ok(Err(_closed)) => {
                client_gone = true;
                if abort_on_disconnect {
                    break End::ClientGone;
                }
            }
            // The client stopped reading and the buffers are full: it is as good as gone.
            Err(_elapsed) => {
                client_gone = true;
                break End::ClientGone;
            }
        }
    };
    // Anything still buffered belongs to the client (a stream cut mid-event included).
    if let Meter::Sse(parser, stream) = &mut meter {
        if let Some(event) = parser.finish() {
            if let Some(data) = &event.data {
                stream.observe(data);
            }
            if !client_gone {
                // Bounded like every send: a client that stopped reading must not hold
                // the row hostage.
                let _ = timeout_at(deadline.into(), tx.send(Ok(event.raw))).await;
            }
        }
    }
    let outcome = outcome(&end, &meter, status, client_gone);
    if matches!(outcome, Outcome::UpstreamTimeout | Outcome::UpstreamCut) {
        fail_client(&tx, &meter, &exchange, &end).await;
    }
    drop(tx);
    let finish = measure(&exchange, meter, status).await;
    exchange
        .finish(Finish {
            status: status.as_u16(),
            outcome: Some(outcome),
            upstream_request_id,
            ttfb,
            ..finish
        })
        .await;
}

enum End {
    Eof,
    Cut,
    Timeout,
    ClientGone,
}

fn outcome(end: &End, meter: &Meter, status: StatusCode, client_gone: bool) -> Outcome {
    // A stream is whole only if tollgate saw its end; one relayed unparsed never shows
    // it, so it counts as cut even when the upstream closes the body cleanly: its
    // overlong event was no real event.
    let complete = match meter {
        Meter::Sse(_, stream) | Meter::Unparsed(stream) => stream.finished(),
        Meter::Body(_) => true,
    };
    match end {
        _ if client_gone => Outcome::ClientDisconnected,
        End::Timeout => Outcome::UpstreamTimeout,
        End::Cut => Outcome::UpstreamCut,
        End::Eof if !complete => Outcome::UpstreamCut,
        End::Eof | End::ClientGone if !status.is_success() => Outcome::UpstreamError,
        End::Eof | End::ClientGone => Outcome::Ok,
    }
}

/// The client already has a 200 and part of a body. A stream gets one OpenAI-shaped
/// error event (SDKs raise it); any other body is cut so the client sees it incomplete.
async fn fail_client(tx: &ClientTx, meter: &Meter, exchange: &Exchange, end: &End) {
    let error = match end {
        End::Timeout => ApiError::UpstreamTimeout {
            upstream: exchange.upstream.clone(),
        },
        _ => ApiError::UpstreamUnreachable {
            upstream: exchange.upstream.clone(),
        },
    };
    let item = match meter {
        Meter::Sse(..) => {
            let mut event = BytesMut::from(&b"data: "[..]);
            event.extend_from_slice(&error.body_json());
            event.extend_from_slice(b"\n\n");
            Ok(event.freeze())
        }
        // Unparsed, the stream may end inside an event, which an error event would
        // only lengthen: it is cut instead.
        Meter::Unparsed(_) | Meter::Body(_) => Err(io::Error::other(error.to_string())),
    };
    // A moment's grace past the deadline so the error can still reach a reading client.
    let grace = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
    let _ = tokio::time::timeout_at(grace, tx.send(item)).await;
}

/// Parses the events completed by `chunk`, meters them, and returns the bytes the
/// client should see: every event as received, except the usage chunk tollgate asked
/// for on the client's behalf.
fn relay_events(
    parser: &mut SseParser,
    meter: &mut StreamMeter,
    chunk: &[u8],
    hide_usage: bool,
) -> Bytes {
    parser.push(chunk);
    let mut out = BytesMut::new();
    while let Some(event) = parser.next_event() {
        let kind = event
            .data
            .as_deref()
            .map_or(EventKind::Content, |data| meter.observe(data));
        match kind {
            EventKind::UsageOnly if hide_usage => {}
            EventKind::Content if hide_usage => {
                out.extend_from_slice(&strip_null_usage(&event.raw))
            }
            _ => out.extend_from_slice(&event.raw),
        }
    }
    out.freeze()
}

/// Usage for the row: the upstream's when it reported any, otherwise counted. This
/// holds for a stream relayed unparsed too: `usage_source` says where the numbers came
/// from (usage the upstream reported before the overlong event is still its own, not
/// tollgate's count), and the row's outcome, never `ok` once the stream's end went
/// unseen, says they may not cover the whole answer. Without a report, the text before
/// the overlong event is counted.
async fn measure(exchange: &Exchange, meter: Meter, status: StatusCode) -> Finish {
    let (reported, model, service_tier) = match &meter {
        Meter::Sse(_, stream) | Meter::Unparsed(stream) => (
            stream.usage(),
            stream.model().map(str::to_owned),
            stream.service_tier().map(str::to_owned),
        ),
        Meter::Body(tee) => {
            let BodyUsage {
                model,
                usage,
                service_tier,
            } = tee.usage();
            (usage, model, service_tier)
        }
    };
    let (usage, source) = match reported {
        Some(usage) => (usage, UsageSource::Upstream),
        // An error answer reports no usage because nothing was billed.
        None if !status.is_success() => (Usage::default(), UsageSource::Upstream),
        None => {
            // Only now is the generated text worth extracting.
            let text = match &meter {
                Meter::Sse(_, stream) | Meter::Unparsed(stream) => stream.generated_text(),
                Meter::Body(tee) => tee.generated_text().unwrap_or_default(),
            };
            (
                exchange.estimate(model.as_deref(), text).await,
                UsageSource::Estimated,
            )
        }
    };
    Finish {
        usage,
        source: Some(source),
        model_answered: model,
        service_tier,
        ..Finish::default()
    }
}

/// A copy of a non-streamed body for metering, bounded in memory.
#[derive(Default)]
pub(super) struct BodyTee {
    head: BytesMut,
    tail: BytesMut,
    overflowed: bool,
}

impl BodyTee {
    pub fn push(&mut self, chunk: &[u8]) {
        if !self.overflowed && self.head.len() + chunk.len() <= BODY_KEEP_BYTES {
            self.head.extend_from_slice(chunk);
            return;
        }
        if !self.overflowed {
            self.overflowed = true;
            self.tail = std::mem::take(&mut self.head);
        }
        self.tail.extend_from_slice(chunk);
        if self.tail.len() > 2 * BODY_TAIL_BYTES {
            let excess = self.tail.len() - BODY_TAIL_BYTES;
            let _ = self.tail.split_to(excess);
        }
    }

    fn usage(&self) -> BodyUsage {
        if self.overflowed {
            usage::from_tail(&self.tail)
        } else {
            usage::from_body(&self.head)
        }
    }

    fn generated_text(&self) -> Option<String> {
        (!self.overflowed).then(|| usage::generated_text(&self.head))
    }
}

/// The client's response body: whatever the relay task sends, as it sends it.
struct ChannelBody(mpsc::Receiver<Result<Bytes, io::Error>>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|item| item.map(|r| r.map(Frame::data)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metering::Endpoint;

    const READ: usize = 64 * 1024;

    fn chunk(delta: &str, usage: &str) -> String {
        format!(
            "data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{delta}}}],\"usage\":{usage}}}\n\n"
        )
    }

    /// Relays `head`, then an event that never ends, in reads of `READ` bytes, until the
    /// parser gives it up, then one more read and `tail`. Returns what the client got,
    /// what the upstream sent after `head`, and the meter.
    fn relay_overlong(head: &str, tail: &str, hide_usage: bool) -> (Vec<u8>, Vec<u8>, Meter) {
        let mut meter = Meter::Sse(
            SseParser::new(),
            Box::new(StreamMeter::new(Endpoint::ChatCompletions)),
        );
        let mut client = Vec::new();
        let mut relay = |meter: &mut Meter, read: &[u8]| {
            let out = meter.relay(Bytes::copy_from_slice(read), hide_usage, "req-1");
            client.extend_from_slice(&out);
        };
        relay(&mut meter, head.as_bytes());
        let mut sent = b"data: ".to_vec();
        relay(&mut meter, &sent);
        let filler = vec![b'a'; READ];
        while let Meter::Sse(parser, _) = &meter {
            assert!(
                parser.buffered() <= MAX_EVENT_BYTES,
                "held past the cap: {}",
                parser.buffered()
            );
            relay(&mut meter, &filler);
            sent.extend_from_slice(&filler);
        }
        for read in [&filler[..], tail.as_bytes()] {
            relay(&mut meter, read);
            sent.extend_from_slice(read);
        }
        (client, sent, meter)
    }

    #[test]
    fn an_overlong_event_turns_the_stream_into_unchanged_bytes() {
        let first = chunk(
            r#"{"role":"assistant","content":"The quick brown fox"}"#,
            "null",
        );
        let usage = r#"{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13}"#;
        let tail = format!(
            "\n\n{}data: {{\"choices\":[],\"usage\":{usage}}}\n\ndata: [DONE]\n\n",
            chunk(r#"{"content":" jumps"}"#, "null")
        );
        let (client, sent, meter) = relay_overlong(&first, &tail, true);
        // The first event loses its `"usage":null` as usual; from the overlong event on,
        // every byte is the upstream's, `"usage":null`, usage chunk and `[DONE]` included.
        let expected = [&strip_null_usage(&Bytes::from(first))[..], &sent].concat();
        assert!(
            client == expected,
            "{} bytes for {}",
            client.len(),
            expected.len()
        );
        assert!(sent.len() > MAX_EVENT_BYTES);
        let Meter::Unparsed(stream) = meter else {
            panic!("the stream is still parsed");
        };
        assert_eq!(
            stream.usage(),
            None,
            "nothing after the overlong event is metered"
        );
        assert!(!stream.finished());
        assert_eq!(stream.generated_text(), "The quick brown fox");
        assert_eq!(stream.model(), Some("gpt-4o-mini"));
    }

    #[test]
    fn usage_reported_before_an_overlong_event_is_kept() {
        let usage = r#"{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}"#;
        let first = chunk(r#"{"role":"assistant","content":"Hi"}"#, usage);
        let (client, sent, meter) = relay_overlong(&first, "", false);
        assert!(client == [first.as_bytes(), &sent].concat());
        let Meter::Unparsed(stream) = meter else {
            panic!("the stream is still parsed");
        };
        assert_eq!(
            stream
                .usage()
                .map(|u| (u.prompt_tokens, u.completion_tokens)),
            Some((9, 1))
        );
    }
}
