"""Notebook 04's machinery (goingdeeper.resnet, goingdeeper.models) and its reference, on their own."""

from __future__ import annotations

import functools
import json
import re
import sys

import numpy as np
import pytest
import torch

from goingdeeper import models, resnet
from goingdeeper.checks import CheckFailed
from instructor.scratch import ROOT

sys.path.insert(0, str(ROOT / "autograder" / "reference"))
import resnet as ref  # noqa: E402  (the course's reference, autograder/reference/resnet.py)

torch.set_num_threads(1)


INPUT_KEY = re.compile(r"[a-z0-9_]+\|(x|dy|state\|[A-Za-z0-9_.]+)")


def test_the_visible_cases_hold_inputs_only_and_are_what_the_reference_draws_today():
    """goingdeeper/data/resnet_cases.npz holds inputs (weights, x, dy or labels) and builders, no expected values,
    and rebuilt from the reference it is the same. Rewrite it with: python autograder/reference/resnet.py"""
    with np.load(resnet.CASES_PATH, allow_pickle=False) as data:
        assert not [k for k in data.files if k != "meta" and not INPUT_KEY.fullmatch(k)]
        meta = json.loads(bytes(data["meta"]).decode())
    assert all(set(m) == {"name", "kind", "seed", "kwargs", "reference", "variants", "state"} for m in meta.values())
    stored, fresh = resnet.load_cases(), ref.build_cases()
    assert set(stored) == set(fresh)
    for key, case in fresh.items():
        old = stored[key]
        assert [old.name, old.kind, old.seed, old.kwargs, old.reference, old.variants] == json.loads(json.dumps(
            (case.name, case.kind, case.seed, case.kwargs, case.reference, case.variants))), key
        assert list(old.state) == list(case.state), key
        for part, a, b in [("x", old.x, case.x), ("dy", old.dy, case.dy),
                           *[(name, old.state[name], case.state[name]) for name in case.state]]:
            assert a.dtype == b.dtype and a.shape == b.shape, (key, part)
            if a.is_floating_point():  # torch.randn's scalar kernel (ATEN_CPU_CAPABILITY=default) and AVX2 kernel
                # differ by up to 6e-7 of an array's scale; the checks use the stored inputs, so that does not matter
                assert float((a - b).abs().max()) <= 1e-5 * float(b.abs().max()), (key, part)
            else:  # labels, num_batches_tracked
                assert torch.equal(a, b), (key, part)


def test_the_hidden_cases_are_the_notebooks():
    """The reference's HIDDEN lists are the configurations notebook 04's hidden tests write."""
    notebook = json.loads((ROOT / "solutions" / "04_resnet" / "04_resnet.ipynb").read_text())
    cells = {c["metadata"].get("nbgrader", {}).get("grade_id"): "".join(c["source"]) for c in notebook["cells"]}
    for grade_id, text in ref.HIDDEN.items():
        assert text in cells[grade_id].split("### BEGIN HIDDEN TESTS")[1], grade_id


@pytest.mark.parametrize("group", ["visible", "hidden"])
def test_every_case_is_well_conditioned(group):
    """On this machine the reference's own float32 results are within a MARGIN-th of the tolerance of its float64
    results (what the checks compare with), for every case the visible and the hidden tests use."""
    cases = resnet.load_cases() if group == "visible" else ref.hidden_cases()
    for key, case in cases.items():
        ratios = resnet.conditioning(case, ref)
        assert max(ratios.values()) <= 1 / resnet.MARGIN, (key, ratios)


def test_without_the_reference_the_checks_test_what_they_can_and_say_so(monkeypatch, capsys):
    """The student edition ships no autograder/: names, shapes, the gradient's path and the zero-gamma property are
    still checked, and a line says that the values are compared when the notebook is graded."""
    monkeypatch.setattr(resnet, "reference_or_none", lambda: None)
    cases = resnet.load_cases()
    assert resnet.expected(cases["basic_identity"]) is None
    resnet.check_block(ref.BasicBlock, cases["basic_identity"], "BasicBlock(16, 16)", resnet.HINTS)
    resnet.check_network(lambda: ref.cifar_resnet(8), cases["cifar8"], "cifar_resnet(8)")
    resnet.check_zero_gamma(ref.BasicBlock, cases["basic_b"], "bn2", "BasicBlock(16, 32, 2)")
    resnet.check_grad_norms(ref.block_input_grad_norms, cases["grads_resnet8"], "resnet8")
    out = capsys.readouterr().out
    assert out.count("compared with the course's reference when the notebook is graded") == 3
    with pytest.raises(CheckFailed, match="only where the shape changes"):
        resnet.check_block(lambda **kw: ref.BasicBlock(**kw, project_always=True), cases["basic_identity"], "wrong",
                           resnet.HINTS)
    with pytest.raises(CheckFailed, match="should be"):
        resnet.check_block(lambda **kw: ref.ShortcutA(**kw, stride_ignored=True), cases["shortcut_a"], "wrong")
    with pytest.raises(CheckFailed, match="ReLU\\(shortcut\\(x\\)\\)"):
        resnet.check_zero_gamma(lambda **kw: ref.BasicBlock(**{**kw, "option": None}), cases["basic_identity"], "bn2",
                                "wrong")  # the plain twin: no addition, so it returns 0, not ReLU(x)


