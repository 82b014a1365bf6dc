//! Device set-up: pick an adapter, open a device with the adapter's full limits, and turn
//! wgpu's asynchronous errors and device loss into `Error`s the caller can print.

use super::pipeline_cache::PipelineCacheFile;
use super::shaders::Workgroup;
use crate::error::{Error, Result};
use std::sync::{Arc, Mutex};

/// Which adapters are acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterChoice {
    /// Any adapter, hardware preferred (`--backend gpu`: lavapipe is fine).
    Any,
    /// Hardware only (`--backend auto`): a software rasterizer counts as "no GPU".
    HardwareOnly,
    /// Adapter `N` of `list_adapters` (`--device N`; `memodiff devices` shows the list).
    Index(usize),
}

/// One adapter as `memodiff devices` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AdapterSummary {
    /// Its index, as `--device` takes it.
    pub index: usize,
    /// The adapter's name.
    pub name: String,
    /// Discrete, integrated, virtual, software (cpu) or other.
    pub device_type: String,
    /// The graphics API wgpu uses for it (Vulkan, Metal, Dx12, Gl).
    pub backend: String,
    /// The driver and its version.
    pub driver: String,
    /// Largest storage buffer one binding may cover, in bytes.
    pub max_storage_buffer_binding_size: u64,
    /// Largest buffer, in bytes.
    pub max_buffer_size: u64,
    /// Largest workgroup, in invocations.
    pub max_compute_invocations_per_workgroup: u32,
    /// Whether it can time passes (timestamp queries).
    pub timestamp_query: bool,
}

/// The adapters of `list_adapters`, in its order (the indices `--device` takes).
pub fn describe_adapters() -> Vec<AdapterSummary> {
    list_adapters()
        .iter()
        .enumerate()
        .map(|(index, a)| {
            let (info, limits) = (a.get_info(), a.limits());
            AdapterSummary {
                index,
                name: info.name.clone(),
                device_type: format!("{:?}", info.device_type),
                backend: format!("{:?}", info.backend),
                driver: format!("{} {}", info.driver, info.driver_info)
                    .trim()
                    .to_string(),
                max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
                max_buffer_size: limits.max_buffer_size,
                max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
                timestamp_query: a.features().contains(wgpu::Features::TIMESTAMP_QUERY),
            }
        })
        .collect()
}

/// An open device and everything the engines need to know about it. Cloning shares the
/// device (wgpu handles are reference-counted): other stages, such as the nearest-neighbour
/// metrics, run on the engine's device.
#[derive(Clone)]
pub struct GpuContext {
    /// The compiled pipelines kept on disk between runs, where the device has a pipeline
    /// cache and a cache folder is configured (shared by clones, saved when the last one is dropped;
    /// declared first, so dropped while the device is still open).
    pipeline_cache: Option<Arc<PipelineCacheFile>>,
    /// The device.
    pub device: wgpu::Device,
    /// Its queue.
    pub queue: wgpu::Queue,
    /// The adapter it was opened on.
    pub info: wgpu::AdapterInfo,
    /// The limits it was opened with (the adapter's own).
    pub limits: wgpu::Limits,
    /// The optional features it was opened with.
    pub features: wgpu::Features,
    /// First validation/out-of-memory error or device loss reported asynchronously.
    failure: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("adapter", &self.info.name)
            .field("backend", &self.info.backend)
            .finish()
    }
}

