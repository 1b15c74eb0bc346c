#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr
)]

pub mod batch_upstream;
pub mod db;
pub mod forwarder;
pub mod harness;
pub mod mock_upstream;
pub mod org_api;
pub mod redis;
pub mod routed;
pub mod rows;
pub mod tiered;
pub mod webdriver;
