//! Writing results safely (temp file in the same folder, sync, rename) and the `.npy`
//! format: a streaming f32 writer, one-shot f32/f64 writers and the shared reader used by
//! the dataset loader and by `read_npy_f32`.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::error::{Error, Result};

// ---------------------------------------------------------------------------------------
// Atomic writes
// ---------------------------------------------------------------------------------------

/// A distinct temp-file name for each write made by this process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The temp file used while writing `path`: `.{filename}.tmp-{pid}-{k}` in the same folder,
/// so that the final rename stays on one file system.
fn temp_path_for(path: &Path) -> Result<PathBuf> {
    let file_name = path.file_name().ok_or_else(|| {
        Error::Output(format!(
            "cannot write to {}: the path does not name a file",
            path.display()
        ))
    })?;
    let k = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let temp_name = format!(
        ".{}.tmp-{}-{k}",
        file_name.to_string_lossy(),
        std::process::id()
    );
    Ok(path.with_file_name(temp_name))
}

/// Flush, sync and close `writer`, then rename `temp` onto `path` (and sync the folder,
/// best effort). Does not remove `temp` on failure; callers do.
fn commit(writer: BufWriter<File>, temp: &Path, path: &Path) -> io::Result<()> {
    let file = writer.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    fs::rename(temp, path)?;
    sync_parent(path);
    Ok(())
}

