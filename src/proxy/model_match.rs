//! Which upstream a model name routes to: the first upstream in config order with a
//! matching pattern. Patterns are sorted by shape when built, so a match costs a hash
//! lookup per distinct prefix length rather than a glob match per pattern: with ten
//! upstreams of two hundred patterns each, a linear scan would cost tens of
//! microseconds per request.

use std::collections::HashMap;

/// The compiled patterns of every upstream.
#[derive(Debug, Default)]
pub struct ModelMatcher {
    /// Literal names, to the first upstream listing them.
    exact: HashMap<Box<str>, usize>,
    /// `prefix*` patterns by prefix (`*` is the empty prefix), to the first upstream.
    prefixes: HashMap<Box<str>, usize>,
    /// The distinct prefix lengths, ascending.
    lengths: Vec<usize>,
    /// Every other pattern, by its literal part before the first wildcard, each list
    /// in upstream order: only globs whose literal prefix the model starts with are
    /// tried.
    globs: HashMap<Box<str>, Vec<(usize, glob::Pattern)>>,
    /// The distinct glob prefix lengths, ascending.
    glob_lengths: Vec<usize>,
}

const META: [char; 4] = ['*', '?', '[', ']'];

impl ModelMatcher {
    /// `patterns` per upstream, in config order, already checked to compile.
    pub fn new<'a>(upstreams: impl IntoIterator<Item = (usize, &'a glob::Pattern)>) -> Self {
        let mut matcher = Self::default();
        for (index, pattern) in upstreams {
            let text = pattern.as_str();
            if !text.contains(META) {
                matcher.exact.entry(text.into()).or_insert(index);
            } else if let Some(prefix) = text.strip_suffix('*').filter(|p| !p.contains(META)) {
                matcher.prefixes.entry(prefix.into()).or_insert(index);
            } else {
                let literal = text.split(META).next().unwrap_or_default();
                matcher
                    .globs
                    .entry(literal.into())
                    .or_default()
                    .push((index, pattern.clone()));
            }
        }
        matcher.glob_lengths = matcher.globs.keys().map(|p| p.len()).collect();
        matcher.glob_lengths.sort_unstable();
        matcher.glob_lengths.dedup();
        matcher.lengths = matcher.prefixes.keys().map(|p| p.len()).collect();
        matcher.lengths.sort_unstable();
        matcher.lengths.dedup();
        matcher
    }

    /// The first upstream whose patterns match `model`.
    pub fn first(&self, model: &str) -> Option<usize> {
        let mut best = self.exact.get(model).copied();
        for &len in &self.lengths {
            if len > model.len() {
                break;
            }
            if !model.is_char_boundary(len) {
                continue;
            }
            if let Some(&index) = self.prefixes.get(&model[..len]) {
                best = Some(best.map_or(index, |b| b.min(index)));
            }
        }
        for &len in &self.glob_lengths {
            if len > model.len() {
                break;
            }
            if !model.is_char_boundary(len) {
                continue;
            }
            let Some(globs) = self.globs.get(&model[..len]) else {
                continue;
            };
            for (index, pattern) in globs {
                if best.is_some_and(|b| *index >= b) {
                    break;
                }
                if pattern.matches(model) {
                    best = Some(*index);
                    break;
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(upstreams: &[&[&str]]) -> (ModelMatcher, Vec<Vec<glob::Pattern>>) {
        let compiled: Vec<Vec<glob::Pattern>> = upstreams
            .iter()
            .map(|ps| ps.iter().map(|p| glob::Pattern::new(p).unwrap()).collect())
            .collect();
        let matcher = ModelMatcher::new(
            compiled
                .iter()
                .enumerate()
                .flat_map(|(i, ps)| ps.iter().map(move |p| (i, p))),
        );
        (matcher, compiled)
    }

    #[test]
    fn agrees_with_a_linear_scan_of_globs() {
        let (matcher, compiled) = matcher(&[
            &["claude-haiku-4-5", "gpt-4o?mini", "azure/*"],
            &["claude-*", "gemini-[12]*", "ü*"],
            &["llama-*", "*-instruct"],
            &["*"],
        ]);
        for model in [
            "claude-haiku-4-5",
            "claude-sonnet-4",
            "gpt-4o-mini",
            "gpt-4o",
            "azure/gpt-4o",
            "gemini-2.5-flash",
            "gemini-3",
            "llama-3",
            "qwen-instruct",
            "ü",
            "",
            "x",
        ] {
            let linear = compiled
                .iter()
                .position(|ps| ps.iter().any(|p| p.matches(model)));
            assert_eq!(matcher.first(model), linear, "{model}");
        }
        let (none, _) = self::matcher(&[&["qwen*"]]);
        assert_eq!(none.first("gpt-4o"), None);
    }
}
