"""Ensemble members train one thread each: the same weights in worker processes as in this one."""

import functools

import pytest
import torch

from captum_uncertainty.data import MNISTCNN, load_digits
from captum_uncertainty.training import train_members, train_model

TRAINING = dict(epochs=1, batch_size=64, lr=1e-3)


@pytest.fixture(scope="module")
def digits():
    data = load_digits(test_size=300, seed=0)
    return data.x_train[:400], data.y_train[:400]


def _build():
    return MNISTCNN(in_channels=1, image_size=8, num_classes=10)


def _same_weights(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_members_in_processes_equal_members_trained_here(digits):
    x, y = digits
    torch.set_num_threads(2)
    here = train_members(_build, x, y, [3, 4], TRAINING, workers=1)
    assert torch.get_num_threads() == 2, "the caller's thread count is restored"
    spawned = train_members(_build, x, y, [3, 4], TRAINING, workers=2)
    assert all(_same_weights(a, b) for a, b in zip(here, spawned))
    assert not _same_weights(here[0], here[1]), "each member trains under its own seed"
    assert all(not member.training for member in spawned)


def test_a_member_is_the_seeded_build_trained_on_one_thread(digits):
    x, y = digits
    (member,) = train_members(_build, x, y, [7], TRAINING)
    with torch.random.fork_rng():
        torch.manual_seed(7)
        fresh = _build()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        by_hand = train_model(fresh, x, y, seed=7, **TRAINING)
    finally:
        torch.set_num_threads(before)
    assert _same_weights(member, by_hand)


def test_an_unpicklable_build_falls_back_to_training_here_with_a_warning(digits):
    x, y = digits
    build = lambda: _build()  # noqa: E731 - a local function cannot reach a spawned process
    with pytest.warns(RuntimeWarning, match="one by one"):
        members = train_members(build, x, y, [3, 4], TRAINING, workers=2)
    here = train_members(functools.partial(_build), x, y, [3, 4], TRAINING)
    assert all(_same_weights(a, b) for a, b in zip(members, here))


def test_training_errors_reach_the_caller_unchanged(digits):
    x, y = digits
    with pytest.raises(ValueError, match="optimizer"):
        train_members(_build, x, y, [0, 1], dict(TRAINING, optimizer="rmsprop"), workers=2)
    with pytest.raises(ValueError, match="workers"):
        train_members(_build, x, y, [0], TRAINING, workers=0)
