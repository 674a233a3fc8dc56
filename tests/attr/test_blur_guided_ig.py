"""Tests of Blur IG, Guided IG and gaussian_blur (captum_uncertainty.attr.blur_ig / guided_ig)."""

import math

import pytest
import torch
from captum.attr import IntegratedGradients, NoiseTunnel
from torch import nn

from captum_uncertainty import gaussian_blur as blur
from captum_uncertainty.attr._utils.path import (
    BLUR_IG_METHOD,
    SUPPORTED_METHODS,
    blur_levels,
    blur_path,
    blur_quadrature,
    integrate_path,
    target_gradients,
)
from captum_uncertainty.attr.blur_ig import BlurIntegratedGradients, default_max_sigma
from captum_uncertainty.attr.guided_ig import GuidedIntegratedGradients
from captum_uncertainty.forward import UncertaintyForward


# ----------------------------------------------------------------------------- fixtures
def gaussian_blur(images, sigma):
    """Blur IG's kernel: the package's one blur, untruncated."""
    return blur(images, sigma, truncate=None)


class TinyCNN(nn.Module):
    """Smooth (tanh) CNN on 1 x 8 x 8 inputs; ``out_features=None`` returns one scalar per input."""

    def __init__(self, out_features=None, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4 * 8 * 8, out_features or 1)
        self.scalar = out_features is None

    def forward(self, x):
        out = self.head(torch.tanh(self.conv(x)).flatten(1))
        return out[:, 0] if self.scalar else out


class Linear(nn.Module):
    def __init__(self, weight):
        super().__init__()
        self.weight = weight

    def forward(self, x):
        return (self.weight * x).flatten(1).sum(1)


def images(n=3, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g, dtype=dtype)


def relative_error(delta, reference):
    """Largest completeness error relative to the batch's largest output gap."""
    return (delta.abs().max() / reference.abs().max()).item()


# ----------------------------------------------------------------------------- gaussian_blur
def reflected_delta_response(length, centre, sigma):
    """Hand-derived 1-D blur of a unit impulse (taps |k| <= length-1, reflect boundary)."""
    taps = range(-(length - 1), length)
    weights = {k: math.exp(-k * k / (2 * sigma * sigma)) for k in taps}
    z = sum(weights.values())

    def fold(i):
        m = i % (2 * length)
        return 2 * length - 1 - m if m >= length else m

    return torch.tensor(
        [sum(w for k, w in weights.items() if fold(j + k) == centre) / z for j in range(length)],
        dtype=torch.float64,
    )


def test_gaussian_blur_1d_hand_computed():
    x = torch.zeros(1, 1, 1, 5, dtype=torch.float64)
    x[0, 0, 0, 2] = 1.0
    w = [math.exp(-k * k / 2) for k in range(5)]  # sigma = 1, taps |k| <= 4
    z = w[0] + 2 * sum(w[1:])
    # out[0] receives the impulse from offset +2 directly and from offset -3 via reflection
    expected = torch.tensor([w[2] + w[3], w[1] + w[4], w[0], w[1] + w[4], w[2] + w[3]], dtype=torch.float64) / z
    out = gaussian_blur(x, 1.0)[0, 0, 0]
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-15)
    assert out.sum().item() == pytest.approx(1.0, abs=1e-14)  # reflection conserves mass


def test_gaussian_blur_2d_is_separable_outer_product():
    x = torch.zeros(1, 2, 3, 5, dtype=torch.float64)
    x[0, :, 1, 3] = 1.0
    expected = torch.outer(reflected_delta_response(3, 1, 0.8), reflected_delta_response(5, 3, 0.8))
    out = gaussian_blur(x, 0.8)
    for channel in range(2):
        torch.testing.assert_close(out[0, channel], expected, rtol=0, atol=1e-15)


def test_gaussian_blur_matches_scipy_reflect():
    ndimage = pytest.importorskip("scipy.ndimage")
    x = images(1)[0, 0]
    for sigma in (0.5, 1.0, 1.7):
        ours = gaussian_blur(x[None, None], sigma)[0, 0]
        # scipy with a kernel spanning the whole axis, as ours does
        ref = ndimage.gaussian_filter(x.numpy(), sigma, mode="reflect", truncate=7.0 / sigma)
        torch.testing.assert_close(ours, torch.from_numpy(ref), rtol=0, atol=1e-12)


