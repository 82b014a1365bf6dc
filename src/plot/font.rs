//! The one font of every figure and chart: DejaVu Sans (assets/fonts/LICENSE_DEJAVU),
//! embedded in the binary so that no picture depends on the system's fonts, and registered
//! with plotters once per process under the family name `FAMILY`.

use crate::error::{Error, Result};
use plotters::style::FontStyle;
use std::sync::OnceLock;

/// DejaVu Sans, embedded once.
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// The family name figures and charts draw their text with.
pub(crate) const FAMILY: &str = "memodiff-dejavu-sans";

/// Register [`FAMILY`] with plotters before any text is drawn. The first call registers the
/// embedded font; every call returns that outcome, so a font plotters cannot load is an
/// error for each picture that needs it, never a panic.
pub(crate) fn ensure_registered() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let registered = *REGISTERED
        .get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if registered {
        Ok(())
    } else {
        Err(Error::Output(
            "the embedded DejaVu Sans font could not be loaded".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_font_registers_and_stays_registered() {
        ensure_registered().unwrap();
        ensure_registered().unwrap();
    }
}
