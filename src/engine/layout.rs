//! How the engines lay out training points for their kernels, shared by the GPU engine
//! (what it uploads) and its CPU twins (what they read), so that neither side imports the
//! other: points padded with zeros to whole columns of 4 coordinates, as f32.

/// Coordinates a point of dimension `dim` takes when padded: `4 ceil(dim / 4)`.
pub fn padded_width(dim: usize) -> usize {
    dim.div_ceil(4) * 4
}

/// Points (row-major, dimension `dim`) padded with zeros to `padded_width(dim)`, as f32.
pub fn pad_general(points: &[f64], dim: usize) -> Vec<f32> {
    let width = padded_width(dim);
    let mut out = vec![0f32; points.len() / dim * width];
    for (row, padded) in points.chunks(dim).zip(out.chunks_mut(width)) {
        for (o, v) in padded.iter_mut().zip(row) {
            *o = *v as f32;
        }
    }
    out
}
