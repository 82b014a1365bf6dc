//! Parsers of the command line's numbers: counts (`1e6`, `1_000_000`), sizes, bandwidths.

/// Parse a kernel bandwidth: a finite number > 0.
pub fn parse_bandwidth(text: &str) -> std::result::Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(h) if h.is_finite() && h > 0.0 => Ok(h),
        Ok(h) => Err(format!(
            "'{text}': the bandwidth must be finite and > 0, got {h}"
        )),
        Err(_) => Err(format!("'{text}' is not a number")),
    }
}

/// Parse a count: digits with optional `_` or `,` separators, or an integral `1e6`.
pub fn parse_count(text: &str) -> std::result::Result<u64, String> {
    let cleaned: String = text.chars().filter(|c| *c != '_' && *c != ',').collect();
    if let Ok(v) = cleaned.parse::<u64>() {
        return Ok(v);
    }
    match cleaned.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < 1.8e19 => Ok(v as u64),
        _ => Err(format!("'{text}' is not a whole non-negative number")),
    }
}

/// [`parse_count`] into a `usize`.
pub fn parse_count_usize(text: &str) -> std::result::Result<usize, String> {
    parse_count(text).and_then(|v| usize::try_from(v).map_err(|_| format!("{v} is too large")))
}

/// Parse `N` or `WxH` (each 1..=16384). Too large a size is refused with the memory its
/// two images (f64 densities and RGB pixels, 11 bytes a pixel each) would need.
pub fn parse_resolution(text: &str) -> std::result::Result<(usize, usize), String> {
    const MAX: u64 = 16384;
    let (w, h) = text.split_once(['x', 'X']).unwrap_or((text, text));
    let side = |s: &str| s.trim().parse::<u64>().ok();
    match (side(w), side(h)) {
        (Some(w @ 1..=MAX), Some(h @ 1..=MAX)) => Ok((w as usize, h as usize)),
        (Some(w), Some(h)) if (w > MAX || h > MAX) && w > 0 && h > 0 => Err(format!(
            "'{text}': each side must be in 1..={MAX} pixels; two {w}x{h} images would \
             need {}",
            crate::io::human_bytes(22 * u128::from(w) * u128::from(h))
        )),
        _ => Err(format!(
            "'{text}': each side must be a whole number in 1..={MAX}"
        )),
    }
}

/// Parse `--scale LO,HI`: two finite numbers, LO < HI.
pub fn parse_scale(text: &str) -> std::result::Result<(f64, f64), String> {
    let numbers: Vec<Option<f64>> = text
        .split(',')
        .map(|v| v.trim().parse::<f64>().ok().filter(|v| v.is_finite()))
        .collect();
    match numbers[..] {
        [Some(lo), Some(hi)] if lo < hi => Ok((lo, hi)),
        _ => Err(format!(
            "'{text}': expected LO,HI with LO < HI, e.g. 0,1 or -1,1"
        )),
    }
}
