"""The integrations with laplace-torch, bayesian-torch and torch-uncertainty, against the real
packages: every posterior is deterministic (same samples on every call, an input's value
independent of its batch), UA-Backprop is complete on it on every path (FullGrad's bias layers
recorded), Captum's IG is repeatable, and the user's models are left untouched."""

import importlib
import sys
from dataclasses import dataclass
from typing import Callable, List

import bayesian_torch.layers as bayes_layers
import pytest
import torch
import torch.nn.functional as F
from bayesian_torch.models.dnn_to_bnn import dnn_to_bnn
from captum.attr import IntegratedGradients
from laplace import Laplace
from torch import nn
from torch_uncertainty.methods import deep_ensembles, mc_dropout
from torch_uncertainty.models.classification import lenet

import captum_uncertainty
from captum_uncertainty import DeepEnsemble, MCDropout, UABackprop, UncertaintyForward, WeightSamples
from captum_uncertainty.attr._utils.gradients import captured_layer_outputs
from captum_uncertainty.integrations import from_bayesian_torch, from_laplace, from_torch_uncertainty
from captum_uncertainty.integrations.bayesian_torch import PLAIN_LAYERS
from tests.helpers import assert_untouched, model_state, randomize_batchnorm

PATHS = ("fullgrad", "inputgrad", "integrated_gradients")
CLASSES = 4


# ----------------------------------------------------------------------------- models
def cnn(seed: int, dropout: bool = False) -> nn.Sequential:
    """Conv - BatchNorm (non-trivial statistics) - ReLU - Conv - ReLU - Linear on 8x8 inputs, float64,
    eval mode; ``dropout`` adds a Dropout2d and a Dropout. Three Conv/BatchNorm layers."""
    torch.manual_seed(seed)
    layers: List[nn.Module] = [nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU()]
    layers += [nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout2d(0.3))
    layers.append(nn.Flatten())
    if dropout:
        layers.append(nn.Dropout(0.5))
    layers.append(nn.Linear(4 * 6 * 6, CLASSES))
    net = nn.Sequential(*layers).double()
    randomize_batchnorm(net[1])
    return net.eval()


CONV_BN_LAYERS = 3

BNN_PRIOR = {
    "prior_mu": 0.0,
    "prior_sigma": 1.0,
    "posterior_mu_init": 0.0,
    "posterior_rho_init": -3.0,
    "type": "Reparameterization",
    "moped_enable": False,
}


def with_noise_buffers_drawn(net: nn.Module) -> nn.Module:
    """bayesian-torch allocates its eps buffers uninitialised (NaNs compare unequal); one forward
    fills them, as in any used model."""
    with torch.no_grad():
        net(torch.zeros(1, 1, 8, 8, dtype=torch.float64))
    return net


def dnn_to_bnn_cnn(seed: int = 10) -> nn.Module:
    net = cnn(seed)
    dnn_to_bnn(net, BNN_PRIOR)
    return with_noise_buffers_drawn(net.double().eval())


class OutputKLNet(nn.Module):
    """A network written for bayesian-torch: layers and forward return ``(output, kl)``
    (reparameterized and Flipout convolutions, a Flipout linear head, log-softmax output)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = bayes_layers.Conv2dReparameterization(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = bayes_layers.Conv2dFlipout(4, 4, 3, padding=1)
        self.fc = bayes_layers.LinearFlipout(4 * 6 * 6, CLASSES)

    def forward(self, x):
        kl_sum = 0
        x, kl = self.conv1(x)
        kl_sum = kl_sum + kl
        x = F.relu(self.bn(x))
        x, kl = self.conv2(x)
        kl_sum = kl_sum + kl
        x, kl = self.fc(F.relu(x).flatten(1))
        kl_sum = kl_sum + kl
        return F.log_softmax(x, dim=1), kl_sum


def output_kl_net(seed: int = 11) -> nn.Module:
    torch.manual_seed(seed)
    net = OutputKLNet().double()
    net.bn.running_mean.uniform_(-0.5, 0.5)
    net.bn.running_var.uniform_(0.5, 1.5)
    return with_noise_buffers_drawn(net.eval())


def data_loader(x, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    y = torch.randint(0, CLASSES, (x.shape[0],), generator=generator)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)


# ----------------------------------------------------------------------------- one case per integration
@dataclass
class Case:
    """A source object of another library, the user's modules behind it and how to convert it."""

    user_modules: List[nn.Module]
    make: Callable[[], object]
    num_samples: int


