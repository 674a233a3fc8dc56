"""The command line: bad arguments end with one line and a non-zero exit status."""

import subprocess
import sys

import pytest

from captum_uncertainty.__main__ import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "captum_uncertainty", *args], capture_output=True, text=True)


@pytest.mark.parametrize(
    "args, message",
    [
        ((), "required"),
        (("benchmark", "--images", "0"), "positive integer"),
        (("benchmark", "--images", "many"), "positive integer"),
        (("explode",), "invalid choice"),
    ],
)
def test_bad_arguments_exit_nonzero_with_one_line(args, message):
    result = run_cli(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert message in result.stderr


def test_unknown_method_and_bad_latent_sizes_are_one_line_errors(capsys, tmp_path):
    assert main(["benchmark", "--methods", "Magic", "--out", str(tmp_path)]) == 2
    assert main(["benchmark", "--vae-latent-sizes", "4,x", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2
    assert "unknown methods" in err[0] and "--vae-latent-sizes" in err[1]
