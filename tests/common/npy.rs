//! Hand-made `.npy` files for the reader tests: the header text is written out here, not
//! by the library's writer, so a test can give the readers any dict, lying or not.

use std::path::Path;

/// A v1.0 `.npy` file with header text `dict` (padded to 64 bytes) followed by `data`.
pub fn with_dict(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut header = dict.to_string();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// The header dict of a little-endian float32, C-order array; `shape` is the tuple's text,
/// say "(3, 2)".
pub fn f4_dict(shape: &str) -> String {
    format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}")
}

/// Write `values` as a float32 `.npy` of the given shape.
pub fn write_f32(path: &Path, shape: &[usize], values: &[f32]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let bytes = with_dict(&f4_dict(&format!("({},)", dims.join(", "))), &data);
    std::fs::write(path, bytes).unwrap();
}

/// Write `values` as a `.npy` of dtype `descr` (`|u1`, `<i8`, ...) and the given shape;
/// `bytes` are the values already encoded.
pub fn write_typed(path: &Path, descr: &str, shape: &[usize], bytes: &[u8]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let dict = format!(
        "{{'descr': '{descr}', 'fortran_order': False, 'shape': ({},), }}",
        dims.join(", ")
    );
    std::fs::write(path, with_dict(&dict, bytes)).unwrap();
}