@pytest.fixture(scope="module")
def x(digits):
    return digits.x_test[:3].double()


def build_case(name: str, request) -> Case:
    if name.startswith("laplace"):
        model, la = request.getfixturevalue("laplace_all" if name == "laplace_all_diag" else "laplace_last_layer")
        return Case([model], lambda: from_laplace(la, num_samples=4, seed=0), 4)
    if name == "bayesian_torch_dnn_to_bnn":
        model = dnn_to_bnn_cnn()
        return Case([model], lambda: from_bayesian_torch(model, num_samples=4, seed=0), 4)
    if name == "bayesian_torch_output_kl":
        model = output_kl_net()
        return Case([model], lambda: from_bayesian_torch(model, num_samples=4, seed=0), 4)
    if name == "torch_uncertainty_deep_ensembles":
        members = [cnn(seed) for seed in (2, 3, 4)]
        wrapper = deep_ensembles(members)
        return Case(members, lambda: from_torch_uncertainty(wrapper), 3)
    if name == "torch_uncertainty_mc_dropout":
        model = cnn(5, dropout=True)
        wrapper = mc_dropout(model, num_estimators=4)
        return Case([model], lambda: from_torch_uncertainty(wrapper, seed=0), 4)
    raise KeyError(name)


CASES = (
    "laplace_all_diag",
    "laplace_last_layer_kron",
    "bayesian_torch_dnn_to_bnn",
    "bayesian_torch_output_kl",
    "torch_uncertainty_deep_ensembles",
    "torch_uncertainty_mc_dropout",
)


@pytest.fixture(scope="module")
def train_x(digits):
    return digits.x_train[:64].double()


def fitted_laplace(train_x, subset, structure, seed):
    """A fresh CNN and its Laplace approximation fitted on 64 digits with random labels."""
    model = cnn(seed)
    la = Laplace(model, "classification", subset_of_weights=subset, hessian_structure=structure, prior_precision=10.0)
    la.fit(data_loader(train_x))
    return model, la


@pytest.fixture(scope="module")
def laplace_all(train_x):
    return fitted_laplace(train_x, "all", "diag", seed=1)


@pytest.fixture(scope="module")
def laplace_last_layer(train_x):
    return fitted_laplace(train_x, "last_layer", "kron", seed=7)


@pytest.fixture(scope="module", params=CASES)
def case(request):
    return build_case(request.param, request)


@pytest.fixture(scope="module")
def posterior(case):
    return case.make()


# ----------------------------------------------------------------------------- every integration
def test_same_outputs_on_every_call_and_independent_of_the_batch(case, posterior, x):
    uf = UncertaintyForward(posterior, measure="epistemic")
    assert posterior.num_samples == case.num_samples
    first, second = uf.sample_outputs(x), uf.sample_outputs(x)
    assert torch.equal(first, second)
    assert torch.equal(case.make()(x), first)  # the same seed gives the same samples
    batch = uf(x)
    assert bool((batch > 0).all())
    for row in range(x.shape[0]):
        alone = uf(x[row : row + 1])
        others = torch.cat([x[row : row + 1], torch.rand_like(x)])
        torch.testing.assert_close(alone, batch[row : row + 1], rtol=0, atol=1e-6)
        torch.testing.assert_close(uf(others)[:1], alone, rtol=0, atol=1e-6)


