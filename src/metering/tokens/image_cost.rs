//! What one image input costs in prompt tokens: tile and patch rules by model family.

/// Estimated prompt tokens of one image input of `size` (width, height) pixels.
///
/// This is an admission/fallback estimate only; billing comes from upstream usage. The
/// family's rule from the model name (`ft:` names by their base; unknown models as gpt-4o):
///
/// - Tile models: `low` costs the base only. Otherwise the image is fitted inside
///   2048×2048, then its short side is scaled down to 768 if longer (never up), and each
///   512-pixel tile costs the tile figure on top of the base.
/// - Patch models: one 32-pixel patch each, scaled down to fit 1536 patches, times the
///   model's multiplier, rounded up. `detail` is ignored: it has not been seen to change
///   patch-model counts.
///
/// `auto` and a missing detail are priced as high, since the upstream may choose high.
/// An unknown size (an https URL, a file id, undecodable data) is assumed to be
/// 1024×1024: 765 tokens on gpt-4o at high detail, 1024 patches on patch models.
pub fn image_tokens(model: &str, detail: Option<&str>, size: Option<(u32, u32)>) -> u64 {
    image_cost(base_model(model)).tokens(detail, size)
}

/// The size assumed for images whose size is unknown.
pub(super) const UNKNOWN_IMAGE_SIZE: (u32, u32) = (1024, 1024);

#[derive(Debug, Clone, Copy)]
pub(super) enum ImageCost {
    Tiles {
        base: u64,
        tile: u64,
    },
    /// Tokens per patch, in hundredths, to keep the math in integers.
    Patches {
        multiplier_pct: u64,
    },
}

impl ImageCost {
    pub(super) fn tokens(self, detail: Option<&str>, size: Option<(u32, u32)>) -> u64 {
        let (width, height) = size.unwrap_or(UNKNOWN_IMAGE_SIZE);
        match self {
            Self::Tiles { base, .. } if detail == Some("low") => base,
            Self::Tiles { base, tile } => {
                base.saturating_add(tile.saturating_mul(tile_count(width, height)))
            }
            // Rounding is undocumented; round up so an estimate never under-reserves.
            Self::Patches { multiplier_pct } => {
                (patch_count(width, height) * multiplier_pct).div_ceil(100)
            }
        }
    }
}

/// 512-pixel tiles after fitting inside 2048×2048 and then scaling the short side down to
/// 768. The scaled sides are exact fractions and partial tiles round up, so a side that
/// a resizer would round down to a tile boundary may count one tile more.
pub(super) fn tile_count(width: u32, height: u32) -> u64 {
    const FIT: u64 = 2048;
    const SHORT: u64 = 768;
    const TILE: u64 = 512;
    let (w, h) = (u64::from(width), u64::from(height));
    let (long, short) = (w.max(h), w.min(h));
    // Each side becomes side·num/den. The fit scales by f = min(1, 2048/long); the second
    // step by 768/(short·f), so when it applies f cancels and each side is side·768/short.
    let (num, den) = if short.saturating_mul(FIT.min(long)) > SHORT.saturating_mul(long) {
        (SHORT, short)
    } else if long > FIT {
        (FIT, long)
    } else {
        (1, 1)
    };
    let tiles = |side: u64| (side * num).div_ceil(den * TILE);
    tiles(w) * tiles(h)
}

/// 32-pixel patches, scaled down to at most 1536 as the reference describes.
pub(super) fn patch_count(width: u32, height: u32) -> u64 {
    const PATCH: f64 = 32.0;
    const MAX_PATCHES: u64 = 1536;
    let (w, h) = (u64::from(width), u64::from(height));
    let patches = w.div_ceil(32) * h.div_ceil(32);
    if patches <= MAX_PATCHES {
        return patches;
    }
    let (w, h) = (f64::from(width), f64::from(height));
    let mut scale = (PATCH * PATCH * 1536.0 / (w * h)).sqrt();
    // Shrink further so the tighter side holds whole patches. A side under one patch
    // keeps its length (it will count one patch), so scale never reaches zero.
    let whole = |side: f64| {
        let patches = side * scale / PATCH;
        patches.floor().max(1.0) / patches
    };
    scale *= whole(w).min(whole(h));
    // The tighter side lands on a whole number up to float error; don't let that round
    // up to one more patch.
    let sides = |side: f64| (side * scale / PATCH - 1e-9).ceil();
    let patches = sides(w) * sides(h);
    // Saturating float-to-int cast; the product is at most ~1536 here anyway.
    (patches as u64).clamp(1, MAX_PATCHES)
}

pub(super) const fn tiles(base: u64, tile: u64) -> ImageCost {
    ImageCost::Tiles { base, tile }
}

pub(super) const fn patches(multiplier_pct: u64) -> ImageCost {
    ImageCost::Patches { multiplier_pct }
}

/// Prefixes checked in order, so the mini/nano variants come before their families.
/// gpt-4o, gpt-4.1, gpt-4.5, chatgpt-4o and unknown models use the default.
pub(super) const IMAGE_COSTS: &[(&str, ImageCost)] = &[
    ("gpt-4o-mini", tiles(2833, 5667)),
    ("gpt-4.1-mini", patches(162)),
    ("gpt-4.1-nano", patches(246)),
    ("gpt-5-mini", patches(162)),
    ("gpt-5-nano", patches(246)),
    ("o4-mini", patches(172)),
    ("o1", tiles(75, 150)),
    ("o3", tiles(75, 150)),
    ("computer-use-preview", tiles(65, 129)),
];
pub(super) const DEFAULT_IMAGE_COST: ImageCost = tiles(85, 170);

pub(super) fn image_cost(model: &str) -> ImageCost {
    IMAGE_COSTS
        .iter()
        .find(|(prefix, _)| model.starts_with(prefix))
        .map_or(DEFAULT_IMAGE_COST, |&(_, cost)| cost)
}

/// `ft:{base}:{org}:{suffix}:{id}` → `{base}`; other names unchanged.
pub(super) fn base_model(model: &str) -> &str {
    match model.strip_prefix("ft:") {
        Some(rest) => rest.split(':').next().unwrap_or(rest),
        None => model,
    }
}
