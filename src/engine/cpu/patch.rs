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
//! A dictionary is made in chunks of consecutive entries (`chunk_patches`), each a
//! whole number of attention blocks, and within a chunk of one-channel patches identical
//! patches are merged into one key with a count (exact: its weight counts that many
//! times; the digits' background repeats: 13% of the 8 × 8 digits' 3 × 3 patches, 34%
//! of those of the digits upsampled to 28 × 28). Dictionaries whose layouts would take more than the
//! memory budget (`MEMODIFF_DICTIONARY_MEMORY`, default `DEFAULT_DICTIONARY_MEMORY`) are
//! never held whole: each work item builds their chunks one at a time from the training
//! images, at every step (`KeyChunks`). The chunks are the same either way and the
//! softmax carries over them as over blocks, so a streamed run gives the bits of a held
//! one; it costs the rebuilds.

use super::attention::{self, KeyChunks};
use super::panels::{block_points, TrainingPanels, PANEL};
use super::run_blocks;
use crate::engine::records::{StepRecord, StepRecords};
use crate::engine::{BatchWork, Problem};
use crate::error::Result;
use crate::isa::Isa;
use crate::model::dataset::Dataset;
use crate::model::patch_score::{DictionaryGroup, PatchGeometry, PatchPlan};
use std::borrow::Cow;
use std::collections::hash_map::{Entry, HashMap};

/// The memory the dictionaries of a run may take, in bytes, before they are streamed.
pub const DEFAULT_DICTIONARY_MEMORY: u64 = 4 << 30;
/// The environment variable that sets that budget, in MiB.
pub const DICTIONARY_MEMORY_VAR: &str = "MEMODIFF_DICTIONARY_MEMORY";
/// Memory of one chunk of a dictionary (its layouts and the f64 patches it is built
/// from); streamed, each thread holds one at a time. Identical patches merge within a
/// chunk: larger chunks merge more.
const CHUNK_BYTES: u64 = 128 << 20;

