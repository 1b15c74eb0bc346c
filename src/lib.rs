//! tollgate: an OpenAI-compatible reverse proxy that knows what every request costs.
//!
//! # Layers
//!
//! The modules follow the request pipeline, top to bottom; each uses only modules on
//! lines below its own (`tests/module_graph.rs` fails on a cycle or an upward use):
//!
//! ```text
//! server                                     router, layers, `/v1` dispatch, shutdown
//! admin batch                                routes built on the proxy
//! proxy                                      the metered pipeline: admit, forward, relay
//! budgets limits routing reconcile estimate  what a request (or a command) decides with
//! metrics                                    every metric, defined once
//! auth                                       who is calling: keys, teams, their records
//! ledger                                     rows, storage, the background writer
//! config                                     plain data, built on pricing's own types
//! pricing                                    exact cost (pure)
//! metering                                   usage and token counts (pure)
//! cli clock error                            clap structs, time, the HTTP error shape
//! ```
//!
//! A lower module never names a higher one: what two layers share moves down (a
//! refusal's answer is `error`'s, a cap's shape is `auth`'s, a calendar period is
//! `clock`'s), and each module converts its own error into `ApiError` where it is
//! defined.

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
