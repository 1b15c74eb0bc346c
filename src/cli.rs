//! Command-line interface: argument structs only; each command's work lives in its module.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "tollgate",
    version,
    about = "OpenAI-compatible proxy that meters, prices and records every request"
)]
pub struct Cli {
    /// TOML config file; `TOLLGATE_CONFIG` names one too. Without either, defaults apply.
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    Serve,
    /// Create or upgrade the ledger database, then exit (`serve` also does this).
    Migrate,
    /// The effective price catalog, and tools to change it.
    Prices(PricesArgs),
    /// What a workload would cost: per request, per 1K and 100K requests, per month.
    Estimate(EstimateArgs),
    /// Spend recorded in the ledger, optionally re-priced at another model's prices.
    Spend(SpendArgs),
}

#[derive(Debug, Args)]
pub struct PricesArgs {
    #[command(subcommand)]
    pub command: Option<PricesCommand>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum PricesCommand {
    /// Convert LiteLLM's model_prices_and_context_window.json into a prices file for
    /// `pricing.file`.
    Import {
        /// The LiteLLM JSON file.
        file: PathBuf,
        /// Where to write the prices TOML (default: standard output).
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Keep only these `litellm_provider` values (comma-separated).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "openai,text-completion-openai"
        )]
        providers: Vec<String>,
    },
    /// Fill in the cost of unpriced ledger rows of a model that now has a price.
    Reprice {
        /// The model as requested or answered (e.g. `mystery-model-9`).
        #[arg(long)]
        model: String,
        /// First day to reprice, `YYYY-MM-DD` (UTC) or a span back from now (`30d`).
        #[arg(long)]
        since: String,
    },
}

#[derive(Debug, Args)]
pub struct EstimateArgs {
    /// The model to price (any name the catalog resolves: snapshots, `ft:` names, aliases).
    #[arg(long, required_unless_present_any = ["compare", "file"])]
    pub model: Option<String>,
    /// Several models side by side (comma-separated), instead of `--model`.
    #[arg(long, value_delimiter = ',')]
    pub compare: Vec<String>,
    /// Prompt tokens per request (ignored with `--file`).
    #[arg(long, default_value_t = 0)]
    pub input: u64,
    /// Of those, tokens read from the prompt cache.
    #[arg(long, default_value_t = 0)]
    pub cached: u64,
    /// Completion tokens per request (with `--file`: per request without a max tokens cap).
    #[arg(long, default_value_t = 0)]
    pub output: u64,
    /// Number of requests to total (besides the per-1K and per-100K lines).
    #[arg(long, default_value_t = 1)]
    pub requests: u64,
    /// Price at batch rates.
    #[arg(long)]
    pub batch: bool,
    /// A monthly volume, as requests per day (`10000/day`), per hour, per minute or per month.
    #[arg(long)]
    pub per_month: Option<String>,
    /// A JSONL file of chat requests (plain request bodies, or Batch API input lines)
    /// counted with the real tokenizer.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SpendArgs {
    /// Period back from now (`30d`, `12h`) or a first day `YYYY-MM-DD` (UTC).
    #[arg(long, default_value = "30d")]
    pub since: String,
    /// How to group the rows.
    #[arg(long, value_enum, default_value = "model")]
    pub by: SpendGroup,
    /// Also re-price every row's tokens at this model's prices, side by side.
    #[arg(long)]
    pub what_if: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SpendGroup {
    Caller,
    Model,
    Day,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Csv,
}
