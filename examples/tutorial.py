"""The reference tutorial's memorization experiment, redone with memodiff: a training set
of 8 points on a circle, the empirical score as a quiver plot, and heatmaps of the initial
noise and of 1,000,000 samples, which collapse onto the training points.

    pip install ./python matplotlib && python examples/tutorial.py   (writes tutorial.png)
"""

import time

import matplotlib.pyplot as plt
import numpy as np

import memodiff

train = memodiff.datasets.circle(8)

# The score at t = 0.3 on a 21 x 21 grid: the field the reverse process follows.
xs = np.linspace(-2, 2, 21)
points = np.array([(x, y) for y in xs for x in xs])
field = memodiff.score(points, 0.3, train)

started = time.perf_counter()
run = memodiff.sample(train, 1_000_000, steps=100, seed=0, return_initial=True, progress=True)
seconds = time.perf_counter() - started
print(f"1,000,000 samples in {seconds:.2f} s on {run.info['device']} ({run.info['backend']});"
      f" memorized: {100 * run.metrics['memorized_fraction']:.2f}%")

fig, axes = plt.subplots(1, 3, figsize=(15, 5))
axes[0].quiver(points[:, 0], points[:, 1], field[:, 0], field[:, 1], angles="xy")
axes[0].scatter(train[:, 0], train[:, 1], c="red", zorder=3)
axes[0].set_title("empirical score at t = 0.3")
for ax, (name, data, extent) in zip(axes[1:], [("initial noise", run.initial, (-2, 3, -2, 3)),
                                              ("samples", run.samples, (-3, 3, -3, 3))]):
    grid = memodiff.density(data, extent=extent, resolution=512)
    ax.imshow(memodiff.shade(grid), extent=extent)
    ax.set_title(name)
fig.tight_layout()
fig.savefig("tutorial.png", dpi=100)
print("wrote tutorial.png")
