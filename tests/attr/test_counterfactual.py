"""CLUE, delta-CLUE and CounterfactualPathIG on a trained digits ensemble and VAE."""

import copy
import dataclasses
import warnings

import pytest
import torch
from captum.attr import IntegratedGradients, NoiseTunnel
from torch import nn

from captum_uncertainty import CLUE, ClueSettings, CounterfactualPathIG, DeltaCLUE, UncertaintyForward
from captum_uncertainty.attr import CounterfactualPathResult, CounterfactualPathResultWithDelta, Fiducials
from captum_uncertainty.attr._utils.latent_search import reconstruction_loss, search_latents
from captum_uncertainty.attr.counterfactual_path import (
    FiducialWarning,
    in_class_fiducials,
    reconstruction_latents,
    reference_in_class_settings,
)
from captum_uncertainty.attr.delta_clue import project_to_ball, uniform_in_ball
from captum_uncertainty.generative.protocol import decode_latents, encode_inputs
from tests.helpers import assert_untouched, model_state


@pytest.fixture(scope="module")
def uf(digits_ensemble):
    return UncertaintyForward(digits_ensemble, measure="total")


@pytest.fixture(scope="module")
def uncertain(digits, uf):
    """The 12 most uncertain test digits."""
    with torch.no_grad():
        return digits.x_test[uf(digits.x_test).argsort(descending=True)[:12]]


# ----------------------------------------------------------------------------------------- CLUE


def test_clue_lowers_uncertainty_while_staying_close(uf, uncertain, digits_vae):
    maps, found = CLUE(uf, digits_vae).attribute(uncertain, return_counterfactuals=True)
    assert maps.shape == (12, 1, 8, 8)
    assert torch.allclose(maps, (uncertain - found.images).abs().sum(1, keepdim=True))
    assert torch.allclose(found.input_uncertainty, uf(uncertain).detach())
    assert (found.uncertainty < found.input_uncertainty).all()
    assert found.uncertainty.median() < 0.5 * found.input_uncertainty.median()
    # the reported distance is the mean absolute pixel change, and the objective U + d
    assert torch.allclose(found.distance, (uncertain - found.images).abs().flatten(1).mean(1))
    assert torch.allclose(found.objective, found.uncertainty + found.distance)
    assert found.distance.max() < 0.35
    with torch.no_grad():
        start = uf(digits_vae.decode(digits_vae.encode(uncertain))) + (
            digits_vae.decode(digits_vae.encode(uncertain)) - uncertain
        ).abs().flatten(1).mean(1)
    assert (found.objective <= start + 1e-6).all()


def test_clue_weights_measure_and_distance_options(uf, uncertain, digits_vae):
    clue = CLUE(uf, digits_vae)
    epistemic = clue.counterfactuals(uncertain[:4], measure="epistemic")
    assert torch.allclose(epistemic.input_uncertainty, uf.with_measure("epistemic")(uncertain[:4]).detach())
    assert (epistemic.uncertainty < epistemic.input_uncertainty).all()
    # distance weight 0: the objective is the uncertainty alone, never above its start value
    # (the decoded encoder code); the distance term changes where the search ends
    default = clue.counterfactuals(uncertain[:4])
    free = clue.counterfactuals(uncertain[:4], distance_weight=0.0)
    assert torch.allclose(free.objective, free.uncertainty)
    with torch.no_grad():
        start = uf(digits_vae.decode(digits_vae.encode(uncertain[:4])))
    assert (free.uncertainty <= start + 1e-6).all()
    assert not torch.allclose(free.latents, default.latents)
    squared = clue.counterfactuals(uncertain[:4], distance="l2")
    assert torch.allclose(squared.distance, (squared.images - uncertain[:4]).square().flatten(1).mean(1))
    custom = clue.counterfactuals(uncertain[:4], distance=lambda a, b: (a - b).abs().flatten(1).amax(1))
    assert torch.allclose(custom.distance, (custom.images - uncertain[:4]).abs().flatten(1).amax(1))
    capped = clue.counterfactuals(uncertain[:4], max_iterations=3)
    assert (capped.iterations == 3).all()


