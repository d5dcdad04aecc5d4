"""Training throughput (images/s) of goingdeeper.train's input pipeline, against its limit and a DataLoader.

In one run, on the same model, device and batch size:

* pipeline: ``goingdeeper.train.fit``'s loop with the course's reference pieces (the images as one uint8 tensor on the device; per step: index a
  batch, batched augment and normalize, the training step);
* bare step: the same training step on ready-made batches already on the device (the limit any input
  pipeline can reach), measured before and after the pipeline (their mean is the limit);
* dataloader: the conventional way, a per-image ``Dataset`` (PIL pad 4, random crop, random flip, to tensor,
  normalize: what torchvision's transforms do) behind a ``DataLoader``, with 0 and with as many worker
  processes as there are cores.

With ``--preset quick`` (or ``full``) it measures what notebook 05's experiment costs instead: each network of
the preset trained by ``fit`` with the preset's settings, its wall time (evaluation included) and training
images per second, against the same network's bare step measured just before it in the same run.

Real CIFAR-10 when ``../shared/data/make_cifar10.py`` exists beside the repository (written to a temporary
folder), synthetic images otherwise; the JSON says which. Prints the figures and the ratios, then one JSON line.

    .venv/bin/python benchmarks/train_throughput.py [--model resnet20] [--device cpu] [--batch-size 128] [--seconds 20]
    .venv/bin/python benchmarks/train_throughput.py --preset quick [--models plain20,resnet20] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from goingdeeper import cifar, train
from goingdeeper.grading import load_reference
from goingdeeper.models import build

#: The course's training pieces (the package has none: they are notebook 05's exercises).
REF = load_reference("degradation")


def _step(net, opt, x, y, amp: bool) -> None:
    """The reference's training step, with the forward pass in bf16 autocast when ``amp`` (as fit does)."""
    model = train._AutocastForward(net, x.device) if amp else net
    REF.train_step_on_device(model, opt, x, y)

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def get_data(tmp: str) -> tuple[cifar.CIFAR10, str]:
    if (SHARED / "make_cifar10.py").is_file():
        subprocess.run([sys.executable, str(SHARED / "make_cifar10.py"), tmp, "--test", "1000"], check=True,
                       capture_output=True)
        return cifar.load(tmp, download=False), f"real CIFAR-10 (offline copy from {SHARED})"
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (50000, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (50000,), generator=g)
    return cifar.CIFAR10(x, y, x[:1000].clone(), y[:1000].clone()), "synthetic (random images)"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step, device: torch.device, batch: int, seconds: float, warmup: int = 5) -> float:
    """Images per second of ``step()`` (one batch each) over about ``seconds``, after ``warmup`` steps."""
    for _ in range(warmup):
        step()
    _sync(device)
    start, n = time.perf_counter(), 0
    while True:
        step()
        n += 1
        if n % 5 == 0:
            _sync(device)
            if time.perf_counter() - start >= seconds:
                break
    return n * batch / (time.perf_counter() - start)


def _setup(model_name: str, device: torch.device, fmt: torch.memory_format):
    torch.manual_seed(0)
    net = build(model_name).to(device, memory_format=fmt)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    return net, opt


def bare_step(data: cifar.CIFAR10, model_name: str, device: torch.device, batch: int, seconds: float, amp: bool,
              fmt: torch.memory_format) -> float:
    net, opt = _setup(model_name, device, fmt)
    g = torch.Generator().manual_seed(0)
    ready = []
    for _ in range(16):
        idx = torch.randint(0, len(data.train_y), (batch,), generator=g)
        ready.append((cifar.normalize(data.train_x[idx].to(device)).contiguous(memory_format=fmt), data.train_y[idx].to(device)))
    it = iter(range(10**12))

    def step() -> None:
        x, y = ready[next(it) % len(ready)]
        _step(net, opt, x, y, amp)

    return _timed(step, device, batch, seconds)


