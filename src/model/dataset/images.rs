//! Image training sets beyond a plain float `.npy`: `uint8` images mapped to a range
//! (`--scale`), one class of a labelled set (`--labels`, `--class`), and the built-in
//! scikit-learn digits (`--dataset digits`), exported once by `scripts/export-digits.py`.

use super::Dataset;
use crate::error::{Error, Result};
use crate::io::{read_npy, NpyReadError, NpyValues};
use std::path::{Path, PathBuf};

/// The dataset spec of the scikit-learn digits.
pub const DIGITS: &str = "digits";

/// The environment variable naming the folder of the exported data sets.
pub const DATA_ENV: &str = "MEMODIFF_DATA";

/// The folder the data sets are exported to and read from: `$MEMODIFF_DATA`, else
/// `$XDG_DATA_HOME/memodiff`, else `~/.local/share/memodiff`.
pub fn data_folder() -> Option<PathBuf> {
    let set = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    set(DATA_ENV)
        .map(PathBuf::from)
        .or_else(|| set("XDG_DATA_HOME").map(|d| PathBuf::from(d).join("memodiff")))
        .or_else(|| set("HOME").map(|h| PathBuf::from(h).join(".local/share/memodiff")))
}

fn exported(file: &str) -> Result<PathBuf> {
    let folder = data_folder().ok_or_else(|| {
        Error::invalid(
            "dataset",
            format!("no data folder: set {DATA_ENV} (or HOME) to where the digits were exported"),
        )
    })?;
    let path = folder.join(file);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::invalid(
            "dataset",
            format!(
                "the digits are not exported yet: run `python3 scripts/export-digits.py` (it \
                 needs scikit-learn) to write {}",
                path.display()
            ),
        ))
    }
}

/// The exported digits images: (1797, 8, 8) float32 in [0, 1].
pub fn digits_file() -> Result<PathBuf> {
    exported("digits.npy")
}

/// The exported digits labels: (1797,) integers 0..9.
pub fn digits_labels_file() -> Result<PathBuf> {
    exported("digits_labels.npy")
}

/// One integer label per row, from a 1-D `.npy` of integers (or of floats holding whole
/// numbers).
pub fn read_labels(path: &Path) -> Result<Vec<i64>> {
    let name = path.display().to_string();
    let bad = |message: String| Error::Dataset {
        source_name: name.clone(),
        message,
    };
    let array = read_npy(path).map_err(|e| match e {
        NpyReadError::Io(e) => Error::io(path, e),
        NpyReadError::Format(m) => bad(m),
    })?;
    if array.shape.len() != 1 {
        return Err(bad(format!(
            "labels have shape {}; expected one label per image, shape (N,)",
            crate::io::shape_text(&array.shape)
        )));
    }
    let whole = |i: usize, v: f64| {
        if v.fract() == 0.0 && v.abs() < 9e15 {
            Ok(v as i64)
        } else {
            Err(bad(format!("label {i} is {v}, not a whole number")))
        }
    };
    match array.values {
        NpyValues::I64(v) => Ok(v),
        NpyValues::U8(v) => Ok(v.into_iter().map(i64::from).collect()),
        NpyValues::F32(v) => v
            .iter()
            .enumerate()
            .map(|(i, &x)| whole(i, x as f64))
            .collect(),
        NpyValues::F64(v) => v.iter().enumerate().map(|(i, &x)| whole(i, x)).collect(),
    }
}

/// A training set as a run uses it: the images of `class` (by the labels of `labels`, or
/// of the digits for `--dataset digits`), then a `uint8` set mapped onto `scale`. A
/// `uint8` set without a scale is refused: its 0..255 are not the data's range.
pub fn prepare(
    dataset: Dataset,
    scale: Option<(f64, f64)>,
    labels: Option<&Path>,
    class: Option<i64>,
) -> Result<Dataset> {
    let dataset = match (class, labels) {
        (Some(class), Some(path)) => dataset.of_class(&read_labels(path)?, class)?,
        (Some(class), None) if dataset.name == DIGITS => {
            dataset.of_class(&read_labels(&digits_labels_file()?)?, class)?
        }
        (Some(_), None) => {
            return Err(Error::invalid(
                "class",
                "needs --labels FILE.npy: the labels of the training images",
            ))
        }
        (None, Some(_)) => {
            return Err(Error::invalid("labels", "are used with --class C"));
        }
        (None, None) => dataset,
    };
    match scale {
        Some((lo, hi)) => dataset.scaled(lo, hi),
        None if dataset.uint8 => Err(Error::invalid(
            "scale",
            format!(
                "{} holds uint8 images: give the range to map 0..255 onto, --scale 0,1 or \
                 --scale -1,1",
                dataset.name
            ),
        )),
        None => Ok(dataset),
    }
}

