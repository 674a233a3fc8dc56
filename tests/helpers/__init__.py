"""Shared test factories: small models, the literal FullGrad terms and the "model untouched" check.

Tests import them with ``from tests.helpers import ...`` (``pythonpath = ["."]`` in
``pyproject.toml``); ``conftest.py`` keeps only the session fixtures.
"""

import contextlib

import torch

__all__ = [
    "MeansOnlyRegressor",
    "assert_same_tensors",
    "assert_untouched",
    "default_device",
    "literal_fullgrad_terms",
    "literal_min_max",
    "make_cnn",
    "make_regressor",
    "model_state",
    "randomize_batchnorm",
    "resized",
]


# ----------------------------------------------------------------------------- shared factories
def make_cnn(seed, channels=1, classes=4, hidden=None, dtype=torch.float64):
    """A small ReLU CNN for 8x8 inputs (conv, BatchNorm with non-trivial statistics, conv,
    max-pool, linear head; ``hidden`` adds a hidden linear layer), in eval mode."""
    from torch import nn

    torch.manual_seed(seed)
    head = (
        [nn.Linear(4 * 3 * 3, hidden), nn.ReLU(), nn.Linear(hidden, classes)]
        if hidden
        else [nn.Linear(4 * 3 * 3, classes)]
    )
    net = nn.Sequential(
        nn.Conv2d(channels, 3, 3),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        *head,
    ).to(dtype)
    randomize_batchnorm(net[1])
    return net.eval()


def randomize_batchnorm(batchnorm):
    """Non-trivial running statistics and affine parameters (a fresh BatchNorm is the identity)."""
    batchnorm.running_mean.uniform_(-0.5, 0.5)
    batchnorm.running_var.uniform_(0.5, 1.5)
    batchnorm.weight.data.uniform_(0.5, 1.5)
    batchnorm.bias.data.uniform_(-0.3, 0.3)


# ----------------------------------------------------------------------------- the literal FullGrad
def literal_fullgrad_terms(members, image, scalar):
    """FullGrad's raw terms by hand for one image ``(C, H, W)``: ``scalar(list of member
    logits)`` is the explained output. Returns ``(input_term (C, H, W), [bias_term (C_l, h, w)])``
    with one bias term per Conv2d / BatchNorm2d call (BatchNorm's implicit bias
    ``beta - mean * gamma / sqrt(var + eps)``), in forward order."""
    from torch import nn

    outputs = []
    hooks = [
        m.register_forward_hook(lambda mod, inp, out: outputs.append((mod, out)))
        for member in members
        for m in member.modules()
        if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))
    ]
    point = image.unsqueeze(0).clone().requires_grad_()
    try:
        value = scalar([member(point) for member in members])
    finally:
        for h in hooks:
            h.remove()
    grads = torch.autograd.grad(value, [point] + [out for _, out in outputs])
    bias_terms = []
    for (layer, _), grad in zip(outputs, grads[1:]):
        if isinstance(layer, nn.BatchNorm2d):
            bias = layer.bias - layer.running_mean * layer.weight / torch.sqrt(layer.running_var + layer.eps)
        else:
            bias = layer.bias
        bias_terms.append(grad[0] * bias.detach().view(-1, 1, 1))
    return grads[0][0] * image, bias_terms


def literal_min_max(t):
    return (t - t.min()) / (t.max() - t.min())


def resized(term, size):
    """A ``(h, w)`` map resized bilinearly to ``size``, as FullGrad's reference does."""
    return torch.nn.functional.interpolate(term[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]


# ----------------------------------------------------------------------------- "the user's model is untouched"
def model_state(modules):
    """Everything a call must leave as it was: parameters and buffers (values), requires_grad,
    gradients, every submodule's training flag and hooks."""
    state = []
    for module in modules:
        for name, sub in module.named_modules():
            hooks = (len(sub._forward_hooks), len(sub._forward_pre_hooks), len(sub._backward_hooks))
            state.append((name, sub.training) + hooks)
        for name, p in module.named_parameters():
            state.append((name, p.requires_grad, p.detach().clone(), None if p.grad is None else p.grad.clone()))
        for name, b in module.named_buffers():
            state.append((name, b.detach().clone()))
    return state


def assert_untouched(before, modules):
    """The modules are exactly as :func:`model_state` recorded them."""
    after = model_state(modules)
    assert len(before) == len(after)
    for old, new in zip(before, after):
        assert len(old) == len(new)
        for a, b in zip(old, new):
            if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
                assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b), old[0]
            else:
                assert a == b, old[0]


def make_regressor(seed, outputs=2, features=5):
    """A small tanh MLP in float64: ``(N, features)`` -> ``(N, outputs)`` (mean and log-variance
    by default)."""
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(features, 8), nn.Tanh(), nn.Linear(8, outputs)).double()


class MeansOnlyRegressor(torch.nn.Module):
    """A regressor returning its means as ``(N,)``."""

    def __init__(self, seed):
        super().__init__()
        self.net = make_regressor(seed, outputs=1)

    def forward(self, x):
        return self.net(x)[:, 0]


# ----------------------------------------------------------------------------- devices


@contextlib.contextmanager
def default_device(device):
    """Tensors made without ``device=`` land on ``device`` inside the block."""
    torch.set_default_device(device)
    try:
        yield
    finally:
        torch.set_default_device(None)


def assert_same_tensors(got, expected):
    """Pairwise the same device, dtype and values (to float64 rounding)."""
    for a, b in zip(got, expected):
        assert a.device == b.device and a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)