def test_clue_batched_search_equals_one_by_one(uf, uncertain, digits_vae):
    clue = CLUE(uf, digits_vae)
    batched = clue.counterfactuals(uncertain[:5])
    for i in range(5):
        alone = clue.counterfactuals(uncertain[i : i + 1])
        # float32 reduction order differs with the batch and the thread count (1e-3 after 500
        # Adam steps with one torch thread): equal up to that, not bit for bit; so an input whose
        # improvement crosses the early-stopping threshold near the end may stop a step apart
        # (seen with one thread: 193 against 194), while one search stopping another's would
        # differ by far more
        assert (alone.iterations - batched.iterations[i : i + 1]).abs().max() <= 2
        assert torch.allclose(alone.latents, batched.latents[i : i + 1], atol=1e-2)


def test_searches_leave_the_models_untouched(uf, uncertain, digits_ensemble, digits_vae):
    modules = list(digits_ensemble) + [digits_vae]
    before = model_state(modules)
    CLUE(uf, digits_vae).attribute(uncertain[:2], max_iterations=5)
    DeltaCLUE(uf, digits_vae).attribute(uncertain[:2], max_iterations=5, n_starts=2)
    CounterfactualPathIG(uf, digits_vae).attribute(
        uncertain[:2], fiducial="in_class", n_steps=4, fiducial_kwargs={"max_iterations": 5}
    )
    with pytest.raises(ValueError):
        CounterfactualPathIG(uf, digits_vae).attribute(uncertain[:2], fiducial=torch.full((2, 8), float("nan")))
    assert_untouched(before, modules)


