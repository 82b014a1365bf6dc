#!/usr/bin/env bash
# The one command a machine with a real GPU runs: the GPU tests on that GPU and the
# benchmark matrix, in a few minutes, into one results folder whose path it prints.
#
#   scripts/gpu-check.sh BUNDLE [--quick]
#
# BUNDLE comes from scripts/gpu-bundle.sh (built elsewhere: this needs no Rust toolchain
# and no network). It refuses a software adapter (lavapipe, llvmpipe, WARP) unless
# MEMODIFF_GPU_CHECK_ALLOW_SOFTWARE=1, which CI sets on lavapipe to prove the script
# works; --quick shrinks the benchmark matrix to seconds for that. See docs/gpu-check.md.
#
# Environment: MEMODIFF_GPU_CHECK_OUT (results folder; default gpu-check-<host>-<time>
# in the current directory), MEMODIFF_GPU_CHECK_CELL_SECONDS (benchmark budget per cell,
# default 20), WGPU_BACKEND (as for memodiff).
set -uo pipefail

bundle="${1:?usage: gpu-check.sh BUNDLE [--quick]}"
quick=0
[[ "${2:-}" == "--quick" ]] && quick=1
bundle="$(cd "$bundle" && pwd)"
bin="$bundle/bin"
[[ -x "$bin/memodiff" ]] || { echo "gpu-check: $bin/memodiff missing (run scripts/gpu-bundle.sh)" >&2; exit 2; }

out="${MEMODIFF_GPU_CHECK_OUT:-$PWD/gpu-check-$(hostname 2>/dev/null || echo host)-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
# The bundled Vulkan loader, behind any the machine has.
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$bundle/lib"
# A test that runs the memodiff binary finds this one.
export CARGO_BIN_EXE_memodiff="$bin/memodiff"
failures=0
log() { echo "$*" | tee -a "$out/summary.txt"; }
seconds_since() { local ms=$((($(date +%s%N) - $1) / 1000000)); printf '%d.%03d' $((ms / 1000)) $((ms % 1000)); }

cp "$bundle/BUILD" "$out/BUILD" 2>/dev/null
{ uname -a; nproc; grep -m1 'model name' /proc/cpuinfo; nvidia-smi -L 2>/dev/null; } >"$out/machine.txt" 2>&1

# NVIDIA containers often carry the driver (libGLX_nvidia.so.0) without the Vulkan ICD
# manifest: write one, so the Vulkan loader finds the GPU.
# (`ls a* b*` fails when either pattern matches nothing: test the patterns one by one.)
have_nvidia_icd=0
for manifest in /usr/share/vulkan/icd.d/nvidia* /etc/vulkan/icd.d/nvidia*; do
    [[ -e "$manifest" ]] && have_nvidia_icd=1
done
if [[ $have_nvidia_icd -eq 0 && -z "${VK_ICD_FILENAMES:-}${VK_DRIVER_FILES:-}" ]]; then
    nvidia_lib="$(ldconfig -p 2>/dev/null | awk '/libGLX_nvidia\.so\.0 .*x86-64/ && !seen {print $NF; seen = 1}')"
    if [[ -n "$nvidia_lib" ]]; then
        printf '{"file_format_version":"1.0.0","ICD":{"library_path":"%s","api_version":"1.3.0"}}\n' \
            "$nvidia_lib" >"$out/nvidia_icd.json"
        export VK_ICD_FILENAMES="$out/nvidia_icd.json"
        log "no NVIDIA Vulkan ICD manifest installed: using $out/nvidia_icd.json -> $nvidia_lib"
    fi
fi

"$bin/memodiff" devices --json >"$out/devices.json" 2>"$out/devices.stderr"
"$bin/memodiff" devices >"$out/devices.txt" 2>&1
if ! grep -q '"device_type"' "$out/devices.json"; then
    log "gpu-check: no GPU adapter found (see $out/devices.txt)"
    echo "$out"
    exit 1
fi
hardware="$(grep -c '"device_type": *"\(DiscreteGpu\|IntegratedGpu\|VirtualGpu\)"' "$out/devices.json")"
if [[ "$hardware" -eq 0 ]]; then
    if [[ "${MEMODIFF_GPU_CHECK_ALLOW_SOFTWARE:-}" != 1 ]]; then
        log "gpu-check: only software adapters (see $out/devices.txt): refusing, this machine has no GPU to check."
        log "gpu-check: MEMODIFF_GPU_CHECK_ALLOW_SOFTWARE=1 runs anyway (CI, to test this script)."
        echo "$out"
        exit 1
    fi
    log "gpu-check: software adapter only, allowed by MEMODIFF_GPU_CHECK_ALLOW_SOFTWARE=1"
else
    export MEMODIFF_REQUIRE_HARDWARE_GPU=1
fi

# The tests run from the repository root as cargo runs them, when this script sits in a
# checkout; otherwise from the bundle.
root="$(cd "$(dirname "$0")/.." && pwd)"
[[ -f "$root/Cargo.toml" ]] || root="$bundle"
for exe in "$bin"/deps/*; do
    name="$(basename "$exe")"
    started=$(date +%s%N)
    # --quick (CI on lavapipe, where the full GPU tests already ran under cargo test):
    # one test per executable, enough to show the executables start and see the adapter.
    filters=()
    [[ $quick -eq 1 ]] && filters=(--exact philox_known_answers_on_gpu gpu_deposit_equals_its_cpu_twin
        flash_score_matches_twin_and_reference_at_tile_boundaries
        gpu_tapped_run_matches_its_single_steps
        subgroup_and_portable_general_kernels_give_the_same_bits
        the_pipeline_cache_is_kept_reused_repaired_and_optional
        a_local_score_covering_the_image_is_the_empirical_score_on_the_gpu)
    (cd "$root" && "$exe" --nocapture "${filters[@]}") >"$out/test-$name.log" 2>&1
    rc=$?
    took=$(seconds_since "$started")
    result="$(grep -E '^test result:' "$out/test-$name.log" | tail -n 1)"
    log "tests $name: exit $rc ($took s) ${result}"
    [[ $rc -eq 0 ]] || failures=$((failures + 1))
    # An executable that ran no test checked nothing (e.g. a --quick filter gone stale).
    if [[ $rc -eq 0 && "$result" =~ ^"test result: ok. 0 passed" ]]; then
        log "tests $name: no test ran"
        failures=$((failures + 1))
    fi
done

budget="${MEMODIFF_GPU_CHECK_CELL_SECONDS:-20}"
if [[ $quick -eq 1 ]]; then
    cells="1e4:8:2,1e4:1024:2,200:100:64,50:200:784"
    bench_args=(--steps 10 --warmup 1 --repeats 1 --max-cell-seconds 10)
else
    cells="1e6:8:2,1e6:1024:2,1e5:65536:2,2000:2000:64,1000:10000:784"
    bench_args=(--steps 100 --warmup 1 --repeats 3 --max-cell-seconds "$budget")
fi
started=$(date +%s%N)
"$bin/memodiff" bench --cells "$cells" --backends gpu,cpu "${bench_args[@]}" \
    --json "$out/bench.json" >"$out/bench.md" 2>"$out/bench.stderr"
rc=$?
took=$(seconds_since "$started")
log "bench: exit $rc ($took s), cells $cells"
[[ $rc -eq 0 ]] || failures=$((failures + 1))
cat "$out/bench.md" | tee -a "$out/summary.txt"

log "gpu-check: $failures failure(s); results in $out"
echo "$out"
[[ $failures -eq 0 ]]
