#!/usr/bin/env python3
"""A JAX peer for `memodiff sample --score els:k`: the equivariant local score of Kamb &
Ganguli written directly, as a researcher would in the reference tutorial's framework.

Per step, every pixel's circular k x k patch of every particle is a query against the
dictionary of all wholly-inside k x k patches of all training images; the patch cross
term is one matrix product per dictionary block, the softmax a blockwise logsumexp
(running max, rescaled sums) over the blocks, and the denoised pixel the weighted mean of
the patches' centres. The reverse SDE is the tutorial's: VP, beta from 0.001 to 3, Euler-
Maruyama on linspace(1/(S-1), 1, S). Everything runs under one `jax.jit` (the steps in a
`fori_loop`, the blocks in a `scan`), particles batched; compilation is timed apart.

    python3 benches/peers/jax_els.py --images digits.npy --particles 200 --k 3

Prints one JSON line: sampling_s (median of --reps calls after compilation), compile_s,
and the problem's sizes.
"""
import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np


def dictionary(images: np.ndarray, k: int) -> np.ndarray:
    """Every wholly-inside k x k patch of every image, (M, k*k), row-major windows."""
    windows = np.lib.stride_tricks.sliding_window_view(images, (k, k), axis=(1, 2))
    return np.ascontiguousarray(windows.reshape(-1, k * k), dtype=np.float32)


def queries(x, k: int):
    """The circular k x k patch around every pixel: (P, H, W) -> (P*H*W, k*k)."""
    r = k // 2
    shifted = [jnp.roll(x, (r - dy, r - dx), axis=(1, 2)) for dy in range(k) for dx in range(k)]
    return jnp.stack(shifted, axis=-1).reshape(-1, k * k)


def make_sampler(patches: np.ndarray, k: int, shape, steps: int, block: int):
    m_total = patches.shape[0]
    pad = (-m_total) % block
    # Padding patches get -inf logits through their norms.
    norms = np.concatenate([(patches ** 2).sum(1), np.full(pad, np.inf, np.float32)])
    padded = np.concatenate([patches, np.zeros((pad, k * k), np.float32)])
    blocks = jnp.asarray(padded.reshape(-1, block, k * k))
    block_norms = jnp.asarray(norms.reshape(-1, block))
    centres = blocks[:, :, (k * k) // 2]
    ts = jnp.linspace(1.0 / (steps - 1), 1.0, steps)
    beta_min, beta_max = 0.001, 3.0

    def denoise(x, s, sigma2):
        q = queries(x, k)
        scale, shift = s / sigma2, s * s / (2.0 * sigma2)

        def over_blocks(carry, blk):
            best, total, acc = carry
            patches_b, norms_b, centres_b = blk
            logits = (q @ patches_b.T) * scale - norms_b[None, :] * shift
            new_best = jnp.maximum(best, logits.max(axis=1))
            keep = jnp.exp(best - new_best)
            w = jnp.exp(logits - new_best[:, None])
            return (new_best, total * keep + w.sum(1), acc * keep + w @ centres_b), None

        n = q.shape[0]
        start = (jnp.full(n, -jnp.inf), jnp.zeros(n), jnp.zeros(n))
        (best, total, acc), _ = jax.lax.scan(over_blocks, start, (blocks, block_norms, centres))
        return (acc / total).reshape(x.shape)

    def sample(key, x):
        def step(i, carry):
            x, key = carry
            t = ts[i]
            dt = ts[i + 1] - t
            tau = 1.0 - t
            b = beta_min * tau + 0.5 * (beta_max - beta_min) * tau * tau
            beta = beta_min + (beta_max - beta_min) * tau
            s, sigma2 = jnp.exp(-0.5 * b), -jnp.expm1(-b)
            m = denoise(x, s, sigma2)
            key, sub = jax.random.split(key)
            z = jax.random.normal(sub, x.shape)
            drift = 0.5 * beta * x + beta * (s * m - x) / sigma2
            return x + dt * drift + jnp.sqrt(dt * beta) * z, key

        x, _ = jax.lax.fori_loop(0, steps - 1, step, (x, key))
        return x

    return jax.jit(sample)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", required=True, help=".npy of (N, H, W) float images")
    parser.add_argument("--particles", type=int, default=200)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100, help="time points S")
    parser.add_argument("--block", type=int, default=4096, help="dictionary patches per block")
    parser.add_argument("--reps", type=int, default=1)
    args = parser.parse_args()
    images = np.load(args.images).astype(np.float32)
    _, h, w = images.shape
    patches = dictionary(images, args.k)
    sampler = make_sampler(patches, args.k, (h, w), args.steps, args.block)
    key = jax.random.PRNGKey(0)
    sigma_start = float(np.sqrt(-np.expm1(-(0.001 + 0.5 * 2.999))))
    x = jax.random.normal(key, (args.particles, h, w)) * sigma_start
    started = time.perf_counter()
    compiled = sampler.lower(key, x).compile()
    compile_s = time.perf_counter() - started
    times = []
    for _ in range(args.reps):
        started = time.perf_counter()
        out = compiled(key, x)
        out.block_until_ready()
        times.append(time.perf_counter() - started)
    print(json.dumps({
        "sampling_s": float(np.median(times)),
        "compile_s": compile_s,
        "particles": args.particles,
        "dictionary_patches": int(patches.shape[0]),
        "k": args.k,
        "steps": args.steps,
        "finite": bool(np.isfinite(np.asarray(out)).all()),
        "jax": jax.__version__,
        "devices": [str(d) for d in jax.devices()],
    }))


if __name__ == "__main__":
    main()