def test_clue_settings_object_equals_keywords(uf, uncertain, digits_vae):
    clue, x = CLUE(uf, digits_vae), uncertain[:3]
    settings = ClueSettings(distance="l2", measure="epistemic", lr=0.02, max_iterations=7, patience=2)
    by_keywords = clue.counterfactuals(x, distance="l2", measure="epistemic", lr=0.02, max_iterations=7, patience=2)
    by_settings = clue.counterfactuals(x, settings=settings)
    for a, b in zip(by_keywords, by_settings):
        assert torch.equal(a, b)
    assert torch.equal(
        clue.attribute(x, settings=settings),
        clue.attribute(x, distance="l2", measure="epistemic", lr=0.02, max_iterations=7, patience=2),
    )
    dclue = DeltaCLUE(uf, digits_vae)
    dsettings = ClueSettings(max_iterations=4)
    assert torch.equal(
        dclue.attribute(x, n_starts=2, settings=dsettings), dclue.attribute(x, n_starts=2, max_iterations=4)
    )
    # the "clue" fiducial is the CLUE search, its fiducial_kwargs CLUE's keywords or settings=
    expected = clue.counterfactuals(x, max_iterations=4).latents
    cpig = CounterfactualPathIG(uf, digits_vae)
    assert torch.equal(cpig.fiducials(x, "clue", max_iterations=4).latents, expected)
    assert torch.equal(cpig.fiducials(x, "clue", settings=dsettings).latents, expected)
    with pytest.raises(ValueError, match="not both"):
        clue.attribute(x, lr=0.05, settings=settings)
    with pytest.raises(TypeError, match="settings must be a ClueSettings"):
        clue.attribute(x, settings={"lr": 0.05})
    with pytest.raises(ValueError, match="uncertainty_weight must be a non-negative number"):
        ClueSettings(uncertainty_weight=-1.0)
    with pytest.raises(ValueError, match="distance must be one of"):
        ClueSettings(distance="cosine")
    with pytest.raises(ValueError, match="measure must be one of"):
        ClueSettings(measure="mutual")
    with pytest.raises(ValueError, match="patience must be a positive int"):
        ClueSettings(patience=0)
    with pytest.raises(ValueError, match="lr must be a positive number"):
        ClueSettings(lr=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.lr = 0.1


# ----------------------------------------------------------------------------------- delta-CLUE


def test_delta_clue_solutions_stay_in_the_ball_and_differ(uf, uncertain, digits_vae):
    delta = 1.5
    maps, found = DeltaCLUE(uf, digits_vae).attribute(
        uncertain[:6], delta=delta, n_starts=4, return_counterfactuals=True
    )
    centres = digits_vae.encode(uncertain[:6]).detach()
    assert found.latents.shape == (6, 4, 8) and found.images.shape == (6, 4, 1, 8, 8)
    assert ((found.latents - centres.unsqueeze(1)).norm(dim=-1) <= delta + 1e-5).all()
    assert (torch.cdist(found.latents, found.latents) + torch.eye(4) > 1e-3).all()  # a diverse set
    assert (found.uncertainty.min(1).values < found.input_uncertainty).all()
    best = found.images[torch.arange(6), found.objective.argmin(1)]
    assert torch.allclose(maps, (uncertain[:6] - best).abs().sum(1, keepdim=True))
    mean = DeltaCLUE(uf, digits_vae).attribute(uncertain[:6], delta=delta, n_starts=4, aggregate="mean")
    expected = (uncertain[:6].unsqueeze(1) - found.images).abs().sum(2).mean(1, keepdim=True)
    assert torch.allclose(mean, expected, atol=1e-6)


def test_delta_clue_batched_equals_one_by_one(uf, uncertain, digits_vae):
    dclue = DeltaCLUE(uf, digits_vae)
    batched = dclue.counterfactuals(uncertain[:3], n_starts=3, seed=5)
    alone = dclue.counterfactuals(uncertain[2:3], n_starts=3, seed=5)
    assert torch.equal(alone.iterations, batched.iterations[2:3])
    assert torch.allclose(alone.latents, batched.latents[2:3], atol=1e-4)


def test_ball_helpers_by_hand():
    offsets = uniform_in_ball(torch.Size((2000, 3)), 2.0, torch.Generator().manual_seed(0))
    norms = offsets.norm(dim=1)
    assert norms.max() <= 2.0 and norms.max() > 1.95
    # uniform in a 3-ball: P(|u| <= r/2) = 1/8
    assert abs((norms <= 1.0).double().mean().item() - 0.125) < 0.03
    centre = torch.tensor([[1.0, 1.0]])
    assert torch.allclose(project_to_ball(torch.tensor([[4.0, 5.0]]), centre, 2.5), torch.tensor([[2.5, 3.0]]))
    assert torch.equal(project_to_ball(torch.tensor([[1.5, 1.0]]), centre, 2.5), torch.tensor([[1.5, 1.0]]))


# ------------------------------------------------------------------------- CounterfactualPathIG


def smooth(module):
    """A copy with every ReLU replaced by a Softplus: a classifier or decoder without kinks."""
    module = copy.deepcopy(module)
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(parent, name, nn.Softplus(beta=10))
    return module


@pytest.mark.parametrize("fiducial", ["clue", "in_class"])
def test_completeness_within_1e3_at_200_steps(digits_ensemble, uncertain, digits_vae, fiducial):
    """Smooth models: the midpoint rule's error is then well below 1e-3 at 200 steps."""
    uf = UncertaintyForward([smooth(member) for member in digits_ensemble])
    cpig = CounterfactualPathIG(uf, smooth(digits_vae))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FiducialWarning)
        attributions, delta, found = cpig.attribute(
            uncertain[:6], fiducial=fiducial, n_steps=200, return_convergence_delta=True, return_fiducial=True
        )
    expected = uf(uncertain[:6]).detach() - uf(found.images).detach()
    assert attributions.shape == uncertain[:6].shape
    assert torch.allclose(attributions.flatten(1).sum(1), expected, atol=1e-3)
    assert torch.allclose(delta, attributions.flatten(1).sum(1) - expected, atol=1e-6)
    assert torch.allclose(found.input_uncertainty, uf(uncertain[:6]).detach())
    if fiducial == "in_class":
        assert (found.fiducial_class == found.input_class).all()
        assert (found.uncertainty < found.input_uncertainty).all()