def test_gaussian_blur_sigma_zero_identity_and_per_image_sigma():
    x = images(3, dtype=torch.float32)
    assert torch.equal(gaussian_blur(x, 0.0), x)
    sigma = torch.tensor([0.0, 0.7, 2.5])
    batched = gaussian_blur(x, sigma)
    assert torch.equal(batched[0], x[0])
    for i in range(3):
        torch.testing.assert_close(batched[i : i + 1], gaussian_blur(x[i : i + 1], float(sigma[i])))
    assert not torch.allclose(batched[1], x[1])


def test_gaussian_blur_errors():
    with pytest.raises(ValueError, match="images"):
        gaussian_blur(torch.rand(2, 8, 8), 1.0)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_blur(torch.rand(2, 1, 8, 8), -1.0)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_blur(torch.rand(2, 1, 8, 8), torch.ones(3))


# ----------------------------------------------------------------------------- Blur IG
def test_default_max_sigma_scales_reference_setting():
    assert default_max_sigma(224, 224) == 50.0
    assert default_max_sigma(28, 28) == pytest.approx(6.25)


def test_blur_ig_completeness_smooth_cnn():
    net, x = TinyCNN().double(), images()
    max_sigma = default_max_sigma(8, 8)
    attr, delta = BlurIntegratedGradients(net).attribute(x, n_steps=200, return_convergence_delta=True)
    gap = net(x) - net(gaussian_blur(x, max_sigma))
    torch.testing.assert_close(attr.flatten(1).sum(1) - gap, delta)
    # measured ~0.14% relative error at n_steps=200 with the default right rule (0.09% left, 0.12% the
    # second-order rules: the finite-difference floor of grad_step=0.01); tolerance 2%
    print(f"blur IG n_steps=200: relative completeness error {relative_error(delta, gap):.2e}")
    assert relative_error(delta, gap) < 0.02


@pytest.mark.parametrize("method, first", [("riemann_left", 0), ("riemann_right", 1)])
def test_blur_ig_linear_model_hand_computed(method, first):
    torch.manual_seed(0)
    w = torch.randn(1, 1, 8, 8, dtype=torch.float64)
    x, max_sigma, n_steps, h = images(2), 1.5, 40, 0.01
    attr = BlurIntegratedGradients(Linear(w)).attribute(x, max_sigma=max_sigma, n_steps=n_steps, method=method)
    # exact Riemann sum of the linear model: -w * sum_k dsigma * (x(s_k + h) - x(s_k)) / h, with
    # s_k the left (k = 0..T-1) or right (k = 1..T) ends of the cells
    ds = max_sigma / n_steps
    expected = torch.zeros_like(x)
    for k in range(first, n_steps + first):
        s = k * ds
        expected -= w * ds * (gaussian_blur(x, s + h) - gaussian_blur(x, s)) / h
    torch.testing.assert_close(attr, expected, rtol=1e-10, atol=1e-12)
    # and, up to finite-difference / Riemann error, the straight IG of the linear model
    target = w * (x - gaussian_blur(x, max_sigma))
    assert (attr - target).abs().max() < 0.05 * target.abs().max()


def test_blur_ig_float32_default_grad_step_is_not_zero():
    net, x = TinyCNN(), images(dtype=torch.float32)
    attr, delta = BlurIntegratedGradients(net).attribute(x, n_steps=100, return_convergence_delta=True)
    assert attr.abs().sum() > 0
    gap = net(x) - net(gaussian_blur(x, default_max_sigma(8, 8)))
    assert relative_error(delta, gap) < 0.05
    # why grad_step is 0.01: a 1e-10 step is below float32 resolution and yields all zeros
    tiny = BlurIntegratedGradients(net).attribute(x, n_steps=10, grad_step=1e-10)
    assert torch.count_nonzero(tiny) == 0


def test_blur_ig_batched_equals_one_by_one_and_internal_batch_size():
    net, x = TinyCNN().double(), images(3)
    blur_ig = BlurIntegratedGradients(net)
    full = blur_ig.attribute(x, n_steps=20)
    chunked = blur_ig.attribute(x, n_steps=20, internal_batch_size=7)  # 2 steps per chunk
    torch.testing.assert_close(full, chunked)
    for i in range(3):
        torch.testing.assert_close(full[i : i + 1], blur_ig.attribute(x[i : i + 1], n_steps=20))


