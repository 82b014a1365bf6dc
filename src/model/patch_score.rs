//! The patch-local scores (`--score local:k`, `els:k`, `bbels:k`): the scores of Kamb &
//! Ganguli ("An analytic theory of creativity in convolutional diffusion models", ICML
//! 2025) that explain why convolutional diffusion models make new images from training
//! patches instead of copying training images.
//!
//! Training images and particles have the shape (H, W, C) of [`ImageShape`], flattened
//! row-major. For each pixel p and odd patch size k = 2r + 1, the patch `x_Ω(p)` of the
//! noisy image is its k × k window around p, all channels (`k² C` values, window row by
//! row, channels innermost). Each pixel has a dictionary of training patches φ_j, weights
//! `w_j = softmax_j(−|x_Ω(p) − s φ_j|² / 2σ²)` and a denoised value
//! `m(p) = Σ_j w_j φ_j(centre)` (the C channels of the patch's centre pixel); the score at
//! p is `(s m(p) − x(p)) / σ²`, exactly the empirical score's form with a per-pixel
//! posterior mean, so every sampler runs unchanged on `m`.
//!
//! - `local:k` (LS): the dictionary at p is the N training patches centred at the same
//!   pixel p; outside the image both the noisy image and the training images are zero.
//!   With k ≥ max(2H − 1, 2W − 1) every window covers the whole image and the score is the
//!   empirical score.
//! - `els:k` (equivariant local score): one dictionary shared by all pixels, every k × k
//!   patch lying wholly inside a training image, at every position (N (H−k+1)(W−k+1)
//!   patches); the noisy image is read circularly (periodic boundary).
//! - `bbels:k` (boundary-broken ELS): the noisy image is zero outside; along each axis a
//!   pixel closer than r to an edge uses only training patches at its own position on
//!   that axis (zero-padded like it), an interior pixel the interior positions.
//!
//! This module holds the geometry every engine shares (queries, dictionaries) and the f64
//! reference of the denoised image, written for clarity. The f32 engines build the same
//! dictionaries and run them through their attention kernels.

use super::dataset::{Dataset, ImageShape};
use super::posterior::softmax_in_place;
use serde::Serialize;

/// Which patches a pixel's dictionary holds and how the noisy image is padded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Locality {
    /// `local:k`: the patches at the pixel's own position; zero padding.
    Local,
    /// `els:k`: every wholly-inside patch, shared by all pixels; circular padding.
    Els,
    /// `bbels:k`: positions matching the pixel's distance to the edges; zero padding.
    Bbels,
}

impl Locality {
    /// The name `--score` takes before `:k`.
    pub fn name(self) -> &'static str {
        match self {
            Locality::Local => "local",
            Locality::Els => "els",
            Locality::Bbels => "bbels",
        }
    }
}

/// A patch-local score: its locality and its odd patch size `k`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PatchScore {
    /// Which patches form a pixel's dictionary.
    pub locality: Locality,
    /// The patch side, odd, at least 1.
    pub k: usize,
}

impl PatchScore {
    /// Parse `local:k`, `els:k` or `bbels:k`; `None` when `text` names none of them, an
    /// error when it does with a bad `k`.
    pub fn parse(text: &str) -> Option<Result<Self, String>> {
        let (name, k) = text.split_once(':')?;
        let locality = match name.trim() {
            "local" => Locality::Local,
            "els" => Locality::Els,
            "bbels" => Locality::Bbels,
            _ => return None,
        };
        Some(match k.trim().parse::<usize>() {
            Ok(k) if k % 2 == 1 => Ok(PatchScore { locality, k }),
            _ => Err(format!(
                "'{text}': the patch size of {name}:k must be an odd whole number >= 1, e.g. {name}:3"
            )),
        })
    }

    /// `local:k`, `els:k` or `bbels:k`.
    pub fn label(&self) -> String {
        format!("{}:{}", self.locality.name(), self.k)
    }