def test_completeness_error_shrinks_with_steps_on_relu_models(uf, uncertain, digits_vae):
    """ReLU kinks make the integrand piecewise smooth: the error falls more slowly, but falls."""
    cpig = CounterfactualPathIG(uf, digits_vae)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FiducialWarning)
        latents = cpig.fiducials(uncertain[:6], "clue").latents
    errors = [
        cpig.attribute(uncertain[:6], fiducial=latents, n_steps=n, return_convergence_delta=True)[1].abs().max()
        for n in (50, 800)
    ]
    assert errors[1] < 1e-3 and errors[1] < errors[0] / 4


def test_jvp_path_derivative_equals_finite_differences(uf, uncertain, digits_vae):
    vae = copy.deepcopy(digits_vae).double()
    x = uncertain[:3].double()
    cpig = CounterfactualPathIG(uf, vae)
    start, end = vae.encode(x).detach() + 0.7, vae.encode(x).detach()
    alphas = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    (points,), (velocities,) = cpig.decoded_path(start, end, x)(alphas)
    h = 1e-6
    for k, alpha in enumerate(alphas):
        up = vae.decode(start + (alpha + h) * (end - start))
        down = vae.decode(start + (alpha - h) * (end - start))
        assert torch.allclose(points[k * 3 : (k + 1) * 3], vae.decode(start + alpha * (end - start)))
        assert torch.allclose(velocities[k * 3 : (k + 1) * 3], (up - down) / (2 * h), atol=1e-7, rtol=1e-5)


def test_decomposition_sums_and_matches_single_measure_runs(uf, uncertain, digits_vae):
    x = uncertain[:4]
    cpig = CounterfactualPathIG(uf, digits_vae)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FiducialWarning)
        latents = cpig.fiducials(x, "clue").latents
        parts, deltas = cpig.attribute(x, fiducial=latents, n_steps=32, decompose=True, return_convergence_delta=True)
        for measure in ("total", "aleatoric", "epistemic"):
            single, delta = CounterfactualPathIG(uf.with_measure(measure), digits_vae).attribute(
                x, fiducial=latents, n_steps=32, return_convergence_delta=True
            )
            assert torch.allclose(parts.select(measure), single, atol=1e-6)
            assert torch.allclose(deltas.select(measure), delta, atol=1e-5)
    assert torch.allclose(parts.total, parts.aleatoric + parts.epistemic)


class LinearPair:
    """A linear encoder/decoder: the decoded latent line is a straight pixel-space line."""

    def __init__(self, dim=64, latent=5):
        generator = torch.Generator().manual_seed(0)
        self.down = torch.randn(dim, latent, generator=generator) / dim**0.5
        self.up = torch.randn(latent, dim, generator=generator) / latent**0.5

    def encode(self, x):
        return x.flatten(1) @ self.down

    def decode(self, z):
        return (z @ self.up).view(-1, 1, 8, 8)


def test_linear_decoder_gives_captum_ig_on_both_segments(uf, uncertain):
    pair, x = LinearPair(), uncertain[:3]
    fiducial = torch.randn(3, 5, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FiducialWarning)
        ours = CounterfactualPathIG(uf, pair).attribute(x, fiducial=fiducial, n_steps=20)
    reconstruction, start = pair.decode(pair.encode(x)), pair.decode(fiducial)
    ig = IntegratedGradients(uf)
    latent_segment = ig.attribute(reconstruction, baselines=start, n_steps=20, method="riemann_middle")
    gap_segment = ig.attribute(x, baselines=reconstruction, n_steps=20, method="riemann_middle")
    assert torch.allclose(ours, latent_segment + gap_segment, atol=1e-5)


