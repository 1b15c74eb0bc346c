use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use tollgate::cli::{Cli, Command};
use tollgate::config::{Config, LogConfig, LogFormat};
use tollgate::ledger::Store;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env: HashMap<String, String> = std::env::vars().collect();
    let args = match &cli.command {
        Command::Serve(args) | Command::Migrate(args) => args,
    };
    let config = match Config::load(args.config.as_deref(), &env) {
        Ok(config) => config,
        Err(error) => return fail(&error),
    };
    init_tracing(&config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&error),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(_) => serve(config, &env).await,
            Command::Migrate(_) => Store::open(&config.database.url)
                .await
                .map(|_| tracing::info!(url = %config.database.url, "migrations applied"))
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error>),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&*error),
    }
}

async fn serve(
    config: Config,
    env: &HashMap<String, String>,
) -> Result<(), Box<dyn std::error::Error>> {
    let running = tollgate::server::start(config, env).await?;
    shutdown_signal().await;
    running.shutdown().await;
    Ok(())
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn fail(error: &dyn std::error::Error) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "tollgate: {error}");
    ExitCode::FAILURE
}