    /// The patch radius r, with k = 2r + 1.
    pub fn radius(&self) -> usize {
        self.k / 2
    }

    /// The geometry of this score on images of `shape`, or a one-line reason why the
    /// score does not apply to them.
    pub fn on(&self, shape: Option<ImageShape>) -> Result<PatchGeometry, String> {
        let Some(shape) = shape else {
            return Err(format!(
                "--score {} needs image training data: a .npy of shape (N, H, W) or (N, H, W, C)",
                self.label()
            ));
        };
        let inside = self.locality != Locality::Local;
        if inside && (self.k > shape.height || self.k > shape.width) {
            return Err(format!(
                "--score {}: the {}×{} images hold no {}×{} patch wholly inside; use k <= {}",
                self.label(),
                shape.height,
                shape.width,
                self.k,
                self.k,
                shape.height.min(shape.width)
            ));
        }
        Ok(PatchGeometry {
            score: *self,
            shape,
        })
    }
}

/// A patch score on images of one shape: the queries and dictionaries of every pixel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PatchGeometry {
    /// The score.
    pub score: PatchScore,
    /// The images' shape.
    pub shape: ImageShape,
}

/// Pixels that share one dictionary, and the training-patch positions it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct DictionaryGroup {
    /// The pixels (row-major indices `i W + j`) whose dictionary this is.
    pub pixels: Vec<usize>,
    /// The centres `(row, column)` of its patches, taken from every training image:
    /// entry `n * positions.len() + q` of the dictionary is image n's patch at position q.
    pub positions: Vec<(usize, usize)>,
}

impl PatchGeometry {
    /// Values per patch: `k² C`.
    pub fn patch_len(&self) -> usize {
        self.score.k * self.score.k * self.shape.channels
    }

    /// Pixels per image: `H W`.
    pub fn pixels(&self) -> usize {
        self.shape.height * self.shape.width
    }

    /// Offset of the centre pixel's first channel within a patch.
    pub fn centre_offset(&self) -> usize {
        let (k, r) = (self.score.k, self.score.radius());
        (r * k + r) * self.shape.channels
    }

    /// The patch of `image` around pixel `(i, j)` into `out` (`patch_len` values), read
    /// as this score reads the noisy image: circularly for `els`, zero outside otherwise.
    pub fn query<T: Copy + Default>(&self, image: &[T], i: usize, j: usize, out: &mut [T]) {
        let circular = self.score.locality == Locality::Els;
        self.window(image, i, j, circular, out);
    }

    /// The training patch of `image` centred at `(i, j)`, zero outside the image.
    pub fn training_patch<T: Copy + Default>(
        &self,
        image: &[T],
        i: usize,
        j: usize,
        out: &mut [T],
    ) {
        self.window(image, i, j, false, out);
    }

    fn window<T: Copy + Default>(
        &self,
        image: &[T],
        i: usize,
        j: usize,
        circular: bool,
        out: &mut [T],
    ) {
        let ImageShape {
            height,
            width,
            channels,
        } = self.shape;
        let (k, r) = (self.score.k, self.score.radius() as isize);
        debug_assert_eq!(out.len(), self.patch_len());
        for dy in 0..k {
            for dx in 0..k {
                let y = i as isize + dy as isize - r;
                let x = j as isize + dx as isize - r;
                let at = (dy * k + dx) * channels;
                let target = &mut out[at..at + channels];
                let inside = (0..height as isize).contains(&y) && (0..width as isize).contains(&x);
                let source = if inside {
                    Some((y as usize, x as usize))
                } else if circular {
                    Some((
                        y.rem_euclid(height as isize) as usize,
                        x.rem_euclid(width as isize) as usize,
                    ))
                } else {
                    None
                };
                match source {
                    Some((y, x)) => {
                        let from = (y * width + x) * channels;
                        target.copy_from_slice(&image[from..from + channels]);
                    }
                    None => target.fill(T::default()),
                }
            }
        }
    }

