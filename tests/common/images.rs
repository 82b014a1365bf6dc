//! Image training sets for the patch-score tests: deterministic values, any shape.

use memodiff::testing::model::dataset::{Dataset, ImageShape};
use memodiff::testing::model::patch_score::PatchScore;

/// A deterministic value in [-1, 1) from `i` and `salt` (splitmix64).
pub fn noise(i: u64, salt: u64) -> f64 {
    let mut z = i.wrapping_add(salt.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

/// `n` images of `height × width × channels` with values in [-1, 1).
pub fn images(n: usize, height: usize, width: usize, channels: usize, salt: u64) -> Dataset {
    let dim = height * width * channels;
    let points = (0..n * dim).map(|i| noise(i as u64, salt)).collect();
    let mut dataset = Dataset::new(format!("images {salt}"), dim, points).unwrap();
    dataset.image_shape = Some(ImageShape {
        height,
        width,
        channels,
    });
    dataset
}

/// The patch score `text` (`local:3`, `els:5`, ...).
pub fn patch(text: &str) -> PatchScore {
    PatchScore::parse(text).unwrap().unwrap()
}
