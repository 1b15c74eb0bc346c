//! Where a request may go: the alias table, and a request's plan (its ordered
//! targets). A request for a model no alias names has a direct plan: one target, the
//! upstream its `models` patterns pick, and the model as the client sent it, which
//! costs no allocation at all.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::HeaderValue;
use prometheus::IntCounter;

use crate::config::ResolvedRoute;

/// One place to send a request: an upstream (index into `[[upstreams]]`) and the model
/// to ask it for.
#[derive(Debug, Clone)]
pub struct Target {
    pub upstream: usize,
    pub model: Arc<str>,
    /// The model this one replaced under a budget downgrade.
    pub downgraded_from: Option<Arc<str>>,
    /// Made once for a configured target, so a request takes no metric lookup.
    pub prepared: Option<Arc<Prepared>>,
}

/// What every request to a configured target uses: its routed-model header value and
/// its attempt counters.
#[derive(Debug)]
pub struct Prepared {
    pub header: Option<HeaderValue>,
    /// By result: answered, fell back, failed.
    pub answered: IntCounter,
    pub fell_back: IntCounter,
    pub failed: IntCounter,
}

/// A target as the proxy uses it; `model` is `None` only for a direct request without
/// a model.
#[derive(Debug, Clone, Copy)]
pub struct TargetRef<'a> {
    pub upstream: usize,
    pub model: Option<&'a str>,
    pub downgraded_from: Option<&'a str>,
    pub prepared: Option<&'a Prepared>,
}

impl TargetRef<'_> {
    /// A target made at run time (a shadow's candidate).
    pub fn new(upstream: usize, model: &str) -> TargetRef<'_> {
        TargetRef {
            upstream,
            model: Some(model),
            downgraded_from: None,
            prepared: None,
        }
    }
}

#[derive(Debug)]
struct Route {
    alias: Arc<str>,
    targets: Arc<[Target]>,
    max_attempts: u32,
}

/// The aliases, by name.
#[derive(Debug, Default)]
pub struct Table(HashMap<Box<str>, Route>);

impl Table {
    /// `prepare` makes each target's header and counters once.
    pub fn new(
        routes: Vec<ResolvedRoute>,
        prepare: impl Fn(usize, &str) -> Option<Arc<Prepared>>,
    ) -> Self {
        let routes = routes
            .into_iter()
            .map(|route| {
                let alias: Arc<str> = Arc::from(route.alias.as_str());
                let targets = route
                    .targets
                    .into_iter()
                    .map(|(upstream, model)| Target {
                        upstream,
                        prepared: prepare(upstream, &model),
                        model: Arc::from(model),
                        downgraded_from: None,
                    })
                    .collect();
                let route = Route {
                    alias: alias.clone(),
                    targets,
                    max_attempts: route.max_attempts,
                };
                (Box::from(&*alias), route)
            })
            .collect();
        Self(routes)
    }

    /// The plan for `model`: its alias's targets, or `direct` (the upstream the
    /// patterns pick) when no alias names it.
    pub fn plan(
        &self,
        model: Option<&str>,
        direct: impl FnOnce() -> Option<usize>,
    ) -> Option<Plan> {
        // Most deployments route nothing: no hashing of the model then.
        let route = if self.0.is_empty() {
            None
        } else {
            model.and_then(|model| self.0.get(model))
        };
        if let Some(route) = route {
            return Some(Plan {
                alias: Some(route.alias.clone()),
                targets: Targets::Listed(route.targets.clone()),
                max_attempts: route.max_attempts,
            });
        }
        direct().map(|upstream| Plan {
            alias: None,
            targets: Targets::Direct(upstream),
            max_attempts: 1,
        })
    }
}

#[derive(Debug, Clone)]
enum Targets {
    Direct(usize),
    Listed(Arc<[Target]>),
}

/// A request's targets in the order they are tried, and how many may be tried.
#[derive(Debug, Clone)]
pub struct Plan {
    alias: Option<Arc<str>>,
    targets: Targets,
    max_attempts: u32,
}

impl Plan {
    /// A plan of one target, for tests and benches.
    pub fn direct(upstream: usize) -> Self {
        Self {
            alias: None,
            targets: Targets::Direct(upstream),
            max_attempts: 1,
        }
    }

    /// The alias the client sent, when one chose the targets.
    pub fn alias(&self) -> Option<&str> {
        self.alias.as_deref()
    }

    /// Whether the targets came from routing (an alias or a downgrade) rather than
    /// straight from the model the client sent.
    pub fn routed(&self) -> bool {
        matches!(self.targets, Targets::Listed(_))
    }