def test_blur_ig_sqrt_grid_and_tuple_inputs():
    grid = BlurIntegratedGradients.sigma_grid(2.0, 4, sqrt=True)
    torch.testing.assert_close(grid, 2.0 * torch.tensor([0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64).sqrt())
    net, x = TinyCNN().double(), images(2)
    two = lambda a, b: net(a) + 2 * net(b)  # noqa: E731
    attr_a, attr_b = BlurIntegratedGradients(two).attribute((x, x), n_steps=20, sqrt=True)
    single = BlurIntegratedGradients(net).attribute(x, n_steps=20, sqrt=True)
    torch.testing.assert_close(attr_a, single)
    torch.testing.assert_close(attr_b, 2 * single)


def test_blur_ig_errors():
    blur_ig = BlurIntegratedGradients(TinyCNN())
    x = images(dtype=torch.float32)
    with pytest.raises(ValueError, match="inputs"):
        blur_ig.attribute(x.flatten(1))
    with pytest.raises(ValueError, match="n_steps"):
        blur_ig.attribute(x, n_steps=0)
    with pytest.raises(ValueError, match="grad_step"):
        blur_ig.attribute(x, grad_step=0.0)
    with pytest.raises(ValueError, match="max_sigma"):
        blur_ig.attribute(x, max_sigma=-1.0)
    with pytest.raises(ValueError, match="internal_batch_size"):
        blur_ig.attribute(x, internal_batch_size=0)
    assert blur_ig.has_convergence_delta() and blur_ig.multiplies_by_inputs


def old_left_sum(net, x, max_sigma, n_steps, sqrt=False, grad_step=0.01):
    """Blur IG as it was before ``method``: the left sum over ``blur_levels``, by the same engine."""
    sigmas = blur_levels(max_sigma, n_steps, sqrt, device=x.device)
    widths = (sigmas[1:] - sigmas[:-1]).to(x.dtype)
    gradients = target_gradients(BlurIntegratedGradients(net), None, (), x.shape[0])
    ((total,),) = integrate_path(blur_path((x,), grad_step), gradients, sigmas[:-1], widths, x.shape[0])
    return total


def test_blur_ig_default_method_one_step_map_is_not_zero():
    """The left rule's only node is sigma = 0, where the path does not move: an all-zero map."""
    assert BLUR_IG_METHOD == "riemann_right"
    net, x = TinyCNN().double(), images()
    one = BlurIntegratedGradients(net).attribute(x, n_steps=1)
    assert bool((one.flatten(1).abs().amax(1) > 0).all())
    left = BlurIntegratedGradients(net).attribute(x, n_steps=1, method="riemann_left")
    assert torch.count_nonzero(left) == 0
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 1), nn.Flatten(0)).double()
    assert bool((BlurIntegratedGradients(mlp).attribute(x, n_steps=1).flatten(1).abs().amax(1) > 0).all())


def test_blur_ig_default_method_delta_falls_with_n_steps():
    net, x = TinyCNN().double(), images()
    gap = net(x) - net(gaussian_blur(x, default_max_sigma(8, 8)))
    errors = []
    for n_steps in (2, 8, 32):
        _, delta = BlurIntegratedGradients(net).attribute(x, n_steps=n_steps, return_convergence_delta=True)
        errors.append(relative_error(delta, gap))
    print(f"blur IG default rule, n_steps 2 / 8 / 32: relative completeness error {errors}")
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.1 * errors[0]


@pytest.mark.parametrize("sqrt", [False, True])
def test_blur_ig_riemann_left_is_the_old_rule_exactly(sqrt):
    net, x = TinyCNN().double(), images()
    max_sigma = default_max_sigma(8, 8)
    attr = BlurIntegratedGradients(net).attribute(x, n_steps=12, method="riemann_left", sqrt=sqrt)
    assert torch.equal(attr, old_left_sum(net, x, max_sigma, 12, sqrt))
    net32, x32 = TinyCNN(), images(dtype=torch.float32)
    attr32 = BlurIntegratedGradients(net32).attribute(x32, max_sigma=1.5, n_steps=7, method="riemann_left")
    assert torch.equal(attr32, old_left_sum(net32, x32, 1.5, 7))


