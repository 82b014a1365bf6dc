//! Training sets: built-in ones, `.npy`/`.csv` loading and validation.

use crate::error::{Error, Result};

/// A finite training set: `n` points in `R^dim`, row-major, f64 (converted to f32 for the
/// f32 engines).
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// How the user named it (`circle:8`, a path), for messages and run.json.
    pub name: String,
    pub dim: usize,
    pub points: Vec<f64>,
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
        if points.len() % dim != 0 {
            return Err(bad(format!(
                "{} values do not form rows of dimension {dim}",
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
        Ok(Self { name, dim, points })
    }

    /// `n` points evenly spaced on the unit circle, angles `2 pi k / n`.
    pub fn circle(n: usize) -> Result<Self> {
        if n == 0 {
            return Err(Error::invalid("dataset", "circle:N needs N >= 1"));
        }
        let points = (0..n)
            .flat_map(|k| {
                let angle = std::f64::consts::TAU * k as f64 / n as f64;
                [angle.cos(), angle.sin()]
            })
            .collect();
        Self::new(format!("circle:{n}"), 2, points)
    }

    pub fn len(&self) -> usize {
        self.points.len() / self.dim
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    pub fn point(&self, i: usize) -> &[f64] {
        &self.points[i * self.dim..(i + 1) * self.dim]
    }

    pub fn points_f32(&self) -> Vec<f32> {
        self.points.iter().map(|&v| v as f32).collect()
    }
}
