//! Command-line interface: argument structs only; each command's work lives in its module.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "tollgate",
    version,
    about = "OpenAI-compatible proxy that meters, prices and records every request"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    Serve(ConfigArgs),
    /// Create or upgrade the ledger database, then exit (`serve` also does this).
    Migrate(ConfigArgs),
}

#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// TOML config file; `TOLLGATE_CONFIG` names one too. Without either, defaults apply.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}
