//! One client connection's life: the deadline for its first request, the idle timeout
//! once it has made one, and its part in a graceful shutdown.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// How long a connection may go without work.
#[derive(Debug, Clone, Copy)]
pub(super) struct Deadlines {
    /// From accept to the first request (`server.header_read_timeout`). hyper's own
    /// header timeout only starts once HTTP/1 is chosen: before that the auto builder
    /// waits, without any limit, for enough bytes to tell HTTP/1 from the HTTP/2
    /// preface, and HTTP/2 has no header timeout at all. A client that connects and
    /// sends nothing (or half a preface) would hold its socket forever, and a few
    /// thousand of them exhaust the file descriptors.
    pub first_request: Duration,
    /// From the end of the last response to the next request (`server.idle_timeout`).
    pub idle: Duration,
}

/// What a connection's requests report to the task that runs it.
#[derive(Debug, Default, Clone, Copy)]
struct Activity {
    /// Requests seen since accept: a counter, not a flag, so a request that starts and
    /// ends between two looks is still seen.
    seen: u64,
    in_flight: usize,
}

/// Why a connection is being closed for lack of work.
enum Idle {
    /// No request within the first-request deadline: a silent or half-speaking client
    /// gets no graceful close, which it could stall as well.
    NoRequest,
    /// No request in flight for the idle timeout.
    Idle,
}

/// Serves one accepted connection until it ends, closing it when it idles too long
/// and gracefully when `shutdown` is cancelled.
pub(super) async fn run(
    builder: auto::Builder<TokioExecutor>,
    stream: TcpStream,
    app: Router,
    deadlines: Deadlines,
    shutdown: CancellationToken,
) {
    // The task keeps a sender of its own, so the receiver never sees the channel close,
    // even once hyper has dropped the service.
    let activity = Arc::new(watch::Sender::new(Activity::default()));
    let mut watched = activity.subscribe();
    let service = {
        let activity = Arc::clone(&activity);
        tower::service_fn(move |request: Request<Incoming>| {
            let in_flight = InFlight::begin(&activity);
            let app = app.clone();
            async move {
                let response = app.oneshot(request).await?;
                Ok::<_, Infallible>(response.map(|body| TrackedBody {
                    body,
                    in_flight: Some(in_flight),
                }))
            }
        })
    };
    let connection =
        builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
    tokio::pin!(connection);
    let mut closing = false;
    loop {
        tokio::select! {
            ended = connection.as_mut() => {
                if let Err(error) = ended {
                    tracing::debug!(error = %error, "connection ended with an error");
                }
                return;
            }
            () = shutdown.cancelled(), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            idle = idle(&mut watched, deadlines) => match idle {
                Idle::NoRequest => {
                    tracing::debug!("no request within the header read timeout: closing the connection");
                    return;
                }
                // A graceful close waits on the client: an HTTP/2 client that never
                // answers the GOAWAY's PING would hold the socket forever. One more idle
                // period with nothing in flight, and it is dropped.
                Idle::Idle if closing => {
                    tracing::debug!("idle connection did not close: dropping it");
                    return;
                }
                Idle::Idle => {
                    tracing::debug!("idle timeout: closing the connection");
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
            },
        }
    }
}

/// Resolves once the connection has gone too long without work, counted afresh on
/// each call.
async fn idle(watched: &mut watch::Receiver<Activity>, deadlines: Deadlines) -> Idle {
    // The receiver cannot see the channel close (`run` holds a sender), so the errors
    // below do not happen; each is read as "idle", which never loops.
    if watched.borrow_and_update().seen == 0 {
        let first = watched.wait_for(|activity| activity.seen > 0);
        if !matches!(
            tokio::time::timeout(deadlines.first_request, first).await,
            Ok(Ok(_))
        ) {
            return Idle::NoRequest;
        }
    }
    loop {
        if watched
            .wait_for(|activity| activity.in_flight == 0)
            .await
            .is_err()
        {
            return Idle::Idle;
        }
        // Any change (a request starting, or one ending while another runs) restarts
        // the count from the next moment nothing is in flight.
        match tokio::time::timeout(deadlines.idle, watched.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return Idle::Idle,
        }
    }
}

// === impl InFlight ===

/// Held from the moment the service sees a request until its response body has ended
/// or been dropped, so a long stream keeps its connection busy.
struct InFlight(Arc<watch::Sender<Activity>>);

impl InFlight {
    fn begin(activity: &Arc<watch::Sender<Activity>>) -> Self {
        activity.send_modify(|activity| {
            activity.seen += 1;
            activity.in_flight += 1;
        });
        Self(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|activity| {
            activity.in_flight = activity.in_flight.saturating_sub(1);
        });
    }
}

// === impl TrackedBody ===

/// A response body that ends its request's [`InFlight`] when it ends, not when hyper
/// gets round to dropping it.
struct TrackedBody {
    body: Body,
    in_flight: Option<InFlight>,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None | Some(Err(_))) = polled {
            self.in_flight = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
