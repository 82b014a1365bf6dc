//! Property-based fuzzing of the `.npy` and `.csv` dataset readers: arbitrary bytes and
//! mutations of valid files (flipped, truncated, inserted and deleted bytes, edited header
//! text, lying header lengths, huge shapes). Each input must give a dataset or a one-line
//! error: never a panic, never a hang, and never more memory than a small multiple of the
//! input's size (measured by a counting global allocator, per thread).
//!
//! The normal suite runs a few hundred cases per property. The long run:
//!
//! ```text
//! PROPTEST_CASES=2000000 cargo test --release --test fuzz_readers -- --ignored --nocapture
//! ```

mod common;

use memodiff::testing::model::dataset::Dataset;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// A global allocator that counts, per thread, the bytes in use, their peak and the largest
// single allocation.
// ---------------------------------------------------------------------------------------

struct Counting;

thread_local! {
    static IN_USE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note_alloc(size: usize) {
    let _ = IN_USE.try_with(|c| {
        let now = c.get() + size as isize;
        c.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

fn note_dealloc(size: usize) {
    let _ = IN_USE.try_with(|c| c.set(c.get() - size as isize));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note_dealloc(layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_dealloc(layout.size());
        note_alloc(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// What a call cost: peak extra bytes in use on this thread, largest allocation, time.
struct Cost {
    peak: usize,
    largest: usize,
    elapsed: Duration,
}

fn measured<T>(f: impl FnOnce() -> T) -> (T, Cost) {
    let start = IN_USE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    LARGEST.with(|l| l.set(0));
    let t = Instant::now();
    let value = f();
    let elapsed = t.elapsed();
    let peak = (PEAK.with(Cell::get) - start).max(0) as usize;
    let largest = LARGEST.with(Cell::get);
    (
        value,
        Cost {
            peak,
            largest,
            elapsed,
        },
    )
}

/// Memory a reader may use for an input of `len` bytes: four times the input (an f32 array
/// and its f64 copy hold 3x the data of an `.npy`; a `.csv` needs at most 8 bytes of f64
/// per 2 bytes of text) plus a little for messages.
fn memory_bound(len: usize) -> usize {
    4 * len + 16 * 1024
}

/// The checks every input must pass, whatever the reader's verdict.
fn check(
    kind: &str,
    bytes: &[u8],
    read: fn(&str, &[u8]) -> memodiff::Result<Dataset>,
) -> Result<(), TestCaseError> {
    let (result, cost) = measured(|| read(kind, bytes));
    let bound = memory_bound(bytes.len());
    prop_assert!(
        cost.peak <= bound && cost.largest <= bound,
        "{kind}: {} bytes of input used {} bytes at peak (largest allocation {}), bound {bound}",
        bytes.len(),
        cost.peak,
        cost.largest
    );
    prop_assert!(
        cost.elapsed < Duration::from_secs(5),
        "{kind}: {} bytes took {:?}",
        bytes.len(),
        cost.elapsed
    );
    match result {
        Ok(d) => {
            prop_assert!(d.dim >= 1 && !d.points.is_empty());
            prop_assert_eq!(d.points.len() % d.dim, 0);
            prop_assert!(d.points.iter().all(|v| v.is_finite()));
        }
        Err(e) => {
            let text = e.to_string();
            prop_assert!(
                !text.is_empty() && !text.contains('\n') && !text.contains('\r'),
                "{kind}: message is not one line: {text:?}"
            );
            prop_assert!(text.len() < 400, "{kind}: message too long: {text:?}");
            prop_assert!(
                text.contains(kind),
                "{kind}: message lacks the name: {text}"
            );
        }
    }
    Ok(())
}

fn check_npy(bytes: &[u8]) -> Result<(), TestCaseError> {
    check("fuzz.npy", bytes, Dataset::from_npy_bytes)
}

fn check_csv(bytes: &[u8]) -> Result<(), TestCaseError> {
    check("fuzz.csv", bytes, Dataset::from_csv_bytes)
}

// ---------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------

/// An edit of a byte string; positions are taken modulo its length.
#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        at: usize,
        bit: u8,
    },
    Set {
        at: usize,
        byte: u8,
    },
    Truncate {
        at: usize,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Delete {
        at: usize,
        n: usize,
    },
    /// Overwrite the `.npy` header-length field (bytes 8..12) with this value.
    HeaderLen(u32),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1usize..32).prop_map(|(at, n)| Mutation::Delete { at, n }),
        prop_oneof![any::<u32>(), 0u32..200].prop_map(Mutation::HeaderLen),
    ]
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len();
        match m {
            Mutation::Flip { at, bit } if len > 0 => bytes[at % len] ^= 1 << bit,
            Mutation::Set { at, byte } if len > 0 => bytes[at % len] = *byte,
            Mutation::Truncate { at } => bytes.truncate(at % (len + 1)),
            Mutation::Insert { at, bytes: new } => {
                let at = at % (len + 1);
                bytes.splice(at..at, new.iter().copied());
            }
            Mutation::Delete { at, n } if len > 0 => {
                let at = at % len;
                bytes.drain(at..(at + n).min(len));
            }
            Mutation::HeaderLen(v) if len >= 12 => {
                if bytes[6] == 1 {
                    bytes[8..10].copy_from_slice(&(*v as u16).to_le_bytes());
                } else {
                    bytes[8..12].copy_from_slice(&v.to_le_bytes());
                }
            }
            _ => {}
        }
    }
    bytes
}

/// A shape dimension: mostly small, sometimes absurd.
fn dimension() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => 0u64..6,
        1 => Just(1_000_000_000_000u64),
        1 => Just(u64::MAX),
        1 => Just(1u64 << 62),
        1 => Just(1u64 << 32),
        1 => any::<u64>(),
    ]
}

/// The fields of an `.npy` header and how the dict text is spelled.
#[derive(Debug, Clone)]
struct NpySpec {
    version: u8,
    descr: &'static str,
    fortran: bool,
    shape: Vec<u64>,
    double_quotes: bool,
    trailing_comma: bool,
    key_order: usize,
    /// Data bytes relative to what the shape needs (clamped), for lying headers.
    data_delta: i64,
    seed: u64,
}

/// The shape tuple: mostly (N, D) matrices, some vectors, some of any rank with extreme
/// dimensions.
fn npy_shape() -> impl Strategy<Value = Vec<u64>> {
    prop_oneof![
        3 => (0u64..40, 0u64..5).prop_map(|(n, d)| vec![n, d]),
        1 => (0u64..40).prop_map(|n| vec![n]),
        2 => prop::collection::vec(dimension(), 0..4),
    ]
}

prop_compose! {
    fn npy_spec()(
        version in prop_oneof![6 => Just(1u8), 1 => Just(2u8), 1 => Just(3u8), 1 => 0u8..5],
        descr in prop::sample::select(vec![
            "<f4", "<f8", ">f4", ">f8", "=f4", "<f2", "<i4", "|u1", "<c8", "f4", "<f16", "",
        ]),
        fortran in prop::bool::weighted(0.1),
        shape in npy_shape(),
        double_quotes in any::<bool>(),
        trailing_comma in any::<bool>(),
        key_order in 0usize..6,
        data_delta in prop_oneof![6 => Just(0i64), 1 => -16i64..16],
        seed in any::<u64>(),
    ) -> NpySpec {
        NpySpec { version, descr, fortran, shape, double_quotes, trailing_comma, key_order,
                  data_delta, seed }
    }
}

/// At most this many data bytes in a generated file, whatever its shape claims.
const MAX_DATA: u64 = 1 << 14;

fn npy_bytes(spec: &NpySpec) -> Vec<u8> {
    let q = if spec.double_quotes { '"' } else { '\'' };
    let shape = match &spec.shape[..] {
        [n] => format!("({n},)"),
        dims => format!(
            "({})",
            dims.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut fields = [
        format!("{q}descr{q}: {q}{}{q}", spec.descr),
        format!(
            "{q}fortran_order{q}: {}",
            if spec.fortran { "True" } else { "False" }
        ),
        format!("{q}shape{q}: {shape}"),
    ];
    let order = spec.key_order;
    fields.swap(0, order % 3);
    fields.swap(1, 1 + (order / 3) % 2);
    let mut dict = format!("{{{}", fields.join(", "));
    if spec.trailing_comma {
        dict.push_str(", ");
    }
    dict.push('}');
    let prefix = if spec.version == 1 { 10 } else { 12 };
    while !(prefix + dict.len() + 1).is_multiple_of(64) {
        dict.push(' ');
    }
    dict.push('\n');
    let mut out = b"\x93NUMPY".to_vec();
    out.extend_from_slice(&[spec.version, 0]);
    if spec.version == 1 {
        out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(dict.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    let item = if spec.descr.ends_with('8') { 8u64 } else { 4 };
    let needed = spec
        .shape
        .iter()
        .try_fold(item, |a, &d| a.checked_mul(d))
        .unwrap_or(u64::MAX)
        .min(MAX_DATA);
    let n = (needed as i64 + spec.data_delta).clamp(0, MAX_DATA as i64) as usize;
    // Plausible floats mostly (a simple LCG), so that valid files often load.
    let mut x = spec.seed | 1;
    let mut data = Vec::with_capacity(n);
    while data.len() < n {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let v = ((x >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 8.0;
        if item == 8 {
            data.extend_from_slice(&v.to_le_bytes());
        } else {
            data.extend_from_slice(&(v as f32).to_le_bytes());
        }
    }
    data.truncate(n);
    out.extend_from_slice(&data);
    out
}

fn npy_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => npy_spec().prop_map(|s| npy_bytes(&s)),
        6 => (npy_spec(), prop::collection::vec(mutation(), 1..5))
            .prop_map(|(s, m)| apply(npy_bytes(&s), &m)),
        1 => prop::collection::vec(any::<u8>(), 0..256),
        1 => (prop::collection::vec(any::<u8>(), 0..256))
            .prop_map(|tail| [b"\x93NUMPY\x01\x00".as_slice(), &tail].concat()),
    ]
}

fn csv_cell() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (-1e6f64..1e6).prop_map(|v| v.to_string()),
        3 => (-1000i64..1000).prop_map(|v| v.to_string()),
        1 => prop::sample::select(vec![
            "nan", "NaN", "inf", "-inf", "1e999", "", " ", "abc", "x", "0x10", "1.5.2",
            "--1", "+3", " 7 ", "\t2", "1e", "\"1\"", "Infinity",
        ])
        .prop_map(String::from),
    ]
}

fn csv_text() -> impl Strategy<Value = Vec<u8>> {
    (
        1usize..5,
        prop::collection::vec(prop::collection::vec(csv_cell(), 1..6), 0..30),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        0usize..3,
    )
        .prop_map(|(dim, rows, header, crlf, bom, blank_tail)| {
            let nl = if crlf { "\r\n" } else { "\n" };
            let mut text = String::new();
            if bom {
                text.push('\u{feff}');
            }
            if header {
                let names: Vec<String> = (0..dim).map(|j| format!("c{j}")).collect();
                text.push_str(&names.join(","));
                text.push_str(nl);
            }
            for row in rows {
                // Mostly rectangular rows; the cell list decides a ragged one now and then.
                let cells: Vec<String> = if row.len() == 5 {
                    row
                } else {
                    row.into_iter().cycle().take(dim).collect()
                };
                text.push_str(&cells.join(","));
                text.push_str(nl);
            }
            for _ in 0..blank_tail {
                text.push_str(nl);
            }
            text.into_bytes()
        })
}

fn csv_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => csv_text(),
        5 => (csv_text(), prop::collection::vec(mutation(), 1..5))
            .prop_map(|(t, m)| apply(t, &m)),
        2 => "[0-9eE.,+\\-naifNIy \r\n\t]{0,300}".prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..256),
    ]
}

