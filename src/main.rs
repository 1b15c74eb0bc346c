use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use tollgate::auth::command as auth_command;
use tollgate::cli::{
    Cli, Command, KeysCommand, OutputFormat, PricesArgs, PricesCommand, SpendArgs, SpendGroup,
};
use tollgate::clock::{now_ms, parse_time};
use tollgate::config::{AuthMode, Config, LogConfig, LogFormat};
use tollgate::ledger::Store;
use tollgate::ledger::report::{self, Group};
use tollgate::ledger::rollup::{RollupFilter, RollupGroup, rollup_spend};
use tollgate::ledger::shadow;
use tollgate::pricing::{self, Catalog};
use tracing_subscriber::EnvFilter;

/// jemalloc in place of the system allocator: see Cargo.toml.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

type Error = Box<dyn std::error::Error>;

/// `tollgate reconcile`'s status when no report could be made (1 means drift).
const NO_REPORT: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env: HashMap<String, String> = std::env::vars().collect();
    let failed = if matches!(cli.command, Command::Reconcile(_)) {
        ExitCode::from(NO_REPORT)
    } else {
        ExitCode::FAILURE
    };
    let config = match Config::load(cli.config.as_deref(), &env) {
        Ok(config) => config,
        Err(error) => {
            fail(&error);
            return failed;
        }
    };
    init_tracing(&config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            fail(&error);
            return failed;
        }
    };
    match runtime.block_on(run(cli.command, config, &env)) {
        Ok(code) => code,
        Err(error) => {
            fail(&*error);
            failed
        }
    }
}

