//! `[[routes]]`: aliases, a name clients may send served by ordered targets, and their
//! expansion (aliases within aliases, in order, loops refused) into upstream and model
//! pairs.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::{Problems, UpstreamConfig};

/// `[[routes]]`: a model name clients may send, served by an ordered list of targets.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouteConfig {
    /// The name clients send as `model`.
    pub alias: String,
    /// Tried in order: the first is the usual answer, the rest are fallbacks.
    pub targets: Vec<TargetConfig>,
    /// Upstream calls per request across the targets; `routing.max_attempts` if unset.
    pub max_attempts: Option<u32>,
}

/// One target: a model, and optionally the upstream that must serve it. Written as a
/// plain string (`"gpt-4o"`) or a table (`{ model = "gpt-4o", upstream = "azure" }`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TargetConfig {
    pub model: String,
    /// An `[[upstreams]]` name. Without it the model goes where the upstreams' `models`
    /// patterns send it, or, if it names another alias, to that alias's targets.
    pub upstream: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetTable {
    model: String,
    #[serde(default)]
    upstream: Option<String>,
}

impl<'de> Deserialize<'de> for TargetConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Either;
        impl<'de> Visitor<'de> for Either {
            type Value = TargetConfig;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a model name or a table with `model` and `upstream`")
            }

            fn visit_str<E: de::Error>(self, model: &str) -> Result<TargetConfig, E> {
                Ok(TargetConfig {
                    model: model.to_owned(),
                    upstream: None,
                })
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<TargetConfig, A::Error> {
                let table = TargetTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(TargetConfig {
                    model: table.model,
                    upstream: table.upstream,
                })
            }
        }
        deserializer.deserialize_any(Either)
    }
}

/// A route's targets with every alias expanded, in order, duplicates dropped; each
/// names the upstream (by index into `[[upstreams]]`) that serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedRoute {
    pub alias: String,
    pub targets: Vec<(usize, String)>,
    pub max_attempts: u32,
}

/// The upstream index that serves `model` by the upstreams' patterns.
pub fn upstream_for(upstreams: &[UpstreamConfig], model: &str) -> Option<usize> {
    upstreams.iter().position(|upstream| {
        upstream
            .models
            .iter()
            .any(|pattern| glob::Pattern::new(pattern).is_ok_and(|pattern| pattern.matches(model)))
    })
}

pub(super) fn upstream_named(upstreams: &[UpstreamConfig], name: &str) -> Option<usize> {
    upstreams.iter().position(|upstream| upstream.name == name)
}

/// Expands every route, or reports each problem with its dotted path.
pub fn resolve_routes(
    routes: &[RouteConfig],
    default_attempts: u32,
    upstreams: &[UpstreamConfig],
) -> Result<Vec<ResolvedRoute>, Problems> {
    let mut problems = Problems::default();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, route) in routes.iter().enumerate() {
        if route.alias.trim().is_empty() {
            problems.push(format!("routes[{i}].alias"), "must not be empty");
        } else if index.insert(route.alias.as_str(), i).is_some() {
            problems.push(
                format!("routes[{i}].alias"),
                format!("duplicate alias `{}`", route.alias),
            );
        }
        if route.targets.is_empty() {
            problems.push(format!("routes[{i}].targets"), "needs at least one target");
        }
        if route.max_attempts == Some(0) {
            problems.push(format!("routes[{i}].max_attempts"), "must be at least 1");
        }
        for (j, target) in route.targets.iter().enumerate() {
            let at = format!("routes[{i}].targets[{j}]");
            if target.model.trim().is_empty() {
                problems.push(format!("{at}.model"), "must not be empty");
            }
            if let Some(name) = &target.upstream {
                if upstream_named(upstreams, name).is_none() {
                    problems.push(
                        format!("{at}.upstream"),
                        format!("unknown upstream `{name}`"),
                    );
                }
            }
        }
    }
    let mut resolved = Vec::with_capacity(routes.len());
    for (i, route) in routes.iter().enumerate() {
        let mut targets = Vec::new();
        let mut path = vec![route.alias.as_str()];
        expand(
            routes,
            &index,
            i,
            &mut path,
            &mut targets,
            &mut problems,
            upstreams,
        );
        let mut seen = HashSet::new();
        targets.retain(|target| seen.insert(target.clone()));
        resolved.push(ResolvedRoute {
            alias: route.alias.clone(),
            targets,
            max_attempts: route.max_attempts.unwrap_or(default_attempts).max(1),
        });
    }
    if problems.0.is_empty() {
        Ok(resolved)
    } else {
        Err(problems)
    }
}

/// Appends route `i`'s targets to `out`, expanding aliases depth first. `path` holds
/// the aliases being expanded, so a loop back into one of them is caught where it
/// closes.
fn expand<'a>(
    routes: &'a [RouteConfig],
    index: &HashMap<&'a str, usize>,
    i: usize,
    path: &mut Vec<&'a str>,
    out: &mut Vec<(usize, String)>,
    problems: &mut Problems,
    upstreams: &[UpstreamConfig],
) {
    for (j, target) in routes[i].targets.iter().enumerate() {
        let at = format!("routes[{i}].targets[{j}]");
        if let Some(name) = &target.upstream {
            if let Some(upstream) = upstream_named(upstreams, name) {
                out.push((upstream, target.model.clone()));
            }
            continue;
        }
        if let Some(&next) = index.get(target.model.as_str()) {
            if path.contains(&target.model.as_str()) {
                let cycle = path.join(" → ");
                problems.push(
                    format!("{at}.model"),
                    format!(
                        "alias loop: {cycle} → {}; pin the target to an upstream \
                         (`{{ model = \"{}\", upstream = \"…\" }}`) to send it as is",
                        target.model, target.model
                    ),
                );
                continue;
            }
            path.push(&routes[next].alias);
            expand(routes, index, next, path, out, problems, upstreams);
            path.pop();
            continue;
        }
        match upstream_for(upstreams, &target.model) {
            Some(upstream) => out.push((upstream, target.model.clone())),
            None if !target.model.trim().is_empty() => problems.push(
                format!("{at}.model"),
                format!(
                    "no upstream serves `{}`: no [[upstreams]] models pattern matches it \
                     and it is not an alias",
                    target.model
                ),
            ),
            None => {}
        }
    }
}
