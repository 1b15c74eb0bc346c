//! The ledger writer's state, read when scraped: the writer keeps plain atomics and
//! knows nothing of Prometheus.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

use crate::ledger::LedgerWriter;

const QUEUE_DEPTH: (&str, &str) = (
    "tollgate_ledger_queue_depth",
    "Ledger rows queued for the background writer, not yet committed or spilled.",
);
const SPILLED_ROWS: (&str, &str) = (
    "tollgate_ledger_spilled_rows",
    "Ledger rows in the spill file, waiting for the database to take them back.",
);
const SPILLING: (&str, &str) = (
    "tollgate_ledger_spilling",
    "1 while the database refuses rows and new ones go to the spill file.",
);
const WRITE_FAILURES: (&str, &str) = (
    "tollgate_ledger_write_failures_total",
    "Ledger writes that failed, by target: database (inserts and replays) or spill.",
);

pub struct LedgerCollector {
    writer: LedgerWriter,
    descs: Vec<Desc>,
}

impl LedgerCollector {
    pub fn new(writer: LedgerWriter) -> Result<Self, prometheus::Error> {
        let desc = |(name, help): (&str, &str), labels: &[&str]| {
            Desc::new(
                name.to_owned(),
                help.to_owned(),
                labels.iter().map(|l| (*l).to_owned()).collect(),
                HashMap::new(),
            )
        };
        Ok(Self {
            writer,
            descs: vec![
                desc(QUEUE_DEPTH, &[])?,
                desc(SPILLED_ROWS, &[])?,
                desc(SPILLING, &[])?,
                desc(WRITE_FAILURES, &["target"])?,
            ],
        })
    }
}

impl Collector for LedgerCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let writer = &self.writer;
        let failures = writer.write_failures();
        #[expect(clippy::cast_precision_loss, reason = "row counts stay far below 2^53")]
        let as_f64 = |n: u64| n as f64;
        let depth = u64::try_from(writer.queue_depth()).unwrap_or(u64::MAX);
        vec![
            gauge(QUEUE_DEPTH, as_f64(depth)),
            gauge(SPILLED_ROWS, as_f64(writer.spilled_rows())),
            gauge(SPILLING, if writer.is_spilling() { 1.0 } else { 0.0 }),
            counters(
                WRITE_FAILURES,
                "target",
                &[
                    (
                        "database",
                        as_f64(failures.database.load(Ordering::Relaxed)),
                    ),
                    ("spill", as_f64(failures.spill.load(Ordering::Relaxed))),
                ],
            ),
        ]
    }
}

fn family((name, help): (&str, &str), kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_owned());
    family.set_help(help.to_owned());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

fn gauge(meta: (&str, &str), value: f64) -> MetricFamily {
    let mut gauge = Gauge::default();
    gauge.set_value(value);
    family(meta, MetricType::GAUGE, vec![Metric::from_gauge(gauge)])
}

fn counters(meta: (&str, &str), label: &str, values: &[(&str, f64)]) -> MetricFamily {
    let metrics = values
        .iter()
        .map(|(value, count)| {
            let mut pair = LabelPair::default();
            pair.set_name(label.to_owned());
            pair.set_value((*value).to_owned());
            let mut counter = Counter::default();
            counter.set_value(*count);
            let mut metric = Metric::from_label(vec![pair]);
            metric.set_counter(counter);
            metric
        })
        .collect();
    family(meta, MetricType::COUNTER, metrics)
}
