#!/usr/bin/env python3
"""The BLAS peer of memodiff's cpu engine for D > 4: what a researcher writes in NumPy.

Reverse-time Euler–Maruyama on the VP-SDE (beta in [beta_min, beta_max], the tutorial's
grid ts = linspace(1/(S-1), 1, S)), driven by the exact empirical score of a Gaussian
random training set of shape (N, D). Per step and chunk of particles: one GEMM for the
logits (x·Aᵀ scaled; |a|² precomputed; |x|² dropped, it cancels in the softmax), the
softmax in NumPy, one GEMM for the weighted mean (W·A).

Prints one JSON line: the sampling time (median of --reps), its GFLOP/s counting 4·D
flops per particle x point x step, the sgemm rate measured here on a large product, and
the rate of the peer's own GEMMs alone (the same shapes, timed by themselves) with its
ratio to that sgemm peak.

Threads: set OPENBLAS_NUM_THREADS / OMP_NUM_THREADS / MKL_NUM_THREADS before NumPy is
imported (done below from --threads) so BLAS uses that many.
"""
import argparse
import json
import os
import sys
import time

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--n", type=int, default=2000, help="training points N")
parser.add_argument("--dim", type=int, default=64, help="dimension D")
parser.add_argument("--particles", type=int, default=2000, help="particles P")
parser.add_argument("--steps", type=int, default=100, help="time points S (S-1 steps)")
parser.add_argument("--beta-min", type=float, default=0.001)
parser.add_argument("--beta-max", type=float, default=3.0)
parser.add_argument("--chunk", type=int, default=1024, help="particles per GEMM")
parser.add_argument("--threads", type=int, default=2, help="BLAS threads (with --workers 1)")
parser.add_argument(
    "--workers", type=int, default=1,
    help="Python threads over particle chunks, each with single-threaded BLAS (NumPy's "
    "element-wise passes are single-threaded: workers run them in parallel too)")
parser.add_argument("--reps", type=int, default=3, help="timed repetitions (median)")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(args.threads if args.workers == 1 else 1)

import numpy as np  # noqa: E402  (after the thread variables)


# NumPy releases the GIL inside BLAS calls and ufuncs, so threads over chunks run in
# parallel.
POOL = None
if args.workers > 1:
    from concurrent.futures import ThreadPoolExecutor

    POOL = ThreadPoolExecutor(args.workers)


def schedule(t):
    """(beta, s, sigma2) of the linear-beta VP-SDE at forward time t."""
    b = args.beta_min + t * (args.beta_max - args.beta_min)
    big_b = t * args.beta_min + 0.5 * t * t * (args.beta_max - args.beta_min)
    return b, np.exp(-0.5 * big_b), -np.expm1(-big_b)


def sample(train, half_norm2, rng):
    p, d = args.particles, args.dim
    ts = np.linspace(1.0 / (args.steps - 1), 1.0, args.steps)
    _, _, sigma2_1 = schedule(1.0)
    x = (np.sqrt(sigma2_1) * rng.standard_normal((p, d))).astype(np.float32)
    for t, t_next in zip(ts[:-1], ts[1:]):
        dt, tau = t_next - t, 1.0 - t
        beta, s, sigma2 = schedule(tau)
        keep = np.float32(1.0 + dt * beta * (0.5 - 1.0 / sigma2))
        mean_coeff = np.float32(dt * beta * s / sigma2)
        noise = np.float32(np.sqrt(dt * beta))
        # logit_i = (s x·a_i − s² |a_i|²/2) / sigma2, |x|² dropped.
        xs = np.float32(s / sigma2)
        bias = (np.float32(s * s / sigma2) * half_norm2)[None, :]
        z = rng.standard_normal((p, d), dtype=np.float32)
        def advance(lo):
            xc = x[lo:lo + args.chunk]
            logits = (xc * xs) @ train.T
            logits -= bias
            logits -= logits.max(axis=1, keepdims=True)
            # Weights below e^-60 of the largest are set to exactly 0 (they move the sum by
            # less than N e^-60, far below f32 resolution). Left alone, exp makes many of
            # them subnormal late in the trajectory, and on Intel x86 every product with a
            # subnormal in the weighted-mean GEMM takes a microcode assist: that made this
            # peer 2.3x slower at D = 784 (6.2 s against 2.7 s, N = 2,000, P = 500).
            np.copyto(logits, np.float32(-np.inf), where=logits < np.float32(-60.0))
            np.exp(logits, out=logits)
            weights = logits
            mean = (weights @ train) / weights.sum(axis=1, keepdims=True)
            x[lo:lo + args.chunk] = keep * xc + mean_coeff * mean + noise * z[lo:lo + args.chunk]

        chunks = range(0, p, args.chunk)
        if POOL is None:
            for lo in chunks:
                advance(lo)
        else:
            list(POOL.map(advance, chunks))
    return x


def gemm_rate(m, k, n, reps):
    """GFLOP/s of C = A·B (f32) of shape (m,k)x(k,n), median of reps."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    a @ b
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2.0 * m * k * n / np.median(times) / 1e9


def main():
    rng = np.random.default_rng(args.seed)
    train = rng.standard_normal((args.n, args.dim), dtype=np.float32)
    half_norm2 = (0.5 * (train.astype(np.float64) ** 2).sum(axis=1)).astype(np.float32)
    sample(train, half_norm2, np.random.default_rng(args.seed + 1))  # warm-up
    times = []
    for r in range(args.reps):
        t0 = time.perf_counter()
        out = sample(train, half_norm2, np.random.default_rng(args.seed + 1))
        times.append(time.perf_counter() - t0)
        assert np.isfinite(out).all()
    seconds = float(np.median(times))
    steps = args.steps - 1
    flops = 4.0 * args.dim * args.n * args.particles * steps
    # The peer's two GEMM shapes alone, as in one step, repeated to a measurable time.
    chunk = min(args.chunk, args.particles)
    rng2 = np.random.default_rng(2)
    xc = rng2.standard_normal((chunk, args.dim), dtype=np.float32)
    w = rng2.random((chunk, args.n), dtype=np.float32)
    reps = max(3, int(2e9 / (4.0 * args.dim * args.n * chunk)))
    xc @ train.T
    w @ train
    t0 = time.perf_counter()
    for _ in range(reps):
        xc @ train.T
        w @ train
    gemm_seconds = time.perf_counter() - t0
    peer_gemm = 4.0 * args.dim * args.n * chunk * reps / gemm_seconds / 1e9
    peak = gemm_rate(4096, 4096, 4096, 3)
    print(json.dumps({
        "peer": "numpy-blas",
        "numpy": np.__version__,
        "threads": args.threads, "workers": args.workers, "chunk": args.chunk,
        "n": args.n, "dim": args.dim, "particles": args.particles, "steps": steps,
        "sampling_s": round(seconds, 4),
        "sampling_s_all": [round(t, 4) for t in times],
        "gflops": round(flops / seconds / 1e9, 2),
        "peer_gemm_gflops": round(peer_gemm, 2),
        "sgemm_peak_gflops": round(peak, 2),
        "peer_gemm_over_peak": round(peer_gemm / peak, 3),
        "sampling_over_peak": round(flops / seconds / 1e9 / peak, 3),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
