//! The progress bar of a sampling run, drawn only when stdout is a terminal.

use crate::run::driver::{self};
use std::io::IsTerminal;

/// A progress bar over the time steps, drawn only when stdout is a terminal.
#[derive(Default)]
pub(crate) struct StepBar {
    bar: Option<indicatif::ProgressBar>,
    particles: u64,
}

impl driver::Progress for StepBar {
    fn start(&mut self, particles: u64, steps: u64) {
        self.particles = particles;
        if std::io::stdout().is_terminal() {
            let bar = indicatif::ProgressBar::with_draw_target(
                Some(steps),
                indicatif::ProgressDrawTarget::stdout(),
            );
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} sampling [{bar:40}] step {pos}/{len} ({elapsed}, eta {eta})",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            self.bar = Some(bar);
        }
    }
    fn advance_to(&mut self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done / self.particles.max(1));
        }
    }
    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
