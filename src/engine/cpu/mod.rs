//! The CPU engine: the same stages as the shaders, in f32, one file per stage with the
//! shader's name (the scalar twins, the specification), and `fast.rs`, the SIMD kernel
//! that runs them for real, over particles in parallel with rayon.

pub mod approx;
pub mod attention;
pub mod cull;
pub mod deposit;
// The scalar twin of shaders/em_step.wgsl: the oracle of the fast kernel's unit tests.
#[cfg(test)]
pub mod em_step;
pub mod em_step_general;
pub mod fast;
pub mod heun_step;
pub mod init_noise;
pub mod lanes16;
pub mod logit_bounds;
pub mod nearest;
pub mod panels;
pub mod patch;
pub mod reduce_general;
pub mod score;

use crate::engine::records::{StepRecords, MAX_DIM, MAX_DIMENSION};
use crate::engine::{Backend, BatchWork, Engine, PosteriorTap, Problem};
use crate::error::{Error, Result};
use crate::isa::Isa;
use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Most particles per rayon work item (a multiple of `fast::MAX_LANES`).
const MAX_BLOCK: usize = 1024;

/// Particles per rayon work item: about 16 items per thread for load balance and
/// progress, a multiple of the SIMD chunk, at most `MAX_BLOCK`.
fn block_len(particles: usize) -> usize {
    let per_item = particles.div_ceil(rayon::current_num_threads().max(1) * 16);
    per_item
        .next_multiple_of(fast::MAX_LANES)
        .clamp(fast::MAX_LANES, MAX_BLOCK)
}

/// The cpu engine. `cull`: the D > 4 kernel skips the training points whose weights are
/// provably negligible (exact to 2^-25 of the softmax sum; see `cull.rs`). Off by
/// default: measured (loaded 2-core machine), it cost more than it saved: on i.i.d.
/// Gaussian sets, where it culls nothing, 0–10% slower at D = 64, N = 2,000 and 12–20%
/// at D = 784, N = 10,000; on the scikit-learn digits upsampled to 28×28 it culled 1.2%
/// of all pairs and 10.5% in the last ten steps, for no net gain (balls of 32 points are
/// wide there). Culling on or off gives different bits (the points are reordered), each
/// deterministic and batch-invariant.
#[derive(Debug)]
pub struct CpuEngine {
    /// Skip the (particle, point) pairs whose weights are provably below f32 resolution (D > 4).
    pub cull: bool,
    stats: PairStats,
    /// The training set of the last problem, in its kernel's layout: made once per
    /// dataset and reused by every segment of every batch.
    prepared: Option<PreparedTraining>,
}

/// The training set in the layout of the kernel that reads it, with what it was made
/// from: the dataset ([`Dataset::identity`](crate::model::dataset::Dataset::identity))
/// and, for the panels, whether they were clustered for culling.
#[derive(Debug)]
enum PreparedTraining {
    /// D <= 4: points padded to 4 lanes, for the SIMD engine.
    Lanes { dataset: u64, points: Vec<[f32; 4]> },
    /// D > 4: the attention kernel's panels.
    Panels {
        dataset: u64,
        clustered: bool,
        panels: Box<attention::TrainingPanels>,
    },
    /// A patch-local score: the dictionaries of each of its patch sizes in the attention
    /// kernel's layout.
    Patches {
        dataset: u64,
        dictionaries: Vec<patch::PatchDictionaries>,
    },
}

impl PreparedTraining {
    /// The layout of `problem`'s training set that `cull` asks for, from `slot` where it
    /// is already there, else made and left there.
    fn of<'s>(
        slot: &'s mut Option<PreparedTraining>,
        problem: &Problem,
        cull: bool,
    ) -> Result<&'s PreparedTraining> {
        let (dataset, dim) = (problem.dataset.identity(), problem.dataset.dim);
        if let Some(plan) = problem.patch {
            let geometries = plan.distinct();
            let fits = matches!(&*slot, Some(PreparedTraining::Patches { dataset: d, dictionaries })
                if *d == dataset
                    && dictionaries.iter().map(|d| d.geometry).eq(geometries.iter().copied()));
            if !fits {
                // The old layout goes first: the dictionaries may be large.
                *slot = None;
                *slot = Some(PreparedTraining::Patches {
                    dataset,
                    dictionaries: geometries
                        .into_iter()
                        .map(|g| patch::PatchDictionaries::new(g, problem.dataset))
                        .collect::<Result<_>>()?,
                });
            }
            return Ok(slot.as_ref().expect("prepared above"));
        }
        let fits = match &*slot {
            Some(PreparedTraining::Lanes { dataset: d, .. }) => *d == dataset && dim <= MAX_DIM,
            Some(PreparedTraining::Panels {
                dataset: d,
                clustered,
                ..
            }) => *d == dataset && dim > MAX_DIM && *clustered == cull,
            Some(PreparedTraining::Patches { .. }) | None => false,
        };
        if !fits {
            let points = &problem.dataset.points;
            *slot = Some(if dim <= MAX_DIM {
                PreparedTraining::Lanes {
                    dataset,
                    points: score::pad_training(points, dim),
                }
            } else {
                PreparedTraining::Panels {
                    dataset,
                    clustered: cull,
                    panels: Box::new(if cull {
                        attention::TrainingPanels::clustered(points, dim)
                    } else {
                        attention::TrainingPanels::new(points, dim)
                    }),
                }
            });
        }
        Ok(slot.as_ref().expect("prepared above"))
    }
}

