#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod db;
pub mod harness;
pub mod mock_upstream;