fn rank(info: &wgpu::AdapterInfo) -> u8 {
    match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

/// Whether an adapter is a software rasterizer (lavapipe, SwiftShader, WARP).
pub fn is_software(info: &wgpu::AdapterInfo) -> bool {
    info.device_type == wgpu::DeviceType::Cpu
}

/// The environment variables that narrow which adapters [`list_adapters`] sees.
const ADAPTER_FILTERS: [&str; 2] = ["WGPU_BACKEND", "WGPU_ADAPTER_NAME"];

/// Why no hardware GPU can be present, found without asking the drivers, or `None` when
/// one may be. On Linux every GPU kernel driver makes a device node, and a container sees
/// a GPU only through one: DRM drivers `/dev/dri/`, NVIDIA's `/dev/nvidia*`, WSL2's
/// `/dev/dxg`, the Mali, Adreno and Vivante drivers `/dev/mali*`, `/dev/kgsl*`,
/// `/dev/galcore`. Without any, asking the drivers only finds software ones, and costs
/// 20-30 ms (lavapipe starts LLVM: 7% of the default run on a 2-core machine). `None`
/// elsewhere, and when `WGPU_BACKEND` or `WGPU_ADAPTER_NAME` steer the choice.
pub fn no_gpu_device_reason() -> Option<String> {
    if ADAPTER_FILTERS
        .iter()
        .any(|name| std::env::var_os(name).is_some())
    {
        return None;
    }
    if !cfg!(target_os = "linux") {
        return None;
    }
    let entries = std::fs::read_dir("/dev").ok()?;
    let any = entries
        .flatten()
        .any(|e| is_gpu_device_node(&e.file_name().to_string_lossy()));
    (!any).then(|| "no GPU device in /dev".to_string())
}

/// Whether `/dev/NAME` is one of the nodes of [`no_gpu_device_reason`].
fn is_gpu_device_node(name: &str) -> bool {
    ["dri", "dxg", "galcore"].contains(&name)
        || ["nvidia", "mali", "kgsl"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
}

/// Adapters visible with the backends of `WGPU_BACKEND` (default: Vulkan, Metal, DX12),
/// filtered by `WGPU_ADAPTER_NAME` (a case-insensitive substring) when set, best first.
pub fn list_adapters() -> Vec<wgpu::Adapter> {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY);
    let instance = wgpu::Instance::new(desc);
    let mut adapters = pollster::block_on(instance.enumerate_adapters(desc_backends()));
    if let Ok(wanted) = std::env::var("WGPU_ADAPTER_NAME") {
        let wanted = wanted.to_lowercase();
        adapters.retain(|a| a.get_info().name.to_lowercase().contains(&wanted));
    }
    adapters.sort_by_key(|a| rank(&a.get_info()));
    adapters
}

/// Why [`list_adapters`] is empty, in words: the environment's filters excluded every
/// adapter (naming those that exist), or there is none at all.
pub fn no_adapter_reason() -> String {
    let filters: Vec<String> = ADAPTER_FILTERS
        .into_iter()
        .filter_map(|name| std::env::var(name).ok().map(|v| format!("{name}={v}")))
        .collect();
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = wgpu::Backends::all();
    let instance = wgpu::Instance::new(desc);
    let existing: Vec<String> =
        pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
            .iter()
            .map(|a| {
                let i = a.get_info();
                format!("{} ({:?})", i.name, i.backend)
            })
            .collect();
    match (filters.is_empty(), existing.is_empty()) {
        (false, false) => format!(
            "{} excluded every adapter; these exist: {}",
            filters.join(" and "),
            existing.join(", ")
        ),
        (true, false) => format!(
            "no Vulkan/Metal/DX12 adapter found; only {} (set WGPU_BACKEND to use it)",
            existing.join(", ")
        ),
        _ => "no GPU adapter found (on headless Linux: apt-get install mesa-vulkan-drivers)"
            .to_string(),
    }
}

fn desc_backends() -> wgpu::Backends {
    wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY)
}

impl GpuContext {
    /// Open the best acceptable adapter.
    pub fn new(choice: AdapterChoice) -> Result<Self> {
        let adapters = list_adapters();
        let names: Vec<String> = adapters
            .iter()
            .map(|a| {
                let i = a.get_info();
                format!("{} ({:?}, {:?})", i.name, i.device_type, i.backend)
            })
            .collect();
        if let AdapterChoice::Index(n) = choice {
            let count = adapters.len();
            return match adapters.into_iter().nth(n) {
                Some(adapter) => Self::from_adapter(adapter),
                None => Err(Error::invalid(
                    "device",
                    format!(
                        "adapter {n} does not exist: {count} adapter(s) found ({}); see `memodiff devices`",
                        if names.is_empty() { "none".to_string() } else { names.join(", ") }
                    ),
                )),
            };
        }
        let adapter = adapters
            .into_iter()
            .find(|a| choice == AdapterChoice::Any || !is_software(&a.get_info()));
        let Some(adapter) = adapter else {
            let why = if names.is_empty() {
                no_adapter_reason()
            } else {
                format!("only software adapters found: {}", names.join(", "))
            };
            return Err(Error::NoAdapter(why));
        };
        Self::from_adapter(adapter)
    }

