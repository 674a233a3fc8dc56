"""UABackprop's backward passes go member by member on a deep ensemble: each pass runs through
one member's graph only, the maps equal the literal Eq. 4-10 (residual blocks whose BatchNorms
share one gradient included) and those of the all-samples-at-once order, and the user's
members are untouched, also when a backward pass raises."""

from contextlib import contextmanager

import pytest
import torch
from torch import nn

from captum_uncertainty import DeepEnsemble, SampleCallable, UncertaintyForward
from captum_uncertainty.attr.ua_backprop import UABackprop
from tests.attr.test_ua_backprop import literal_ua_backprop
from tests.helpers import assert_untouched, make_cnn, model_state

CLASSES = 4


class _CountBackward(torch.autograd.Function):
    """The identity, counting the backward passes through it (and raising at ``fail_at``)."""

    @staticmethod
    def forward(ctx, x, counter):
        ctx.counter = counter
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        ctx.counter["passes"] += 1
        ctx.counter["log"].append(ctx.counter["name"])
        if ctx.counter["passes"] == ctx.counter.get("fail_at"):
            raise RuntimeError("backward failed on purpose")
        return grad, None


class Counted(nn.Module):
    """A CNN member whose input passes through a backward-pass counter."""

    def __init__(self, seed, log=None):
        super().__init__()
        self.body = make_cnn(seed, 1, CLASSES)
        self.counter = {"passes": 0, "name": seed, "log": [] if log is None else log}

    def forward(self, x):
        return self.body(_CountBackward.apply(x, self.counter))


class Residual(nn.Module):
    """A ResNet basic block with a 1x1 downsample branch: the sum hands ONE gradient tensor to
    both branches' BatchNorms, each a FullGrad bias term."""

    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.main = nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.BatchNorm2d(6))
        self.downsample = nn.Sequential(nn.Conv2d(4, 6, 1, stride=2), nn.BatchNorm2d(6))
        self.head = nn.Linear(6, CLASSES)
        for bn in (self.stem[1], self.main[1], self.downsample[1]):  # affine with non-trivial statistics
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(bn.weight, 0.5, 1.5)
            nn.init.uniform_(bn.bias, -0.5, 0.5)
        self.double().eval()

    def forward(self, x):
        h = self.stem(x)
        out = torch.relu(self.main(h) + self.downsample(h))
        return self.head(out.mean((2, 3)))


@pytest.fixture
def x():
    torch.manual_seed(5)
    return torch.rand(3, 1, 8, 8, dtype=torch.float64) * 2


@pytest.mark.parametrize("path", ["grad", "inputgrad", "fullgrad"])
def test_each_backward_pass_runs_through_one_member_only(x, path):
    log = []
    members = [Counted(seed, log) for seed in range(3)]
    UABackprop(UncertaintyForward(members)).attribute(x, path=path)
    # member by member, C passes each and none through the others (tied to one input leaf, a
    # pass from one member's logits would run through all: S * C each)
    assert log == [0] * CLASSES + [1] * CLASSES + [2] * CLASSES


@pytest.mark.parametrize("postprocess", ["raw", "reference"])
@pytest.mark.parametrize("measure", ["total", "epistemic"])
def test_fullgrad_on_residual_blocks_equals_the_literal_reference(x, postprocess, measure):
    members = [Residual(seed) for seed in range(3)]
    uf = UncertaintyForward(members, measure=measure)
    maps = UABackprop(uf).attribute(x, path="fullgrad", fullgrad_postprocess=postprocess, tau1=0.2, tau2=0.5)
    literal_path = "fullgrad-raw" if postprocess == "raw" else "fullgrad"
    for n in range(x.shape[0]):
        expected = literal_ua_backprop(members, x[n], measure, literal_path, tau1=0.2, tau2=0.5)
        assert torch.allclose(maps[n, 0], expected, rtol=1e-5, atol=1e-9)


def _as_callable(members):
    """The same members behind a posterior that is not a DeepEnsemble (all samples at once)."""
    return SampleCallable(lambda x: [m(x) for m in members], layout="list")


@pytest.mark.parametrize("path", ["grad", "inputgrad"])
@pytest.mark.parametrize("declared", ["logits", "binary", "probabilities"])
def test_member_order_equals_the_all_samples_order(x, path, declared):
    classes = 1 if declared == "binary" else CLASSES
    members = [make_cnn(seed, 1, classes) for seed in range(3)]
    if declared == "probabilities":
        members = [nn.Sequential(m, nn.Softmax(dim=-1)) for m in members]
    options = {"binary": declared == "binary", "probabilities": declared == "probabilities"}
    per_member = UABackprop(UncertaintyForward(members, **options)).attribute(x, path=path, decompose=True)
    at_once = UABackprop(UncertaintyForward(_as_callable(members), **options)).attribute(x, path=path, decompose=True)
    for mine, theirs in zip(per_member, at_once):
        assert torch.allclose(mine, theirs, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("path", ["grad", "fullgrad"])
def test_members_untouched_when_a_backward_pass_raises(x, path):
    members = [Counted(seed) for seed in range(3)]
    explainer = UABackprop(UncertaintyForward(members))
    explainer.attribute(x, path=path)  # the first call also checks the posterior
    before = model_state(members)
    for member in members:
        member.counter.update(passes=0)
    members[1].counter["fail_at"] = 2
    with pytest.raises(RuntimeError, match="on purpose"):
        explainer.attribute(x, path=path)
    assert_untouched(before, members)
    members[1].counter.pop("fail_at")
    assert torch.isfinite(explainer.attribute(x, path=path)).all()  # hooks gone: runs again


class _UnmarkedLastMember(DeepEnsemble):
    """A DeepEnsemble whose last member runs with ``current_sample`` None: FullGrad cannot tell
    which sample that member's layers belong to."""

    @contextmanager
    def running(self, sample):
        with super().running(None if sample == len(self.members) - 1 else sample):
            yield


def test_fullgrad_refuses_a_member_run_outside_its_sample(x):
    members = [make_cnn(seed, 1, CLASSES).double() for seed in range(3)]
    explainer = UABackprop(UncertaintyForward(_UnmarkedLastMember(members)))
    with pytest.raises(ValueError, match="rows where"):  # the maps would lack its terms
        explainer.attribute(x, path="fullgrad")
    assert torch.isfinite(explainer.attribute(x, path="grad")).all()  # no layer records: unaffected
