// How the general-D logits read the particle tile: with subgroup broadcasts (replaces
// common/general_lanes_shared.wgsl where the adapter has subgroups of 8 to 64
// invocations, wgpu::Features::SUBGROUP). Column c of the block is
// 16 vec4 of workgroup memory (4 coordinates x 4 groups of 4 particles); lanes 0..7 of
// each subgroup load two of them, and every invocation takes the 16 from those lanes by
// broadcasts instead of 16 loads of its own. Where workgroup loads are expensive per
// invocation (lavapipe runs them lane by lane) that is 8 times fewer; on hardware a
// broadcast is a register move. Same values, same order as the portable path.

struct GeneralInvocation {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
}

fn add_column(acc: DistanceTile, c: u32, scaled: vec4<f32>, invocation: GeneralInvocation) -> DistanceTile {
    // Lane l (of 8: subgroups of 16 or more repeat the pattern) holds entries 2 l and
    // 2 l + 1 of the column: entry 4 * coordinate + group.
    let at = c * 16u + 2u * (invocation.lane % 8u);
    let even = tile_x[at];
    let odd = tile_x[at + 1u];
    let x0 = subgroupBroadcast(even, 0u);
    let x1 = subgroupBroadcast(odd, 0u);
    let x2 = subgroupBroadcast(even, 1u);
    let x3 = subgroupBroadcast(odd, 1u);
    let x4 = subgroupBroadcast(even, 2u);
    let x5 = subgroupBroadcast(odd, 2u);
    let x6 = subgroupBroadcast(even, 3u);
    let x7 = subgroupBroadcast(odd, 3u);
    let x8 = subgroupBroadcast(even, 4u);
    let x9 = subgroupBroadcast(odd, 4u);
    let x10 = subgroupBroadcast(even, 5u);
    let x11 = subgroupBroadcast(odd, 5u);
    let x12 = subgroupBroadcast(even, 6u);
    let x13 = subgroupBroadcast(odd, 6u);
    let x14 = subgroupBroadcast(even, 7u);
    let x15 = subgroupBroadcast(odd, 7u);
    return DistanceTile(
        add_distances_of(acc.g0, x0, x4, x8, x12, scaled),
        add_distances_of(acc.g1, x1, x5, x9, x13, scaled),
        add_distances_of(acc.g2, x2, x6, x10, x14, scaled),
        add_distances_of(acc.g3, x3, x7, x11, x15, scaled),
    );
}

// The same sums, the weights of two points at a time taken from lanes 0..7 (one load
// each) by broadcasts instead of 8 workgroup loads per invocation. The loop runs while
// any lane of the subgroup owns a column (a subgroup-uniform bound, as broadcasts need);
// lanes without one compute on a clamped column and their sums are never stored.
fn weighted_column_sums(
    first_point: u32,
    count: u32,
    column: u32,
    owns: bool,
    invocation: GeneralInvocation,
) -> DistanceTile {
    let columns = columns_of(run.dim);
    let points = select(0u, count, subgroupAny(owns));
    var sums = DistanceTile(mat4x4<f32>(), mat4x4<f32>(), mat4x4<f32>(), mat4x4<f32>());
    var k = 0u;
    // Point k's entry of the column, carried (see the logits in reduce_general).
    var at = first_point * columns + column;
    for (; k + 2u <= points; k += 2u) {
        // Entries 4 k .. 4 k + 7: groups 0..3 of point k, then of point k + 1.
        let mine = tile_weight[k * 4u + invocation.lane % 8u];
        let a = training[at];
        sums.g0 = add_weighted(sums.g0, subgroupBroadcast(mine, 0u), a);
        sums.g1 = add_weighted(sums.g1, subgroupBroadcast(mine, 1u), a);
        sums.g2 = add_weighted(sums.g2, subgroupBroadcast(mine, 2u), a);
        sums.g3 = add_weighted(sums.g3, subgroupBroadcast(mine, 3u), a);
        let b = training[at + columns];
        at += 2u * columns;
        sums.g0 = add_weighted(sums.g0, subgroupBroadcast(mine, 4u), b);
        sums.g1 = add_weighted(sums.g1, subgroupBroadcast(mine, 5u), b);
        sums.g2 = add_weighted(sums.g2, subgroupBroadcast(mine, 6u), b);
        sums.g3 = add_weighted(sums.g3, subgroupBroadcast(mine, 7u), b);
    }
    if (k < points) {
        let a = training[at];
        sums.g0 = add_weighted(sums.g0, tile_weight[k * 4u], a);
        sums.g1 = add_weighted(sums.g1, tile_weight[k * 4u + 1u], a);
        sums.g2 = add_weighted(sums.g2, tile_weight[k * 4u + 2u], a);
        sums.g3 = add_weighted(sums.g3, tile_weight[k * 4u + 3u], a);
    }
    return sums;
}
