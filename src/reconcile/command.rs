//! `tollgate reconcile`: one report on standard output; the exit status says whether
//! every line is within the tolerance (0), some are not (1), or no report could be
//! made (2, with the side and the reason on standard error).

use std::collections::HashMap;

use super::{Ask, Days, Grouping, Reconciler, format};
use crate::cli::ReconcileArgs;
use crate::clock::now_ms;
use crate::config::{Config, Tolerance};
use crate::ledger::Store;

type Error = Box<dyn std::error::Error>;

/// The report as asked for, and whether every line is within the tolerance.
pub async fn run(
    args: &ReconcileArgs,
    config: &Config,
    env: &HashMap<String, String>,
) -> Result<(String, bool), Error> {
    let days = Days::parse(&args.since, args.until.as_deref(), now_ms())
        .map_err(|reason| format!("--since/--until: {reason}"))?;
    let by = Grouping::parse(&args.by)
        .ok_or_else(|| format!("--by: `{}` is not day, model or day,model", args.by))?;
    let tolerance = match &args.tolerance {
        Some(text) => {
            Tolerance::parse_percent(text).map_err(|reason| format!("--tolerance: {reason}"))?
        }
        None => config.reconcile.tolerance_percent,
    };
    let reconciler = Reconciler::new(config, config.pricing.catalog()?, env);
    let upstreams = if args.upstream.is_empty() {
        reconciler.billed_upstreams().to_vec()
    } else {
        args.upstream.clone()
    };
    let store = Store::lazy_with(&config.database.url, config.database.pool())
        .map_err(|error| format!("tollgate side: {error}"))?;
    store
        .migrate()
        .await
        .map_err(|error| format!("tollgate side: {error}"))?;
    let ask = Ask {
        days,
        by,
        tolerance,
        upstreams: &upstreams,
    };
    let report = reconciler.run(&store, &ask).await?;
    let text = if args.json {
        serde_json::to_string_pretty(&format::to_json(&report))?
    } else if args.csv {
        format::to_csv(&report)
    } else {
        format::to_table(&report)
    };
    Ok((text, report.within_tolerance()))
}