/// Runs a command; `Ok` carries its exit status (`reconcile` exits 1 on drift).
async fn run(
    command: Command,
    config: Config,
    env: &HashMap<String, String>,
) -> Result<ExitCode, Error> {
    if let Command::Reconcile(args) = &command {
        let (report, within) = tollgate::reconcile::command::run(args, &config, env).await?;
        print(&report)?;
        return Ok(if within {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    run_other(command, config, env)
        .await
        .map(|()| ExitCode::SUCCESS)
}

async fn run_other(
    command: Command,
    config: Config,
    env: &HashMap<String, String>,
) -> Result<(), Error> {
    match command {
        Command::Serve => serve(config, env).await,
        Command::Migrate => {
            Store::open_with(&config.database.url, config.database.pool()).await?;
            tracing::info!(url = %config.database.url, "migrations applied");
            Ok(())
        }
        Command::Prices(args) => prices(args, &config).await,
        Command::Estimate(args) => {
            let catalog = config.pricing.catalog()?;
            print(&tollgate::estimate::run(&args, &catalog)?)
        }
        Command::Spend(args) => spend(args, &config).await,
        Command::Teams(args) => {
            let store = Store::open_with(&config.database.url, config.database.pool()).await?;
            let tiers = config.limits.tier_names();
            print(&auth_command::teams(&args.command, &store, &tiers, now_ms()).await?)
        }
        Command::Keys(args) => {
            if config.auth.mode == AuthMode::Passthrough
                && matches!(args.command, KeysCommand::Create(_))
            {
                tracing::warn!(
                    "auth.mode is passthrough: the proxy ignores tollgate keys until \
                     auth.mode = \"keys\""
                );
            }
            let store = Store::open_with(&config.database.url, config.database.pool()).await?;
            let tiers = config.limits.tier_names();
            print(&auth_command::keys(&args.command, &store, &tiers, now_ms()).await?)
        }
        Command::Reconcile(_) => Err("reconcile is run by `run`".into()),
    }
}

async fn serve(config: Config, env: &HashMap<String, String>) -> Result<(), Error> {
    let running = tollgate::server::start(config, env).await?;
    shutdown_signal().await;
    running.shutdown().await;
    Ok(())
}

async fn prices(args: PricesArgs, config: &Config) -> Result<(), Error> {
    match args.command {
        None => {
            let catalog = config.pricing.catalog()?;
            if args.json {
                print(&pricing::table::render_json(&catalog)?)
            } else {
                print(&pricing::table::render_table(&catalog))
            }
        }
        Some(PricesCommand::Import {
            file,
            out,
            providers,
        }) => {
            let origin = file.display().to_string();
            let text = std::fs::read_to_string(&file).map_err(|e| format!("{origin}: {e}"))?;
            let providers: Vec<&str> = providers.iter().map(String::as_str).collect();
            let imported = pricing::import_litellm(&text, &origin, &providers)?;
            let toml = imported.to_toml()?;
            // Check the result merges before handing it out as a prices file.
            Catalog::builtin().merge(&imported.overrides, &origin)?;
            let summary = format!(
                "imported {} models, skipped {}; name the file in [pricing] file = \"…\"",
                imported.imported,
                imported.skipped.len()
            );
            match out {
                Some(path) => {
                    std::fs::write(&path, toml).map_err(|e| format!("{}: {e}", path.display()))?;
                    tracing::info!(path = %path.display(), "{summary}");
                    Ok(())
                }
                None => {
                    tracing::info!("{summary}");
                    print(&toml)
                }
            }
        }
        Some(PricesCommand::Reprice { model, since }) => {
            let catalog = config.pricing.catalog()?;
            if catalog.resolve(&model).is_none() {
                return Err(format!(
                    "`{model}` still has no price: add it under [pricing.models] (close names: {})",
                    catalog.suggest(&model).join(", ")
                )
                .into());
            }
            let since_ms = parse_time(&since, now_ms())?;
            let store = Store::open_with(&config.database.url, config.database.pool()).await?;
            let done = report::reprice(&store, &catalog, &model, since_ms).await?;
            print(&format!(
                "repriced {} rows of {model}; {} still unpriced\n",
                done.priced, done.still_unpriced
            ))
        }
    }
}

async fn spend(args: SpendArgs, config: &Config) -> Result<(), Error> {
    let since_ms = parse_time(&args.since, now_ms())?;
    if args.shadow {
        let store = Store::open_with(&config.database.url, config.database.pool()).await?;
        let lines = shadow::shadow_report(&store, since_ms, i64::MAX).await?;
        return match args.format {
            OutputFormat::Table => print(&shadow::render_shadow_table(&lines)),
            OutputFormat::Csv => print(&shadow::render_shadow_csv(&lines)),
            OutputFormat::Json => print(&serde_json::to_string_pretty(
                &serde_json::json!({"data": lines}),
            )?),
        };
    }
    let what_if = match &args.what_if {
        Some(model) => {
            let catalog = config.pricing.catalog()?;
            Some(report::what_if_rates(&catalog, model).ok_or_else(|| {
                format!(
                    "unknown model `{model}`; close names: {}",
                    catalog.suggest(model).join(", ")
                )
            })?)
        }
        None => None,
    };
    let store = Store::open_with(&config.database.url, config.database.pool()).await?;
    let raw = |group| report::spend(&store, since_ms, group, what_if);
    let rolled_up = async |group| {
        let filter = RollupFilter {
            from_ms: Some(since_ms),
            ..RollupFilter::default()
        };
        let mut lines = rollup_spend(&store, group, &filter).await?;
        if let Some(rates) = what_if {
            report::add_what_if(&mut lines, rates);
        }
        Ok::<_, Error>(lines)
    };
    // Team, key, kind, tier and provider totals are the rollups' figures, the ones /admin/spend
    // and the budgets read; the other groups keep reading the rows, to the millisecond.
    let lines = match args.by {
        SpendGroup::Caller => raw(Group::Caller).await?,
        SpendGroup::Model => raw(Group::Model).await?,
        SpendGroup::Day => raw(Group::Day).await?,
        SpendGroup::Team => rolled_up(RollupGroup::Team).await?,
        SpendGroup::Key => rolled_up(RollupGroup::Key).await?,
        SpendGroup::Kind => rolled_up(RollupGroup::Kind).await?,
        SpendGroup::Tier => rolled_up(RollupGroup::Tier).await?,
        SpendGroup::Provider => rolled_up(RollupGroup::Provider).await?,
    };
    match args.format {
        OutputFormat::Table => print(&report::render_table(&lines, args.what_if.as_deref())),
        OutputFormat::Csv => print(&report::render_csv(&lines)),
        OutputFormat::Json => print(&serde_json::to_string_pretty(
            &serde_json::json!({"data": lines}),
        )?),
    }
}

fn print(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    let written = out.write_all(text.as_bytes()).and_then(|()| {
        if text.ends_with('\n') {
            Ok(())
        } else {
            out.write_all(b"\n")
        }
    });
    match written {
        // A reader that stops early (`keys create | head -1`) got what it wanted.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn init_tracing(log: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a terminal: log collectors get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn fail(error: &dyn std::error::Error) {
    let _ = writeln!(std::io::stderr(), "tollgate: {error}");
}
