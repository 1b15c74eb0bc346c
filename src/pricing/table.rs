//! The effective catalog as `tollgate prices` prints it: a table, or JSON.

use std::fmt::Write as _;

use super::{Catalog, Rate, TierSheet};

/// One line per model: every rate per 1M tokens (standard, batch, the flex and
/// priority service tiers, fine-tuned, training), context window, date and source;
/// then the aliases.
pub fn render_table(catalog: &Catalog) -> String {
    let rate = |rate: Option<Rate>| rate.map_or_else(|| "-".to_owned(), |r| r.to_decimal_string());
    let sheet = |sheet: &Option<TierSheet>| -> [String; 3] {
        match sheet {
            Some(s) => [
                s.input.to_decimal_string(),
                rate(Some(s.cached_input.unwrap_or(s.input))),
                s.output.to_decimal_string(),
            ],
            None => ["-", "-", "-"].map(str::to_owned),
        }
    };
    let mut rows: Vec<Vec<String>> = vec![
        [
            "model",
            "input",
            "cached",
            "output",
            "batch in",
            "batch out",
            "flex in",
            "flex cached",
            "flex out",
            "prio in",
            "prio cached",
            "prio out",
            "ft in",
            "ft cached",
            "ft out",
            "training",
            "context",
            "as of",
            "source",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for (name, p) in catalog.models() {
        let mut row = vec![
            name.to_owned(),
            p.input.to_decimal_string(),
            rate(p.cached_input),
            p.output.to_decimal_string(),
            rate(p.batch_input),
            rate(p.batch_output),
        ];
        row.extend(sheet(&p.flex));
        row.extend(sheet(&p.priority));
        row.extend([
            rate(p.ft_input),
            rate(p.ft_cached_input),
            rate(p.ft_output),
            rate(p.training),
            p.context_window
                .map_or_else(|| "-".to_owned(), |c| c.to_string()),
            p.as_of.clone().unwrap_or_else(|| "-".to_owned()),
            p.source.clone().unwrap_or_else(|| "-".to_owned()),
        ]);
        rows.push(row);
    }
    let mut widths = vec![0usize; rows[0].len()];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::from(
        "USD per 1M tokens (batch rates without an entry are half the standard ones; \
         flex and prio(rity) are service tiers, `-` where the model does not offer one, \
         and a request served at it is priced at standard; `tollgate prices --json` has \
         each tier's date and source)\n\n",
    );
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, &width))| {
                if i == 0 {
                    format!("{cell:<width$}")
                } else {
                    format!("{cell:>width$}")
                }
            })
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    let aliases: Vec<(&str, &str)> = catalog.aliases().collect();
    if !aliases.is_empty() {
        out.push_str("\naliases\n");
        for (alias, target) in aliases {
            let _ = writeln!(out, "  {alias} -> {target}");
        }
    }
    out
}

/// `{"models": {name: {rates as decimal strings…}}, "aliases": {…}}`.
pub fn render_json(catalog: &Catalog) -> Result<String, serde_json::Error> {
    let models: serde_json::Map<String, serde_json::Value> = catalog
        .models()
        .map(|(name, prices)| Ok((name.to_owned(), serde_json::to_value(prices)?)))
        .collect::<Result<_, serde_json::Error>>()?;
    let aliases: serde_json::Map<String, serde_json::Value> = catalog
        .aliases()
        .map(|(alias, target)| (alias.to_owned(), serde_json::Value::from(target)))
        .collect();
    serde_json::to_string_pretty(&serde_json::json!({"models": models, "aliases": aliases}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lists_every_model_with_exact_rates() {
        let catalog = Catalog::builtin();
        let table = render_table(&catalog);
        assert_eq!(
            table
                .lines()
                .filter(|l| l.starts_with("gpt-4o-mini "))
                .count(),
            1,
            "{table}"
        );
        let line = table
            .lines()
            .find(|l| l.starts_with("gpt-4o-mini "))
            .unwrap();
        // Standard, batch, priority (0.25 / 0.125 / 1), fine-tuned, date.
        for cell in [
            "0.15",
            "0.075",
            "0.6",
            "0.3",
            "0.25",
            "0.125",
            "1",
            "1.2",
            "2026-04-01",
        ] {
            assert!(
                line.split_whitespace().any(|c| c == cell),
                "{cell} missing in {line}"
            );
        }
        assert!(table.lines().count() >= catalog.len() + 3);
        let header = table.lines().find(|l| l.starts_with("model")).unwrap();
        for column in ["flex in", "flex cached", "flex out", "prio in", "prio out"] {
            assert!(header.contains(column), "{header}");
        }
        let cells = |model: &str| -> Vec<String> {
            let line = table
                .lines()
                .find(|l| l.starts_with(&format!("{model} ")))
                .unwrap();
            line.split_whitespace().map(str::to_owned).collect()
        };
        // gpt-5: input cached output, batch in/out, flex in/cached/out, prio in/cached/out.
        assert_eq!(
            cells("gpt-5")[1..12],
            [
                "1.25", "0.125", "10", "0.625", "5", "0.625", "0.0625", "5", "2.5", "0.25", "20"
            ]
        );
        // gpt-4o-mini offers no flex.
        assert_eq!(cells("gpt-4o-mini")[6..9], ["-", "-", "-"]);
    }

    #[test]
    fn json_prices_are_strings_never_floats() {
        let json: serde_json::Value =
            serde_json::from_str(&render_json(&Catalog::builtin()).unwrap()).unwrap();
        assert_eq!(json["models"]["gpt-4o-mini"]["input"], "0.15");
        assert_eq!(json["models"]["gpt-4o-mini"]["cached_input"], "0.075");
        let flex = &json["models"]["o3"]["flex"];
        assert_eq!(flex["input"], "1");
        assert_eq!(flex["cached_input"], "0.25");
        assert_eq!(flex["as_of"], "2026-12-02");
        assert!(flex["source"].as_str().unwrap().contains("flex"), "{flex}");
        assert_eq!(json["models"]["o3"]["priority"]["output"], "14");
        assert!(json["models"]["gpt-4o-mini"].get("flex").is_none());
    }
}