// ---------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------

/// A valid generated `.npy` file loads exactly as the npyz crate reads it.
fn check_npy_agrees_with_npyz(spec: &NpySpec) -> Result<(), TestCaseError> {
    let bytes = npy_bytes(spec);
    let ours = Dataset::from_npy_bytes("fuzz.npy", &bytes);
    let plain = matches!(spec.descr, "<f4" | "<f8")
        && !spec.fortran
        && spec.data_delta == 0
        && spec.shape.len() == 2
        && spec.shape[0] >= 1
        && spec.shape[1] >= 1
        && spec.shape[0]
            .saturating_mul(spec.shape[1])
            .saturating_mul(8)
            <= MAX_DATA
        && spec.version == 1;
    if plain {
        let reader = npyz::NpyFile::new(&bytes[..]).expect("npyz reads the file");
        let theirs: Vec<f64> = if spec.descr == "<f4" {
            let v: Vec<f32> = reader.into_vec().unwrap();
            v.into_iter().map(f64::from).collect()
        } else {
            reader.into_vec().unwrap()
        };
        let d = ours.map_err(|e| TestCaseError::fail(format!("valid file refused: {e}")))?;
        prop_assert_eq!(d.points, theirs);
        prop_assert_eq!(d.dim as u64, spec.shape[1]);
    }
    Ok(())
}

