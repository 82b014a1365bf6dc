//! `memodiff devices`: the GPU adapters `--device N` picks from, and their limits.

use crate::error::Result;
use clap::Args;

/// Options of `memodiff devices`.
#[derive(Debug, Clone, Args)]
pub struct DevicesArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `memodiff devices`: the adapters `--device N` picks from (after `WGPU_BACKEND` and
/// `WGPU_ADAPTER_NAME` filtering), best first.
pub fn run(args: &DevicesArgs) -> Result<()> {
    let adapters = crate::engine::gpu::context::describe_adapters();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&adapters).expect("serializable")
        );
        return Ok(());
    }
    if adapters.is_empty() {
        println!("{}", crate::engine::gpu::context::no_adapter_reason());
        return Ok(());
    }
    println!("| index | name | type | backend | driver | max storage binding | max buffer | max workgroup invocations | timestamps |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for a in &adapters {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            a.index,
            a.name,
            a.device_type,
            a.backend,
            a.driver,
            a.max_storage_buffer_binding_size,
            a.max_buffer_size,
            a.max_compute_invocations_per_workgroup,
            if a.timestamp_query { "yes" } else { "no" }
        );
    }
    Ok(())
}
