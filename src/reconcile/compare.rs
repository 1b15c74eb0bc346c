//! Matching the two sides line by line: model names normalised through the catalog's
//! resolver on both sides, figures summed per line as the report groups them, the
//! differences checked against the tolerance, and a note on every line only one side
//! has.
//!
//! The matching rule: a name the catalog resolves (a dated snapshot, an alias, an
//! `ft:` name) becomes its catalog entry (`gpt-4o-mini-2024-07-18` → `gpt-4o-mini`),
//! prefixed `ft:` for a fine-tune; a name it does not resolve is kept as written. The
//! ledger's rows already carry the entry they were priced at; an unpriced row has the
//! model as OpenAI answered it, which is also what OpenAI's export names.

use std::collections::BTreeMap;

use super::ledger::LedgerGroup;
use super::line_item::{self, TokenKind};
use super::openai::Export;
use super::usd::Usd;
use super::{Days, Grouping, ReconcileError};
use crate::config::Tolerance;
use crate::pricing::Catalog;

/// What one side says about one line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    pub requests: u64,
    pub input_tokens: u64,
    pub cached_tokens: u64,
    pub output_tokens: u64,
    pub usd: Usd,
}

impl Figures {
    fn add(&mut self, other: &Self) -> Result<(), ReconcileError> {
        let sum = |a: u64, b: u64| a.checked_add(b).ok_or(ReconcileError::Overflow);
        self.requests = sum(self.requests, other.requests)?;
        self.input_tokens = sum(self.input_tokens, other.input_tokens)?;
        self.cached_tokens = sum(self.cached_tokens, other.cached_tokens)?;
        self.output_tokens = sum(self.output_tokens, other.output_tokens)?;
        self.usd = self
            .usd
            .checked_add(other.usd)
            .ok_or(ReconcileError::Overflow)?;
        Ok(())
    }

    /// The five figures as signed integers (USD in 10⁻²⁴ units), in report order.
    pub fn values(&self) -> [i128; 5] {
        [
            i128::from(self.requests),
            i128::from(self.input_tokens),
            i128::from(self.cached_tokens),
            i128::from(self.output_tokens),
            self.usd.units(),
        ]
    }
}

/// tollgate's own counts behind its figures: where drift tends to come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Estimated {
    /// Requests whose usage tollgate counted itself (`usage_source = estimated`).
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// Why a line is as it is, for a reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    /// A model in OpenAI's export that tollgate never recorded.
    OnlyProvider,
    /// A model in the ledger that OpenAI did not bill.
    OnlyTollgate,
    /// A day OpenAI reports and tollgate has nothing for, or the reverse.
    DayOnlyProvider,
    DayOnlyTollgate,
    /// Fine-tuning training, which OpenAI's usage export does not count as tokens.
    Training,
    /// Some of tollgate's rows have no price: their cost is unknown, not zero.
    Unpriced,
    /// Out of tolerance with some usage counted by tollgate, not reported by OpenAI.
    Estimated,
}

impl Note {
    pub fn text(self) -> &'static str {
        match self {
            Self::OnlyProvider => {
                "only in OpenAI's export: traffic that did not pass through tollgate (another \
                 key, or an endpoint tollgate does not meter), or a model name the catalog \
                 does not resolve (add it under [pricing.aliases])"
            }
            Self::OnlyTollgate => {
                "only in tollgate's ledger: requests OpenAI did not bill to this organization \
                 (an upstream that is not OpenAI: see --upstream), or a model OpenAI names \
                 otherwise (add it under [pricing.aliases])"
            }
            Self::DayOnlyProvider => "OpenAI reports spend on a day tollgate recorded nothing",
            Self::DayOnlyTollgate => "tollgate recorded requests on a day OpenAI reports nothing",
            Self::Training => {
                "fine-tuning training: OpenAI bills it as its own line item, outside the usage \
                 export; tollgate's side holds its cost only"
            }
            Self::Unpriced => {
                "some of tollgate's requests here have no price (cost unknown, not $0): price \
                 the model, then `tollgate prices reprice`"
            }
            Self::Estimated => {
                "some of tollgate's usage here was estimated (a client hung up or the upstream \
                 sent no usage): estimates undercount reasoning and tool tokens"
            }
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Self::OnlyProvider => "only_provider",
            Self::OnlyTollgate => "only_tollgate",
            Self::DayOnlyProvider => "day_only_provider",
            Self::DayOnlyTollgate => "day_only_tollgate",
            Self::Training => "training",
            Self::Unpriced => "unpriced",
            Self::Estimated => "estimated",
        }
    }
}

