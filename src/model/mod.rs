//! The mathematical model every engine shares: the noise schedule, the counter-based
//! random numbers, the posterior over training points, and the training sets.

pub mod dataset;
pub mod patch_score;
pub mod philox;
pub mod posterior;
pub mod schedule;
