//! Option groups shared by several commands (how density images are drawn).

use crate::cli::parse::{parse_bandwidth, parse_resolution};
use crate::density::extent::Extent;
use crate::run::spec::{ImageSpec, DEFAULT_BANDWIDTH, DEFAULT_RESOLUTION};
use clap::Args;

/// How density images are drawn: shared by `sample` and `render`.
#[derive(Debug, Clone, Args)]
pub struct ImageArgs {
    /// Extent of the image as xmin,xmax,ymin,ymax [default: -3,3,-3,3; `render` of density
    /// grids: theirs]. For `sample` this is samples.png's; initial.png always covers [-2,3]^2.
    #[arg(long, allow_hyphen_values = true)]
    pub extent: Option<Extent>,

    /// Image size in pixels, `N` for N×N or `WxH`, each side up to 16384 [default: 512;
    /// `render` of density grids: theirs]. Large images are computed and written band by
    /// band, in memory bounded by a band.
    #[arg(long, value_parser = parse_resolution)]
    pub resolution: Option<(usize, usize)>,

    /// Kernel bandwidth h, exp(-|p - x|^2 / (2 h^2)); must be finite and > 0 [default:
    /// 1/sqrt(700) ≈ 0.0378, the reference tutorial's exp(-350 |p - x|^2)].
    #[arg(long, value_parser = parse_bandwidth, allow_negative_numbers = true)]
    pub bandwidth: Option<f64>,

    /// `gaussian`: the kernel above at every pixel centre; `histogram`: plain counts of the
    /// particles per pixel (nearest pixel centre) [default: gaussian].
    #[arg(long, value_enum)]
    pub kernel: Option<crate::density::heatmap::Kernel>,

    /// Colormap of the density images (matplotlib's tables, byte for byte).
    #[arg(long, value_enum, default_value_t = crate::run::spec::DEFAULT_COLORMAP)]
    pub colormap: crate::image::colormap::Colormap,

    /// How densities map to colours: `linear` from min to max (the tutorial's), `log`
    /// (log1p(v - min) / log1p(max - min)), `eq-hist` (histogram equalization as
    /// datashader's eq_hist: each colour covers about as many pixels).
    #[arg(long, value_enum, default_value_t = crate::run::spec::DEFAULT_NORM)]
    pub norm: crate::image::norm::Norm,

    /// Also write the raw density as a 16-bit grayscale PNG (NAME_gray16.png):
    /// round(65535 v / max), max in the grid's .json sidecar.
    #[arg(long)]
    pub png16: bool,
}

impl ImageArgs {
    /// The images these options ask for, the defaults of [`crate::run::spec`] filled in.
    pub fn spec(&self) -> ImageSpec {
        let (width, height) = self.resolution_or_default();
        ImageSpec {
            extent: self.extent_or_default(),
            resolution: [width, height],
            bandwidth: self.bandwidth_or_default(),
            kernel: self.kernel_or_default(),
            colormap: self.colormap,
            norm: self.norm,
            png16: self.png16,
            ..ImageSpec::default()
        }
    }
    pub fn extent_or_default(&self) -> Extent {
        self.extent.unwrap_or(ImageSpec::default().extent)
    }
    pub fn resolution_or_default(&self) -> (usize, usize) {
        let [width, height] = DEFAULT_RESOLUTION;
        self.resolution.unwrap_or((width, height))
    }
    pub fn bandwidth_or_default(&self) -> f64 {
        self.bandwidth.unwrap_or(DEFAULT_BANDWIDTH)
    }
    pub fn kernel_or_default(&self) -> crate::density::heatmap::Kernel {
        self.kernel.unwrap_or_default()
    }
    pub fn shading(&self) -> crate::image::norm::Shading {
        crate::image::norm::Shading {
            colormap: self.colormap,
            norm: self.norm,
        }
    }
}
