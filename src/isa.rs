//! The CPU instruction sets the SIMD code is compiled for, and the one way to pick and
//! run them: [`Isa::selected`] detects the best set once (or takes the one
//! `MEMODIFF_CPU_ISA` names), and `isa_dispatch!` defines a
//! function whose body is compiled once per set (`#[target_feature]`), running the
//! instance of the set it is given.
//!
//! One set for the whole process keeps results reproducible: the CPU kernels give the
//! same bits for one set whatever the batch or thread count, and `MEMODIFF_CPU_ISA`
//! fixes the set across machines (the golden outputs use `avx2`).

use crate::error::{Error, Result};
use std::sync::OnceLock;

/// The environment variable that chooses the instruction set.
pub const ISA_VARIABLE: &str = "MEMODIFF_CPU_ISA";

/// Instruction sets the SIMD code is compiled for, fastest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// AVX-512 F/VL/DQ (16 f32 per register) with AVX2, FMA and BMI2.
    Avx512,
    /// AVX2 with FMA.
    Avx2,
    /// Whatever the build targets (SSE2 on default x86-64), no FMA.
    Portable,
}

impl Isa {
    /// Every set, fastest first.
    pub const ALL: [Isa; 3] = [Isa::Avx512, Isa::Avx2, Isa::Portable];