/// (Particle, training point) pairs of the D > 4 kernel's score evaluations since the
/// engine was made: all of them, and those culled.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PairStats {
    pub pairs: u64,
    pub culled: u64,
}

impl Default for CpuEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuEngine {
    /// The engine with culling on (the default).
    pub fn new() -> Self {
        Self {
            cull: false,
            stats: PairStats::default(),
            prepared: None,
        }
    }

    /// The engine with culling on or off.
    pub fn with_culling(cull: bool) -> Self {
        Self {
            cull,
            ..Self::new()
        }
    }
}

/// A short description of this CPU for summaries: model name and thread count.
pub fn cpu_name() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    format!("{model}, {} threads", rayon::current_num_threads())
}

/// Run `job` (which counts finished particles in the counter it is given) on a worker
/// thread while the calling thread turns that count into step progress for `on_step`.
pub(crate) fn run_with_progress<F>(
    total_particles: usize,
    steps: usize,
    on_step: &mut dyn FnMut(usize),
    job: F,
) where
    F: FnOnce(&AtomicUsize) + Send,
{
    let done = AtomicUsize::new(0);
    let (finished_tx, finished_rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            job(&done);
            // Wake the reporting thread at once: short batches must not wait a tick.
            let _ = finished_tx.send(());
        });
        let mut reported = 0;
        let tick = std::time::Duration::from_millis(50);
        // Disconnected (the job panicked) ends the loop too.
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = finished_rx.recv_timeout(tick) {
            let now = done.load(Ordering::Relaxed) * steps / total_particles.max(1);
            if now > reported {
                reported = now;
                on_step(now);
            }
        }
        if let Err(panic) = worker.join() {
            std::panic::resume_unwind(panic);
        }
    });
    on_step(steps);
}

/// Run `item` over the particles of `work` in work items of `block` particles, rayon in
/// parallel, with step progress for `work.on_step` and Ctrl-C: `item` gets the work item's
/// index, its slice of `work.initial` (where the batch starts from the initial noise) and
/// of `work.state`, and runs them through all the steps of `work.steps`. Once
/// `work.cancel` is set the items not yet started are skipped and the batch returns
/// `Error::Interrupted`. The engines' paths share this so that their work items, progress
/// and cancelling stay the same.
pub(crate) fn run_blocks<F>(dim: usize, block: usize, work: BatchWork, item: F) -> Result<()>
where
    F: Fn(usize, Option<&mut [f32]>, &mut [f32]) + Sync,
{
    let BatchWork {
        initial,
        state,
        steps,
        cancel,
        mut on_step,
        ..
    } = work;
    let n = state.len() / dim;
    let skipped = AtomicBool::new(false);
    let start = steps.start;
    let job = |c: usize, initial: Option<&mut [f32]>, state: &mut [f32], done: &AtomicUsize| {
        if cancel.load(Ordering::Relaxed) {
            skipped.store(true, Ordering::Relaxed);
            return;
        }
        item(c, initial, state);
        done.fetch_add(state.len() / dim, Ordering::Relaxed);
    };
    run_with_progress(
        n,
        steps.len(),
        &mut |k| {
            if let Some(on_step) = on_step.as_mut() {
                on_step(start + k)
            }
        },
        |done| match initial {
            Some(initial) => initial
                .par_chunks_mut(block * dim)
                .zip(state.par_chunks_mut(block * dim))
                .enumerate()
                .for_each(|(c, (initial, state))| job(c, Some(initial), state, done)),
            None => state
                .par_chunks_mut(block * dim)
                .enumerate()
                .for_each(|(c, state)| job(c, None, state, done)),
        },
    );
    if skipped.load(Ordering::Relaxed) {
        return Err(Error::Interrupted("interrupted".into()));
    }
    Ok(())
}

impl Engine for CpuEngine {
    fn backend(&self) -> Backend {
        Backend::Cpu
    }

    fn device_name(&self) -> String {
        // An invalid MEMODIFF_CPU_ISA is reported by the first batch; the name says so.
        let isa = Isa::selected().map_or("MEMODIFF_CPU_ISA invalid", Isa::name);
        format!("{} ({isa})", cpu_name())
    }

