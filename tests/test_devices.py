"""Every tensor the library makes lives on the inputs' device and dtype.

There is no GPU here, so the CPU stands in for "the inputs' device" and ``meta`` for "anywhere
else": models and inputs are built on the CPU, then ``torch.set_default_device("meta")`` sends
every tensor created without ``device=`` to the meta device, where mixing it with a CPU tensor
raises. Each public attribution class (every path and option) and every metric runs under it and
must return what it returns without it. The same calls run on CUDA where a GPU exists.
"""

import pytest
import torch
from captum.attr import NoiseTunnel, Saliency

from captum_uncertainty import (
    CLUE,
    BlurIntegratedGradients,
    CounterfactualPathIG,
    DeltaCLUE,
    ExplanationDistribution,
    FullGrad,
    Gaussian,
    GuidedIntegratedGradients,
    MCDropout,
    SampleCallable,
    SparseCounterfactualIG,
    UABackprop,
    UncertaintyForward,
    UncertaintyIntegratedGradients,
    WeightSamples,
    gaussian_blur,
)
from captum_uncertainty.attr.counterfactual_path import reference_in_class_settings
from captum_uncertainty.generative import VAE
from captum_uncertainty.metrics import (
    anomaly_localization,
    blurring_test,
    entropy_information_curve,
    full_blur_sigma,
    insertion_deletion,
    make_anomalies,
    uncertainty_reduction_curve,
)
from captum_uncertainty.mitigation import UncertaintyAttention, attention_weights
from tests.helpers import assert_same_tensors, default_device, make_cnn, make_regressor


def dropout_cnn(seed, dtype):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Flatten(), torch.nn.Linear(108, 4)
    ).to(dtype)


def tabular_mlp(seed, dtype):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).to(dtype)


class World:
    """Models, posteriors and inputs, built on one device in one dtype."""

    def __init__(self, device, dtype=torch.float64):
        members = [make_cnn(seed).to(device=device, dtype=dtype) for seed in range(3)]
        self.uf = UncertaintyForward(members, measure="epistemic")
        self.mc = UncertaintyForward(MCDropout(dropout_cnn(0, dtype).to(device), num_samples=4, seed=1), "total")
        self.weights = UncertaintyForward(WeightSamples(members[0], [m.state_dict() for m in members]), "total")
        self.callable = UncertaintyForward(
            SampleCallable(lambda x: torch.stack([m(x) for m in members]), layout="samples_first", modules=members)
        )
        tabular = [tabular_mlp(seed, dtype).to(device) for seed in range(3)]
        self.tabular = UncertaintyForward(tabular, measure="total")
        regressors = [make_regressor(seed, outputs=2, features=6).to(dtype).to(device) for seed in range(3)]
        self.regression = UncertaintyForward(regressors, "aleatoric", likelihood=Gaussian(variance="log_variance"))
        means_only = [make_regressor(seed, outputs=1, features=6).to(dtype).to(device) for seed in range(3)]
        self.means_only = UncertaintyForward(
            means_only, "epistemic", likelihood=Gaussian(variance=None, noise_variance=0.5)
        )
        generator = torch.Generator().manual_seed(0)
        self.x = (torch.rand(3, 1, 8, 8, generator=generator, dtype=dtype) * 2).to(device)
        self.features = torch.randn(4, 6, generator=generator, dtype=dtype).to(device)
        self.maps = torch.rand(3, 1, 8, 8, generator=generator, dtype=dtype).to(device)
        self.train = torch.rand(20, 1, 8, 8, generator=generator, dtype=dtype).to(device)
        torch.manual_seed(0)
        self.vae = VAE(image_shape=(1, 8, 8), latent_dim=4).to(device=device, dtype=dtype).eval()
        self.classifier = make_cnn(7).to(device=device, dtype=dtype)


def ua(world, **options):
    return UABackprop(world.uf).attribute(world.x, n_steps=3, **options)