/// One line of the report: a day, a model, or a model on a day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub day: Option<i64>,
    pub model: Option<String>,
    /// `None`: that side has nothing for this line.
    pub provider: Option<Figures>,
    pub tollgate: Option<Figures>,
    pub estimated: Estimated,
    pub unpriced_requests: u64,
    pub within_tolerance: bool,
    pub note: Option<Note>,
}

impl Line {
    /// One figure of each side, zero where a side has none.
    pub fn pairs(&self) -> [(i128, i128); 5] {
        let provider = self.provider.unwrap_or_default().values();
        let tollgate = self.tollgate.unwrap_or_default().values();
        std::array::from_fn(|i| (provider[i], tollgate[i]))
    }
}

/// Charges OpenAI reports that are not model tokens (tool calls, storage, audio
/// seconds): tollgate meters none of them, so they are listed, not compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmetered {
    pub day: Option<i64>,
    pub line_item: String,
    pub usd: Usd,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub days: Days,
    pub by: Grouping,
    pub tolerance: Tolerance,
    pub upstreams: Vec<String>,
    pub lines: Vec<Line>,
    pub total: Line,
    pub unmetered: Vec<Unmetered>,
    pub unmetered_usd: Usd,
}

impl Report {
    pub fn within_tolerance(&self) -> bool {
        self.lines.iter().all(|line| line.within_tolerance)
    }

    pub fn lines_out_of_tolerance(&self) -> usize {
        self.lines.iter().filter(|l| !l.within_tolerance).count()
    }

    /// |tollgate − OpenAI| / OpenAI of the total: USD, and input plus output tokens.
    /// 1 when OpenAI reports nothing and tollgate does.
    pub fn drift(&self) -> (f64, f64) {
        let [_, input, _, output, usd] = self.total.pairs();
        let tokens = (input.0 + output.0, input.1 + output.1);
        (ratio(usd), ratio(tokens))
    }
}

#[expect(
    clippy::cast_precision_loss,
    reason = "a gauge's ratio, not money: 15 significant digits are plenty"
)]
fn ratio((provider, tollgate): (i128, i128)) -> f64 {
    if provider == 0 {
        return if tollgate == 0 { 0.0 } else { 1.0 };
    }
    (tollgate - provider).unsigned_abs() as f64 / provider.unsigned_abs() as f64
}

/// Whether `tollgate` is within `tolerance` of `provider`: |t − p| ≤ tolerance × |p|,
/// in integers. A side with nothing where the other has something is never within.
pub fn within(provider: i128, tollgate: i128, tolerance: Tolerance) -> bool {
    let mut diff = (tollgate - provider).unsigned_abs();
    let mut base = provider.unsigned_abs();
    let ppm = u128::from(tolerance.ppm());
    loop {
        match (diff.checked_mul(1_000_000), base.checked_mul(ppm)) {
            (Some(left), Some(right)) => return left <= right,
            // Beyond any real bill; drop digits from both until it fits.
            _ => {
                diff /= 1_000;
                base /= 1_000;
            }
        }
    }
}

/// (tollgate − OpenAI) / OpenAI in percent, rounded half away from zero to `places`;
/// `None` when OpenAI's figure is zero.
pub fn percent(provider: i128, tollgate: i128, places: u32) -> Option<String> {
    if provider == 0 {
        return None;
    }
    let factor = 100 * 10i128.pow(places);
    let (mut diff, mut base) = (tollgate - provider, provider.abs());
    let scaled = loop {
        if let Some(scaled) = diff.checked_mul(factor) {
            break scaled;
        }
        diff /= 1_000;
        base /= 1_000;
        if base == 0 {
            return None;
        }
    };
    let negative = scaled < 0;
    let (magnitude, base) = (scaled.unsigned_abs(), base.unsigned_abs());
    let mut quotient = magnitude / base;
    if (magnitude % base) * 2 >= base {
        quotient += 1;
    }
    let sign = if negative && quotient > 0 { "-" } else { "" };
    let unit = 10u128.pow(places);
    if places == 0 {
        return Some(format!("{sign}{quotient}"));
    }
    let width = places as usize;
    Some(format!(
        "{sign}{}.{:0width$}",
        quotient / unit,
        quotient % unit
    ))
}

