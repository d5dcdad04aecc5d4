"""The full-length run of notebook 05: ``python -m instructor.train_full --preset full`` (from the course root).

It trains the paper's CIFAR-10 networks with :func:`goingdeeper.train.fit` and the course's reference training
pieces (``autograder/reference/degradation.py``: augment, train_step, evaluate, lr_at, conv_grad_norms), exactly as
a student's notebook trains with their own, and saves the histories as JSON (``results_full.json`` is what notebook
05 shows). The package the students have holds none of these pieces: this command lives with the instructor.

Several GPUs: ``torchrun --nproc_per_node=K -m instructor.train_full --preset full ...``; each rank trains on its
share of every batch with DistributedDataParallel, and only rank 0 prints and writes files.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from goingdeeper import cifar
from goingdeeper.grading import load_reference
from goingdeeper.models import build
from goingdeeper.train import PRESETS, History, _dist, fit, pick_device, preset, save_histories

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m instructor.train_full",
        description="Train the paper's CIFAR-10 networks (plain and residual) with the course's reference training "
                    "pieces and save their histories as JSON.",
        epilog="Several GPUs: torchrun --nproc_per_node=K -m instructor.train_full --preset full ...")
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
    try:
        reference = load_reference("degradation")
    except FileNotFoundError as exc:
        err(f"error: {exc}")
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
                          checkpoint_dir=checkpoints, resume=args.resume, **reference.hooks(config))
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
