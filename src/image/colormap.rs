//! Matplotlib-exact colormaps as 256-entry RGB byte lookup tables.
//!
//! The control points are matplotlib's own (`assets/colormaps/*.csv`, header `x,r,g,b`):
//!
//! - `coolwarm` (33 control points) and `gray` (2) are `LinearSegmentedColormap`s with
//!   N = 256: the float table is built exactly as matplotlib's
//!   `_create_lookup_table(N, data, gamma=1)` builds it (same segment data for r, g, b:
//!   `y0 = y1 = value`);
//! - `viridis`, `magma` and `inferno` are `ListedColormap`s whose 256 rows are the table.
//!
//! Bytes are `(lut * 255).astype(uint8)` (truncation), as `Colormap.__call__(..., bytes=True)`
//! produces them, and [`Colormap::map`] picks the index as matplotlib does for floats.

use serde::Serialize;
use std::sync::OnceLock;

const COOLWARM_CSV: &str = include_str!("../../assets/colormaps/coolwarm.csv");
const VIRIDIS_CSV: &str = include_str!("../../assets/colormaps/viridis.csv");
const MAGMA_CSV: &str = include_str!("../../assets/colormaps/magma.csv");
const INFERNO_CSV: &str = include_str!("../../assets/colormaps/inferno.csv");

/// Number of entries of every table (matplotlib's default `N`).
pub const LUT_SIZE: usize = 256;

/// A 256-entry RGB byte table.
pub type Lut = [[u8; 3]; LUT_SIZE];

/// The colormaps a user can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Colormap {
    /// Diverging blue-white-red (matplotlib `coolwarm`, the reference tutorial's map).
    Coolwarm,
    /// Perceptually uniform, dark blue to yellow.
    Viridis,
    /// Perceptually uniform, black to pale pink.
    Magma,
    /// Perceptually uniform, black to pale yellow.
    Inferno,
    /// Black to white (matplotlib `gray`).
    Gray,
}

impl Colormap {
    /// Every colormap, in declaration order.
    pub const ALL: [Colormap; 5] = [
        Colormap::Coolwarm,
        Colormap::Viridis,
        Colormap::Magma,
        Colormap::Inferno,
        Colormap::Gray,
    ];

    /// The matplotlib name.
    pub fn name(self) -> &'static str {
        match self {
            Colormap::Coolwarm => "coolwarm",
            Colormap::Viridis => "viridis",
            Colormap::Magma => "magma",
            Colormap::Inferno => "inferno",
            Colormap::Gray => "gray",
        }
    }

    /// The 256-entry byte table, identical to matplotlib's `cmap(np.arange(256), bytes=True)`.
    pub fn lut(self) -> Lut {
        static TABLES: OnceLock<[Lut; 5]> = OnceLock::new();
        let tables = TABLES.get_or_init(|| {
            [
                segmented_lut(&parse_csv(COOLWARM_CSV)),
                listed_lut(&parse_csv(VIRIDIS_CSV)),
                listed_lut(&parse_csv(MAGMA_CSV)),
                listed_lut(&parse_csv(INFERNO_CSV)),
                segmented_lut(&[[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]),
            ]
        });
        let i = match self {
            Colormap::Coolwarm => 0,
            Colormap::Viridis => 1,
            Colormap::Magma => 2,
            Colormap::Inferno => 3,
            Colormap::Gray => 4,
        };
        tables[i]
    }

    /// The colour of a normalized value `v` in `[0, 1]`, as `cmap(v, bytes=True)[:3]`.
    /// Values below 0 get the first colour, above 1 the last (matplotlib's default
    /// under/over colours); NaN gets the first colour (matplotlib would make it transparent).
    pub fn map(self, v: f64) -> [u8; 3] {
        self.lut()[lut_index(v)]
    }

    /// Map many values at once (one table lookup per value, the table built once).
    pub fn map_slice(self, values: &[f64]) -> Vec<[u8; 3]> {
        let lut = self.lut();
        values.iter().map(|&v| lut[lut_index(v)]).collect()
    }
}

/// The table index of a normalized float, as matplotlib's `Colormap.__call__` computes it:
/// `xa = v * N; xa[xa == N] = N - 1; under -> 0; over -> N - 1; int truncation`.
pub fn lut_index(v: f64) -> usize {
    if v.is_nan() {
        return 0;
    }
    let n = LUT_SIZE as f64;
    let mut xa = v * n;
    if xa == n {
        xa = n - 1.0;
    }
    if xa < 0.0 {
        0
    } else if xa > n - 1.0 {
        LUT_SIZE - 1
    } else {
        xa as usize // truncation toward zero, like numpy's astype(int)
    }
}

