//! What commands print when a run finishes: the run summary and its memorization lines.

use crate::metrics::MemorizationSummary;

use crate::run::report::{RunReport, Timings};

/// The summary `sample` and `resume` print after a run.
pub fn print_summary(r: &RunReport, out: &std::path::Path) {
    let (spec, facts) = (&r.parameters.spec, &r.parameters.facts);
    let sampling = r.timings_s.sampling();
    let rate = (spec.particles as f64 * facts.steps as f64) / sampling.max(1e-9);
    println!(
        "{} particles, dataset {} (N = {}, D = {}), {} steps ({}), seed {}",
        spec.particles,
        spec.dataset,
        facts.n_train,
        facts.dim,
        facts.steps,
        spec.sampler.name(),
        spec.seed
    );
    println!("backend {} on {}", r.backend.name(), r.device);
    let total = match &r.timings_s {
        Timings::Sample(t) => t.total,
        Timings::Merge(t) => t.merge,
    };
    println!(
        "sampling {sampling:.3} s ({:.1} M particle-steps/s), total {total:.3} s",
        rate / 1e6,
    );
    let m = &r.memorization;
    println!(
        "memorized: {:.2}% of samples within 0.05 and {:.2}% within 0.1 of a training point",
        100.0 * m.fraction_within_0_05,
        100.0 * m.fraction_within_0_1
    );
    print_memorization(m);
    println!("wrote {}: {}", out.display(), r.files.join(", "));
}

/// The ratio-criterion and posterior lines of a run's summary.
pub fn print_memorization(m: &MemorizationSummary) {
    let [lo, hi] = m.memorized_interval_95;
    println!(
        "memorized (d1/d2 < 1/3): {:.2}% [95% bootstrap {:.2}%, {:.2}%]; {} of {} training \
         points reproduced, {} nearest to some sample",
        100.0 * m.memorized_fraction,
        100.0 * lo,
        100.0 * hi,
        m.distinct_memorized,
        m.nearest_counts.len(),
        m.distinct_nearest
    );
    if let Some(c) = &m.occupancy_chi_square {
        println!(
            "occupancy of the training points vs uniform: chi-square {:.4} on {} dof, p = {:.4}",
            c.statistic, c.dof, c.p_value
        );
    }
    if let Some(points) = &m.posterior {
        let line: Vec<String> = points
            .iter()
            .map(|p| {
                format!(
                    "{:.3}:{:.3}/{:.3}",
                    p.ou_time, p.mean_max_weight, p.fraction_argmax_final
                )
            })
            .collect();
        println!(
            "posterior concentration (OU time: mean max w / argmax = final nearest), {} particles: {}",
            points.first().map_or(0, |p| p.particles),
            line.join(" ")
        );
    }
}
