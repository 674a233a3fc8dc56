"""The ground-truth benchmark on tiny data: one row per method and cause, and sane references."""

import pytest

from captum_uncertainty.experiments.ground_truth import (
    CAUSES,
    ORACLE,
    RANDOM,
    GroundTruthConfig,
    GroundTruthTable,
    run_ground_truth,
)

METHODS = [RANDOM, ORACLE, "UA-Backprop+Grad"]


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
