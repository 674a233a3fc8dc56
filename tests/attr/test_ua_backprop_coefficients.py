"""UA-Backprop's Eq. 8 logit shares in closed form: equal to the literal ``C x C`` coefficients at
every temperature (float64 and float32, saturated probabilities, terms of any sign), finite,
never an ``(S, N, C, C)`` tensor, and UABackprop's maps unchanged on every path."""

import pytest
import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

import captum_uncertainty.attr._utils.ua_backprop as ua_utils
from captum_uncertainty import UncertaintyForward
from captum_uncertainty.attr._utils.ua_backprop import logit_uncertainties
from captum_uncertainty.attr.ua_backprop import UABackprop
from captum_uncertainty.forward import per_class_uncertainty
from tests.helpers import make_cnn

MEASURES = ("total", "aleatoric", "epistemic")
TEMPERATURES = (1e-3, 0.01, 0.08, 1.0, 100.0)


# ------------------------------------------------------------------ the literal C x C reference
def literal_coefficients(g, tau1, normalize):
    """``c[s, n, j, i]`` of Eq. 8 as a full matrix: softmax over ``i`` of ``(delta_ij - g_i) / tau1``,
    or (no normalisation) the softmax Jacobian ``g_j (delta_ij - g_i)``."""
    eye = torch.eye(g.shape[-1], dtype=g.dtype)
    difference = eye - g.unsqueeze(-2)
    if normalize:
        return torch.softmax(difference / tau1, dim=-1)
    return g.unsqueeze(-1) * difference


def literal_shares(g, terms, tau1, normalize):
    """``sum_j c[s, n, j, i] U[m, n, j]`` in float64 from the full coefficient matrix; with it the
    rounding scale: ``sum_j c[s, n, j, i] |U[m, n, j]|``, or without normalisation
    ``g_i (|U_i| + sum_j g_j |U_j|)`` (``1 - g_i`` is exact in the literal form, not in a sum)."""
    g, terms = g.double(), terms.double()
    coefficients = literal_coefficients(g, tau1, normalize)
    shares = torch.stack([torch.einsum("snji,nj->sni", coefficients, term) for term in terms])
    if normalize:
        scale = torch.stack([torch.einsum("snji,nj->sni", coefficients, term.abs()) for term in terms])
    else:
        magnitude = terms.abs().unsqueeze(1)
        scale = g * (magnitude + (g * magnitude).sum(-1, keepdim=True))
    return shares, scale


def random_terms(shape, seed):
    """Per-class terms of both signs, with a measure that is all zeros, a row of zeros and scattered zeros."""
    generator = torch.Generator().manual_seed(seed)
    terms = torch.randn(shape, generator=generator, dtype=torch.float64)
    terms[0] = 0.0
    terms[1:, 0] = 0.0
    terms[torch.rand(shape, generator=generator) < 0.2] = 0.0
    return terms


def probabilities(shape, saturation, seed, dtype):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=generator, dtype=torch.float64) * saturation
    return torch.softmax(logits.to(dtype), dim=-1)