    fn max_batch_particles(&self, _dim: usize) -> usize {
        usize::MAX
    }

    fn pair_counts(&self) -> Option<(u64, u64)> {
        (self.cull && self.stats.pairs > 0).then_some((self.stats.pairs, self.stats.culled))
    }

    /// Both kernels read the softmax state they evaluate the score with: the D <= 4 SIMD
    /// engine its lanes', the D > 4 attention kernel each row's `1 / weight_sum`.
    fn posterior_tap(&self, problem: &Problem) -> bool {
        // A patch score evaluates no posterior over whole training points.
        problem.patch.is_none() && (1..=MAX_DIMENSION).contains(&problem.dataset.dim)
    }

    fn advance_steps(
        &mut self,
        problem: &Problem,
        work: BatchWork,
        tap: Option<&mut PosteriorTap>,
    ) -> Result<()> {
        // The SIMD engine for D <= 4, the fused attention kernel (em and heun) above.
        let (cull, stats, prepared) = (self.cull, &mut self.stats, &mut self.prepared);
        let dim = problem.dataset.dim;
        if dim == 0 || dim > MAX_DIMENSION {
            return Err(Error::invalid(
                "dimension",
                format!(
                    "the cpu engine supports 1..={MAX_DIMENSION} dimensions, the dataset has {dim}"
                ),
            ));
        }
        if problem.dataset.is_empty() {
            return Err(Error::invalid("dataset", "the training set is empty"));
        }
        match PreparedTraining::of(prepared, problem, cull)? {
            PreparedTraining::Patches { dictionaries, .. } => {
                // The posterior tap is the empirical score's (posterior_tap is false).
                let _ = tap;
                patch::advance_patch(problem, work, dictionaries)
            }
            PreparedTraining::Panels { panels, .. } => {
                advance_attention(problem, work, tap, (panels.as_ref(), stats))
            }
            PreparedTraining::Lanes { points, .. } => advance_fast(problem, work, tap, points),
        }
    }
}

/// The D <= 4 path: the SIMD engine (`fast.rs`) on `training` (padded to 4 lanes, prepared
/// once per dataset) over work items of `block_len` particles,
/// filling `tap` where given.
fn advance_fast(
    problem: &Problem,
    work: BatchWork,
    tap: Option<&mut PosteriorTap>,
    training: &[[f32; 4]],
) -> Result<()> {
    {
        let dim = problem.dataset.dim;
        let (first_particle, steps) = (work.first_particle, work.steps.clone());
        let particles = work.state.len() / dim;
        // The SIMD engine runs records: one per em step, or the halves of each heun step.
        let plan = StepRecords::new(
            problem.sampler,
            &problem.schedule,
            problem.steps,
            steps.clone(),
        );
        let fast_steps: Vec<fast::FastStep> = plan
            .records
            .iter()
            .map(fast::FastStep::from_record)
            .collect();
        let kernel = fast::Kernel {
            dim,
            training,
            steps: &fast_steps,
            key: crate::model::philox::seed_key(problem.seed),
            initial_std: problem.initial_std as f32,
        };
        let isa = Isa::selected()?;
        let block = block_len(particles);
        let mut slots = vec![None; fast_steps.len()];
        // Each work item's piece of the tap's buffers (row-major, so consecutive rows are
        // one contiguous piece), taken by the item that owns those rows.
        type Piece<'t> = std::sync::Mutex<Option<(&'t mut [f32], &'t mut [u32])>>;
        let (records, tap_rows, pieces): (usize, usize, Vec<Piece>) = match tap {
            Some(tap) => {
                tap.check();
                assert!(tap.rows <= particles, "tap rows beyond the batch");
                for (j, &k) in tap.steps.iter().enumerate() {
                    if steps.contains(&k) {
                        // A tapped step evaluates its score at its first record (em: its
                        // only one; heun: the predictor).
                        slots[plan.first[k - steps.start]] = Some(j);
                    }
                }
                let records = tap.steps.len();
                let pieces = tap
                    .max_weight
                    .chunks_mut((block * records).max(1))
                    .zip(tap.argmax.chunks_mut((block * records).max(1)))
                    .map(|p| std::sync::Mutex::new(Some(p)))
                    .collect();
                (records, tap.rows, pieces)
            }
            None => (0, 0, Vec::new()),
        };
        // A work item runs its particles through all the steps of the range: Ctrl-C stops
        // the batch at the next work item.
        run_blocks(dim, block, work, |c, initial, state| {
            let first = first_particle + (c * block) as u64;
            let piece = pieces
                .get(c)
                .and_then(|p| p.lock().expect("tap piece").take());
            match piece {
                Some((max_weight, argmax)) if records > 0 => {
                    let mut chunk_tap = fast::ChunkTap {
                        slots: &slots,
                        records,
                        rows: tap_rows.saturating_sub(c * block).min(block),
                        max_weight,
                        argmax,
                    };
                    fast::advance_tapped(&kernel, isa, first, initial, state, Some(&mut chunk_tap));
                }
                _ => fast::advance(&kernel, isa, first, initial, state),
            }
        })
    }
}

