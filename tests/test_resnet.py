"""Notebook 04's machinery (goingdeeper.resnet, goingdeeper.models) and its reference, on their own."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from goingdeeper import models, resnet
from goingdeeper.checks import CheckFailed
from goingdeeper.scratch import ROOT

sys.path.insert(0, str(ROOT / "autograder" / "reference"))
import resnet as ref  # noqa: E402  (the course's reference, autograder/reference/resnet.py)

torch.set_num_threads(1)


def test_the_visible_cases_are_what_the_reference_computes_today():
    """goingdeeper/data/resnet_cases.npz is not stale: rebuilt from the reference, every array is the same."""
    stored, fresh = resnet.load_cases(), ref.build_cases()
    assert set(stored) == set(fresh)
    for key, case in fresh.items():
        old = stored[key]
        assert old.kwargs == case.kwargs and set(old.state) == set(case.state) and set(old.variants) == set(case.variants)
        for part in ("x", "dy", "out", "dx", "out_eval"):
            assert torch.allclose(getattr(old, part), getattr(case, part), rtol=1e-5, atol=1e-6), (key, part)
        for name in case.state:
            assert torch.equal(old.state[name], case.state[name]), (key, name)
    # Rewrite with: python autograder/reference/resnet.py


def test_the_reference_reproduces_the_papers_numbers():
    want = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808}
    for depth, count in want.items():
        with torch.device("meta"):
            assert resnet.count_parameters(ref.make_resnet(depth)) == count
    for depth, count in {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962}.items():
        assert resnet.count_parameters(ref.cifar_resnet(depth)) == count
        assert resnet.count_parameters(models.cifar_net(depth)) == count == resnet.count_parameters(
            models.cifar_net(depth, residual=False))
    assert ref.conv_multiplies(28, 28, 192, 32, 5, 1, 2) == 120_422_400 == resnet.torch_conv_cost(28, 28, 192, 32, 5, 1, 2)[1]
    macs = {(50, False): 4_089_184_256, (50, True): 3_857_973_248, (18, False): 1_814_073_344}
    for (depth, paper), count in macs.items():
        kwargs = {"stride_in_1x1": True} if paper else {}
        assert resnet.count_macs(ref.make_resnet(depth, **kwargs), ref.conv_multiplies) == count
    assert resnet.stage_shapes(ref.make_resnet(50)) == resnet.IMAGENET_SHAPES[50]


def test_the_package_networks_are_the_reference_networks():
    """goingdeeper.models.cifar_net (what notebook 05 trains) computes what notebook 04's answers compute."""
    for residual in (True, False):
        mine, theirs = models.cifar_net(14, residual=residual), ref.cifar_resnet(14, residual)
        theirs.load_state_dict(mine.state_dict())
        x = torch.randn(2, 3, 32, 32)
        mine.train(), theirs.train()
        assert torch.allclose(mine(x), theirs(x), atol=1e-5)
    plain = models.cifar_net(8, batchnorm=False)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())


def test_check_block_names_the_mistake():
    case = resnet.load_cases()["basic_identity"]
    resnet.check_block(ref.BasicBlock, case, "reference")
    with pytest.raises(CheckFailed, match="before the addition"):
        resnet.check_block(lambda **kw: ref.BasicBlock(**kw, relu_before_add=True), case, "wrong", resnet.HINTS)
    with pytest.raises(CheckFailed, match="only where the shape changes"):
        resnet.check_block(lambda **kw: ref.BasicBlock(**kw, project_always=True), case, "wrong", resnet.HINTS)
    projection = resnet.load_cases()["basic_b"]
    with pytest.raises(CheckFailed, match="same shape at the addition"):
        resnet.check_block(lambda **kw: ref.BasicBlock(**kw, shortcut_stride=1), projection, "wrong", resnet.HINTS)
    with pytest.raises(CheckFailed, match="Expand only at the end"):
        resnet.check_block(lambda **kw: ref.Bottleneck(**kw, expand_twice=True), resnet.load_cases()["bottleneck_identity"],
                           "wrong", resnet.HINTS)


def test_gradient_norm_checks_catch_shifted_summed_and_leaky_measurements():
    case = resnet.load_cases()["grads_resnet8"]
    resnet.check_grad_norms(ref.block_input_grad_norms, case, "resnet8")

    def summed(model, blocks, x, y):
        return [v * len(x) for v in ref.block_input_grad_norms(model, blocks, x, y)]

    with pytest.raises(CheckFailed, match="times too large"):
        resnet.check_grad_norms(summed, case, "resnet8")

    def leaky(model, blocks, x, y):
        blocks[0].register_forward_pre_hook(lambda m, a: None)
        return ref.block_input_grad_norms(model, blocks, x, y)

    with pytest.raises(CheckFailed, match="hook"):
        resnet.check_grad_norms(leaky, case, "resnet8")


def test_identity_experiment_and_gradient_flow_show_the_lectures_points():
    width = 8
    plain = torch.nn.Sequential(*[resnet.identity_branch(width, seed=i) for i in range(12)])
    residual = torch.nn.Sequential(*[ref.Residual(resnet.identity_branch(width, seed=i)) for i in range(12)])
    plain_loss = resnet.fit_identity(plain, width=width, steps=60)[-1]
    residual_loss = resnet.fit_identity(residual, width=width, steps=60)[-1]
    assert residual_loss < 0.2 < 0.9 < plain_loss  # the deep plain stack does not learn the identity
    assert max(resnet.branch_ratios(residual, torch.randn(64, width))) < 1.0
    depths = [8, 20, 32]
    ratios = {(r, b): resnet.first_to_last_ratios(ref.block_input_grad_norms,
                                                  lambda d, r=r, b=b: models.cifar_net(d, residual=r, batchnorm=b),
                                                  depths, batch=4)
              for r in (True, False) for b in (True, False)}
    rate = {k: resnet.fit_rate(depths, v)[1] for k, v in ratios.items()}
    assert rate[(False, False)] < 1.0  # plain without BN: the gradient vanishes with depth
    assert rate[(True, True)] < rate[(False, True)] and rate[(True, True)] < rate[(True, False)]
    assert rate[(False, True)] > 1.0  # plain with BN: it does not vanish


def test_figures_draw():
    import matplotlib

    matplotlib.use("Agg")
    fig = resnet.draw_blocks()
    assert len(fig.axes) == 5 and {ax.get_title() for ax in fig.axes} >= {"basic block", "bottleneck"}
    fig = resnet.plot_identity({"a": [1.0, 0.5]}, before=[0.3, 0.2], after=[0.1, 0.1])
    assert len(fig.axes) == 2
    ax = resnet.plot_grad_norms([8, 20], {"x": np.array([1.0, 2.0])}, rates={"x": 1.1})
    assert "1.100 per block" in ax.get_legend().get_texts()[0].get_text()
