"""The Python package against the command line: the same engines, seeds and results, bit
for bit; arrays handed over without a copy; bad input raises the documented exceptions;
Ctrl-C stops a run and leaves the interpreter usable.

The CLI is ``target/release/memodiff`` of this repository (or ``$MEMODIFF_BIN``). GPU
cases run on whatever adapter wgpu finds (lavapipe in CI); without one they fail unless
``MEMODIFF_SKIP_GPU_TESTS=1``, which skips them saying so.
"""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import memodiff

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("MEMODIFF_BIN", str(ROOT / "target" / "release" / "memodiff"))
os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")


def cli(*args: str) -> None:
    subprocess.run([BIN, *args], check=True, stdout=subprocess.DEVNULL)


def backends():
    cases = ["cpu", "reference"]
    if os.environ.get("MEMODIFF_SKIP_GPU_TESTS") == "1":
        print("MEMODIFF_SKIP_GPU_TESTS=1: skipping the gpu cases", file=sys.stderr)
    else:
        cases.append("gpu")
    return cases


@pytest.mark.parametrize("backend", backends())
def test_sample_equals_the_cli_bit_for_bit(tmp_path, backend):
    particles = 3000 if backend != "reference" else 500
    out = tmp_path / "run"
    cli("sample", "--backend", backend, "--dataset", "circle:8", "--particles", str(particles),
        "--steps", "20", "--seed", "3", "--resolution", "64", "--posterior-records", "0",
        "--out", str(out))
    train = memodiff.datasets.circle(8)
    run = memodiff.sample(train, particles, steps=20, seed=3, backend=backend, return_initial=True)
    assert run.samples.dtype == np.float32 and run.samples.shape == (particles, 2)
    assert run.samples.tobytes() == np.load(out / "samples.npy").tobytes()
    assert run.initial.tobytes() == np.load(out / "initial.npy").tobytes()
    assert run.metrics == json.loads((out / "run.json").read_text())["memorization"]
    assert run.info["backend"] == backend
    # The density of the samples is the run's samples_density.npy, value for value.
    grid = memodiff.density(run.samples, extent=(-3, 3, -3, 3), resolution=64)
    assert grid.tobytes() == np.load(out / "samples_density.npy").tobytes()


def test_score_equals_score_field(tmp_path):
    out = tmp_path / "field"
    cli("score-field", "--backend", "cpu", "--dataset", "circle:8", "--t", "0.3",
        "--grid", "9", "--out", str(out))
    table = np.load(out / "score_field.npy")
    vectors = memodiff.score(table[:, :2], 0.3, memodiff.datasets.circle(8), backend="cpu")
    assert vectors.tobytes() == np.ascontiguousarray(table[:, 2:]).tobytes()
    # The f64 reference agrees to f32 precision.
    exact = memodiff.score(table[:, :2], 0.3, memodiff.datasets.circle(8), backend="reference")
    np.testing.assert_allclose(exact, vectors, rtol=1e-4, atol=1e-4 * np.abs(exact).max())
    # The smoothed score, as `score-field --score kde:0.2` draws it.
    kde = tmp_path / "kde"
    cli("score-field", "--backend", "cpu", "--dataset", "circle:8", "--t", "0.3",
        "--grid", "9", "--score", "kde:0.2", "--out", str(kde))
    table = np.load(kde / "score_field.npy")
    vectors = memodiff.score(table[:, :2], 0.3, memodiff.datasets.circle(8), score="kde:0.2",
                             backend="cpu")
    assert vectors.tobytes() == np.ascontiguousarray(table[:, 2:]).tobytes()
    assert json.loads((kde / "score_field.json").read_text())["score"] == "kde:0.2"


def test_arrays_are_handed_over_without_a_copy():
    run = memodiff.sample(memodiff.datasets.circle(8), 1000, steps=5, backend="cpu")
    samples = run.samples
    assert not samples.flags.owndata
    # A view of the one-dimensional array that owns the Rust buffer.
    assert samples.base is not None and not samples.base.flags.owndata
    assert not isinstance(samples.base.base, np.ndarray)
    assert samples.flags.c_contiguous and samples.flags.writeable