    fn from_adapter(adapter: wgpu::Adapter) -> Result<Self> {
        let info = adapter.get_info();
        let limits = adapter.limits();
        // Subgroups: the general-D kernels then read the particle tile by broadcasts
        // (shaders/common/general_lanes_subgroup.wgsl).
        // The pipeline cache (Vulkan): compiled pipelines kept on disk between runs.
        let features = adapter.features()
            & (wgpu::Features::TIMESTAMP_QUERY
                | wgpu::Features::SUBGROUP
                | wgpu::Features::PIPELINE_CACHE);
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("memodiff"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::Gpu(format!("cannot open device on {}: {e}", info.name)))?;

        let failure = Arc::new(Mutex::new(None::<String>));
        let on_error = failure.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut slot = on_error.lock().unwrap();
            if slot.is_none() {
                let hint = match e {
                    wgpu::Error::OutOfMemory { .. } => {
                        " (out of GPU memory: use a smaller --batch or --backend cpu)"
                    }
                    _ => "",
                };
                *slot = Some(format!("{}{hint}", error_chain(&e)));
            }
        }));
        let on_lost = failure.clone();
        device.set_device_lost_callback(move |reason, message| {
            let mut slot = on_lost.lock().unwrap();
            if slot.is_none() {
                *slot = Some(format!(
                    "device lost ({reason:?}): {message}; rerun with a smaller --batch or --backend cpu"
                ));
            }
        });
        let pipeline_cache = PipelineCacheFile::open(&device, &info).map(Arc::new);
        Ok(Self {
            pipeline_cache,
            device,
            queue,
            info,
            limits,
            features,
            failure,
        })
    }

    /// Whether the general-D kernels can use their subgroup variant: the device has
    /// subgroups, each of 8 to 64 invocations (lanes 0..7 of every subgroup hold the
    /// broadcast values, and subgroups of at most 64 are whole within a workgroup of 64).
    pub fn has_subgroups_for_general_kernels(&self) -> bool {
        self.features.contains(wgpu::Features::SUBGROUP)
            && self.info.subgroup_min_size >= 8
            && self.info.subgroup_max_size <= 64
    }

    /// The file the compiled pipelines are kept in between runs, if any (see
    /// [`pipeline_cache`](super::pipeline_cache)).
    pub fn pipeline_cache_path(&self) -> Option<&std::path::Path> {
        self.pipeline_cache.as_deref().map(PipelineCacheFile::path)
    }

    /// Write the pipeline cache now (it is also written when the context is dropped).
    pub fn save_pipeline_cache(&self) -> std::io::Result<()> {
        self.pipeline_cache
            .as_deref()
            .map_or(Ok(()), PipelineCacheFile::save)
    }

    /// The adapter's name, as users see it in summaries and run.json.
    pub fn adapter_name(&self) -> String {
        format!("{} ({:?})", self.info.name, self.info.backend)
    }

    /// Whether the adapter is a software rasterizer (lavapipe, llvmpipe, WARP).
    pub fn is_software(&self) -> bool {
        is_software(&self.info)
    }

    /// Wait for `submissions` (each with the steps done once it finishes) in order,
    /// reporting each to `on_step` and checking for errors; between them, stop with
    /// `Error::Interrupted` when `cancel` is set and steps remain before `last` (what is
    /// already queued finishes unread).
    pub fn await_steps(
        &self,
        submissions: Vec<(usize, wgpu::SubmissionIndex)>,
        last: usize,
        cancel: &std::sync::atomic::AtomicBool,
        on_step: &mut dyn FnMut(usize),
    ) -> Result<()> {
        for (done, index) in submissions {
            self.device
                .poll(wgpu::PollType::Wait {
                    submission_index: Some(index),
                    timeout: None,
                })
                .map_err(|e| self.wait_error(e))?;
            self.check()?;
            on_step(done);
            if done < last && cancel.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(Error::Interrupted("interrupted".into()));
            }
        }
        Ok(())
    }

    /// Report (once) any error wgpu raised asynchronously since the last check.
    pub fn check(&self) -> Result<()> {
        match self.failure.lock().unwrap().take() {
            Some(message) => Err(Error::Gpu(message)),
            None => Ok(()),
        }
    }

    /// The error for a failed wait on `submission`: the asynchronous failure that caused
    /// it (device lost, out of memory) when one was reported, else the poll error itself,
    /// with what to do about it.
    pub fn wait_error(&self, poll_error: wgpu::PollError) -> Error {
        match self.check() {
            Err(recorded) => recorded,
            Ok(()) => Error::Gpu(format!(
                "waiting for the GPU: {poll_error}; the device may have been lost: rerun \
                 with a smaller --batch or with --backend cpu"
            )),
        }
    }

    /// Block until all submitted work is done.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| self.wait_error(e))?;
        self.check()
    }

    /// Largest storage buffer one binding may hold, in bytes.
    pub fn max_storage_bytes(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
    }

    /// A compute pipeline for `stage` with an explicit layout; `workgroup_size` is the value
    /// of the stage's workgroup-size override (a stage with a fixed size ignores it).
    pub fn pipeline(
        &self,
        stage: &super::shaders::Stage,
        layout: Option<&wgpu::PipelineLayout>,
        workgroup_size: u32,
    ) -> wgpu::ComputePipeline {
        self.pipeline_from_source(stage, &stage.source(), layout, workgroup_size)
    }

    /// A compute pipeline for the WGSL module `source` (`stage`'s source, possibly
    /// specialised), its entry point and its workgroup size as `stage` declares them
    /// (see [`pipeline`](Self::pipeline)).
    pub fn pipeline_from_source(
        &self,
        stage: &super::shaders::Stage,
        source: &str,
        layout: Option<&wgpu::PipelineLayout>,
        workgroup_size: u32,
    ) -> wgpu::ComputePipeline {
        let entry_point = stage.entry_point;
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(entry_point),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
        let override_values;
        let constants: &[(&str, f64)] = match stage.workgroup {
            Workgroup::Override(name) => {
                override_values = [(name, workgroup_size as f64)];
                &override_values
            }
            Workgroup::Fixed(_) => &[],
        };
        self.device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry_point),
                layout,
                module: &module,
                entry_point: Some(entry_point),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: self
                    .pipeline_cache
                    .as_deref()
                    .map(PipelineCacheFile::for_new_pipeline),
            })
    }

    /// Copy `bytes` bytes of `source` back to the host.
    pub fn read_buffer(&self, source: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(source, 0, &staging, 0, bytes);
        self.queue.submit([encoder.finish()]);
        map_and_copy(self, &staging, bytes)
    }
}

