//! tollgate: an OpenAI-compatible reverse proxy that knows what every request costs.

pub mod cli;
/// TOML config, environment overrides and validation.
pub mod config;
/// `ApiError`, the only error that becomes an HTTP response.
pub mod error;
/// `tollgate estimate`: what a workload would cost.
pub mod estimate;
/// The ledger: rows, storage backends and the background writer.
pub mod ledger;
/// Usage extraction and tiktoken counting (pure).
pub mod metering;
/// Prometheus metrics, defined once.
pub mod metrics;
/// Price catalog and exact cost computation (pure).
pub mod pricing;
/// Upstream routing, request rewrite, SSE relay.
pub mod proxy;
/// Router, layers, accept loop and graceful shutdown.
pub mod server;