    /// The positions, along an axis of `len` pixels, of the training patches a pixel at
    /// `i` uses under `bbels`: its own within r of an edge, else every interior one.
    fn bbels_axis(&self, i: usize, len: usize) -> Vec<usize> {
        let r = self.score.radius();
        if i < r || i + r >= len {
            vec![i]
        } else {
            (r..len - r).collect()
        }
    }

    /// The dictionaries and the pixels using each, in a fixed order (every engine's).
    pub fn groups(&self) -> Vec<DictionaryGroup> {
        let (height, width) = (self.shape.height, self.shape.width);
        let r = self.score.radius();
        match self.score.locality {
            Locality::Local => (0..height * width)
                .map(|p| DictionaryGroup {
                    pixels: vec![p],
                    positions: vec![(p / width, p % width)],
                })
                .collect(),
            Locality::Els => vec![DictionaryGroup {
                pixels: (0..height * width).collect(),
                positions: (r..height - r)
                    .flat_map(|i| (r..width - r).map(move |j| (i, j)))
                    .collect(),
            }],
            Locality::Bbels => {
                // Pixels with the same row class and column class share a dictionary; a
                // class is an edge position (its own) or "interior".
                let class =
                    |i: usize, len: usize| if i < r || i + r >= len { i } else { usize::MAX };
                let mut groups: Vec<((usize, usize), DictionaryGroup)> = Vec::new();
                for i in 0..height {
                    for j in 0..width {
                        let key = (class(i, height), class(j, width));
                        match groups.iter_mut().find(|(k, _)| *k == key) {
                            Some((_, group)) => group.pixels.push(i * width + j),
                            None => {
                                let rows = self.bbels_axis(i, height);
                                let cols = self.bbels_axis(j, width);
                                let positions = rows
                                    .iter()
                                    .flat_map(|&y| cols.iter().map(move |&x| (y, x)))
                                    .collect();
                                groups.push((
                                    key,
                                    DictionaryGroup {
                                        pixels: vec![i * width + j],
                                        positions,
                                    },
                                ));
                            }
                        }
                    }
                }
                groups.into_iter().map(|(_, g)| g).collect()
            }
        }
    }

    /// The dictionary of `group` from the training images (`points`, N images of
    /// `H W C` values), row-major: `N * positions.len()` patches of `patch_len` values.
    pub fn dictionary<T: Copy + Default>(&self, points: &[T], group: &DictionaryGroup) -> Vec<T> {
        let (dim, len) = (self.pixels() * self.shape.channels, self.patch_len());
        let images = points.len() / dim;
        let mut out = vec![T::default(); images * group.positions.len() * len];
        let mut patches = out.chunks_exact_mut(len);
        for image in points.chunks_exact(dim) {
            for &(i, j) in &group.positions {
                self.training_patch(image, i, j, patches.next().expect("sized above"));
            }
        }
        out
    }

    /// Training-patch values all dictionaries hold together, for `images` images: what a
    /// run keeps in memory.
    pub fn dictionary_values(&self, images: usize) -> u64 {
        let patches: u64 = self.groups().iter().map(|g| g.positions.len() as u64).sum();
        patches * images as u64 * self.patch_len() as u64
    }
}

/// A patch score over the steps of a run: the geometry of every step, which differ only
/// in the patch size when the run has a patch-size schedule (`--patch-size 3,3,5,...`).
#[derive(Debug, Clone, PartialEq)]
pub struct PatchPlan {
    /// One geometry per step.
    pub steps: Vec<PatchGeometry>,
}