def test_batched_fiducial_search_and_attribution_equal_one_by_one(digits_ensemble, uncertain, digits_vae):
    """In float64, so that batch-size-dependent rounding cannot steer 500 Adam steps apart."""
    uf = UncertaintyForward([copy.deepcopy(member).double() for member in digits_ensemble])
    cpig = CounterfactualPathIG(uf, copy.deepcopy(digits_vae).double())
    x = uncertain[:3].double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FiducialWarning)
        batched = cpig.attribute(x, fiducial="in_class", n_steps=16, return_fiducial=True)
        for i in range(3):
            alone = cpig.attribute(x[i : i + 1], fiducial="in_class", n_steps=16, return_fiducial=True)
            assert torch.allclose(alone[1].latents, batched[1].latents[i : i + 1], atol=1e-6)
            assert torch.allclose(alone[0], batched[0][i : i + 1], atol=1e-6)
    chunked = cpig.attribute(x, fiducial=batched[1].latents, n_steps=16, internal_batch_size=7)
    assert torch.allclose(chunked, batched[0], atol=1e-8)


def test_invalid_fiducials_warn_naming_the_inputs(uf, digits, digits_vae):
    with torch.no_grad():
        classes = uf.predictive(digits.x_test).mean(0).argmax(1)
        u = uf(digits.x_test)
    confident = u.argsort()[:40]
    x = digits.x_test[confident[:2]]
    other = confident[(classes[confident] != classes[confident[0]]) & (classes[confident] != classes[confident[1]])]
    fiducial_images = torch.stack([digits.x_test[confident[0]], digits.x_test[other[0]]])
    cpig = CounterfactualPathIG(uf, digits_vae)
    with pytest.warns(FiducialWarning, match=r"inputs \[1\] change the predicted class") as caught:
        cpig.attribute(x, fiducial=fiducial_images, n_steps=4)
    assert caught[0].filename == __file__, "the warning points at the line that called attribute"
    with pytest.warns(FiducialWarning, match=r"do not lower the uncertainty"):
        # the most certain digits, explained from a fiducial that is an uncertain digit
        uncertain_image = digits.x_test[u.argmax()].expand(2, 1, 8, 8)
        cpig.attribute(x, fiducial=uncertain_image, n_steps=4)


def _count_rows(module):
    rows = [0]
    handle = module.register_forward_pre_hook(lambda _module, inputs: rows.__setitem__(0, rows[0] + len(inputs[0])))
    return rows, handle


@pytest.mark.parametrize("fiducial", ["clue", "in_class", "latents"])
def test_attribution_costs_the_fiducials_and_the_path_alone(uf, uncertain, digits_vae, fiducial):
    """Finding the fiducials encodes the inputs once and reads the posterior at the inputs and at
    the fiducials; attribute adds the path points and nothing else (no second encoding, no second
    reading of either end)."""
    x, steps = uncertain[:3], 4
    cpig = CounterfactualPathIG(uf, digits_vae)
    kwargs = dict(max_iterations=2)
    if fiducial == "latents":
        fiducial, kwargs = cpig.fiducials(x, "clue", **kwargs).latents, {}
    posterior_rows, posterior_hook = _count_rows(uf.posterior)
    encoder_rows, encoder_hook = _count_rows(digits_vae.encoder)
    try:
        cpig.fiducials(x, fiducial, **kwargs)
        searched = posterior_rows[0], encoder_rows[0]
        posterior_rows[0] = encoder_rows[0] = 0
        _, delta = cpig.attribute(x, fiducial, n_steps=steps, return_convergence_delta=True, fiducial_kwargs=kwargs)
    finally:
        posterior_hook.remove()
        encoder_hook.remove()
    assert searched[1] == encoder_rows[0] == len(x)
    assert posterior_rows[0] == searched[0] + 2 * steps * len(x)
    if isinstance(fiducial, torch.Tensor):
        assert searched[0] == 2 * len(x)
    with torch.no_grad():  # the delta's ends are the values at the inputs and at the fiducials
        found = cpig.fiducials(x, fiducial, **kwargs)
    assert torch.allclose(found.input_uncertainty, uf(x).detach())
    assert torch.allclose(found.uncertainty, uf(found.images).detach())


class WrongShape(LinearPair):
    def decode(self, z):
        return (z @ self.up).view(-1, 64)


