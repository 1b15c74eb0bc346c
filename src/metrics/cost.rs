//! `tollgate_cost_usd_total`: spend summed in exact integer pico-USD, one accumulator
//! per label set, and turned into a float only when scraped. Adding float dollars per
//! request would drift from the ledger's exact sum; this way the series differs from
//! it by the display of one f64 at most.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, LabelPair, Metric, MetricFamily, MetricType};

use crate::pricing::Cost;

pub const NAME: &str = "tollgate_cost_usd_total";
const HELP: &str = "Spend in USD, summed exactly in pico-USD as the ledger records it.";

/// One series' running total in pico-USD.
#[derive(Default)]
pub struct CostCell(Mutex<u128>);

impl CostCell {
    pub fn add(&self, cost: Cost) {
        let mut total = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *total = total.saturating_add(cost.as_pico());
    }

    fn get(&self) -> Cost {
        Cost::from_pico(*self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The collector: cells by label values, in the order of `labels`.
#[derive(Clone)]
pub struct CostCounter {
    desc: Arc<Desc>,
    labels: Arc<[&'static str]>,
    cells: Arc<RwLock<HashMap<Vec<String>, Arc<CostCell>>>>,
}

impl CostCounter {
    pub fn new(labels: &[&'static str]) -> Result<Self, prometheus::Error> {
        Self::named(NAME, HELP, labels)
    }

    /// A counter of exact spend under another name (batch and training spend).
    pub fn named(
        name: &'static str,
        help: &'static str,
        labels: &[&'static str],
    ) -> Result<Self, prometheus::Error> {
        let names = labels.iter().map(|l| (*l).to_owned()).collect();
        Ok(Self {
            desc: Arc::new(Desc::new(
                name.to_owned(),
                help.to_owned(),
                names,
                HashMap::new(),
            )?),
            labels: labels.into(),
            cells: Arc::default(),
        })
    }

    /// The cell for `values` (one per label, in order), made on first use.
    pub fn cell(&self, values: &[&str]) -> Arc<CostCell> {
        let key: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        if let Some(cell) = self
            .cells
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return cell.clone();
        }
        self.cells
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_default()
            .clone()
    }
}

impl Collector for CostCounter {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let cells = self.cells.read().unwrap_or_else(PoisonError::into_inner);
        let mut sorted: Vec<_> = cells.iter().collect();
        // Stable output: scrapes and tests read the same order every time.
        sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let metrics: Vec<Metric> = sorted
            .into_iter()
            .map(|(values, cell)| {
                let mut pairs: Vec<LabelPair> = self
                    .labels
                    .iter()
                    .zip(values)
                    .map(|(name, value)| {
                        let mut pair = LabelPair::default();
                        pair.set_name((*name).to_owned());
                        pair.set_value(value.clone());
                        pair
                    })
                    .collect();
                // By name, as the library's own vectors write them.
                pairs.sort_unstable_by(|a, b| a.name().cmp(b.name()));
                let mut counter = Counter::default();
                counter.set_value(usd(cell.get()));
                let mut metric = Metric::from_label(pairs);
                metric.set_counter(counter);
                metric
            })
            .collect();
        drop(cells);
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(MetricType::COUNTER);
        family.set_metric(metrics);
        vec![family]
    }
}

/// The float closest to the exact decimal: parsing the decimal string rounds once,
/// where `pico as f64 / 1e12` would round twice.
fn usd(cost: Cost) -> f64 {
    cost.to_decimal_string().parse().unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_are_exact_until_displayed() {
        let counter = CostCounter::new(&["team"]).unwrap();
        let cell = counter.cell(&["a"]);
        // 0.1 USD ten times is 1 USD exactly here; ten float additions give 0.9999999999999999.
        for _ in 0..10 {
            cell.add(Cost::from_pico(100_000_000_000));
        }
        counter.cell(&["b"]).add(Cost::from_pico(4_275_000));
        let families = counter.collect();
        let values: Vec<f64> = families[0]
            .get_metric()
            .iter()
            .map(|m| m.get_counter().get_value())
            .collect();
        assert_eq!(values, [1.0, 0.000004275]);
        assert_eq!(values[1].to_string(), "0.000004275");
    }
}
