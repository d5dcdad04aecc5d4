"""goingdeeper.cifar: finding, downloading (md5, atomic), reading and checking CIFAR-10; augment and normalize."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from goingdeeper import cifar
from goingdeeper.grading import load_reference
from instructor.scratch import ROOT
from tiny_cifar import images, write_archive, write_folder

SHARED = ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(cifar.ENV_VAR, raising=False)


def _leftovers(base: Path) -> list[str]:
    return sorted(p.name for p in base.iterdir()) if base.exists() else []


def _same(data: cifar.CIFAR10, arrays: dict[str, np.ndarray]) -> None:
    assert data.train_x.dtype == torch.uint8 and data.train_x.shape == (50, 3, 32, 32)
    assert data.train_y.dtype == torch.int64 and data.test_x.shape == (20, 3, 32, 32)
    np.testing.assert_array_equal(data.train_x.numpy(), images(arrays, "train"))
    np.testing.assert_array_equal(data.test_x.numpy(), images(arrays, "test"))
    np.testing.assert_array_equal(data.train_y.numpy(), arrays["train_y"])
    np.testing.assert_array_equal(data.test_y.numpy(), arrays["test_y"])
    assert data.classes == cifar.CLASSES


# -- where the data is ----------------------------------------------------------------------------
def test_load_from_an_explicit_folder_or_the_batches_folder_itself(tmp_path, no_env):
    arrays = write_folder(tmp_path)
    _same(cifar.load(tmp_path, download=False), arrays)
    _same(cifar.load(tmp_path / cifar.FOLDER, download=False), arrays)
    assert "50 train, 20 test" in repr(cifar.load(tmp_path))


def test_load_from_the_environment_variable(tmp_path, monkeypatch):
    arrays = write_folder(tmp_path / "elsewhere")
    monkeypatch.setenv(cifar.ENV_VAR, str(tmp_path / "elsewhere"))
    assert cifar.data_dir() == (tmp_path / "elsewhere").resolve()
    _same(cifar.load(download=False), arrays)


def test_default_folder_is_data_beside_the_package(no_env):
    assert cifar.data_dir() == ROOT / "data"


def test_an_installed_package_keeps_its_data_in_the_users_cache(tmp_path, no_env, monkeypatch):
    installed = tmp_path / "site-packages" / "goingdeeper" / "cifar.py"  # no pyproject.toml beside the package
    monkeypatch.setattr(cifar, "__file__", str(installed))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert cifar.data_dir() == (tmp_path / "cache" / "goingdeeper").resolve()


def test_missing_data_without_download_says_where_and_how(tmp_path, no_env):
    with pytest.raises(cifar.DataError) as err:
        cifar.load(tmp_path / "empty", download=False)
    message = str(err.value)
    for phrase in (str(tmp_path / "empty"), cifar.URL, cifar.MD5, "163 MB", cifar.ENV_VAR):
        assert phrase in message


def test_missing_and_corrupt_files_are_named(tmp_path, no_env):
    write_folder(tmp_path)
    folder = tmp_path / cifar.FOLDER
    (folder / "data_batch_3").unlink()
    with pytest.raises(cifar.DataError, match=r"lacks data_batch_3"):
        cifar.load(tmp_path, download=False)
    with pytest.raises(cifar.DataError, match=r"lacks data_batch_3"):
        cifar.load(tmp_path)  # an incomplete folder is reported, not downloaded over
    write_folder(tmp_path)
    blob = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(cifar.DataError, match=r"test_batch is corrupt"):
        cifar.load(tmp_path)
    write_folder(tmp_path)
    import pickle

    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": np.zeros((10, 100), np.uint8), b"labels": [0] * 10}))
    with pytest.raises(cifar.DataError, match=r"data_batch_1 is corrupt: .*\(N, 3072\)"):
        cifar.load(tmp_path)


# -- downloading ----------------------------------------------------------------------------------
@pytest.fixture
def served(tmp_path, monkeypatch, no_env):
    """A tiny archive served at a file:// URL in place of the official one."""
    arrays, md5 = write_archive(tmp_path / "served.tar.gz")
    monkeypatch.setattr(cifar, "URL", (tmp_path / "served.tar.gz").as_uri())
    monkeypatch.setattr(cifar, "MD5", md5)
    return arrays, tmp_path / "served.tar.gz"


