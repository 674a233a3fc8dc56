"""The metrics name their arguments as Captum's metrics do (``attributions``, ``max_examples_per_batch``)
in the positional order they always had; ``maps`` and ``batch_size``, the names before, still work
for one release as keyword-only aliases that warn, and giving both names is an error."""

import inspect
import math
import warnings

import pytest
import torch

from captum_uncertainty.metrics import (
    anomaly_localization,
    blurring_test,
    entropy_information_curve,
    full_blur_sigma,
    insertion_deletion,
    make_anomalies,
    uncertainty_reduction_curve,
)
from captum_uncertainty.metrics._utils.checks import NOT_GIVEN, renamed
from tests.helpers.metric_toys import (
    DT,
    WEIGHTS,
    bright_pixel_images,
    linear_probabilities,
    map_with_pixel_at_rank,
    one_pixel_uncertainty,
)

X = bright_pixel_images(2)
MAPS = torch.cat([map_with_pixel_at_rank(0), map_with_pixel_at_rank(3)])
FEATURE_X = torch.ones(2, 1, 2, 2, dtype=DT)
FEATURE_MAPS = torch.stack([WEIGHTS.view(1, 2, 2), 1 - WEIGHTS.view(1, 2, 2)])
X_TEST = torch.rand(4, 1, 6, 6, dtype=DT, generator=torch.Generator().manual_seed(0))
X_TRAIN = torch.rand(3, 1, 6, 6, dtype=DT, generator=torch.Generator().manual_seed(1))
PLANTED = torch.zeros(2, 1, 6, 6, dtype=DT)
PLANTED[0, 0, 1:3, 2:4] = 1.0
PLANTED[1, 0, 3:5, 0:2] = 1.0
BOXES = torch.tensor([[1, 2, 3, 4], [3, 0, 5, 2]])


def total(images):
    return images.sum((1, 2, 3))


class Recording:
    """A forward that remembers the batch size of every call."""

    def __init__(self, forward):
        self.forward, self.sizes = forward, []

    def __call__(self, images):
        self.sizes.append(images.shape[0])
        return self.forward(images)


# Per metric: its forward (None: it takes none), then the same call three ways, each taking the
# forward: positionally, by the new keyword names, by the old ones. Every call asks for one image
# per forward call, so a batch argument that went unused would show in the recorded sizes.
CALLS = {
    "blurring_test": (
        one_pixel_uncertainty,
        lambda f: blurring_test(f, X, MAPS, 0.25, 0.5, 2.0, 1),
        lambda f: blurring_test(
            f, X, attributions=MAPS, fraction=0.25, sigma_step=0.5, max_sigma=2.0, max_examples_per_batch=1
        ),
        lambda f: blurring_test(f, X, maps=MAPS, fraction=0.25, sigma_step=0.5, max_sigma=2.0, batch_size=1),
    ),
    "uncertainty_reduction_curve": (
        one_pixel_uncertainty,
        lambda f: uncertainty_reduction_curve(f, X, MAPS, 0.25, math.inf, 1),
        lambda f: uncertainty_reduction_curve(f, X, attributions=MAPS, fraction=0.25, max_examples_per_batch=1),
        lambda f: uncertainty_reduction_curve(f, X, maps=MAPS, fraction=0.25, batch_size=1),
    ),
    "entropy_information_curve": (
        one_pixel_uncertainty,
        lambda f: entropy_information_curve(f, X, MAPS, 8, math.inf, 1),
        lambda f: entropy_information_curve(f, X, attributions=MAPS, steps=8, max_examples_per_batch=1),
        lambda f: entropy_information_curve(f, X, maps=MAPS, steps=8, batch_size=1),
    ),
    "insertion_deletion": (
        linear_probabilities,
        lambda f: insertion_deletion(f, FEATURE_X, FEATURE_MAPS, None, "insertion", 0.0, 4, 1, 5.0, True),
        lambda f: insertion_deletion(
            f,
            FEATURE_X,
            attributions=FEATURE_MAPS,
            mode="insertion",
            steps=4,
            max_examples_per_batch=1,
            probabilities=True,
        ),
        lambda f: insertion_deletion(
            f, FEATURE_X, maps=FEATURE_MAPS, mode="insertion", steps=4, batch_size=1, probabilities=True
        ),
    ),
    "full_blur_sigma": (
        one_pixel_uncertainty,
        lambda f: full_blur_sigma(f, X, 0.5, 2.0, 1),
        lambda f: full_blur_sigma(f, X, sigma_step=0.5, max_sigma=2.0, max_examples_per_batch=1),
        lambda f: full_blur_sigma(f, X, sigma_step=0.5, max_sigma=2.0, batch_size=1),
    ),
    "make_anomalies": (
        total,
        lambda f: make_anomalies(f, X_TEST, X_TRAIN, 2, 2, None, 3, 1),
        lambda f: make_anomalies(f, X_TEST, X_TRAIN, n_images=2, patch_size=2, seed=3, max_examples_per_batch=1),
        lambda f: make_anomalies(f, X_TEST, X_TRAIN, n_images=2, patch_size=2, seed=3, batch_size=1),
    ),
    "anomaly_localization": (
        None,
        lambda f: anomaly_localization(PLANTED, BOXES, 2),
        lambda f: anomaly_localization(attributions=PLANTED, boxes=BOXES, patch_size=2),
        lambda f: anomaly_localization(maps=PLANTED, boxes=BOXES, patch_size=2),
    ),
}

