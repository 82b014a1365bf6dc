//! The cpu engine's patch-local scores (`model::patch_score`): each pixel's posterior over
//! its dictionary of training patches is attention again, so it runs on the attention
//! kernel (`attention::softmax_means`). Per dictionary group, the queries are the group's
//! pixels' patches of every particle of a work item, the keys the group's training
//! patches and the values their centre pixels; each weighted mean is the pixel's denoised
//! value. The update then applies the step's coefficients to `x` and that denoised image
//! `m`, as the empirical score's kernels do with the weighted training mean.
//!
//! Every query's weighted mean depends only on that query (the attention kernel's
//! invariant), so results do not depend on batch sizes or threads.
//!
//! Dictionaries whose layouts would take more than the memory budget
//! (`MEMODIFF_DICTIONARY_MEMORY`, default `DEFAULT_DICTIONARY_MEMORY`) are never built
//! whole: each work item builds them a chunk of whole attention blocks at a time from the
//! training images, at every step (`KeyChunks`). The softmax carries over the chunks as
//! over blocks, so a streamed run gives the bits of a stored one; it costs the rebuilds.

use super::attention::{self, KeyChunks};
use super::panels::{block_points, TrainingPanels, PANEL};
use super::run_blocks;
use crate::engine::records::{StepRecord, StepRecords};
use crate::engine::{BatchWork, Problem};
use crate::error::{Error, Result};
use crate::isa::Isa;
use crate::model::dataset::Dataset;
use crate::model::patch_score::{DictionaryGroup, PatchGeometry, PatchPlan};
use std::borrow::Cow;

/// The memory the dictionaries of a run may take, in bytes, before they are streamed.
pub const DEFAULT_DICTIONARY_MEMORY: u64 = 4 << 30;
/// The environment variable that sets that budget, in MiB.
pub const DICTIONARY_MEMORY_VAR: &str = "MEMODIFF_DICTIONARY_MEMORY";
/// Memory of one chunk of a streamed dictionary (its layouts and the f64 patches it is
/// built from); each thread holds one at a time.
const CHUNK_BYTES: u64 = 32 << 20;

/// The budget: `MEMODIFF_DICTIONARY_MEMORY` MiB where set, else the default.
pub fn dictionary_memory() -> Result<u64> {
    match std::env::var(DICTIONARY_MEMORY_VAR) {
        Err(_) => Ok(DEFAULT_DICTIONARY_MEMORY),
        Ok(text) if text.trim().is_empty() => Ok(DEFAULT_DICTIONARY_MEMORY),
        Ok(text) => match text.trim().parse::<u64>() {
            Ok(mib) => Ok(mib << 20),
            Err(_) => Err(Error::invalid(
                DICTIONARY_MEMORY_VAR,
                format!("{text:?} is not a whole number of MiB"),
            )),
        },
    }
}

/// Bytes of the attention kernel's layouts of one patch (its centre pixel the value),
/// and of the f64 patch and centre it is built from.
fn patch_bytes(geometry: &PatchGeometry) -> (u64, u64) {
    let (len, channels) = (geometry.patch_len(), geometry.shape.channels);
    (
        TrainingPanels::bytes_per_point(len, channels),
        8 * (len + channels) as u64,
    )
}

/// What the dictionaries of `geometry` on `images` images take held whole: their layouts
/// and, while one is built, its f64 patches.
pub fn stored_bytes(geometry: &PatchGeometry, images: usize) -> u64 {
    let (layout, build) = patch_bytes(geometry);
    let sizes = geometry
        .groups()
        .iter()
        .map(|g| (images * g.positions.len()).div_ceil(PANEL) as u64 * PANEL as u64)
        .collect::<Vec<u64>>();
    sizes.iter().sum::<u64>() * layout + sizes.iter().max().unwrap_or(&0) * build
}

