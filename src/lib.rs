//! tollgate: an OpenAI-compatible reverse proxy that knows what every request costs.

/// The admin API and `/v1/tollgate/me`.
pub mod admin;
/// Keys, teams, hashing, passthrough fingerprints; the `teams` and `keys` commands.
pub mod auth;
/// Batch and fine-tuning jobs: ownership, tracking and billing.
pub mod batch;
/// Budget periods, reservations and alerts.
pub mod budgets;
pub mod cli;
/// Unix-millisecond wall clock.
pub mod clock;
/// TOML config, environment overrides and validation.
pub mod config;
/// `ApiError`, the only error that becomes an HTTP response.
pub mod error;
/// `tollgate estimate`: what a workload would cost.
pub mod estimate;
/// The ledger: rows, storage backends and the background writer.
pub mod ledger;
/// Rate limits: usage tiers, governor buckets, `x-ratelimit-*` headers.
pub mod limits;
/// Usage extraction and tiktoken counting (pure).
pub mod metering;
/// Prometheus metrics, defined once.
pub mod metrics;
/// Price catalog and exact cost computation (pure).
pub mod pricing;
/// Upstream routing, request rewrite, SSE relay.
pub mod proxy;
/// The ledger against OpenAI's own usage and cost export.
pub mod reconcile;
/// Aliases, fallbacks, downgrades, fair shares of upstream limits, shadow comparisons.
pub mod routing;
/// Router, layers, accept loop and graceful shutdown.
pub mod server;