/// Particles per rayon work item of the D > 4 kernel: about 4 items per thread (each
/// item streams the training set once per step, so fewer, larger items read less), a
/// whole number of register tiles, at most 128 particles (their rows, weights and
/// accumulators stay in L2).
fn attention_block_len(particles: usize, isa: Isa) -> usize {
    let r = attention::tile_rows(isa);
    particles
        .div_ceil(rayon::current_num_threads().max(1) * 4)
        .next_multiple_of(r)
        .clamp(r, 128usize.next_multiple_of(r))
}

/// The D > 4 paths (em and heun, `problem.sampler`) on the fused attention kernel, with
/// an optional posterior tap. Rayon over work items; each item's particles start from
/// their initial noise (`init_noise_into`, the shader's loop over lane blocks) or their
/// saved positions, and run through all steps of the range.
fn advance_attention(
    problem: &Problem,
    work: BatchWork,
    tap: Option<&mut PosteriorTap>,
    (training, stats): (&attention::TrainingPanels, &mut PairStats),
) -> Result<()> {
    let dim = problem.dataset.dim;
    let (first_particle, steps) = (work.first_particle, work.steps.clone());
    let pairs = std::sync::atomic::AtomicU64::new(0);
    let culled = std::sync::atomic::AtomicU64::new(0);
    // The updates of the range and, per tapped step, the index of its (first) update.
    let StepRecords {
        records: updates,
        first: first_update_of_step,
    } = StepRecords::new(
        problem.sampler,
        &problem.schedule,
        problem.steps,
        steps.clone(),
    );
    let (tap_records, tap_rows): (Vec<(usize, usize)>, usize) = match &tap {
        Some(tap) => (
            tap.steps
                .iter()
                .enumerate()
                .filter(|(_, k)| steps.contains(k))
                .map(|(record, k)| (record, first_update_of_step[k - steps.start]))
                .collect(),
            tap.rows,
        ),
        None => (Vec::new(), 0),
    };
    let records = tap.as_ref().map_or(0, |t| t.steps.len());
    let tap_out = tap.map(|t| {
        t.check();
        std::sync::Mutex::new((&mut *t.max_weight, &mut *t.argmax))
    });
    let key = crate::model::philox::seed_key(problem.seed);
    let isa = Isa::selected()?;
    let initial_std = problem.initial_std as f32;
    let block = attention_block_len(work.state.len() / dim, isa);
    let result = run_blocks(dim, block, work, |c, initial, rows| {
        let first_row = c * block;
        let first = first_particle + first_row as u64;
        if let Some(initial) = initial {
            for (r, x) in initial.chunks_exact_mut(dim).enumerate() {
                init_noise::init_noise_into(problem.seed, first + r as u64, initial_std, x);
            }
            rows.copy_from_slice(initial);
        }
        let particles = rows.len() / dim;
        let mut scratch = attention::Scratch::new(particles, attention::tile_rows(isa), training);
        let mut partials = vec![0f32; rows.len()];
        let item_tap_rows = tap_rows.saturating_sub(first_row).min(particles);
        let tapped_updates: Vec<usize> = tap_records.iter().map(|&(_, u)| u).collect();
        let mut local = vec![(f32::NAN, u32::MAX); tapped_updates.len() * item_tap_rows];
        let item_tap = (item_tap_rows > 0 && !tapped_updates.is_empty())
            .then_some((&tapped_updates[..], &mut local[..]));
        let item_steps = attention::ItemSteps {
            updates: &updates,
            key,
            first_particle: first,
        };
        attention::advance(
            isa,
            training,
            rows,
            &mut partials,
            item_steps,
            &mut scratch,
            item_tap,
        );
        pairs.fetch_add(scratch.pairs, Ordering::Relaxed);
        culled.fetch_add(scratch.culled_pairs, Ordering::Relaxed);
        if let (Some(out), true) = (&tap_out, item_tap_rows > 0) {
            // The tap's layout is row-major: row r's value at steps[record] sits at
            // r * records + record.
            let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
            let (max_weight, argmax) = &mut *out;
            for (j, &(record, _)) in tap_records.iter().enumerate() {
                for r in 0..item_tap_rows {
                    let (w, i) = local[j * item_tap_rows + r];
                    let at = (first_row + r) * records + record;
                    max_weight[at] = w;
                    argmax[at] = i;
                }
            }
        }
    });
    stats.pairs += pairs.into_inner();
    stats.culled += culled.into_inner();
    result
}
