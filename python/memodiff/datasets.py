"""The built-in training sets, as ``memodiff sample --dataset`` names them: (N, D) float64
arrays, the same points as the command line's for the same spec and data seed."""

from __future__ import annotations

from typing import Tuple

import numpy as np

from . import _memodiff

__all__ = ["from_spec", "circle", "gaussian", "two_gaussians", "moons", "spiral", "grid", "digits"]


def from_spec(spec: str, data_seed: int = 0) -> np.ndarray:
    """The training set of a ``--dataset`` spec (``circle:8``, ``moons:1000:0.05``, a
    ``.npy``/``.csv`` path, ...); random sets draw from ``data_seed``."""
    return _memodiff.dataset_from_spec(spec, int(data_seed))


def circle(n: int = 8) -> np.ndarray:
    """``n`` points evenly spaced on the unit circle (the tutorial's training set)."""
    return from_spec(f"circle:{int(n)}")


def gaussian(n: int, dim: int, sigma: float = 1.0, data_seed: int = 0) -> np.ndarray:
    """``n`` i.i.d. points of N(0, sigma² I) in R^dim."""
    return from_spec(f"gaussian:{int(n)}:{int(dim)}:{float(sigma)!r}", data_seed)


def two_gaussians(n: int, dim: int, sigma: float = 1.0, data_seed: int = 0) -> np.ndarray:
    """The first ⌈n/2⌉ points from N(+m, sigma² I), the rest from N(−m, sigma² I), m = (1, …, 1)."""
    return from_spec(f"two-gaussians:{int(n)}:{int(dim)}:{float(sigma)!r}", data_seed)


def moons(n: int, noise: float = 0.0, data_seed: int = 0) -> np.ndarray:
    """scikit-learn's ``make_moons(n, shuffle=False)`` plus Gaussian noise of std ``noise``."""
    return from_spec(f"moons:{int(n)}:{float(noise)!r}", data_seed)


def spiral(n: int) -> np.ndarray:
    """``n`` points along two turns of an Archimedean spiral, radius 0.1 → 1."""
    return from_spec(f"spiral:{int(n)}")


def grid(k: int) -> np.ndarray:
    """The k × k points of linspace(−1, 1, k)²."""
    return from_spec(f"grid:{int(k)}")


def digits() -> Tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8x8 digits as ``--dataset digits`` reads them: images (1797, 8,
    8) float32 in [0, 1] and labels (1797,) int64, from the data folder
    (``$MEMODIFF_DATA``, else ``$XDG_DATA_HOME/memodiff``, else
    ``~/.local/share/memodiff``) where ``scripts/export-digits.py`` wrote them."""
    images, labels = _memodiff.digits_files()
    return np.load(images), np.load(labels)
