//! The shadow report: per model and candidate, what the mirrored requests cost at each
//! (per request), and how often the candidate's answer agreed with the one the client
//! got. Shadow rows are kind `shadow`; every other report leaves them out.

use std::fmt::Write as _;

use serde::Serialize;

use super::{LedgerError, Store};
use crate::pricing::Cost;

/// One model and candidate pair over a range.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ShadowLine {
    /// The model the client was served (as tollgate asked the upstream for it).
    pub model: String,
    pub candidate: String,
    /// Requests mirrored (one shadow row each).
    pub requests: u64,
    /// Of them, those the candidate answered with a success.
    pub answered: u64,
    /// The mirrored requests' own cost, and the candidate's for the same requests.
    pub model_cost_usd: Cost,
    pub candidate_cost_usd: Cost,
    /// The same per request, rounded down to the pico-dollar; only priced rows count.
    pub model_cost_per_request_usd: Cost,
    pub candidate_cost_per_request_usd: Cost,
    /// Answers compared, and how many matched exactly (first choice's text and tool
    /// calls).
    pub compared: u64,
    pub text_matches: u64,
    /// Answers that were JSON or tool calls, and how many matched by parsed value.
    pub value_compared: u64,
    pub value_matches: u64,
    /// Matches over compared, to four places (`"0.9500"`); `None` when nothing was
    /// compared.
    pub text_agreement: Option<String>,
    pub value_agreement: Option<String>,
}

/// Shadow rows from `from_ms` (inclusive) to `to_ms` (exclusive), grouped by model and
/// candidate, each joined to the row of the request it mirrored.
pub async fn shadow_report(
    store: &Store,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<ShadowLine>, LedgerError> {
    // Costs are summed as whole micro-USD plus pico remainders, as the rollups do, so a
    // 64-bit sum holds up to $9 trillion exactly.
    let sql = store.sql(
        "SELECT coalesce(p.model_requested, p.model_answered, '') AS model, \
         coalesce(s.model_requested, '') AS candidate, count(*) AS requests, \
         CAST(sum(CASE WHEN s.outcome = 'ok' THEN 1 ELSE 0 END) AS BIGINT) AS answered, \
         CAST(coalesce(sum(p.cost_pico / 1000000), 0) AS BIGINT) AS model_micros, \
         CAST(coalesce(sum(p.cost_pico % 1000000), 0) AS BIGINT) AS model_rem, \
         count(p.cost_pico) AS model_priced, \
         CAST(coalesce(sum(s.cost_pico / 1000000), 0) AS BIGINT) AS candidate_micros, \
         CAST(coalesce(sum(s.cost_pico % 1000000), 0) AS BIGINT) AS candidate_rem, \
         count(s.cost_pico) AS candidate_priced, \
         count(s.shadow_text_match) AS compared, \
         CAST(coalesce(sum(CASE WHEN s.shadow_text_match THEN 1 ELSE 0 END), 0) AS BIGINT) \
         AS text_matches, \
         count(s.shadow_value_match) AS value_compared, \
         CAST(coalesce(sum(CASE WHEN s.shadow_value_match THEN 1 ELSE 0 END), 0) AS BIGINT) \
         AS value_matches \
         FROM requests s LEFT JOIN requests p ON p.id = s.shadow_of \
         WHERE s.kind = 'shadow' AND s.ts_ms >= ? AND s.ts_ms < ? \
         GROUP BY 1, 2 ORDER BY 1, 2",
    );
    macro_rules! run {
        ($pool:expr) => {{
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(from_ms)
                .bind(to_ms)
                .fetch_all($pool)
                .await
                .map_err(LedgerError::Read)?;
            rows.iter().map(line).collect()
        }};
    }
    match store {
        Store::Sqlite(ledger) => run!(ledger.pool()),
        Store::Postgres(ledger) => run!(ledger.pool()),
    }
}

fn line<R>(row: &R) -> Result<ShadowLine, LedgerError>
where
    R: sqlx::Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let get = |column: &str| -> Result<u64, LedgerError> {
        let value: i64 = row.try_get(column).map_err(LedgerError::Read)?;
        Ok(u64::try_from(value).unwrap_or(0))
    };
    let cost = |micros: &str, rem: &str| -> Result<Cost, LedgerError> {
        Ok(Cost::from_pico(
            u128::from(get(micros)?) * 1_000_000 + u128::from(get(rem)?),
        ))
    };
    let model_cost = cost("model_micros", "model_rem")?;
    let candidate_cost = cost("candidate_micros", "candidate_rem")?;
    let (compared, text_matches) = (get("compared")?, get("text_matches")?);
    let (value_compared, value_matches) = (get("value_compared")?, get("value_matches")?);
    Ok(ShadowLine {
        model: row.try_get("model").map_err(LedgerError::Read)?,
        candidate: row.try_get("candidate").map_err(LedgerError::Read)?,
        requests: get("requests")?,
        answered: get("answered")?,
        model_cost_usd: model_cost,
        candidate_cost_usd: candidate_cost,
        model_cost_per_request_usd: per(model_cost, get("model_priced")?),
        candidate_cost_per_request_usd: per(candidate_cost, get("candidate_priced")?),
        compared,
        text_matches,
        value_compared,
        value_matches,
        text_agreement: ratio(text_matches, compared),
        value_agreement: ratio(value_matches, value_compared),
    })
}