/// An error with all its sources: wgpu's top-level message alone is just "Validation Error".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Map an already-filled MAP_READ buffer and copy its first `bytes` bytes out.
pub fn map_and_copy(ctx: &GpuContext, staging: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    staging.map_async(wgpu::MapMode::Read, 0..bytes, move |r| {
        let _ = tx.send(r);
    });
    ctx.wait()?;
    rx.recv()
        .map_err(|_| Error::Gpu("readback callback never ran".into()))?
        .map_err(|e| Error::Gpu(format!("mapping a readback buffer: {e}")))?;
    let data = staging
        .get_mapped_range(0..bytes)
        .map_err(|e| Error::Gpu(format!("reading a mapped buffer: {e}")))?
        .to_vec();
    staging.unmap();
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::is_gpu_device_node;

    #[test]
    fn gpu_device_nodes_are_told_from_the_others() {
        for name in [
            "dri",
            "nvidia0",
            "nvidiactl",
            "nvidia-uvm",
            "dxg",
            "mali0",
            "kgsl-3d0",
            "galcore",
        ] {
            assert!(is_gpu_device_node(name), "{name}");
        }
        for name in [
            "null", "tty0", "kvm", "fuse", "shm", "drivers", "dxgkrnl", "random", "loop0",
        ] {
            assert!(!is_gpu_device_node(name), "{name}");
        }
    }
}
