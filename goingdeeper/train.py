"""Notebook 05's training machinery: the paper's CIFAR-10 recipe, fast on a CPU and on a GPU.

:func:`fit` trains one network and returns its :class:`History`. The whole (sub)set of images lives on the
training device as one uint8 tensor; every step indexes a batch, augments it (the student's ``augment``) and
normalizes it (:func:`goingdeeper.cifar.normalize`), all batched: no DataLoader, no loop over images.

The recipe (He et al. 2016, section 4.2): SGD with momentum 0.9 and weight decay 1e-4, batch 128, lr 0.1
divided by 10 at 32k and 48k iterations, stop at 64k (notebook 05's ``lr_at`` scales the milestones with the
length of the run: at 50 % and 75 %); ResNet-110 warms up at lr 0.01 until the training error is below 80 %. Cosine and
one-cycle schedules are options. bf16 autocast where the hardware runs it natively (CUDA; CPUs with AMX) and
channels_last memory (measured faster on CPU and CUDA); ``torch.compile`` only on request.

The loop runs on the student's own pieces, passed as hooks. The package holds none of notebook 05's answers (the
course's versions live with the grader, in ``autograder/reference/degradation.py``; the instructor's full-length
command, ``python -m instructor.train_full``, takes them from there). ``train_step`` and ``evaluate`` are always
needed, ``augment`` when ``Config.augment`` is on, ``lr_at`` for the paper's step schedule (the package runs the
one-cycle, cosine and constant schedules itself), ``grad_norms`` when ``Config.grad_norms_at`` names iterations:

* ``augment(x, generator) -> x``: uint8 (B, 3, 32, 32) on the device -> uint8 (B, 3, 32, 32). The generator
  is a CPU one for a hook of yours (draw on the CPU, move the draws to x's device).
* ``train_step(model, optimizer, x, y) -> (loss, n_wrong)``: x float32 (B, 3, 32, 32) normalized, y int64 (B,);
  where bf16 is native (and for ``evaluate`` too), ``model`` runs its forward pass in bf16 autocast and returns
  float32 logits, so a hook that knows nothing of autocast trains at bf16 speed;
  zero the gradients, forward, cross-entropy, backward, optimizer step; return the batch's mean loss and how
  many of its images were misclassified (numbers, or 0-dim tensors to spare the GPU a sync). Leave the
  gradients in ``.grad`` (zero them before backward, not after the step): gradient norms are read there.
* ``evaluate(model, x, y, batch_size) -> error``: x uint8 (N, 3, 32, 32) test images, y int64 (N,); return the
  fraction (0..1) misclassified, going through x ``batch_size`` images at a time (normalize each batch). The
  loop calls it with the model in eval mode under ``torch.no_grad()``, and sets training mode again after.
* ``lr_at(iteration, total, base_lr, warmup) -> lr``: the learning rate of iteration 0..total-1; ``warmup`` is
  True while the loop is warming up (only with ``Config.warmup``).
* ``grad_norms(model) -> {name: norm}``: called right after ``train_step`` at the iterations in
  ``Config.grad_norms_at``, with the gradients of that step still in ``.grad``; what it returns is recorded
  in ``History.grad_norms`` (needed only when ``grad_norms_at`` names iterations).

Multi-GPU: under ``torchrun`` (an initialized process group: the instructor's
``torchrun --nproc_per_node=K -m instructor.train_full ...``) each rank trains on its share of every batch with
DistributedDataParallel (nccl on CUDA, gloo on CPU), and only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import hashlib
import io
import json
import math
import os
import platform
import random
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from goingdeeper import cifar
from goingdeeper.models import build

__all__ = [
    "Config", "History", "HookMissing", "PRESETS", "SCHEDULES", "constant_lr", "cosine_lr", "device_name", "fit",
    "load_histories", "native_bf16", "onecycle_lr", "pick_device", "preset", "run_folder", "runs_dir",
    "save_histories", "state_hash",
]

FORMAT = "goingdeeper.train/1"


# -- configuration --------------------------------------------------------------------------------
@dataclass
class Config:
    """Everything that decides a run's result (the device and the thread count only change its speed)."""

    model: str = "resnet20"
    epochs: int = 164
    iterations: int | None = None  # when set, stop after this many steps (the paper: 64,000); epochs follow
    batch_size: int = 128  # the global batch: under torchrun each rank takes batch_size / world_size of it
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    schedule: str = "step"  # step | onecycle | cosine | constant
    # step: fractions of the run where lr is divided by 10. Read by the instructor's reference lr_at; a notebook's
    # lr_at hook has the paper's (0.5, 0.75) written in it and decides for itself.
    milestones: tuple[float, ...] = (0.5, 0.75)
    pct_start: float = 0.3  # onecycle: the fraction of the run spent raising lr
    warmup: bool = False  # lr / 10 until the training error is below warmup_error (the paper's ResNet-110)
    warmup_error: float = 0.8
    warmup_max_iterations: int = 1000  # the cap: warm-up ends here even if the error is still high
    label_smoothing: float = 0.0  # read by the instructor's reference train_step; a notebook's hook ignores it
    augment: bool = True  # pad 4, random crop, random flip
    n_train: int | None = None  # a class-balanced subset of the training images (None: all)
    n_test: int | None = None  # a class-balanced subset of the test images (None: all)
    eval_images: int | None = None  # per-epoch test error on this many of them; the last epoch uses all
    eval_batch_size: int = 1000
    seed: int = 0
    amp: bool | None = None  # bf16 autocast; None: where native (CUDA with bf16, CPUs with AMX)
    channels_last: bool | None = None  # None: on CPU and CUDA (measured faster), off on MPS
    compile: bool = False
    threads: int | None = None  # CPU threads for this run (None: leave torch's setting)
    grad_norms_at: tuple[int, ...] = ()  # iterations after which to record each conv weight's gradient norm

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}")
        self.milestones = tuple(self.milestones)
        self.grad_norms_at = tuple(int(k) for k in self.grad_norms_at)
        if self.epochs < 1 or self.batch_size < 1 or (self.iterations is not None and self.iterations < 1):
            raise ValueError("epochs, iterations and batch_size must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known})


# Settings that change only the speed of a run, not its result: a resume may change them.
_SPEED_ONLY = ("threads", "compile", "eval_batch_size")

# The presets. quick: measured on a 2-core CPU (see README.md's Developers section for the figures).
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {
        "models": ("plain20", "plain56", "resnet20", "resnet56"),
        # 16,000 images x 5 epochs, one-cycle up to lr 0.3, no augmentation (it only slows learning in 5 epochs):
        # the four networks in 11 min on 2 cores with bf16, showing the degradation (README.md, notebook 05).
        "config": dict(epochs=5, n_train=16000, eval_images=2000, batch_size=128, lr=0.3, schedule="onecycle",
                       weight_decay=5e-4, augment=False),
    },
    "full": {
        "models": ("plain20", "plain56", "resnet20", "resnet56"),
        "config": dict(iterations=64000, batch_size=128, lr=0.1, schedule="step", milestones=(0.5, 0.75),
                       weight_decay=1e-4),
    },
}


