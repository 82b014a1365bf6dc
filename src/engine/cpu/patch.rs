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

use super::attention;
use super::panels::TrainingPanels;
use super::run_blocks;
use crate::engine::records::{StepRecord, StepRecords};
use crate::engine::{BatchWork, Problem};
use crate::error::{Error, Result};
use crate::isa::Isa;
use crate::model::dataset::Dataset;
use crate::model::patch_score::PatchGeometry;

/// The most training-patch values the engine holds in memory (f32 and f64 while they are
/// built): 2^31 values, 8 GiB as f32.
pub const MAX_DICTIONARY_VALUES: u64 = 1 << 31;

/// The dictionaries of a patch score in the attention kernel's layout, with the pixels
/// each one serves.
#[derive(Debug)]
pub struct PatchDictionaries {
    pub geometry: PatchGeometry,
    groups: Vec<(Vec<usize>, TrainingPanels)>,
}

impl PatchDictionaries {
    /// Build the dictionaries of `geometry` from `dataset`'s images, or say (before
    /// allocating) how much memory they would need when it is over the engine's limit.
    pub fn new(geometry: PatchGeometry, dataset: &Dataset) -> Result<Self> {
        let values = geometry.dictionary_values(dataset.len());
        if values > MAX_DICTIONARY_VALUES {
            return Err(Error::invalid(
                "score",
                format!(
                    "--score {} on {} images of {}×{}×{} needs {values} training-patch values \
                     ({:.1} GiB as f32), over the cpu engine's {:.0} GiB: use fewer images or a \
                     smaller patch",
                    geometry.score.label(),
                    dataset.len(),
                    geometry.shape.height,
                    geometry.shape.width,
                    geometry.shape.channels,
                    values as f64 * 4.0 / (1u64 << 30) as f64,
                    MAX_DICTIONARY_VALUES as f64 * 4.0 / (1u64 << 30) as f64,
                ),
            ));
        }
        let (len, channels, centre) = (
            geometry.patch_len(),
            geometry.shape.channels,
            geometry.centre_offset(),
        );
        let groups = geometry
            .groups()
            .into_iter()
            .map(|group| {
                let dictionary = geometry.dictionary(&dataset.points, &group);
                // Keys: the whole patches; values: their centre pixels, all that the
                // denoised image takes of a patch.
                let centres: Vec<f64> = dictionary
                    .chunks_exact(len)
                    .flat_map(|patch| &patch[centre..centre + channels])
                    .copied()
                    .collect();
                let panels =
                    TrainingPanels::with_values(&dictionary, len, &centres, channels, false);
                (group.pixels, panels)
            })
            .collect();
        Ok(Self { geometry, groups })
    }

    /// The buffers of a work item of `particles` particles.
    fn scratch(&self, particles: usize, isa: Isa) -> Scratch {
        let len = self.geometry.patch_len();
        let largest_group = self.groups.iter().map(|(p, _)| p.len()).max().unwrap_or(0);
        let queries = particles * largest_group;
        Scratch {
            queries: vec![0f32; queries * len],
            means: vec![0f32; queries * self.geometry.shape.channels],
            attention: attention::Scratch::new(
                queries,
                attention::tile_rows(isa),
                &self.groups[0].1,
            ),
        }
    }

    /// The denoised images `m` (same shape as `xs`) of every particle of `xs` under the
    /// score at `scale`. `queries` and `means` are scratch.
    fn denoise(
        &self,
        isa: Isa,
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
        for (pixels, panels) in &self.groups {
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
            attention::softmax_means(isa, panels, query, scale, &mut scratch.attention, mean);
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
