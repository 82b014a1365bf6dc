#!/usr/bin/env bash
# Golden outputs: run a fixed set of memodiff commands and hash every file they write,
# so that a change meant to keep results (a refactor) can prove it kept them byte for byte.
#
#   scripts/golden.sh record [FILE]   write the hashes (default scripts/golden.sha256)
#   scripts/golden.sh check  [FILE]   compare with them; exit 1 and list what differs
#
# Environment: MEMODIFF_BIN (default target/release/memodiff), GOLDEN_WORK (a folder to
# keep the outputs in; default a temp folder, removed at the end).
#
# What is hashed is what a user keeps: .npy, .png, .csv, .json files. run.json and
# metrics files are hashed without the fields that differ between two identical runs
# (timings, the command line with its paths, the device's name). CPU results are
# bit-identical for one instruction set, so the CPU commands run with
# MEMODIFF_CPU_ISA=avx2 (x86-64) or the build's own lanes elsewhere; GPU results belong to
# one adapter and driver, so the gpu command's hashes are recorded with the adapter's
# name and compared only on the same adapter (elsewhere the script says it skipped them).
set -euo pipefail

mode=${1:-}
root=$(cd "$(dirname "$0")/.." && pwd)
hashes=${2:-$root/scripts/golden.sha256}
bin=${MEMODIFF_BIN:-$root/target/release/memodiff}
case "$mode" in
record | check) ;;
*)
    echo "usage: scripts/golden.sh record|check [HASH_FILE]" >&2
    exit 2
    ;;
esac
[ -x "$bin" ] || { echo "golden: no binary at $bin (cargo build --release first)" >&2; exit 2; }
command -v jq >/dev/null || { echo "golden: needs jq (apt-get install jq)" >&2; exit 2; }

if [ -n "${GOLDEN_WORK:-}" ]; then
    work=$GOLDEN_WORK
    rm -rf "$work" && mkdir -p "$work"
else
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
fi
if [ "$(uname -m)" = x86_64 ]; then export MEMODIFF_CPU_ISA=avx2; fi

m() {
    "$bin" "$@" >/dev/null 2>"$work/stderr" || {
        echo "golden: memodiff $* failed:" >&2
        cat "$work/stderr" >&2
        exit 2
    }
}

# --- the commands -----------------------------------------------------------------------
cd "$work"
m sample --backend cpu --out cpu-default
m sample --backend reference --particles 20000 --out reference
m sample --backend cpu --sampler heun --particles 20000 --out heun
m sample --backend cpu --dataset gaussian:300:64 --particles 400 --out d64-data
m sample --backend cpu --dataset d64-data/samples.npy --particles 500 --out d64
m render cpu-default/samples.npy --out render.png
m score-field --backend cpu --t 0.1 --out score-field
m collapse --backend cpu --n 8,32 --d 2 --particles 2000 --steps 40 --out collapse
m sweep --backend cpu --param n --values 8,64 --d 2 --particles 2000 --steps 40 --out sweep
for k in 0 1 2; do
    m sample --backend cpu --particles 30000 --shard "$k/3" --out "shard$k"
done
m merge shard0 shard1 shard2 --out merged
# A checkpointed run killed after its first checkpoint and resumed: bit-identical to an
# uninterrupted run (if it finishes before the kill, the hashes are the same anyway).
"$bin" sample --backend cpu --particles 200000 --batch 50000 --checkpoint-every 5 \
    --out resumed >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 400); do
    [ -f resumed/checkpoint/checkpoint.json ] && break
    kill -0 $pid 2>/dev/null || break
    sleep 0.01
done
kill -9 $pid 2>/dev/null || true
wait $pid 2>/dev/null || true
if [ -d resumed/checkpoint ]; then
    m resume resumed
    echo "golden: the checkpointed run was killed mid-way and resumed"
else
    echo "golden: the checkpointed run finished before it could be killed"
fi
gpu_adapter=""
if "$bin" sample --backend gpu --particles 20000 --out gpu >/dev/null 2>gpu.err; then
    gpu_adapter=$(jq -r .device gpu/run.json)
else
    echo "golden: no GPU adapter ($(head -1 gpu.err)); the gpu outputs are not compared" >&2
    rm -rf gpu
fi

# --- hashing ----------------------------------------------------------------------------
# JSON files: sorted keys, without what differs between identical runs.
normalise() {
    jq -S 'walk(if type == "object" then del(.timings_s, .command, .device, .backend_note,
        .elapsed_s, .seconds, .wall_s) else . end)' "$1"
}
current=$work/current.sha256
: >"$current"
while IFS= read -r f; do
    case "$f" in
    ./gpu/*) tag="gpu[$gpu_adapter]" ;;
    *) tag=cpu ;;
    esac
    case "$f" in
    *.json) h=$(normalise "$f" | sha256sum | cut -d' ' -f1) ;;
    *) h=$(sha256sum "$f" | cut -d' ' -f1) ;;
    esac
    echo "$h  $tag  ${f#./}" >>"$current"
done < <(find . -type f \( -name '*.npy' -o -name '*.png' -o -name '*.csv' -o -name '*.json' \) \
    ! -path './resumed/checkpoint/*' | LC_ALL=C sort)

if [ "$mode" = record ]; then
    {
        echo "# memodiff golden outputs: scripts/golden.sh check compares with these."
        echo "# sha256  producer  file (JSON: normalised, see the script)"
        cat "$current"
    } >"$hashes"
    echo "golden: recorded $(wc -l <"$current") files in $hashes"
    exit 0
fi

[ -f "$hashes" ] || { echo "golden: no hash file $hashes (record first)" >&2; exit 2; }
fail=0
compared=0
skipped=0
while IFS= read -r line; do
    case "$line" in '#'* | '') continue ;; esac
    want=${line%%  *}
    rest=${line#*  }
    tag=${rest%%  *}
    file=${rest#*  }
    case "$tag" in
    gpu*)
        if [ "$tag" != "gpu[$gpu_adapter]" ]; then
            skipped=$((skipped + 1))
            continue
        fi
        ;;
    esac
    got=$(grep -F "  $tag  $file" "$current" | grep -E "  ${file//./\\.}\$" | cut -d' ' -f1 || true)
    compared=$((compared + 1))
    if [ -z "$got" ]; then
        echo "golden: MISSING $file"
        fail=1
    elif [ "$got" != "$want" ]; then
        echo "golden: DIFFERS $file"
        fail=1
    fi
done <"$hashes"
# Files written now that the record does not know.
while IFS= read -r line; do
    file=${line##*  }
    grep -qF "  $file" "$hashes" || { echo "golden: NEW $file"; fail=1; }
done < <(grep -v '  gpu\[' "$current")
if [ $skipped -gt 0 ]; then
    echo "golden: skipped $skipped gpu files recorded on another adapter (this one: ${gpu_adapter:-none})"
fi
if [ $fail -ne 0 ]; then
    echo "golden: outputs differ from $hashes" >&2
    exit 1
fi
echo "golden: $compared files identical"