CASES = {
    # --- UncertaintyIntegratedGradients: every baseline kind and option
    "uig": lambda w: UncertaintyIntegratedGradients(w.uf).attribute(w.x, n_steps=4),
    "uig black_white delta": lambda w: UncertaintyIntegratedGradients(w.uf).attribute(
        w.x, "black_white", n_steps=4, method="riemann_trapezoid", return_convergence_delta=True
    ),
    "uig decompose chunked": lambda w: UncertaintyIntegratedGradients(w.uf).attribute(
        w.x, 0.5, n_steps=4, internal_batch_size=3, decompose=True
    ),
    "uig target local": lambda w: UncertaintyIntegratedGradients(w.uf, multiply_by_inputs=False).attribute(
        w.x, w.x.flip(0), target=1, n_steps=4
    ),
    "uig mc dropout": lambda w: UncertaintyIntegratedGradients(w.mc).attribute(w.x, n_steps=4),
    "uig tabular": lambda w: UncertaintyIntegratedGradients(w.tabular).attribute(w.features, n_steps=4),
    "uig gaussian decompose": lambda w: UncertaintyIntegratedGradients(w.regression).attribute(
        w.features, n_steps=4, decompose=True
    ),
    "uig gaussian means only": lambda w: UncertaintyIntegratedGradients(w.means_only).attribute(w.features, n_steps=4),
    "gaussian decompose and summary": lambda w: (
        w.means_only.decompose(w.features),
        tuple(w.regression.summary(w.features).values()),
    ),
    # --- UABackprop: every path and option
    "ua fullgrad": lambda w: ua(w),
    "ua fullgrad raw decompose": lambda w: ua(w, fullgrad_postprocess="raw", decompose=True),
    "ua grad batched classes": lambda w: ua(w, path="grad", classes_per_pass=None),
    "ua inputgrad unnormalised": lambda w: ua(w, path="inputgrad", normalize=False),
    "ua inputgrad target": lambda w: ua(w, path="inputgrad", target=2),
    "ua ig black_white chunked": lambda w: ua(
        w, path="integrated_gradients", baselines="black_white", internal_batch_size=3
    ),
    "ua blur ig chunked": lambda w: ua(w, path="blur_integrated_gradients", internal_batch_size=4),
    "ua mc dropout fullgrad": lambda w: UABackprop(w.mc).attribute(w.x),
    "ua weight samples": lambda w: UABackprop(w.weights).attribute(w.x, path="inputgrad"),
    "ua callable": lambda w: UABackprop(w.callable).attribute(w.x, path="grad"),
    "ua tabular": lambda w: UABackprop(w.tabular).attribute(
        w.features, path="integrated_gradients", n_steps=3, tau1=0.1, tau2=0.5
    ),
    # --- the other attribution classes
    "fullgrad": lambda w: FullGrad(w.uf).attribute(w.x),
    "fullgrad model": lambda w: FullGrad(w.classifier).attribute(w.x, target=1),
    "blur ig": lambda w: BlurIntegratedGradients(w.uf).attribute(
        w.x, n_steps=4, internal_batch_size=3, return_convergence_delta=True
    ),
    "guided ig": lambda w: GuidedIntegratedGradients(w.uf).attribute(
        w.x, n_steps=4, internal_batch_size=2, return_convergence_delta=True
    ),
    "distribution": lambda w: ExplanationDistribution(w.uf, Saliency).attribute(w.x).std,
    "distribution gaussian": lambda w: ExplanationDistribution(w.regression, Saliency).attribute(w.features),
    "clue": lambda w: CLUE(w.uf, w.vae).attribute(w.x, max_iterations=3),
    "delta clue": lambda w: DeltaCLUE(w.uf, w.vae).attribute(w.x, n_starts=2, max_iterations=3),
    "cf path clue": lambda w: CounterfactualPathIG(w.uf, w.vae).attribute(
        w.x, "clue", n_steps=3, return_convergence_delta=True, fiducial_kwargs={"max_iterations": 3}
    ),
    "cf path in_class decompose": lambda w: CounterfactualPathIG(w.uf, w.vae).attribute(
        w.x.clamp(0, 1),
        "in_class",
        n_steps=3,
        internal_batch_size=3,
        decompose=True,
        fiducial_kwargs={"max_iterations": 3},
    ),
    "sparse counterfactual ig": lambda w: SparseCounterfactualIG(w.uf, w.vae).attribute(
        w.x, n_steps=3, return_convergence_delta=True
    ),
    "sparse counterfactual ig features": lambda w: SparseCounterfactualIG(w.regression).attribute(
        w.features, n_steps=3, replacement=w.features.mean(0)
    ),
    "cf path reference reading": lambda w: CounterfactualPathIG(w.uf, w.vae).attribute(
        w.x.clamp(0, 1),
        "in_class",
        n_steps=3,
        latent_end="refined",
        fiducial_kwargs=dict(reference_in_class_settings(w.x), max_iterations=25),
    ),
    "noise tunnel": lambda w: NoiseTunnel(UncertaintyIntegratedGradients(w.uf)).attribute(
        w.x, nt_samples=2, stdevs=0.0, n_steps=3
    ),
    # --- metrics and the mitigation attention
    "blur": lambda w: gaussian_blur(w.x, torch.tensor([0.0, 1.0, 2.5], dtype=w.x.dtype, device=w.x.device)),
    "blurring full (default)": lambda w: blurring_test(w.uf, w.x, w.maps, fraction=0.1, max_sigma=1.0).curve,
    "blurring final": lambda w: (
        blurring_test(w.uf, w.x, w.maps, fraction=0.1, max_sigma=1.0, sigma_selection="final").curve
    ),
    "blurring image": lambda w: (
        blurring_test(w.uf, w.x, w.maps, fraction=0.1, max_sigma=1.0, sigma_selection="image").curve
    ),
    "blurring step": lambda w: (
        blurring_test(w.uf, w.x, w.maps, fraction=0.1, max_sigma=1.0, sigma_selection="step").curve
    ),
    "blurring full given sigma": lambda w: (
        blurring_test(w.uf, w.x, w.maps, fraction=0.1, sigma=full_blur_sigma(w.uf, w.x, max_sigma=1.0)).curve
    ),
    "eic replaced": lambda w: (
        entropy_information_curve(w.uf, w.x, w.maps, steps=4, sigma=1.5, normalization="replaced").curve
    ),
    "urc": lambda w: uncertainty_reduction_curve(w.uf, w.x, w.maps, fraction=0.1).curve,
    "eic": lambda w: entropy_information_curve(w.uf, w.x, w.maps, steps=4, sigma=1.0).curve,
    "deletion": lambda w: insertion_deletion(w.classifier, w.x, w.maps, steps=4).curve,
    "urc gaussian features": lambda w: (
        uncertainty_reduction_curve(
            w.regression, w.features, w.features.abs(), fraction=0.5, baseline=w.features.new_zeros(6)
        ).curve
    ),
    "deletion gaussian features": lambda w: (
        insertion_deletion(w.regression, w.features, w.features.abs(), baseline=0.0, steps=3).curve
    ),
    "insertion blur": lambda w: (
        insertion_deletion(w.classifier, w.x, w.maps, mode="insertion", baseline="blur", steps=4).curve
    ),
    "anomalies": lambda w: anomaly_localization(w.maps[:2], make_anomalies(w.uf, w.x, w.train, n_images=2).boxes).iou,
    "attention": lambda w: attention_weights(w.maps, "minmax"),
    "attention layer": lambda w: UncertaintyAttention(w.classifier, space="input")(w.x, attention_weights(w.maps)),
}


