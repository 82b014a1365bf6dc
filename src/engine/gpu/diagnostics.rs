//! GPU self-checks that need their own tiny pipelines: Philox known answers.

use super::context::GpuContext;
use super::shaders::PHILOX_KAT_STAGE;
use crate::error::Result;
use wgpu::util::DeviceExt;

/// Raw Philox words and the Box–Muller normals made from them, one entry per case.
pub type PhiloxOutputs = (Vec<[u32; 4]>, Vec<[f32; 4]>);

/// One input of the known-answer stage. Keep in sync with `PhiloxCase` in
/// shaders/philox_kat.wgsl (checked by tests/shaders.rs).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PhiloxCase {
    /// The Philox counter.
    pub counter: [u32; 4],
    /// The Philox key.
    pub key: [u32; 2],
    /// Padding to 32 bytes.
    pub _pad: [u32; 2],
}

/// Invocations per workgroup of the known-answer stage.
const WORKGROUP: u32 = PHILOX_KAT_STAGE.workgroup.fixed_size();

/// Run Philox4x32-10 on the GPU for each (counter, key): the raw words and the four
/// Box–Muller normals of each, for bit-exact comparison with `crate::model::philox`.
pub fn philox_on_gpu(ctx: &GpuContext, cases: &[([u32; 4], [u32; 2])]) -> Result<PhiloxOutputs> {
    let input: Vec<PhiloxCase> = cases
        .iter()
        .map(|&(counter, key)| PhiloxCase {
            counter,
            key,
            _pad: [0; 2],
        })
        .collect();
    let device = &ctx.device;
    let cases_buf = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("philox cases"),
        contents: bytemuck::cast_slice(&input),
        usage: wgpu::BufferUsages::STORAGE,
    });
    let bytes = (cases.len() * 16) as u64;
    let out = |label| {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        })
    };
    let words = out("philox words");
    let normals = out("philox normals");
    let pipeline = ctx.pipeline(&PHILOX_KAT_STAGE, None, WORKGROUP);
    let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("philox kat"),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry {
                binding: 0,
                resource: cases_buf.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: words.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 2,
                resource: normals.as_entire_binding(),
            },
        ],
    });
    let mut encoder = device.create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &group, &[]);
        pass.dispatch_workgroups((cases.len() as u32).div_ceil(WORKGROUP), 1, 1);
    }
    ctx.queue.submit([encoder.finish()]);
    let w = ctx.read_buffer(&words, bytes)?;
    let z = ctx.read_buffer(&normals, bytes)?;
    Ok((
        bytemuck::cast_slice::<u8, [u32; 4]>(&w).to_vec(),
        bytemuck::cast_slice::<u8, [f32; 4]>(&z).to_vec(),
    ))
}
