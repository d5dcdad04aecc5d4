"""A tiny CIFAR-10 in the official layout, for tests: random images, balanced labels.

``write_folder(base)`` writes ``base/cifar-10-batches-py/`` (data_batch_1..5, test_batch, batches.meta:
pickled dicts with b'data' (N, 3072) uint8 and b'labels'), and ``write_archive(path)`` the matching
``cifar-10-python.tar.gz``. Both return the arrays they wrote, so tests can compare.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_arrays(n_train: int = 50, n_test: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train_x": rng.integers(0, 256, size=(n_train, 3072), dtype=np.uint8),
        "train_y": np.arange(n_train) % 10,
        "test_x": rng.integers(0, 256, size=(n_test, 3072), dtype=np.uint8),
        "test_y": (np.arange(n_test) * 3) % 10,
    }


def batch_files(arrays: dict[str, np.ndarray]) -> dict[str, bytes]:
    """File name -> pickled contents, as in the official archive (train split over 5 batches)."""
    files = {}
    parts = np.array_split(np.arange(len(arrays["train_y"])), 5)
    for k, part in enumerate(parts, start=1):
        files[f"data_batch_{k}"] = pickle.dumps({b"batch_label": f"training batch {k} of 5".encode(),
                                                 b"labels": [int(v) for v in arrays["train_y"][part]],
                                                 b"data": arrays["train_x"][part]}, protocol=2)
    files["test_batch"] = pickle.dumps({b"batch_label": b"testing batch 1 of 1",
                                        b"labels": [int(v) for v in arrays["test_y"]],
                                        b"data": arrays["test_x"]}, protocol=2)
    files["batches.meta"] = pickle.dumps({b"label_names": [c.encode() for c in CLASSES],
                                          b"num_cases_per_batch": 10000, b"num_vis": 3072}, protocol=2)
    return files


def write_folder(base: Path, n_train: int = 50, n_test: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    arrays = make_arrays(n_train, n_test, seed)
    folder = Path(base) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for name, blob in batch_files(arrays).items():
        (folder / name).write_bytes(blob)
    return arrays


def write_archive(path: Path, n_train: int = 50, n_test: int = 20, seed: int = 0) -> tuple[dict[str, np.ndarray], str]:
    """Write a .tar.gz with cifar-10-batches-py/...; returns the arrays and the archive's md5."""
    arrays = make_arrays(n_train, n_test, seed)
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in batch_files(arrays).items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return arrays, hashlib.md5(Path(path).read_bytes()).hexdigest()


def images(arrays: dict[str, np.ndarray], split: str) -> np.ndarray:
    """(N, 3, 32, 32) uint8 view of a split's rows."""
    return arrays[f"{split}_x"].reshape(-1, 3, 32, 32)