fn per(total: Cost, count: u64) -> Cost {
    match count {
        0 => Cost::ZERO,
        n => Cost::from_pico(total.as_pico() / u128::from(n)),
    }
}

/// `part / whole` to four decimal places, rounded down, from integers.
fn ratio(part: u64, whole: u64) -> Option<String> {
    if whole == 0 {
        return None;
    }
    let scaled = u128::from(part) * 10_000 / u128::from(whole);
    Some(format!("{}.{:04}", scaled / 10_000, scaled % 10_000))
}

/// A plain-text table of the report.
pub fn render_shadow_table(lines: &[ShadowLine]) -> String {
    let header = [
        "model",
        "candidate",
        "requests",
        "answered",
        "model_usd/req",
        "candidate_usd/req",
        "model_usd",
        "candidate_usd",
        "text_agree",
        "value_agree",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    let agreement = |rate: &Option<String>, matches: u64, of: u64| match rate {
        Some(rate) => format!("{rate} ({matches}/{of})"),
        None => "-".to_owned(),
    };
    for line in lines {
        rows.push(vec![
            line.model.clone(),
            line.candidate.clone(),
            line.requests.to_string(),
            line.answered.to_string(),
            line.model_cost_per_request_usd.to_decimal_string(),
            line.candidate_cost_per_request_usd.to_decimal_string(),
            line.model_cost_usd.to_decimal_string(),
            line.candidate_cost_usd.to_decimal_string(),
            agreement(&line.text_agreement, line.text_matches, line.compared),
            agreement(
                &line.value_agreement,
                line.value_matches,
                line.value_compared,
            ),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, &w))| {
                if i < 2 {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        let _ = writeln!(out, "{}", cells.join("  "));
    }
    out
}

pub fn render_shadow_csv(lines: &[ShadowLine]) -> String {
    let mut out = String::from(
        "model,candidate,requests,answered,model_cost_usd,candidate_cost_usd,\
         model_cost_per_request_usd,candidate_cost_per_request_usd,compared,text_matches,\
         text_agreement,value_compared,value_matches,value_agreement\n",
    );
    // Model names come from clients and upstreams: quote them, and defuse formulas.
    let cell = |text: &str| {
        let text = if text.starts_with(['=', '+', '-', '@']) {
            format!("'{text}")
        } else {
            text.to_owned()
        };
        format!("\"{}\"", text.replace('"', "\"\""))
    };
    for l in lines {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            cell(&l.model),
            cell(&l.candidate),
            l.requests,
            l.answered,
            l.model_cost_usd,
            l.candidate_cost_usd,
            l.model_cost_per_request_usd,
            l.candidate_cost_per_request_usd,
            l.compared,
            l.text_matches,
            l.text_agreement.as_deref().unwrap_or_default(),
            l.value_compared,
            l.value_matches,
            l.value_agreement.as_deref().unwrap_or_default(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_round_down_from_integers() {
        assert_eq!(ratio(0, 0), None);
        assert_eq!(ratio(1, 3).as_deref(), Some("0.3333"));
        assert_eq!(ratio(2, 3).as_deref(), Some("0.6666"));
        assert_eq!(ratio(5, 5).as_deref(), Some("1.0000"));
        assert_eq!(per(Cost::from_pico(10), 3), Cost::from_pico(3));
        assert_eq!(per(Cost::from_pico(10), 0), Cost::ZERO);
    }
}
