//! `sample --image-grid K` for image training sets: the first K generated samples drawn
//! back as images, each next to its nearest training image, so that a copy is visible at
//! a glance.

use crate::error::{Error, Result};
use crate::model::dataset::{Dataset, ImageShape};
use image::{Rgb, RgbImage};
use std::path::Path;

/// Pixels between two cells of the grid (and around it).
const GAP: u32 = 2;
/// Background colour of the gaps: mid grey, distinct from black and white images.
const BACKGROUND: Rgb<u8> = Rgb([128, 128, 128]);
/// Largest K accepted (a 64 × 64 grid of pairs).
pub const MAX_IMAGES: usize = 4096;

/// Check, before sampling, that `--image-grid count` can be drawn for `dataset`.
pub fn validate(dataset: &Dataset, count: usize, write_arrays: bool) -> Result<ImageShape> {
    let Some(shape) = dataset.image_shape else {
        return Err(Error::invalid(
            "image_grid",
            format!(
                "the training set {} is not an image set; it needs a .npy of shape (N, H, W) \
                 or (N, H, W, C)",
                dataset.name
            ),
        ));
    };
    if !matches!(shape.channels, 1 | 3 | 4) {
        return Err(Error::invalid(
            "image_grid",
            format!(
                "images with {} channels cannot be drawn; 1 (grey), 3 (RGB) or 4 (RGBA) can",
                shape.channels
            ),
        ));
    }
    if count == 0 || count > MAX_IMAGES {
        return Err(Error::invalid(
            "image_grid",
            format!("{count} images: use 1 ..= {MAX_IMAGES}"),
        ));
    }
    if !write_arrays {
        return Err(Error::invalid(
            "image_grid",
            "is drawn from samples.npy, which --no-samples does not write",
        ));
    }
    Ok(shape)
}

/// Index of the training point nearest to `sample` (exact, in f64).
fn nearest(training: &Dataset, sample: &[f32]) -> usize {
    (0..training.len())
        .map(|i| {
            let d2: f64 = training
                .point(i)
                .iter()
                .zip(sample)
                .map(|(&t, &s)| (f64::from(s) - t).powi(2))
                .sum();
            (i, d2)
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)
        .expect("a training set has points")
}

/// The grid image: `samples` (row-major, rows of `training.dim`) as cells of pairs
/// `[sample | nearest training image]`, ceil(sqrt(K)) pairs per row. Values map to bytes
/// linearly over the training set's value range (clamped), the same for every cell.
pub fn draw(training: &Dataset, shape: ImageShape, samples: &[f32]) -> RgbImage {
    let dim = training.dim;
    let count = samples.len() / dim;
    let (lo, hi) = training
        .points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let span = if hi > lo { hi - lo } else { 1.0 };
    let to_byte = |v: f64| ((v - lo) / span * 255.0).round().clamp(0.0, 255.0) as u8;

    let (w, h) = (shape.width as u32, shape.height as u32);
    let per_row = (count as f64).sqrt().ceil().max(1.0) as u32;
    let rows = (count as u32).div_ceil(per_row);
    let cell_w = 2 * w + GAP;
    let mut img = RgbImage::from_pixel(
        GAP + per_row * (cell_w + 2 * GAP),
        GAP + rows * (h + GAP),
        BACKGROUND,
    );
    let mut paint = |values: &mut dyn Iterator<Item = f64>, x0: u32, y0: u32| {
        let values: Vec<f64> = values.collect();
        for y in 0..h {
            for x in 0..w {
                let at = ((y * w + x) as usize) * shape.channels;
                let px = match shape.channels {
                    1 => [to_byte(values[at]); 3],
                    _ => [0, 1, 2].map(|c| to_byte(values[at + c])),
                };
                img.put_pixel(x0 + x, y0 + y, Rgb(px));
            }
        }
    };
    for (k, sample) in samples.chunks_exact(dim).enumerate() {
        let (col, row) = (k as u32 % per_row, k as u32 / per_row);
        let x0 = GAP + col * (cell_w + 2 * GAP);
        let y0 = GAP + row * (h + GAP);
        paint(&mut sample.iter().map(|&v| f64::from(v)), x0, y0);
        let i = nearest(training, sample);
        paint(&mut training.point(i).iter().copied(), x0 + w + GAP, y0);
    }
    img
}

/// Draw the grid of the first `count` rows of `samples.npy` (shape (P, D)) to `path`.
pub fn write(
    samples_npy: &Path,
    training: &Dataset,
    shape: ImageShape,
    count: usize,
    path: &Path,
) -> Result<()> {
    let rows = crate::io::read_leading_rows_f32(samples_npy, training.dim, count)?;
    let img = draw(training, shape, &rows);
    crate::io::write_png(path, &img)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_set() -> Dataset {
        // Two 2 × 3 grey images: all zeros and all ones.
        let mut d = Dataset::new("images.npy", 6, [[0.0; 6], [1.0; 6]].concat()).unwrap();
        d.image_shape = Some(ImageShape {
            height: 2,
            width: 3,
            channels: 1,
        });
        d
    }

    #[test]
    fn each_sample_sits_next_to_its_nearest_training_image() {
        let training = image_set();
        let shape = training.image_shape.unwrap();
        // Sample 0 is nearly white (nearest: image 1), sample 1 nearly black (image 0).
        let samples = [[0.9f32; 6], [0.1f32; 6]].concat();
        let img = draw(&training, shape, &samples);
        // Two pairs, 2 per row: width 2 + 2 (2*3 + 2 + 4) = 26, height 2 + (2 + 2) = 6.
        assert_eq!(img.dimensions(), (26, 6));
        let px = |x: u32, y: u32| img.get_pixel(x, y).0[0];
        assert_eq!(px(2, 2), (f64::from(0.9f32) * 255.0).round() as u8); // sample 0
        assert_eq!(px(2 + 3 + GAP, 2), 255); // its nearest: the white image
        let second = 2 + 12;
        assert_eq!(px(second, 3), (f64::from(0.1f32) * 255.0).round() as u8);
        assert_eq!(px(second + 3 + GAP, 3), 0); // the black image
        assert_eq!(px(0, 0), 128); // the gap
    }

    #[test]
    fn non_image_sets_and_bad_counts_are_refused() {
        let circle = Dataset::circle(8).unwrap();
        assert!(validate(&circle, 4, true).is_err());
        let images = image_set();
        assert!(validate(&images, 4, true).is_ok());
        assert!(validate(&images, 0, true).is_err());
        assert!(validate(&images, MAX_IMAGES + 1, true).is_err());
        let err = validate(&images, 4, false).unwrap_err().to_string();
        assert!(err.contains("--no-samples"), "{err}");
    }
}
