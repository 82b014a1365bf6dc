//! The command-line flag of each library parameter. The library's errors name what they
//! are about as a parameter ("batch", "device"); a user of the command line reads the flag
//! that sets it ("--batch", "--device"), so errors are rewritten once, where `run` returns
//! them to be printed.

use crate::error::Error;

/// The flag that sets library parameter `parameter`, where one does. Names the library
/// shares with the command line's wording ("dataset" for a dataset that cannot be read)
/// stay as they are.
fn flag_of(parameter: &str) -> Option<&'static str> {
    Some(match parameter {
        "batch" => "--batch",
        "out" => "--out",
        "device" => "--device",
        "dataset spec" | "training set" => "--dataset",
        "particles" => "--particles",
        "time points" => "--steps",
        "beta_min" => "--beta-min",
        "beta_min/beta_max" => "--beta-min/--beta-max",
        "shard" => "--shard",
        "t_min" => "--t-min",
        "initial" => "--initial",
        "grid_start" => "--grid-start",
        "preset" => "--preset",
        "clones" => "--clones",
        "eta" => "--eta",
        "score" => "--score",
        "patch_size" => "--patch-size",
        "scale" => "--scale",
        "labels" => "--labels",
        "class" => "--class",
        "checkpoint_every" => "--checkpoint-every",
        "snapshots" => "--snapshots",
        "markers" => "--markers",
        "figure/snapshots" => "--figure/--snapshots",
        "image_grid" => "--image-grid",
        "figure_size" => "--figure-size",
        _ => return None,
    })
}

/// `error`, naming its parameter by the flag that sets it.
pub fn name_flags(error: Error) -> Error {
    match error {
        Error::InvalidParameter { name, message } => Error::InvalidParameter {
            name: flag_of(name).unwrap_or(name),
            message,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_become_flags_and_other_names_stay() {
        let batch = name_flags(Error::invalid("batch", "must be at least 1"));
        assert_eq!(batch.to_string(), "invalid --batch: must be at least 1");
        let dataset = name_flags(Error::invalid("dataset", "the training set is empty"));
        assert_eq!(
            dataset.to_string(),
            "invalid dataset: the training set is empty"
        );
        // Every run parameter the library validates reads as its flag.
        for (parameter, flag) in [
            ("particles", "--particles"),
            ("time points", "--steps"),
            ("t_min", "--t-min"),
            ("initial", "--initial"),
            ("figure_size", "--figure-size"),
        ] {
            let e = name_flags(Error::invalid(parameter, "x"));
            assert_eq!(e.to_string(), format!("invalid {flag}: x"));
        }
    }
}