@pytest.mark.parametrize("method", SUPPORTED_METHODS)
def test_blur_ig_every_method_is_accepted_and_converges(method):
    net, x = TinyCNN().double(), images()
    gap = net(x) - net(gaussian_blur(x, default_max_sigma(8, 8)))
    attr, delta = BlurIntegratedGradients(net).attribute(x, n_steps=64, method=method, return_convergence_delta=True)
    torch.testing.assert_close(attr.flatten(1).sum(1) - gap, delta)
    assert relative_error(delta, gap) < 0.02
    if method != "gausslegendre":
        assert BlurIntegratedGradients(net).attribute(x, n_steps=8, method=method, sqrt=True).shape == x.shape


@pytest.mark.parametrize("method", SUPPORTED_METHODS)
@pytest.mark.parametrize("sqrt", [False, True])
def test_blur_quadrature_nodes_and_weights(method, sqrt):
    if method == "gausslegendre" and sqrt:
        with pytest.raises(ValueError, match="sqrt"):
            blur_quadrature(2.0, 5, method, sqrt)
        return
    nodes, weights = blur_quadrature(2.0, 5, method, sqrt)
    assert nodes.dtype == weights.dtype == torch.float64 and nodes.shape == weights.shape == (5,)
    assert bool((weights > 0).all()) and weights.sum().item() == pytest.approx(2.0, abs=1e-12)
    assert bool((nodes >= 0).all() and (nodes <= 2.0).all() and (nodes[1:] > nodes[:-1]).all())
    levels = blur_levels(2.0, 5, sqrt)
    expected = {
        "riemann_left": levels[:-1],
        "riemann_right": levels[1:],
        "riemann_middle": (levels[:-1] + levels[1:]) / 2,
        "riemann_trapezoid": blur_levels(2.0, 4, sqrt),
    }
    if method in expected:
        torch.testing.assert_close(nodes, expected[method], rtol=0, atol=0)
    if method != "riemann_trapezoid" and method != "gausslegendre":
        torch.testing.assert_close(weights, levels[1:] - levels[:-1], rtol=0, atol=0)


def test_blur_ig_method_errors():
    blur_ig = BlurIntegratedGradients(TinyCNN())
    x = images(dtype=torch.float32)
    for bad in ("riemann", "left", "gauss_legendre", None, 0.01):
        with pytest.raises(ValueError, match="method.*riemann_left.*gausslegendre"):
            blur_ig.attribute(x, n_steps=4, method=bad)
    with pytest.raises(ValueError, match="sqrt"):
        blur_ig.attribute(x, n_steps=4, method="gausslegendre", sqrt=True)
    with pytest.raises(ValueError, match="n_steps"):
        blur_ig.attribute(x, n_steps=1, method="riemann_trapezoid")


# ----------------------------------------------------------------------------- Guided IG
@pytest.mark.parametrize("max_dist, tolerance", [(0.02, 0.01), (1.0, 0.05)])
def test_guided_ig_completeness_smooth_cnn(max_dist, tolerance):
    net, x = TinyCNN().double(), images()
    baseline = torch.full_like(x, 0.5)
    attr, delta = GuidedIntegratedGradients(net).attribute(
        x, baselines=baseline, n_steps=50, max_dist=max_dist, return_convergence_delta=True
    )
    gap = net(x) - net(baseline)
    torch.testing.assert_close(attr.flatten(1).sum(1) - gap, delta)
    # measured ~0.3% (max_dist=0.02) and ~2% (unbounded) at n_steps=50
    print(f"guided IG max_dist={max_dist}: relative completeness error {relative_error(delta, gap):.2e}")
    assert relative_error(delta, gap) < tolerance


def test_guided_ig_linear_model_is_exact():
    torch.manual_seed(0)
    w = torch.randn(1, 1, 8, 8, dtype=torch.float64)
    x = images()
    b = torch.rand(1, 8, 8, dtype=torch.float64)  # one shared baseline
    for max_dist in (0.02, 1.0):
        attr = GuidedIntegratedGradients(Linear(w)).attribute(x, baselines=b, n_steps=7, max_dist=max_dist)
        torch.testing.assert_close(attr, w * (x - b), rtol=1e-12, atol=1e-12)