# The old names each metric had, with the new name each warning must point to.
OLD_NAMES = {
    "blurring_test": {"maps": "attributions", "batch_size": "max_examples_per_batch"},
    "uncertainty_reduction_curve": {"maps": "attributions", "batch_size": "max_examples_per_batch"},
    "entropy_information_curve": {"maps": "attributions", "batch_size": "max_examples_per_batch"},
    "insertion_deletion": {"maps": "attributions", "batch_size": "max_examples_per_batch"},
    "full_blur_sigma": {"batch_size": "max_examples_per_batch"},
    "make_anomalies": {"batch_size": "max_examples_per_batch"},
    "anomaly_localization": {"maps": "attributions"},
}

# Every metric's positional parameters, in order: the old order with the new names.
POSITIONAL = {
    blurring_test: [
        "forward_func",
        "inputs",
        "attributions",
        "fraction",
        "sigma_step",
        "max_sigma",
        "max_examples_per_batch",
        "sigma_selection",
        "percent",
        "sigma",
    ],
    uncertainty_reduction_curve: [
        "forward_func",
        "inputs",
        "attributions",
        "fraction",
        "sigma",
        "max_examples_per_batch",
        "percent",
        "baseline",
    ],
    entropy_information_curve: [
        "forward_func",
        "inputs",
        "attributions",
        "steps",
        "sigma",
        "max_examples_per_batch",
        "baseline",
        "normalization",
    ],
    insertion_deletion: [
        "forward_func",
        "inputs",
        "attributions",
        "target",
        "mode",
        "baseline",
        "steps",
        "max_examples_per_batch",
        "blur_sigma",
        "probabilities",
    ],
    full_blur_sigma: ["forward_func", "inputs", "sigma_step", "max_sigma", "max_examples_per_batch"],
    make_anomalies: [
        "forward_func",
        "x_test",
        "x_train",
        "n_images",
        "patch_size",
        "candidates",
        "seed",
        "max_examples_per_batch",
    ],
    anomaly_localization: ["attributions", "boxes", "patch_size"],
}


