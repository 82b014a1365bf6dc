"""Samples of the empirical score and of the patch-local scores on scikit-learn's digits,
side by side: docs/patch-scores.png.

    python3 scripts/export-digits.py          # once (needs scikit-learn)
    pip install ./python matplotlib
    python3 examples/patch_scores.py [OUT.png]

Each row is 12 samples from the same 12 initial noises (seed 0, Heun on the tutorial's
grid of 100 time points) under one score; the first row is 12 training images for scale.
"""
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import memodiff

COUNT = 12


def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 else "docs/patch-scores.png"
    images, _ = memodiff.datasets.digits()
    rows = [("training images", images[:COUNT].reshape(COUNT, -1))]
    for score in ("empirical", "local:3", "els:3", "els:5"):
        run = memodiff.sample(images, COUNT, steps=100, sampler="heun", score=score,
                              backend="cpu", seed=0)
        rows.append((f"--score {score}", run.samples))
    figure, axes = plt.subplots(len(rows), COUNT, figsize=(COUNT * 0.8, len(rows) * 0.95))
    for r, (title, samples) in enumerate(rows):
        for c in range(COUNT):
            axis = axes[r, c]
            axis.imshow(samples[c].reshape(8, 8), cmap="gray_r", vmin=0, vmax=1,
                        interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
        axes[r, 0].set_ylabel(title, rotation=0, ha="right", va="center", fontsize=9)
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
