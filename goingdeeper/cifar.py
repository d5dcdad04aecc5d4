"""CIFAR-10: find or download the official archive, load it as uint8 tensors, normalize batches.

The data folder is, in this order: the ``root`` you pass, the environment variable
``GOINGDEEPER_DATA``, or ``data/`` beside this package (the course checkout's ``data/``). It holds
``cifar-10-batches-py/``, what the official ``cifar-10-python.tar.gz`` unpacks to; :func:`load` downloads
and unpacks the archive there the first time. A folder given as ``root`` may also be
``cifar-10-batches-py/`` itself.

Images stay uint8, shape (N, 3, 32, 32), on whatever device you move them to. :func:`normalize` (to float32
with the training set's per-channel mean and standard deviation) works on a whole batch at once, on the batch's
device. The augmentation (pad, random crop, random flip) is notebook 05's exercise: the package has none.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

__all__ = [
    "ARCHIVE", "ARCHIVE_BYTES", "CIFAR10", "CLASSES", "DataError", "ENV_VAR", "FOLDER", "MD5", "MEAN", "STD",
    "URL", "balanced_indices", "data_dir", "download", "find", "load", "normalize", "read_folder",
]

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE = "cifar-10-python.tar.gz"
ARCHIVE_BYTES = 170_498_071  # about 163 MB
FOLDER = "cifar-10-batches-py"
ENV_VAR = "GOINGDEEPER_DATA"
TRAIN_FILES = tuple(f"data_batch_{k}" for k in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
FILES = (*TRAIN_FILES, TEST_FILE, META_FILE)
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# Per-channel (R, G, B) mean and standard deviation of the 50,000 training images, as fractions of 255,
# computed once with the reference answer to notebook 5's channel_stats (autograder/reference/degradation.py):
# the package does not hold it, since it is an exercise. They were computed on this course's offline copy of
# CIFAR-10 (JPEG-recompressed); the official archive's published figures are mean (0.4914, 0.4822, 0.4465)
# and std (0.2470, 0.2435, 0.2616): the same means, standard deviations under 1 % apart.
MEAN = (0.4913, 0.4821, 0.4465)
STD = (0.2452, 0.2428, 0.2606)

_urlopen: Callable[..., Any] = urllib.request.urlopen  # tests replace it to simulate the network


class DataError(RuntimeError):
    """The data is missing, broken or cannot be downloaded; the message says what to do."""


# -- where the data lives -------------------------------------------------------------------------
def data_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """The data folder: ``root`` if given, else ``$GOINGDEEPER_DATA``, else ``data/`` of the checkout the package
    runs from (the course or its student edition, as ``course.sh`` installs it), else, for a package installed from a
    wheel (a hub image, say), ``goingdeeper/`` in the user's cache folder (``$XDG_CACHE_HOME`` or ``~/.cache``)."""
    if root is None:
        root = os.environ.get(ENV_VAR) or None
    if root is None:
        checkout = Path(__file__).resolve().parent.parent
        if (checkout / "pyproject.toml").is_file():  # the course, or its student edition
            return checkout / "data"
        cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        return Path(cache).expanduser().resolve() / "goingdeeper"
    return Path(root).expanduser().resolve()


def find(root: str | os.PathLike[str] | None = None) -> Path | None:
    """The ``cifar-10-batches-py`` folder under the data folder (or the folder itself), if it has every file.

    A cheap look (names only); :func:`read_folder` checks the contents.
    """
    base = data_dir(root)
    for folder in (base / FOLDER, base):
        if folder.is_dir() and all((folder / name).is_file() for name in FILES):
            return folder
    return None


