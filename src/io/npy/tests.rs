//! Tests of the `.npy` writers and the bounded reader.

use super::*;
use crate::io::*;

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
fn leading_rows_are_read_without_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.npy");
    let values = sample(5, 3);
    write_npy_f32(&path, 5, 3, &values).unwrap();
    assert_eq!(read_leading_rows_f32(&path, 3, 2).unwrap(), values[..6]);
    assert_eq!(read_leading_rows_f32(&path, 3, 9).unwrap(), values);
    assert!(read_leading_rows_f32(&path, 2, 1).is_err());
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
    assert!(err.contains("not float32"), "{err}");
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
fn persistent_writer_keeps_its_temp_file_and_reopens_at_a_row_count() {
    let dir = tempfile::tempdir().unwrap();
    let (path, temp) = (dir.path().join("x.npy"), dir.path().join(".x.npy.partial"));
    let data: Vec<f32> = (0..10).map(|i| i as f32).collect();
    let mut w = NpyStreamWriter::create_persistent(&path, &temp, 5, 2).unwrap();
    w.write_rows(&data[..6]).unwrap();
    w.persist().unwrap();
    w.write_rows(&[99.0; 2]).unwrap(); // after the "checkpoint": cut off below
    drop(w);
    assert_eq!(entries(dir.path()), vec![".x.npy.partial"]);
    let mut w = NpyStreamWriter::reopen(&path, &temp, 5, 2, 3).unwrap();
    assert_eq!(w.rows_written(), 3);
    w.write_rows(&data[6..]).unwrap();
    // Finished, the file stays at its stable name: the run's commit moves it into place.
    assert_eq!(w.finish().unwrap().as_deref(), Some(temp.as_path()));
    assert_eq!(read_npy_f32(&temp).unwrap(), (vec![5, 2], data));
    assert_eq!(entries(dir.path()), vec![".x.npy.partial"]);
    // A file of another shape, or fewer rows than saved, is refused.
    assert!(NpyStreamWriter::reopen(&path, &temp, 4, 2, 1).is_err());
    assert!(NpyStreamWriter::reopen(&path, &temp, 5, 2, 6).is_err());
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

#[test]
fn unwritable_folder_is_an_io_error_and_leaves_nothing() {
    // A "folder" that is a regular file cannot hold files, even for root (a
    // permission-based test would check nothing when run as root, as CI is).
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("file.txt");
    fs::write(&not_a_dir, b"x").unwrap();
    let path = not_a_dir.join("out.npy");
    let err = write_npy_f32(&path, 1, 1, &[1.0]).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("out.npy"), "{err}");
    let err = NpyStreamWriter::create(&path, 1, 1).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert_eq!(entries(dir.path()), vec!["file.txt"]);
    assert_eq!(fs::read(&not_a_dir).unwrap(), b"x");
}

#[test]
fn integer_arrays_are_read_widened_with_uint8_kept() {
    let header = |descr: &str, shape: &str| {
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}")
    };
    // uint8 as it is.
    let array = parse_npy(&with_dict(&header("|u1", "(3,)"), &[0, 7, 255])).unwrap();
    assert_eq!(array.values, NpyValues::U8(vec![0, 7, 255]));
    // Signed types sign-extended, either byte order.
    let little: Vec<u8> = [-2i16, 300].iter().flat_map(|v| v.to_le_bytes()).collect();
    let array = parse_npy(&with_dict(&header("<i2", "(2,)"), &little)).unwrap();
    assert_eq!(array.values, NpyValues::I64(vec![-2, 300]));
    let big: Vec<u8> = [-5i32, 70000]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect();
    let array = parse_npy(&with_dict(&header(">i4", "(2,)"), &big)).unwrap();
    assert_eq!(array.values, NpyValues::I64(vec![-5, 70000]));
    // A uint64 beyond i64 is refused; '|' only for one-byte types; bool is not a number.
    let huge = u64::MAX.to_le_bytes();
    assert!(parse_npy(&with_dict(&header("<u8", "(1,)"), &huge)).is_err());
    assert!(parse_npy(&with_dict(&header("|i4", "(1,)"), &[0; 4])).is_err());
    assert!(parse_npy(&with_dict(&header("|b1", "(1,)"), &[1])).is_err());
}

/// A v1.0 `.npy` file: the header text `dict`, padded, then `data`.
fn with_dict(dict: &str, data: &[u8]) -> Vec<u8> {
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