/// The file path (streaming reader) and the in-memory reader give the same verdict.
fn check_file_equals_bytes(bytes: &[u8], ext: &str) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("fuzz.{ext}"));
    std::fs::write(&path, bytes).unwrap();
    let spec = path.to_str().unwrap();
    let from_file = Dataset::parse(spec);
    let from_bytes = if ext == "npy" {
        Dataset::from_npy_bytes(spec, bytes)
    } else {
        Dataset::from_csv_bytes(spec, bytes)
    };
    match (from_file, from_bytes) {
        (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
        (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
        (a, b) => prop_assert!(false, "file gave {a:?}, bytes gave {b:?}"),
    }
    Ok(())
}

/// Cases for the ignored long run: `PROPTEST_CASES`, default 200,000.
fn long_config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    Config {
        cases,
        max_shrink_iters: 10_000,
        ..Config::default()
    }
}

fn short_config(cases: u32) -> Config {
    Config {
        cases,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(short_config(20_000))]

    #[test]
    fn npy_never_panics_and_stays_bounded(bytes in npy_input()) {
        check_npy(&bytes)?;
    }

    #[test]
    fn csv_never_panics_and_stays_bounded(bytes in csv_input()) {
        check_csv(&bytes)?;
    }

    #[test]
    fn valid_npy_agrees_with_npyz(spec in npy_spec()) {
        check_npy_agrees_with_npyz(&spec)?;
    }
}