def preset(name: str, model: str, **overrides: Any) -> Config:
    """The Config of preset ``name`` ("quick" or "full") for ``model``; ``overrides`` replace its fields.

    In "full", networks of 110 layers or more warm up, as in the paper.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: use one of {', '.join(PRESETS)}")
    settings = dict(PRESETS[name]["config"], model=model)
    if name == "full" and build(model).depth >= 110:
        settings["warmup"] = True
    settings.update(overrides)
    return Config(**settings)


# -- learning-rate schedules: lr_at(iteration, total, base_lr, warmup) -> lr -----------------------
def cosine_lr(iteration: int, total: int, base_lr: float, warmup: bool = False) -> float:
    """Cosine from base_lr at iteration 0 towards 0 at ``total`` (torch's CosineAnnealingLR, T_max=total)."""
    if warmup:
        return base_lr * 0.1
    return base_lr * (1 + math.cos(math.pi * iteration / total)) / 2


def onecycle_lr(iteration: int, total: int, base_lr: float, warmup: bool = False, *, pct_start: float = 0.3,
                div_factor: float = 25.0, final_div_factor: float = 1e4) -> float:
    """One cycle, as torch's OneCycleLR (cosine, two phases): from base_lr/25 up to base_lr over the first
    ``pct_start`` of the run, then down to base_lr/25/1e4 at the last iteration."""
    if warmup:
        return base_lr * 0.1
    initial = base_lr / div_factor
    final = initial / final_div_factor
    peak = float(pct_start * total) - 1
    last = float(total - 1)

    def anneal(start: float, end: float, pct: float) -> float:
        return end + (start - end) / 2 * (math.cos(math.pi * pct) + 1)

    if iteration <= peak:
        return anneal(initial, base_lr, iteration / peak if peak > 0 else 1.0)
    return anneal(base_lr, final, (iteration - peak) / (last - peak) if last > peak else 1.0)


def constant_lr(iteration: int, total: int, base_lr: float, warmup: bool = False) -> float:
    """base_lr throughout (base_lr / 10 while warming up)."""
    return base_lr * 0.1 if warmup else base_lr


#: The schedules a Config may name. "step" (the paper's) is notebook 05's exercise: the package does not run it
#: itself, fit takes it from the ``lr_at`` hook.
SCHEDULES: dict[str, Callable[..., float] | None] = {
    "step": None, "onecycle": onecycle_lr, "cosine": cosine_lr, "constant": constant_lr,
}


def _lr_at(config: Config) -> Callable[[int, int, float, bool], float]:
    if config.schedule == "onecycle":
        return functools.partial(onecycle_lr, pct_start=config.pct_start)
    schedule = SCHEDULES[config.schedule]
    assert schedule is not None, "the step schedule comes from the lr_at hook"
    return schedule


# -- devices --------------------------------------------------------------------------------------
def pick_device(name: str | None = None) -> torch.device:
    """``name`` ("cpu", "cuda", "cuda:1", "mps"), or the best available: cuda, then mps, then cpu."""
    if name is None or name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"CUDA is not available here (torch {torch.__version__}"
                           f"{', a CPU-only build' if torch.version.cuda is None else ''}): use --device cpu, or run "
                           "on a machine with an NVIDIA GPU and a CUDA build of torch.")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError("MPS (Apple GPU) is not available here: use --device cpu.")
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 natively: CUDA GPUs that support it, CPUs with AMX (about 2x faster there)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":  # AMX runs bf16 convolutions about twice as fast as float32; without it, slower
        return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())
    return False


