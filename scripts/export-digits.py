#!/usr/bin/env python3
"""Export scikit-learn's 8x8 digits (1,797 images with labels; the data ships inside the
scikit-learn package, BSD licence) for `memodiff sample --dataset digits`.

    python3 scripts/export-digits.py [FOLDER]

writes FOLDER/digits.npy, float32 (1797, 8, 8) with the 0..16 grey levels mapped to
[0, 1], and FOLDER/digits_labels.npy, int64 (1797,) with the digit 0..9 of each image.
FOLDER defaults to where memodiff looks: $MEMODIFF_DATA, else $XDG_DATA_HOME/memodiff,
else ~/.local/share/memodiff. Needs numpy and scikit-learn (pip install scikit-learn).
"""
import os
import sys
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits


def data_folder() -> Path:
    if os.environ.get("MEMODIFF_DATA"):
        return Path(os.environ["MEMODIFF_DATA"])
    if os.environ.get("XDG_DATA_HOME"):
        return Path(os.environ["XDG_DATA_HOME"]) / "memodiff"
    return Path.home() / ".local" / "share" / "memodiff"


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else data_folder()
    folder.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    assert images.shape == (1797, 8, 8) and labels.shape == (1797,)
    # Written beside and renamed into place: a reader never sees half a file.
    for name, array in (("digits.npy", images), ("digits_labels.npy", labels)):
        temp = folder / f".{name}.tmp"
        with open(temp, "wb") as f:
            np.save(f, array)
        temp.replace(folder / name)
    print(f"wrote {folder / 'digits.npy'} and {folder / 'digits_labels.npy'}")


if __name__ == "__main__":
    main()
