"""Notebook 05's training machinery: the paper's CIFAR-10 recipe, fast on a CPU and on a GPU.

:func:`fit` trains one network and returns its :class:`History`. The whole (sub)set of images lives on the
training device as one uint8 tensor; every step indexes a batch, augments it (:func:`goingdeeper.cifar.augment`)
and normalizes it (:func:`goingdeeper.cifar.normalize`), all batched: no DataLoader, no loop over images.

The recipe (He et al. 2016, section 4.2): SGD with momentum 0.9 and weight decay 1e-4, batch 128, lr 0.1
divided by 10 at 32k and 48k iterations, stop at 64k (:func:`step_lr` scales the milestones with the length of
the run: at 50 % and 75 %); ResNet-110 warms up at lr 0.01 until the training error is below 80 %. Cosine and
one-cycle schedules are options. bf16 autocast where the hardware runs it natively (CUDA; CPUs with AMX) and
channels_last memory (measured faster on CPU and CUDA); ``torch.compile`` only on request.

Five hooks let a notebook plug a student's functions into the same loop; each defaults to the package's own:

* ``augment(x, generator) -> x``: uint8 (B, 3, 32, 32) on the device -> uint8 (B, 3, 32, 32). The generator
  is a CPU one for a hook of yours (draw on the CPU, move the draws to x's device).
* ``train_step(model, optimizer, x, y) -> (loss, n_wrong)``: x float32 (B, 3, 32, 32) normalized, y int64 (B,);
  where bf16 is native (and for ``evaluate`` too), ``model`` runs its forward pass in bf16 autocast and returns
  float32 logits, so a hook that knows nothing of autocast trains as fast as the package's own;
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
  in ``History.grad_norms``. Default: the norm of every convolution weight's gradient.

Multi-GPU: run the command line under ``torchrun --nproc_per_node=K -m goingdeeper.train ...``; each rank
trains on its share of every batch with DistributedDataParallel (nccl on CUDA, gloo on CPU), and only rank 0
prints and writes files.
"""

from __future__ import annotations

import argparse
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
from torch.nn import functional as F

from goingdeeper import cifar
from goingdeeper.models import build