/// Patches per chunk of a streamed dictionary: whole attention blocks in `CHUNK_BYTES`.
fn chunk_patches(geometry: &PatchGeometry) -> usize {
    let (layout, build) = patch_bytes(geometry);
    let block = block_points(geometry.patch_len());
    let blocks = (CHUNK_BYTES / ((layout + build) * block as u64)).max(1);
    blocks as usize * block
}

/// The cpu engine's memory for the patch score of `plan` on `images` images, for the
/// run's notes: held whole, or streamed.
pub fn memory_note(plan: &PatchPlan, images: usize) -> Result<String> {
    let budget = dictionary_memory()?;
    let gib = |bytes: u64| bytes as f64 / (1u64 << 30) as f64;
    let parts: Vec<String> = plan
        .distinct()
        .iter()
        .map(|g| {
            let bytes = stored_bytes(g, images);
            if bytes <= budget {
                format!("{} {:.2} GiB in memory", g.score.label(), gib(bytes))
            } else {
                format!(
                    "{} needs {:.2} GiB held whole, over the {:.2} GiB budget \
                     ({DICTIONARY_MEMORY_VAR}, MiB): streamed in chunks of {} patches \
                     ({} MiB per thread), rebuilt at every step",
                    g.score.label(),
                    gib(bytes),
                    gib(budget),
                    chunk_patches(g),
                    CHUNK_BYTES >> 20
                )
            }
        })
        .collect();
    Ok(format!("cpu engine dictionaries: {}", parts.join("; ")))
}

/// One dictionary as the attention kernel reads it.
#[derive(Debug)]
enum GroupKeys {
    /// Built whole, once.
    Stored(TrainingPanels),
    /// Built a chunk at a time from the training images at every use.
    Streamed(StreamedDictionary),
}

/// A dictionary too large to hold: its patches' positions and the chunking.
#[derive(Debug)]
struct StreamedDictionary {
    geometry: PatchGeometry,
    positions: Vec<(usize, usize)>,
    patches: usize,
    chunk: usize,
}

/// A streamed dictionary bound to the training images it is built from.
struct StreamedKeys<'a> {
    dictionary: &'a StreamedDictionary,
    images: &'a [f64],
}

/// The layouts of `patches` patches (row-major) with their centre pixels as the values.
fn patch_panels(geometry: &PatchGeometry, patches: &[f64]) -> TrainingPanels {
    let (len, channels, centre) = (
        geometry.patch_len(),
        geometry.shape.channels,
        geometry.centre_offset(),
    );
    // Keys: the whole patches; values: their centre pixels, all that the denoised image
    // takes of a patch.
    let centres: Vec<f64> = patches
        .chunks_exact(len)
        .flat_map(|patch| &patch[centre..centre + channels])
        .copied()
        .collect();
    TrainingPanels::with_values(patches, len, &centres, channels, false)
}

impl KeyChunks for StreamedKeys<'_> {
    fn dim(&self) -> usize {
        self.dictionary.geometry.patch_len()
    }

    fn mean_width(&self) -> usize {
        self.dictionary.geometry.shape.channels
    }

    fn mean_len(&self) -> usize {
        self.dictionary.geometry.shape.channels
    }

    fn total_points(&self) -> usize {
        self.dictionary.patches
    }

    fn chunks(&self) -> usize {
        self.dictionary.patches.div_ceil(self.dictionary.chunk)
    }

    fn chunk(&self, index: usize) -> (Cow<'_, TrainingPanels>, usize) {
        let StreamedDictionary {
            geometry,
            positions,
            patches,
            chunk,
        } = self.dictionary;
        let (len, dim) = (
            geometry.patch_len(),
            geometry.pixels() * geometry.shape.channels,
        );
        let first = index * chunk;
        let count = (*chunk).min(patches - first);
        let mut buffer = vec![0f64; count * len];
        // Entry e of the dictionary: image e / positions, at position e % positions
        // (`PatchGeometry::dictionary`'s order).
        for (e, out) in (first..first + count).zip(buffer.chunks_exact_mut(len)) {
            let (n, q) = (e / positions.len(), e % positions.len());
            let (i, j) = positions[q];
            geometry.training_patch(&self.images[n * dim..(n + 1) * dim], i, j, out);
        }
        (Cow::Owned(patch_panels(geometry, &buffer)), first)
    }
}

