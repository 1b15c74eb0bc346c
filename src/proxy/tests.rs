//! Sizes of the futures every metered request builds. Each is copied whole when it is
//! boxed (axum boxes the handler, the exchange's task boxes the relay) or spawned, so
//! a rarely taken path awaited inline (a budget's database transaction, say) costs every
//! request a copy of its state. These bounds catch such a path creeping back in.

use std::future::Future;
use std::mem::size_of;

use axum::body::Body;
use axum::http::Response;
use axum::http::request::Parts;
use tokio::sync::oneshot;

use super::exchange::Exchange;
use super::routed::Attempts;
use super::{Proxy, buffered, metered, relay, routed};
use crate::auth::Identity;
use crate::metering::Endpoint;

/// The size of the future `f` returns, without calling it.
fn returned_size<F, Fut>(_: &F) -> usize
where
    F: FnOnce() -> Fut,
    Fut: Future,
{
    size_of::<Fut>()
}

/// Bounds with some room over today's sizes (the same in debug and release builds):
/// the handler 4.2 KB (13.6 KB while the budget check was inline), the exchange's task
/// 3.7 KB, the relay 3.9 KB (9.4 KB while its error paths were), the buffered relay
/// 2.8 KB (8.3 KB).
const HANDLER_BYTES: usize = 6 * 1024;
const TASK_BYTES: usize = 5 * 1024;

#[test]
fn the_futures_of_a_metered_request_stay_small() {
    let handler = returned_size(&|| {
        metered(
            unreachable::<&'static Proxy>(),
            unreachable::<Identity>(),
            Endpoint::ChatCompletions,
            "",
            unreachable::<Parts>(),
            Body::empty(),
        )
    });
    let attempts = returned_size(&|| {
        routed::run(
            unreachable::<Attempts>(),
            unreachable::<Exchange>(),
            unreachable::<oneshot::Sender<Response<Body>>>(),
        )
    });
    let relay = returned_size(&|| {
        relay::run(
            unreachable::<Exchange>(),
            unreachable::<reqwest::Response>(),
            unreachable::<oneshot::Sender<Response<Body>>>(),
        )
    });
    let buffered = returned_size(&|| {
        buffered::relay(
            unreachable::<Exchange>(),
            unreachable::<relay::UpstreamBody>(),
            unreachable::<relay::Head>(),
            unreachable::<oneshot::Sender<Response<Body>>>(),
        )
    });
    assert!(handler <= HANDLER_BYTES, "metered(): {handler} bytes");
    assert!(attempts <= TASK_BYTES, "routed::run(): {attempts} bytes");
    assert!(relay <= TASK_BYTES, "relay::run(): {relay} bytes");
    assert!(
        buffered <= TASK_BYTES,
        "buffered::relay(): {buffered} bytes"
    );
}

/// A value of any type, for naming a function's future type: the closures that call
/// this are never called.
fn unreachable<T>() -> T {
    unreachable!("only the type is used")
}