@pytest.mark.parametrize("path", PATHS)
def test_ua_backprop_is_complete_and_repeatable(posterior, x, path):
    uf = UncertaintyForward(posterior, measure="epistemic")
    explainer = UABackprop(uf)
    maps = explainer.attribute(x, path=path, n_steps=4)
    assert maps.shape == (x.shape[0], 1, 8, 8)
    torch.testing.assert_close(maps.flatten(1).sum(1), uf(x).detach(), rtol=1e-4, atol=1e-12)
    assert torch.equal(maps, explainer.attribute(x, path=path, n_steps=4))


def test_fullgrad_records_every_conv_and_batchnorm_layer_of_every_sample(case, posterior, x):
    uf = UncertaintyForward(posterior)
    with captured_layer_outputs(posterior.sample_modules(), posterior, spatial_only=True) as records:
        uf(x.clone().requires_grad_())
    # a record holds one sample's N rows (ensembles) or all S * N rows (MC dropout)
    per_sample_layer_calls = sum(record.output.shape[0] for record in records) // x.shape[0]
    assert per_sample_layer_calls == case.num_samples * CONV_BN_LAYERS
    assert all(isinstance(record.module, (nn.Conv2d, nn.BatchNorm2d)) for record in records)


def test_captum_integrated_gradients_is_repeatable(posterior, x):
    ig = IntegratedGradients(UncertaintyForward(posterior, measure="total"))
    first = ig.attribute(x, baselines=x * 0, n_steps=4)
    assert torch.equal(first, ig.attribute(x, baselines=x * 0, n_steps=4))
    assert bool(torch.isfinite(first).all()) and float(first.abs().sum()) > 0


def test_user_modules_untouched(case, x):
    before = model_state(case.user_modules)
    posterior = case.make()
    uf = UncertaintyForward(posterior, measure="epistemic")
    UABackprop(uf).attribute(x, path="fullgrad")
    UABackprop(uf).attribute(x, path="integrated_gradients", n_steps=4)
    IntegratedGradients(uf).attribute(x, baselines=x * 0, n_steps=4)
    assert_untouched(before, case.user_modules)


# ----------------------------------------------------------------------------- laplace-torch
def parameter_stack(posterior, name):
    return torch.stack([dict(member.named_parameters())[name].detach() for member in posterior.sample_modules()])


def test_laplace_all_weights_vary_and_la_is_untouched(laplace_all, x):
    model, la = laplace_all
    mean, state = la.mean.clone(), model_state([model])
    posterior = from_laplace(la, num_samples=4, seed=3)
    assert isinstance(posterior, WeightSamples)
    for name in ("0.weight", "1.bias", "6.weight"):
        samples = parameter_stack(posterior, name)
        assert not torch.equal(samples[0], samples[1]), name
    assert all(member is not model for member in posterior.sample_modules())
    UABackprop(UncertaintyForward(posterior)).attribute(x)
    assert torch.equal(la.mean, mean)
    assert_untouched(state, [model])
    assert la.sample(2).shape == (2, la.n_params)  # la still samples as before


def test_laplace_last_layer_samples_only_the_last_layer(laplace_last_layer):
    model, la = laplace_last_layer
    posterior = from_laplace(la, num_samples=4, seed=0)
    assert not torch.equal(*parameter_stack(posterior, "6.weight")[:2])
    assert not torch.equal(*parameter_stack(posterior, "6.bias")[:2])
    for name in ("0.weight", "1.weight", "3.bias"):
        map_value = dict(model.named_parameters())[name].detach()
        assert all(torch.equal(value, map_value) for value in parameter_stack(posterior, name)), name
    # the copies carry no hook of laplace's FeatureExtractor, which keeps its own
    assert not any(m._forward_hooks for member in posterior.sample_modules() for m in member.modules())
    assert la.model.last_layer._forward_hooks