def test_bad_input_raises_clear_errors(uf, uncertain, digits_vae):
    x = uncertain[:2]
    with pytest.raises(ValueError, match="needs a generative model"):
        CounterfactualPathIG(uf, None)
    with pytest.raises(ValueError, match="needs a generative model"):
        CLUE(uf, None)
    with pytest.raises(TypeError, match="UncertaintyForward"):
        CounterfactualPathIG(lambda t: t.sum(1), digits_vae)
    with pytest.raises(ValueError, match="decode returned shape"):
        CounterfactualPathIG(uf, WrongShape()).attribute(x, fiducial=torch.zeros(2, 5))
    with pytest.raises(ValueError, match="decode returned shape"):
        CLUE(uf, WrongShape()).attribute(x)
    cpig = CounterfactualPathIG(uf, digits_vae)
    with pytest.raises(ValueError, match=r"non-finite latent codes.*\[1\]"):
        cpig.attribute(x, fiducial=torch.tensor([[0.0] * 8, [float("inf")] + [0.0] * 7]))
    with pytest.raises(ValueError, match="latent codes"):
        cpig.attribute(x, fiducial=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="fiducial must be one of"):
        cpig.attribute(x, fiducial="black")
    with pytest.raises(ValueError, match="n_steps"):
        cpig.attribute(x, fiducial=torch.zeros(8), n_steps=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        cpig.attribute(x * 3, fiducial="in_class")
    with pytest.raises(ValueError, match="NaN"):
        CLUE(uf, digits_vae).attribute(x * float("nan"))
    with pytest.raises(TypeError, match="float32.*float64"):
        CLUE(uf, digits_vae).attribute(x.double())
    with pytest.raises(ValueError, match="delta"):
        DeltaCLUE(uf, digits_vae).attribute(x, delta=0)
    with pytest.raises(ValueError, match="aggregate"):
        DeltaCLUE(uf, digits_vae).attribute(x, aggregate="median")
    with pytest.raises(ValueError, match="distance must be"):
        CLUE(uf, digits_vae).attribute(x, distance="cosine")
    with pytest.raises(ValueError, match="max_iterations"):
        CLUE(uf, digits_vae).attribute(x, max_iterations=0)


def test_result_forms_unpack_as_before_and_read_by_name(uf, uncertain, digits_vae):
    x, fiducial = uncertain[:2], torch.zeros(8)
    cpig = CounterfactualPathIG(uf, digits_vae)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FiducialWarning)
        plain = cpig.attribute(x, fiducial, n_steps=4)
        captum = cpig.attribute(x, fiducial, n_steps=4, return_convergence_delta=True)
        with_fiducials = cpig.attribute(x, fiducial, n_steps=4, return_fiducial=True)
        both = cpig.attribute(x, fiducial, n_steps=4, return_convergence_delta=True, return_fiducial=True)
    assert isinstance(plain, torch.Tensor)
    assert type(captum) is tuple and len(captum) == 2  # Captum's (attributions, delta)
    attributions, found = with_fiducials
    assert isinstance(with_fiducials, CounterfactualPathResult) and isinstance(found, Fiducials)
    assert with_fiducials.attributions is attributions and with_fiducials.fiducials is found
    assert with_fiducials.delta is None
    attributions, delta, found = both
    assert isinstance(both, CounterfactualPathResultWithDelta) and isinstance(found, Fiducials)
    assert both.attributions is attributions and both.delta is delta and both.fiducials is found
    for result in (captum[0], with_fiducials.attributions, both.attributions):
        assert torch.equal(result, plain)
    assert torch.equal(both.delta, captum[1])