__all__ = [
    "Config", "History", "PRESETS", "SCHEDULES", "constant_lr", "cosine_lr", "device_name", "evaluate", "fit",
    "load_histories", "main", "native_bf16", "onecycle_lr", "pick_device", "preset", "save_histories", "state_hash", "step_lr", "train_step",
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
    milestones: tuple[float, ...] = (0.5, 0.75)  # step: fractions of the run where lr is divided by 10
    pct_start: float = 0.3  # onecycle: the fraction of the run spent raising lr
    warmup: bool = False  # lr / 10 until the training error is below warmup_error (the paper's ResNet-110)
    warmup_error: float = 0.8
    warmup_max_iterations: int = 1000  # the cap: warm-up ends here even if the error is still high
    label_smoothing: float = 0.0
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
def step_lr(iteration: int, total: int, base_lr: float, warmup: bool = False, *,
            milestones: tuple[float, ...] = (0.5, 0.75), gamma: float = 0.1) -> float:
    """The paper's schedule: base_lr, divided by 10 at each milestone (fractions of ``total``: 32k and 48k of
    64k are 0.5 and 0.75); base_lr / 10 while warming up."""
    if warmup:
        return base_lr * 0.1
    return base_lr * gamma ** sum(iteration >= round(m * total) for m in milestones)


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


SCHEDULES: dict[str, Callable[..., float]] = {
    "step": step_lr, "onecycle": onecycle_lr, "cosine": cosine_lr, "constant": constant_lr,
}


def _lr_at(config: Config) -> Callable[[int, int, float, bool], float]:
    if config.schedule == "step":
        return functools.partial(step_lr, milestones=config.milestones)
    if config.schedule == "onecycle":
        return functools.partial(onecycle_lr, pct_start=config.pct_start)
    return SCHEDULES[config.schedule]


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


# -- the default hooks ----------------------------------------------------------------------------
def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, *,
               label_smoothing: float = 0.0, amp: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step on a batch: x float32 (B, 3, 32, 32) normalized, y int64 (B,).

    Returns the batch's mean cross-entropy and the number of misclassified images, as 0-dim tensors on the
    device (no GPU sync). ``amp``: forward in bf16 autocast.
    """
    optimizer.zero_grad(set_to_none=True)
    with _autocast(x.device, amp):
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    loss.backward()
    optimizer.step()
    return loss.detach(), (logits.detach().argmax(1) != y).sum()


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000, *, amp: bool = False,
             channels_last: bool = False) -> float:
    """The error rate (0..1) of ``model`` in eval mode on uint8 images x (N, 3, 32, 32) with labels y (N,)."""
    was_training = model.training
    model.eval()
    wrong = torch.zeros((), dtype=torch.int64, device=x.device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    with torch.no_grad(), _autocast(x.device, amp):
        for i in range(0, len(x), batch_size):
            xb = cifar.normalize(x[i:i + batch_size]).contiguous(memory_format=fmt)
            wrong += (model(xb).argmax(1) != y[i:i + batch_size]).sum()
    model.train(was_training)
    return wrong.item() / max(len(x), 1)


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
                           "or delete the checkpoint (or choose another --checkpoint-dir) to start afresh.")
    return ckpt


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


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
    described in the module docstring (None: the package's own). on_epoch(history) runs after every epoch (on rank 0).
    progress: a bar of steps with their rate and the time left (a string: its label, e.g. "network 2 of 4: resnet20";
    False: none).
    device: None picks cuda, mps or cpu. checkpoint_dir: write ``<model>.pt`` there after every epoch (atomically);
    with ``resume=True`` a run continues from it exactly where it stopped (on the CPU: the same weights as an
    uninterrupted run). Under torchrun (an initialized process group), trains with DistributedDataParallel.
    """
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
        return _fit(config, data, model, augment, train_step, evaluate, lr_at, grad_norms, on_epoch, progress, dev,
                    amp, fmt, checkpoint_dir, resume, rank, world)
    finally:
        torch.set_num_threads(old_threads)


def _fit(config: Config, data: cifar.CIFAR10, model: nn.Module | None, augment_fn: Callable[..., Any] | None,
         step_fn: Callable[..., Any] | None, eval_fn: Callable[..., float] | None, lr_fn: Callable[..., float] | None,
         norms_fn: Callable[[nn.Module], dict[str, float]] | None, on_epoch: Callable[[History], Any] | None,
         progress: bool | str, dev: torch.device, amp: bool,
         fmt: torch.memory_format, checkpoint_dir: str | os.PathLike[str] | None, resume: bool, rank: int,
         world: int) -> History:
    from tqdm.auto import tqdm

    data = data.subset(config.n_train, config.n_test, seed=config.seed).to(dev)
    eval_index = (cifar.balanced_indices(data.test_y, config.eval_images, torch.Generator().manual_seed(config.seed), "eval_images")
                  if config.eval_images and config.eval_images < len(data.test_y) else None)
    n = len(data.train_y)
    steps_per_epoch = n // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size {config.batch_size} is larger than the {n} training images: lower it")
    total = config.iterations or config.epochs * steps_per_epoch
    epochs = math.ceil(total / steps_per_epoch)

    torch.manual_seed(config.seed)
    random.seed(config.seed)
    net = (model if model is not None else build(config.model)).to(dev, memory_format=fmt)
    optimizer = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay, nesterov=config.nesterov)
    history = History(config.to_dict(), provenance=_provenance(dev, world))
    history.provenance.update(amp_bf16=amp, channels_last=fmt == torch.channels_last, iterations=total,
                              steps_per_epoch=steps_per_epoch, train_images=n, test_images=len(data.test_y))
    start_epoch, iteration, elapsed = 0, 0, 0.0
    cpu_start = time.process_time()
    warm = deque(maxlen=20)  # (wrong, seen) of the last 20 steps while warming up
    warming = config.warmup
    path = _checkpoint_path(checkpoint_dir, config) if checkpoint_dir is not None else None
    if resume and path is not None and path.is_file():
        ckpt = _load_checkpoint(path, config)
        net.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch, iteration = ckpt["epoch"], ckpt["iteration"]
        warming, warm = ckpt["warming"], deque(ckpt["warm"], maxlen=20)
        saved = History.from_dict(ckpt["history"])
        history.records, history.grad_norms = saved.records, saved.grad_norms
        history.provenance["resumed_from_epoch"] = start_epoch
        elapsed = history.records[-1]["seconds"] if history.records else 0.0
        _set_rng_state(ckpt["rng"])

    runner: nn.Module = net
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        runner = DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None)
    if config.compile:
        runner = torch.compile(runner)
    own_augment = augment_fn is None
    # The package's own hooks handle bf16 themselves; a notebook's get the model with its forward in autocast.
    step_model = _AutocastForward(runner, dev) if amp and step_fn is not None else runner
    eval_model = _AutocastForward(net, dev) if amp and eval_fn is not None else net
    augment_fn = augment_fn or (cifar.augment if config.augment else None)
    step_fn = step_fn or functools.partial(train_step, label_smoothing=config.label_smoothing, amp=amp)
    eval_fn = eval_fn or functools.partial(evaluate, amp=amp, channels_last=fmt == torch.channels_last)
    lr_fn = lr_fn or _lr_at(config)
    watch = set(config.grad_norms_at)
    convs = [(name, p) for name, p in net.named_parameters() if p.ndim == 4]

    bar = tqdm(total=total, initial=iteration, desc=progress if isinstance(progress, str) else config.model,
               unit="step", dynamic_ncols=True,
               disable=not progress or rank != 0)
    try:
        for epoch in range(start_epoch, epochs):
            t0 = time.perf_counter()
            step_model.train()  # the runner (and the model) too
            # The package's augment draws on the GPU itself; a hook of the notebook's gets a CPU generator.
            aug_gen = torch.Generator(device=dev if dev.type == "cuda" and own_augment else "cpu")
            aug_gen.manual_seed(_epoch_seed(config.seed, epoch, rank + 1))
            loss_acc: Any = 0.0  # sums of what train_step returns: numbers, or tensors on the device (no sync)
            wrong_acc: Any = 0
            steps = seen = 0
            lr = config.lr
            for idx in _batches(n, config.batch_size, epoch, config.seed, rank, world, dev):
                if iteration >= total:
                    break
                lr = lr_fn(iteration, total, config.lr, warming)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                xb = data.train_x[idx]
                if augment_fn is not None:
                    xb = augment_fn(xb, aug_gen)
                x = cifar.normalize(xb).contiguous(memory_format=fmt)
                loss, wrong = step_fn(step_model, optimizer, x, data.train_y[idx])
                loss_acc = loss_acc + loss
                wrong_acc = wrong_acc + wrong
                steps += 1
                seen += len(idx)
                if iteration in watch:
                    if norms_fn is not None:
                        norms = {str(k): float(v) for k, v in dict(norms_fn(net)).items()}
                    else:
                        norms = {name: float(p.grad.norm()) if p.grad is not None else float("nan")
                                 for name, p in convs}
                    history.grad_norms.append({"iteration": iteration, "norms": norms})
                if warming:
                    w, s = _all_sum([float(wrong), float(len(idx))], dev, world)
                    warm.append((w, s))
                    done = iteration + 1 >= config.warmup_max_iterations or (
                        len(warm) == warm.maxlen and sum(a for a, _ in warm) / sum(b for _, b in warm) < config.warmup_error)
                    if done:
                        warming = False
                        history.provenance["warmup_ended_at"] = iteration + 1
                iteration += 1
                bar.update(1)
                if progress and rank == 0 and steps % 25 == 0:
                    bar.set_postfix(loss=f"{float(loss):.3f}", lr=f"{lr:.3g}", refresh=False)
            loss_sum, wrong_sum, steps_all, seen_all = _all_sum([float(loss_acc), float(wrong_acc), steps, seen], dev, world)
            train_seconds = time.perf_counter() - t0
            if world > 1:  # one set of BN statistics for evaluation and checkpoints: rank 0's
                import torch.distributed as dist

                for buffer in net.buffers():
                    dist.broadcast(buffer, 0)
            last = epoch == epochs - 1 or iteration >= total
            tx, ty = data.test_x, data.test_y
            if eval_index is not None and not last:
                tx, ty = tx[eval_index], ty[eval_index]
            share_x, share_y = tx[rank::world], ty[rank::world]
            eval_model.eval()  # the model too
            with torch.no_grad():
                error = float(eval_fn(eval_model, share_x, share_y, config.eval_batch_size)) if len(share_y) else 0.0
            wrong_test, n_test = _all_sum([error * len(share_y), float(len(share_y))], dev, world)
            eval_model.train()
            step_model.train()
            elapsed += time.perf_counter() - t0
            record = {"epoch": epoch + 1, "iteration": iteration, "lr": lr,
                      "train_loss": loss_sum / max(steps_all, 1), "train_error": wrong_sum / max(seen_all, 1),
                      "test_error": wrong_test / n_test, "test_images": int(n_test),
                      "seconds": round(elapsed, 3), "train_seconds": round(train_seconds, 3)}
            history.records.append(record)
            bar.set_postfix(loss=f"{record['train_loss']:.3f}", train_err=f"{record['train_error']:.1%}",
                            test_err=f"{record['test_error']:.1%}")
            if path is not None and rank == 0:
                buf = io.BytesIO()
                torch.save({"format": FORMAT, "config": config.to_dict(), "epoch": epoch + 1, "iteration": iteration,
                            "model": net.state_dict(), "optimizer": optimizer.state_dict(), "warming": warming,
                            "warm": list(warm), "rng": _rng_state(), "history": history.to_dict()}, buf)
                _atomic_write(path, buf.getvalue())
            if on_epoch is not None and rank == 0:
                on_epoch(history)
            if iteration >= total:
                break
    finally:
        bar.close()
    history.provenance["state_sha256"] = state_hash(net)
    # CPU time of this process (all its threads) during this call: about threads x seconds when no other
    # process competed for the cores, much less when the run had to share them.
    history.provenance["process_cpu_seconds"] = round(time.process_time() - cpu_start, 1)
    if world > 1:
        import torch.distributed as dist

        hashes: list[Any] = [None] * world
        dist.all_gather_object(hashes, history.provenance["state_sha256"])
        history.provenance["rank_state_sha256"] = hashes
        if len(set(hashes)) != 1:
            raise RuntimeError(f"the {world} processes ended with different weights ({hashes}); this is a bug")
    return history