def device_name(device: torch.device) -> str:
    """A readable name: the GPU's, or the CPU's model and core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        with contextlib.suppress(OSError):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
        return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"
    return device.type


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


# -- the hooks ------------------------------------------------------------------------------------
class HookMissing(TypeError):
    """fit was called without one of the student's pieces that the run needs."""


def _needed_hooks(config: Config, hooks: dict[str, Any]) -> None:
    needed = ["train_step", "evaluate"]
    if config.augment:
        needed.append("augment")
    if config.schedule == "step":
        needed.append("lr_at")
    if config.grad_norms_at:
        needed.append("grad_norms")
    missing = [name for name in needed if hooks.get(name) is None]
    if missing:
        why = {"augment": "Config.augment is on", "lr_at": "the step schedule is notebook 05's lr_at",
               "grad_norms": "Config.grad_norms_at asks for gradient norms"}
        reasons = "; ".join(f"{m}: {why[m]}" for m in missing if m in why)
        yours = {"grad_norms": "conv_grad_norms"}  # notebook 05's name for it
        raise HookMissing(
            f"fit needs your {', '.join(missing)} (pass {', '.join(f'{m}={yours.get(m, m)}' for m in missing)}"
            f"{'; ' + reasons if reasons else ''}). The package has no training pieces of its own: they are "
            "notebook 05's exercises.")


