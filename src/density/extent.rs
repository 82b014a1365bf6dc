//! The rectangle of the plane an image covers, validated, parsed from `xmin,xmax,ymin,ymax`.

use crate::error::{Error, Result};
use serde::Serialize;
use std::str::FromStr;

/// The rectangle of the plane an image covers: `[xmin, xmax] x [ymin, ymax]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Extent {
    /// Left edge (the first column's left side).
    pub xmin: f64,
    /// Right edge.
    pub xmax: f64,
    /// Bottom edge (the last row's lower side: row 0 is at the top).
    pub ymin: f64,
    /// Top edge.
    pub ymax: f64,
}

impl Extent {
    /// A validated extent: all bounds finite, `xmin < xmax`, `ymin < ymax`.
    pub fn new(xmin: f64, xmax: f64, ymin: f64, ymax: f64) -> Result<Self> {
        let e = Extent {
            xmin,
            xmax,
            ymin,
            ymax,
        };
        e.validate()?;
        Ok(e)
    }

    /// The square `[a, b]^2`.
    pub fn square(a: f64, b: f64) -> Result<Self> {
        Self::new(a, b, a, b)
    }

    /// Check the invariants of [`Extent::new`] (fields are public, so re-check before use).
    pub fn validate(&self) -> Result<()> {
        let all = [self.xmin, self.xmax, self.ymin, self.ymax];
        if all.iter().any(|v| !v.is_finite()) {
            return Err(Error::invalid(
                "extent",
                format!("bounds must be finite, got {}", self),
            ));
        }
        if !(self.xmin < self.xmax && self.ymin < self.ymax) {
            return Err(Error::invalid(
                "extent",
                format!("need xmin < xmax and ymin < ymax, got {}", self),
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for Extent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{},{},{},{}", self.xmin, self.xmax, self.ymin, self.ymax)
    }
}

impl FromStr for Extent {
    type Err = Error;

    /// Parse `"xmin,xmax,ymin,ymax"`.
    fn from_str(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        if parts.len() != 4 {
            return Err(Error::invalid(
                "extent",
                format!("expected \"xmin,xmax,ymin,ymax\", got \"{s}\""),
            ));
        }
        let mut v = [0.0f64; 4];
        for (slot, part) in v.iter_mut().zip(&parts) {
            *slot = part.parse::<f64>().map_err(|_| {
                Error::invalid("extent", format!("\"{part}\" is not a number (in \"{s}\")"))
            })?;
        }
        Extent::new(v[0], v[1], v[2], v[3])
    }
}
