//! Budget-aware downgrades: past a threshold of a budget, requests for a model in a
//! configured map are served by the cheaper model it maps to. Which rule applies is
//! decided here from the config; whether the budget is past its threshold is decided
//! by the budget check itself, in the same locked read that reserves the request's
//! cost (`budgets::Downgrade`), so the reservation is always for the model that serves.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::plan::{Plan, TargetRef};
use crate::config::{DowngradeConfig, DowngradeScope, UpstreamConfig, upstream_for};

#[derive(Debug)]
struct Rule {
    scope: DowngradeScope,
    /// Empty: every team.
    teams: HashSet<String>,
    percent: u8,
    /// From → (upstream, to).
    models: HashMap<String, (usize, Arc<str>)>,
}

/// A downgrade that may apply to one request.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The request's plan with the cheaper models.
    pub plan: Plan,
    pub percent: u8,
    pub scope: DowngradeScope,
}

#[derive(Debug, Default)]
pub struct Downgrades(Vec<Rule>);

impl Downgrades {
    pub fn new(configs: &[DowngradeConfig], upstreams: &[UpstreamConfig]) -> Self {
        let rules = configs
            .iter()
            .map(|config| Rule {
                scope: config.budget,
                teams: config.teams.iter().cloned().collect(),
                percent: config.threshold_percent,
                models: config
                    .models
                    .iter()
                    .filter_map(|(from, to)| {
                        let upstream = upstream_for(upstreams, to)?;
                        Some((from.clone(), (upstream, Arc::from(to.as_str()))))
                    })
                    .collect(),
            })
            .collect();
        Self(rules)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first rule for `team` that maps one of `plan`'s models (to a model `allowed`
    /// accepts), with the plan it would serve.
    pub fn candidate(
        &self,
        team: &str,
        plan: &Plan,
        requested: Option<&str>,
        allowed: impl Fn(&str) -> bool,
    ) -> Option<Candidate> {
        self.0
            .iter()
            .filter(|rule| rule.teams.is_empty() || rule.teams.contains(team))
            .find_map(|rule| {
                let swap = |target: &TargetRef<'_>| {
                    let (upstream, to) = rule.models.get(target.model?)?;
                    allowed(to).then(|| (*upstream, to.clone()))
                };
                plan.swapped(requested, swap).map(|plan| Candidate {
                    plan,
                    percent: rule.percent,
                    scope: rule.scope,
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn downgrades() -> Downgrades {
        let upstreams = [UpstreamConfig::default()];
        Downgrades::new(
            &[
                DowngradeConfig {
                    teams: vec!["research".to_owned()],
                    threshold_percent: 50,
                    models: [("gpt-4.1".to_owned(), "gpt-4.1-mini".to_owned())].into(),
                    ..DowngradeConfig::default()
                },
                DowngradeConfig {
                    models: [("gpt-4o".to_owned(), "gpt-4o-mini".to_owned())].into(),
                    ..DowngradeConfig::default()
                },
            ],
            &upstreams,
        )
    }

    #[test]
    fn the_first_rule_for_the_team_that_maps_a_model_applies() {
        let downgrades = downgrades();
        let plan = Plan::direct(0);
        let found = downgrades
            .candidate("web", &plan, Some("gpt-4o"), |_| true)
            .unwrap();
        assert_eq!(found.percent, 80);
        let target = found.plan.target(0, None).unwrap();
        assert_eq!(
            (target.model, target.downgraded_from),
            (Some("gpt-4o-mini"), Some("gpt-4o"))
        );
        assert!(
            downgrades
                .candidate("web", &plan, Some("gpt-4.1"), |_| true)
                .is_none()
        );
        let research = downgrades
            .candidate("research", &plan, Some("gpt-4.1"), |_| true)
            .unwrap();
        assert_eq!(research.percent, 50);
        // Not to a model the key may not use.
        assert!(
            downgrades
                .candidate("web", &plan, Some("gpt-4o"), |_| false)
                .is_none()
        );
    }
}