    /// Whether this CPU can run the set. The features checked here are those
    /// `isa_dispatch!` enables for it: keep the two lists equal.
    pub fn available(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512dq")
                    && is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("bmi2")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The name `MEMODIFF_CPU_ISA` accepts and summaries print.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
        }
    }

    /// The fastest set this CPU runs.
    pub fn best_available() -> Isa {
        Self::ALL
            .into_iter()
            .find(|isa| isa.available())
            .unwrap_or(Isa::Portable)
    }

    // The unit tests' entry to the parsing; the process uses `selected`.
    #[cfg(test)]
    /// The set named by `value` (the value of `MEMODIFF_CPU_ISA`; unset or empty: the
    /// fastest available). A name that is not a set, or a set this CPU cannot run, is an
    /// error naming the variable and the accepted values.
    pub fn from_setting(value: Option<&str>) -> Result<Isa> {
        Self::parse_setting(value).map_err(|message| Error::invalid(ISA_VARIABLE, message))
    }

    /// The set of this process: `MEMODIFF_CPU_ISA` if set (see [`Isa::from_setting`]),
    /// else the fastest available. Read and detected once; every later call gives the
    /// same answer.
    pub fn selected() -> Result<Isa> {
        static SELECTED: OnceLock<std::result::Result<Isa, String>> = OnceLock::new();
        SELECTED
            .get_or_init(|| {
                let value = std::env::var_os(ISA_VARIABLE);
                Self::parse_setting(value.as_ref().map(|v| v.to_str().unwrap_or("(not UTF-8)")))
            })
            .clone()
            .map_err(|message| Error::invalid(ISA_VARIABLE, message))
    }

    /// The set for kernels whose results do not depend on it (the density deposits and
    /// folds, the nearest-neighbour screening: no FMA contraction, sums in a fixed order):
    /// [`Isa::selected`]. Every command checks the setting before it starts, so an invalid
    /// one never gets here; should it, the portable code runs, which changes nothing.
    pub fn for_exact_kernels() -> Isa {
        Self::selected().unwrap_or(Isa::Portable)
    }

    /// [`Isa::from_setting`], the error as its message.
    fn parse_setting(value: Option<&str>) -> std::result::Result<Isa, String> {
        let Some(name) = value.filter(|v| !v.is_empty()) else {
            return Ok(Self::best_available());
        };
        let names = |sets: &[Isa]| {
            sets.iter()
                .map(|isa| isa.name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match Self::ALL.into_iter().find(|isa| isa.name() == name) {
            Some(isa) if isa.available() => Ok(isa),
            Some(isa) => {
                let available: Vec<Isa> = Self::ALL.into_iter().filter(|s| s.available()).collect();
                Err(format!(
                    "this CPU cannot run {}; accepted here: {}",
                    isa.name(),
                    names(&available)
                ))
            }
            None => Err(format!(
                "{name:?} is not an instruction set; accepted: {}",
                names(&Self::ALL)
            )),
        }
    }
}

/// Define a function whose body is compiled once per instruction set and that runs the
/// instance of the set it is given as its first argument (`isa: Isa`, added before the
/// listed parameters). Each set gets its own expression (they usually differ in their
/// const generics: lanes, FMA), which may use the parameters:
///
/// ```ignore
/// isa_dispatch! {
///     /// Doc of the dispatching function.
///     fn advance_on(kernel: &Kernel, state: &mut [f32]) {
///         Avx512 => advance_with::<true, 64>(kernel, state),
///         Avx2 => advance_with::<true, 32>(kernel, state),
///         Portable => advance_with::<false, 32>(kernel, state),
///     }
/// }
/// // advance_on(isa, &kernel, &mut state);
/// ```
///
/// The expressions should call `#[inline(always)]` code so that it is compiled with the
/// set's features. The function panics if the CPU cannot run `isa` (an [`Isa`] from
/// [`Isa::selected`] or checked with [`Isa::available`] always can).
macro_rules! isa_dispatch {
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? {
            Avx512 => $avx512:expr,
            Avx2 => $avx2:expr,
            Portable => $portable:expr $(,)?
        }
    ) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name(isa: $crate::isa::Isa, $($arg: $ty),*) $(-> $ret)? {
            // The feature lists are those `Isa::available` checks.
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma,bmi2")]
            #[allow(clippy::too_many_arguments)]
            fn avx512($($arg: $ty),*) $(-> $ret)? {
                $avx512
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            fn avx2($($arg: $ty),*) $(-> $ret)? {
                $avx2
            }
            #[allow(clippy::too_many_arguments)]
            fn portable($($arg: $ty),*) $(-> $ret)? {
                $portable
            }
            assert!(
                isa.available(),
                "this CPU cannot run the {} instruction set",
                isa.name()
            );
            match isa {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `isa.available()` checked the features this instance enables.
                $crate::isa::Isa::Avx512 => unsafe { avx512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above.
                $crate::isa::Isa::Avx2 => unsafe { avx2($($arg),*) },
                _ => portable($($arg),*),
            }
        }
    };
}
pub(crate) use isa_dispatch;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setting_names_an_available_set_or_is_an_error() {
        assert_eq!(Isa::from_setting(None).unwrap(), Isa::best_available());
        assert_eq!(Isa::from_setting(Some("")).unwrap(), Isa::best_available());
        assert_eq!(Isa::from_setting(Some("portable")).unwrap(), Isa::Portable);
        let unknown = Isa::from_setting(Some("bogus")).unwrap_err().to_string();
        assert_eq!(
            unknown,
            "invalid MEMODIFF_CPU_ISA: \"bogus\" is not an instruction set; \
             accepted: avx512, avx2, portable"
        );
        for isa in Isa::ALL {
            let result = Isa::from_setting(Some(isa.name()));
            match isa.available() {
                true => assert_eq!(result.unwrap(), isa),
                false => {
                    let message = result.unwrap_err().to_string();
                    assert!(message.starts_with("invalid MEMODIFF_CPU_ISA: this CPU cannot run"));
                    assert!(!message.contains('\n'));
                }
            }
        }
    }

    isa_dispatch! {
        /// Which instance ran, as the lane count of the fast kernel's chunks.
        fn lanes_of(base: usize) -> usize {
            Avx512 => base * 2,
            Avx2 => base,
            Portable => base / 2,
        }
    }

    #[test]
    fn dispatch_runs_the_instance_of_the_set() {
        for isa in Isa::ALL.into_iter().filter(|isa| isa.available()) {
            let want = match isa {
                Isa::Avx512 => 64,
                Isa::Avx2 => 32,
                Isa::Portable => 16,
            };
            assert_eq!(lanes_of(isa, 32), want, "{}", isa.name());
        }
    }
}
