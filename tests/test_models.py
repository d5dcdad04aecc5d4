"""goingdeeper.models: the paper's CIFAR-10 networks (parameter counts, shapes, option-A shortcuts, plain twins)."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from goingdeeper.models import BasicBlock, PreActBlock, ShortcutA, build, cifar_net, count_parameters


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("depth, count", [(20, 269_722), (32, 464_154), (44, 658_586), (56, 853_018),
                                          (110, 1_727_962)])
def test_parameter_counts_are_the_papers(depth, count):
    for name in (f"resnet{depth}", f"plain{depth}", f"preresnet{depth}"):
        assert count_parameters(build(name)) == count, name


def test_layers_have_the_names_a_reader_expects():
    net = build("resnet20")
    assert [name for name, _ in net.named_children()] == ["conv1", "bn1", "layer1", "layer2", "layer3", "fc"]
    assert all(len(getattr(net, f"layer{k}")) == 3 for k in (1, 2, 3))
    block = net.layer2[0]
    assert isinstance(block, BasicBlock) and block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)
    assert [name for name, _ in block.named_children()] == ["conv1", "bn1", "conv2", "bn2", "shortcut"]
    assert build("plain20").layer2[0].shortcut is None
    assert isinstance(build("preresnet20").layer1[0], PreActBlock)
    assert build("resnet56").depth == 56 and len(build("resnet56").layer3) == 9


def test_output_shapes_and_feature_map_sizes():
    net = build("resnet20").eval()
    x = torch.randn(4, 3, 32, 32)
    sizes = {}
    for k in (1, 2, 3):
        getattr(net, f"layer{k}").register_forward_hook(lambda m, i, o, k=k: sizes.__setitem__(k, tuple(o.shape)))
    assert net(x).shape == (4, 10)
    assert sizes == {1: (4, 16, 32, 32), 2: (4, 32, 16, 16), 3: (4, 64, 8, 8)}
    assert build("preresnet32", num_classes=100)(x).shape == (4, 100)


def test_option_a_shortcut_subsamples_and_pads_zeros():
    x = torch.randn(2, 16, 32, 32)
    out = ShortcutA(16, 32, 2)(x)
    assert out.shape == (2, 32, 16, 16)
    assert torch.equal(out[:, :16], x[:, :, ::2, ::2]) and not out[:, 16:].any()
    assert torch.equal(ShortcutA(16, 16, 1)(x), x)
    assert not list(ShortcutA(16, 32, 2).parameters())


def test_residual_net_with_zero_last_bn_is_a_function_of_its_shortcut_path():
    torch.manual_seed(0)
    net = build("resnet20").eval()
    with torch.no_grad():
        for block in [b for k in (1, 2, 3) for b in getattr(net, f"layer{k}")]:
            block.bn2.weight.zero_()
            block.bn2.bias.zero_()
    x = torch.randn(3, 3, 32, 32)
    h = F.relu(net.bn1(net.conv1(x)))
    for k in (1, 2, 3):
        for block in getattr(net, f"layer{k}"):
            h = F.relu(block.shortcut(h))  # every residual branch is now zero
    expected = net.fc(h.mean(dim=(2, 3)))
    torch.testing.assert_close(net(x), expected)


def test_plain_twin_has_the_same_layers_and_no_addition():
    torch.manual_seed(0)
    resnet, plain = build("resnet20").eval(), build("plain20").eval()
    plain.load_state_dict(resnet.state_dict())  # the same parameter names and shapes
    x = torch.randn(3, 3, 32, 32)
    assert not torch.allclose(resnet(x), plain(x))
    with torch.no_grad():
        plain.layer3[-1].bn2.weight.zero_()
        plain.layer3[-1].bn2.bias.zero_()
    # Without an addition, the last block outputs relu(0) = 0: only fc's bias is left.
    torch.testing.assert_close(plain(x), plain.fc.bias.expand(3, 10))


def test_preact_block_has_nothing_after_the_addition():
    torch.manual_seed(0)
    block = PreActBlock(16, 16).eval()
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        block.conv2.weight.zero_()
    torch.testing.assert_close(block(x), x)  # the identity passes through untouched, negatives included


def test_initialisation():
    net = build("resnet20")
    w = net.layer3[0].conv2.weight
    assert abs(float(w.detach().std()) - (2 / (64 * 9)) ** 0.5) < 0.01  # kaiming normal, fan_out
    assert torch.equal(net.layer1[0].bn1.weight, torch.ones(16)) and not net.layer1[0].bn1.bias.any()


def test_channels_last_gives_the_same_output():
    torch.manual_seed(0)
    net = build("resnet20").eval()
    x = torch.randn(2, 3, 32, 32)
    expected = net(x)
    net = net.to(memory_format=torch.channels_last)
    torch.testing.assert_close(net(x.contiguous(memory_format=torch.channels_last)), expected, atol=1e-4, rtol=1e-4)


def test_bad_names_and_depths_say_what_works():
    with pytest.raises(ValueError, match="6n \\+ 2"):
        cifar_net(21)
    with pytest.raises(ValueError, match="plain20, resnet56, preresnet110"):
        build("vgg16")
    assert build("ResNet-56").depth == 56
