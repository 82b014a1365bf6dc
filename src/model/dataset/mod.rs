//! Training sets: built-in ones, `.npy`/`.csv` loading and validation.

pub mod images;
pub mod synthetic;

use std::path::Path;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::io::{parse_npy, read_npy, NpyArray, NpyReadError, NpyValues};

/// What `Dataset::parse` accepts, for error messages.
const ACCEPTED: &str = "expected circle:N, gaussian:N:D[:sigma], two-gaussians:N:D[:sigma], \
                        moons:N[:noise], spiral:N, grid:K, a .npy file (N x D array, or N \
                        images N x H x W [x C], of float32/float64) or a .csv file (N rows \
                        of D comma-separated numbers)";

/// A finite training set: `n` points in `R^dim`, row-major, f64 (converted to f32 for the
/// f32 engines).
#[derive(Debug, Clone)]
pub struct Dataset {
    /// How the user named it (`circle:8`, a path), for messages and run.json.
    pub name: String,
    /// Dimension D of each point.
    pub dim: usize,
    /// Not to be changed once the dataset is made (build a new one instead): the engines
    /// keep the layouts they prepare from these points by [`Dataset::identity`].
    pub points: Vec<f64>,
    /// For image training sets (`.npy` of shape (N, H, W) or (N, H, W, C)): the shape
    /// (H, W, C) of one image, flattened row-major into `dim = H W C` coordinates.
    pub image_shape: Option<ImageShape>,
    /// The values are a `uint8` file's 0..255, to be mapped to a range by
    /// [`Dataset::scaled`] (`--scale`) before a run uses them.
    pub uint8: bool,
    /// See [`Dataset::identity`].
    identity: u64,
}

/// Equal datasets have equal names, dimensions, points and image shapes, whatever their
/// identities.
impl PartialEq for Dataset {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.dim == other.dim
            && self.points == other.points
            && self.image_shape == other.image_shape
            && self.uint8 == other.uint8
    }
}

/// The shape of one image of an image training set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageShape {
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
    /// Channels per pixel (1 for (N, H, W) arrays).
    pub channels: usize,
}

/// Largest number of values (N × D) of any training set, generated or read: 2^28 f64 =
/// 2 GiB. Generators check it before allocating (`check_size`), the readers through
/// their bounded input.
pub const MAX_DATASET_VALUES: usize = 1 << 28;

/// Largest `.csv` training set in bytes (4 GiB), checked before it is read.
pub const MAX_CSV_BYTES: u64 = 1 << 32;

/// Longest line of a `.csv` training set in bytes (1 MiB: 4096 coordinates of up to 256
/// characters each).
pub const MAX_CSV_LINE: usize = 1 << 20;

/// What a path that is not a regular file is, for messages.
fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    let kind = meta.file_type();
    if kind.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if kind.is_char_device() {
            return "a character device";
        }
        if kind.is_block_device() {
            return "a block device";
        }
        if kind.is_socket() {
            return "a socket";
        }
    }
    "not a regular file"
}

/// Refuse a set of `n` points of dimension `dim` whose N × D exceeds
/// [`MAX_DATASET_VALUES`], before anything is allocated; `spec` names it.
pub(crate) fn check_size(spec: &str, n: usize, dim: usize) -> Result<()> {
    match n.checked_mul(dim) {
        Some(values) if values <= MAX_DATASET_VALUES => Ok(()),
        _ => Err(Error::invalid(
            "dataset spec",
            format!(
                "{spec:?}: N × D = {n} × {dim} exceeds the limit of {MAX_DATASET_VALUES} \
                 values (2 GiB of f64)"
            ),
        )),
    }
}

