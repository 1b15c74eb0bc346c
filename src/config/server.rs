//! `[server]`: the listening socket, request limits and shutdown behaviour.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on; TCP and h2c (HTTP/2 prior knowledge) share it.
    pub listen: SocketAddr,
    /// Largest request body accepted on the metered endpoints, which tollgate reads whole
    /// to count and rewrite. Over it: 413.
    pub max_body_bytes: u64,
    /// Largest body streamed through on pass-through routes (`/v1/files` uploads reach
    /// 200 MB). Over it: 413.
    pub max_upload_bytes: u64,
    /// A client must send its request headers within this time; a new connection,
    /// HTTP/1 or HTTP/2, that brings no request within it is closed.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed gracefully
    /// (HTTP/2 GOAWAY, HTTP/1 close); a response still streaming counts as in flight.
    /// 5 minutes outlasts the idle expiry of the pools that usually connect (Go's
    /// transport 90 s, an AWS load balancer 60 s, nginx upstream keepalive 60 s), so the
    /// client normally retires a connection first and never sends a request into our
    /// close; yet abandoned connections give back their sockets and buffers within
    /// minutes. On HTTP/1, `header_read_timeout` already bounds the wait for the next
    /// request, so this only shortens that wait when set below it.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// On SIGINT/SIGTERM, how long in-flight requests and streams may take to finish.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// What to do with an upstream stream when the client hangs up halfway.
    pub on_client_disconnect: DisconnectPolicy,
}

/// The trade-off when a client leaves mid-stream (docs/src/pricing.md, "Client hang-ups").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisconnectPolicy {
    /// Stop reading upstream at once (the provider may stop generating) and record the
    /// tokens streamed so far, counted locally and marked estimated.
    Abort,
    /// Keep reading the upstream stream to its end (bounded by the total timeout) so the
    /// row records the provider's exact usage; costs the full generation.
    Drain,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 32 * 1024 * 1024,
            max_upload_bytes: 512 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(5 * 60),
            drain_timeout: Duration::from_secs(30),
            on_client_disconnect: DisconnectPolicy::Abort,
        }
    }
}