/// The dictionaries of a patch score in the attention kernel's layout, with the pixels
/// each one serves.
#[derive(Debug)]
pub struct PatchDictionaries {
    pub geometry: PatchGeometry,
    groups: Vec<(Vec<usize>, GroupKeys)>,
}

impl PatchDictionaries {
    /// The dictionaries of `geometry` from `dataset`'s images: built whole where that
    /// fits the memory budget (`dictionary_memory`), else streamed.
    pub fn new(geometry: PatchGeometry, dataset: &Dataset) -> Result<Self> {
        let budget = dictionary_memory()?;
        Ok(Self::with_budget(geometry, dataset, budget))
    }

    /// The same with a budget of `budget` bytes.
    pub fn with_budget(geometry: PatchGeometry, dataset: &Dataset, budget: u64) -> Self {
        let streamed = stored_bytes(&geometry, dataset.len()) > budget;
        Self::build(
            geometry,
            dataset,
            streamed.then(|| chunk_patches(&geometry)),
        )
    }

    /// Built whole (`chunk` `None`), or streamed in chunks of `chunk` patches (a whole
    /// number of attention blocks).
    fn build(geometry: PatchGeometry, dataset: &Dataset, chunk: Option<usize>) -> Self {
        let groups = geometry
            .groups()
            .into_iter()
            .map(|DictionaryGroup { pixels, positions }| {
                let keys = match chunk {
                    Some(chunk) => GroupKeys::Streamed(StreamedDictionary {
                        geometry,
                        patches: dataset.len() * positions.len(),
                        positions,
                        chunk,
                    }),
                    None => {
                        let group = DictionaryGroup {
                            pixels: Vec::new(),
                            positions,
                        };
                        let patches = geometry.dictionary(&dataset.points, &group);
                        GroupKeys::Stored(patch_panels(&geometry, &patches))
                    }
                };
                (pixels, keys)
            })
            .collect();
        Self { geometry, groups }
    }

    /// Whether the dictionaries are streamed.
    #[cfg(test)]
    fn streamed(&self) -> bool {
        matches!(self.groups.first(), Some((_, GroupKeys::Streamed(_))))
    }

    /// The buffers of a work item of `particles` particles.
    fn scratch(&self, particles: usize, isa: Isa) -> Scratch {
        let len = self.geometry.patch_len();
        let largest_group = self.groups.iter().map(|(p, _)| p.len()).max().unwrap_or(0);
        let queries = particles * largest_group;
        let r = attention::tile_rows(isa);
        Scratch {
            queries: vec![0f32; queries * len],
            means: vec![0f32; queries * self.geometry.shape.channels],
            attention: match &self.groups[0].1 {
                GroupKeys::Stored(panels) => attention::Scratch::new(queries, r, panels),
                GroupKeys::Streamed(_) => {
                    attention::Scratch::unculled(queries, r, len, self.geometry.shape.channels)
                }
            },
        }
    }

