//! Bind-group layouts of the compute stages. Every binding of every stage is a buffer
//! seen by the compute stage, numbered from 0 in the order the shader declares them, so a
//! layout is just the list of their kinds.

/// How a stage binds one buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferBinding {
    /// A uniform buffer bound whole.
    Uniform,
    /// A uniform buffer bound at an offset given with each dispatch (one record of many).
    UniformAtOffset,
    /// A read-only storage buffer.
    ReadOnly,
    /// A read-write storage buffer.
    ReadWrite,
    /// A read-write storage buffer bound at an offset given with each dispatch.
    ReadWriteAtOffset,
}

impl BufferBinding {
    /// The layout entry of this kind at `binding`.
    pub fn entry(self, binding: u32) -> wgpu::BindGroupLayoutEntry {
        use wgpu::BufferBindingType as Type;
        let (ty, has_dynamic_offset) = match self {
            BufferBinding::Uniform => (Type::Uniform, false),
            BufferBinding::UniformAtOffset => (Type::Uniform, true),
            BufferBinding::ReadOnly => (Type::Storage { read_only: true }, false),
            BufferBinding::ReadWrite => (Type::Storage { read_only: false }, false),
            BufferBinding::ReadWriteAtOffset => (Type::Storage { read_only: false }, true),
        };
        wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty,
                has_dynamic_offset,
                min_binding_size: None,
            },
            count: None,
        }
    }
}

/// The layout of a bind group whose binding `i` is a buffer bound as `bindings[i]`.
pub fn buffer_layout(
    device: &wgpu::Device,
    label: &str,
    bindings: &[BufferBinding],
) -> wgpu::BindGroupLayout {
    let entries: Vec<wgpu::BindGroupLayoutEntry> = bindings
        .iter()
        .zip(0u32..)
        .map(|(kind, binding)| kind.entry(binding))
        .collect();
    device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(label),
        entries: &entries,
    })
}
