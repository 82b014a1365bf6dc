"""memodiff: reverse-time diffusion sampling driven by the exact empirical score of a
finite training set, on the GPU (wgpu) or the CPU, to show and measure memorization.

The same engines, seeds and results as the ``memodiff`` command line, bit for bit, with
NumPy arrays in and out::

    import memodiff
    train = memodiff.datasets.circle(8)
    run = memodiff.sample(train, 1_000_000, seed=0)
    run.samples            # float32 (P, 2), handed over without a copy
    run.metrics["memorized_fraction"]
    grid = memodiff.density(run.samples, extent=(-3, 3, -3, 3))
    rgb = memodiff.shade(grid)   # uint8 (512, 512, 3), as samples.png

Errors: bad arguments raise ``ValueError`` naming the argument; a failing engine raises
``RuntimeError``; Ctrl-C stops a run within a step or two and raises
``KeyboardInterrupt`` (the module installs no signal handler of its own).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _memodiff
from . import datasets

__all__ = ["Run", "sample", "score", "speciation", "density", "shade", "devices", "datasets"]
__version__: str = _memodiff.__version__

#: Kernel bandwidth of the density images: the reference tutorial's exp(-350 d^2).
DEFAULT_BANDWIDTH: float = _memodiff.DEFAULT_BANDWIDTH

ArrayLike = Any


def _training(train: ArrayLike) -> Tuple[np.ndarray, Optional[Tuple[int, int, int]]]:
    """`train` as (N, D) float64, and the (H, W, C) of image sets given as (N, H, W) or
    (N, H, W, C) (flattened row-major, as the CLI reads an image `.npy`)."""
    try:
        array = np.asarray(train)
    except (TypeError, ValueError) as e:
        raise ValueError(f"invalid train: not an array of numbers ({e})") from None
    shape = None
    if array.ndim > 4:
        raise ValueError(
            f"invalid train: expected (N, D) or images (N, H, W[, C]), got shape {array.shape}"
        )
    if array.ndim in (3, 4):
        shape = tuple(int(v) for v in array.shape[1:]) + ((1,) if array.ndim == 3 else ())
        array = array.reshape(array.shape[0], -1)
    return _float_array(array, "train", np.float64), shape


def _float_array(value: ArrayLike, name: str, dtype: type, columns: Optional[int] = None) -> np.ndarray:
    """`value` as a C-contiguous 2-D array of `dtype`, checked: a ValueError names `name`."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"invalid {name}: not an array of numbers ({e})") from None
    if array.ndim == 1 and columns is None:
        array = array.reshape(-1, 1)
    if array.ndim != 2:
        raise ValueError(f"invalid {name}: expected a 2-D array (rows, D), got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"invalid {name}: the array is empty (shape {array.shape})")
    if columns is not None and array.shape[1] != columns:
        raise ValueError(f"invalid {name}: expected {columns} columns, got shape {array.shape}")
    bad = ~np.isfinite(array)
    if dtype is np.float32:
        with np.errstate(over="ignore", invalid="ignore"):
            bad |= ~np.isfinite(array.astype(np.float32))
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise ValueError(
            f"invalid {name}: row {row} is not finite"
            + (" in float32 (NaN, inf or beyond ±3.4e38)" if dtype is np.float32 else " (NaN or inf)")
        )
    return np.ascontiguousarray(array, dtype=dtype)


class Run:
    """The result of :func:`sample`.

    Attributes:
        samples: the final positions, float32 (P, D) (a shard's rows for ``shard=``).
        initial: the initial positions x_T, float32 (P, D), with ``return_initial=True``
            (or the given ``initial=``); else ``None``.
        snapshots: with ``snapshots=``: the particles after each of those numbers of
            updates, {k: float32 (P, D)}.
        metrics: the memorization metrics, as run.json's ``memorization`` has them
            (``memorized_fraction``, ``nearest_counts``, ...).
        info: what the run was: ``backend``, ``device``, ``backend_note``,
            ``timings_s`` and ``parameters``.
    """

    __slots__ = ("samples", "initial", "snapshots", "metrics", "info")

    def __init__(
        self,
        samples: np.ndarray,
        initial: Optional[np.ndarray],
        snapshots: Dict[int, np.ndarray],
        metrics: Dict[str, Any],
        info: Dict[str, Any],
    ):
        self.samples = samples
        self.initial = initial
        self.snapshots = snapshots
        self.metrics = metrics
        self.info = info

    def __repr__(self) -> str:
        p, d = self.samples.shape
        return (
            f"<memodiff.Run {p} samples in D = {d} on {self.info['backend']} "
            f"({self.info['device']}), memorized {100 * self.metrics['memorized_fraction']:.2f}%>"
        )


def _line_progress(done: int, total: int) -> None:
    """A progress line on stderr, for terminals without tqdm."""
    import sys

    share = done / total if total else 1.0
    filled = int(30 * share)
    sys.stderr.write(f"\rmemodiff [{'#' * filled}{'.' * (30 - filled)}] {100 * share:5.1f}%")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def _tqdm_progress() -> Callable[[int, int], None]:
    """A progress callback drawing a tqdm bar (notebook-aware), or a plain line on stderr
    without tqdm."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _line_progress
    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, unit="particle-steps", unit_scale=True, desc="memodiff")
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return update


def sample(
    train: ArrayLike,
    particles: int = 1_000_000,
    *,
    steps: int = 100,
    seed: int = 0,
    beta_min: float = 0.001,
    beta_max: float = 3.0,
    schedule: str = "vp-linear",
    sampler: str = "em",
    eta: float = 0.0,
    score: str = "empirical",
    patch_size: Optional[Union[int, Sequence[int]]] = None,
    t_min: float = 0.0,
    grid_start: Optional[float] = None,
    preset: Optional[str] = None,
    backend: str = "auto",
    device: Optional[int] = None,
    batch: Optional[int] = None,
    shard: Optional[Tuple[int, int]] = None,
    return_initial: bool = False,
    initial: Optional[ArrayLike] = None,
    snapshots: Optional[Sequence[int]] = None,
    progress: Union[bool, Callable[[int, int], None]] = False,
) -> Run:
    """Run the reverse-time SDE driven by the exact empirical score of ``train``.

    Args:
        train: the training set, any float array-like of shape (N, D), or images (N, H, W)
            or (N, H, W, C), flattened row-major to D = H W C as the CLI reads an image
            ``.npy`` (float64, Fortran-ordered and non-contiguous arrays are converted).
            The samples are (P, D) either way.
        particles: how many samples P to draw (the whole run's, with ``shard``).
        steps: time points S of the grid (S - 1 updates), as ``memodiff sample --steps``.
        seed: seed of the Philox streams; particle i's noise depends only on (seed, i).
        beta_min, beta_max: the linear VP schedule.
        schedule: ``"vp-linear"`` (beta from beta_min to beta_max, the tutorial's),
            ``"vp-cosine"`` (alpha_bar(t) = cos^2(pi t / 2.016), Kamb & Ganguli's) or
            ``"edm"`` (Karras et al.: x_t = x_0 + t z on their rho = 7 grid from sigma = 80
            to 0.002 and 0; with ``sampler="heun"`` their deterministic sampler).
        sampler: ``"em"`` (Euler–Maruyama on the SDE), ``"heun"`` (probability-flow ODE)
            or ``"ddim"`` (DDIM).
        eta: DDIM's eta in [0, 1]: 0 deterministic, 1 the DDPM posterior's noise.
        score: ``"empirical"``, ``"kde:h"`` (the training set smoothed by a Gaussian of
            width h), or on images a patch-local score with odd patch size k:
            ``"local:k"``, ``"els:k"`` or ``"bbels:k"`` (Kamb & Ganguli; cpu and reference
            backends, which ``"auto"`` then picks).
        patch_size: a patch-size schedule for a patch score: one odd size per step
            (``steps - 1``, from the highest noise), or one for all; it replaces the k of
            ``score``, as ``--patch-size``.
        t_min: stop at forward time t_min and return each sample's denoised mean (0: off).
        grid_start: the forward time of the first step: ``steps - 1`` equal steps from it
            down to t_min, from N(0, I) as DDIM code starts (None: the tutorial's grid,
            from N(0, sigma^2(1) I)).
        preset: a published set-up, ``"kamb-ganguli"`` (Kamb & Ganguli 2025: vp-cosine,
            DDIM on t_i = i/20, 19 updates from N(0, I) at t = 0.95) or
            ``"gu-memorization"`` (Gu et al. 2023: edm with Heun, 18 steps); both for data
            in [-1, 1]. It
            sets steps, schedule, sampler and grid_start, which must then be left as they
            are.
        backend: ``"auto"`` (a hardware GPU, else the CPU), ``"gpu"``, ``"cpu"`` or
            ``"reference"`` (f64, slow).
        device: the GPU adapter's index in :func:`devices` (default: the first suitable).
        batch: particles per batch (default: the engine's choice; results do not depend
            on it).
        shard: ``(k, n)``: run only shard k of n (a contiguous range of particle indices).
        return_initial: also return the initial positions x_T.
        initial: start from these positions (P, D) instead of the Philox draw of x_T (the
            steps' noise is still the seed's): the experiment of comparing with a trained
            network from the same x_T.
        snapshots: numbers of updates (0 = the initial positions, ``steps - 1`` = the
            samples) after which to keep the particles: ``Run.snapshots[k]`` is a float32
            (P, D) array for each.
        progress: ``True`` for a progress bar (tqdm's if installed, in a terminal and in
            Jupyter; else a line on stderr), or a callable
            ``progress(done, total)`` in particle-steps.

    Returns:
        A :class:`Run`.
    """
    train_array, image_shape = _training(train)
    if preset is not None and (steps != 100 or schedule != "vp-linear" or sampler != "em"
                               or grid_start is not None or eta != 0.0):
        raise ValueError(
            "invalid preset: it sets steps, schedule, sampler, eta and grid_start; leave "
            "those out"
        )
    initial_array = None
    if initial is not None:
        initial_array = _float_array(initial, "initial", np.float32, columns=train_array.shape[1])
    if progress is True:
        callback = _tqdm_progress()
    elif progress is False or progress is None:
        callback = None
    elif callable(progress):
        callback = progress
    else:
        raise ValueError("invalid progress: expected True, False or a callable (done, total)")
    if shard is not None:
        shard = (int(shard[0]), int(shard[1]))
    wanted = [] if snapshots is None else [int(k) for k in snapshots]
    if any(k < 0 for k in wanted):
        raise ValueError(f"invalid snapshots: steps are counted from 0, got {wanted}")
    samples, initial_out, kept, metrics, info = _memodiff.sample(
        train_array,
        int(particles),
        int(steps),
        int(seed),
        float(beta_min),
        float(beta_max),
        schedule,
        sampler,
        float(eta),
        score,
        float(t_min),
        None if grid_start is None else float(grid_start),
        preset,
        backend,
        device,
        batch,
        shard,
        bool(return_initial),
        initial_array,
        wanted,
        callback,
        image_shape,
        None if patch_size is None else [int(k) for k in np.atleast_1d(patch_size)],
    )
    return Run(samples, initial_out, dict(kept), json.loads(metrics), json.loads(info))


def speciation(
    train: ArrayLike,
    particles: int = 1000,
    *,
    classes: Union[str, ArrayLike] = "nearest",
    steps: int = 100,
    clones: int = 16,
    seed: int = 0,
    beta_min: float = 0.001,
    beta_max: float = 20.0,
    backend: str = "auto",
    device: Optional[int] = None,
) -> Dict[str, Any]:
    """Biroli et al.'s cloning experiment: the speciation time against ½ ln Λ.

    The particles run the reverse process once; at ``clones`` times a clone of every
    particle continues with its own noise, and phi is the fraction whose two clones end in
    the same class. As ``memodiff speciation``.

    Args:
        train: the training set (N, D).
        particles: particles (each has one clone per clone time).
        classes: ``"nearest"`` (a sample's class is its nearest training point),
            ``"two-halves"`` (the first ⌈N/2⌉ training points are one class, the rest the
            other: a two-component mixture such as ``datasets.two_gaussians``), or one
            integer label per training point (a sample's class is its nearest training
            point's label, e.g. the labels of ``datasets.digits()``).
        steps, clones, seed, beta_min, beta_max, backend, device: the run (the default
            beta_max = 20 starts it at OU time 5, above the speciation time of most data).

    Returns:
        A dict: ``lambda`` (largest eigenvalue of the data's covariance),
        ``predicted_t_s`` (½ ln Λ), ``measured_t_s`` (the OU time where phi reaches 3/4),
        ``curve`` (step, tau, ou_time, phi at each clone time), ``classes``,
        ``clone_seed``.
    """
    train_array, _ = _training(train)
    labels = None
    if isinstance(classes, str):
        if classes not in ("nearest", "two-halves"):
            raise ValueError(
                f"invalid classes: {classes!r} is not one of nearest, two-halves, or labels"
            )
    else:
        label_array = np.asarray(classes)
        if label_array.shape != (train_array.shape[0],) or label_array.dtype.kind not in "iu":
            raise ValueError(
                f"invalid classes: labels must be {train_array.shape[0]} integers, one per "
                f"training point, got shape {label_array.shape} of {label_array.dtype}"
            )
        labels = [int(v) for v in label_array]
        classes = "labels"
    return json.loads(_memodiff.speciation(
        train_array, classes, labels, int(particles), int(steps), int(clones), int(seed),
        float(beta_min), float(beta_max), backend, device,
    ))


def score(
    x: ArrayLike,
    t: float,
    train: ArrayLike,
    *,
    score: str = "empirical",
    beta_min: float = 0.001,
    beta_max: float = 3.0,
    backend: str = "auto",
    device: Optional[int] = None,
) -> np.ndarray:
    """The score of ``train`` at the rows of ``x`` at forward time ``t`` in (0, 1].

    The function the sampler follows (the reference tutorial differentiates it with
    JAX): ``(s * sum_i w_i a_i - x) / sigma^2`` with ``w = softmax(-|x - s a_i|^2 / 2 sigma^2)``.

    Args:
        x: points (n, D), any float array-like (evaluated in float32, as the engines do).
        t: forward time in (0, 1].
        train: the training set (N, D), or images (N, H, W[, C]) flattened as in
            :func:`sample`.
        score: ``"empirical"``, ``"kde:h"`` (components of variance sigma^2 + s^2 h^2), or
            on images ``"local:k"``, ``"els:k"``, ``"bbels:k"`` (the f64 reference on any
            backend).
        beta_min, beta_max: the linear VP schedule.
        backend: ``"auto"``, ``"gpu"``, ``"cpu"`` or ``"reference"`` (f64).

    Returns:
        float32 (n, D).
    """
    train_array, image_shape = _training(train)
    x_array = _float_array(x, "x", np.float32, columns=train_array.shape[1])
    return _memodiff.score(
        x_array, float(t), train_array, score, float(beta_min), float(beta_max), backend, device,
        image_shape
    )


def density(
    points: ArrayLike,
    *,
    extent: Sequence[float] = (-3.0, 3.0, -3.0, 3.0),
    resolution: Union[int, Tuple[int, int]] = 512,
    bandwidth: Optional[float] = None,
    kernel: str = "gaussian",
) -> np.ndarray:
    """The kernel density of the (P, 2) ``points``, as ``samples_density.npy`` holds it.

    Args:
        points: (P, 2) positions (float32 as the engines give them; others are converted).
        extent: ``(xmin, xmax, ymin, ymax)`` of the image.
        resolution: pixels per side, or ``(width, height)``.
        bandwidth: the kernel's width h, exp(-d^2 / 2h^2) (default: the tutorial's
            exp(-350 d^2), ``DEFAULT_BANDWIDTH``).
        kernel: ``"gaussian"`` or ``"histogram"`` (particles per pixel).

    Returns:
        float32 (height, width), row 0 at the top (y = ymax), like the PNGs.
    """
    array = _float_array(points, "points", np.float32, columns=2)
    if isinstance(resolution, (int, np.integer)):
        width = height = int(resolution)
    else:
        width, height = (int(v) for v in resolution)
    if len(extent) != 4:
        raise ValueError(f"invalid extent: expected (xmin, xmax, ymin, ymax), got {extent!r}")
    h = DEFAULT_BANDWIDTH if bandwidth is None else float(bandwidth)
    return _memodiff.density(array, tuple(float(v) for v in extent), width, height, h, kernel)


def shade(grid: ArrayLike, colormap: str = "coolwarm", norm: str = "linear") -> np.ndarray:
    """The colours of a density grid exactly as the PNGs have them.

    Args:
        grid: (H, W) values, e.g. from :func:`density`.
        colormap: a matplotlib colormap name memodiff has (``coolwarm``, ``viridis``,
            ``magma``, ``inferno``, ``plasma``, ``cividis``, ``gray``, ...).
        norm: ``"linear"``, ``"log"`` or ``"eq-hist"``.

    Returns:
        uint8 (H, W, 3).
    """
    array = np.asarray(grid)
    if array.ndim != 2:
        raise ValueError(f"invalid grid: expected a 2-D array (H, W), got shape {array.shape}")
    array = _float_array(array, "grid", np.float32)
    return _memodiff.shade(array, colormap, norm)


def devices() -> List[Dict[str, Any]]:
    """The GPU adapters memodiff can use, as ``memodiff devices`` lists them."""
    return json.loads(_memodiff.devices())