def recording_gradient(net, shape, trace):
    def gradient_at(point):
        trace.append(point.clone())
        p = point.detach().reshape(shape).requires_grad_(True)
        return torch.autograd.grad(net(p).sum(), p)[0].reshape(point.shape)

    return gradient_at


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("max_dist", [0.02, 1.0])
def test_guided_path_ends_at_input_and_covers_equal_l1_steps(dtype, max_dist):
    net = TinyCNN().to(dtype)
    x = images(dtype=dtype)
    start, end = torch.zeros(3, 64, dtype=dtype), x.reshape(3, 64)
    trace = []
    n_steps = 10
    _, reached = GuidedIntegratedGradients._guided_path(
        recording_gradient(net, x.shape, trace), start, end, n_steps, 0.1, max_dist
    )
    assert torch.equal(reached, end)  # exact, no snapping needed
    l1_total = (end - start).abs().sum(1)
    for t, point in enumerate(trace):  # gradient t is taken after t of the n_steps steps
        l1 = (point - end).abs().sum(1)
        torch.testing.assert_close(l1, l1_total * (1 - t / n_steps), rtol=1e-5, atol=1e-6)
        progress = (point - start) / (end - start)
        assert bool((progress >= -1e-6).all() and (progress <= 1 + 1e-6).all())  # stays in the box
        if max_dist < 1:
            assert bool(((progress - t / n_steps).abs() <= max_dist + 1e-5).all())


def test_guided_ig_moves_low_gradient_features_first():
    w = torch.ones(1, 1, 8, 8, dtype=torch.float64)
    w[..., :4] = 10.0  # left half has 10x the gradient
    x = torch.ones(1, 1, 8, 8, dtype=torch.float64)
    trace = []
    GuidedIntegratedGradients._guided_path(
        recording_gradient(Linear(w), x.shape, trace),
        torch.zeros(1, 64, dtype=torch.float64),
        x.reshape(1, 64),
        4,
        0.1,
        1.0,
    )
    halfway = trace[2].reshape(8, 8)  # after half of the L1 distance
    assert torch.equal(halfway[:, 4:], torch.ones(8, 4, dtype=torch.float64))
    assert torch.equal(halfway[:, :4], torch.zeros(8, 4, dtype=torch.float64))


def test_guided_ig_fraction_one_is_straight_line_left_riemann_ig():
    net, x = TinyCNN().double(), images()
    ours = GuidedIntegratedGradients(net).attribute(x, n_steps=16, fraction=1.0)
    captum = IntegratedGradients(net).attribute(x, baselines=torch.zeros_like(x), n_steps=16, method="riemann_left")
    torch.testing.assert_close(ours, captum, rtol=1e-9, atol=1e-12)


def test_guided_ig_batched_equals_one_by_one_and_flat_features():
    net, x = TinyCNN().double(), images(3)
    gig = GuidedIntegratedGradients(net)
    full = gig.attribute(x, n_steps=12)
    for i in range(3):
        torch.testing.assert_close(full[i : i + 1], gig.attribute(x[i : i + 1], n_steps=12))
    flat = GuidedIntegratedGradients(lambda v: net(v.reshape(-1, 1, 8, 8))).attribute(x.flatten(1), n_steps=12)
    torch.testing.assert_close(flat, full.flatten(1))


def test_guided_ig_errors():
    gig = GuidedIntegratedGradients(TinyCNN())
    x = images(dtype=torch.float32)
    with pytest.raises(ValueError, match="n_steps"):
        gig.attribute(x, n_steps=0)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            gig.attribute(x, fraction=bad)
        with pytest.raises(ValueError, match="max_dist"):
            gig.attribute(x, max_dist=bad)
    with pytest.raises(ValueError, match="baselines"):
        gig.attribute(x, baselines=torch.zeros(2, 1, 8, 8))
    assert gig.has_convergence_delta() and gig.multiplies_by_inputs