proptest! {
    #![proptest_config(short_config(1000))]

    #[test]
    fn npy_file_and_bytes_agree(bytes in npy_input()) {
        check_file_equals_bytes(&bytes, "npy")?;
    }

    #[test]
    fn csv_file_and_bytes_agree(bytes in csv_input()) {
        check_file_equals_bytes(&bytes, "csv")?;
    }
}

proptest! {
    #![proptest_config(long_config())]

    #[test]
    #[ignore = "long fuzz run: PROPTEST_CASES=N cargo test --release --test fuzz_readers -- --ignored"]
    fn long_npy(bytes in npy_input()) {
        check_npy(&bytes)?;
    }

    #[test]
    #[ignore = "long fuzz run: PROPTEST_CASES=N cargo test --release --test fuzz_readers -- --ignored"]
    fn long_csv(bytes in csv_input()) {
        check_csv(&bytes)?;
    }

    #[test]
    #[ignore = "long fuzz run: PROPTEST_CASES=N cargo test --release --test fuzz_readers -- --ignored"]
    fn long_npy_agrees_with_npyz(spec in npy_spec()) {
        check_npy_agrees_with_npyz(&spec)?;
    }
}

/// Hand-picked lying headers: each is refused by comparing with the input's length, before
/// anything of the claimed size is allocated.
#[test]
fn lying_headers_are_refused_without_allocating() {
    let cases: &[(&str, &str)] = &[
        ("(1000000000000, 2)", "needs 8000000000000 bytes"),
        ("(18446744073709551615, 2)", "needs"),
        (
            "(4294967296, 4294967296, 4294967296, 4294967296, 4294967296)",
            "needs more than 2^128 bytes",
        ),
        ("(99999999999999999999, 2)", "too large"),
        ("(3, 2)", "needs 24 bytes, only 8 follow"),
    ];
    for (shape, phrase) in cases {
        let bytes = common::npy::with_dict(&common::npy::f4_dict(shape), &[0; 8]);
        let (result, cost) = measured(|| Dataset::from_npy_bytes("lie.npy", &bytes));
        let e = result.unwrap_err().to_string();
        assert!(e.contains(phrase), "{shape}: {e}");
        assert!(
            cost.largest < 4096,
            "{shape}: allocated {} bytes",
            cost.largest
        );
    }
    // A v2 header claiming 4 GiB of header text in a 16-byte file.
    let mut bytes = b"\x93NUMPY\x02\x00".to_vec();
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    bytes.extend_from_slice(b"{'de");
    let (result, cost) = measured(|| Dataset::from_npy_bytes("lie.npy", &bytes));
    let e = result.unwrap_err().to_string();
    assert!(
        e.contains("header is truncated: it declares 4294967295 bytes"),
        "{e}"
    );
    assert!(cost.largest < 4096, "allocated {} bytes", cost.largest);
}
