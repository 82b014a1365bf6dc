# The native module under `memodiff`: call the functions of `memodiff` instead, which
# convert and check their arguments and document them.
from typing import Callable, List, Optional, Tuple

import numpy as np
import numpy.typing as npt

__version__: str
DEFAULT_BANDWIDTH: float

def sample(
    train: npt.NDArray[np.float64],
    particles: int,
    steps: int,
    seed: int,
    beta_min: float,
    beta_max: float,
    schedule: str,
    sampler: str,
    eta: float,
    score: str,
    t_min: float,
    grid_start: Optional[float],
    preset: Optional[str],
    backend: str,
    device: Optional[int],
    batch: Optional[int],
    shard: Optional[Tuple[int, int]],
    return_initial: bool,
    initial: Optional[npt.NDArray[np.float32]],
    snapshots: List[int],
    progress: Optional[Callable[[int, int], None]],
    image_shape: Optional[Tuple[int, int, int]],
    patch_size: Optional[List[int]],
) -> Tuple[
    npt.NDArray[np.float32],
    Optional[npt.NDArray[np.float32]],
    List[Tuple[int, npt.NDArray[np.float32]]],
    str,
    str,
]: ...
def speciation(
    train: npt.NDArray[np.float64],
    classes: str,
    labels: Optional[List[int]],
    particles: int,
    steps: int,
    clones: int,
    seed: int,
    beta_min: float,
    beta_max: float,
    backend: str,
    device: Optional[int],
) -> str: ...
def score(
    x: npt.NDArray[np.float32],
    t: float,
    train: npt.NDArray[np.float64],
    score: str,
    beta_min: float,
    beta_max: float,
    backend: str,
    device: Optional[int],
    image_shape: Optional[Tuple[int, int, int]],
) -> npt.NDArray[np.float32]: ...
def density(
    points: npt.NDArray[np.float32],
    extent: Tuple[float, float, float, float],
    width: int,
    height: int,
    bandwidth: float,
    kernel: str,
) -> npt.NDArray[np.float32]: ...
def shade(grid: npt.NDArray[np.float32], colormap: str, norm: str) -> npt.NDArray[np.uint8]: ...
def dataset_from_spec(spec: str, data_seed: int) -> npt.NDArray[np.float64]: ...
def devices() -> str: ...
def digits_files() -> Tuple[str, str]: ...
