//! The `.npy` format: a streaming f32 writer, one-shot f32/f64 writers (all through the
//! atomic writes of [`crate::io`]) and the bounded reader shared by the dataset loader
//! and `read_npy_f32`.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::io::{write_atomically, AtomicFile};

// ---------------------------------------------------------------------------------------
// NPY writing
// ---------------------------------------------------------------------------------------

/// The NPY v1.0 header for a C-order array of `descr` and `shape`, exactly as NumPy writes
/// it (see [`npy_header_for_dict`]).
pub(crate) fn npy_header<T: std::fmt::Display>(descr: &str, shape: &[T]) -> Vec<u8> {
    npy_header_for_dict(&format!(
        "{{'descr': '{descr}', 'fortran_order': False, 'shape': {}, }}",
        shape_text(shape)
    ))
}

/// The NPY v1.0 header around the dict text `dict`: magic, version, little-endian u16
/// header length, then the dict padded with spaces and a final newline so that the data
/// starts at a multiple of 64 bytes. The reader's tests give it dicts NumPy would not write.
pub(crate) fn npy_header_for_dict(dict: &str) -> Vec<u8> {
    let mut dict = dict.to_string();
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
    write_npy_matrix(path, rows, cols, data, "<f4", f32::to_le_bytes)
}

/// Write a (rows, cols) row-major f64 array as `.npy` (`<f8`, C order), atomically.
pub fn write_npy_f64(path: &Path, rows: u64, cols: usize, data: &[f64]) -> Result<()> {
    write_npy_matrix(path, rows, cols, data, "<f8", f64::to_le_bytes)
}