    pub fn len(&self) -> usize {
        match &self.targets {
            Targets::Direct(_) => 1,
            Targets::Listed(targets) => targets.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Target `i`; `requested` is the model the client sent (a direct plan's model).
    pub fn target<'a>(&'a self, i: usize, requested: Option<&'a str>) -> Option<TargetRef<'a>> {
        match &self.targets {
            Targets::Direct(upstream) => (i == 0).then_some(TargetRef {
                upstream: *upstream,
                model: requested,
                downgraded_from: None,
                prepared: None,
            }),
            Targets::Listed(targets) => targets.get(i).map(|target| TargetRef {
                upstream: target.upstream,
                model: Some(&target.model),
                downgraded_from: target.downgraded_from.as_deref(),
                prepared: target.prepared.as_deref(),
            }),
        }
    }

    /// Every target, in order.
    pub fn targets<'a>(
        &'a self,
        requested: Option<&'a str>,
    ) -> impl Iterator<Item = TargetRef<'a>> + 'a {
        (0..self.len()).filter_map(move |i| self.target(i, requested))
    }

    /// The model of the first target: what limits, context windows and counting use.
    pub fn primary_model<'a>(&'a self, requested: Option<&'a str>) -> Option<&'a str> {
        self.target(0, requested).and_then(|target| target.model)
    }

    /// The plan with only the targets `keep` accepts, or `None` if none is left.
    pub fn retain(
        &self,
        requested: Option<&str>,
        keep: impl Fn(&TargetRef<'_>) -> bool,
    ) -> Option<Plan> {
        if self.targets(requested).all(|target| keep(&target)) {
            return Some(self.clone());
        }
        let kept: Vec<Target> = self
            .targets(requested)
            .filter(|target| keep(target))
            .map(|target| owned(&target))
            .collect();
        (!kept.is_empty()).then(|| self.with_targets(kept))
    }

    /// The plan with each target's model replaced where `swap` says, duplicates dropped;
    /// `None` when nothing changed.
    pub fn swapped(
        &self,
        requested: Option<&str>,
        swap: impl Fn(&TargetRef<'_>) -> Option<(usize, Arc<str>)>,
    ) -> Option<Plan> {
        let mut changed = false;
        let mut targets: Vec<Target> = Vec::with_capacity(self.len());
        for target in self.targets(requested) {
            let next = match swap(&target) {
                Some((upstream, model)) => {
                    changed = true;
                    Target {
                        upstream,
                        model,
                        downgraded_from: target.model.map(Arc::from),
                        prepared: None,
                    }
                }
                None => owned(&target),
            };
            if !targets
                .iter()
                .any(|t| t.upstream == next.upstream && t.model == next.model)
            {
                targets.push(next);
            }
        }
        changed.then(|| self.with_targets(targets))
    }

    fn with_targets(&self, targets: Vec<Target>) -> Plan {
        Plan {
            alias: self.alias.clone(),
            targets: Targets::Listed(Arc::from(targets)),
            max_attempts: self.max_attempts,
        }
    }
}

fn owned(target: &TargetRef<'_>) -> Target {
    Target {
        upstream: target.upstream,
        model: Arc::from(target.model.unwrap_or_default()),
        downgraded_from: target.downgraded_from.map(Arc::from),
        prepared: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        Table::new(
            vec![ResolvedRoute {
                alias: "smart".to_owned(),
                targets: vec![(0, "gpt-4.1".to_owned()), (1, "gpt-4o".to_owned())],
                max_attempts: 2,
            }],
            |_, _| None,
        )
    }

    #[test]
    fn an_alias_lists_its_targets_and_anything_else_goes_direct() {
        let table = table();
        let plan = table.plan(Some("smart"), || None).unwrap();
        assert_eq!(plan.alias(), Some("smart"));
        assert!(plan.routed());
        let models: Vec<_> = plan
            .targets(Some("smart"))
            .map(|t| (t.upstream, t.model))
            .collect();
        assert_eq!(models, [(0, Some("gpt-4.1")), (1, Some("gpt-4o"))]);
        assert_eq!(plan.max_attempts(), 2);
        let direct = table.plan(Some("gpt-4o-mini"), || Some(3)).unwrap();
        assert!(!direct.routed());
        assert_eq!(
            direct.primary_model(Some("gpt-4o-mini")),
            Some("gpt-4o-mini")
        );
        assert_eq!(direct.target(0, Some("gpt-4o-mini")).unwrap().upstream, 3);
        assert!(table.plan(Some("nope"), || None).is_none());
    }

    #[test]
    fn swapping_records_the_model_replaced_and_drops_duplicates() {
        let table = table();
        let plan = table.plan(Some("smart"), || None).unwrap();
        let swapped = plan
            .swapped(Some("smart"), |t| {
                (t.model == Some("gpt-4.1")).then(|| (1, Arc::from("gpt-4o")))
            })
            .unwrap();
        let targets: Vec<_> = swapped.targets(None).collect();
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].model, Some("gpt-4o"));
        assert_eq!(targets[0].downgraded_from, Some("gpt-4.1"));
        assert!(plan.swapped(Some("smart"), |_| None).is_none());
        let kept = plan.retain(None, |t| t.model == Some("gpt-4o")).unwrap();
        assert_eq!(kept.primary_model(None), Some("gpt-4o"));
        assert!(plan.retain(None, |_| false).is_none());
    }
}
