"""Reference solutions for notebook 05 (training ResNets on CIFAR-10, the degradation problem).

goingdeeper.degradation's checks compute what they compare with themselves (one SGD step done by the check,
the set of all crops, ...); these are the notebook's answers, kept for the course's tests and for instructors.
The package has no training pieces of its own: the instructor's full-length run (``python -m
instructor.train_full``) trains with the ones below (:func:`hooks`), as a student's notebook trains with theirs.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from goingdeeper import cifar


def channel_stats(x, chunk=5000):
    """Per-channel mean and standard deviation of uint8 images (N, C, H, W), on the 0..1 scale."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros(x.shape[1], dtype=torch.float64)
    for part in x.split(chunk):
        v = part.to(torch.float64) / 255
        total += v.sum(dim=(0, 2, 3))
        squares += (v * v).sum(dim=(0, 2, 3))
    n = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / n
    std = (squares / n - mean ** 2).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def augment(x, generator=None, pad=4):
    """Pad with `pad` zeros, take a random crop of the original size, flip left-right with probability 1/2."""
    n, c, h, w = x.shape
    offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=generator).to(x.device)
    flips = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device).expand(n, w)
    cols = torch.where(flips[:, None], cols.flip(1), cols) + offsets[1, :, None]
    index = (rows[:, :, None] * (w + 2 * pad) + cols[:, None, :]).reshape(n, 1, h * w).expand(n, c, h * w)
    return padded.reshape(n, c, -1).gather(2, index).reshape(n, c, h, w)


def train_step(model, optimizer, x, y):
    """One SGD step on a batch. Returns (loss: float, n_wrong: int)."""
    loss, wrong = train_step_on_device(model, optimizer, x, y)
    return loss.item(), int(wrong)


def evaluate(model, x, y, batch_size=1000):
    """Error rate (0..1) of model on uint8 images x (N, 3, 32, 32) with labels y (N,)."""
    return evaluate_on_device(model, x, y, batch_size)


def lr_at(iteration, total, base_lr, warmup=False):
    """The paper's step schedule for a run of `total` iterations."""
    if warmup:
        return base_lr / 10
    if iteration < round(0.5 * total):
        return base_lr
    if iteration < round(0.75 * total):
        return base_lr / 10
    return base_lr / 100


def conv_grad_norms(model):
    """{name: ||dL/dW||} for every convolution weight of model, in model order."""
    return {name: float(p.grad.norm()) for name, p in model.named_parameters() if p.ndim == 4}


def train_loop(model, optimizer, data, epochs, batch_size, base_lr, generator, *, augment, train_step, lr_at,
               evaluate):
    """Notebook 05's own loop: one record per epoch (epoch, train_loss, train_error, test_error, lr)."""
    n = len(data.train_y)
    batches = -(-n // batch_size)
    total = epochs * batches
    iteration, records = 0, []
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(n, generator=generator)
        losses, wrong = [], 0
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            x = cifar.normalize(augment(data.train_x[idx], generator))
            lr = lr_at(iteration, total, base_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss, n_wrong = train_step(model, optimizer, x, data.train_y[idx])
            losses.append(loss)
            wrong += n_wrong
            iteration += 1
        records.append({"epoch": epoch, "train_loss": sum(losses) / len(losses), "train_error": wrong / n,
                        "test_error": evaluate(model, data.test_x, data.test_y), "lr": lr})
    return records


def depth_costs(histories):
    """{"plain": points, "residual": points}: final training error of the 56-layer net minus the 20-layer's."""
    final = {h.model: 100 * h.final["train_error"] for h in histories}
    return {kind: final[f"{prefix}56"] - final[f"{prefix}20"]
            for kind, prefix in (("plain", "plain"), ("residual", "resnet"))
            if f"{prefix}20" in final and f"{prefix}56" in final}


# -- the instructor's full-length run (instructor/train_full.py): the same answers, for any Config ----------
def step_lr(iteration, total, base_lr, warmup=False, *, milestones=(0.5, 0.75), gamma=0.1):
    """lr_at with the milestones as fractions of the run (the paper: 32k and 48k of 64k are 0.5 and 0.75)."""
    if warmup:
        return base_lr * 0.1
    return base_lr * gamma ** sum(iteration >= round(m * total) for m in milestones)


def train_step_on_device(model, optimizer, x, y, *, label_smoothing=0.0):
    """train_step that returns 0-dim tensors on the device (no GPU sync per step)."""
    optimizer.zero_grad(set_to_none=True)
    logits = model(x)
    loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    loss.backward()
    optimizer.step()
    return loss.detach(), (logits.detach().argmax(1) != y).sum()


def evaluate_on_device(model, x, y, batch_size=1000):
    """evaluate that counts on the device and syncs once."""
    was_training = model.training
    model.eval()
    wrong = torch.zeros((), dtype=torch.int64, device=x.device)
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            wrong += (model(cifar.normalize(x[i:i + batch_size])).argmax(1) != y[i:i + batch_size]).sum()
    model.train(was_training)
    return wrong.item() / max(len(x), 1)


def hooks(config):
    """fit's hooks for ``config`` (a goingdeeper.train.Config): the answers above."""
    return dict(augment=augment if config.augment else None,
                train_step=functools.partial(train_step_on_device, label_smoothing=config.label_smoothing),
                evaluate=evaluate_on_device,
                lr_at=functools.partial(step_lr, milestones=config.milestones) if config.schedule == "step" else None,
                grad_norms=conv_grad_norms if config.grad_norms_at else None)