    /// The denoised images `m` (same shape as `xs`) of every particle of `xs` under the
    /// score at `scale`, the dictionaries from the training `images` where streamed.
    fn denoise(
        &self,
        isa: Isa,
        images: &[f64],
        xs: &[f32],
        scale: attention::ScoreScale,
        scratch: &mut Scratch,
        m: &mut [f32],
    ) {
        let geometry = &self.geometry;
        let (dim, len) = (
            geometry.pixels() * geometry.shape.channels,
            geometry.patch_len(),
        );
        let (width, channels) = (geometry.shape.width, geometry.shape.channels);
        for (pixels, keys) in &self.groups {
            let queries = xs.len() / dim * pixels.len();
            let (query, mean) = (
                &mut scratch.queries[..queries * len],
                &mut scratch.means[..queries * channels],
            );
            let mut slots = query.chunks_exact_mut(len);
            for x in xs.chunks_exact(dim) {
                for &p in pixels {
                    geometry.query(x, p / width, p % width, slots.next().expect("sized"));
                }
            }
            match keys {
                GroupKeys::Stored(panels) => attention::softmax_means(
                    isa,
                    panels,
                    query,
                    scale,
                    &mut scratch.attention,
                    mean,
                ),
                GroupKeys::Streamed(dictionary) => {
                    let keys = StreamedKeys { dictionary, images };
                    attention::softmax_means(isa, &keys, query, scale, &mut scratch.attention, mean)
                }
            }
            let mut centres = mean.chunks_exact(channels);
            for m in m.chunks_exact_mut(dim) {
                for &p in pixels {
                    m[p * channels..(p + 1) * channels]
                        .copy_from_slice(centres.next().expect("sized"));
                }
            }
        }
    }
}

/// A work item's buffers, sized for its particles and the largest group.
struct Scratch {
    queries: Vec<f32>,
    means: Vec<f32>,
    attention: attention::Scratch,
}

/// Particles per work item: enough queries per attention call to fill its register tiles
/// when a group serves one pixel (`local:k`), few enough that items balance.
const ITEM_PARTICLES: usize = 8;

/// Particles per work item for a batch of `particles`: `ITEM_PARTICLES`, or fewer when
/// that would leave threads idle (a few large images: one item of 4 particles of 28 × 28
/// ran on one of two cores). Each particle's path depends only on its own queries, so
/// the item size does not change the bits.
fn item_particles(particles: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    ITEM_PARTICLES.min(particles.div_ceil(threads)).max(1)
}