# ------------------------------------------------------------------ 1. closed form == C x C reference
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("saturation", [1.0, 50.0])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("tau1", TEMPERATURES)
@pytest.mark.parametrize("num_classes", [2, 10, 1000])
def test_closed_form_equals_literal_coefficients(num_classes, tau1, normalize, saturation, dtype):
    samples, batch = (2, 2) if num_classes == 1000 else (3, 4)
    g = probabilities((samples, batch, num_classes), saturation, seed=num_classes, dtype=dtype)
    terms = random_terms((3, batch, num_classes), seed=num_classes + 1).to(dtype)
    shares = ua_utils._logit_shares(g, terms, tau1, normalize)
    assert shares.shape == (3, samples, batch, num_classes) and shares.dtype == dtype
    assert torch.isfinite(shares).all()
    assert torch.equal(shares[0], torch.zeros_like(shares[0]))  # U = 0 gives exactly 0
    # the reference in float64 from the same probabilities (in float32 the closed form is judged
    # against it, also where exp(1 / tau1) itself would overflow float32)
    expected, scale = literal_shares(g, terms, tau1, normalize)
    if dtype == torch.float64:
        torch.testing.assert_close(shares, expected, rtol=1e-6, atol=1e-6)
        # and to rounding: within 1e-10 of the sum of the magnitudes it is made of
        assert ((shares - expected).abs() <= 1e-10 * scale + 1e-300).all()
    else:
        torch.testing.assert_close(shares.double(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("tau1", TEMPERATURES + (1e3,))
@pytest.mark.parametrize("num_classes", [1, 2, 10])
def test_exactly_one_hot_probabilities(num_classes, tau1, dtype):
    """Saturated to exact zeros and ones (the sum over ``k != j`` is then exactly empty for the
    winning class): finite, and the reference's values."""
    winners = torch.tensor([[0, num_classes - 1], [num_classes // 2, 0]])
    g = torch.nn.functional.one_hot(winners, num_classes).to(dtype)  # (S=2, N=2, C)
    terms = torch.tensor([[1.0, -2.0, 0.0, 0.5] * 3, [0.0, 0.3, -0.7, 0.0] * 3], dtype=dtype)[:, :num_classes]
    terms = terms.unsqueeze(0).expand(2, 2, num_classes)  # (M=2, N=2, C)
    for normalize in (True, False):
        shares = ua_utils._logit_shares(g, terms, tau1, normalize)
        assert torch.isfinite(shares).all()
        expected, _ = literal_shares(g, terms, tau1, normalize)
        torch.testing.assert_close(shares.double(), expected, rtol=1e-6, atol=1e-7)
    if num_classes == 1:  # a single class keeps all of its term
        torch.testing.assert_close(ua_utils._logit_shares(g, terms, tau1, True), terms.unsqueeze(1).expand(2, 2, 2, 1))


@pytest.mark.parametrize("target", [None, 2, [0, 3, 1]])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("tau1", [1e-3, 0.08, 100.0])
def test_logit_uncertainties_equals_literal(tau1, normalize, target):
    """The whole step: Eq. 4's terms from the logits, only the target's term kept, literal shares."""
    torch.manual_seed(3)
    logits = torch.randn(4, 3, 6, dtype=torch.float64) * 3
    result = logit_uncertainties(logits, tau1, normalize, MEASURES, target)
    assert result.shape == (3, 4, 3, 6)
    terms = torch.stack([per_class_uncertainty(logits).select(m) for m in MEASURES])  # (M, N, C)
    if target is not None:
        rows = torch.as_tensor(target).reshape(-1).expand(3)
        kept = torch.zeros_like(terms)
        for n in range(3):
            kept[:, n, rows[n]] = terms[:, n, rows[n]]
        terms = kept
    expected, _ = literal_shares(torch.softmax(logits, -1), terms, tau1, normalize)
    torch.testing.assert_close(result, expected, rtol=1e-10, atol=1e-12)
    if normalize:  # every row of c sums to 1: the shares sum to U per sample (completeness)
        torch.testing.assert_close(result.sum(-1), terms.sum(-1).unsqueeze(1).expand(3, 4, 3), rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ 2. no (S, N, C, C) tensor
class _LargestOutput(TorchDispatchMode):
    """Records the largest tensor any aten operation returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(value, torch.Tensor):
                self.largest = max(self.largest, value.numel() * value.element_size())
        return out


@pytest.mark.parametrize("normalize", [True, False])
def test_memory_is_linear_in_classes(normalize):
    samples, batch, num_classes = 3, 8, 4096
    logits = torch.randn(samples, batch, num_classes, generator=torch.Generator().manual_seed(0))
    result_bytes = len(MEASURES) * samples * batch * num_classes * 4  # the (M, S, N, C) result: 1.2 MB
    coefficient_bytes = samples * batch * num_classes * num_classes * 4  # an (S, N, C, C) tensor: 1.6 GB
    with _LargestOutput() as tracker:
        result = logit_uncertainties(logits, 0.08, normalize, MEASURES)
    assert result.shape == (3, samples, batch, num_classes) and torch.isfinite(result).all()
    assert tracker.largest <= result_bytes < coefficient_bytes / 1000
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        logit_uncertainties(logits, 0.08, normalize, MEASURES)
    allocated = [event.self_cpu_memory_usage for event in prof.events()]  # bytes each op allocated
    assert max(allocated) > 0  # the profiler saw the allocations
    # all that was allocated during the call bounds its peak: far below one (S, N, C, C) tensor
    assert sum(size for size in allocated if size > 0) < 100 * 2**20


# ------------------------------------------------------------------ 3. UABackprop's maps unchanged
@pytest.fixture(scope="module")
def members():
    return [make_cnn(seed, classes=5) for seed in range(3)]


@pytest.fixture(scope="module")
def x():
    torch.manual_seed(11)
    return torch.rand(2, 1, 8, 8, dtype=torch.float64) * 2


@pytest.mark.parametrize(
    "path, options",
    [
        ("grad", {}),
        ("inputgrad", {}),
        ("fullgrad", {"fullgrad_postprocess": "raw"}),
        ("fullgrad", {"fullgrad_postprocess": "reference"}),
        ("integrated_gradients", {"n_steps": 3}),
        ("blur_integrated_gradients", {"n_steps": 3}),
    ],
)
def test_uabackprop_maps_equal_the_literal_coefficients(members, x, monkeypatch, path, options):
    uf = UncertaintyForward(members, measure="epistemic")
    settings = [
        {"tau1": 0.08, "tau2": 0.3},
        {"tau1": 1e-3, "tau2": 0.3, "target": 1},
        {"tau1": 5.0, "tau2": 0.5, "normalize": False},
    ]
    closed = [UABackprop(uf).attribute(x, path=path, decompose=True, **options, **s) for s in settings]
    calls = []

    def literal(g, terms, tau1, normalize):
        calls.append(g.shape)
        return literal_shares(g, terms, tau1, normalize)[0].to(g.dtype)

    with monkeypatch.context() as patch:
        patch.setattr(ua_utils, "_logit_shares", literal)
        literal_maps = [UABackprop(uf).attribute(x, path=path, decompose=True, **options, **s) for s in settings]
    assert calls == [(3, 2, 5)] * len(settings)  # the C x C coefficients made these maps
    assert ua_utils._logit_shares is not literal
    for fast, slow in zip(closed, literal_maps):
        for name in MEASURES:
            assert torch.isfinite(fast.select(name)).all()
            torch.testing.assert_close(fast.select(name), slow.select(name), rtol=1e-10, atol=1e-14)