impl Dataset {
    /// A `uint8` set's values 0..255 mapped linearly onto `[lo, hi]` (`--scale lo,hi`).
    /// Refused for float data, whose range is the user's already.
    pub fn scaled(&self, lo: f64, hi: f64) -> Result<Self> {
        if !self.uint8 {
            return Err(Error::invalid(
                "scale",
                format!(
                    "applies to uint8 images; {} holds floats, used as they are",
                    self.name
                ),
            ));
        }
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(Error::invalid(
                "scale",
                format!("{lo},{hi} is not a range lo < hi of finite numbers, e.g. 0,1 or -1,1"),
            ));
        }
        let points = self
            .points
            .iter()
            .map(|v| lo + (hi - lo) * v / 255.0)
            .collect();
        let mut scaled = Dataset::new(
            format!("{} scaled to [{lo}, {hi}]", self.name),
            self.dim,
            points,
        )?;
        scaled.image_shape = self.image_shape;
        Ok(scaled)
    }

    /// The rows whose label is `class` (`--labels`, `--class`), in their order.
    pub fn of_class(&self, labels: &[i64], class: i64) -> Result<Self> {
        if labels.len() != self.len() {
            return Err(Error::invalid(
                "labels",
                format!(
                    "{} labels for the {} images of {}",
                    labels.len(),
                    self.len(),
                    self.name
                ),
            ));
        }
        let rows: Vec<usize> = (0..self.len()).filter(|&i| labels[i] == class).collect();
        if rows.is_empty() {
            let mut present: Vec<i64> = labels.to_vec();
            present.sort_unstable();
            present.dedup();
            let shown: Vec<String> = present.iter().take(20).map(|c| c.to_string()).collect();
            return Err(Error::invalid(
                "class",
                format!(
                    "no image has label {class}; the labels are {}{}",
                    shown.join(", "),
                    if present.len() > 20 { ", ..." } else { "" }
                ),
            ));
        }
        let points = rows
            .iter()
            .flat_map(|&i| self.point(i).iter().copied())
            .collect();
        let mut subset = Dataset::new(format!("{} class {class}", self.name), self.dim, points)?;
        subset.image_shape = self.image_shape;
        subset.uint8 = self.uint8;
        Ok(subset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Dataset {
        let mut set = Dataset::new("tiny", 4, (0..12).map(|v| (v * 20) as f64).collect()).unwrap();
        set.uint8 = true;
        set.image_shape = Some(super::super::ImageShape {
            height: 2,
            width: 2,
            channels: 1,
        });
        set
    }

    #[test]
    fn uint8_values_map_onto_the_range() {
        let scaled = tiny().scaled(-1.0, 1.0).unwrap();
        assert_eq!(scaled.points[0], -1.0);
        assert!((scaled.points[11] - (-1.0 + 2.0 * 220.0 / 255.0)).abs() < 1e-15);
        assert!(!scaled.uint8 && scaled.image_shape.is_some());
        let float = Dataset::new("floats", 2, vec![0.0, 1.0]).unwrap();
        assert!(float
            .scaled(0.0, 1.0)
            .unwrap_err()
            .to_string()
            .contains("uint8"));
        assert!(tiny().scaled(1.0, 0.0).is_err());
    }

    #[test]
    fn a_class_keeps_its_rows_in_order() {
        let set = tiny();
        let class = set.of_class(&[7, 3, 7], 7).unwrap();
        assert_eq!(class.len(), 2);
        assert_eq!(class.point(1), set.point(2));
        assert!(set
            .of_class(&[7, 3, 7], 5)
            .unwrap_err()
            .to_string()
            .contains("labels are 3, 7"));
        assert!(set.of_class(&[7, 3], 7).is_err());
    }
}