def test_laplace_last_layer_diag_and_seeds(train_x, x):
    _, la = fitted_laplace(train_x, "last_layer", "diag", seed=8)
    a, b, c = (from_laplace(la, num_samples=3, seed=seed) for seed in (0, 0, 1))
    assert torch.equal(a(x), b(x))
    assert not torch.equal(a(x), c(x))


def test_laplace_errors(laplace_last_layer):
    unfitted = Laplace(cnn(9), "classification", subset_of_weights="all", hessian_structure="diag")
    with pytest.raises(ValueError, match="not fitted.*la.fit"):
        from_laplace(unfitted, num_samples=2)
    unfitted_last_layer = Laplace(cnn(9), "classification", subset_of_weights="last_layer", hessian_structure="kron")
    with pytest.raises(ValueError, match="not fitted"):
        from_laplace(unfitted_last_layer, num_samples=2)
    regression = Laplace(cnn(9), "regression", subset_of_weights="all", hessian_structure="diag")
    with pytest.raises(ValueError, match="not fitted"):  # regression is supported: only the fit is missing
        from_laplace(regression, num_samples=2)
    with pytest.raises(TypeError, match="laplace-torch Laplace approximation"):
        from_laplace(cnn(9), num_samples=2)
    _, la = laplace_last_layer
    with pytest.raises(ValueError, match="num_samples"):
        from_laplace(la, num_samples=0)
    with pytest.raises(TypeError, match="seed"):
        from_laplace(la, num_samples=2, seed=0.5)


# ----------------------------------------------------------------------------- bayesian-torch
def test_bayesian_torch_layers_become_plain_layers_with_sampled_weights(x):
    model = dnn_to_bnn_cnn(seed=12)
    rng = torch.get_rng_state()
    posterior = from_bayesian_torch(model, num_samples=400, seed=0)
    assert torch.equal(rng, torch.get_rng_state())  # the global random state is not used
    assert isinstance(posterior, DeepEnsemble)
    first = posterior.sample_modules()[0].model
    assert type(first[0]) is nn.Conv2d and type(first[3]) is nn.Conv2d and type(first[6]) is nn.Linear
    assert first[3].padding == (1, 1) and first[0].bias is not None
    for mu_name, rho_name, attribute in [("mu_kernel", "rho_kernel", "weight"), ("mu_bias", "rho_bias", "bias")]:
        layer = model[0]
        mu, sigma = getattr(layer, mu_name).detach(), F.softplus(getattr(layer, rho_name).detach())
        draws = torch.stack([getattr(member.model[0], attribute).detach() for member in posterior.sample_modules()])
        assert not torch.equal(draws[0], draws[1])
        standard_error = sigma / len(draws) ** 0.5
        assert bool(((draws.mean(0) - mu).abs() < 5 * standard_error).all()), attribute
        torch.testing.assert_close(draws.std(0), sigma, rtol=0.15, atol=0)
    # the bayesian model still samples on its own: it was not converted in place
    assert not torch.equal(model(x), model(x))


def test_bayesian_torch_output_kl_model_keeps_its_calling_convention(x):
    model = output_kl_net(seed=13)
    posterior = from_bayesian_torch(model, num_samples=3, seed=0)
    member = posterior.sample_modules()[0]
    output, kl = member.model(x)  # the copy still returns (output, kl) pairs, with kl = 0
    assert float(kl) == 0.0
    assert torch.equal(member(x), output)
    conv = member.model.conv2.layer
    assert type(conv) is nn.Conv2d and conv.padding == (1, 1)
    # FullGrad's bias term uses the sampled bias, not mu_bias
    with captured_layer_outputs([member], None, spatial_only=True) as records:
        member(x.clone().requires_grad_())
    conv_records = [r for r in records if r.module is conv]
    assert len(conv_records) == 1 and torch.equal(conv_records[0].bias, conv.bias.detach())
    assert not torch.equal(conv.bias.detach(), model.conv2.mu_bias.detach())