def test_download_checks_md5_unpacks_and_keeps_only_the_folder(served, tmp_path):
    arrays, _ = served
    base = tmp_path / "data"
    _same(cifar.load(base, progress=False), arrays)
    assert _leftovers(base) == [cifar.FOLDER]
    _same(cifar.load(base, download=False), arrays)


def test_a_truncated_download_raises_and_leaves_nothing_that_looks_valid(served, tmp_path):
    _, archive = served
    archive.write_bytes(archive.read_bytes()[:-100])
    base = tmp_path / "data"
    for _ in range(2):  # the second try must not find anything usable either
        with pytest.raises(cifar.DataError) as err:
            cifar.load(base, progress=False)
        assert "damaged" in str(err.value) and cifar.MD5 in str(err.value)
        assert _leftovers(base) == []


class _Response(io.BytesIO):
    """A response that dies after its first chunk, as a dropped connection does."""

    headers = {"Content-Length": "1000000"}

    def read(self, size=-1):
        if self.tell():
            raise ConnectionResetError(104, "Connection reset by peer")
        return super().read(1000)


def test_an_interrupted_download_raises_the_clear_error_and_leaves_nothing(served, tmp_path, monkeypatch):
    monkeypatch.setattr(cifar, "_urlopen", lambda url, timeout: _Response(b"x" * 5000))
    base = tmp_path / "data"
    with pytest.raises(cifar.DataError) as err:
        cifar.load(base, progress=False)
    assert "Connection reset" in str(err.value) and err.value.__suppress_context__
    assert _leftovers(base) == []


def test_offline_message_says_what_to_download_and_where(tmp_path, monkeypatch, no_env):
    def offline(url, timeout):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(cifar, "_urlopen", offline)
    base = tmp_path / "data"
    with pytest.raises(cifar.DataError) as err:
        cifar.load(base, progress=False)
    message = str(err.value)
    for phrase in ("Could not download", "name resolution", cifar.URL, cifar.MD5, "170,498,071 bytes", "163 MB",
                   str(base), f"{cifar.ENV_VAR}=", "tar xzf"):
        assert phrase in message, phrase
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no urllib traceback
    assert _leftovers(base) == []


def test_an_archive_put_there_by_hand_is_checked_and_unpacked(served, tmp_path, monkeypatch):
    arrays, archive = served
    monkeypatch.setattr(cifar, "_urlopen", lambda *a, **k: pytest.fail("must not download"))
    base = tmp_path / "data"
    base.mkdir()
    (base / cifar.ARCHIVE).write_bytes(archive.read_bytes())
    _same(cifar.load(base), arrays)
    shutil.rmtree(base / cifar.FOLDER)
    (base / cifar.ARCHIVE).write_bytes(archive.read_bytes()[:1000])
    with pytest.raises(cifar.DataError, match="is damaged"):
        cifar.load(base)
    assert not (base / cifar.FOLDER).exists()


# -- subsets --------------------------------------------------------------------------------------
def test_subset_is_class_balanced_and_reproducible():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (1000,), generator=g)
    data = cifar.CIFAR10(torch.arange(1000, dtype=torch.uint8).view(-1, 1, 1, 1).expand(1000, 3, 32, 32),
                         y, torch.zeros(300, 3, 32, 32, dtype=torch.uint8), y[:300])
    small = data.subset(205, 40, seed=1)
    counts = torch.bincount(small.train_y, minlength=10)
    assert counts.tolist() == [21] * 5 + [20] * 5
    assert torch.bincount(small.test_y, minlength=10).tolist() == [4] * 10
    assert torch.equal(small.train_x, data.subset(205, 40, seed=1).train_x)
    assert not torch.equal(small.train_y, data.subset(205, 40, seed=2).train_y) or \
        not torch.equal(small.train_x, data.subset(205, 40, seed=2).train_x)
    assert data.subset().train_x.shape == data.train_x.shape
    with pytest.raises(ValueError, match="n_train must be between 1 and 1000"):
        data.subset(2000)