def assert_same(a, b):
    """Equal results: tensors element for element (same dtype), everything else by ``==``."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, tuple):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert a == b


def run(name, form):
    """One of the three calls of ``name`` (0: positional, 1: new names, 2: old names), with the
    batch sizes its forward saw."""
    forward, *calls = CALLS[name]
    recording = Recording(forward) if forward is not None else None
    return calls[form](recording), recording.sizes if recording is not None else None


@pytest.mark.parametrize("name", list(CALLS))
def test_the_new_names_give_the_positional_result_without_warning(name):
    positional, sizes = run(name, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        keywords, keyword_sizes = run(name, 1)
    assert_same(keywords, positional)
    assert keyword_sizes == sizes
    if sizes is not None:
        assert set(sizes) == {1}  # the batch argument reached the forward


@pytest.mark.parametrize("name", list(CALLS))
def test_the_old_names_give_the_same_result_and_warn_naming_the_new_ones(name):
    positional, sizes = run(name, 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old, old_sizes = run(name, 2)
    assert_same(old, positional)
    assert old_sizes == sizes
    deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    expected = {
        f"{name}({old_name}=...) is deprecated: use {new_name}=" for old_name, new_name in OLD_NAMES[name].items()
    }
    assert {str(w.message) for w in deprecations} == expected and len(deprecations) == len(expected)
    # each warning points at the line that used the old name, past torch.no_grad's wrapper
    assert {w.filename for w in deprecations} == {__file__}


@pytest.mark.parametrize(
    "call, new_name",
    [
        (lambda: blurring_test(one_pixel_uncertainty, X, maps=MAPS, fraction=0.25), "attributions"),
        (lambda: uncertainty_reduction_curve(one_pixel_uncertainty, X, MAPS, batch_size=2), "max_examples_per_batch"),
        (lambda: entropy_information_curve(one_pixel_uncertainty, X, maps=MAPS, steps=2), "attributions"),
        (lambda: insertion_deletion(linear_probabilities, FEATURE_X, maps=FEATURE_MAPS, steps=2), "attributions"),
        (lambda: full_blur_sigma(one_pixel_uncertainty, X, batch_size=2), "max_examples_per_batch"),
        (lambda: make_anomalies(total, X_TEST, X_TRAIN, n_images=1, batch_size=2), "max_examples_per_batch"),
        (lambda: anomaly_localization(maps=PLANTED, boxes=BOXES), "attributions"),
    ],
    ids=list(CALLS),
)
def test_each_old_name_warns_with_a_deprecation_warning(call, new_name):
    with pytest.warns(DeprecationWarning, match=f"is deprecated: use {new_name}="):
        call()


BOTH_NAMES = {
    "blurring_test": [
        lambda: blurring_test(one_pixel_uncertainty, X, MAPS, maps=MAPS),
        lambda: blurring_test(one_pixel_uncertainty, X, attributions=MAPS, maps=MAPS),
        lambda: blurring_test(one_pixel_uncertainty, X, MAPS, max_examples_per_batch=2, batch_size=2),
    ],
    "uncertainty_reduction_curve": [
        lambda: uncertainty_reduction_curve(one_pixel_uncertainty, X, MAPS, maps=MAPS),
        lambda: uncertainty_reduction_curve(one_pixel_uncertainty, X, MAPS, 0.25, math.inf, 2, batch_size=2),
    ],
    "entropy_information_curve": [
        lambda: entropy_information_curve(one_pixel_uncertainty, X, attributions=MAPS, maps=MAPS),
        lambda: entropy_information_curve(one_pixel_uncertainty, X, MAPS, max_examples_per_batch=2, batch_size=2),
    ],
    "insertion_deletion": [
        lambda: insertion_deletion(linear_probabilities, FEATURE_X, FEATURE_MAPS, maps=FEATURE_MAPS),
        lambda: insertion_deletion(
            linear_probabilities, FEATURE_X, FEATURE_MAPS, max_examples_per_batch=2, batch_size=2
        ),
    ],
    "full_blur_sigma": [
        lambda: full_blur_sigma(one_pixel_uncertainty, X, max_examples_per_batch=2, batch_size=2),
        # an explicit None under the old name is still the old name
        lambda: full_blur_sigma(one_pixel_uncertainty, X, max_examples_per_batch=2, batch_size=None),
    ],
    "make_anomalies": [
        lambda: make_anomalies(total, X_TEST, X_TRAIN, 1, max_examples_per_batch=2, batch_size=2),
    ],
    "anomaly_localization": [
        lambda: anomaly_localization(PLANTED, BOXES, maps=PLANTED),
        lambda: anomaly_localization(attributions=PLANTED, boxes=BOXES, maps=PLANTED),
    ],
}


@pytest.mark.parametrize("name", list(BOTH_NAMES))
def test_giving_both_names_raises_type_error(name):
    for call in BOTH_NAMES[name]:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)  # raised before any warning
            with pytest.raises(TypeError, match=rf"^{name}\(\) got both \w+= and \w+="):
                call()


def test_the_map_is_still_required():
    with pytest.raises(TypeError, match=r"^blurring_test\(\) missing required argument: 'attributions'"):
        blurring_test(one_pixel_uncertainty, X)
    with pytest.raises(TypeError, match=r"^insertion_deletion\(\) missing required argument: 'attributions'"):
        insertion_deletion(linear_probabilities, FEATURE_X, mode="insertion")
    with pytest.raises(TypeError, match=r"^anomaly_localization\(\) missing required argument: 'attributions'"):
        anomaly_localization(boxes=BOXES)
    with pytest.raises(TypeError, match=r"^anomaly_localization\(\) missing required argument: 'boxes'"):
        anomaly_localization(PLANTED)


def test_errors_name_the_new_argument_whichever_name_was_used():
    with pytest.raises(ValueError, match="^attributions must have shape"):
        uncertainty_reduction_curve(one_pixel_uncertainty, X, MAPS[:1])
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="^attributions must have shape"):
        uncertainty_reduction_curve(one_pixel_uncertainty, X, maps=MAPS[:1])
    with pytest.raises(ValueError, match="^max_examples_per_batch must"):
        make_anomalies(total, X_TEST, X_TRAIN, 1, max_examples_per_batch=0)
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="^max_examples_per_batch must"):
        full_blur_sigma(one_pixel_uncertainty, X, batch_size=0)
    with pytest.raises(ValueError, match="^attributions is an empty batch"):
        anomaly_localization(PLANTED[:0], BOXES[:0])


@pytest.mark.parametrize("function", list(POSITIONAL), ids=[f.__name__ for f in POSITIONAL])
def test_signatures_put_the_new_names_where_the_old_ones_were(function):
    parameters = inspect.signature(function).parameters
    positional = [p.name for p in parameters.values() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert positional == POSITIONAL[function]
    if function is anomaly_localization:
        assert positional[0] == "attributions"
    elif function not in (full_blur_sigma, make_anomalies):
        assert positional[2] == "attributions"
    if "max_examples_per_batch" in positional:
        assert parameters["max_examples_per_batch"].default is None
    aliases = {p.name: p for p in parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert set(aliases) == set(OLD_NAMES[function.__name__])
    assert all(p.default is NOT_GIVEN for p in aliases.values())


def test_renamed_resolves_the_two_names():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        assert renamed(3, NOT_GIVEN, "old", "new", "metric") == 3
        assert renamed(None, NOT_GIVEN, "old", "new", "metric") is None
    with pytest.warns(DeprecationWarning, match=r"^metric\(old=\.\.\.\) is deprecated: use new=$"):
        assert renamed(None, 4, "old", "new", "metric") == 4
    with pytest.raises(TypeError, match="^metric\\(\\) got both new= and old="):
        renamed(3, 4, "old", "new", "metric")
    with pytest.raises(TypeError, match="^metric\\(\\) missing required argument: 'new'$"):
        renamed(None, NOT_GIVEN, "old", "new", "metric", required=True)
    assert repr(NOT_GIVEN) == "<not given>"
