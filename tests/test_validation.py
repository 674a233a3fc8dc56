"""The one validation module: what each check accepts, and that its message names the argument."""

import math

import pytest
import torch

from captum_uncertainty._validation import (
    check_bool,
    check_choice,
    check_finite_tensor,
    check_floating_tensor,
    check_int,
    check_non_negative_number,
    check_optional_positive_int,
    check_positive_int,
    check_positive_number,
    check_tensor,
)


def test_ints_refuse_bools_floats_and_out_of_range_values():
    assert check_positive_int(3, "n") == 3
    assert check_optional_positive_int(None, "n") is None
    assert check_int(0, "sample", minimum=0, maximum=4) == 0
    for bad in (0, -1, True, 2.0, "3"):
        with pytest.raises(ValueError, match=r"^n must be a positive int, got"):
            check_positive_int(bad, "n")
    with pytest.raises(ValueError, match=r"^n must be a positive int or None, got 0"):
        check_optional_positive_int(0, "n")
    with pytest.raises(ValueError, match=r"^sample must be an int in \[0, 4\], got 5"):
        check_int(5, "sample", minimum=0, maximum=4)
    with pytest.raises(ValueError, match=r"^n_steps must be an int >= 2, got 1"):
        check_int(1, "n_steps", minimum=2)


def test_numbers_refuse_nan_bools_and_the_wrong_sign():
    assert check_positive_number(0.5, "lr") == 0.5
    assert check_positive_number(math.inf, "sigma") == math.inf
    assert check_non_negative_number(0, "weight") == 0
    for bad in (0, -1.0, math.nan, True, "1"):
        with pytest.raises(ValueError, match=r"^lr must be a positive number"):
            check_positive_number(bad, "lr")
    with pytest.raises(ValueError, match=r"^max_sigma must be a positive number"):
        check_positive_number(math.inf, "max_sigma", allow_inf=False)
    for bad in (-0.1, math.nan, False):
        with pytest.raises(ValueError, match=r"^weight must be a non-negative number"):
            check_non_negative_number(bad, "weight")


def test_bools_choices_and_tensors():
    assert check_bool(False, "binary") is False
    with pytest.raises(TypeError, match=r"^binary must be a bool, got int"):
        check_bool(1, "binary")
    assert check_choice("l2", "distance", ("l1", "l2")) == "l2"
    with pytest.raises(ValueError, match=r"^distance must be one of \('l1', 'l2'\) or a callable, got 'cosine'"):
        check_choice("cosine", "distance", ("l1", "l2"), extra="or a callable")
    with pytest.raises(ValueError, match="measure must be one of"):
        check_choice(["total"], "measure", ("total",))
    with pytest.raises(TypeError, match=r"^maps must be a torch.Tensor of shape \(N, H, W\), got list"):
        check_tensor([1.0], "maps", "(N, H, W)")
    with pytest.raises(TypeError, match=r"^maps must be a floating point tensor, got dtype torch.int64"):
        check_floating_tensor(torch.ones(2, dtype=torch.long), "maps")
    with pytest.raises(ValueError, match=r"^maps contains NaN or inf values"):
        check_finite_tensor(torch.tensor([1.0, math.inf]), "maps")
    with pytest.raises(ValueError, match=r"^maps must have shape"):
        check_finite_tensor(torch.ones(2), "maps", dims=(3,))


def test_a_wrong_type_is_a_type_error_and_a_wrong_value_is_only_a_value_error():
    from captum_uncertainty._validation import ArgumentTypeError, check_unit_interval

    checks = [
        lambda v: check_int(v, "n", minimum=0),
        lambda v: check_positive_int(v, "n"),
        lambda v: check_optional_positive_int(v, "n"),
        lambda v: check_positive_number(v, "n"),
        lambda v: check_non_negative_number(v, "n"),
        lambda v: check_unit_interval(v, "n"),
    ]
    for check in checks:
        for wrong_type in ("1", True, [1]):
            with pytest.raises(TypeError, match=r"^n must be") as caught:
                check(wrong_type)
            assert isinstance(caught.value, ArgumentTypeError) and isinstance(caught.value, ValueError)
        with pytest.raises(ValueError, match=r"^n must be") as caught:
            check(-3)
        assert not isinstance(caught.value, TypeError), "a negative number has the right type"
    with pytest.raises(ValueError) as caught:
        check_positive_number(math.nan, "n")
    assert not isinstance(caught.value, TypeError), "NaN is a float: a wrong value"