/// The one-shot writers' body: the header of `descr`, then each value's little-endian
/// bytes (`le_bytes` matches `descr`).
fn write_npy_matrix<T: Copy, const N: usize>(
    path: &Path,
    rows: u64,
    cols: usize,
    data: &[T],
    descr: &str,
    le_bytes: fn(T) -> [u8; N],
) -> Result<()> {
    check_matrix_len(path, rows, cols, data.len())?;
    write_atomically(path, |w| {
        w.write_all(&npy_header(descr, &[rows, cols as u64]))?;
        for &v in data {
            w.write_all(&le_bytes(v))?;
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
    /// The temp file and its commit; a stable temp file for checkpointed runs (kept when
    /// the writer is dropped unfinished: `memodiff resume` reopens it with
    /// [`reopen`](Self::reopen)).
    file: AtomicFile,
    rows: u64,
    cols: usize,
    rows_written: u64,
}

impl NpyStreamWriter {
    /// [`create`](Self::create) with the temp file at the stable name `temp`, kept (not
    /// removed) when the writer is dropped unfinished, so that a checkpointed run can
    /// [`persist`](Self::persist) it and a resumed run can [`reopen`](Self::reopen) it.
    pub fn create_persistent(path: &Path, temp: &Path, rows: u64, cols: usize) -> Result<Self> {
        let mut this = Self::create(path, rows, cols)?;
        // Move the freshly created temp file (header only) to its stable name.
        this.file.keep_temp_at(temp)?;
        Ok(this)
    }

    /// Reopen the temp file `temp` of a persistent writer of a (rows, cols) array to
    /// `path`, keeping its first `rows_written` rows and cutting off anything after them
    /// (rows written after the checkpoint that recorded `rows_written`).
    pub fn reopen(
        path: &Path,
        temp: &Path,
        rows: u64,
        cols: usize,
        rows_written: u64,
    ) -> Result<Self> {
        let header = npy_header("<f4", &[rows, cols as u64]);
        let bad = |why: String| Error::Output(format!("cannot resume {}: {why}", temp.display()));
        if cols == 0 || rows_written > rows {
            return Err(bad(format!(
                "{rows_written} of {rows} rows of {cols} columns"
            )));
        }
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(temp)
            .map_err(|e| Error::io(temp, e))?;
        let mut head = vec![0u8; header.len()];
        io::Read::read_exact(&mut file, &mut head).map_err(|e| Error::io(temp, e))?;
        if head != header {
            return Err(bad(format!(
                "it is not the start of a {rows} x {cols} <f4 array"
            )));
        }
        let keep = header.len() as u64 + rows_written * cols as u64 * 4;
        let len = file.metadata().map_err(|e| Error::io(temp, e))?.len();
        if len < keep {
            return Err(bad(format!(
                "it holds {len} bytes, fewer than the {keep} of its {rows_written} saved rows"
            )));
        }
        file.set_len(keep).map_err(|e| Error::io(temp, e))?;
        io::Seek::seek(&mut file, io::SeekFrom::Start(keep)).map_err(|e| Error::io(temp, e))?;
        Ok(Self {
            file: AtomicFile::resume(path, temp, file),
            rows,
            cols,
            rows_written,
        })
    }

    /// Flush the rows written so far and sync them to disk (for a checkpoint).
    pub fn persist(&mut self) -> Result<()> {
        self.file.sync_data()
    }

    /// Start writing a (rows, cols) `<f4` array to `path` (via a temp file).
    pub fn create(path: &Path, rows: u64, cols: usize) -> Result<Self> {
        if cols == 0 {
            return Err(Error::Output(format!(
                "cannot write {}: an array needs at least one column",
                path.display()
            )));
        }
        let mut file = AtomicFile::create(path)?;
        let header = npy_header("<f4", &[rows, cols as u64]);
        file.write(|w| w.write_all(&header))?;
        Ok(Self {
            file,
            rows,
            cols,
            rows_written: 0,
        })
    }

    /// Rows written so far.
    pub fn rows_written(&self) -> u64 {
        self.rows_written
    }

    /// Append whole rows (`data.len()` must be a multiple of `cols`), in order.
    pub fn write_rows(&mut self, data: &[f32]) -> Result<()> {
        if !data.len().is_multiple_of(self.cols) {
            return Err(Error::Output(format!(
                "cannot write {}: {} values are not whole rows of {} columns",
                self.file.path().display(),
                data.len(),
                self.cols
            )));
        }
        let new_rows = (data.len() / self.cols) as u64;
        if self.rows_written + new_rows > self.rows {
            return Err(Error::Output(format!(
                "cannot write {}: {} rows would exceed the {} rows declared",
                self.file.path().display(),
                self.rows_written + new_rows,
                self.rows
            )));
        }
        self.file.write(|w| {
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
    /// On error nothing is left at `path` (nor the temp file). A persistent writer's file
    /// (a checkpointed run's) is synced and kept at its stable temp name instead, which
    /// is returned: the run's commit moves it into place with the other files.
    pub fn finish(mut self) -> Result<Option<PathBuf>> {
        if self.rows_written != self.rows {
            let message = format!(
                "cannot finish {}: only {} of the {} declared rows were written",
                self.file.path().display(),
                self.rows_written,
                self.rows
            );
            self.file.abandon();
            return Err(Error::Output(message));
        }
        if self.file.is_kept() {
            self.file.sync_data()?;
            return Ok(Some(self.file.temp_path().to_path_buf()));
        }
        self.file.commit().map(|()| None)
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
    /// `uint8` (images in their native form).
    U8(Vec<u8>),
    /// Any other integer dtype (labels), widened.
    I64(Vec<i64>),
}

impl NpyValues {
    /// The values as f32 when the array holds floats; `None` for integers.
    pub(crate) fn into_f32(self) -> Option<Vec<f32>> {
        match self {
            NpyValues::F32(v) => Some(v),
            NpyValues::F64(v) => Some(v.into_iter().map(|x| x as f32).collect()),
            NpyValues::U8(_) | NpyValues::I64(_) => None,
        }
    }
}

/// A C-order array of numbers read from a `.npy` file.
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

/// Longest `.npy` header text accepted. NumPy writes 118 bytes or fewer for any array
/// memodiff reads and refuses more than 10,000 by default; the cap keeps a lying header
/// length from costing memory.
const MAX_NPY_HEADER: u64 = 1 << 16;

/// Read a `.npy` file holding a float32, float64 or integer array (either byte order) in
/// C order, of any rank. Rejects other dtypes (complex, bool, strings, float16), Fortran
/// order, and data that is shorter or longer than the shape says.
///
/// Memory: the header is read first and the size its shape implies is compared with the
/// file's length before anything is allocated, so a header that lies (a huge shape in a
/// small file) costs nothing; a valid file costs one array of its data's size.
pub(crate) fn read_npy(path: &Path) -> std::result::Result<NpyArray, NpyReadError> {
    let file = File::open(path).map_err(NpyReadError::Io)?;
    let len = file.metadata().map_err(NpyReadError::Io)?.len();
    read_npy_from(io::BufReader::new(file), len)
}

/// [`read_npy`] on the bytes of a file already in memory.
pub(crate) fn parse_npy(bytes: &[u8]) -> std::result::Result<NpyArray, NpyReadError> {
    read_npy_from(bytes, bytes.len() as u64)
}

/// Read as many bytes as are there, up to `buf.len()`.
fn read_up_to(r: &mut impl io::Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The `.npy` reader proper: `r` yields a file of `len` bytes.
fn read_npy_from(mut r: impl io::Read, len: u64) -> std::result::Result<NpyArray, NpyReadError> {
    const MAGIC: &[u8] = b"\x93NUMPY";
    let bad = |m: String| NpyReadError::Format(m);

    let mut pre = [0u8; 12];
    let got = read_up_to(&mut r, &mut pre[..8]).map_err(NpyReadError::Io)?;
    if !pre[..got.min(6)].starts_with(&MAGIC[..got.min(6)]) || got == 0 {
        return Err(bad(
            "not a NumPy .npy file (it does not start with \\x93NUMPY)".into(),
        ));
    }
    if got < 8 {
        return Err(bad(format!(
            "the .npy header is truncated: the file has only {len} bytes"
        )));
    }
    let (major, minor) = (pre[6], pre[7]);
    let prefix = match (major, minor) {
        (1, 0) => 10,
        (2, 0) | (3, 0) => 12,
        _ => {
            return Err(bad(format!(
                "unsupported .npy format version {major}.{minor} (expected 1.0, 2.0 or 3.0)"
            )))
        }
    };
    if read_up_to(&mut r, &mut pre[8..prefix]).map_err(NpyReadError::Io)? < prefix - 8 {
        return Err(bad(format!(
            "the .npy header is truncated: the file has only {len} bytes"
        )));
    }
    let header_len = if prefix == 10 {
        u64::from(u16::from_le_bytes([pre[8], pre[9]]))
    } else {
        u64::from(u32::from_le_bytes([pre[8], pre[9], pre[10], pre[11]]))
    };
    let after_prefix = len.saturating_sub(prefix as u64);
    if header_len > after_prefix {
        return Err(bad(format!(
            "the .npy header is truncated: it declares {header_len} bytes, only \
             {after_prefix} follow"
        )));
    }
    if header_len > MAX_NPY_HEADER {
        return Err(bad(format!(
            "the .npy header declares {header_len} bytes, more than the {MAX_NPY_HEADER} \
             accepted"
        )));
    }
    let mut text = vec![0u8; header_len as usize];
    r.read_exact(&mut text).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            bad("the .npy header is truncated".into())
        } else {
            NpyReadError::Io(e)
        }
    })?;
    let text = std::str::from_utf8(&text).map_err(|e| {
        bad(format!(
            "invalid .npy header: byte {} is not text",
            e.valid_up_to()
        ))
    })?;
    let header = parse_npy_header(text).map_err(|m| bad(format!("invalid .npy header: {m}")))?;

    let (kind, size, big_endian) = match number_descr(&header.descr) {
        Some(v) => v,
        None => {
            return Err(bad(format!(
                "dtype '{}' is not supported (expected float32 '<f4' or float64 '<f8', or an \
                 integer type)",
                short_escaped(&header.descr)
            )))
        }
    };
    if header.fortran_order {
        return Err(bad(
            "the array is in Fortran order; save it in C order (e.g. np.ascontiguousarray)".into(),
        ));
    }
    let shape: Vec<usize> = header
        .shape
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| bad(format!("shape {} is too large", shape_text(&header.shape))))?;
    // The size the shape implies, against the bytes the file really has, before allocating.
    let expected_bytes = header
        .shape
        .iter()
        .try_fold(size as u128, |acc, &d| acc.checked_mul(u128::from(d)));
    let data_len = after_prefix - header_len;
    let expected_bytes = match expected_bytes {
        Some(b) if b <= u128::from(data_len) => b as u64,
        Some(b) => {
            return Err(bad(format!(
                "data is truncated: shape {} needs {b} bytes, only {data_len} follow the header",
                shape_text(&shape)
            )))
        }
        None => {
            return Err(bad(format!(
                "data is truncated: shape {} needs more than 2^128 bytes, only {data_len} \
                 follow the header",
                shape_text(&shape)
            )))
        }
    };
    if data_len > expected_bytes {
        return Err(bad(format!(
            "{} unexpected bytes after the data of shape {}",
            data_len - expected_bytes,
            shape_text(&shape)
        )));
    }
    let count = (expected_bytes / size as u64) as usize;
    let truncated = |e: io::Error| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            bad(format!(
                "data is truncated: shape {} needs {expected_bytes} bytes, fewer follow the header",
                shape_text(&shape)
            ))
        } else {
            NpyReadError::Io(e)
        }
    };
    let swap = big_endian != cfg!(target_endian = "big");
    if kind != 'f' {
        let mut bytes = vec![0u8; expected_bytes as usize];
        r.read_exact(&mut bytes).map_err(truncated)?;
        return Ok(NpyArray {
            shape,
            values: integer_values(kind, size, swap, &bytes)?,
        });
    }
    let values = if size == 4 {
        let mut v = vec![0f32; count];
        r.read_exact(bytemuck::cast_slice_mut(&mut v))
            .map_err(truncated)?;
        if swap {
            v.iter_mut()
                .for_each(|x| *x = f32::from_bits(x.to_bits().swap_bytes()));
        }
        NpyValues::F32(v)
    } else {
        let mut v = vec![0f64; count];
        r.read_exact(bytemuck::cast_slice_mut(&mut v))
            .map_err(truncated)?;
        if swap {
            v.iter_mut()
                .for_each(|x| *x = f64::from_bits(x.to_bits().swap_bytes()));
        }
        NpyValues::F64(v)
    };
    Ok(NpyArray { shape, values })
}

/// `(kind, item size, big endian)` of a float32/float64 or integer descr such as `<f4`,
/// `>f8`, `|u1` or `<i8`: kind `'f'`, `'i'` (signed) or `'u'` (unsigned).
fn number_descr(descr: &str) -> Option<(char, usize, bool)> {
    let big = match descr.as_bytes().first()? {
        b'<' => false,
        b'>' => true,
        b'=' => cfg!(target_endian = "big"),
        b'|' => false,
        _ => return None,
    };
    let order_free = descr.starts_with('|');
    let found = match &descr[1..] {
        "f4" => ('f', 4),
        "f8" => ('f', 8),
        "i1" => ('i', 1),
        "u1" => ('u', 1),
        "i2" => ('i', 2),
        "u2" => ('u', 2),
        "i4" => ('i', 4),
        "u4" => ('u', 4),
        "i8" => ('i', 8),
        "u8" => ('u', 8),
        _ => return None,
    };
    // '|' (no byte order) only for one-byte types, as NumPy writes them.
    (!order_free || found.1 == 1).then_some((found.0, found.1, big))
}

/// The integers of `bytes` (items of `size` bytes, byte-swapped where `swap`): `uint8` as
/// it is, every other type widened to i64 (a `uint64` beyond i64 is refused).
fn integer_values(
    kind: char,
    size: usize,
    swap: bool,
    bytes: &[u8],
) -> std::result::Result<NpyValues, NpyReadError> {
    if kind == 'u' && size == 1 {
        return Ok(NpyValues::U8(bytes.to_vec()));
    }
    let mut out = Vec::with_capacity(bytes.len() / size);
    for (i, item) in bytes.chunks_exact(size).enumerate() {
        let mut raw = [0u8; 8];
        raw[..size].copy_from_slice(item);
        if swap {
            raw[..size].reverse();
        }
        let unsigned = u64::from_le_bytes(raw);
        let value = if kind == 'u' {
            i64::try_from(unsigned).map_err(|_| {
                NpyReadError::Format(format!("value {i} ({unsigned}) is too large for an i64"))
            })?
        } else {
            // Sign-extend from `size` bytes.
            let shift = 64 - 8 * size as u32;
            ((unsigned << shift) as i64) >> shift
        };
        out.push(value);
    }
    Ok(NpyValues::I64(out))
}

/// At most 40 characters of `text`, escaped so that a message stays on one line.
pub(crate) fn short_escaped(text: &str) -> String {
    let mut out: String = text.chars().take(40).flat_map(char::escape_debug).collect();
    if text.chars().count() > 40 {
        out.push_str("...");
    }
    out
}

/// The three fields of an `.npy` header.
#[derive(Debug)]
struct NpyHeaderFields {
    descr: String,
    fortran_order: bool,
    shape: Vec<u64>,
}

/// Parse the header dict, a Python literal such as
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }` followed by spaces and
/// a newline. Only what NumPy writes for a plain dtype is accepted: exactly the three keys,
/// a string descr, a bool and a tuple (or list) of integers. No recursion, one pass.
fn parse_npy_header(text: &str) -> std::result::Result<NpyHeaderFields, String> {
    let b = text.as_bytes();
    let mut i = 0usize;
    let ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    let found = |i: usize| -> String {
        if i >= b.len() {
            "the end of the header".into()
        } else {
            let end = (i + 12).min(b.len());
            format!(
                "\"{}\" at byte {i}",
                String::from_utf8_lossy(&b[i..end]).escape_debug()
            )
        }
    };
    let expect = |i: &mut usize, c: u8| -> std::result::Result<(), String> {
        if *i < b.len() && b[*i] == c {
            *i += 1;
            Ok(())
        } else {
            Err(format!("expected '{}', found {}", c as char, found(*i)))
        }
    };
    let string = |i: &mut usize| -> std::result::Result<String, String> {
        let quote = match b.get(*i) {
            Some(&q @ (b'\'' | b'"')) => q,
            _ => return Err(format!("expected a quoted string, found {}", found(*i))),
        };
        let start = *i + 1;
        let len = b[start..]
            .iter()
            .position(|&c| c == quote || c == b'\n')
            .filter(|&k| b[start + k] == quote)
            .ok_or_else(|| format!("unterminated string at byte {}", *i))?;
        *i = start + len + 1;
        Ok(text[start..start + len].to_string())
    };

    ws(&mut i);
    expect(&mut i, b'{')?;
    let (mut descr, mut fortran_order, mut shape) = (None, None, None);
    loop {
        ws(&mut i);
        if b.get(i) == Some(&b'}') {
            i += 1;
            break;
        }
        let key_at = i;
        let key = string(&mut i)?;
        ws(&mut i);
        expect(&mut i, b':')?;
        ws(&mut i);
        let duplicate = || format!("key '{}' appears twice", short_escaped(&key));
        match key.as_str() {
            "descr" => {
                if b.get(i) == Some(&b'[') {
                    return Err(
                        "dtype is a structured (record) dtype, which is not supported \
                         (expected float32 '<f4' or float64 '<f8')"
                            .into(),
                    );
                }
                if descr.replace(string(&mut i)?).is_some() {
                    return Err(duplicate());
                }
            }
            "fortran_order" => {
                let value = if b[i..].starts_with(b"True") {
                    true
                } else if b[i..].starts_with(b"False") {
                    false
                } else {
                    return Err(format!(
                        "fortran_order must be True or False, found {}",
                        found(i)
                    ));
                };
                i += if value { 4 } else { 5 };
                if fortran_order.replace(value).is_some() {
                    return Err(duplicate());
                }
            }
            "shape" => {
                let close = match b.get(i) {
                    Some(b'(') => b')',
                    Some(b'[') => b']',
                    _ => return Err(format!("shape must be a tuple, found {}", found(i))),
                };
                i += 1;
                let mut dims = Vec::new();
                loop {
                    ws(&mut i);
                    if b.get(i) == Some(&close) {
                        i += 1;
                        break;
                    }
                    let start = i;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                    if start == i {
                        return Err(format!(
                            "shape must hold non-negative integers, found {}",
                            found(start)
                        ));
                    }
                    let dim: u64 = text[start..i].parse().map_err(|_| {
                        format!(
                            "shape value {} is too large",
                            short_escaped(&text[start..i])
                        )
                    })?;
                    dims.push(dim);
                    if b.get(i) == Some(&b'L') {
                        i += 1; // Python 2 long integers, e.g. (3L, 2L)
                    }
                    ws(&mut i);
                    match b.get(i) {
                        Some(&b',') => i += 1,
                        Some(&c) if c == close => {}
                        _ => {
                            return Err(format!(
                                "expected ',' or '{}' in the shape, found {}",
                                close as char,
                                found(i)
                            ))
                        }
                    }
                }
                if shape.replace(dims).is_some() {
                    return Err(duplicate());
                }
            }
            _ => {
                return Err(format!(
                    "unexpected key '{}' at byte {key_at}",
                    short_escaped(&key)
                ))
            }
        }
        ws(&mut i);
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => {}
            _ => return Err(format!("expected ',' or '}}', found {}", found(i))),
        }
    }
    ws(&mut i);
    if i < b.len() {
        return Err(format!("unexpected text after the dict: {}", found(i)));
    }
    let missing = |k: &str| format!("the dict is missing key '{k}'");
    Ok(NpyHeaderFields {
        descr: descr.ok_or_else(|| missing("descr"))?,
        fortran_order: fortran_order.ok_or_else(|| missing("fortran_order"))?,
        shape: shape.ok_or_else(|| missing("shape"))?,
    })
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
        NpyValues::F64(_) | NpyValues::U8(_) | NpyValues::I64(_) => Err(Error::Output(format!(
            "{}: dtype is not float32, expected float32 '<f4'",
            path.display()
        ))),
    }
}

/// Read a float32 or float64 `.npy` array (any rank, C order) as f32: its shape and
/// row-major values. A float64 value that is not finite in f32 (NaN, inf, or beyond
/// ±3.4e38) is refused with its index, like a float32 one.
pub fn read_npy_as_f32(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let array = read_npy(path).map_err(|e| match e {
        NpyReadError::Io(e) => Error::io(path, e),
        NpyReadError::Format(m) => Error::Output(format!("{}: {m}", path.display())),
    })?;
    let values: Vec<f32> = array.values.into_f32().ok_or_else(|| {
        Error::Output(format!(
            "{}: the array holds integers, expected float32 or float64",
            path.display()
        ))
    })?;
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::Output(format!(
            "{}: value {i} is not finite in float32 (NaN, inf or beyond ±3.4e38)",
            path.display()
        )));
    }
    Ok((array.shape, values))
}

/// The first `rows` rows (fewer if the file has fewer) of an f32 `.npy` array of shape
/// (P, `dim`), as `memodiff` writes it, without reading the rest of the file. The header is
/// checked to be exactly the one [`NpyStreamWriter`] writes for that shape.
pub fn read_leading_rows_f32(path: &Path, dim: usize, rows: usize) -> Result<Vec<f32>> {
    use std::io::{Read, Seek};
    let mut file = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut prefix = vec![0u8; 10];
    file.read_exact(&mut prefix)
        .map_err(|e| Error::io(path, e))?;
    let header_len = 10 + u64::from(u16::from_le_bytes([prefix[8], prefix[9]]));
    if header_len > len {
        return Err(Error::Output(format!(
            "{}: truncated .npy header",
            path.display()
        )));
    }
    let header_bytes = usize::try_from(header_len).expect("a u16 plus 10 fits");
    let data_rows = (len - header_len) / (4 * dim as u64);
    let expected = npy_header("<f4", &[data_rows, dim as u64]);
    let mut header = vec![0u8; header_bytes];
    file.seek(io::SeekFrom::Start(0))
        .and_then(|_| file.read_exact(&mut header))
        .map_err(|e| Error::io(path, e))?;
    if header != expected {
        return Err(Error::Output(format!(
            "{}: not a float32 (P, {dim}) array as memodiff writes it",
            path.display()
        )));
    }
    let take = rows.min(usize::try_from(data_rows).unwrap_or(usize::MAX));
    let mut bytes = vec![0u8; take * dim * 4];
    file.read_exact(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

#[cfg(test)]
mod tests;