/// A model name as both sides are matched on (see the module docs).
fn model_key(catalog: &Catalog, name: &str, fine_tuned: bool) -> String {
    match catalog.resolve(name) {
        Some(resolved) if resolved.fine_tuned || fine_tuned => format!("ft:{}", resolved.key),
        Some(resolved) => resolved.key.to_owned(),
        None => name.to_owned(),
    }
}

fn training(key: String) -> String {
    format!("{key} (training)")
}

#[derive(Default)]
struct Acc {
    provider: Option<Figures>,
    tollgate: Option<Figures>,
    estimated: Estimated,
    unpriced: u64,
    training: bool,
}

type Lines = BTreeMap<(Option<i64>, Option<String>), Acc>;

/// Adds one side's figures to a line, making the line if it is new.
fn add_to<'a>(
    lines: &'a mut Lines,
    key: (Option<i64>, Option<String>),
    figures: &Figures,
    provider: bool,
) -> Result<&'a mut Acc, ReconcileError> {
    let is_training = key.1.as_deref().is_some_and(|m| m.ends_with(" (training)"));
    let acc = lines.entry(key).or_default();
    acc.training |= is_training;
    let side = if provider {
        &mut acc.provider
    } else {
        &mut acc.tollgate
    };
    side.get_or_insert_with(Figures::default).add(figures)?;
    Ok(acc)
}

/// What the report is asked for.
pub struct Ask<'a> {
    pub days: Days,
    pub by: Grouping,
    pub tolerance: Tolerance,
    pub upstreams: &'a [String],
}

/// The report from both sides' figures.
pub fn build(
    catalog: &Catalog,
    ask: &Ask<'_>,
    export: Export,
    ledger: Vec<LedgerGroup>,
) -> Result<Report, ReconcileError> {
    let by = ask.by;
    let key = |day: i64, model: String| (by.day.then_some(day), by.model.then_some(model));
    let mut lines = Lines::new();
    let mut unmetered: BTreeMap<(Option<i64>, String), Usd> = BTreeMap::new();
    for row in export.usage {
        let figures = Figures {
            requests: row.requests,
            input_tokens: row.input_tokens,
            cached_tokens: row.cached_tokens,
            output_tokens: row.output_tokens,
            usd: Usd::ZERO,
        };
        add_to(
            &mut lines,
            key(row.day, model_key(catalog, &row.model, false)),
            &figures,
            true,
        )?;
    }
    for row in export.costs {
        let Some(charge) = line_item::parse(&row.line_item) else {
            let sum = unmetered
                .entry((by.day.then_some(row.day), row.line_item))
                .or_default();
            *sum = sum.checked_add(row.usd).ok_or(ReconcileError::Overflow)?;
            continue;
        };
        let mut model = model_key(catalog, &charge.model, false);
        if charge.kind == TokenKind::Training {
            model = training(model);
        }
        let figures = Figures {
            usd: row.usd,
            ..Figures::default()
        };
        add_to(&mut lines, key(row.day, model), &figures, true)?;
    }
    for group in ledger {
        let fine_tuned = group.variant.starts_with("fine_tuned");
        let mut model = model_key(catalog, &group.model, fine_tuned);
        let usd = Usd::from_cost(group.cost).ok_or(ReconcileError::Overflow)?;
        // Training tokens are not usage in OpenAI's export; only their cost compares.
        let figures = if group.kind == "training" {
            model = training(model);
            Figures {
                usd,
                ..Figures::default()
            }
        } else {
            Figures {
                requests: group.requests,
                input_tokens: group.input_tokens,
                cached_tokens: group.cached_tokens,
                output_tokens: group.output_tokens,
                usd,
            }
        };
        let acc = add_to(&mut lines, key(group.day, model), &figures, false)?;
        acc.unpriced += group.unpriced;
        if group.estimated && group.kind != "training" {
            acc.estimated.requests += group.requests;
            acc.estimated.input_tokens += group.input_tokens;
            acc.estimated.output_tokens += group.output_tokens;
        }
    }
    let mut total = Acc::default();
    let mut out = Vec::with_capacity(lines.len());
    for ((day, model), acc) in lines {
        for (side, into) in [
            (&acc.provider, &mut total.provider),
            (&acc.tollgate, &mut total.tollgate),
        ] {
            if let Some(figures) = side {
                into.get_or_insert_with(Figures::default).add(figures)?;
            }
        }
        total.estimated.requests += acc.estimated.requests;
        total.estimated.input_tokens += acc.estimated.input_tokens;
        total.estimated.output_tokens += acc.estimated.output_tokens;
        total.unpriced += acc.unpriced;
        out.push(line(day, model, acc, ask.tolerance));
    }
    let mut unmetered_usd = Usd::ZERO;
    let unmetered = unmetered
        .into_iter()
        .map(|((day, line_item), usd)| {
            unmetered_usd = unmetered_usd
                .checked_add(usd)
                .ok_or(ReconcileError::Overflow)?;
            Ok(Unmetered {
                day,
                line_item,
                usd,
            })
        })
        .collect::<Result<_, ReconcileError>>()?;
    Ok(Report {
        days: ask.days,
        by,
        tolerance: ask.tolerance,
        upstreams: ask.upstreams.to_vec(),
        lines: out,
        total: line(None, None, total, ask.tolerance),
        unmetered,
        unmetered_usd,
    })
}

