//! The two density-grid file formats. Each is a `.npy` array with a JSON sidecar (the same
//! path with `.json`) whose `format` field declares what the array is:
//!
//! - **f32 grids**, `NAME_density.npy` ([`GRID_FORMAT`], sidecar [`GridMeta`]): the values of
//!   a picture, row 0 at the top, what `render` re-shades and sums. Written band by band
//!   with the PNGs by [`crate::plot::raster`], read back band by band by [`GridFile`].
//! - **raw grids**, `NAME_density_raw.npy` ([`crate::density::heatmap::RAW_FORMAT`],
//!   sidecar [`RawGridMeta`]): a
//!   grid's exact integer sums, what shards and checkpoints keep and `merge` adds up
//!   ([`write_raw`], [`read_raw`]).
//!
//! Both are part of a run folder's output (the golden hashes cover both), so both formats
//! stay; [`crate::plot::raster::write_named`] is the one writer of a named grid's files.

use crate::density::extent::Extent;
use crate::density::heatmap::{DensityGrid, Kernel, RawGridMeta, RAW_FORMAT};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Identifies the f32 grid sidecars.
pub const GRID_FORMAT: &str = "memodiff-density-f32-1";

/// The declaration every grid sidecar starts with: its `format` field, read typed (the other
/// fields depend on the format).
#[derive(Deserialize)]
struct Declaration {
    format: String,
}

/// Whether `npy` is an f32 density grid: a `.npy` path whose sidecar (`npy` with `.json`)
/// declares [`GRID_FORMAT`] in its `format` field. A path without such a sidecar (a
/// particle file, perhaps beside JSON of its own) is not one; a declared grid whose files
/// do not match is [`GridFile::open`]'s error to report.
pub fn is_declared_f32_grid(npy: &Path) -> bool {
    npy.extension().and_then(|e| e.to_str()) == Some("npy")
        && std::fs::read(npy.with_extension("json")).is_ok_and(|bytes| {
            serde_json::from_slice::<Declaration>(&bytes).is_ok_and(|d| d.format == GRID_FORMAT)
        })
}

/// The sidecar `NAME.json` of an f32 grid `NAME.npy`: what the grid is, so that grids are
/// only ever summed with grids of the same kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GridMeta {
    /// `GRID_FORMAT`.
    pub format: String,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `[xmin, xmax, ymin, ymax]`; pixel centres on `linspace` grids, row 0 at `ymax`.
    pub extent: [f64; 4],
    /// The density kernel.
    pub kernel: Kernel,
    /// Width (standard deviation) of the kernel.
    pub bandwidth: f64,
    /// Particles behind the grid (far and non-finite ones included).
    pub particles: u64,
    /// Smallest and largest value of the grid (finite values).
    pub min: f64,
    /// Largest value (finite values).
    pub max: f64,
}

impl GridMeta {
    /// The sidecar of `grid`.
    pub fn of(grid: &DensityGrid) -> Self {
        let e = grid.extent();
        GridMeta {
            format: GRID_FORMAT.into(),
            width: grid.width(),
            height: grid.height(),
            extent: [e.xmin, e.xmax, e.ymin, e.ymax],
            kernel: grid.kernel(),
            bandwidth: grid.bandwidth(),
            particles: grid.deposits(),
            min: 0.0,
            max: 0.0,
        }
    }

    /// Whether `other` describes a grid that can be added to this one.
    pub fn same_shape(&self, other: &GridMeta) -> bool {
        self.width == other.width
            && self.height == other.height
            && self.extent == other.extent
            && self.kernel == other.kernel
            && self.bandwidth == other.bandwidth
    }

    /// One line for messages: size, extent, kernel and particles.
    pub fn describe(&self) -> String {
        let [a, b, c, d] = self.extent;
        format!(
            "{}x{} over {a},{b},{c},{d}, {} kernel, bandwidth {}",
            self.width,
            self.height,
            self.kernel.name(),
            self.bandwidth
        )
    }
}

/// An f32 grid `.npy` with its sidecar, as a row source (read band by band from disk).
pub struct GridFile {
    /// What the sidecar says.
    pub meta: GridMeta,
    path: PathBuf,
    offset: u64,
}