# -- reading --------------------------------------------------------------------------------------
@dataclass
class CIFAR10:
    """CIFAR-10 as tensors: ``train_x`` uint8 (N, 3, 32, 32), ``train_y`` int64 (N,), the same for test.

    The full set has 50,000 training and 10,000 test images; ``classes`` names the labels 0..9.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...] = CLASSES

    def __repr__(self) -> str:
        return (f"CIFAR10({len(self.train_y)} train, {len(self.test_y)} test images, uint8 "
                f"{tuple(self.train_x.shape[1:])}, on {self.device})")

    @property
    def device(self) -> torch.device:
        return self.train_x.device

    def to(self, device: str | torch.device) -> CIFAR10:
        """The same data on ``device`` (one copy of every tensor; none if it is already there)."""
        return CIFAR10(self.train_x.to(device), self.train_y.to(device), self.test_x.to(device),
                       self.test_y.to(device), self.classes)

    def subset(self, n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> CIFAR10:
        """A class-balanced random subset: ``n_train`` training and ``n_test`` test images (None: all).

        Every class gets ``n // 10`` images (the first ``n % 10`` classes one more); images keep their
        original order. The same seed gives the same subset.
        """
        g = torch.Generator().manual_seed(seed)
        train = balanced_indices(self.train_y, n_train, g, "n_train")
        test = balanced_indices(self.test_y, n_test, g, "n_test")
        return CIFAR10(self.train_x[train], self.train_y[train], self.test_x[test], self.test_y[test], self.classes)


def balanced_indices(labels: torch.Tensor, n: int | None, g: torch.Generator, what: str = "n") -> torch.Tensor:
    """Indices (sorted, int64) of a class-balanced random subset of ``n`` of ``labels`` (int64, (N,)); all for None.

    Every class gets n // C of them (the first n % C classes one more); ``what`` names n in errors.
    """
    total = len(labels)
    if n is None or n == total:
        return torch.arange(total, device=labels.device)
    classes = int(labels.max()) + 1
    if not 0 < n <= total:
        raise ValueError(f"{what} must be between 1 and {total} (the images there are); got {n}")
    quota = torch.full((classes,), n // classes)
    quota[: n % classes] += 1
    perm = torch.randperm(total, generator=g)
    shuffled = labels.cpu()[perm]
    order = torch.argsort(shuffled, stable=True)  # grouped by class, random within a class
    counts = torch.bincount(shuffled, minlength=classes)
    if (counts < quota).any():
        c = int(torch.nonzero(counts < quota)[0])
        raise ValueError(f"{what}={n} needs {int(quota[c])} images of class {c}, but there are only {int(counts[c])}")
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(total) - starts[shuffled[order]]
    keep = perm[order[rank < quota[shuffled[order]]]]
    return torch.sort(keep).values.to(labels.device)


def _read_batch(path: Path, folder: Path) -> tuple[Any, list[int]]:
    import numpy as np

    fix = (f"Delete {folder} and call load() again to download a fresh copy, or unpack {ARCHIVE} "
           "there again.")
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data, labels = batch[b"data"], list(batch[b"labels"])
    except Exception as exc:  # noqa: BLE001 - any failure means the same thing: the file is broken
        raise DataError(f"{path} is corrupt ({type(exc).__name__}: {exc}). {fix}") from None
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
        shape = getattr(data, "shape", type(data).__name__)
        raise DataError(f"{path} is corrupt: its b'data' should be a uint8 array of shape (N, 3072), "
                        f"not {getattr(data, 'dtype', '')} {shape}. {fix}")
    if len(labels) != len(data) or len(data) == 0 or not all(0 <= int(v) < 10 for v in labels):
        raise DataError(f"{path} is corrupt: {len(data)} images but {len(labels)} labels (which must be 0..9). {fix}")
    return data, labels


def read_folder(folder: str | os.PathLike[str]) -> CIFAR10:
    """Read and check a ``cifar-10-batches-py`` folder (the official python layout). Raises DataError naming
    the missing or corrupt file."""
    import numpy as np

    folder = Path(folder)
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise DataError(f"{folder} lacks {', '.join(missing)}: it is not a complete {FOLDER} folder. Delete it and "
                        f"call load() again to download a fresh copy, or unpack {ARCHIVE} there again.")
    parts = [_read_batch(folder / name, folder) for name in (*TRAIN_FILES, TEST_FILE)]
    try:
        with open(folder / META_FILE, "rb") as f:
            names = tuple(n.decode() if isinstance(n, bytes) else str(n)
                          for n in pickle.load(f, encoding="bytes")[b"label_names"])
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{folder / META_FILE} is corrupt ({type(exc).__name__}: {exc}). Delete {folder} and call "
                        "load() again.") from None

    def tensors(chunks: list[tuple[Any, list[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(np.concatenate([c[0] for c in chunks])).view(-1, 3, 32, 32)
        y = torch.tensor([v for c in chunks for v in c[1]], dtype=torch.int64)
        return x, y

    train_x, train_y = tensors(parts[:5])
    test_x, test_y = tensors(parts[5:])
    return CIFAR10(train_x, train_y, test_x, test_y, names if len(names) == 10 else CLASSES)


# -- downloading ----------------------------------------------------------------------------------
def _how_to_get_it(base: Path) -> str:
    return (f"Download {URL} (md5 {MD5}, {ARCHIVE_BYTES:,} bytes, about 163 MB) with a browser or "
            f"`curl -O`, and either put the file in {base}/ (the next load() checks and unpacks it) or "
            f"unpack it there yourself (`tar xzf {ARCHIVE} -C {base}`) so that {base / FOLDER}/ exists. "
            f"Data elsewhere? Pass the folder as load(root=...) or set the environment variable "
            f"{ENV_VAR}=/path/to/folder.")


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _fetch(base: Path, progress: bool) -> Path:
    """Download the archive to a temporary file in ``base``, check its md5, then rename it to ``ARCHIVE``."""
    from tqdm.auto import tqdm

    fd, tmp_name = tempfile.mkstemp(dir=base, prefix=f".{ARCHIVE}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        h = hashlib.md5()
        try:
            with os.fdopen(fd, "wb") as out, _urlopen(URL, timeout=60) as response:
                size = int(response.headers.get("Content-Length") or ARCHIVE_BYTES)
                with tqdm(total=size, unit="B", unit_scale=True, desc=f"downloading {ARCHIVE}",
                          disable=not progress, leave=False) as bar:
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
                        h.update(chunk)
                        bar.update(len(chunk))
        except Exception as exc:  # noqa: BLE001 - network, disk, truncated transfer: all need the same advice
            raise DataError(f"Could not download CIFAR-10 from {URL} ({type(exc).__name__}: {exc}). "
                            f"{_how_to_get_it(base)}") from None
        if h.hexdigest() != MD5:
            raise DataError(f"The download of {URL} is damaged ({tmp.stat().st_size:,} bytes, md5 {h.hexdigest()} "
                            f"instead of {MD5}); nothing was kept. Try again, or: {_how_to_get_it(base)}")
        os.replace(tmp, base / ARCHIVE)
        return base / ARCHIVE
    finally:
        tmp.unlink(missing_ok=True)


def _unpack(archive: Path, base: Path) -> CIFAR10:
    """Unpack to a temporary folder in ``base``, read and check it, then rename it to ``base/FOLDER``."""
    tmp = Path(tempfile.mkdtemp(dir=base, prefix=".cifar-unpack-"))
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"Could not unpack {archive} ({type(exc).__name__}: {exc}). Delete it and call load() "
                            f"again, or: {_how_to_get_it(base)}") from None
        data = read_folder(tmp / FOLDER)
        try:
            os.rename(tmp / FOLDER, base / FOLDER)
        except OSError:
            if find(base) is None:  # not a concurrent load() that finished first
                raise
        return data
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def download(root: str | os.PathLike[str] | None = None, *, progress: bool = True) -> Path:
    """Download (or take an ``ARCHIVE`` already in the data folder), check and unpack CIFAR-10.

    Returns the ``cifar-10-batches-py`` folder. Nothing that looks valid is left behind by a failed or
    interrupted download: the archive is written under a temporary name and renamed only once its md5 is
    right, and the folder is unpacked under a temporary name and renamed only once every file reads.
    """
    _download(data_dir(root), progress)
    return data_dir(root) / FOLDER


def _download(base: Path, progress: bool) -> CIFAR10:
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"Cannot create the data folder {base} ({exc}). Pass another folder as load(root=...) "
                        f"or set {ENV_VAR}.") from None
    archive = base / ARCHIVE
    if archive.is_file():
        if _md5(archive) != MD5:
            raise DataError(f"{archive} is damaged (its md5 is not {MD5}). Delete it and call load() again, "
                            f"or: {_how_to_get_it(base)}")
    else:
        archive = _fetch(base, progress)
    data = _unpack(archive, base)
    archive.unlink(missing_ok=True)  # the unpacked folder is the cache; the archive would double the space
    return data


def load(root: str | os.PathLike[str] | None = None, *, download: bool = True, progress: bool = True) -> CIFAR10:
    """CIFAR-10 from the data folder (see :func:`data_dir`); downloads it there on first use.

    Returns uint8 images (N, 3, 32, 32) and int64 labels (N,) on the CPU: 50,000 training and 10,000 test
    images for the official data. Raises :class:`DataError` with what to do when the data is missing and
    cannot be downloaded (or ``download=False``), or when a file is corrupt.
    """
    folder = find(root)
    if folder is not None:
        return read_folder(folder)
    base = data_dir(root)
    if (base / FOLDER).exists():
        return read_folder(base / FOLDER)  # incomplete: says which files are missing
    if not download:
        raise DataError(f"CIFAR-10 is not in {base} (no {FOLDER}/ folder there). Call load(download=True), or: "
                        f"{_how_to_get_it(base)}")
    return _download(base, progress)


# -- batched operations ---------------------------------------------------------------------------
def _check_images(x: torch.Tensor, what: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.ndim != 4:
        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"{what} expects uint8 images of shape (N, C, H, W), as load() returns them; got {got}")


def normalize(x: torch.Tensor, mean: tuple[float, ...] = MEAN, std: tuple[float, ...] = STD) -> torch.Tensor:
    """uint8 images (N, 3, H, W) -> float32 (N, 3, H, W): ``(x / 255 - mean) / std`` per channel.

    Runs on x's device and keeps x's memory format (channels_last stays channels_last).
    """
    _check_images(x, "normalize")
    scale = torch.tensor([1 / (255 * s) for s in std], dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    shift = torch.tensor([m / s for m, s in zip(mean, std)], dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return x.to(torch.float32) * scale - shift