@pytest.mark.parametrize("name", sorted(PLAIN_LAYERS))
def test_bayesian_torch_every_layer_type_converts_to_the_same_function(name):
    """With sigma ~ 0 the bayesian layer computes its mean network: the plain replacement (stride,
    padding, dilation, groups, output padding, bias) must compute the same."""
    layer_class = getattr(bayes_layers, name)
    common = dict(prior_mean=0.0, prior_variance=1.0, posterior_mu_init=0.0, posterior_rho_init=-3.0, bias=True)
    if name.startswith("Linear"):
        layer, x = layer_class(in_features=4, out_features=6, **common), torch.rand(2, 4)
    else:
        dims = int(name[len("ConvTranspose") if "Transpose" in name else len("Conv")])
        # bayesian-torch's own transposed Flipout layers break with groups > 1 (their KL term)
        extra = dict(output_padding=1, dilation=1, groups=1) if "Transpose" in name else dict(dilation=2, groups=2)
        layer = layer_class(4, 6, kernel_size=3, stride=2, padding=1, **extra, **common)
        x = torch.rand((2, 4) + (7,) * dims)
    layer = layer.double()
    with torch.no_grad():
        for parameter_name, parameter in layer.named_parameters():
            if parameter_name.startswith("rho"):
                parameter.fill_(-40.0)  # softplus(-40) ~ 4e-18
    x = x.double()
    dnn_to_bnn_flag, output = mean_output(layer, x)
    member = from_bayesian_torch(layer, num_samples=1).sample_modules()[0]
    plain = member.model if dnn_to_bnn_flag else member.model.layer  # else inside the (output, kl) adapter
    assert type(plain) is PLAIN_LAYERS[name]
    torch.testing.assert_close(member(x), output, rtol=1e-10, atol=1e-10)


def mean_output(layer, x):
    """The layer's own output as a tensor, and the ``dnn_to_bnn_flag`` it was computed with.

    bayesian-torch's transposed Flipout layers fail in one of the two calling conventions (their
    KL code: prior shapes, an unbound ``kl``), so both are tried."""
    for flag in (False, True):
        layer.dnn_to_bnn_flag = flag
        try:
            out = layer(x)
        except (RuntimeError, UnboundLocalError):
            continue
        return flag, out[0] if isinstance(out, tuple) else out
    raise AssertionError(f"{type(layer).__name__} fails in both calling conventions")


def test_bayesian_torch_batchnorm_wrapper_is_converted(x):
    model = nn.Sequential(bayes_layers.Conv2dReparameterization(1, 4, 3), bayes_layers.BatchNorm2dLayer(4))
    model = model.double().eval()
    posterior = from_bayesian_torch(model, num_samples=2)
    batchnorm = posterior.sample_modules()[0].model[1].layer
    assert type(batchnorm) is nn.BatchNorm2d
    output, kl = posterior.sample_modules()[0].model[1]((torch.ones(2, 4, 3, 3, dtype=torch.float64), 0))
    assert output.shape == (2, 4, 3, 3)


def test_bayesian_torch_unconvertible_layer_is_named():
    model = nn.Sequential(nn.Linear(3, 3), nn.ModuleDict({"rnn": bayes_layers.LSTMReparameterization(3, 4)}))
    with pytest.raises(ValueError, match=r"LSTMReparameterization at '1\.rnn'"):
        from_bayesian_torch(model, num_samples=2)
    with pytest.raises(ValueError, match="no bayesian-torch layer"):
        from_bayesian_torch(cnn(0), num_samples=2)
    with pytest.raises(TypeError, match="nn.Module"):
        from_bayesian_torch("model", num_samples=2)


# ----------------------------------------------------------------------------- torch-uncertainty
def test_torch_uncertainty_deep_ensembles_share_the_members():
    members = [cnn(seed) for seed in (2, 3)]
    posterior = from_torch_uncertainty(deep_ensembles(members))
    assert isinstance(posterior, DeepEnsemble)
    assert all(a is b for a, b in zip(posterior.sample_modules(), members))
    with pytest.raises(ValueError, match="2 members"):
        from_torch_uncertainty(deep_ensembles(members), num_samples=3)