# -- command line ---------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m goingdeeper.train",
        description="Train the paper's CIFAR-10 networks (plain and residual) and save their histories as JSON.",
        epilog="Several GPUs: torchrun --nproc_per_node=K -m goingdeeper.train --preset full ...")
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick",
                   help="quick: a class-balanced subset, a few epochs (a laptop CPU); full: the paper's 64k iterations "
                        "on all the data (a GPU). Default: quick")
    p.add_argument("--models", help="comma-separated, e.g. plain20,resnet56 (default: plain20,plain56,resnet20,resnet56)")
    p.add_argument("--data", help=f"folder with cifar-10-batches-py/ (default: ${cifar.ENV_VAR} or data/ beside the "
                                  "package; downloaded there on first use)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 or mps (default: the best available)")
    p.add_argument("--epochs", type=int, help="override the preset's number of epochs (the schedule follows)")
    p.add_argument("--iterations", type=int, help="override the preset's number of iterations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="CPU threads (default: the cores available, shared among processes)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (slower to start; not always faster)")
    p.add_argument("--out", help="results file (default: results_<preset>.json in the current folder)")
    p.add_argument("--checkpoint-dir", help="where <model>.pt is written after every epoch (default: "
                                            "checkpoints/<preset>/ in the data folder)")
    p.add_argument("--resume", action="store_true", help="continue each model from its checkpoint, if there is one")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status."""
    args = _parser().parse_args(argv)
    err = functools.partial(print, file=sys.stderr)
    models = [m.strip() for m in (args.models or ",".join(PRESETS[args.preset]["models"])).split(",") if m.strip()]
    for m in models:
        try:
            build(m)
        except ValueError as exc:
            err(f"error: --models: {exc}")
            return 2
    overrides: dict[str, Any] = {"seed": args.seed, "compile": args.compile}
    if args.epochs is not None:
        overrides.update(epochs=args.epochs, iterations=None)
    if args.iterations is not None:
        overrides["iterations"] = args.iterations
    try:
        device = pick_device(args.device)
    except (RuntimeError, ValueError) as exc:
        err(f"error: --device: {exc}")
        return 2

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        import torch.distributed as dist

        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank, world = _dist()
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    if device.type == "cpu":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        overrides["threads"] = args.threads or max(1, cores // local_world)
    try:
        if rank == 0:
            data = cifar.load(args.data, progress=not args.quiet)
        if world > 1:
            torch.distributed.barrier()
            if rank != 0:
                data = cifar.load(args.data, download=False)
        checkpoints = Path(args.checkpoint_dir) if args.checkpoint_dir else cifar.data_dir(args.data) / "checkpoints" / args.preset
        out = Path(args.out or f"results_{args.preset}.json")
        histories: list[History] = []
        started = time.perf_counter()
        for m in models:
            config = preset(args.preset, m, **overrides)
            for key, available in (("n_train", len(data.train_y)), ("n_test", len(data.test_y))):
                if getattr(config, key) is not None and getattr(config, key) > available:
                    if rank == 0:
                        print(f"note: the data holds {available} images for {key}={getattr(config, key)}: using them all")
                    setattr(config, key, available)
            history = fit(config, data, device=device, progress=not args.quiet and rank == 0,
                          checkpoint_dir=checkpoints, resume=args.resume)
            histories.append(history)
            if rank == 0:
                save_histories(histories, out)  # after every model: finished runs are kept if a later one stops
                f = history.final
                print(f"{m:>14}: train error {f['train_error']:6.1%}  test error {f['test_error']:6.1%}  "
                      f"({f['seconds']:.0f} s, {f['epoch']} epochs, {f['iteration']} steps)", flush=True)
        if rank == 0:
            print(f"wrote {out} ({len(histories)} runs, {(time.perf_counter() - started) / 60:.1f} min); "
                  f"checkpoints in {checkpoints}")
        return 0
    except cifar.DataError as exc:
        err(f"error: {exc}")
        return 2
    except (RuntimeError, ValueError) as exc:
        if "checkpoint" in str(exc) or "batch_size" in str(exc):
            err(f"error: {exc}")
            return 2
        raise
    finally:
        if world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
