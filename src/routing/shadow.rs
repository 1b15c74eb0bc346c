//! Shadow rules: which requests are mirrored to which candidate. The sample is drawn
//! from the request's row id (random bits of a UUIDv7), so the choice costs a hash and
//! needs no generator state; the proxy sends the copy off the request path.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{ShadowConfig, UpstreamConfig, shadow_upstream};
use crate::metering::Endpoint;

/// One candidate a request is mirrored to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// The rule's place in `[[shadow]]`: part of the shadow row's id.
    pub index: usize,
    pub model: Arc<str>,
    pub candidate: Arc<str>,
    pub upstream: usize,
}

#[derive(Debug)]
struct Rule {
    mirror: Mirror,
    /// Sampled when the row id's hash is below this (`sample` of the u64 range).
    below: u64,
    always: bool,
}

#[derive(Debug, Default)]
pub struct Shadows(HashMap<String, Vec<Rule>>);

impl Shadows {
    pub fn new(configs: &[ShadowConfig], upstreams: &[UpstreamConfig]) -> Self {
        let mut rules: HashMap<String, Vec<Rule>> = HashMap::new();
        for (index, config) in configs.iter().enumerate() {
            let Some(upstream) = shadow_upstream(config, upstreams) else {
                continue;
            };
            if config.sample <= 0.0 {
                continue;
            }
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss,
                reason = "a sampling threshold in 0..1 of the u64 range, not money"
            )]
            let below = (config.sample * u64::MAX as f64) as u64;
            rules.entry(config.model.clone()).or_default().push(Rule {
                mirror: Mirror {
                    index,
                    model: Arc::from(config.model.as_str()),
                    candidate: Arc::from(config.candidate.as_str()),
                    upstream,
                },
                below,
                always: config.sample >= 1.0,
            });
        }
        Self(rules)
    }

    /// No rule at all: no request is ever mirrored.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The candidates this request is mirrored to: a non-streamed request whose served
    /// model has a rule, when the row id falls in the sample.
    pub fn pick(
        &self,
        model: Option<&str>,
        endpoint: Endpoint,
        streamed: bool,
        row_id: &str,
    ) -> Vec<Mirror> {
        if self.0.is_empty() || streamed || endpoint == Endpoint::Embeddings {
            return Vec::new();
        }
        let Some(rules) = model.and_then(|model| self.0.get(model)) else {
            return Vec::new();
        };
        rules
            .iter()
            .filter(|rule| rule.always || hash(row_id, rule.mirror.index) < rule.below)
            .map(|rule| rule.mirror.clone())
            .collect()
    }
}

/// FNV-1a over the id and the rule's index, then a final mix so nearby ids spread.
fn hash(id: &str, index: usize) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.bytes().chain(index.to_le_bytes()) {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shadows(sample: f64) -> Shadows {
        Shadows::new(
            &[ShadowConfig {
                model: "gpt-4o-mini".to_owned(),
                candidate: "gpt-4.1-nano".to_owned(),
                sample,
                upstream: None,
            }],
            &[UpstreamConfig::default()],
        )
    }

    #[test]
    fn the_sample_is_close_to_its_share_and_streams_are_never_mirrored() {
        let tenth = shadows(0.1);
        let picked = (0..20_000)
            .filter(|_| {
                let id = uuid::Uuid::now_v7().to_string();
                !tenth
                    .pick(Some("gpt-4o-mini"), Endpoint::ChatCompletions, false, &id)
                    .is_empty()
            })
            .count();
        assert!((1_600..2_400).contains(&picked), "{picked} of 20000");
        let all = shadows(1.0);
        let mirrors = all.pick(Some("gpt-4o-mini"), Endpoint::ChatCompletions, false, "x");
        assert_eq!(&*mirrors[0].candidate, "gpt-4.1-nano");
        assert!(
            all.pick(Some("gpt-4o-mini"), Endpoint::ChatCompletions, true, "x")
                .is_empty()
        );
        assert!(
            all.pick(Some("gpt-4o"), Endpoint::ChatCompletions, false, "x")
                .is_empty()
        );
        assert!(shadows(0.0).0.is_empty());
    }
}