def test_peak_memory_of_ten_million_samples():
    # In a fresh interpreter: the baseline after a warm-up run, then 10M particles.
    code = textwrap.dedent("""
        import resource, memodiff
        train = memodiff.datasets.circle(8)
        memodiff.sample(train, 1000, steps=3, backend="cpu")
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        run = memodiff.sample(train, 10_000_000, steps=3, backend="cpu")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(base, peak, run.samples.nbytes)
    """)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    base, peak, nbytes = (int(v) for v in out.stdout.split())
    assert nbytes == 80_000_000
    assert peak - base < 1.3 * nbytes, f"peak {peak} - baseline {base} for {nbytes} bytes"


def test_inputs_are_converted_and_checked():
    train = memodiff.datasets.circle(8)
    reference = memodiff.sample(train, 500, steps=10, backend="cpu")
    # float32, Fortran order, a non-contiguous view, a list: the same training set.
    fortran = np.asfortranarray(train)
    strided = np.repeat(train, 2, axis=0)[::2]
    for same in (train.astype(np.float32), fortran, strided, train.tolist()):
        again = memodiff.sample(same, 500, steps=10, backend="cpu")
        assert again.samples.tobytes() == reference.samples.tobytes()
    bad = train.copy()
    bad[3, 1] = np.nan
    cases = [
        (lambda: memodiff.sample(bad, 10), "invalid train: row 3"),
        (lambda: memodiff.sample(np.zeros((0, 2)), 10), "invalid train: the array is empty"),
        (lambda: memodiff.sample(np.zeros((2, 2, 2, 2, 2)), 10), "invalid train: expected (N, D) or images"),
        (lambda: memodiff.sample(train, 10, steps=2), "invalid steps"),
        (lambda: memodiff.sample(train, 0), "invalid particles"),
        (lambda: memodiff.sample(train, 10, backend="tpu"), "invalid backend"),
        (lambda: memodiff.sample(train, 10, sampler="rk4"), "invalid sampler"),
        (lambda: memodiff.sample(train, 10, score="kde:-1"), "invalid score"),
        (lambda: memodiff.sample(train, 10, initial=np.zeros((9, 2))), "invalid initial"),
        (lambda: memodiff.score([[0.0, 0.0, 0.0]], 0.5, train), "invalid x"),
        (lambda: memodiff.score([[0.0, 0.0]], 0.0, train, backend="cpu"), "invalid t"),
        (lambda: memodiff.score([[1e39, 0.0]], 0.5, train), "invalid x: row 0"),
        (lambda: memodiff.density(np.zeros((4, 3))), "invalid points"),
        (lambda: memodiff.density(np.zeros((4, 2)), extent=(1, 0, 0, 1)), "invalid"),
        (lambda: memodiff.shade(np.zeros((4, 4)), colormap="nope"), "invalid colormap"),
        (lambda: memodiff.datasets.from_spec("circle:0"), "invalid spec"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            call()


def test_given_initial_positions_give_the_same_run():
    train = memodiff.datasets.circle(8)
    drawn = memodiff.sample(train, 2000, steps=20, seed=7, backend="cpu", return_initial=True)
    given = memodiff.sample(train, 2000, steps=20, seed=7, backend="cpu", initial=drawn.initial,
                            return_initial=True)
    assert given.samples.tobytes() == drawn.samples.tobytes()
    assert given.initial.tobytes() == drawn.initial.tobytes()
    # A shard takes its rows of the whole run's positions.
    half = memodiff.sample(train, 2000, steps=20, seed=7, backend="cpu", initial=drawn.initial,
                           shard=(1, 2))
    assert half.samples.tobytes() == drawn.samples[1000:].tobytes()


def read_png_rgb(path: Path) -> np.ndarray:
    """The pixels of an 8-bit RGB, non-interlaced PNG (what memodiff writes), decoded here
    with zlib alone."""
    import struct
    import zlib

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    at, idat = 8, b""
    while at < len(data):
        (length,) = struct.unpack(">I", data[at:at + 4])
        kind, body = data[at + 4:at + 8], data[at + 8:at + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert (depth, colour) == (8, 2)
        elif kind == b"IDAT":
            idat += body
        at += 12 + length
    raw = zlib.decompress(idat)
    stride = width * 3
    rows, previous = [], bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - 3] if x >= 3 else 0
            b = previous[x]
            c = previous[x - 3] if x >= 3 else 0
            if kind == 1:
                line[x] = (line[x] + a) & 255
            elif kind == 2:
                line[x] = (line[x] + b) & 255
            elif kind == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        previous = line
    return np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(height, width, 3)


def test_shade_gives_the_png_colours(tmp_path):
    out = tmp_path / "run"
    cli("sample", "--backend", "cpu", "--particles", "2000", "--steps", "20",
        "--resolution", "48", "--norm", "eq-hist", "--colormap", "viridis", "--out", str(out))
    grid = np.load(out / "samples_density.npy")
    rgb = memodiff.shade(grid, colormap="viridis", norm="eq-hist")
    assert rgb.shape == (48, 48, 3) and rgb.dtype == np.uint8
    assert rgb.tobytes() == read_png_rgb(out / "samples.png").tobytes()


def test_progress_is_reported():
    seen = []
    memodiff.sample(memodiff.datasets.circle(8), 20_000, steps=10, backend="cpu",
                    progress=lambda done, total: seen.append((done, total)))
    assert seen and seen[0] == (0, 20_000 * 9)
    assert seen[-1] == (20_000 * 9, 20_000 * 9)
    assert all(d <= t for d, t in seen)


def test_ctrl_c_stops_a_run_and_the_interpreter_stays_usable():
    train = memodiff.datasets.circle(64)

    def interrupt():
        time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        memodiff.sample(train, 50_000_000, steps=100, backend="cpu")
    assert time.monotonic() - started < 20, "the run did not stop promptly"
    # The interpreter (and the engines) still work.
    run = memodiff.sample(train, 100, steps=5, backend="cpu")
    assert run.samples.shape == (100, 2)


def test_speciation_equals_the_cli(tmp_path):
    out = tmp_path / "speciation"
    cli("speciation", "--backend", "cpu", "--dataset", "two-gaussians:64:32", "--particles", "400",
        "--clones", "6", "--out", str(out))
    expected = json.loads((out / "speciation.json").read_text())
    train = memodiff.datasets.two_gaussians(64, 32)
    got = memodiff.speciation(train, 400, classes="two-halves", clones=6, backend="cpu")
    assert got["curve"] == expected["curve"]
    assert got["measured_t_s"] == expected["measured_t_s"]
    assert got["classes"] == "mixture component"
    with pytest.raises(ValueError, match="invalid clones"):
        memodiff.speciation(train, 10, clones=0, backend="cpu")


def test_devices_and_datasets():
    for device in memodiff.devices():
        assert {"index", "name", "backend"} <= device.keys()
    assert memodiff.datasets.circle(8).shape == (8, 2)
    assert memodiff.datasets.gaussian(10, 3, data_seed=1).shape == (10, 3)
    assert memodiff.datasets.moons(100, 0.05).shape == (100, 2)
    np.testing.assert_array_equal(memodiff.datasets.grid(3)[:, 0], np.tile([-1.0, 0.0, 1.0], 3))
    angles = 2 * np.pi * np.arange(8) / 8
    np.testing.assert_allclose(memodiff.datasets.circle(8), np.c_[np.cos(angles), np.sin(angles)], atol=1e-15)


def test_snapshots_are_the_particles_after_those_steps():
    train = memodiff.datasets.circle(8)
    run = memodiff.sample(train, 1000, steps=20, seed=2, backend="cpu", return_initial=True,
                          snapshots=[19, 0, 10])
    assert sorted(run.snapshots) == [0, 10, 19]
    assert run.snapshots[0].tobytes() == run.initial.tobytes()
    assert run.snapshots[19].tobytes() == run.samples.tobytes()
    # Stopping each batch at step 10 changes nothing, and the f64 reference agrees there.
    plain = memodiff.sample(train, 1000, steps=20, seed=2, backend="cpu")
    assert plain.samples.tobytes() == run.samples.tobytes()
    exact = memodiff.sample(train, 1000, steps=20, seed=2, backend="reference", snapshots=[10])
    np.testing.assert_allclose(run.snapshots[10], exact.snapshots[10], atol=1e-3)
    assert not np.allclose(run.snapshots[10], run.samples, atol=1e-2)
    with pytest.raises(ValueError, match="invalid snapshots: step 20 is beyond"):
        memodiff.sample(train, 10, steps=20, snapshots=[20])


def test_ddim_equals_the_cli(tmp_path):
    # Every sampler reaches Python by its name; DDIM is deterministic after x_T.
    out = tmp_path / "run"
    cli("sample", "--backend", "cpu", "--sampler", "ddim", "--particles", "1500", "--steps", "30",
        "--resolution", "32", "--out", str(out))
    run = memodiff.sample(memodiff.datasets.circle(8), 1500, steps=30, sampler="ddim", backend="cpu")
    assert run.samples.tobytes() == np.load(out / "samples.npy").tobytes()
    assert run.info["parameters"]["sampler"] == "ddim"
    noisy = tmp_path / "eta"
    cli("sample", "--backend", "cpu", "--sampler", "ddim", "--eta", "0.5", "--particles", "1500",
        "--steps", "30", "--resolution", "32", "--out", str(noisy))
    run = memodiff.sample(memodiff.datasets.circle(8), 1500, steps=30, sampler="ddim", eta=0.5,
                          backend="cpu")
    assert run.samples.tobytes() == np.load(noisy / "samples.npy").tobytes()
    cosine = tmp_path / "cosine"
    cli("sample", "--backend", "cpu", "--schedule", "vp-cosine", "--particles", "1500",
        "--steps", "30", "--resolution", "32", "--out", str(cosine))
    run = memodiff.sample(memodiff.datasets.circle(8), 1500, steps=30, schedule="vp-cosine",
                          backend="cpu")
    assert run.samples.tobytes() == np.load(cosine / "samples.npy").tobytes()
    with pytest.raises(ValueError, match="invalid schedule"):
        memodiff.sample(memodiff.datasets.circle(8), 10, schedule="ve-nope")
    preset = tmp_path / "preset"
    cli("sample", "--backend", "cpu", "--preset", "kamb-ganguli", "--particles", "1500",
        "--resolution", "32", "--out", str(preset))
    run = memodiff.sample(memodiff.datasets.circle(8), 1500, preset="kamb-ganguli", backend="cpu")
    assert run.samples.tobytes() == np.load(preset / "samples.npy").tobytes()
    assert run.info["parameters"]["steps"] == 20 and run.info["parameters"]["grid_start"] == 0.95
    with pytest.raises(ValueError, match="invalid preset: it sets"):
        memodiff.sample(memodiff.datasets.circle(8), 10, preset="kamb-ganguli", steps=30)
    with pytest.raises(ValueError, match="expects training data in"):
        memodiff.sample(memodiff.datasets.circle(8) * 2, 10, preset="kamb-ganguli")


def test_patch_scores_on_images_equal_the_cli(tmp_path):
    # Images (N, H, W) reach the patch scores as the CLI's image .npy does; auto runs them
    # on the cpu engine and says so.
    rng = np.random.default_rng(5)
    images = np.sign(rng.standard_normal((6, 5, 7))).astype(np.float32)
    path = tmp_path / "images.npy"
    np.save(path, images)
    out = tmp_path / "els"
    cli("sample", "--dataset", str(path), "--score", "els:3", "--particles", "40", "--steps", "30",
        "--out", str(out))
    run = memodiff.sample(images, 40, steps=30, score="els:3")
    assert run.samples.shape == (40, 35)
    assert run.samples.tobytes() == np.load(out / "samples.npy").tobytes()
    assert run.info["backend"] == "cpu"
    # The score at points: (s m - x) / sigma^2, the same on every backend (f64 reference).
    x = run.samples[:3]
    field = memodiff.score(x, 0.3, images, score="bbels:3", backend="cpu")
    assert field.shape == (3, 35) and np.isfinite(field).all()
    np.testing.assert_array_equal(field, memodiff.score(x, 0.3, images, score="bbels:3",
                                                        backend="reference"))
    with pytest.raises(ValueError, match="needs image training data"):
        memodiff.sample(images.reshape(6, -1), 10, score="local:3")
    # The GPU's patch kernels take at most 4 channels: 5 are refused before anything runs.
    five = np.linspace(0, 1, 3 * 4 * 4 * 5, dtype=np.float32).reshape(3, 4, 4, 5)
    with pytest.raises(ValueError, match="at most 4 channels"):
        memodiff.sample(five, 10, score="local:3", backend="gpu")


def test_digits_come_from_the_data_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMODIFF_DATA", str(tmp_path))
    with pytest.raises(ValueError, match="export-digits.py"):
        memodiff.datasets.digits()
    images = np.linspace(0, 1, 3 * 64, dtype=np.float32).reshape(3, 8, 8)
    np.save(tmp_path / "digits.npy", images)
    np.save(tmp_path / "digits_labels.npy", np.array([4, 0, 4]))
    got, labels = memodiff.datasets.digits()
    assert got.shape == (3, 8, 8) and labels.tolist() == [4, 0, 4]
    # The same set as `--dataset digits --class 4`.
    out = tmp_path / "run"
    subprocess.run([BIN, "sample", "--dataset", "digits", "--class", "4", "--particles", "30",
                    "--steps", "20", "--backend", "cpu", "--out", str(out)], check=True,
                   stdout=subprocess.DEVNULL, env={**os.environ, "MEMODIFF_DATA": str(tmp_path)})
    run = memodiff.sample(got[labels == 4], 30, steps=20, backend="cpu")
    assert run.samples.tobytes() == np.load(out / "samples.npy").tobytes()


def test_edm_and_the_gu_preset_equal_the_cli(tmp_path):
    out = tmp_path / "gu"
    cli("sample", "--backend", "cpu", "--preset", "gu-memorization", "--particles", "1500",
        "--resolution", "32", "--out", str(out))
    run = memodiff.sample(memodiff.datasets.circle(8), 1500, preset="gu-memorization",
                          backend="cpu")
    assert run.samples.tobytes() == np.load(out / "samples.npy").tobytes()
    same = memodiff.sample(memodiff.datasets.circle(8), 1500, schedule="edm", sampler="heun",
                           steps=19, backend="cpu")
    assert same.samples.tobytes() == run.samples.tobytes()
    with pytest.raises(ValueError, match="edm runs on its own grid"):
        memodiff.sample(memodiff.datasets.circle(8), 10, schedule="edm", t_min=0.1)


def test_speciation_by_labels_equals_the_cli(tmp_path):
    rng = np.random.default_rng(2)
    labels = np.arange(40) % 2
    images = (np.where(labels == 0, -1.0, 1.0)[:, None, None]
              + 0.1 * rng.standard_normal((40, 4, 4))).astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "labels.npy", labels.astype(np.int64))
    out = tmp_path / "sp"
    cli("speciation", "--backend", "cpu", "--particles", "200", "--dataset",
        str(tmp_path / "images.npy"), "--labels", str(tmp_path / "labels.npy"), "--out", str(out))
    cli_report = json.loads((out / "speciation.json").read_text())
    report = memodiff.speciation(images, 200, classes=labels, backend="cpu")
    assert report["classes"] == "label of the nearest training point"
    assert [p["phi"] for p in report["curve"]] == [p["phi"] for p in cli_report["curve"]]
    with pytest.raises(ValueError, match="invalid classes: labels must be 40 integers"):
        memodiff.speciation(images, 10, classes=labels[:5])


def test_a_patch_size_schedule_equals_the_cli(tmp_path):
    rng = np.random.default_rng(9)
    images = rng.random((5, 6, 6)).astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    sizes = [5] * 10 + [3] * 9
    out = tmp_path / "ps"
    cli("sample", "--dataset", str(tmp_path / "images.npy"), "--score", "local:3",
        "--patch-size", ",".join(map(str, sizes)), "--steps", "20", "--particles", "12",
        "--out", str(out))
    run = memodiff.sample(images, 12, steps=20, score="local:3", patch_size=sizes)
    assert run.samples.tobytes() == np.load(out / "samples.npy").tobytes()
    assert run.info["parameters"]["patch_sizes"] == sizes
    with pytest.raises(ValueError, match="invalid patch_size: 2 values"):
        memodiff.sample(images, 12, steps=20, score="local:3", patch_size=[3, 5])