impl GridFile {
    /// Open `path` and its sidecar (`path` with `.json`), checking one against the other.
    pub fn open(path: &Path) -> Result<Self> {
        let meta_path = path.with_extension("json");
        let bad = |why: String| Error::invalid("density grid", why);
        let text = std::fs::read_to_string(&meta_path).map_err(|e| {
            bad(format!(
                "{} looks like a density grid, but its sidecar {} cannot be read ({e}); \
                 render needs it to know the grid's extent and kernel",
                path.display(),
                meta_path.display()
            ))
        })?;
        let meta: GridMeta = serde_json::from_str(&text)
            .map_err(|e| bad(format!("{}: {e}", meta_path.display())))?;
        if meta.format != GRID_FORMAT {
            return Err(bad(format!(
                "{}: format '{}', expected '{GRID_FORMAT}'",
                meta_path.display(),
                meta.format
            )));
        }
        let header = crate::io::npy_header("<f4", &[meta.height as u64, meta.width as u64]);
        let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut head = vec![0u8; header.len()];
        let ok = file.read_exact(&mut head).is_ok()
            && head == header
            && len == header.len() as u64 + 4 * (meta.width * meta.height) as u64;
        if !ok {
            return Err(bad(format!(
                "{} is not the <f4 array of shape ({}, {}) that {} describes",
                path.display(),
                meta.height,
                meta.width,
                meta_path.display()
            )));
        }
        // One rule for every input of render: non-finite values are refused, here before
        // anything is drawn (a NaN would otherwise spread into the sum and its colours).
        let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
        let mut chunk = vec![0u8; 1 << 20];
        let mut index = 0usize;
        let total = meta.width * meta.height;
        while index < total {
            let n = ((total - index) * 4).min(chunk.len());
            reader
                .read_exact(&mut chunk[..n])
                .map_err(|e| Error::io(path, e))?;
            for (i, b) in chunk[..n].chunks_exact(4).enumerate() {
                let v = f32::from_le_bytes(b.try_into().expect("4 bytes"));
                if !v.is_finite() {
                    let at = index + i;
                    return Err(bad(format!(
                        "{}: the value at row {}, column {} is {v}; a density grid holds \
                         finite values",
                        path.display(),
                        at / meta.width,
                        at % meta.width
                    )));
                }
            }
            index += n / 4;
        }
        Ok(GridFile {
            meta,
            path: path.to_path_buf(),
            offset: header.len() as u64,
        })
    }

    /// The `.npy` file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Add rows `r0..` of this grid to `out`.
    pub fn add_rows(&self, r0: usize, out: &mut [f64]) -> Result<()> {
        let w = self.meta.width;
        let mut file = File::open(&self.path).map_err(|e| Error::io(&self.path, e))?;
        let mut bytes = vec![0u8; out.len() * 4];
        file.seek(SeekFrom::Start(self.offset + (r0 * w * 4) as u64))
            .and_then(|_| file.read_exact(&mut bytes))
            .map_err(|e| Error::io(&self.path, e))?;
        for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
            *o += f32::from_le_bytes(b.try_into().expect("4 bytes")) as f64;
        }
        Ok(())
    }
}

/// The extent of a grid's metadata.
pub fn meta_extent(meta: &GridMeta) -> Result<Extent> {
    let [a, b, c, d] = meta.extent;
    Extent::new(a, b, c, d)
}

/// Write `grid`'s raw sums as `path` (`.npy`, `<i8`, C order, shape `raw_meta().shape`)
/// and their description as `path` with extension `.json`, each atomically.
pub fn write_raw(path: &Path, grid: &DensityGrid) -> Result<()> {
    let meta = grid.raw_meta();
    let counts = grid.raw_counts();
    let header = crate::io::npy_header("<i8", &meta.shape);
    crate::io::write_atomically(path, |w| {
        use std::io::Write;
        w.write_all(&header)?;
        for chunk in counts.chunks(1 << 16) {
            let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
            w.write_all(&bytes)?;
        }
        Ok(())
    })?;
    crate::io::write_json(&path.with_extension("json"), &meta)
}

/// The description of a grid written by [`write_raw`], checked against the file (format,
/// header, size) without reading its sums: what `merge` checks of every shard before it
/// writes anything.
pub fn check_raw(path: &Path) -> Result<RawGridMeta> {
    let meta_path = path.with_extension("json");
    let text = std::fs::read_to_string(&meta_path).map_err(|e| Error::io(&meta_path, e))?;
    let meta: RawGridMeta = serde_json::from_str(&text)
        .map_err(|e| Error::invalid("raw density grid", format!("{}: {e}", meta_path.display())))?;
    let header = crate::io::npy_header("<i8", &meta.shape);
    let mut start = vec![0u8; header.len()];
    let size = File::open(path)
        .and_then(|mut f| {
            let size = f.metadata()?.len();
            f.read_exact(&mut start).map(|()| size)
        })
        .map_err(|e| Error::io(path, e))?;
    let n = meta.shape[0].saturating_mul(meta.shape[1]);
    let expected = n.checked_mul(8).map(|b| (b + header.len()) as u64);
    if meta.format != RAW_FORMAT {
        return Err(Error::invalid(
            "raw density grid",
            format!(
                "{}: format '{}', expected '{RAW_FORMAT}'",
                meta_path.display(),
                meta.format
            ),
        ));
    }
    if start != header || Some(size) != expected {
        return Err(Error::invalid(
            "raw density grid",
            format!(
                "{} is not the <i8 array of shape {:?} that {} describes",
                path.display(),
                meta.shape,
                meta_path.display()
            ),
        ));
    }
    Ok(meta)
}

/// Read a grid written by [`write_raw`], checking the file against its description
/// (header, size) and the description against the grid it describes.
pub fn read_raw(path: &Path) -> Result<DensityGrid> {
    let meta = check_raw(path)?;
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let header = crate::io::npy_header("<i8", &meta.shape);
    if bytes.len() != header.len() + meta.shape[0] * meta.shape[1] * 8 {
        // Changed since it was checked.
        return Err(Error::io(
            path,
            std::io::Error::other("the file changed while it was read"),
        ));
    }
    let counts = bytes[header.len()..]
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect();
    DensityGrid::from_raw(&meta, counts)
}