fn line(day: Option<i64>, model: Option<String>, acc: Acc, tolerance: Tolerance) -> Line {
    let mut line = Line {
        day,
        model,
        provider: acc.provider,
        tollgate: acc.tollgate,
        estimated: acc.estimated,
        unpriced_requests: acc.unpriced,
        within_tolerance: true,
        note: None,
    };
    line.within_tolerance = line
        .pairs()
        .iter()
        .all(|&(provider, tollgate)| within(provider, tollgate, tolerance));
    let by_model = line.model.is_some();
    line.note = match (&line.provider, &line.tollgate) {
        _ if acc.training => Some(Note::Training),
        (None, Some(_)) if by_model => Some(Note::OnlyTollgate),
        (Some(_), None) if by_model => Some(Note::OnlyProvider),
        (None, Some(_)) if line.day.is_some() => Some(Note::DayOnlyTollgate),
        (Some(_), None) if line.day.is_some() => Some(Note::DayOnlyProvider),
        _ if line.within_tolerance => None,
        _ if line.unpriced_requests > 0 => Some(Note::Unpriced),
        _ if line.estimated.requests > 0 => Some(Note::Estimated),
        _ => None,
    };
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerance_is_checked_in_integers() {
        let half = Tolerance::DEFAULT;
        assert!(within(1000, 1005, half));
        assert!(within(1000, 995, half));
        assert!(!within(1000, 1006, half));
        assert!(within(0, 0, half));
        assert!(!within(0, 1, half), "nothing against something");
        assert!(!within(1, 0, half));
        assert!(within(i128::MAX / 2, i128::MAX / 2, half));
        assert!(!within(i128::MAX / 4, i128::MAX / 2, half));
    }

    #[test]
    fn percentages_are_exact_then_rounded() {
        assert_eq!(percent(1000, 1005, 2).as_deref(), Some("0.50"));
        assert_eq!(percent(3, 2, 4).as_deref(), Some("-33.3333"));
        assert_eq!(percent(3, 4, 2).as_deref(), Some("33.33"));
        assert_eq!(percent(8, 9, 2).as_deref(), Some("12.50"));
        assert_eq!(percent(200_000, 199_999, 2).as_deref(), Some("0.00"));
        assert_eq!(percent(0, 5, 2), None);
        assert_eq!(percent(7, 7, 0).as_deref(), Some("0"));
        assert_eq!(
            percent(i128::MAX / 2, i128::MAX / 2 + i128::MAX / 20, 2).as_deref(),
            Some("10.00")
        );
    }

    #[test]
    fn names_match_through_the_resolver() {
        let catalog = Catalog::builtin();
        for (name, fine_tuned, key) in [
            ("gpt-4o-mini-2024-07-18", false, "gpt-4o-mini"),
            ("gpt-4o-mini", false, "gpt-4o-mini"),
            ("gpt-4o-mini", true, "ft:gpt-4o-mini"),
            (
                "ft:gpt-4o-mini-2024-07-18:acme::abc",
                false,
                "ft:gpt-4o-mini",
            ),
            (
                "gpt-9-preview-2027-01-01",
                false,
                "gpt-9-preview-2027-01-01",
            ),
        ] {
            assert_eq!(model_key(&catalog, name, fine_tuned), key, "{name}");
        }
    }
}
