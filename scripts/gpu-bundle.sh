#!/usr/bin/env bash
# Build, here, everything scripts/gpu-check.sh needs on a machine with a GPU but without a
# Rust toolchain or a package registry: the memodiff binary and the GPU test executables
# (gpu, raster_gpu, gpu_kernels, gpu_tap, gpu_subgroups where they exist), stripped,
# plus the Vulkan loader (libvulkan.so.1) in case the GPU machine has only the driver.
#
#   scripts/gpu-bundle.sh [OUT]        (default: target/gpu-bundle)
#
# Layout: OUT/bin/memodiff, OUT/bin/deps/<test executables> (the layout cargo uses, so a
# test that runs the memodiff binary finds it next to its deps/ folder), OUT/lib/,
# OUT/BUILD (commit and toolchain). Copy OUT to the GPU machine and run
# scripts/gpu-check.sh OUT there.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/gpu-bundle}"
tests=(gpu raster_gpu gpu_kernels gpu_tap gpu_subgroups gpu_pipeline_cache gpu_patch_scores)

cargo build --release
# The test executables' paths: cargo names them with a hash, printed in its JSON messages.
messages="$(cargo test --release --no-run --message-format=json)"

rm -rf "$out"
mkdir -p "$out/bin/deps" "$out/lib"
strip_copy() {
    if command -v strip >/dev/null; then strip -o "$2" "$1"; else cp "$1" "$2"; fi
}
strip_copy target/release/memodiff "$out/bin/memodiff"
found=()
for name in "${tests[@]}"; do
    exe="$(printf '%s\n' "$messages" | jq -r --arg name "$name" \
        'select(.reason == "compiler-artifact" and .target.name == $name
                and (.target.kind | index("test")) and .executable != null)
         | .executable' | tail -n 1)"
    if [[ -n "$exe" ]]; then
        strip_copy "$exe" "$out/bin/deps/$name"
        found+=("$name")
    fi
done
if [[ ${#found[@]} -eq 0 ]]; then
    echo "gpu-bundle: no GPU test executable found" >&2
    exit 1
fi
loader="$(ldconfig -p 2>/dev/null | awk '/libvulkan\.so\.1 .*x86-64/ && !seen {print $NF; seen = 1}')"
if [[ -n "$loader" ]]; then
    cp -L "$loader" "$out/lib/libvulkan.so.1"
fi
{
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "rustc: $(rustc --version)"
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -srm)"
    echo "tests: ${found[*]}"
} >"$out/BUILD"
du -sh "$out"
echo "$out"