/// Run `work`'s particles through its steps under the patch score of `problem.patch`,
/// whose patch sizes' dictionaries are `dictionaries` (each step uses its own size's).
pub fn advance_patch(
    problem: &Problem,
    work: BatchWork,
    dictionaries: &[PatchDictionaries],
) -> Result<()> {
    let dim = problem.dataset.dim;
    let first_particle = work.first_particle;
    let StepRecords { records, first } = StepRecords::new(
        problem.sampler,
        &problem.schedule,
        problem.steps,
        work.steps.clone(),
    );
    // Each record's dictionaries: those of its step's patch size.
    let plan = problem.patch.expect("a patch problem");
    let which: Vec<usize> = (0..records.len())
        .map(|r| {
            let step = work.steps.start + first.partition_point(|&f| f <= r) - 1;
            let geometry = plan.steps[step];
            dictionaries
                .iter()
                .position(|d| d.geometry == geometry)
                .expect("dictionaries of every patch size of the plan")
        })
        .collect();
    let key = crate::model::philox::seed_key(problem.seed);
    let isa = Isa::selected()?;
    let initial_std = problem.initial_std as f32;
    let item = item_particles(work.state.len() / dim);
    run_blocks(dim, item, work, |c, initial, rows| {
        let first = first_particle + (c * item) as u64;
        if let Some(initial) = initial {
            for (r, x) in initial.chunks_exact_mut(dim).enumerate() {
                super::init_noise::init_noise_into(problem.seed, first + r as u64, initial_std, x);
            }
            rows.copy_from_slice(initial);
        }
        let mut scratches: Vec<Scratch> = dictionaries
            .iter()
            .map(|d| d.scratch(rows.len() / dim, isa))
            .collect();
        let mut m = vec![0f32; rows.len()];
        let mut partials = vec![0f32; rows.len()];
        let mut noise = vec![0f32; dim];
        for (record, &d) in records.iter().zip(&which) {
            dictionaries[d].denoise(
                isa,
                &problem.dataset.points,
                rows,
                attention::score_scale(record),
                &mut scratches[d],
                &mut m,
            );
            for (p, ((x, partial), m)) in rows
                .chunks_exact_mut(dim)
                .zip(partials.chunks_exact_mut(dim))
                .zip(m.chunks_exact(dim))
                .enumerate()
            {
                // The attention kernel's updates with the weighted sums `m` and weight 1.
                match record {
                    StepRecord::Em(step) => attention::em_update::<false>(
                        x,
                        m,
                        1.0,
                        step,
                        key,
                        first + p as u64,
                        &mut noise,
                    ),
                    StepRecord::Heun(half) => attention::heun_update(x, partial, m, 1.0, half),
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::dataset::ImageShape;
    use crate::model::patch_score::PatchScore;

    /// Images of `shape` with values in [-1, 1] from a hash (no two patches alike).
    fn images(n: usize, shape: ImageShape) -> Dataset {
        let dim = shape.height * shape.width * shape.channels;
        let points: Vec<f64> = (0..n * dim)
            .map(|i| {
                let h = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
                h as f64 / (1u64 << 24) as f64 * 2.0 - 1.0
            })
            .collect();
        let mut dataset = Dataset::new("images", dim, points).expect("images");
        dataset.image_shape = Some(shape);
        dataset
    }

    /// The geometry of the patch score `score` on images of `shape`.
    fn geometry_of(score: &str, shape: ImageShape) -> PatchGeometry {
        let score = PatchScore::parse(score)
            .expect("a patch score")
            .expect("valid");
        score.on(Some(shape)).expect("fits the images")
    }

    /// A streamed dictionary gives the stored one's denoised images bit for bit, whatever
    /// its chunks (one block, several, one chunk for all), for every locality.
    #[test]
    fn streamed_dictionaries_give_the_stored_bits() {
        let shape = ImageShape {
            height: 7,
            width: 9,
            channels: 2,
        };
        let dataset = images(40, shape);
        let dim = shape.height * shape.width * shape.channels;
        let isa = Isa::selected().expect("an instruction set");
        let xs: Vec<f32> = images(5, shape)
            .points
            .iter()
            .map(|&v| 0.9 * v as f32)
            .collect();
        for score in ["els:3", "local:3", "bbels:5"] {
            let geometry = geometry_of(score, shape);
            let block = block_points(geometry.patch_len());
            let stored = PatchDictionaries::build(geometry, &dataset, None);
            assert!(!stored.streamed());
            for scale in [
                attention::ScoreScale::new(0.9, 2.0),
                attention::ScoreScale::new(0.999, 400.0),
            ] {
                let denoise = |d: &PatchDictionaries| {
                    let mut m = vec![0f32; xs.len()];
                    let mut scratch = d.scratch(xs.len() / dim, isa);
                    d.denoise(isa, &dataset.points, &xs, scale, &mut scratch, &mut m);
                    m
                };
                let want = denoise(&stored);
                for chunk in [block, 2 * block, 64 * block] {
                    let streamed = PatchDictionaries::build(geometry, &dataset, Some(chunk));
                    assert!(streamed.streamed());
                    let got = denoise(&streamed);
                    let same = want
                        .iter()
                        .zip(&got)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{score}: chunks of {chunk} patches differ");
                }
            }
        }
    }

    /// The budget decides: over it, streamed.
    #[test]
    fn the_budget_decides_what_is_streamed() {
        let shape = ImageShape {
            height: 8,
            width: 8,
            channels: 1,
        };
        let dataset = images(10, shape);
        let geometry = geometry_of("els:3", shape);
        let bytes = stored_bytes(&geometry, dataset.len());
        // 360 patches, padded to 384, of 9 values: 4 (9 + 32 + 2 + 1) bytes of layouts
        // each, and the f64 patches and centres (8 (9 + 1) each) while they are built.
        assert_eq!(bytes, 384 * 176 + 384 * 80);
        assert!(!PatchDictionaries::with_budget(geometry, &dataset, bytes).streamed());
        assert!(PatchDictionaries::with_budget(geometry, &dataset, bytes - 1).streamed());
    }
}