def pipeline(data: cifar.CIFAR10, model_name: str, device: torch.device, batch: int, seconds: float, rate: float
             ) -> float:
    """fit() itself: the first epoch warms up, the later ones (their training time only) are measured."""
    needed = max(int(rate * seconds), 4 * batch)
    n_train = min(len(data.train_y), needed)
    epochs = 1 + max(1, round(needed / n_train))
    config = train.Config(model=model_name, epochs=epochs, batch_size=batch, n_train=n_train, n_test=200,
                          eval_images=10, schedule="constant", lr=0.05)
    history = train.fit(config, data, device=device, progress=False, **REF.hooks(config))
    later = history.records[1:]
    steps = later[-1]["iteration"] - history.records[0]["iteration"]
    return steps * batch / sum(r["train_seconds"] for r in later)


class PerImageCIFAR(torch.utils.data.Dataset):
    """torchvision-style: one PIL image at a time, RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.images = x.permute(0, 2, 3, 1).numpy()  # (N, 32, 32, 3) uint8, as torchvision keeps CIFAR
        self.labels = y.tolist()
        self.mean = torch.tensor(cifar.MEAN).view(3, 1, 1)
        self.std = torch.tensor(cifar.STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image, ImageOps

        img = ImageOps.expand(Image.fromarray(self.images[i]), border=4, fill=0)
        dy, dx = torch.randint(0, 9, (2,)).tolist()
        img = img.crop((dx, dy, dx + 32, dy + 32))
        if torch.rand(()) < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        x = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).float().div_(255)
        return (x - self.mean) / self.std, self.labels[i]


def dataloader(data: cifar.CIFAR10, model_name: str, device: torch.device, batch: int, seconds: float, amp: bool,
               fmt: torch.memory_format, workers: int) -> float:
    net, opt = _setup(model_name, device, fmt)
    loader = torch.utils.data.DataLoader(PerImageCIFAR(data.train_x, data.train_y), batch_size=batch, shuffle=True,
                                         drop_last=True, num_workers=workers, pin_memory=device.type == "cuda",
                                         persistent_workers=workers > 0)

    def batches():
        while True:
            yield from loader

    source = batches()

    def step() -> None:
        x, y = next(source)
        x = x.to(device, non_blocking=True).contiguous(memory_format=fmt)
        _step(net, opt, x, y.to(device, non_blocking=True), amp)

    return _timed(step, device, batch, seconds)


def preset_run(data: cifar.CIFAR10, preset: str, models: list[str], device: torch.device, seconds: float,
               amp: bool, fmt: torch.memory_format) -> dict:
    """Each network of ``preset`` as notebook 05 trains it (fit, the preset's settings, the reference pieces),
    after its bare step: wall time, training images per second, and their ratio."""
    rows, start = {}, time.perf_counter()
    for name in models:
        config = train.preset(preset, name)
        bare = bare_step(data, name, device, config.batch_size, seconds, amp, fmt)
        began = time.perf_counter()
        history = train.fit(config, data, device=device, progress=False, **REF.hooks(config))
        wall = time.perf_counter() - began
        steps = history.final["iteration"]
        trained = sum(r["train_seconds"] for r in history.records)
        rows[name] = {"wall_seconds": round(wall, 1), "steps": steps, "seconds_per_step": round(wall / steps, 3),
                      "train_images_per_second": round(steps * config.batch_size / trained, 1),
                      "bare_step_images_per_second": round(bare, 1),
                      "train_to_bare": round(steps * config.batch_size / trained / bare, 4),
                      "final_train_error": round(history.final["train_error"], 4),
                      "final_test_error": round(history.final["test_error"], 4)}
        r = rows[name]
        print(f"  {name:>11}: {r['wall_seconds']:7.1f} s for {steps} steps ({r['seconds_per_step']:.2f} s/step), "
              f"{r['train_images_per_second']:6.0f} img/s training, bare step {bare:6.0f} img/s "
              f"(ratio {r['train_to_bare']:.3f}); train error {r['final_train_error']:.1%}", flush=True)
    total = time.perf_counter() - start
    print(f"  all {len(models)}: {total / 60:.1f} min (bare-step measurements included: "
          f"{len(models)} x {seconds:.0f} s)", flush=True)
    return {"networks": rows, "total_wall_seconds": round(total, 1),
            "total_fit_seconds": round(sum(r["wall_seconds"] for r in rows.values()), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--device", help="cpu, cuda, mps (default: the best available)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--seconds", type=float, default=20.0, help="per measurement")
    ap.add_argument("--threads", type=int, help="CPU threads (default: the cores available)")
    ap.add_argument("--preset", choices=sorted(train.PRESETS), help="time notebook 05's experiment with this preset")
    ap.add_argument("--models", help="with --preset: comma-separated networks (default: the preset's four)")
    args = ap.parse_args()
    device = train.pick_device(args.device)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(args.threads or cores)
    amp = train.native_bf16(device)
    fmt = torch.channels_last if device.type in ("cpu", "cuda") else torch.contiguous_format
    with tempfile.TemporaryDirectory() as tmp:
        data, source = get_data(tmp)
    print(f"{args.model}, batch {args.batch_size}, {train.device_name(device)}, {torch.get_num_threads()} threads, "
          f"bf16 autocast {amp}, {'channels_last' if fmt == torch.channels_last else 'contiguous'}; data: {source}",
          flush=True)
    if args.preset:
        models = args.models.split(",") if args.models else list(train.PRESETS[args.preset]["models"])
        print(f"preset {args.preset}: {', '.join(models)}", flush=True)
        result = preset_run(data, args.preset, models, device, args.seconds, amp, fmt)
        print(json.dumps({
            "benchmark": "train_throughput_preset", "preset": args.preset, "device": train.device_name(device),
            "device_type": device.type, "threads": torch.get_num_threads(), "amp_bf16": amp, "torch": torch.__version__,
            "data": source, **result,
            "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        }))
        return
    b = args.batch_size
    ips: dict[str, float] = {}
    bare1 = bare_step(data, args.model, device, b, args.seconds, amp, fmt)
    print(f"  bare step (before)      {bare1:9.0f} img/s", flush=True)
    ips["pipeline"] = pipeline(data, args.model, device, b, args.seconds, bare1)
    print(f"  pipeline (fit's loop)   {ips['pipeline']:9.0f} img/s", flush=True)
    bare2 = bare_step(data, args.model, device, b, args.seconds, amp, fmt)
    print(f"  bare step (after)       {bare2:9.0f} img/s", flush=True)
    ips["bare_step"] = (bare1 + bare2) / 2
    for workers in sorted({0, cores}):
        key = f"dataloader_workers_{workers}"
        ips[key] = dataloader(data, args.model, device, b, args.seconds, amp, fmt, workers)
        print(f"  DataLoader, {workers} workers  {ips[key]:9.0f} img/s", flush=True)
    best_loader = max(v for k, v in ips.items() if k.startswith("dataloader"))
    ratios = {"pipeline_to_bare": ips["pipeline"] / ips["bare_step"],
              "dataloader_best_to_bare": best_loader / ips["bare_step"],
              "pipeline_to_dataloader_best": ips["pipeline"] / best_loader}
    print(f"pipeline / bare step: {ratios['pipeline_to_bare']:.3f}   best DataLoader / bare step: "
          f"{ratios['dataloader_best_to_bare']:.3f}   pipeline / best DataLoader: {ratios['pipeline_to_dataloader_best']:.2f}x")
    print(json.dumps({
        "benchmark": "train_throughput", "model": args.model, "batch_size": b, "device": train.device_name(device),
        "device_type": device.type, "threads": torch.get_num_threads(), "amp_bf16": amp,
        "channels_last": fmt == torch.channels_last, "torch": torch.__version__, "data": source,
        "seconds_per_measurement": args.seconds, "images_per_second": {k: round(v, 1) for k, v in ips.items()},
        "bare_step_runs": [round(bare1, 1), round(bare2, 1)], "ratios": {k: round(v, 4) for k, v in ratios.items()},
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }))


if __name__ == "__main__":
    main()
