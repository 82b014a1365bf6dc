//! The inner stages, for memodiff's own integration tests and benchmarks: the CPU and GPU
//! twins, the f64 reference, the file formats. Not part of the library's API (hidden from
//! its documentation); it mirrors the module tree, so a test names
//! `memodiff::testing::engine::cpu::...` where the code says `crate::engine::cpu::...`.
//! Written by `scripts/testing-module.py` from what the tests name: an item not listed
//! here is unused outside the crate, and the compiler reports it if it is unused inside.

pub mod commands {
    pub mod collapse {
        pub use crate::commands::collapse::{measure, CollapseArgs};
    }
    pub mod score_field {
        pub use crate::commands::score_field::grid_points;
    }
}
pub mod density {
    pub mod extent {
        pub use crate::density::extent::Extent;
    }
    pub mod heatmap {
        pub use crate::density::heatmap::{
            direct_sum, DensityGrid, Kernel, DEFAULT_BANDWIDTH, LAGRANGE_COEFFICIENTS, QUANTUM_BITS,
        };
    }
}
pub mod engine {
    pub use crate::engine::{
        backend_for_score, Backend, BatchWork, Engine, PosteriorTap, Problem, SamplerKind, NEVER,
    };
    pub mod cpu {
        pub use crate::engine::cpu::CpuEngine;
        pub mod attention {
            pub use crate::engine::cpu::attention::{
                block_points, particle_logits, TrainingPanels,
            };
        }
        pub mod deposit {
            pub use crate::engine::cpu::deposit::deposit;
        }
        pub mod em_step_general {
            pub use crate::engine::cpu::em_step_general::em_step_general;
        }
        pub mod heun_step {
            pub use crate::engine::cpu::heun_step::heun_half_step_general;
        }
        pub mod nearest {
            pub use crate::engine::cpu::nearest::nearest_three;
        }
        pub mod reduce_general {
            pub use crate::engine::cpu::reduce_general::score_points_general;
        }
        pub mod score {
            pub use crate::engine::cpu::score::{pad_training, score_points, BLOCK, RESCALE_SLACK};
        }
    }
    pub mod gpu {
        pub use crate::engine::gpu::{AdapterChoice, GpuContext, GpuEngine};
        pub mod context {
            pub use crate::engine::gpu::context::is_software;
        }
        pub mod diagnostics {
            pub use crate::engine::gpu::diagnostics::{philox_on_gpu, PhiloxCase};
        }
        pub mod engine {
            pub use crate::engine::gpu::engine::{
                check_training_fits, Reduction, TapEntry, DEFAULT_WORKGROUP_SIZE,
                PARTICLES_PER_INVOCATION,
            };
        }
        pub mod nearest {
            pub use crate::engine::gpu::nearest::{GpuNearest, NearestParams};
        }
        pub mod patch {
            pub use crate::engine::gpu::patch::{
                PatchParams, PatchScoreParams, TILE_VALUES, WORKGROUP,
            };
        }
        pub mod raster {
            pub use crate::engine::gpu::raster::{
                lagrange_uniform, DepositParams, GpuDensity, GpuRaster,
            };
        }
        pub mod shaders {
            pub use crate::engine::gpu::shaders::{
                general_owned_columns, Stage, Workgroup, ALL_STAGES,
            };
        }
    }
    pub mod layout {
        pub use crate::engine::layout::{pad_general, padded_width};
    }
    pub mod nearest {
        pub use crate::engine::nearest::{nearest_two, Best, NO_INDEX};
    }
    pub mod records {
        pub use crate::engine::records::{
            general_chunk_points, ChunkParams, HeunParams, RunParams, StepParams,
            GENERAL_PARTICLES, GENERAL_TILE, GENERAL_WG, GENERAL_X_COLUMNS, MAX_DIM, MAX_DIMENSION,
            TRAINING_CHUNK,
        };
    }
    pub mod reference {
        pub use crate::engine::reference::{log_density, score, score_with, ReferenceEngine};
    }
    pub mod score_at {
        pub use crate::engine::score_at::ScoreEvaluator;
    }
}
pub mod image {
    pub mod colormap {
        pub use crate::image::colormap::{lut_index, Colormap};
    }
    pub mod grid_file {
        pub use crate::image::grid_file::{read_raw, write_raw, GridFile, GridMeta};
    }
    pub mod norm {
        pub use crate::image::norm::{shade_indices, stats_of, Norm, Shading};
    }
}
pub mod io {
    pub use crate::io::read_npy_f32;
    pub mod npy {
        pub use crate::io::npy::read_npy_f32;
    }
    pub mod staging {
        pub use crate::io::staging::repair;
    }
}
pub mod metrics {
    pub use crate::metrics::{MemorizationCounter, MemorizationCounts};
}
pub mod model {
    pub mod dataset {
        pub use crate::model::dataset::{Dataset, ImageShape};
    }
    pub mod patch_score {
        pub use crate::model::patch_score::{score, PatchPlan, PatchScore};
    }
    pub mod philox {
        pub use crate::model::philox::{
            counter, gpu_normals_error_bound, normals4_f32, normals4_f64, normals_error_bound,
            philox4x32_10, seed_key, CPU_F32_ACCURACY, INITIAL_NOISE_STEP, PHILOX_M0, PHILOX_M1,
            PHILOX_W0, PHILOX_W1, PI_BELOW, WGSL_ACCURACY,
        };
    }
    pub mod posterior {
        pub use crate::model::posterior::{columns, denoise, max_weight, max_weights};
    }
    pub mod schedule {
        pub use crate::model::schedule::{
            linspace, reverse_steps, reverse_steps_with, ReverseStep, ScheduleShape, ScoreKind,
            ScorePoint, VpSchedule,
        };
    }
}
pub mod plot {
    pub mod colorbar {
        pub use crate::plot::colorbar::{colorbar, colorbar_ticks, BarTick};
    }
    pub mod figure {
        pub use crate::plot::figure::{axis_ticks, nice_ticks, Colorbar, Figure};
    }
    pub mod raster {
        pub use crate::plot::raster::{
            linear_rgb_image, write_grid_outputs, write_grid_outputs_banded, BandLimits,
            FigureRequest, GridOutputs, GridSum, RowSource,
        };
    }
}
pub mod run {
    pub mod driver {
        pub use crate::run::driver::{
            run, run_checkpointed, BatchSink, Checkpoints, NoProgress, SampleConfig, Shard,
        };
    }
    pub mod measure {
        pub use crate::run::measure::{MetricsSink, PosteriorPlan};
    }
    pub mod report {
        pub use crate::run::report::RunReport;
    }
    pub mod sampler {
        pub use crate::run::sampler::run_collect;
    }
    pub mod spec {
        pub use crate::run::spec::{snapshot_plan, Preset, RunSpec, DEFAULT_POSTERIOR_RECORDS};
    }
}