/// Make the rename durable where the platform allows it; failures are ignored because the
/// data itself is already synced and in place.
fn sync_parent(path: &Path) {
    #[cfg(unix)]
    {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if let Ok(dir) = File::open(parent) {
            let _ = dir.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Write `path` atomically: `f` writes into a temporary file in the same folder, which is
/// then flushed, synced and renamed into place. On any error the temporary file is removed,
/// `path` is left as it was, and the error names `path`.
pub fn write_atomically(
    path: &Path,
    f: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> Result<()> {
    let temp = temp_path_for(path)?;
    let file = File::create(&temp).map_err(|e| Error::io(path, e))?;
    let mut writer = BufWriter::new(file);
    let result = f(&mut writer).and_then(|()| commit(writer, &temp, path));
    if let Err(e) = result {
        let _ = fs::remove_file(&temp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// Write `value` as pretty-printed JSON (with a final newline), atomically.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    write_atomically(path, |w| {
        serde_json::to_writer_pretty(&mut *w, value).map_err(io::Error::from)?;
        w.write_all(b"\n")
    })
}

// ---------------------------------------------------------------------------------------
// NPY writing
// ---------------------------------------------------------------------------------------

/// The NPY v1.0 header for a C-order array: magic, version, little-endian u16 header length,
/// then the dict text padded with spaces and a final newline so that the data starts at a
/// multiple of 64 bytes, exactly as NumPy writes it.
fn npy_header(descr: &str, shape: &[u64]) -> Vec<u8> {
    let mut dict = format!(
        "{{'descr': '{descr}', 'fortran_order': False, 'shape': {}, }}",
        shape_text(shape)
    );
    // 6 magic + 2 version + 2 length bytes precede the dict; the dict ends with '\n'.
    let unpadded = 10 + dict.len() + 1;
    let padding = (64 - unpadded % 64) % 64;
    dict.extend(std::iter::repeat_n(' ', padding));
    dict.push('\n');
    let header_len = u16::try_from(dict.len()).expect("an NPY header for a small shape");
    let mut out = Vec::with_capacity(10 + dict.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&header_len.to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

/// A shape as Python writes a tuple: `(3, 2)`, `(5,)`, `()`.
pub(crate) fn shape_text<T: std::fmt::Display>(shape: &[T]) -> String {
    match shape {
        [n] => format!("({n},)"),
        _ => {
            let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            format!("({})", parts.join(", "))
        }
    }
}

fn check_matrix_len(path: &Path, rows: u64, cols: usize, len: usize) -> Result<()> {
    let expected = rows.checked_mul(cols as u64);
    if expected != Some(len as u64) {
        return Err(Error::Output(format!(
            "cannot write {}: {len} values do not form a {rows} x {cols} array",
            path.display()
        )));
    }
    Ok(())
}

/// Write a (rows, cols) row-major f32 array as `.npy` (`<f4`, C order), atomically.
pub fn write_npy_f32(path: &Path, rows: u64, cols: usize, data: &[f32]) -> Result<()> {
    check_matrix_len(path, rows, cols, data.len())?;
    write_atomically(path, |w| {
        w.write_all(&npy_header("<f4", &[rows, cols as u64]))?;
        for v in data {
            w.write_all(&v.to_le_bytes())?;
        }
        Ok(())
    })
}

/// Write a (rows, cols) row-major f64 array as `.npy` (`<f8`, C order), atomically.
pub fn write_npy_f64(path: &Path, rows: u64, cols: usize, data: &[f64]) -> Result<()> {
    check_matrix_len(path, rows, cols, data.len())?;
    write_atomically(path, |w| {
        w.write_all(&npy_header("<f8", &[rows, cols as u64]))?;
        for v in data {
            w.write_all(&v.to_le_bytes())?;
        }
        Ok(())
    })
}

/// Streams a (rows, cols) f32 array into a `.npy` file without holding it in memory.
///
/// Rows go to a temporary file in the same folder; [`finish`](Self::finish) checks that
/// every declared row was written and renames the file into place. Dropping the writer
/// without finishing removes the temporary file and leaves `path` untouched.
#[derive(Debug)]
pub struct NpyStreamWriter {
    path: PathBuf,
    temp: PathBuf,
    /// `None` once finished (or after a failure that already cleaned up).
    writer: Option<BufWriter<File>>,
    rows: u64,
    cols: usize,
    rows_written: u64,
}

impl NpyStreamWriter {
    /// Start writing a (rows, cols) `<f4` array to `path` (via a temp file).
    pub fn create(path: &Path, rows: u64, cols: usize) -> Result<Self> {
        if cols == 0 {
            return Err(Error::Output(format!(
                "cannot write {}: an array needs at least one column",
                path.display()
            )));
        }
        let temp = temp_path_for(path)?;
        let file = File::create(&temp).map_err(|e| Error::io(path, e))?;
        let mut this = Self {
            path: path.to_path_buf(),
            temp,
            writer: Some(BufWriter::with_capacity(1 << 20, file)),
            rows,
            cols,
            rows_written: 0,
        };
        let header = npy_header("<f4", &[rows, cols as u64]);
        this.io(|w| w.write_all(&header))?;
        Ok(this)
    }

    /// Rows declared at creation.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Rows written so far.
    pub fn rows_written(&self) -> u64 {
        self.rows_written
    }

    /// Run `f` on the open writer; on an I/O error, clean up and report it against `path`.
    fn io(&mut self, f: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>) -> Result<()> {
        let Some(writer) = self.writer.as_mut() else {
            return Err(Error::Output(format!(
                "cannot write {}: the writer has already failed",
                self.path.display()
            )));
        };
        if let Err(e) = f(writer) {
            self.abandon();
            return Err(Error::io(&self.path, e));
        }
        Ok(())
    }

    /// Append whole rows (`data.len()` must be a multiple of `cols`), in order.
    pub fn write_rows(&mut self, data: &[f32]) -> Result<()> {
        if !data.len().is_multiple_of(self.cols) {
            return Err(Error::Output(format!(
                "cannot write {}: {} values are not whole rows of {} columns",
                self.path.display(),
                data.len(),
                self.cols
            )));
        }
        let new_rows = (data.len() / self.cols) as u64;
        if self.rows_written + new_rows > self.rows {
            return Err(Error::Output(format!(
                "cannot write {}: {} rows would exceed the {} rows declared",
                self.path.display(),
                self.rows_written + new_rows,
                self.rows
            )));
        }
        self.io(|w| {
            // Convert in chunks so that one large call does not need a second full copy.
            let mut buf = Vec::with_capacity(4 * data.len().min(1 << 16));
            for chunk in data.chunks(1 << 16) {
                buf.clear();
                for v in chunk {
                    buf.extend_from_slice(&v.to_le_bytes());
                }
                w.write_all(&buf)?;
            }
            Ok(())
        })?;
        self.rows_written += new_rows;
        Ok(())
    }

    /// Check that all declared rows were written, then flush, sync and rename into place.
    /// On error nothing is left at `path` (nor the temp file).
    pub fn finish(mut self) -> Result<()> {
        if self.rows_written != self.rows {
            let message = format!(
                "cannot finish {}: only {} of the {} declared rows were written",
                self.path.display(),
                self.rows_written,
                self.rows
            );
            self.abandon();
            return Err(Error::Output(message));
        }
        let Some(writer) = self.writer.take() else {
            return Err(Error::Output(format!(
                "cannot finish {}: the writer has already failed",
                self.path.display()
            )));
        };
        if let Err(e) = commit(writer, &self.temp, &self.path) {
            let _ = fs::remove_file(&self.temp);
            return Err(Error::io(&self.path, e));
        }
        Ok(())
    }

    /// Close and remove the temp file (idempotent).
    fn abandon(&mut self) {
        if let Some(writer) = self.writer.take() {
            // Dropping a BufWriter flushes; skip that work by taking the file out unflushed.
            let (file, _) = writer.into_parts();
            drop(file);
            let _ = fs::remove_file(&self.temp);
        }
    }
}

impl Drop for NpyStreamWriter {
    fn drop(&mut self) {
        self.abandon();
    }
}

// ---------------------------------------------------------------------------------------
// NPY reading (shared with the dataset loader)
// ---------------------------------------------------------------------------------------

/// The values of a `.npy` file, in the precision it stores.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum NpyValues {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// A C-order float array read from a `.npy` file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NpyArray {
    pub shape: Vec<usize>,
    pub values: NpyValues,
}

/// Why a `.npy` file could not be read: the file itself (open/read), or its contents
/// (a one-line message that does not repeat the path).
#[derive(Debug)]
pub(crate) enum NpyReadError {
    Io(io::Error),
    Format(String),
}

/// Read a `.npy` file holding a float32 or float64 array (either byte order) in C order,
/// of any rank. Rejects other dtypes, Fortran order, and data that is shorter or longer
/// than the shape says.
pub(crate) fn read_npy(path: &Path) -> std::result::Result<NpyArray, NpyReadError> {
    use npyz::{DType, Endianness, NpyHeader, Order, TypeChar};
    let bad = |m: String| NpyReadError::Format(m);

    let bytes = fs::read(path).map_err(NpyReadError::Io)?;
    if !bytes.starts_with(b"\x93NUMPY") {
        return Err(bad(
            "not a NumPy .npy file (it does not start with \\x93NUMPY)".into(),
        ));
    }
    let mut cursor = io::Cursor::new(&bytes[..]);
    let header = NpyHeader::from_reader(&mut cursor).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            bad("the .npy header is truncated".into())
        } else {
            {
                // Parse errors can span several lines (with a caret diagram): keep the first.
                let text = e.to_string();
                let first = text
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim_end_matches([' ', ':']);
                bad(format!("invalid .npy header: {first}"))
            }
        }
    })?;
    let data = &bytes[cursor.position() as usize..];

    let dtype = header.dtype();
    let (size, endianness) = match &dtype {
        DType::Plain(ts)
            if ts.type_char() == TypeChar::Float
                && matches!(ts.size_field(), 4 | 8)
                && matches!(ts.endianness(), Endianness::Little | Endianness::Big) =>
        {
            (ts.size_field() as usize, ts.endianness())
        }
        other => {
            return Err(bad(format!(
                "dtype {} is not supported (expected float32 '<f4' or float64 '<f8')",
                other.descr()
            )))
        }
    };
    if header.order() == Order::Fortran {
        return Err(bad(
            "the array is in Fortran order; save it in C order (e.g. np.ascontiguousarray)".into(),
        ));
    }
    let shape: Vec<usize> = header
        .shape()
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| bad(format!("shape {} is too large", shape_text(header.shape()))))?;
    let expected_bytes = shape
        .iter()
        .try_fold(size, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad(format!("shape {} is too large", shape_text(&shape))))?;
    if data.len() < expected_bytes {
        return Err(bad(format!(
            "data is truncated: shape {} needs {expected_bytes} bytes, only {} follow the header",
            shape_text(&shape),
            data.len()
        )));
    }
    if data.len() > expected_bytes {
        return Err(bad(format!(
            "{} unexpected bytes after the data of shape {}",
            data.len() - expected_bytes,
            shape_text(&shape)
        )));
    }
    let big = endianness == Endianness::Big;
    let values = if size == 4 {
        NpyValues::F32(
            data.chunks_exact(4)
                .map(|c| {
                    let b = [c[0], c[1], c[2], c[3]];
                    if big {
                        f32::from_be_bytes(b)
                    } else {
                        f32::from_le_bytes(b)
                    }
                })
                .collect(),
        )
    } else {
        NpyValues::F64(
            data.chunks_exact(8)
                .map(|c| {
                    let b: [u8; 8] = c.try_into().expect("chunks of 8");
                    if big {
                        f64::from_be_bytes(b)
                    } else {
                        f64::from_le_bytes(b)
                    }
                })
                .collect(),
        )
    };
    Ok(NpyArray { shape, values })
}

/// Read back an f32 `.npy` array (any rank, C order): its shape and row-major values.
/// Float64 files are rejected rather than silently rounded.
pub fn read_npy_f32(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let array = read_npy(path).map_err(|e| match e {
        NpyReadError::Io(e) => Error::io(path, e),
        NpyReadError::Format(m) => Error::Output(format!("{}: {m}", path.display())),
    })?;
    match array.values {
        NpyValues::F32(v) => Ok((array.shape, v)),
        NpyValues::F64(_) => Err(Error::Output(format!(
            "{}: dtype is float64, expected float32 '<f4'",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn sample(rows: usize, cols: usize) -> Vec<f32> {
        (0..rows * cols).map(|i| i as f32 * 0.5 - 3.25).collect()
    }

    #[test]
    fn npy_f32_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.npy");
        let data = sample(7, 3);
        write_npy_f32(&path, 7, 3, &data).unwrap();
        let (shape, back) = read_npy_f32(&path).unwrap();
        assert_eq!(shape, vec![7, 3]);
        assert_eq!(back, data);
        assert_eq!(entries(dir.path()), vec!["a.npy"]);
    }

    #[test]
    fn npy_f64_round_trip_and_f32_reader_rejects_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.npy");
        let data: Vec<f64> = (0..10).map(|i| i as f64 / 3.0).collect();
        write_npy_f64(&path, 5, 2, &data).unwrap();
        let array = read_npy(&path).unwrap();
        assert_eq!(array.shape, vec![5, 2]);
        assert_eq!(array.values, NpyValues::F64(data));
        let err = read_npy_f32(&path).unwrap_err().to_string();
        assert!(err.contains("float64"), "{err}");
    }

    #[test]
    fn header_is_numpy_compatible() {
        let dir = tempfile::tempdir().unwrap();
        for (rows, cols) in [(4u64, 2usize), (100_000, 1), (0, 3)] {
            let path = dir.path().join("h.npy");
            let data = sample(rows as usize, cols);
            write_npy_f32(&path, rows, cols, &data).unwrap();
            let bytes = fs::read(&path).unwrap();
            assert_eq!(&bytes[..6], b"\x93NUMPY");
            assert_eq!(&bytes[6..8], &[1, 0]);
            let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
            let offset = 10 + header_len;
            assert_eq!(offset % 64, 0);
            let text = std::str::from_utf8(&bytes[10..offset]).unwrap();
            let dict =
                format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
            assert!(text.starts_with(&dict), "{text:?}");
            assert!(text.ends_with('\n'));
            assert!(text[dict.len()..text.len() - 1].bytes().all(|b| b == b' '));
            assert_eq!(bytes.len(), offset + 4 * data.len());
            if let Some(first) = data.first() {
                assert_eq!(&bytes[offset..offset + 4], &first.to_le_bytes());
            }
        }
    }

    #[test]
    fn streaming_in_chunks_equals_one_shot() {
        let dir = tempfile::tempdir().unwrap();
        let (rows, cols) = (10usize, 3usize);
        let data = sample(rows, cols);
        let one = dir.path().join("one.npy");
        let streamed = dir.path().join("streamed.npy");
        write_npy_f32(&one, rows as u64, cols, &data).unwrap();
        let mut w = NpyStreamWriter::create(&streamed, rows as u64, cols).unwrap();
        w.write_rows(&data[..3 * cols]).unwrap();
        w.write_rows(&data[3 * cols..7 * cols]).unwrap();
        w.write_rows(&data[7 * cols..]).unwrap();
        assert_eq!(w.rows_written(), rows as u64);
        w.finish().unwrap();
        assert_eq!(fs::read(&one).unwrap(), fs::read(&streamed).unwrap());
        assert_eq!(entries(dir.path()), vec!["one.npy", "streamed.npy"]);
    }

    #[test]
    fn streaming_rejects_partial_and_extra_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.npy");
        let mut w = NpyStreamWriter::create(&path, 2, 2).unwrap();
        let err = w.write_rows(&[1.0, 2.0, 3.0]).unwrap_err().to_string();
        assert!(err.contains("not whole rows"), "{err}");
        let err = w.write_rows(&[0.0; 6]).unwrap_err().to_string();
        assert!(err.contains("exceed the 2 rows declared"), "{err}");
        // The writer is still usable after a rejected call.
        w.write_rows(&[0.0; 4]).unwrap();
        w.finish().unwrap();
        assert_eq!(read_npy_f32(&path).unwrap(), (vec![2, 2], vec![0.0; 4]));
    }

    #[test]
    fn dropping_unfinished_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        let mut w = NpyStreamWriter::create(&path, 5, 2).unwrap();
        w.write_rows(&[1.0; 4]).unwrap();
        assert_eq!(
            entries(dir.path()).len(),
            1,
            "the temp file exists while writing"
        );
        drop(w);
        assert!(entries(dir.path()).is_empty());
    }

    #[test]
    fn finishing_with_too_few_rows_errors_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        let mut w = NpyStreamWriter::create(&path, 5, 2).unwrap();
        w.write_rows(&[1.0; 6]).unwrap();
        let err = w.finish().unwrap_err().to_string();
        assert!(err.contains("only 3 of the 5 declared rows"), "{err}");
        assert!(entries(dir.path()).is_empty());
    }

    #[test]
    fn finishing_replaces_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        fs::write(&path, b"old").unwrap();
        let mut w = NpyStreamWriter::create(&path, 1, 2).unwrap();
        w.write_rows(&[1.0, 2.0]).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"old", "untouched until finish");
        w.finish().unwrap();
        assert_eq!(read_npy_f32(&path).unwrap(), (vec![1, 2], vec![1.0, 2.0]));
    }

    #[test]
    fn missing_directory_is_an_io_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/dir/out.npy");
        for result in [
            write_npy_f32(&path, 1, 1, &[1.0]),
            write_npy_f64(&path, 1, 1, &[1.0]),
            write_json(&path, &vec![1, 2]),
            NpyStreamWriter::create(&path, 1, 1).map(|_| ()),
        ] {
            let err = result.unwrap_err();
            assert!(matches!(err, Error::Io { .. }), "{err:?}");
            assert!(err.to_string().contains("out.npy"), "{err}");
        }
        assert!(entries(dir.path()).is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn read_only_directory_is_an_io_error() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ro = dir.path().join("ro");
        fs::create_dir(&ro).unwrap();
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
        // Root (and some CI sandboxes) can write anyway: nothing to test there.
        let probe = ro.join("probe");
        if File::create(&probe).is_ok() {
            let _ = fs::remove_file(&probe);
        } else {
            let path = ro.join("out.npy");
            let err = write_npy_f32(&path, 1, 1, &[1.0]).unwrap_err();
            assert!(matches!(err, Error::Io { .. }), "{err:?}");
            let err = NpyStreamWriter::create(&path, 1, 1).unwrap_err();
            assert!(matches!(err, Error::Io { .. }), "{err:?}");
            assert!(entries(&ro).is_empty());
        }
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn failing_closure_removes_temp_and_keeps_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        fs::write(&path, b"old").unwrap();
        let err = write_atomically(&path, |w| {
            w.write_all(b"partial")?;
            Err(io::Error::other("boom"))
        })
        .unwrap_err();
        assert!(matches!(err, Error::Io { .. }));
        assert!(err.to_string().contains("r.json") && err.to_string().contains("boom"));
        assert_eq!(entries(dir.path()), vec!["r.json"]);
        assert_eq!(fs::read(&path).unwrap(), b"old");
    }

    #[test]
    fn json_is_pretty_and_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.json");
        let value = serde_json::json!({"steps": 100, "name": "circle:8"});
        write_json(&path, &value).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("\n  \"steps\": 100"), "{text}");
        assert!(text.ends_with("}\n"));
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, value);
        assert_eq!(entries(dir.path()), vec!["run.json"]);
    }

    #[test]
    fn path_without_file_name_is_rejected() {
        let err = write_json(Path::new("/"), &1).unwrap_err();
        assert!(matches!(err, Error::Output(_)), "{err:?}");
    }
}
