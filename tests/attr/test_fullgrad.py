"""FullGrad (Srinivas & Fleuret, 2019): raw-term completeness, the saliency map against a literal
reference (plain models and uncertainty forwards), model state invariance and bad input."""

import pytest
import torch

from captum_uncertainty import UncertaintyForward
from captum_uncertainty.attr.fullgrad import FullGrad
from tests.helpers import literal_fullgrad_terms, literal_min_max, make_cnn, resized


def cnn(seed, channels=1, classes=5, dtype=torch.float64):
    return make_cnn(seed, channels, classes, hidden=6, dtype=dtype)


@pytest.fixture(scope="module")
def x():
    torch.manual_seed(7)
    return torch.rand(3, 1, 8, 8, dtype=torch.float64) * 2 - 0.5


def hook_count(modules):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for root in modules for m in root.modules())


def literal_fullgrad(members, image, scalar):
    """FullGrad's map by hand for one image: each raw term is |.|, min-max, channel-summed and
    bilinearly resized, then all are added."""
    input_term, bias_terms = literal_fullgrad_terms(members, image, scalar)
    saliency = literal_min_max(input_term.abs()).sum(0)
    for term in bias_terms:
        saliency = saliency + resized(literal_min_max(term.abs()).sum(0), image.shape[1:])
    return saliency


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_raw_terms_sum_to_the_logit_on_a_relu_cnn(x, dtype, rtol):
    model = cnn(0, dtype=dtype)
    inputs = x.to(dtype)
    for target in range(5):
        terms = FullGrad(model).raw_terms(inputs, target=target)
        with torch.no_grad():
            logit = model(inputs)[:, target]
        # conv, BatchNorm, conv, linear, linear: the linear biases are included, as in the paper
        assert len(terms.bias_terms) == 5
        assert terms.input_term.shape == inputs.shape
        assert torch.allclose(terms.total(), logit, rtol=rtol, atol=rtol * 1e-2)
    # per-example targets
    terms = FullGrad(model).raw_terms(inputs, target=torch.tensor([0, 3, 4]))
    with torch.no_grad():
        expected = model(inputs)[torch.arange(3), torch.tensor([0, 3, 4])]
    assert torch.allclose(terms.total(), expected, rtol=rtol, atol=rtol * 1e-2)


def test_map_of_a_model_matches_the_literal_reference(x):
    model = cnn(1)
    saliency = FullGrad(model).attribute(x, target=2)
    assert saliency.shape == (3, 1, 8, 8) and (saliency >= 0).all()
    for n in range(x.shape[0]):
        expected = literal_fullgrad([model], x[n], lambda logits: logits[0][0, 2])
        assert torch.allclose(saliency[n, 0], expected, atol=1e-10)


@pytest.mark.parametrize("measure", ["total", "aleatoric", "epistemic"])
def test_map_of_an_uncertainty_forward_matches_the_literal_reference(x, measure):
    members = [cnn(seed) for seed in (2, 3)]
    uf = UncertaintyForward(members, measure=measure)

    def uncertainty(logits):
        p = torch.softmax(torch.stack(logits)[:, 0], dim=-1)  # (S, C)
        mean = p.mean(0)
        total = -(mean * torch.log(mean)).sum()
        aleatoric = -(p * torch.log(p)).sum(1).mean()
        return {"total": total, "aleatoric": aleatoric, "epistemic": total - aleatoric}[measure]

    saliency = FullGrad(uf).attribute(x)
    for n in range(x.shape[0]):
        assert torch.allclose(saliency[n, 0], literal_fullgrad(members, x[n], uncertainty), atol=1e-10)


def test_model_state_restored_after_success_and_after_an_error(x):
    members = [cnn(seed) for seed in (4, 5)]
    members[0].train()
    members[1][0].weight.requires_grad_(False)
    training = [[m.training for m in member.modules()] for member in members]
    grads = [[p.requires_grad for p in member.parameters()] for member in members]
    hooks = hook_count(members)

    def unchanged():
        assert [[m.training for m in member.modules()] for member in members] == training
        assert [[p.requires_grad for p in member.parameters()] for member in members] == grads
        assert all(p.grad is None for member in members for p in member.parameters())
        assert hook_count(members) == hooks

    FullGrad(UncertaintyForward(members, measure="epistemic")).attribute(x)
    unchanged()
    FullGrad(members[1]).attribute(x, target=0)
    unchanged()
    with pytest.raises(RuntimeError):  # the target index fails inside the hooked forward
        FullGrad(members[1]).attribute(x, target=99)
    unchanged()


def test_bad_input(x):
    model = cnn(6)
    fullgrad = FullGrad(model)
    assert not fullgrad.has_convergence_delta() and fullgrad.multiplies_by_inputs
    with pytest.raises(ValueError, match="spatial layout"):
        fullgrad.attribute(x.flatten(1), target=0)
    with pytest.raises(TypeError, match="inputs"):
        fullgrad.attribute(x.numpy(), target=0)
    with pytest.raises(ValueError, match="target"):
        fullgrad.attribute(x)
    with pytest.raises(ValueError, match="target"):
        FullGrad(UncertaintyForward([model])).attribute(x, target=1)
    with pytest.raises(TypeError, match="forward_func"):
        FullGrad(lambda inputs: inputs.sum((1, 2, 3)))
