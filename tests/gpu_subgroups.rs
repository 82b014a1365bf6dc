//! The general-D kernels' two ways of reading the particle tile (subgroup broadcasts
//! where the adapter has subgroups, workgroup loads otherwise: common/general_lanes_*.wgsl)
//! give the same bits: the same values in the same arithmetic order. Lavapipe has
//! subgroups (of 8), so CI runs both paths; an adapter without them (wgpu's GL backend)
//! runs only the portable path, which the other GPU tests cover.

mod common;

use common::{gpu_engine, scattered};
use memodiff::testing::engine::gpu::GpuEngine;
use memodiff::testing::engine::{BatchWork, Engine, PosteriorTap, Problem, SamplerKind};
use memodiff::testing::model::schedule::{reverse_steps, VpSchedule};

/// Final positions and, at a few steps, the posterior tap of `n` particles.
fn run_once(gpu: &mut GpuEngine, problem: &Problem, n: usize) -> (Vec<f32>, Vec<f32>, Vec<u32>) {
    let dim = problem.dataset.dim;
    let taps = [0usize, 50, 97];
    let rows = n - 3;
    let (mut initial, mut state) = (vec![0f32; n * dim], vec![0f32; n * dim]);
    let (mut w, mut a) = (vec![0f32; rows * taps.len()], vec![0u32; rows * taps.len()]);
    gpu.advance_batch_tapped(
        problem,
        BatchWork::new(7, Some(&mut initial), &mut state, 0..problem.steps.len()),
        &mut PosteriorTap {
            steps: &taps,
            rows,
            max_weight: &mut w,
            argmax: &mut a,
        },
    )
    .unwrap();
    (state, w, a)
}

#[test]
fn subgroup_and_portable_general_kernels_give_the_same_bits() {
    let Some(mut gpu) = gpu_engine("subgroup_and_portable_general_kernels_give_the_same_bits")
    else {
        return;
    };
    if !gpu.set_subgroups(true) {
        eprintln!(
            "SKIPPED: the adapter {} has no subgroups of 8 to 64 invocations; only the \
             portable path runs here",
            gpu.device_name()
        );
        return;
    }
    let schedule = VpSchedule::default();
    let steps = reverse_steps(&schedule, 100);
    // Ragged columns (17), one particle block (64), several blocks (200: 50 columns, 4
    // blocks of 16); both samplers; chunked so the state crosses dispatches.
    for (dim, n_train, n, sampler, chunk) in [
        (17usize, 300usize, 37usize, SamplerKind::Em, Some(256)),
        (64, 200, 40, SamplerKind::Heun, None),
        (200, 150, 20, SamplerKind::Em, None),
    ] {
        let dataset = scattered(n_train, dim, 3 + dim as u64);
        let problem = Problem {
            dataset: &dataset,
            steps: &steps,
            seed: 11,
            initial_std: schedule.sigma2(1.0).sqrt(),
            schedule,
            sampler,
            patch: None,
        };
        gpu.set_chunk_points(chunk);
        let mut results = Vec::new();
        for on in [true, false] {
            assert_eq!(gpu.set_subgroups(on), on);
            results.push(run_once(&mut gpu, &problem, n));
        }
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let (sub, portable) = (&results[0], &results[1]);
        assert_eq!(bits(&sub.0), bits(&portable.0), "D = {dim}: positions");
        assert_eq!(bits(&sub.1), bits(&portable.1), "D = {dim}: tapped weights");
        assert_eq!(sub.2, portable.2, "D = {dim}: tapped argmax");
        assert!(sub.0.iter().all(|x| x.is_finite()));
        // The score stage too.
        let points = &sub.0[..n * dim];
        let mut scores = Vec::new();
        for on in [true, false] {
            gpu.set_subgroups(on);
            scores.push(
                gpu.evaluate_score(&dataset, &schedule, 0.3, points)
                    .unwrap(),
            );
        }
        assert_eq!(bits(&scores[0]), bits(&scores[1]), "D = {dim}: scores");
    }
    gpu.set_chunk_points(None);
}