# -- augment and normalize ------------------------------------------------------------------------
def _how_cropped(out: np.ndarray, padded: np.ndarray, pad: int) -> list[tuple[int, int, bool]]:
    """Every (row offset, column offset, flipped) that makes ``out`` a crop of ``padded``."""
    h, w = out.shape[-2:]
    found = []
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy:dy + h, dx:dx + w]
            for flipped in (False, True):
                if np.array_equal(out, crop[:, :, ::-1] if flipped else crop):
                    found.append((dy, dx, flipped))
    return found


def test_the_reference_augment_outputs_crops_of_the_padded_input_flipped_about_half_the_time():
    """The course's augment (the instructor's full-length run trains with it; the package has none)."""
    augment = load_reference("degradation").augment
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (400, 3, 32, 32), dtype=torch.uint8, generator=g)
    out = augment(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == torch.uint8 and out.device == x.device
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (4, 4), (4, 4)))
    ways = [_how_cropped(o, p, 4) for o, p in zip(out.numpy(), padded)]
    assert all(len(w) == 1 for w in ways), "every output is exactly one crop (or flipped crop) of its padded input"
    flips = sum(w[0][2] for w in ways)
    assert 150 < flips < 250, f"{flips} of 400 flipped"
    assert {w[0][0] for w in ways} == set(range(9)) and {w[0][1] for w in ways} == set(range(9))
    a = augment(x[:64], torch.Generator().manual_seed(5))
    assert torch.equal(a, augment(x[:64], torch.Generator().manual_seed(5)))
    assert not torch.equal(a, augment(x[:64], torch.Generator().manual_seed(6)))


def test_normalize_gives_float32_with_the_training_statistics():
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    out = cifar.normalize(x)
    assert out.dtype == torch.float32 and out.shape == x.shape
    expected = (x.double() / 255 - torch.tensor(cifar.MEAN).view(1, 3, 1, 1)) / torch.tensor(cifar.STD).view(1, 3, 1, 1)
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)
    assert cifar.normalize(x.contiguous(memory_format=torch.channels_last)).is_contiguous(memory_format=torch.channels_last)
    mean, std = load_reference("degradation").channel_stats(x)
    np.testing.assert_allclose(mean, (x.double() / 255).mean(dim=(0, 2, 3)).numpy(), atol=1e-9)
    np.testing.assert_allclose(std, (x.double() / 255).std(dim=(0, 2, 3), unbiased=False).numpy(), atol=1e-9)
    with pytest.raises(TypeError, match="uint8"):
        cifar.normalize(out)


# -- the real data --------------------------------------------------------------------------------
@pytest.mark.skipif(not (SHARED / "make_cifar10.py").is_file(),
                    reason=f"real CIFAR-10 needs {SHARED}/make_cifar10.py (the offline copy); not on this machine")
def test_real_cifar10_reads_and_matches_the_constants(tmp_path, no_env):
    subprocess.run([sys.executable, str(SHARED / "make_cifar10.py"), str(tmp_path), "--train", "5000", "--test", "1000"],
                   check=True, capture_output=True)
    data = cifar.load(tmp_path, download=False)
    assert data.train_x.shape == (5000, 3, 32, 32) and data.test_x.shape == (1000, 3, 32, 32)
    assert data.classes == cifar.CLASSES
    assert torch.bincount(data.train_y, minlength=10).min() > 400
    mean, std = load_reference("degradation").channel_stats(data.train_x)
    np.testing.assert_allclose(mean, cifar.MEAN, atol=0.01)
    np.testing.assert_allclose(std, cifar.STD, atol=0.01)
    x = cifar.normalize(data.train_x[:512])
    assert abs(float(x.mean())) < 0.1 and abs(float(x.std()) - 1) < 0.1
