"""Eval-time constants: built once per weight version, dropped on mode changes and moves, and a
BatchNorm folded into the layer before it computes what the two layers compute."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from condsearch.blocks._eval_constants import CachesEvalConstants, eval_constants, fold_batchnorm


class ConvNorm(CachesEvalConstants):
    """Conv + BatchNorm that runs the folded conv in eval mode and counts how often it folds."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.norm = nn.BatchNorm2d(3)
        self.builds = 0
        self.train()
        with torch.no_grad():  # running statistics away from (0, 1)
            self(torch.randn(16, 2, 5, 5) * 3 + 1)
        self.eval()

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        def build() -> tuple[torch.Tensor, torch.Tensor]:
            self.builds += 1
            return fold_batchnorm(self.conv, self.norm)

        return eval_constants(self, (self.conv, self.norm), build)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.plain(x)
        weight, bias = self.folded()
        return F.conv2d(x, weight, bias, padding=1)

    def plain(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


def images(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(4, 2, 5, 5, generator=torch.Generator().manual_seed(1), dtype=dtype)


def test_constants_are_built_once_per_weight_version():
    block, x = ConvNorm(), images()
    with torch.no_grad():
        block(x)
        block(x)
    assert block.builds == 1


def test_constants_are_rebuilt_after_an_optimizer_step():
    block, x = ConvNorm(), images()
    with torch.no_grad():
        before = block(x)
    for p in block.parameters():
        p.grad = torch.ones_like(p)
    torch.optim.SGD(block.parameters(), lr=0.1).step()
    with torch.no_grad():
        after = block(x)
        torch.testing.assert_close(after, block.plain(x))
    assert block.builds == 2 and not torch.allclose(before, after)


def test_constants_are_rebuilt_after_load_state_dict():
    block, other, x = ConvNorm(seed=0), ConvNorm(seed=1), images()
    with torch.no_grad():
        block(x)
        block.load_state_dict(other.state_dict())
        torch.testing.assert_close(block(x), other(x))
    assert block.builds == 2


def test_setting_the_mode_drops_the_constants_so_edits_through_data_show():
    block, x = ConvNorm(), images()
    with torch.no_grad():
        before = block(x)
        block.norm.running_var.data.mul_(4.0)  # bumps no version
        torch.testing.assert_close(block(x), before)
        block.train()
        block.folded()
        assert block.builds == 2  # train() dropped them
        block.eval()
        torch.testing.assert_close(block(x), block.plain(x))
    assert block.builds == 3 and not torch.allclose(block.plain(x), before)


def test_a_cast_drops_the_constants():
    block, x = ConvNorm(), images(torch.float64)
    with torch.no_grad():
        block(x.float())
        block.to(torch.float64)
        out = block(x)
        assert out.dtype == torch.float64
        torch.testing.assert_close(out, block.plain(x))
    assert block.builds == 2


def test_extra_values_are_part_of_the_key():
    owner = CachesEvalConstants()
    built = []

    def constant(ratio: float) -> float:
        def build() -> float:
            built.append(ratio)
            return 2 * ratio

        return eval_constants(owner, (), build, extra=(ratio,))

    assert [constant(0.5), constant(0.5), constant(0.25), constant(0.5)] == [1.0, 1.0, 0.5, 1.0]
    assert built == [0.5, 0.25, 0.5]


def test_constants_are_plain_tensors_usable_outside_inference_mode():
    block = ConvNorm()
    with torch.inference_mode():
        weight, bias = block.folded()
    assert type(weight) is torch.Tensor and not weight.requires_grad and not weight.is_inference()
    assert type(bias) is torch.Tensor and not bias.requires_grad and not bias.is_inference()


class Record(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("uncounted", [False, True])
def test_uncounted_constants_are_hidden_from_dispatch_modes(uncounted):
    owner, w = CachesEvalConstants(), torch.randn(3, 3)
    with Record() as seen:
        eval_constants(owner, (), lambda: w @ w, uncounted=uncounted)
    assert ("mm.default" in seen.ops) is not uncounted


FOLDS = {
    "linear": (nn.Linear(5, 4), nn.BatchNorm1d(4), (6, 5)),
    "linear, no biases or affine": (nn.Linear(5, 4, bias=False), nn.BatchNorm1d(4, affine=False),
                                    (6, 5)),
    "conv2d": (nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), (3, 2, 6, 6)),
    "conv2d, no biases or affine": (nn.Conv2d(2, 4, 3, bias=False),
                                    nn.BatchNorm2d(4, affine=False), (3, 2, 6, 6)),
    "conv1d": (nn.Conv1d(2, 4, 3), nn.BatchNorm1d(4), (3, 2, 7)),
    "conv transpose": (nn.ConvTranspose2d(2, 4, 3, stride=2), nn.BatchNorm2d(4), (3, 2, 4, 4)),
}


@pytest.mark.parametrize("name", FOLDS)
def test_a_folded_batchnorm_computes_what_the_layer_and_the_batchnorm_compute(name):
    layer, norm, shape = FOLDS[name]
    torch.manual_seed(2)
    with torch.no_grad():
        norm.running_mean.normal_()
        norm.running_var.uniform_(0.2, 3.0)
        if norm.affine:
            norm.weight.normal_()
            norm.bias.normal_()
    norm.eval()
    folded = copy.deepcopy(layer)
    weight, bias = fold_batchnorm(layer, norm)
    folded.weight, folded.bias = nn.Parameter(weight), nn.Parameter(bias)
    x = torch.randn(shape)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), norm(layer(x)))


def test_a_batchnorm_without_running_statistics_does_not_fold():
    with pytest.raises(ValueError, match="running statistics"):
        fold_batchnorm(nn.Linear(3, 2), nn.BatchNorm1d(2, track_running_stats=False))