class _AutocastForward(nn.Module):
    """``model`` with its forward pass in bf16 autocast and float32 logits: what a notebook's ``train_step`` or
    ``evaluate`` hook (which knows nothing of autocast) is handed where bf16 is native. The backward pass runs
    outside autocast, as PyTorch recommends; parameters, modes and state are the model's own."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        super().__init__()
        self.model = model
        self.device_type = device.type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self.model(x).float()


# -- history --------------------------------------------------------------------------------------
@dataclass
class History:
    """What a run recorded. ``records``: one dict per epoch with

    epoch (1-based), iteration (steps done), lr (of the epoch's last step), train_loss and train_error (means over
    the epoch's training batches, as trained: train mode, augmented), test_error (0..1) and test_images (how many
    it was measured on), seconds (since the start, evaluation included) and train_seconds (this epoch's training).

    ``grad_norms``: ``{"iteration": k, "norms": {conv weight name: ||dL/dW||}}`` for each k in
    ``Config.grad_norms_at``. ``provenance``: device, torch version, command, date, ...
    """

    config: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)
    grad_norms: list[dict[str, Any]] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def model(self) -> str:
        return self.config["model"]

    @property
    def final(self) -> dict[str, Any]:
        """The last epoch's record."""
        if not self.records:
            raise ValueError(f"the run of {self.model} has no epoch yet")
        return self.records[-1]

    def column(self, key: str) -> list[Any]:
        """One field over the epochs, e.g. ``history.column("test_error")``."""
        return [r[key] for r in self.records]

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "records": self.records, "grad_norms": self.grad_norms,
                "provenance": self.provenance}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        return cls(d["config"], list(d.get("records", [])), list(d.get("grad_norms", [])), dict(d.get("provenance", {})))

    def save(self, path: str | os.PathLike[str]) -> None:
        save_histories([self], path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> History:
        runs = load_histories(path)
        if len(runs) != 1:
            raise ValueError(f"{path} holds {len(runs)} runs; use load_histories() to read them all")
        return runs[0]


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_histories(histories: list[History], path: str | os.PathLike[str]) -> None:
    """Write runs to a JSON file (atomically): ``{"format": ..., "runs": [history, ...]}``."""
    text = json.dumps({"format": FORMAT, "runs": [h.to_dict() for h in histories]}, indent=1)
    _atomic_write(Path(path), text.encode())


def load_histories(path: str | os.PathLike[str]) -> list[History]:
    """The runs saved by :func:`save_histories` (or :meth:`History.save`)."""
    d = json.loads(Path(path).read_text())
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise ValueError(f"{path} is not a results file of goingdeeper.train (format {FORMAT})")
    return [History.from_dict(r) for r in d["runs"]]


def _provenance(device: torch.device, world: int) -> dict[str, Any]:
    return {
        "device": device_name(device), "device_type": device.type, "world_size": world,
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else "",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def state_hash(model: nn.Module) -> str:
    """sha256 of a model's state dict (parameters and buffers, by name), to compare runs or ranks."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# -- distributed ----------------------------------------------------------------------------------
def _dist() -> tuple[int, int]:
    """(rank, world size); (0, 1) without an initialized process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_sum(values: list[float], device: torch.device, world: int) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(t)
    return t.tolist()


# -- checkpoints ----------------------------------------------------------------------------------
def _rng_state() -> dict[str, Any]:
    import numpy as np

    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _checkpoint_path(checkpoint_dir: str | os.PathLike[str], config: Config) -> Path:
    return Path(checkpoint_dir) / f"{config.model}.pt"


def _load_checkpoint(path: Path, config: Config) -> dict[str, Any]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        saved = ckpt["config"]
    except Exception as exc:  # noqa: BLE001
        raise RuntimeError(f"Cannot read the checkpoint {path} ({type(exc).__name__}: {exc}). Delete it to start "
                           "this model afresh.") from None
    ours = config.to_dict()
    differ = [k for k in ours if k not in _SPEED_ONLY and _plain(saved.get(k)) != _plain(ours[k])]
    if differ:
        what = ", ".join(f"{k}: {saved.get(k)!r} there, {ours[k]!r} now" for k in differ)
        raise RuntimeError(f"The checkpoint {path} is of a different run ({what}). Resume with the same settings, "
                           "or delete the checkpoint (on the command line: or choose another --checkpoint-dir) to "
                           "start afresh.")
    return ckpt


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def run_folder(root: str | os.PathLike[str], config: Config, data: cifar.CIFAR10, *pieces: Any,
               device: str | torch.device | None = None) -> Path:
    """Where a run's checkpoint is kept so that running a notebook again does not train it again:
    ``root/<model>-<key>``, the key a hash of what decides the run's result: the config (but the settings that
    only change its speed), the data (its sizes and a sample of its images), the device's kind and whether it
    runs bf16, and the source of each piece (a function's own code, as ``inspect`` finds it; a
    ``functools.partial``'s function and arguments). Change any of them, a line of your train_step included,
    and the run gets a new folder: it trains afresh. (A change inside a helper that a piece calls is not seen:
    delete the folder, or train with ``resume=False``.)"""
    import inspect

    def source(piece: Any) -> str:
        if isinstance(piece, functools.partial):
            return source(piece.func) + repr((piece.args, sorted(piece.keywords.items())))
        try:
            return inspect.getsource(piece)
        except (OSError, TypeError):
            return "None" if piece is None else f"{type(piece).__module__}.{type(piece).__qualname__}"

    dev = pick_device(str(device) if device is not None else None)
    amp = native_bf16(dev) if config.amp is None else bool(config.amp)
    digest = hashlib.sha256()
    settings = {k: _plain(v) for k, v in config.to_dict().items() if k not in _SPEED_ONLY}
    digest.update(json.dumps({**settings, "device": dev.type, "bf16": amp}, sort_keys=True).encode())
    digest.update(repr((tuple(data.train_x.shape), tuple(data.test_x.shape))).encode())
    for images in (data.train_x[:256], data.test_x[:256], data.train_y[:256]):
        digest.update(images.detach().cpu().contiguous().numpy().tobytes())
    for piece in pieces:
        digest.update(source(piece).encode())
    return Path(root) / f"{config.model}-{digest.hexdigest()[:16]}"


def runs_dir() -> Path:
    """Where notebook 05 keeps its runs: ``$GOINGDEEPER_RUNS`` when set (the reader's site builds set a fresh
    one); else ``runs/`` in the data folder (:func:`goingdeeper.cifar.data_dir`) when this user owns that folder
    and can write there; else ``runs/`` in ``$XDG_CACHE_HOME/goingdeeper`` (``~/.cache/goingdeeper``). A data
    folder someone else owns (a shared disk) is never used: a checkpoint is read with pickle, and another user's
    file must not run in your kernel."""
    chosen = os.environ.get("GOINGDEEPER_RUNS")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "goingdeeper" / "runs"
    data = cifar.data_dir()
    candidates = [Path(chosen)] if chosen else []
    if not chosen and data.is_dir() and (not hasattr(os, "getuid") or data.stat().st_uid == os.getuid()):
        candidates.append(data / "runs")
    if not chosen:
        candidates.append(cache)
    for folder in candidates:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".writable-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
            return folder
        except OSError:
            continue
    raise RuntimeError(f"No folder to keep the runs in: {', '.join(str(c) for c in candidates)} cannot be "
                       "written. Point GOINGDEEPER_RUNS at a folder you can write to.")


# -- the loop -------------------------------------------------------------------------------------
def _epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    return (seed * 1_000_003 + epoch * 7919 + rank * 104_729) % (2**63)


def _batches(n: int, batch: int, epoch: int, seed: int, rank: int, world: int, device: torch.device
             ) -> Iterator[torch.Tensor]:
    """This rank's share of every batch of one epoch's permutation (the same permutation on every rank)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(_epoch_seed(seed, epoch))).to(device)
    for i in range(n // batch):
        yield perm[i * batch:(i + 1) * batch][rank::world]


def fit(config: Config, data: cifar.CIFAR10, *, model: nn.Module | None = None,
        augment: Callable[..., torch.Tensor] | None = None, train_step: Callable[..., Any] | None = None,
        evaluate: Callable[..., float] | None = None, lr_at: Callable[[int, int, float, bool], float] | None = None,
        grad_norms: Callable[[nn.Module], dict[str, float]] | None = None,
        on_epoch: Callable[[History], Any] | None = None, progress: bool | str = True,
        device: str | torch.device | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None, resume: bool = False) -> History:
    """Train ``config.model`` (or ``model``) on ``data`` with the configuration's recipe; returns its History.

    data: the full CIFAR10 (``config.n_train`` / ``n_test`` take class-balanced subsets of it), on any device:
    it is copied to the training device once. augment / train_step / evaluate / lr_at / grad_norms: the hooks
    described in the module docstring: the student's own (train_step and evaluate always; augment when the config
    augments, lr_at for the step schedule; :class:`HookMissing` says which is missing). on_epoch(history) runs after every epoch (on rank 0).
    progress: a bar of steps with their rate and the time left (a string: its label, e.g. "network 2 of 4: resnet20";
    False: none).
    device: None picks cuda, mps or cpu. checkpoint_dir: write ``<model>.pt`` there after every epoch (atomically);
    with ``resume=True`` a run continues from it exactly where it stopped (on the CPU: the same weights as an
    uninterrupted run). Under torchrun (an initialized process group), trains with DistributedDataParallel.
    """
    _needed_hooks(config, dict(augment=augment, train_step=train_step, evaluate=evaluate, lr_at=lr_at,
                               grad_norms=grad_norms))
    rank, world = _dist()
    dev = pick_device(str(device) if device is not None else None)
    if world > 1 and dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(dev)
    amp = native_bf16(dev) if config.amp is None else bool(config.amp)
    channels_last = dev.type in ("cpu", "cuda") if config.channels_last is None else bool(config.channels_last)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} must be a multiple of the number of processes ({world})")
    old_threads = torch.get_num_threads()
    if dev.type == "cpu" and config.threads:
        torch.set_num_threads(config.threads)
    try:
        hooks = dict(augment=augment, train_step=train_step, evaluate=evaluate, lr_at=lr_at, grad_norms=grad_norms)
        return _fit(config, data, model, hooks, on_epoch, progress, dev, amp, fmt, checkpoint_dir, resume, rank, world)
    finally:
        torch.set_num_threads(old_threads)


@dataclass
class _Run:
    """What one call of :func:`fit` carries from step to step."""

    config: Config
    data: cifar.CIFAR10  # the (sub)set, on the training device
    net: nn.Module
    optimizer: torch.optim.Optimizer
    history: History
    hooks: dict[str, Any]  # augment, train_step, evaluate, lr_at, grad_norms
    dev: torch.device
    fmt: torch.memory_format
    rank: int
    world: int
    total: int  # iterations of the whole run
    epochs: int
    eval_index: torch.Tensor | None  # the test images evaluated after every epoch but the last (None: all)
    path: Path | None  # the checkpoint
    start_epoch: int = 0
    iteration: int = 0
    elapsed: float = 0.0
    warming: bool = False
    warm: deque = field(default_factory=lambda: deque(maxlen=20))  # (wrong, seen) of the last 20 warm-up steps
    step_model: nn.Module | None = None  # what train_step gets: DDP, compiled, autocast as configured
    eval_model: nn.Module | None = None  # what evaluate gets


def _start(config: Config, data: cifar.CIFAR10, model: nn.Module | None, hooks: dict[str, Any], dev: torch.device,
           amp: bool, fmt: torch.memory_format, checkpoint_dir: str | os.PathLike[str] | None, rank: int,
           world: int) -> _Run:
    """The data on the device, the length of the run, the seeded network, its optimizer and an empty history."""
    data = data.subset(config.n_train, config.n_test, seed=config.seed).to(dev)
    eval_index = (cifar.balanced_indices(data.test_y, config.eval_images, torch.Generator().manual_seed(config.seed),
                                         "eval_images")
                  if config.eval_images and config.eval_images < len(data.test_y) else None)
    n = len(data.train_y)
    steps_per_epoch = n // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size {config.batch_size} is larger than the {n} training images: lower it")
    total = config.iterations or config.epochs * steps_per_epoch
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    net = (model if model is not None else build(config.model)).to(dev, memory_format=fmt)
    optimizer = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay, nesterov=config.nesterov)
    history = History(config.to_dict(), provenance=_provenance(dev, world))
    history.provenance.update(amp_bf16=amp, channels_last=fmt == torch.channels_last, iterations=total,
                              steps_per_epoch=steps_per_epoch, train_images=n, test_images=len(data.test_y))
    path = _checkpoint_path(checkpoint_dir, config) if checkpoint_dir is not None else None
    return _Run(config, data, net, optimizer, history, hooks, dev, fmt, rank, world, total,
                math.ceil(total / steps_per_epoch), eval_index, path, warming=config.warmup)


def _resume(run: _Run) -> None:
    """Continue from the checkpoint: weights, optimizer, position, warm-up state, history and random state."""
    assert run.path is not None
    ckpt = _load_checkpoint(run.path, run.config)
    run.net.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.start_epoch, run.iteration = ckpt["epoch"], ckpt["iteration"]
    run.warming, run.warm = ckpt["warming"], deque(ckpt["warm"], maxlen=20)
    saved = History.from_dict(ckpt["history"])
    run.history.records, run.history.grad_norms = saved.records, saved.grad_norms
    run.history.provenance["resumed_from_epoch"] = run.start_epoch
    run.elapsed = run.history.records[-1]["seconds"] if run.history.records else 0.0
    _set_rng_state(ckpt["rng"])


def _wrap(run: _Run, amp: bool) -> None:
    """The models the hooks get: DistributedDataParallel under torchrun, torch.compile on request, and (where bf16
    is native) the forward pass in autocast, since the hooks know nothing of autocast."""
    runner: nn.Module = run.net
    if run.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        runner = DistributedDataParallel(run.net, device_ids=[run.dev.index] if run.dev.type == "cuda" else None)
    if run.config.compile:
        runner = torch.compile(runner)
    run.step_model = _AutocastForward(runner, run.dev) if amp else runner
    run.eval_model = _AutocastForward(run.net, run.dev) if amp else run.net


def _set_lr(run: _Run, lr_fn: Callable[..., float]) -> float:
    lr = lr_fn(run.iteration, run.total, run.config.lr, run.warming)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    return lr


def _after_warm_step(run: _Run, wrong: Any, seen: int) -> None:
    """Warm-up ends at the cap, or once the last 20 steps' training error is below ``warmup_error``."""
    w, s = _all_sum([float(wrong), float(seen)], run.dev, run.world)
    run.warm.append((w, s))
    config = run.config
    if run.iteration + 1 >= config.warmup_max_iterations or (
            len(run.warm) == run.warm.maxlen
            and sum(a for a, _ in run.warm) / sum(b for _, b in run.warm) < config.warmup_error):
        run.warming = False
        run.history.provenance["warmup_ended_at"] = run.iteration + 1


def _train_epoch(run: _Run, epoch: int, lr_fn: Callable[..., float], bar: Any, progress: bool | str
                 ) -> tuple[list[float], float]:
    """One epoch of steps (or what is left of the run): ([loss sum, wrong sum, steps, images] over all ranks, lr)."""
    config, data, hooks = run.config, run.data, run.hooks
    augment_fn, step_fn, norms_fn = hooks["augment"], hooks["train_step"], hooks["grad_norms"]
    watch = set(config.grad_norms_at)
    run.step_model.train()  # the runner (and the model) too
    # augment draws from a CPU generator (and moves its draws to the batch's device).
    aug_gen = torch.Generator(device="cpu")
    aug_gen.manual_seed(_epoch_seed(config.seed, epoch, run.rank + 1))
    loss_acc: Any = 0.0  # sums of what train_step returns: numbers, or tensors on the device (no sync)
    wrong_acc: Any = 0
    steps = seen = 0
    lr = config.lr
    for idx in _batches(len(data.train_y), config.batch_size, epoch, config.seed, run.rank, run.world, run.dev):
        if run.iteration >= run.total:
            break
        lr = _set_lr(run, lr_fn)
        xb = data.train_x[idx]
        if augment_fn is not None:
            xb = augment_fn(xb, aug_gen)
        x = cifar.normalize(xb).contiguous(memory_format=run.fmt)
        loss, wrong = step_fn(run.step_model, run.optimizer, x, data.train_y[idx])
        loss_acc = loss_acc + loss
        wrong_acc = wrong_acc + wrong
        steps += 1
        seen += len(idx)
        if run.iteration in watch:
            norms = {str(k): float(v) for k, v in dict(norms_fn(run.net)).items()}
            run.history.grad_norms.append({"iteration": run.iteration, "norms": norms})
        if run.warming:
            _after_warm_step(run, wrong, len(idx))
        run.iteration += 1
        bar.update(1)
        if progress and run.rank == 0 and steps % 25 == 0:
            bar.set_postfix(loss=f"{float(loss):.3f}", lr=f"{lr:.3g}", refresh=False)
    return _all_sum([float(loss_acc), float(wrong_acc), steps, seen], run.dev, run.world), lr


def _test_error(run: _Run, last: bool) -> tuple[float, float]:
    """(error, images) on the test set (the ``eval_images`` subset but after the last epoch), over all ranks."""
    if run.world > 1:  # one set of BN statistics for evaluation and checkpoints: rank 0's
        import torch.distributed as dist

        for buffer in run.net.buffers():
            dist.broadcast(buffer, 0)
    tx, ty = run.data.test_x, run.data.test_y
    if run.eval_index is not None and not last:
        tx, ty = tx[run.eval_index], ty[run.eval_index]
    share_x, share_y = tx[run.rank::run.world], ty[run.rank::run.world]
    run.eval_model.eval()  # the model too
    with torch.no_grad():
        error = (float(run.hooks["evaluate"](run.eval_model, share_x, share_y, run.config.eval_batch_size))
                 if len(share_y) else 0.0)
    wrong_test, n_test = _all_sum([error * len(share_y), float(len(share_y))], run.dev, run.world)
    run.eval_model.train()
    run.step_model.train()
    return wrong_test / n_test, n_test


def _save_checkpoint(run: _Run, epoch: int) -> None:
    """``<model>.pt``, written atomically: everything a resume needs to continue exactly."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "config": run.config.to_dict(), "epoch": epoch + 1, "iteration": run.iteration,
                "model": run.net.state_dict(), "optimizer": run.optimizer.state_dict(), "warming": run.warming,
                "warm": list(run.warm), "rng": _rng_state(), "history": run.history.to_dict()}, buf)
    _atomic_write(run.path, buf.getvalue())


def _finish(run: _Run, cpu_start: float) -> None:
    """The provenance of the weights: their hash (all ranks must agree) and the process's CPU time."""
    run.history.provenance["state_sha256"] = state_hash(run.net)
    # CPU time of this process (all its threads) during this call: about threads x seconds when no other
    # process competed for the cores, much less when the run had to share them.
    run.history.provenance["process_cpu_seconds"] = round(time.process_time() - cpu_start, 1)
    if run.world > 1:
        import torch.distributed as dist

        hashes: list[Any] = [None] * run.world
        dist.all_gather_object(hashes, run.history.provenance["state_sha256"])
        run.history.provenance["rank_state_sha256"] = hashes
        if len(set(hashes)) != 1:
            raise RuntimeError(f"the {run.world} processes ended with different weights ({hashes}); this is a bug")


def _fit(config: Config, data: cifar.CIFAR10, model: nn.Module | None, hooks: dict[str, Any],
         on_epoch: Callable[[History], Any] | None, progress: bool | str, dev: torch.device, amp: bool,
         fmt: torch.memory_format, checkpoint_dir: str | os.PathLike[str] | None, resume: bool, rank: int,
         world: int) -> History:
    """The loop, step by step: start, resume, wrap the model, then per epoch train, test, checkpoint, report."""
    from tqdm.auto import tqdm

    run = _start(config, data, model, hooks, dev, amp, fmt, checkpoint_dir, rank, world)
    cpu_start = time.process_time()
    if resume and run.path is not None and run.path.is_file():
        _resume(run)
    _wrap(run, amp)
    lr_fn = hooks["lr_at"] if hooks["lr_at"] is not None else _lr_at(config)
    bar = tqdm(total=run.total, initial=run.iteration, desc=progress if isinstance(progress, str) else config.model,
               unit="step", dynamic_ncols=True, disable=not progress or rank != 0)
    try:
        for epoch in range(run.start_epoch, run.epochs):
            t0 = time.perf_counter()
            (loss_sum, wrong_sum, steps_all, seen_all), lr = _train_epoch(run, epoch, lr_fn, bar, progress)
            train_seconds = time.perf_counter() - t0
            last = epoch == run.epochs - 1 or run.iteration >= run.total
            test_error, n_test = _test_error(run, last)
            run.elapsed += time.perf_counter() - t0
            record = {"epoch": epoch + 1, "iteration": run.iteration, "lr": lr,
                      "train_loss": loss_sum / max(steps_all, 1), "train_error": wrong_sum / max(seen_all, 1),
                      "test_error": test_error, "test_images": int(n_test),
                      "seconds": round(run.elapsed, 3), "train_seconds": round(train_seconds, 3)}
            run.history.records.append(record)
            bar.set_postfix(loss=f"{record['train_loss']:.3f}", train_err=f"{record['train_error']:.1%}",
                            test_err=f"{record['test_error']:.1%}")
            if run.path is not None and rank == 0:
                _save_checkpoint(run, epoch)
            if on_epoch is not None and rank == 0:
                on_epoch(run.history)
            if run.iteration >= run.total:
                break
    finally:
        bar.close()
    _finish(run, cpu_start)
    return run.history