impl PatchPlan {
    /// `score` on images of `shape` for `steps` steps, with patch size `sizes[k]` at step
    /// k when given (one size per step, or one for all), else the score's own k. A
    /// one-line reason when a size is even, or a patch does not fit the images.
    pub fn new(
        score: PatchScore,
        shape: Option<ImageShape>,
        steps: usize,
        sizes: Option<&[usize]>,
    ) -> Result<Self, String> {
        let sizes: Vec<usize> = match sizes {
            None => vec![score.k; steps],
            Some([k]) => vec![*k; steps],
            Some(sizes) if sizes.len() == steps => sizes.to_vec(),
            Some(sizes) => {
                return Err(format!(
                    "{} values; give one, or one per step ({steps})",
                    sizes.len()
                ))
            }
        };
        let steps = sizes
            .iter()
            .map(|&k| {
                if k % 2 == 0 {
                    return Err(format!("{k} is even: patch sizes are odd, e.g. 3 or 5"));
                }
                PatchScore { k, ..score }.on(shape)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { steps })
    }

    /// What the dictionaries of `images` training images hold, for a line before a run:
    /// patches per distinct size and their memory as f32.
    pub fn describe(&self, images: usize) -> String {
        let sizes: Vec<String> = self
            .distinct()
            .iter()
            .map(|g| {
                let values = g.dictionary_values(images);
                format!(
                    "{} ({} patch values, {:.1} MB as f32)",
                    g.score.label(),
                    values,
                    values as f64 * 4.0 / 1e6
                )
            })
            .collect();
        format!("patch score dictionaries: {}", sizes.join(", "))
    }

    /// The distinct geometries, in order of first use.
    pub fn distinct(&self) -> Vec<PatchGeometry> {
        let mut out: Vec<PatchGeometry> = Vec::new();
        for g in &self.steps {
            if !out.contains(g) {
                out.push(*g);
            }
        }
        out
    }
}

/// The f64 reference of a patch score on one training set: its dictionaries, built once,
/// and the denoised image and score at any point, from the definitions.
#[derive(Debug, Clone)]
pub struct PatchReference {
    geometry: PatchGeometry,
    /// Per dictionary group: its pixels and its patches, row-major.
    groups: Vec<(Vec<usize>, Vec<f64>)>,
}

impl PatchReference {
    /// The dictionaries of `geometry` from `dataset`'s images.
    pub fn new(geometry: &PatchGeometry, dataset: &Dataset) -> Self {
        let groups = geometry
            .groups()
            .into_iter()
            .map(|group| {
                let dictionary = geometry.dictionary(&dataset.points, &group);
                (group.pixels, dictionary)
            })
            .collect();
        Self {
            geometry: *geometry,
            groups,
        }
    }

    /// The denoised image `m` at `x`: for every pixel, the softmax over its dictionary of
    /// `−|x_Ω(p) − s φ_j|² / 2v` and the weighted mean of the patches' centres.
    pub fn denoised(&self, s: f64, v: f64, x: &[f64]) -> Vec<f64> {
        let geometry = &self.geometry;
        let channels = geometry.shape.channels;
        let (len, centre) = (geometry.patch_len(), geometry.centre_offset());
        let mut m = vec![0.0; x.len()];
        let mut query = vec![0.0; len];
        for (pixels, dictionary) in &self.groups {
            for &p in pixels {
                let width = geometry.shape.width;
                geometry.query(x, p / width, p % width, &mut query);
                let mut weights: Vec<f64> = dictionary
                    .chunks_exact(len)
                    .map(|phi| {
                        let d2: f64 = query
                            .iter()
                            .zip(phi)
                            .map(|(q, a)| (q - s * a).powi(2))
                            .sum();
                        -d2 / (2.0 * v)
                    })
                    .collect();
                let (_, total) = softmax_in_place(&mut weights);
                for (w, phi) in weights.iter().zip(dictionary.chunks_exact(len)) {
                    for c in 0..channels {
                        m[p * channels + c] += w / total * phi[centre + c];
                    }
                }
            }
        }
        m
    }