def flat(result):
    """The tensors of a result (nested tuples / named tuples), in order."""
    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, (tuple, list)):
        return [t for item in result for t in flat(item)]
    if hasattr(result, "_asdict"):
        return flat(tuple(result))
    return [torch.as_tensor(result, device="cpu")]


@pytest.fixture(scope="module")
def cpu_world():
    return World("cpu")


@pytest.mark.parametrize("name", list(CASES))
def test_no_tensor_is_made_off_the_inputs_device(cpu_world, name):
    expected = flat(CASES[name](cpu_world))
    with default_device("meta"):
        got = flat(CASES[name](cpu_world))
    assert len(got) == len(expected)
    assert_same_tensors(got, expected)


@pytest.mark.parametrize("name", ["uig", "ua fullgrad", "ua ig black_white chunked", "blur ig", "blurring final"])
def test_float32_stays_float32(name):
    world = World("cpu", torch.float32)
    with default_device("meta"):
        for tensor in flat(CASES[name](world)):
            assert tensor.dtype in (torch.float32, torch.int64, torch.bool) and tensor.device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("name", list(CASES))
def test_cuda_results_equal_cpu_results(cpu_world, name):
    cuda_world = World("cuda")
    got = flat(CASES[name](cuda_world))
    for a, b in zip(got, flat(CASES[name](cpu_world))):
        assert a.device.type in ("cuda", "cpu")
        torch.testing.assert_close(a.cpu(), b, rtol=1e-5, atol=1e-7)


def test_models_and_inputs_on_different_devices_are_refused(cpu_world):
    meta_inputs = torch.empty(3, 1, 8, 8, dtype=torch.float64, device="meta")
    with pytest.raises(ValueError, match="device meta.*cpu"):
        UABackprop(cpu_world.uf).attribute(meta_inputs, path="grad")
    with pytest.raises(ValueError, match="device meta.*cpu"):
        UncertaintyIntegratedGradients(cpu_world.uf).attribute(meta_inputs)
    with pytest.raises(ValueError, match="baselines are on device meta"):
        UncertaintyIntegratedGradients(cpu_world.uf).attribute(cpu_world.x, meta_inputs)