/// Parse `x,r,g,b` rows (after the header) into `[x, r, g, b]`.
fn parse_csv(text: &str) -> Vec<[f64; 4]> {
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut row = [0.0; 4];
            let mut fields = line.split(',');
            for slot in row.iter_mut() {
                *slot = fields
                    .next()
                    .and_then(|f| f.trim().parse::<f64>().ok())
                    .expect("embedded colormap CSV is well formed");
            }
            row
        })
        .collect()
}

/// Float table to bytes: `(lut * 255).astype(uint8)`.
fn to_byte(value: f64) -> u8 {
    (value.clamp(0.0, 1.0) * 255.0) as u8
}

/// A `ListedColormap`: the rows are the table.
fn listed_lut(rows: &[[f64; 4]]) -> Lut {
    assert_eq!(rows.len(), LUT_SIZE, "listed colormap needs 256 rows");
    let mut lut = [[0u8; 3]; LUT_SIZE];
    for (entry, row) in lut.iter_mut().zip(rows) {
        for c in 0..3 {
            entry[c] = to_byte(row[c + 1]);
        }
    }
    lut
}

/// A `LinearSegmentedColormap` with N = 256 and `y0 = y1` for every control point.
fn segmented_lut(rows: &[[f64; 4]]) -> Lut {
    let x: Vec<f64> = rows.iter().map(|r| r[0]).collect();
    let mut lut = [[0u8; 3]; LUT_SIZE];
    for c in 0..3 {
        let y: Vec<f64> = rows.iter().map(|r| r[c + 1]).collect();
        let channel = create_lookup_table(LUT_SIZE, &x, &y);
        for (entry, value) in lut.iter_mut().zip(channel) {
            entry[c] = to_byte(value);
        }
    }
    lut
}

