//! The per-model counting rules and the three tallies one walk feeds: tokens, bound, bytes.

use tiktoken_rs::CoreBPE;

use super::image_cost::{ImageCost, base_model, image_cost};
use super::walk::to_i64;
use super::{Encoding, encoding_for_model};
use crate::metering::image::data_url_size;

/// The per-model constants of the cookbook's counting recipe.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rules {
    pub(super) per_message: i64,
    pub(super) per_name: i64,
    pub(super) func_init: i64,
    pub(super) prop_init: i64,
    pub(super) prop_key: i64,
    pub(super) enum_init: i64,
    pub(super) enum_item: i64,
    pub(super) func_end: i64,
    pub(super) image: ImageCost,
}

impl Rules {
    pub(super) fn for_model(model: &str) -> Self {
        // The cookbook's only exception; tiktoken-rs keeps it too.
        let (per_message, per_name) = if model == "gpt-3.5-turbo-0301" {
            (4, -1)
        } else {
            (3, 1)
        };
        // The cookbook measured 10 on gpt-3.5/gpt-4 and 7 on gpt-4o; the encoding is the
        // best available proxy for which generation a model belongs to.
        let func_init = match encoding_for_model(model) {
            Encoding::Cl100kBase => 10,
            Encoding::O200kBase => 7,
        };
        Self {
            per_message,
            per_name,
            func_init,
            prop_init: 3,
            prop_key: 3,
            enum_init: -3,
            enum_item: 3,
            func_end: 12,
            image: image_cost(base_model(model)),
        }
    }

    /// An image part; the size is read from a data URL's header, other URLs use the
    /// default size.
    pub(super) fn image(&self, url: Option<&str>, detail: Option<&str>) -> i64 {
        let size = url.and_then(data_url_size);
        to_i64(self.image.tokens(detail, size))
    }
}

// === Tallies ===

/// What a walk over a request body reports: text to tokenize and fixed token overheads.
pub(super) trait Tally {
    fn text(&mut self, text: &str);
    fn tokens(&mut self, n: i64);
    /// An image given by URL; not text, so a byte tally skips it without decoding.
    fn image(&mut self, rules: &Rules, url: Option<&str>, detail: Option<&str>);
}

pub(super) struct TokenTally {
    pub(super) bpe: &'static CoreBPE,
    pub(super) total: i64,
}

impl Tally for TokenTally {
    fn text(&mut self, text: &str) {
        let n = to_i64(self.bpe.count_ordinary(text));
        self.total = self.total.saturating_add(n);
    }

    fn tokens(&mut self, n: i64) {
        self.total = self.total.saturating_add(n);
    }

    fn image(&mut self, rules: &Rules, url: Option<&str>, detail: Option<&str>) {
        self.tokens(rules.image(url, detail));
    }
}

/// Role names, one token each in both encodings (a test checks): a bound that counted
/// their bytes would charge a short chat message twice its size.
pub(super) const ONE_TOKEN_ROLES: [&str; 6] = [
    "system",
    "user",
    "assistant",
    "developer",
    "tool",
    "function",
];

pub(super) struct BoundTally {
    pub(super) total: i64,
}

impl Tally for BoundTally {
    fn text(&mut self, text: &str) {
        let n = if ONE_TOKEN_ROLES.contains(&text) {
            1
        } else {
            to_i64(text.len())
        };
        self.total = self.total.saturating_add(n);
    }

    fn tokens(&mut self, n: i64) {
        self.total = self.total.saturating_add(n);
    }

    fn image(&mut self, rules: &Rules, url: Option<&str>, detail: Option<&str>) {
        self.tokens(rules.image(url, detail));
    }
}

pub(super) struct LenTally {
    pub(super) bytes: usize,
}

impl Tally for LenTally {
    fn text(&mut self, text: &str) {
        self.bytes = self.bytes.saturating_add(text.len());
    }

    fn tokens(&mut self, _n: i64) {}

    fn image(&mut self, _rules: &Rules, _url: Option<&str>, _detail: Option<&str>) {}
}
