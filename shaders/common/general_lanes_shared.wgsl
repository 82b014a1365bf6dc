// How the general-D logits read the particle tile: here, from workgroup memory
// (tile_x), every coordinate of the tile by every invocation. The portable path.
// `Stage::source_variant` (src/engine/gpu/shaders.rs) replaces this whole snippet with
// common/general_lanes_subgroup.wgsl where the adapter has subgroups. Both give the same
// values in the same order, so the results are the same bits.

// The invocation's built-in indices (an entry-point input of the general-D stages).
struct GeneralInvocation {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
}

// Column c of the particle block against `scaled` (this invocation's training point),
// added to the distance tile of all GENERAL_PARTICLES particles.
fn add_column(acc: DistanceTile, c: u32, scaled: vec4<f32>, invocation: GeneralInvocation) -> DistanceTile {
    return DistanceTile(
        add_distances(acc.g0, c, 0u, scaled),
        add_distances(acc.g1, c, 1u, scaled),
        add_distances(acc.g2, c, 2u, scaled),
        add_distances(acc.g3, c, 3u, scaled),
    );
}

// The tile's weighted sums of training-point column `column` for every particle of the
// tile, points in order (`owns`: the column is this invocation's; otherwise it loops zero
// times, so a software rasterizer skips the groups of invocations that have no column).
fn weighted_column_sums(
    first_point: u32,
    count: u32,
    column: u32,
    owns: bool,
    invocation: GeneralInvocation,
) -> DistanceTile {
    let columns = columns_of(run.dim);
    let points = select(0u, count, owns);
    var sums = DistanceTile(mat4x4<f32>(), mat4x4<f32>(), mat4x4<f32>(), mat4x4<f32>());
    // Point k's entry of the column, carried (see the logits in reduce_general).
    var at = first_point * columns + column;
    for (var k = 0u; k < points; k++) {
        let a = training[at];
        at += columns;
        sums.g0 = add_weighted(sums.g0, tile_weight[k * 4u], a);
        sums.g1 = add_weighted(sums.g1, tile_weight[k * 4u + 1u], a);
        sums.g2 = add_weighted(sums.g2, tile_weight[k * 4u + 2u], a);
        sums.g3 = add_weighted(sums.g3, tile_weight[k * 4u + 3u], a);
    }
    return sums;
}
