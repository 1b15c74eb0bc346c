//! The Prometheus registry, remembering what it was given: a scrape shows only the
//! families that have a series yet, and the docs check needs every one.

use std::sync::{Mutex, PoisonError};

use prometheus::Registry;
use prometheus::core::Collector;
use prometheus::proto::MetricFamily;

/// One registered metric family: its name and the names of its variable labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Family {
    pub name: String,
    pub labels: Vec<String>,
}

#[derive(Default)]
pub(super) struct Exporter {
    registry: Registry,
    families: Mutex<Vec<Family>>,
}

impl Exporter {
    pub(super) fn register(&self, collector: Box<dyn Collector>) -> Result<(), prometheus::Error> {
        let described: Vec<Family> = collector
            .desc()
            .iter()
            .map(|desc| Family {
                name: desc.fq_name.clone(),
                labels: desc.variable_labels.clone(),
            })
            .collect();
        self.registry.register(collector)?;
        self.families
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(described);
        Ok(())
    }

    pub(super) fn gather(&self) -> Vec<MetricFamily> {
        self.registry.gather()
    }

    pub(super) fn families(&self) -> Vec<Family> {
        let mut families = self
            .families
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        families.sort();
        families
    }
}