/// matplotlib's `_create_lookup_table(n, data, gamma=1.0)` for `data = (x, y, y)`, float64
/// operation for operation (numpy's `linspace`, `searchsorted(side='left')`, `clip`).
fn create_lookup_table(n: usize, x: &[f64], y: &[f64]) -> Vec<f64> {
    assert!(n >= 2 && x.len() == y.len() && x.len() >= 2);
    assert!(
        x[0] == 0.0 && x[x.len() - 1] == 1.0,
        "x must run from 0 to 1"
    );
    let nm1 = (n - 1) as f64;
    let xs: Vec<f64> = x.iter().map(|&v| v * nm1).collect();
    // numpy.linspace(0, 1, n): k * (1 / (n - 1)), last element exactly 1.
    let step = 1.0 / nm1;
    let mut lut = Vec::with_capacity(n);
    lut.push(y[0]);
    for k in 1..n - 1 {
        let xind = nm1 * (k as f64 * step);
        // searchsorted side='left': first i with xs[i] >= xind.
        let ind = xs.partition_point(|&v| v < xind);
        let distance = (xind - xs[ind - 1]) / (xs[ind] - xs[ind - 1]);
        lut.push(distance * (y[ind] - y[ind - 1]) + y[ind - 1]);
    }
    lut.push(y[y.len() - 1]);
    lut.iter().map(|v| v.clamp(0.0, 1.0)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values swept in the matplotlib comparisons below.
    const SWEEP: [f64; 15] = [
        0.0, 0.1, 0.25, 0.3333, 0.5, 0.7, 0.9, 0.999, 1.0, 0.00390625, 0.5019, -0.2, 1.5,
        0.99609375, 0.9960937,
    ];

    // The expected bytes below were produced with matplotlib 3.11.2 / numpy 2.4.6 by
    //   python3 -c "import matplotlib; cm = matplotlib.colormaps[NAME];
    //               print([tuple(int(b) for b in cm(v, bytes=True)[:3]) for v in SWEEP])"
    // with SWEEP the list above.
    const COOLWARM: [[u8; 3]; 15] = [
        [58, 76, 192],
        [88, 118, 226],
        [141, 175, 253],
        [170, 198, 253],
        [221, 220, 219],
        [246, 171, 141],
        [214, 82, 67],
        [179, 3, 38],
        [179, 3, 38],
        [59, 77, 193],
        [221, 220, 219],
        [58, 76, 192],
        [179, 3, 38],
        [179, 3, 38],
        [181, 8, 39],
    ];
    const VIRIDIS: [[u8; 3]; 15] = [
        [68, 1, 84],
        [72, 35, 116],
        [58, 82, 139],
        [48, 103, 141],
        [32, 144, 140],
        [68, 190, 112],
        [189, 222, 38],
        [253, 231, 36],
        [253, 231, 36],
        [68, 2, 85],
        [32, 144, 140],
        [68, 1, 84],
        [253, 231, 36],
        [253, 231, 36],
        [250, 230, 34],
    ];
    const GRAY: [[u8; 3]; 15] = [
        [0, 0, 0],
        [25, 25, 25],
        [64, 64, 64],
        [85, 85, 85],
        [128, 128, 128],
        [179, 179, 179],
        [230, 230, 230],
        [255, 255, 255],
        [255, 255, 255],
        [1, 1, 1],
        [128, 128, 128],
        [0, 0, 0],
        [255, 255, 255],
        [255, 255, 255],
        [254, 254, 254],
    ];
    // Same command, vs = [0, 0.1, 0.25, 0.3333, 0.5, 0.7, 0.9, 0.999, 1.0] (first nine of SWEEP).
    const MAGMA: [[u8; 3]; 9] = [
        [0, 0, 3],
        [20, 13, 53],
        [80, 18, 123],
        [113, 31, 129],
        [182, 54, 121],
        [246, 112, 91],
        [253, 207, 146],
        [251, 252, 191],
        [251, 252, 191],
    ];
    const INFERNO: [[u8; 3]; 9] = [
        [0, 0, 3],
        [22, 11, 57],
        [87, 15, 109],
        [120, 28, 109],
        [187, 55, 84],
        [243, 119, 25],
        [245, 215, 69],
        [252, 254, 164],
        [252, 254, 164],
    ];

    fn check(cmap: Colormap, expected: &[[u8; 3]]) {
        for (v, want) in SWEEP.iter().zip(expected) {
            assert_eq!(cmap.map(*v), *want, "{} at v = {v}", cmap.name());
        }
    }

    #[test]
    fn coolwarm_matches_matplotlib() {
        check(Colormap::Coolwarm, &COOLWARM);
        // The endpoints, explicitly.
        assert_eq!(Colormap::Coolwarm.lut()[0], [58, 76, 192]);
        assert_eq!(Colormap::Coolwarm.lut()[255], [179, 3, 38]);
    }

    #[test]
    fn listed_maps_match_matplotlib() {
        check(Colormap::Viridis, &VIRIDIS);
        check(Colormap::Magma, &MAGMA);
        check(Colormap::Inferno, &INFERNO);
    }

    #[test]
    fn gray_matches_matplotlib() {
        check(Colormap::Gray, &GRAY);
    }

    /// Whole-table checksums: per channel, sum over k of (k + 1) * byte[k] and sum of bytes,
    /// from matplotlib 3.11.2 via
    ///   full = (cm._lut[:256, :3] * 255).astype(np.uint8).astype(np.int64)
    ///   (full * np.arange(1, 257)[:, None]).sum(0), full.sum(0)
    #[test]
    fn whole_tables_match_matplotlib_checksums() {
        let expected: [(Colormap, [u64; 3], [u64; 3]); 5] = [
            (
                Colormap::Coolwarm,
                [6958729, 4781166, 4804736],
                [47179, 39309, 46239],
            ),
            (
                Colormap::Viridis,
                [3438521, 5774705, 3140698],
                [21233, 34987, 27987],
            ),
            (
                Colormap::Magma,
                [6897553, 4011534, 4022685],
                [40912, 21017, 27809],
            ),
            (
                Colormap::Inferno,
                [6855210, 4145254, 2227815],
                [41161, 21449, 17882],
            ),
            (
                Colormap::Gray,
                [5589664, 5589664, 5589664],
                [32616, 32616, 32616],
            ),
        ];
        for (cmap, weighted, plain) in expected {
            let lut = cmap.lut();
            for c in 0..3 {
                let w: u64 = (0..256).map(|k| (k as u64 + 1) * lut[k][c] as u64).sum();
                let s: u64 = (0..256).map(|k| lut[k][c] as u64).sum();
                assert_eq!(w, weighted[c], "{} channel {c}", cmap.name());
                assert_eq!(s, plain[c], "{} channel {c}", cmap.name());
            }
        }
    }

    #[test]
    fn index_rule_and_nan() {
        assert_eq!(lut_index(0.0), 0);
        assert_eq!(lut_index(1.0), 255);
        assert_eq!(lut_index(0.5), 128);
        assert_eq!(lut_index(255.0 / 256.0), 255);
        assert_eq!(lut_index(254.999 / 256.0), 254);
        assert_eq!(lut_index(-1e-9), 0);
        assert_eq!(lut_index(1.0 + 1e-9), 255);
        assert_eq!(lut_index(f64::NAN), 0);
        assert_eq!(lut_index(f64::INFINITY), 255);
        assert_eq!(lut_index(f64::NEG_INFINITY), 0);
        assert_eq!(Colormap::Viridis.map(f64::NAN), Colormap::Viridis.lut()[0]);
        let vals = [0.0, 0.5, 1.0];
        assert_eq!(
            Colormap::Magma.map_slice(&vals),
            vals.iter()
                .map(|&v| Colormap::Magma.map(v))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn serde_and_names_are_lowercase() {
        for cmap in Colormap::ALL {
            let json = serde_json::to_string(&cmap).unwrap();
            assert_eq!(json, format!("\"{}\"", cmap.name()));
            let pv = clap::ValueEnum::to_possible_value(&cmap).unwrap();
            assert_eq!(pv.get_name(), cmap.name());
        }
    }
}