def test_the_reference_reproduces_the_papers_numbers():
    want = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808}
    for depth, count in want.items():
        with torch.device("meta"):
            assert resnet.count_parameters(ref.make_resnet(depth)) == count
    for depth, count in {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962}.items():
        assert resnet.count_parameters(ref.cifar_resnet(depth)) == count
        assert resnet.count_parameters(models.cifar_net(depth)) == count == resnet.count_parameters(
            models.cifar_net(depth, residual=False))
    assert ref.conv_multiplies(28, 28, 192, 32, 5, 1, 2) == 120_422_400
    resnet.check_conv_cost(ref.conv_output_size, ref.conv_multiplies, [(28, 28, 192, 32, 5, 1, 2), (9, 6, 2, 3, 3, 2, 0)])
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
    blocks = [(d - 2) // 2 for d in depths]
    rate = {k: float(np.exp(np.polyfit(blocks, np.log(v), 1)[0])) for k, v in ratios.items()}
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
    ax = resnet.plot_grad_norms([8, 20], {"x": np.array([1.0, 2.0])})  # 3 and 9 blocks: 2 = rate ** 6
    assert "1.122 per block" in ax.get_legend().get_texts()[0].get_text()


def test_the_hidden_gradient_correlation_cases_are_well_conditioned_and_tell_the_mistakes_apart():
    """check_gradient_correlation_on's tolerance (1e-4): the float32 answer is far inside it, the usual mistakes
    far outside, on the hidden tests' networks."""
    import copy

    for depth, residual, seed in [(8, False, 1201), (8, True, 1202), (14, True, 1203)]:
        torch.manual_seed(seed)
        net = models.cifar_net(depth, residual=residual).train()
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(8, 3, 32, 32, generator=g)
        x_near = x + 0.1 * torch.randn(x.shape, generator=g)
        y = torch.randint(0, 10, (8,), generator=g)

        def run(dtype, **switch):
            return ref.gradient_correlation(copy.deepcopy(net).to(dtype), x.to(dtype), x_near.to(dtype), y, **switch)

        want = run(torch.float64)
        assert abs(run(torch.float32) - want) < 1e-5, (depth, residual)
        assert abs(run(torch.float64, one_pass=True) - want) > 3e-4, (depth, residual)
        resnet.check_gradient_correlation_on(ref.gradient_correlation, ref.gradient_correlation, depth, residual, seed)
    resnet.check_gradient_correlation(ref.gradient_correlation)
    # One cosine over the whole batch can land within the tolerance here (5.6e-5 off on ResNet-8): the visible
    # check's closed-form cases catch it.
    with pytest.raises(CheckFailed, match="whole batch"):
        resnet.check_gradient_correlation(functools.partial(ref.gradient_correlation, whole_batch=True))


def test_zero_gamma_starts_a_deep_resnet_at_a_uniform_guess_and_shattering_shows_with_depth():
    torch.manual_seed(0)
    net = models.cifar_net(20)
    for block in resnet._blocks_of(net):
        torch.nn.init.zeros_(block.bn2.weight)
    x, y = resnet.synthetic_images(8, seed=1)
    with torch.no_grad():
        logits = net.train()(x)
    # Every block is the identity (or its option A shortcut): the logits are the classifier's on pooled features.
    losses = resnet.first_steps(net, steps=3, batch=8)
    assert len(losses) == 3 and abs(losses[0] - float(torch.nn.functional.cross_entropy(logits, y))) < 0.5
    g = torch.Generator().manual_seed(5)
    x = torch.randn(8, 3, 32, 32, generator=g)
    x_near = x + 0.01 * torch.randn(x.shape, generator=g)
    y = torch.randint(0, 10, (8,), generator=g)
    corr = {}
    for residual in (False, True):
        torch.manual_seed(0)
        corr[residual] = ref.gradient_correlation(models.cifar_net(32, residual=residual).train(), x, x_near, y)
    assert corr[True] > 0.6 and corr[False] < 0.3, corr  # plain-32 shattered, ResNet-32 not