impl Dataset {
    /// Validate and wrap row-major points.
    pub fn new(name: impl Into<String>, dim: usize, points: Vec<f64>) -> Result<Self> {
        let name = name.into();
        let bad = |message: String| Error::Dataset {
            source_name: name.clone(),
            message,
        };
        if dim == 0 {
            return Err(bad("points have dimension 0".into()));
        }
        if points.is_empty() {
            return Err(bad("has no points".into()));
        }
        if !points.len().is_multiple_of(dim) {
            return Err(bad(format!(
                "{} values do not form rows of dimension {dim}",
                points.len()
            )));
        }
        if points.len() > MAX_DATASET_VALUES {
            return Err(bad(format!(
                "{} values exceed the limit of {MAX_DATASET_VALUES} (2 GiB of f64)",
                points.len()
            )));
        }
        if let Some(k) = points.iter().position(|v| !v.is_finite()) {
            return Err(bad(format!(
                "point {} coordinate {} is {} (all values must be finite)",
                k / dim,
                k % dim,
                points[k]
            )));
        }
        // The engines compute in f32: a value beyond f32's range, or a point whose squared
        // norm |y|^2 (the potentials' distances, the CPU engine's norms) is, gives inf/NaN.
        if let Some(k) = points.iter().position(|v| v.abs() > f32::MAX as f64) {
            return Err(bad(format!(
                "point {} coordinate {} is {:e}, beyond the float32 range (±{:e}) the \
                 engines compute in; scale the data",
                k / dim,
                k % dim,
                points[k],
                f32::MAX
            )));
        }
        if let Some((i, n2)) = points
            .chunks_exact(dim)
            .map(|p| p.iter().map(|&v| (v as f32 as f64).powi(2)).sum::<f64>())
            .enumerate()
            .find(|&(_, n2)| n2 > f32::MAX as f64)
        {
            return Err(bad(format!(
                "point {i} has squared norm {n2:e}, beyond the float32 range (±{:e}) in \
                 which the engines compute squared distances; scale the data",
                f32::MAX
            )));
        }
        // Each dataset made gets a new identity; a clone keeps it (same points).
        static NEXT_IDENTITY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Ok(Self {
            name,
            dim,
            points,
            image_shape: None,
            uint8: false,
            identity: NEXT_IDENTITY.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// A number no other dataset made by this process has (a clone shares it): what the
    /// engines key the training layouts they prepare once per run by, instead of
    /// comparing every point on every call.
    pub fn identity(&self) -> u64 {
        self.identity
    }

    /// `n` points evenly spaced on the unit circle, angles `2 pi k / n`.
    pub fn circle(n: usize) -> Result<Self> {
        if n == 0 {
            return Err(Error::invalid("dataset", "circle:N needs N >= 1"));
        }
        check_size(&format!("circle:{n}"), n, 2)?;
        let points = (0..n)
            .flat_map(|k| {
                let angle = std::f64::consts::TAU * k as f64 / n as f64;
                [angle.cos(), angle.sin()]
            })
            .collect();
        Self::new(format!("circle:{n}"), 2, points)
    }

    /// Parse a dataset spec with the default data seed 0 (see [`Dataset::parse_seeded`]).
    pub fn parse(spec: &str) -> Result<Self> {
        Self::parse_seeded(spec, 0)
    }

    /// Parse a dataset spec: `circle:N`, a synthetic set (`gaussian:N:D[:sigma]`,
    /// `two-gaussians:N:D[:sigma]`, `moons:N[:noise]`, `spiral:N`, `grid:K`; random ones
    /// are drawn with `data_seed`), a path ending in `.npy`, or a path ending in `.csv`.
    pub fn parse_seeded(spec: &str, data_seed: u64) -> Result<Self> {
        if let Some(generated) = crate::model::dataset::synthetic::generate(spec, data_seed) {
            let generated = generated?;
            // A random set is named with its data seed: merge and resume compare names.
            let name = if generated.random {
                format!("{spec} (data seed {data_seed})")
            } else {
                spec.to_string()
            };
            return Self::new(name, generated.dim, generated.points);
        }
        if spec == images::DIGITS {
            return Self::from_npy(spec, &images::digits_file()?);
        }
        if let Some(n) = spec.strip_prefix("circle:") {
            return match n.trim().parse::<usize>() {
                Ok(n) if n >= 1 => Self::circle(n),
                _ => Err(Error::invalid(
                    "dataset",
                    format!("circle:N needs an integer N >= 1, got {spec:?}"),
                )),
            };
        }
        let path = Path::new(spec);
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ext.eq_ignore_ascii_case("npy") {
            Self::from_npy(spec, path)
        } else if ext.eq_ignore_ascii_case("csv") {
            Self::from_csv(spec, path)
        } else if let Ok(meta) = std::fs::metadata(path) {
            Err(Error::invalid(
                "dataset",
                format!(
                    "{spec:?} is {}, not a training set; {ACCEPTED}",
                    if meta.is_file() {
                        "a file without a .npy or .csv extension"
                    } else {
                        file_kind(&meta)
                    }
                ),
            ))
        } else {
            Err(Error::invalid(
                "dataset",
                format!("{spec:?} is not a known dataset; {ACCEPTED}"),
            ))
        }
    }

    /// A (N, D) or (N,) float32/float64 C-order `.npy` array.
    fn from_npy(spec: &str, path: &Path) -> Result<Self> {
        let array = read_npy(path).map_err(|e| match e {
            NpyReadError::Io(e) => Error::io(path, e),
            NpyReadError::Format(message) => Error::Dataset {
                source_name: spec.to_string(),
                message,
            },
        })?;
        Self::from_npy_array(spec, array)
    }

    /// [`Dataset::parse`] of a `.npy` file whose bytes are already in memory; `name` is
    /// used in messages. Never panics; allocates at most about three times `bytes.len()`.
    pub fn from_npy_bytes(name: &str, bytes: &[u8]) -> Result<Self> {
        let array = parse_npy(bytes).map_err(|e| Error::Dataset {
            source_name: name.to_string(),
            message: match e {
                NpyReadError::Io(e) => e.to_string(),
                NpyReadError::Format(m) => m,
            },
        })?;
        Self::from_npy_array(name, array)
    }

    fn from_npy_array(spec: &str, array: NpyArray) -> Result<Self> {
        let bad = |message: String| Error::Dataset {
            source_name: spec.to_string(),
            message,
        };
        let image_shape = match array.shape[..] {
            [_, height, width] => Some(ImageShape {
                height,
                width,
                channels: 1,
            }),
            [_, height, width, channels] => Some(ImageShape {
                height,
                width,
                channels,
            }),
            _ => None,
        };
        let dim = match (&array.shape[..], image_shape) {
            ([_, d], _) => *d,
            ([_], _) => 1,
            (_, Some(image)) => image
                .height
                .checked_mul(image.width)
                .and_then(|hw| hw.checked_mul(image.channels))
                .ok_or_else(|| bad("image shape overflows".into()))?,
            _ => {
                return Err(bad(format!(
                    "array has shape {}; expected (N points, D coordinates), or N images \
                     (N, H, W) or (N, H, W, C)",
                    crate::io::shape_text(&array.shape)
                )))
            }
        };
        if dim == 0 {
            return Err(bad(format!(
                "array has shape {}: points have dimension 0",
                crate::io::shape_text(&array.shape)
            )));
        }
        let (points, uint8) = match array.values {
            NpyValues::F32(v) => (v.into_iter().map(f64::from).collect(), false),
            NpyValues::F64(v) => (v, false),
            NpyValues::U8(v) => (v.into_iter().map(f64::from).collect(), true),
            NpyValues::I64(_) => {
                return Err(bad(
                    "dtype is an integer type other than uint8, which is not supported for \
                     training data (expected float32, float64, or uint8 images with --scale)"
                        .into(),
                ))
            }
        };
        let mut dataset = Self::new(spec, dim, points)?;
        dataset.image_shape = image_shape;
        dataset.uint8 = uint8;
        Ok(dataset)
    }

    /// N rows of D comma-separated numbers, with an optional header line of names.
    fn from_csv(spec: &str, path: &Path) -> Result<Self> {
        use std::io::Read;
        let bad = |message: String| Error::Dataset {
            source_name: spec.to_string(),
            message,
        };
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        if !meta.is_file() {
            return Err(bad(format!("is {}, not a file", file_kind(&meta))));
        }
        if meta.len() > MAX_CSV_BYTES {
            return Err(bad(format!(
                "is {} bytes, more than the {MAX_CSV_BYTES} a .csv training set may have",
                meta.len()
            )));
        }
        // Bounded even if the file grows while it is read.
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.take(MAX_CSV_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(path, e))?;
        if bytes.len() as u64 > MAX_CSV_BYTES {
            return Err(bad(format!(
                "is more than the {MAX_CSV_BYTES} bytes a .csv training set may have"
            )));
        }
        Self::from_csv_bytes(spec, &bytes)
    }

    /// [`Dataset::parse`] of a `.csv` file whose bytes are already in memory; `name` is
    /// used in messages. One pass over the lines, nothing per line is kept: never panics,
    /// allocates at most about four times `bytes.len()` (the f64 values).
    pub fn from_csv_bytes(name: &str, bytes: &[u8]) -> Result<Self> {
        let bad = |message: String| Error::Dataset {
            source_name: name.to_string(),
            message,
        };
        let text = std::str::from_utf8(bytes)
            .map_err(|e| bad(format!("is not UTF-8 text (byte {})", e.valid_up_to())))?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        // At most one value per field, and a value takes at least one character and a
        // separator: the values are allocated once, at most 8 bytes per 2 bytes of text.
        let separators = bytes.iter().filter(|&&c| c == b',' || c == b'\n').count();
        let fields_bound = (1 + separators).min(1 + bytes.len() / 2);
        let mut points: Vec<f64> = Vec::with_capacity(fields_bound);
        let is_number = |f: &str| f.parse::<f64>().is_ok();
        let mut dim = None;
        // Blank lines are allowed only after the last row: remember the first blank line
        // and complain if a row follows it.
        let mut first_blank = None;
        for (i, line) in text.split('\n').enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            let line_no = i + 1;
            if line.trim().is_empty() {
                first_blank.get_or_insert(line_no);
                continue;
            }
            if line.len() > MAX_CSV_LINE {
                return Err(bad(format!(
                    "line {line_no} is longer than {MAX_CSV_LINE} bytes, far more than one \
                     point of the largest dimension takes"
                )));
            }
            if line.trim_start().starts_with('#') {
                continue; // a comment line, as NumPy's loadtxt skips them
            }
            if let Some(blank) = first_blank {
                return Err(bad(format!(
                    "line {blank} is blank (blank lines are only allowed at the end)"
                )));
            }
            let first_row = dim.is_none();
            let columns = 1 + line.bytes().filter(|&c| c == b',').count();
            match dim {
                None => dim = Some(columns),
                Some(d) if d != columns => {
                    return Err(bad(format!(
                        "line {line_no} has {columns} columns, expected {d}"
                    )))
                }
                Some(_) => {}
            }
            let fields = || line.split(',').map(str::trim);
            if first_row && fields().all(|f| !f.is_empty() && !is_number(f)) {
                continue; // a header line of column names
            }
            for (j, field) in fields().enumerate() {
                let col = j + 1;
                let value: f64 = field.parse().map_err(|_| {
                    if field.is_empty() {
                        bad(format!("line {line_no} column {col} is empty"))
                    } else {
                        bad(format!(
                            "line {line_no} column {col}: \"{}\" is not a number",
                            crate::io::short_escaped(field)
                        ))
                    }
                })?;
                if !value.is_finite() {
                    return Err(bad(format!(
                        "line {line_no} column {col} (point {} coordinate {j}) is {value} \
                         (all values must be finite)",
                        points.len() / columns
                    )));
                }
                points.push(value);
            }
        }
        if points.is_empty() {
            return Err(bad("has no points (no data rows)".into()));
        }
        Self::new(name, dim.unwrap_or(0), points)
    }

    /// Number of points N.
    pub fn len(&self) -> usize {
        self.points.len() / self.dim
    }

    /// Whether it has no point (never, for a validated set).
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Point `i` (D coordinates).
    pub fn point(&self, i: usize) -> &[f64] {
        &self.points[i * self.dim..(i + 1) * self.dim]
    }

    /// All points, row-major (N, D), rounded to f32 as the f32 engines use them.
    pub fn points_f32(&self) -> Vec<f32> {
        self.points.iter().map(|&v| v as f32).collect()
    }
}

impl FromStr for Dataset {
    type Err = Error;

    fn from_str(spec: &str) -> Result<Self> {
        Self::parse(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A hand-made `.npy` file: v1.0 header with `dict`, then `data`.
    fn npy_bytes(dict: &str, data: &[u8]) -> Vec<u8> {
        [crate::io::npy::npy_header_for_dict(dict), data.to_vec()].concat()
    }

    fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> String {
        let path: PathBuf = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path.to_str().unwrap().to_string()
    }

    fn le_f32(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn err(spec: &str) -> String {
        let e = Dataset::parse(spec).unwrap_err().to_string();
        assert!(!e.contains('\n'), "multi-line message: {e}");
        e
    }

    #[test]
    fn circle_specs() {
        let d: Dataset = "circle:8".parse().unwrap();
        assert_eq!((d.len(), d.dim, d.name.as_str()), (8, 2, "circle:8"));
        for bad in [
            "circle:0",
            "circle:",
            "circle:-3",
            "circle:2.5",
            "circle:abc",
        ] {
            let e = err(bad);
            assert!(e.contains("N >= 1"), "{bad}: {e}");
        }
    }

    #[test]
    fn unknown_spec_lists_what_is_accepted() {
        for bad in ["moons", "points.txt", ""] {
            let e = err(bad);
            assert!(
                e.contains("circle:N") && e.contains(".npy") && e.contains(".csv"),
                "{e}"
            );
        }
    }

    #[test]
    fn missing_files_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["nope.npy", "nope.csv"] {
            let spec = dir.path().join(name).to_str().unwrap().to_string();
            let e = Dataset::parse(&spec).unwrap_err();
            assert!(matches!(e, Error::Io { .. }), "{e:?}");
            assert!(e.to_string().contains(name), "{e}");
        }
    }

    #[test]
    fn npy_f32_and_f64_matrices() {
        let dir = tempfile::tempdir().unwrap();
        let spec = write(
            &dir,
            "a.npy",
            &npy_bytes(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }",
                &le_f32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.5]),
            ),
        );
        let d = Dataset::parse(&spec).unwrap();
        assert_eq!(d.dim, 2);
        assert_eq!(d.points, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.5]);
        assert_eq!(d.name, spec);

        let data: Vec<u8> = [0.1f64, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let spec = write(
            &dir,
            "b.npy",
            &npy_bytes(
                "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 2), }",
                &data,
            ),
        );
        assert_eq!(Dataset::parse(&spec).unwrap().points, vec![0.1, -2.0]);

        // Big-endian float64 and a 1-D array (D = 1).
        let data: Vec<u8> = [0.25f64, 7.0, -1.5]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        let spec = write(
            &dir,
            "c.npy",
            &npy_bytes(
                "{'descr': '>f8', 'fortran_order': False, 'shape': (3,), }",
                &data,
            ),
        );
        let d = Dataset::parse(&spec).unwrap();
        assert_eq!((d.dim, d.points.clone()), (1, vec![0.25, 7.0, -1.5]));
    }

    #[test]
    fn npy_written_by_output_module_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.npy");
        crate::io::write_npy_f32(&path, 2, 3, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let d = Dataset::parse(path.to_str().unwrap()).unwrap();
        assert_eq!((d.len(), d.dim), (2, 3));
    }

    #[test]
    fn npy_rejections() {
        let dir = tempfile::tempdir().unwrap();
        let six = le_f32(&[0.0; 6]);
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "fortran.npy",
                npy_bytes(
                    "{'descr': '<f4', 'fortran_order': True, 'shape': (3, 2), }",
                    &six,
                ),
                "Fortran order",
            ),
            (
                "int.npy",
                npy_bytes(
                    "{'descr': '<i4', 'fortran_order': False, 'shape': (3, 2), }",
                    &six,
                ),
                "integer type other than uint8",
            ),
            (
                "half.npy",
                npy_bytes(
                    "{'descr': '<f2', 'fortran_order': False, 'shape': (6,), }",
                    &six[..12],
                ),
                "dtype '<f2' is not supported",
            ),
            (
                "rank5.npy",
                npy_bytes(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 3, 2, 1), }",
                    &six,
                ),
                "expected (N points, D coordinates)",
            ),
            (
                "scalar.npy",
                npy_bytes(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (), }",
                    &six[..4],
                ),
                "expected (N points, D coordinates)",
            ),
            (
                "truncated.npy",
                npy_bytes(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }",
                    &six[..20],
                ),
                "data is truncated",
            ),
            (
                "trailing.npy",
                npy_bytes(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }",
                    &six,
                ),
                "unexpected bytes",
            ),
            (
                "empty.npy",
                npy_bytes(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 2), }",
                    &[],
                ),
                "no points",
            ),
            (
                "zerodim.npy",
                npy_bytes(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 0), }",
                    &[],
                ),
                "dimension 0",
            ),
            (
                "nan.npy",
                npy_bytes(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }",
                    &le_f32(&[0.0, 1.0, f32::NAN, 2.0]),
                ),
                "point 1 coordinate 0 is NaN",
            ),
            ("text.npy", b"x,y\n1,2\n".to_vec(), "not a NumPy .npy file"),
            (
                "header_cut.npy",
                b"\x93NUMPY\x01\x00\x76\x00{'descr'".to_vec(),
                "header",
            ),
            (
                "garbage_header.npy",
                npy_bytes("{'descr': '<f4', 'shape': (3, 2) oops", &six),
                "invalid .npy header",
            ),
        ];
        for (name, bytes, expected) in cases {
            let spec = write(&dir, name, &bytes);
            let e = Dataset::parse(&spec).unwrap_err();
            assert!(matches!(e, Error::Dataset { .. }), "{name}: {e:?}");
            let e = e.to_string();
            assert!(e.contains(expected) && e.contains(name), "{name}: {e}");
            assert!(!e.contains('\n'), "{name}: {e}");
        }
    }

    #[test]
    fn csv_plain_header_whitespace_and_trailing_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let spec = write(&dir, "a.csv", b"1,2\n3.5 , -4e-1\n\t5,6\n");
        let d = Dataset::parse(&spec).unwrap();
        assert_eq!(
            (d.dim, d.points.clone()),
            (2, vec![1.0, 2.0, 3.5, -0.4, 5.0, 6.0])
        );

        let spec = write(&dir, "h.csv", b"x, y\r\n1,2\r\n3,4\r\n\r\n  \n\n");
        let d = Dataset::parse(&spec).unwrap();
        assert_eq!((d.dim, d.points.clone()), (2, vec![1.0, 2.0, 3.0, 4.0]));

        let spec = write(&dir, "one.csv", b"0.5\n1.5");
        let d = Dataset::parse(&spec).unwrap();
        assert_eq!((d.dim, d.len()), (1, 2));
    }

    #[test]
    fn csv_rejections() {
        let dir = tempfile::tempdir().unwrap();
        let cases: &[(&str, &[u8], &str)] = &[
            (
                "ragged.csv",
                b"1,2\n3,4\n5,6,7\n",
                "line 3 has 3 columns, expected 2",
            ),
            (
                "ragged_header.csv",
                b"x,y\n1,2,3\n",
                "line 2 has 3 columns, expected 2",
            ),
            (
                "text.csv",
                b"1,2\n3,abc\n",
                "line 2 column 2: \"abc\" is not a number",
            ),
            (
                "mixed_header.csv",
                b"x,2\n1,2\n",
                "line 1 column 1: \"x\" is not a number",
            ),
            (
                "second_header.csv",
                b"x,y\na,b\n",
                "line 2 column 1: \"a\" is not a number",
            ),
            ("empty_field.csv", b"1,2\n3,\n", "line 2 column 2 is empty"),
            ("blank_middle.csv", b"1,2\n\n3,4\n", "line 2 is blank"),
            ("blank_first.csv", b"\n1,2\n", "line 1 is blank"),
            (
                "nan.csv",
                b"1,2\n3,NaN\n",
                "line 2 column 2 (point 1 coordinate 1) is NaN",
            ),
            (
                "inf.csv",
                b"1,2\n-inf,4\n",
                "line 2 column 1 (point 1 coordinate 0) is -inf",
            ),
            ("empty.csv", b"", "no points"),
            ("blank.csv", b"\n\n  \n", "no points"),
            ("header_only.csv", b"x,y\n", "no points"),
            ("binary.csv", b"1,2\n\xff\xfe\n", "not UTF-8"),
        ];
        for &(name, bytes, expected) in cases {
            let spec = write(&dir, name, bytes);
            let e = Dataset::parse(&spec).unwrap_err();
            assert!(matches!(e, Error::Dataset { .. }), "{name}: {e:?}");
            let e = e.to_string();
            assert!(e.contains(expected) && e.contains(name), "{name}: {e}");
            assert!(!e.contains('\n'), "{name}: {e}");
        }
    }
}
