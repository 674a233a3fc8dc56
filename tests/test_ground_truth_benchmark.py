"""The ground-truth benchmark on tiny data: one row per method and cause, and sane references."""

import math
import warnings

import pytest

from captum_uncertainty.experiments.ground_truth import (
    CAUSES,
    ORACLE,
    PROXIES,
    RANDOM,
    GroundTruthConfig,
    GroundTruthTable,
    run_ground_truth,
)

METHODS = [RANDOM, ORACLE, "UA-Backprop+Grad", "Saliency", "Captum IG (black)"]
REAL = [m for m in METHODS if m not in (RANDOM, ORACLE)]


@pytest.fixture(scope="module")
def table():
    config = GroundTruthConfig(
        data="digits",
        n_members=2,
        epochs=2,
        n_images=4,
        n_steps=4,
        strengths=(0.5, 1.0),
        methods=METHODS,
        cache_dir=None,
        proxies=True,
    )
    return run_ground_truth(config)


def test_one_row_per_method_and_cause(table):
    assert isinstance(table, GroundTruthTable)
    assert not table.not_measured
    assert sorted((row.cause, row.method) for row in table.rows) == sorted(
        (cause, method) for cause in CAUSES for method in METHODS
    )
    for row in table.rows:
        assert row.measure == CAUSES[row.cause] and row.images == 4
        for score in (row.relevance_mass, row.rank_accuracy, row.pointing_game, row.mask_auroc):
            assert 0.0 <= score <= 1.0
        assert -1.0 <= row.conveyance <= 1.0 and row.seconds_per_image >= 0.0


def test_random_scores_the_mask_share_and_the_oracle_beats_it(table):
    for cause in CAUSES:
        random, oracle = table.row(cause, RANDOM), table.row(cause, ORACLE)
        assert 0.0 < random.mask_share < 1.0
        assert abs(random.relevance_mass - random.mask_share) < 0.15, (cause, random)
        assert oracle.relevance_mass > random.relevance_mass, (cause, oracle, random)
        assert random.conveyance == 0.0  # the same map at every strength


def test_markdown_has_a_table_per_cause_sorted_by_relevance_mass(table):
    text = table.to_markdown()
    for name in METHODS + list(CAUSES):
        assert name in text
    assert text.count("| method |") == len(CAUSES)
    for cause in CAUSES:
        masses = [row.relevance_mass for row in table.rows_for(cause)]
        assert masses == sorted(masses, reverse=True)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="unknown methods"):
        run_ground_truth(GroundTruthConfig(methods=["no such method"]))
    with pytest.raises(ValueError, match="strengths"):
        run_ground_truth(GroundTruthConfig(strengths=(1.0,)))
    with pytest.raises(ValueError, match="data"):
        run_ground_truth(GroundTruthConfig(data="cifar"))


def test_proxies_have_a_kendall_tau_per_cause(table):
    assert set(table.proxy_agreement) == set(CAUSES) == set(table.proxy_agreement_auroc)
    for cause in CAUSES:
        assert set(table.proxy_scores[cause]) == set(METHODS)
        for method in METHODS:
            assert set(table.proxy_scores[cause][method]) == set(PROXIES)
            assert all(math.isfinite(v) for v in table.proxy_scores[cause][method].values())
        for agreement in (table.proxy_agreement, table.proxy_agreement_auroc):
            assert set(agreement[cause]) == set(PROXIES)
            for proxy, tau in agreement[cause].items():
                assert math.isnan(tau) or -1.0 <= tau <= 1.0, (cause, proxy, tau)
        # with three real methods at least one proxy separates them, so some tau is defined
        assert any(math.isfinite(tau) for tau in table.proxy_agreement[cause].values())
    text = table.to_markdown()
    assert text.count("| proxy | tau with relevance mass | tau with mask AUROC |") == len(CAUSES)
    for proxy in PROXIES:
        assert proxy in text


def test_proxy_taus_are_scipys_kendall_tau_b(table):
    stats = pytest.importorskip("scipy.stats")
    for cause in CAUSES:
        scores = table.proxy_scores[cause]
        for key, agreement in (("relevance_mass", table.proxy_agreement), ("mask_auroc", table.proxy_agreement_auroc)):
            truth = [getattr(table.row(cause, m), key) for m in REAL]
            for proxy, higher in PROXIES.items():
                signed = [scores[m][proxy] * (1 if higher else -1) for m in REAL]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    expected = stats.kendalltau(signed, truth).statistic
                tau = agreement[cause][proxy]
                assert (math.isnan(expected) and math.isnan(tau)) or tau == pytest.approx(expected), (cause, proxy)


def test_proxies_can_be_turned_off():
    config = GroundTruthConfig(
        n_members=2, epochs=1, n_images=2, n_steps=2, strengths=(0.5, 1.0), methods=[RANDOM], cache_dir=None
    )
    config.proxies = False
    table = run_ground_truth(config)
    assert not table.proxy_agreement and not table.proxy_scores
    assert "tau with relevance mass" not in table.to_markdown()


@pytest.mark.parametrize("posterior", ["sgd", "mc_dropout"])
def test_the_sgd_ensemble_and_mc_dropout_are_explained_too(posterior):
    config = GroundTruthConfig(
        posterior=posterior,
        n_members=2,
        epochs=2,
        mc_samples=4,
        n_images=3,
        n_steps=2,
        strengths=(0.5, 1.0),
        methods=[RANDOM, ORACLE, "UA-Backprop+FullGrad"],
        cache_dir=None,
        proxies=False,
    )
    table = run_ground_truth(config)
    assert {(r.cause, r.method) for r in table.rows} == {(c, m) for c in CAUSES for m in config.methods}
    for cause in CAUSES:  # the oracle only marks changed pixels, whatever the posterior
        assert table.row(cause, ORACLE).relevance_mass > table.row(cause, RANDOM).relevance_mass
    words = "MC dropout of one network" if posterior == "mc_dropout" else "the papers' SGD recipe"
    assert words in table.to_markdown()
    with pytest.raises(ValueError, match="posterior"):
        run_ground_truth(GroundTruthConfig(posterior="laplace"))


def test_backward_passes_per_image_count_the_rows_through_the_samples(table):
    """IG with 4 steps back-propagates 4 copies of each image through each member, Saliency one,
    UA-Backprop's gradient path one per class (10 digits), the random map none."""
    expected = {RANDOM: 0.0, "Saliency": 1.0, "Captum IG (black)": 4.0, ORACLE: 4.0, "UA-Backprop+Grad": 10.0}
    for cause in CAUSES:
        for method, passes in expected.items():
            assert table.row(cause, method).backward_passes == passes, (cause, method)
    assert "backward passes / image" in table.to_markdown()