/// The budget: `MEMODIFF_DICTIONARY_MEMORY` MiB where set, else the default.
pub fn dictionary_memory() -> Result<u64> {
    let set =
        crate::engine::memory_from_env(DICTIONARY_MEMORY_VAR, 1 << 20, "a whole number of MiB")?;
    Ok(set.unwrap_or(DEFAULT_DICTIONARY_MEMORY))
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
/// (before identical patches merge) and, while a chunk is built, its f64 patches.
pub fn stored_bytes(geometry: &PatchGeometry, images: usize) -> u64 {
    let (layout, build) = patch_bytes(geometry);
    let chunk = chunk_patches(geometry) as u64;
    let sizes = geometry
        .groups()
        .iter()
        .map(|g| (images * g.positions.len()).div_ceil(PANEL) as u64 * PANEL as u64)
        .collect::<Vec<u64>>();
    let largest = sizes.iter().max().copied().unwrap_or(0);
    sizes.iter().sum::<u64>() * layout + largest.min(chunk) * build
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

/// One dictionary: its entries' positions, its chunking, and its chunks where held.
#[derive(Debug)]
struct GroupKeys {
    geometry: PatchGeometry,
    /// The positions of the group's patches in each image.
    positions: Vec<(usize, usize)>,
    /// Entries (images x positions) and entries per chunk.
    patches: usize,
    chunk: usize,
    /// The chunks, built once; `None`: built from the images at every use (streamed).
    held: Option<Vec<TrainingPanels>>,
    /// Streamed with one channel: each chunk's merge, found once (8 bytes a key), so
    /// that a rebuild makes only the keys.
    merges: Option<Vec<ChunkMerge>>,
}

impl GroupKeys {
    /// The layouts of chunk `index` of the dictionary of the training `images`: entries
    /// `index * chunk ..` in `PatchGeometry::dictionary`'s order, identical one-channel
    /// patches merged into the first with a count (a streamed dictionary knows its
    /// merges and builds only the keys).
    fn build_chunk(&self, images: &[f64], index: usize) -> TrainingPanels {
        let first = index * self.chunk;
        if let Some(merges) = &self.merges {
            let ChunkMerge { kept, counts } = &merges[index];
            let entries = kept.iter().map(|&e| first + e as usize);
            let patches = self.patches_of(images, entries);
            return patch_panels(&self.geometry, &patches, Some(counts));
        }
        let patches = self.patches_of(images, self.entries(index));
        if self.geometry.shape.channels > 1 {
            // Colour patches repeat too rarely to pay for the counts' pass.
            return patch_panels(&self.geometry, &patches, None);
        }
        let len = self.geometry.patch_len();
        let ChunkMerge { kept, counts } = ChunkMerge::of(&patches, len);
        let merged: Vec<f64> = kept
            .iter()
            .flat_map(|&e| &patches[e as usize * len..(e as usize + 1) * len])
            .copied()
            .collect();
        patch_panels(&self.geometry, &merged, Some(&counts))
    }

    /// The dictionary entries of chunk `index`.
    fn entries(&self, index: usize) -> std::ops::Range<usize> {
        let first = index * self.chunk;
        first..first + self.chunk.min(self.patches - first)
    }

    /// The patches (row-major) of dictionary `entries` (entry e: image `e / positions`,
    /// at position `e % positions`) of the training `images`.
    fn patches_of(
        &self,
        images: &[f64],
        entries: impl ExactSizeIterator<Item = usize>,
    ) -> Vec<f64> {
        let geometry = &self.geometry;
        let (len, dim) = (
            geometry.patch_len(),
            geometry.pixels() * geometry.shape.channels,
        );
        let mut patches = vec![0f64; entries.len() * len];
        for (e, out) in entries.zip(patches.chunks_exact_mut(len)) {
            let (n, q) = (e / self.positions.len(), e % self.positions.len());
            let (i, j) = self.positions[q];
            geometry.training_patch(&images[n * dim..(n + 1) * dim], i, j, out);
        }
        patches
    }
}

/// Which entries of a chunk stay keys (their indices in the chunk, in order), and how
/// many entries each stands for.
#[derive(Debug)]
struct ChunkMerge {
    kept: Vec<u32>,
    counts: Vec<u32>,
}

impl ChunkMerge {
    /// The merge of a chunk's `patches` (row-major, `len` values each): identical as the
    /// kernel sees them (the same f32 values; the centre, the value, is one of them)
    /// into the first.
    fn of(patches: &[f64], len: usize) -> Self {
        let bits: Vec<u32> = patches.iter().map(|&v| (v as f32).to_bits()).collect();
        let mut slot: HashMap<&[u32], usize> = HashMap::with_capacity(bits.len() / len);
        let (mut kept, mut counts) = (Vec::new(), Vec::new());
        for (e, key) in bits.chunks_exact(len).enumerate() {
            match slot.entry(key) {
                Entry::Occupied(at) => counts[*at.get()] += 1,
                Entry::Vacant(at) => {
                    at.insert(kept.len());
                    kept.push(e as u32);
                    counts.push(1u32);
                }
            }
        }
        Self { kept, counts }
    }
}

/// A dictionary bound to the training images its chunks are built from.
struct DictionaryKeys<'a> {
    keys: &'a GroupKeys,
    images: &'a [f64],
}

/// The layouts of `patches` patches (row-major) with their centre pixels as the values,
/// patch `i` standing for `counts[i]` identical ones.
fn patch_panels(
    geometry: &PatchGeometry,
    patches: &[f64],
    counts: Option<&[u32]>,
) -> TrainingPanels {
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
    TrainingPanels::with_values(patches, len, &centres, channels, counts, false)
}

impl KeyChunks for DictionaryKeys<'_> {
    fn dim(&self) -> usize {
        self.keys.geometry.patch_len()
    }

    fn mean_width(&self) -> usize {
        self.keys.geometry.shape.channels
    }

    fn mean_len(&self) -> usize {
        self.keys.geometry.shape.channels
    }

    /// The entries, merged ones counted with their counts (the recompute margin's N).
    fn total_points(&self) -> usize {
        self.keys.patches
    }

    fn chunks(&self) -> usize {
        self.keys.patches.div_ceil(self.keys.chunk)
    }

    /// Chunk `index`, and its first entry's index (for the argmax, which patch scores
    /// do not use).
    fn chunk(&self, index: usize) -> (Cow<'_, TrainingPanels>, usize) {
        let chunk = match &self.keys.held {
            Some(chunks) => Cow::Borrowed(&chunks[index]),
            None => Cow::Owned(self.keys.build_chunk(self.images, index)),
        };
        (chunk, index * self.keys.chunk)
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
        let held = stored_bytes(&geometry, dataset.len()) <= budget;
        Self::build(geometry, dataset, held, chunk_patches(&geometry))
    }

    /// Held (`held`) or streamed, in chunks of `chunk` entries (a whole number of
    /// attention blocks).
    fn build(geometry: PatchGeometry, dataset: &Dataset, held: bool, chunk: usize) -> Self {
        let groups = geometry
            .groups()
            .into_iter()
            .map(|DictionaryGroup { pixels, positions }| {
                let mut keys = GroupKeys {
                    geometry,
                    patches: dataset.len() * positions.len(),
                    positions,
                    chunk,
                    held: None,
                    merges: None,
                };
                let chunks = keys.patches.div_ceil(chunk);
                if held {
                    keys.held = Some(
                        (0..chunks)
                            .map(|index| keys.build_chunk(&dataset.points, index))
                            .collect(),
                    );
                } else if geometry.shape.channels == 1 {
                    let len = geometry.patch_len();
                    keys.merges = Some(
                        (0..chunks)
                            .map(|index| {
                                let patches = keys.patches_of(&dataset.points, keys.entries(index));
                                ChunkMerge::of(&patches, len)
                            })
                            .collect(),
                    );
                }
                (pixels, keys)
            })
            .collect();
        Self { geometry, groups }
    }

    /// Whether the dictionaries are streamed.
    #[cfg(test)]
    fn streamed(&self) -> bool {
        matches!(self.groups.first(), Some((_, keys)) if keys.held.is_none())
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
            attention: attention::Scratch::unculled(queries, r, len, self.geometry.shape.channels),
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
            let keys = DictionaryKeys { keys, images };
            attention::softmax_means(isa, &keys, query, scale, &mut scratch.attention, mean);
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
    use crate::model::patch_score::{PatchReference, PatchScore};

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

    /// The denoised images of `xs` under `dictionaries` at `scale`.
    fn denoise(
        dictionaries: &PatchDictionaries,
        dataset: &Dataset,
        xs: &[f32],
        scale: attention::ScoreScale,
    ) -> Vec<f32> {
        let isa = Isa::selected().expect("an instruction set");
        let dim = dataset.dim;
        let mut m = vec![0f32; xs.len()];
        let mut scratch = dictionaries.scratch(xs.len() / dim, isa);
        dictionaries.denoise(isa, &dataset.points, xs, scale, &mut scratch, &mut m);
        m
    }

    /// The shape of one-channel images.
    fn grey(height: usize, width: usize) -> ImageShape {
        ImageShape {
            height,
            width,
            channels: 1,
        }
    }

    /// Binary images of `shape`, mostly 0 (their patches repeat), from a hash.
    fn sparse_images(n: usize, shape: ImageShape) -> Dataset {
        let mut dataset = images(n, shape);
        for v in &mut dataset.points {
            *v = if *v > 0.6 { 1.0 } else { 0.0 };
        }
        dataset
    }

    /// A streamed dictionary gives the held one's denoised images bit for bit, whatever
    /// its chunks (one block, several, one chunk for all), for every locality, with
    /// colour patches (never merged) and with one-channel ones that repeat (merged).
    #[test]
    fn streamed_dictionaries_give_the_held_bits() {
        let colour = ImageShape {
            height: 7,
            width: 9,
            channels: 2,
        };
        let grey = grey(7, 9);
        for (shape, dataset) in [
            (colour, images(40, colour)),
            (grey, sparse_images(40, grey)),
        ] {
            let xs: Vec<f32> = images(5, shape)
                .points
                .iter()
                .map(|&v| 0.9 * v as f32)
                .collect();
            for score in ["els:3", "local:3", "bbels:5"] {
                let geometry = geometry_of(score, shape);
                let block = block_points(geometry.patch_len());
                for chunk in [block, 2 * block, 64 * block] {
                    let held = PatchDictionaries::build(geometry, &dataset, true, chunk);
                    let streamed = PatchDictionaries::build(geometry, &dataset, false, chunk);
                    assert!(!held.streamed() && streamed.streamed());
                    for scale in [
                        attention::ScoreScale::new(0.9, 2.0),
                        attention::ScoreScale::new(0.999, 400.0),
                    ] {
                        let want = denoise(&held, &dataset, &xs, scale);
                        let got = denoise(&streamed, &dataset, &xs, scale);
                        let same = want
                            .iter()
                            .zip(&got)
                            .all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(
                            same,
                            "{score}, C = {}: chunks of {chunk} differ",
                            shape.channels
                        );
                    }
                }
            }
        }
    }

    /// Identical one-channel patches are merged into one key with a count, and the
    /// denoised images stay those of the f64 reference, which weighs every patch.
    #[test]
    fn merged_patches_weigh_as_many_as_they_stand_for() {
        let shape = grey(8, 8);
        let dataset = sparse_images(60, shape);
        let xs = images(4, shape).points;
        let xs32: Vec<f32> = xs.iter().map(|&v| v as f32).collect();
        for score in ["els:3", "local:3", "bbels:3"] {
            let geometry = geometry_of(score, shape);
            let dictionaries = PatchDictionaries::with_budget(geometry, &dataset, u64::MAX);
            let (mut keys, mut entries) = (0, 0);
            for (_, group) in &dictionaries.groups {
                entries += group.patches;
                for chunk in group.held.as_ref().expect("held") {
                    keys += chunk.points;
                    let counts = &chunk.values.as_ref().expect("values").counts;
                    assert_eq!(counts.iter().sum::<f32>() as usize, group.patches);
                }
            }
            assert!(
                keys * 2 < entries,
                "{score}: {keys} keys for {entries} patches"
            );
            let reference = PatchReference::new(&geometry, &dataset);
            for (s, v) in [(0.9f64, 0.25f64), (0.999, 0.01)] {
                let scale = attention::ScoreScale::new(s as f32, (0.5 / v) as f32);
                let got = denoise(&dictionaries, &dataset, &xs32, scale);
                for (x, got) in xs.chunks_exact(64).zip(got.chunks_exact(64)) {
                    let want = reference.denoised(s, v, x);
                    for (g, w) in got.iter().zip(&want) {
                        assert!(
                            (*g as f64 - w).abs() < 1e-4,
                            "{score} at v = {v}: {g} against {w}"
                        );
                    }
                }
            }
        }
    }

    /// The budget decides: over it, streamed.
    #[test]
    fn the_budget_decides_what_is_streamed() {
        let shape = grey(8, 8);
        let dataset = images(10, shape);
        let geometry = geometry_of("els:3", shape);
        let bytes = stored_bytes(&geometry, dataset.len());
        // 360 patches, padded to 384, of 9 values: 4 (9 + 32 + 3 + 1) bytes of layouts
        // each, and the f64 patches and centres (8 (9 + 1) each) while they are built.
        assert_eq!(bytes, 384 * 180 + 384 * 80);
        assert!(!PatchDictionaries::with_budget(geometry, &dataset, bytes).streamed());
        assert!(PatchDictionaries::with_budget(geometry, &dataset, bytes - 1).streamed());
    }
}