def test_torch_uncertainty_mc_dropout_masks(x):
    model = cnn(5, dropout=True)
    posterior = from_torch_uncertainty(mc_dropout(model, num_estimators=4), num_samples=7, seed=1)
    assert isinstance(posterior, MCDropout) and posterior.num_samples == 7
    assert posterior.sample_modules() == [model]
    last_only = from_torch_uncertainty(mc_dropout(model, num_estimators=4, last_layer=True))
    assert last_only.dropouts == [model[7]] and last_only.num_samples == 4


def test_torch_uncertainty_reused_dropout_module_gets_a_mask_per_call_site():
    torch.manual_seed(0)
    net = lenet(in_channels=1, num_classes=CLASSES, dropout_rate=0.3).eval()  # conv_dropout runs twice
    posterior = from_torch_uncertainty(mc_dropout(net, num_estimators=3), seed=0)
    assert len(posterior.dropouts) == 4
    images = torch.rand(3, 1, 28, 28)
    uf = UncertaintyForward(posterior)
    assert torch.equal(uf(images), uf(images))
    torch.testing.assert_close(uf(images[:1]), uf(images)[:1], rtol=0, atol=1e-6)
    assert not torch.equal(*posterior(images)[:2])


def test_torch_uncertainty_errors():
    with pytest.raises(TypeError, match="deep_ensembles.*mc_dropout.*got Sequential"):
        from_torch_uncertainty(cnn(0))
    regression = deep_ensembles([cnn(0), cnn(1)], task="regression", probabilistic=False)
    with pytest.raises(ValueError, match=r"regression.*4 targets"):  # 4 outputs per input: not one target
        from_torch_uncertainty(regression)(torch.rand(2, 1, 8, 8, dtype=torch.float64))
    alpha = nn.Sequential(nn.Linear(4, 4), nn.AlphaDropout(0.2), nn.Linear(4, 3))
    with pytest.raises(ValueError, match="AlphaDropout at '1'"):
        from_torch_uncertainty(mc_dropout(alpha, num_estimators=2))


# ----------------------------------------------------------------------------- optional imports
def test_integrations_import_without_the_optional_packages(monkeypatch):
    """With the optional packages unimportable, the package still imports (in a fresh copy) and each
    function raises an ImportError saying what to install."""
    optional = ("laplace", "bayesian_torch", "torch_uncertainty", "quantus")
    monkeypatch.delattr(captum_uncertainty, "integrations", raising=False)
    for name in list(sys.modules):
        if name.startswith("captum_uncertainty.integrations"):
            monkeypatch.delitem(sys.modules, name)
        elif name.split(".")[0] in optional:
            monkeypatch.setitem(sys.modules, name, None)
    for package in optional:
        monkeypatch.setitem(sys.modules, package, None)
    integrations = importlib.import_module("captum_uncertainty.integrations")
    with pytest.raises(ImportError, match=r"laplace-torch.*pip install captum-uncertainty\[integrations\]"):
        integrations.from_laplace(object(), num_samples=2)
    with pytest.raises(ImportError, match=r"bayesian-torch.*pip install captum-uncertainty\[integrations\]"):
        integrations.from_bayesian_torch(cnn(0), num_samples=2)
    with pytest.raises(ImportError, match=r"torch-uncertainty.*pip install captum-uncertainty\[integrations\]"):
        integrations.from_torch_uncertainty(cnn(0))
    assert integrations.QuantusUncertaintyModel.__name__ == "QuantusUncertaintyModel"  # needs no quantus


def test_fullgrad_refusal_of_unconverted_bayesian_layers_points_to_the_conversion():
    model = dnn_to_bnn_cnn(seed=12)
    with pytest.raises(ValueError, match=r"(?s)cannot attribute.*path='inputgrad'.*from_bayesian_torch"):
        with captured_layer_outputs([model]):
            pass
