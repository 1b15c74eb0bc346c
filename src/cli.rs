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
    /// Teams: who keys belong to, each with an optional tier and budget.
    Teams(TeamsArgs),
    /// tollgate's own API keys: create (the key is shown once), list, revoke.
    Keys(KeysArgs),
    /// The ledger against OpenAI's own usage and cost export, per UTC day and model.
    /// Exit status: 0 every line within the tolerance, 1 some not, 2 no report.
    Reconcile(ReconcileArgs),
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
    #[arg(long, conflicts_with = "tier")]
    pub batch: bool,
    /// Price at a service tier's rates (`flex`, `priority`; `default` is standard). A
    /// model without that tier's sheet is priced at standard, as the proxy bills it.
    #[arg(long, value_enum)]
    pub tier: Option<EstimateTier>,
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
    /// How to group the rows. `team`, `key`, `kind` and `tier` read the hourly rollups,
    /// so for them `--since` is rounded down to the start of its hour.
    #[arg(long, value_enum, default_value = "model")]
    pub by: SpendGroup,
    /// Also re-price every row's tokens at this model's prices, side by side.
    #[arg(long)]
    pub what_if: Option<String>,
    /// The shadow comparisons instead (`[[shadow]]`): per model and candidate, cost per
    /// request of each and how often their answers agreed. Shadow rows are never spend.
    #[arg(long, conflicts_with_all = ["by", "what_if"])]
    pub shadow: bool,
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SpendGroup {
    Caller,
    Model,
    Day,
    Team,
    Key,
    /// realtime, batch or training.
    Kind,
    /// The service tier that served each request (`default`, `flex`, `priority`…;
    /// `(none)` for batch and training rows and rows recorded before tiers were).
    Tier,
    /// The kind of upstream that served each request (`openai`, `azure`, `anthropic`,
    /// `gemini`, `openai_compatible`).
    Provider,
}

/// The service tiers `tollgate estimate --tier` prices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EstimateTier {
    Default,
    Flex,
    Priority,
}

impl EstimateTier {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Flex => "flex",
            Self::Priority => "priority",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Csv,
}

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// First UTC day to compare, `YYYY-MM-DD` (or a span back from now, like `30d`).
    #[arg(long)]
    pub since: String,
    /// Last UTC day to compare, included (default: yesterday, the last complete day;
    /// OpenAI's figures for today are still arriving).
    #[arg(long)]
    pub until: Option<String>,
    /// One line per `day`, per `model`, or per model on each day (`day,model`).
    #[arg(long, default_value = "model")]
    pub by: String,
    /// How far apart the sides may be, per figure, in percent (default:
    /// reconcile.tolerance_percent, 0.5).
    #[arg(long, value_name = "PERCENT")]
    pub tolerance: Option<String>,
    /// The ledger's upstreams whose requests OpenAI bills (comma-separated; default:
    /// reconcile.upstreams, else every upstream at api.openai.com).
    #[arg(long, value_delimiter = ',')]
    pub upstream: Vec<String>,
    /// Print JSON instead of a table.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print CSV instead of a table.
    #[arg(long)]
    pub csv: bool,
}

#[derive(Debug, Args)]
pub struct TeamsArgs {
    #[command(subcommand)]
    pub command: TeamsCommand,
}

#[derive(Debug, Subcommand)]
pub enum TeamsCommand {
    /// Create a team.
    Create(TeamCreateArgs),
    /// Every team, by name.
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct TeamCreateArgs {
    /// The team's name (unique).
    pub name: String,
    #[command(flatten)]
    pub plan: PlanArgs,
    #[arg(long, value_enum, default_value = "table")]
    pub format: RecordFormat,
}

/// The tier and budget a team or a key is held to.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// A usage tier: free, tier-1 … tier-5.
    #[arg(long)]
    pub tier: Option<String>,
    /// A spending cap in USD per period (exact: at most 6 decimal places).
    #[arg(long, value_name = "USD")]
    pub budget_usd: Option<String>,
    /// The budget's period: daily, weekly, monthly (default) or total.
    #[arg(long, value_name = "PERIOD")]
    pub budget_period: Option<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long, value_enum, default_value = "table")]
    pub format: RecordFormat,
}

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key. Its secret is printed this once, alone on the first line, so
    /// `tollgate keys create --team T | head -1` gives a script just the key.
    Create(KeyCreateArgs),
    /// Keys, newest first. Secrets are never shown: only their hashes are stored.
    List(KeyListArgs),
    /// Revoke a key; running proxies refuse it within `auth.refresh_interval`.
    Revoke {
        /// The key's id or its prefix (`tg-` and 8 characters, as `keys list` shows).
        key: String,
    },
}

#[derive(Debug, Args)]
pub struct KeyCreateArgs {
    /// The team the key belongs to (its id or name).
    #[arg(long)]
    pub team: String,
    /// A name for the key, unique within its team (default: its prefix).
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub plan: PlanArgs,
    /// A requests-per-minute limit for this key.
    #[arg(long)]
    pub rpm: Option<u64>,
    /// A tokens-per-minute limit for this key.
    #[arg(long)]
    pub tpm: Option<u64>,
    /// A requests-per-day limit for this key.
    #[arg(long)]
    pub rpd: Option<u64>,
    /// Models the key may call, as names or globs (`gpt-4o-mini,o3*`); default: all.
    #[arg(long, value_delimiter = ',')]
    pub allowed_models: Vec<String>,
    /// When the key stops working: a span ahead (`30d`), a UTC day (`2026-12-31`), an
    /// RFC 3339 timestamp or Unix seconds.
    #[arg(long, value_name = "TIME")]
    pub expires_at: Option<String>,
    /// `json` prints one object: the record plus `key`, the secret.
    #[arg(long, value_enum, default_value = "table")]
    pub format: RecordFormat,
}

#[derive(Debug, Args)]
pub struct KeyListArgs {
    /// Only this team's keys (its id or name).
    #[arg(long)]
    pub team: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: RecordFormat,
}

/// How teams and keys are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RecordFormat {
    Table,
    Json,
}