def test_noise_tunnel_keeps_the_decomposition_and_captum_order(uf, uncertain, digits_vae):
    x = uncertain[:2]
    fiducial = torch.zeros(8)  # one latent code shared by every (noisy) input
    cpig = CounterfactualPathIG(uf, digits_vae)
    kwargs = dict(nt_type="smoothgrad", nt_samples=2, stdevs=0.05, fiducial=fiducial, n_steps=6)
    torch.manual_seed(3)
    total, aleatoric, epistemic = NoiseTunnel(cpig).attribute(x, decompose=True, **kwargs)
    for measure, smoothed in (("total", total), ("epistemic", epistemic)):
        torch.manual_seed(3)
        alone = NoiseTunnel(CounterfactualPathIG(uf.with_measure(measure), digits_vae)).attribute(x, **kwargs)
        assert torch.allclose(smoothed, alone, atol=1e-6)
    # Captum's positional order: inputs, fiducial (the baselines' slot), target, additional args, n_steps
    positional = cpig.attribute(x, fiducial, None, None, 6)
    assert torch.allclose(positional, cpig.attribute(x, fiducial=fiducial, n_steps=6))
    # target: the class terms of Eq. 4 add up to the scalar measure's attribution
    per_class = sum(cpig.attribute(x, fiducial, target=c, n_steps=6) for c in range(10))
    assert torch.allclose(per_class, positional, atol=1e-5)
    with pytest.raises(ValueError, match="tensor fiducial"):
        cpig.attribute(x, "clue", None, torch.ones(2))


# ------------------------------------------------ the Featurespace reference code's in-class reading


def test_reference_fiducials_keep_the_class_and_lower_the_uncertainty(uf, uncertain, digits_vae):
    uncertain = uncertain[:6]
    settings = dict(reference_in_class_settings(uncertain), max_iterations=150)  # 2000 takes minutes here
    latents = in_class_fiducials(uf, digits_vae, uncertain, **settings)
    found = CounterfactualPathIG(uf, digits_vae).fiducials(uncertain, latents)
    assert found.valid.all()


def test_reference_class_term_equals_a_literal_objective(uf, uncertain, digits_ensemble, digits_vae):
    """The search minimises sum-BCE + 1e4*H*W * Keras BCE(onehot, mean softmax) + 0.5 ||z||^2."""
    x = uncertain[:3]
    weight = 1e4 * 64
    with torch.no_grad():
        target = torch.stack([torch.softmax(m(x), -1) for m in digits_ensemble]).mean(0).argmax(-1)

    def literal(latents, rows):
        losses = []
        for z, row in zip(latents, rows.tolist()):
            image = decode_latents(digits_vae, z[None], x[row : row + 1]).clamp(1e-6, 1 - 1e-6)
            reconstruction = -(x[row] * image.log() + (1 - x[row]) * (1 - image).log()).sum()
            p = torch.stack([torch.softmax(m(image), -1)[0] for m in digits_ensemble]).mean(0).clamp(1e-7, 1 - 1e-7)
            onehot = torch.zeros_like(p)
            onehot[target[row]] = 1
            keras_bce = -(onehot * p.log() + (1 - onehot) * (1 - p).log()).mean()
            losses.append(reconstruction + weight * keras_bce + 0.5 * z.square().sum())
        return torch.stack(losses)

    with torch.no_grad():
        start = encode_inputs(digits_vae, x)
    expected = search_latents(literal, start, lr=0.01, max_iterations=15).latents
    settings = dict(reference_in_class_settings(x), max_iterations=15, stopping=None)
    assert torch.allclose(in_class_fiducials(uf, digits_vae, x, **settings), expected, atol=1e-4)


def test_refined_latents_reconstruct_better_and_keep_completeness(uf, uncertain, digits_vae):
    uncertain = uncertain[:6]
    refined = reconstruction_latents(digits_vae, uncertain)
    with torch.no_grad():
        raw = encode_inputs(digits_vae, uncertain)
        loss = [
            reconstruction_loss(decode_latents(digits_vae, z, uncertain), uncertain) + 0.5 * z.square().sum(1)
            for z in (raw, refined)
        ]
    assert (loss[1] <= loss[0] + 1e-9).all() and (loss[1] < loss[0]).any()
    cpig = CounterfactualPathIG(uf, digits_vae)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FiducialWarning)
        attributions, delta = cpig.attribute(
            uncertain, fiducial="in_class", n_steps=64, latent_end="refined", return_convergence_delta=True
        )
        plain = cpig.attribute(uncertain, fiducial="in_class", n_steps=64)
    assert delta.abs().max() < 0.05 * uf(uncertain).detach().max()
    assert not torch.allclose(attributions, plain)
    with pytest.raises(ValueError, match="latent_end"):
        cpig.attribute(uncertain, latent_end="decoder")