    /// The patch score `(s m − x) / v` at `x`.
    pub fn score(&self, s: f64, v: f64, x: &[f64]) -> Vec<f64> {
        self.denoised(s, v, x)
            .iter()
            .zip(x)
            .map(|(m, xd)| (s * m - xd) / v)
            .collect()
    }
}

/// The patch score `(s m − x) / v` at `x` (f64; builds the dictionaries for this one
/// point: use `PatchReference` for many).
pub fn score(geometry: &PatchGeometry, dataset: &Dataset, s: f64, v: f64, x: &[f64]) -> Vec<f64> {
    PatchReference::new(geometry, dataset).score(s, v, x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(height: usize, width: usize, channels: usize) -> ImageShape {
        ImageShape {
            height,
            width,
            channels,
        }
    }

    #[test]
    fn scores_parse_and_refuse_what_does_not_fit() {
        let els = PatchScore::parse("els:3").unwrap().unwrap();
        assert_eq!(
            (els.locality, els.k, els.label()),
            (Locality::Els, 3, "els:3".into())
        );
        assert!(PatchScore::parse("kde:0.1").is_none());
        assert!(PatchScore::parse("local:4").unwrap().is_err());
        assert!(PatchScore::parse("bbels:x").unwrap().is_err());
        assert!(els.on(None).unwrap_err().contains("image training data"));
        assert!(els
            .on(Some(shape(2, 5, 1)))
            .unwrap_err()
            .contains("use k <= 2"));
        // local:k pads with zeros: any odd k applies.
        let local = PatchScore::parse("local:9").unwrap().unwrap();
        assert!(local.on(Some(shape(2, 2, 1))).is_ok());
    }

    #[test]
    fn windows_pad_with_zeros_or_wrap() {
        // A 3x4 image of one channel: value = 10 i + j + 1.
        let image: Vec<f64> = (0..12).map(|p| (10 * (p / 4) + p % 4 + 1) as f64).collect();
        let local = PatchScore::parse("local:3").unwrap().unwrap();
        let geometry = local.on(Some(shape(3, 4, 1))).unwrap();
        let mut out = vec![0.0; 9];
        geometry.query(&image, 0, 0, &mut out);
        assert_eq!(out, [0., 0., 0., 0., 1., 2., 0., 11., 12.]);
        let els = PatchScore::parse("els:3").unwrap().unwrap();
        let geometry = els.on(Some(shape(3, 4, 1))).unwrap();
        geometry.query(&image, 0, 0, &mut out);
        assert_eq!(out, [24., 21., 22., 4., 1., 2., 14., 11., 12.]);
        assert_eq!(geometry.centre_offset(), 4);
    }

    #[test]
    fn dictionaries_hold_the_positions_of_each_locality() {
        let image_shape = Some(shape(5, 6, 2));
        let groups = |text: &str| {
            PatchScore::parse(text)
                .unwrap()
                .unwrap()
                .on(image_shape)
                .unwrap()
                .groups()
        };
        // local: one per pixel, its own position.
        let local = groups("local:3");
        assert_eq!(local.len(), 30);
        assert_eq!(local[7].positions, [(1, 1)]);
        // els: one for all, the 3 x 4 inside centres.
        let els = groups("els:3");
        assert_eq!(
            (els.len(), els[0].pixels.len(), els[0].positions.len()),
            (1, 30, 12)
        );
        // bbels:3 (r = 1): rows 0 and 4, columns 0 and 5 are edge classes: 3 x 3 groups.
        let bbels = groups("bbels:3");
        assert_eq!(bbels.len(), 9);
        let corner = bbels.iter().find(|g| g.pixels == [0]).unwrap();
        assert_eq!(corner.positions, [(0, 0)]);
        let interior = bbels
            .iter()
            .find(|g| g.pixels.contains(&(2 * 6 + 2)))
            .unwrap();
        assert_eq!((interior.pixels.len(), interior.positions.len()), (12, 12));
        let top = bbels.iter().find(|g| g.pixels.contains(&3)).unwrap();
        assert_eq!(top.positions, [(0, 1), (0, 2), (0, 3), (0, 4)]);
        // Every pixel in exactly one group.
        let mut pixels: Vec<usize> = bbels.iter().flat_map(|g| g.pixels.clone()).collect();
        pixels.sort();
        assert_eq!(pixels, (0..30).collect::<Vec<_>>());
    }
}