def test_guided_ig_takes_captums_argument_order():
    """``internal_batch_size`` before ``return_convergence_delta``, as in Captum's IntegratedGradients."""
    gig = GuidedIntegratedGradients(TinyCNN().double())
    x = images()
    keywords = gig.attribute(x, n_steps=8, internal_batch_size=2, return_convergence_delta=True)
    positional = gig.attribute(x, None, None, None, 8, 0.1, 0.02, 2, True)
    for ours, theirs in zip(keywords, positional):
        assert torch.equal(ours, theirs)
    assert torch.equal(keywords[0], gig.attribute(x, n_steps=8))


@pytest.mark.parametrize("old_order", [(True, None), (False, None), (True, 2), (False, 2)])
def test_guided_ig_refuses_the_old_positional_order(old_order):
    """A bool in the ``internal_batch_size`` slot is a convergence flag passed in the old order."""
    gig = GuidedIntegratedGradients(TinyCNN().double())
    with pytest.raises(TypeError, match="internal_batch_size.*return_convergence_delta"):
        gig.attribute(images(), None, None, None, 8, 0.1, 0.02, *old_order)


# ----------------------------------------------------------------------------- uncertainty / classifiers
@pytest.fixture
def ensemble():
    return [TinyCNN(out_features=3, seed=s) for s in (0, 1)]


@pytest.mark.parametrize("method", ["blur", "guided"])
def test_on_uncertainty_forward_target_none(ensemble, method):
    uf = UncertaintyForward(ensemble, measure="total")
    x = images(dtype=torch.float32)
    for m in ensemble:
        m.train()
        m.conv.weight.requires_grad_(False)
    if method == "blur":
        attr, delta = BlurIntegratedGradients(uf).attribute(x, n_steps=100, return_convergence_delta=True)
        gap = uf(x) - uf(gaussian_blur(x, default_max_sigma(8, 8)))
    else:
        attr, delta = GuidedIntegratedGradients(uf).attribute(x, n_steps=50, return_convergence_delta=True)
        gap = uf(x) - uf(torch.zeros_like(x))
    assert attr.shape == x.shape and bool(torch.isfinite(attr).all())
    assert relative_error(delta, gap) < 0.05
    for m in ensemble:  # the user's model is left as it was
        assert m.training and not m.conv.weight.requires_grad and m.head.weight.requires_grad


@pytest.mark.parametrize("cls", [BlurIntegratedGradients, GuidedIntegratedGradients])
def test_classifier_target_and_noise_tunnel_per_class(cls):
    net = TinyCNN(out_features=3).double()
    x = images(2)
    target = torch.tensor([2, 0])
    with_target = cls(net).attribute(x, target=target, n_steps=10)
    # reference: a forward returning the chosen logit directly (target=None)
    per_row = torch.cat(
        [cls(lambda v, c=int(c): net(v)[:, c]).attribute(x[i : i + 1], n_steps=10) for i, c in enumerate(target)]
    )
    torch.testing.assert_close(with_target, per_row)
    for c in range(3):
        plain = cls(net).attribute(x, target=c, n_steps=10)
        smooth0 = NoiseTunnel(cls(net)).attribute(
            x, nt_type="smoothgrad", nt_samples=2, stdevs=0.0, target=c, n_steps=10
        )
        torch.testing.assert_close(smooth0, plain)
        noisy = NoiseTunnel(cls(net)).attribute(
            x, nt_type="smoothgrad_sq", nt_samples=3, nt_samples_batch_size=2, stdevs=0.1, target=c, n_steps=10
        )
        assert noisy.shape == x.shape and bool(torch.isfinite(noisy).all()) and bool((noisy >= 0).all())


@pytest.mark.parametrize("cls", [BlurIntegratedGradients, GuidedIntegratedGradients])
def test_additional_forward_args_are_tiled_per_example(cls):
    net, x = TinyCNN().double(), images(3)
    scale = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    x.requires_grad_(True)
    with_args = cls(lambda v, s: s * net(v)).attribute(x, additional_forward_args=scale, n_steps=6)
    assert x.requires_grad and x.grad is None  # the caller's tensor is untouched
    for i in range(3):
        alone = cls(lambda v, s=scale[i]: s * net(v)).attribute(x[i : i + 1].detach(), n_steps=6)
        torch.testing.assert_close(with_args[i : i + 1], alone)
