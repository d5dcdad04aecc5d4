"""The CIFAR-10 networks of He et al. (2016), "Deep Residual Learning for Image Recognition", section 4.2.

A network of depth ``6n + 2``::

    conv1 3x3, 16  ->  BN  ->  ReLU                       32x32 maps, 16 filters
    layer1: n blocks, 16 filters                          32x32
    layer2: n blocks, 32 filters (the first has stride 2)  16x16
    layer3: n blocks, 64 filters (the first has stride 2)   8x8
    global average pooling  ->  fc (64 -> 10)

Each block holds two 3x3 convolutions, so the depth counts conv1, the ``6n`` convolutions of the
blocks and fc. Where a block halves the map and doubles the filters, its shortcut is the paper's
option A: keep every other pixel (``x[:, :, ::2, ::2]``) and pad the new channels with zeros; it has
no parameters, so a plain network and its residual twin have exactly the same parameters (ResNet-20:
269,722; ResNet-56: 853,018).

* ``residual=True`` (post-activation, the 2016 paper): ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.
* ``residual=False``: the *plain* twin, the same layers without the addition.
* ``preact=True``: the pre-activation block of He et al. (2016b), "Identity Mappings in Deep Residual
  Networks": ``conv2(relu(bn2(conv1(relu(bn1(x)))))) + shortcut(x)``, nothing after the addition,
  and one more BN + ReLU before the pooling.

Notebook 04 has students write these blocks themselves; this is the package's own copy, so that
notebook 05 does not depend on a student's answers. All tensors are float (N, C, H, W).
"""

from __future__ import annotations

import re

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["BasicBlock", "CifarResNet", "PreActBlock", "ShortcutA", "build", "cifar_net", "count_parameters"]


class ShortcutA(nn.Module):
    """Option A of the paper: identity, or subsample by 2 and zero-pad the extra channels. No parameters.

    (N, C_in, H, W) -> (N, C_out, H / stride, W / stride), with channels C_in..C_out all zero.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels or stride not in (1, 2):
            raise ValueError(f"option A shortcuts only widen and subsample by 1 or 2; got {in_channels} -> "
                             f"{out_channels} channels with stride {stride}")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 2:
            x = x[:, :, ::2, ::2]
        extra = self.out_channels - self.in_channels
        if extra:
            x = F.pad(x, (0, 0, 0, 0, 0, extra))  # zeros after the existing channels
        return x

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def _norm(channels: int, batchnorm: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if batchnorm else nn.Identity()


class BasicBlock(nn.Module):
    """Post-activation block: conv-BN-ReLU-conv-BN, add the shortcut (unless plain), ReLU.

    (N, in_channels, H, W) -> (N, out_channels, H / stride, W / stride). ``batchnorm=False`` leaves the BN
    layers out (notebook 04 measures what they do for the gradient).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, *, residual: bool = True,
                 batchnorm: bool = True) -> None:
        super().__init__()
        self.residual = residual
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn1 = _norm(out_channels, batchnorm)
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.bn2 = _norm(out_channels, batchnorm)
        self.shortcut = ShortcutA(in_channels, out_channels, stride) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return F.relu(out)


class PreActBlock(nn.Module):
    """Pre-activation block (He et al. 2016b): BN-ReLU-conv-BN-ReLU-conv, add the shortcut, nothing after.

    With ``shared_preact`` the first BN-ReLU also feeds the shortcut, as the paper does for the first
    block after conv1 and for the blocks that change the shape. (N, C_in, H, W) -> (N, C_out, H/s, W/s).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, *, residual: bool = True,
                 shared_preact: bool = False) -> None:
        super().__init__()
        self.residual, self.shared_preact = residual, shared_preact
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.shortcut = ShortcutA(in_channels, out_channels, stride) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(pre))))
        if self.shortcut is not None:
            out = out + self.shortcut(pre if self.shared_preact else x)
        return out


class CifarResNet(nn.Module):
    """The 6n+2-layer CIFAR network; see the module docstring. (N, 3, 32, 32) float -> (N, num_classes) logits."""

    def __init__(self, n: int, *, residual: bool = True, preact: bool = False, num_classes: int = 10,
                 batchnorm: bool = True) -> None:
        super().__init__()
        if preact and not batchnorm:
            raise ValueError("a pre-activation network without batch norm is not one of these networks")
        self.depth, self.residual, self.preact = 6 * n + 2, residual, preact
        self.conv1 = _conv3x3(3, 16)
        # Pre-activation: the first block's BN-ReLU follows conv1, so no BN of its own here.
        self.bn1 = None if preact else _norm(16, batchnorm)
        widths, channels = (16, 32, 64), 16
        for stage, width in enumerate(widths, start=1):
            blocks = []
            for i in range(n):
                stride = 2 if (stage > 1 and i == 0) else 1
                if preact:
                    shared = (stage == 1 and i == 0) or stride != 1
                    blocks.append(PreActBlock(channels, width, stride, residual=residual, shared_preact=shared))
                else:
                    blocks.append(BasicBlock(channels, width, stride, residual=residual, batchnorm=batchnorm))
                channels = width
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
        self.bn_final = nn.BatchNorm2d(channels) if preact else None
        self.fc = nn.Linear(channels, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal convolutions (fan_out, ReLU), BN weight 1 and bias 0, PyTorch's default for fc."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
                m.reset_running_stats()
            elif isinstance(m, nn.Linear):
                m.reset_parameters()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 32, 32) -> (N, 64): everything before fc."""
        x = self.conv1(x)
        if self.bn1 is not None:
            x = F.relu(self.bn1(x))
        x = self.layer3(self.layer2(self.layer1(x)))
        if self.bn_final is not None:
            x = F.relu(self.bn_final(x))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))

    def extra_repr(self) -> str:
        kind = ("pre-activation " if self.preact else "") + ("residual" if self.residual else "plain")
        return f"depth={self.depth}, {kind}"


def cifar_net(depth: int, *, residual: bool = True, preact: bool = False, num_classes: int = 10,
              batchnorm: bool = True) -> CifarResNet:
    """The paper's CIFAR-10 network of ``depth = 6n + 2`` layers (20, 32, 44, 56, 110, ...).

    ``residual=False`` gives the plain twin; ``preact=True`` the pre-activation variant; ``batchnorm=False``
    the same network without its BN layers (for the gradient measurements of notebook 04).
    """
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth must be 6n + 2 for a whole n >= 1 (20, 32, 44, 56, 110, ...); got {depth!r}")
    return CifarResNet((depth - 2) // 6, residual=residual, preact=preact, num_classes=num_classes,
                       batchnorm=batchnorm)


_NAME = re.compile(r"(plain|resnet|preresnet|preplain)(\d+)")


def build(name: str, num_classes: int = 10) -> CifarResNet:
    """A network by name: ``plain20``, ``resnet56``, ``preresnet110`` (``preplain56``: pre-activation, no shortcuts)."""
    match = _NAME.fullmatch(name.strip().lower().replace("-", "").replace("_", ""))
    if not match:
        raise ValueError(f"unknown model {name!r}: use plain<depth>, resnet<depth> or preresnet<depth> with "
                         "depth = 6n + 2, e.g. plain20, resnet56, preresnet110")
    kind, depth = match.group(1), int(match.group(2))
    return cifar_net(depth, residual=kind in ("resnet", "preresnet"), preact=kind.startswith("pre"),
                     num_classes=num_classes)


def count_parameters(model: nn.Module, *, trainable_only: bool = True) -> int:
    """Number of parameters (BN's weight and bias count; its running statistics do not)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
