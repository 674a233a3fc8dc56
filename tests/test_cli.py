"""The command line: bad arguments end with one line and a non-zero exit status."""

import json
import subprocess
import sys

import pytest
import torch

from captum_uncertainty.__main__ import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "captum_uncertainty", *args], capture_output=True, text=True)


@pytest.mark.parametrize(
    "args, message",
    [
        ((), "required"),
        (("benchmark", "--images", "0"), "positive integer"),
        (("benchmark", "--images", "many"), "positive integer"),
        (("benchmark", "--vae-epochs", "0"), "positive integer"),
        (("explode",), "invalid choice"),
    ],
)
@pytest.mark.subprocess
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


def test_quick_benchmark_writes_its_table_and_report(tmp_path):
    methods = "UA-Backprop+Grad,CLUE,CF-path IG,Random"
    args = ["benchmark", "--quick", "--images", "2", "--members", "2", "--methods", methods, "--out", str(tmp_path)]
    assert main(args) == 0
    table = (tmp_path / "results.md").read_text(encoding="utf-8")
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    assert [row.split(" | ")[0][2:] for row in rows] == methods.split(",")
    for row in rows:
        values = [float(cell) for cell in row.strip(" |").split(" | ")[1:]]
        assert len(values) == 12 and all(value == value for value in values)  # no NaN
        assert values[-1] == 2  # the images column: every row scored on both digits
        assert 0 <= values[8] <= 1 and 0 <= values[9] <= 1  # IoU and ADA
        assert values[0] <= 1 and 0 <= values[1] <= 1 and values[10] >= 0
        assert values[4] <= 1 and values[5] <= 1  # MURR in the map-independent ("full") reading
    report = (tmp_path / "report.html").read_text(encoding="utf-8")
    # first screen, URR curves, then one figure (epistemic and aleatoric rows) per method
    assert report.count("data:image/png;base64,") == 2 + len(rows) and "CF-path IG" in report
    assert "the method with the best map-independent MURR 2% in this run" in report
    record = json.loads((tmp_path / "scores.json").read_text(encoding="utf-8"))
    assert record["config"]["recipe"] == "adam" and 0 < record["test_accuracy"] <= 1
    for row, name in zip(rows, methods.split(",")):  # the JSON holds the table's numbers
        assert f"{record['scores'][name]['murr_2%']:.3f}" == row.strip(" |").split(" | ")[1]


def test_unknown_recipe_is_refused():
    from captum_uncertainty.experiments.benchmark import benchmark_ensemble

    with pytest.raises(ValueError, match="recipe must be one of"):
        benchmark_ensemble(None, 5, 0, "sgd")


def test_vae_study_writes_one_row_per_latent_size(tmp_path):
    args = [
        "benchmark",
        "--vae-latent-sizes",
        "2,3",
        "--vae-epochs",
        "1",
        "--images",
        "2",
        "--members",
        "2",
        "--out",
        str(tmp_path),
    ]
    assert main(args) == 0
    table = (tmp_path / "vae_study.md").read_text(encoding="utf-8")
    assert "VAE 1 epochs" in table
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| latent")]
    assert [row.split(" | ")[0][2:] for row in rows] == ["2", "3"]
    for row in rows:
        cells = row.strip(" |").split(" | ")
        area, urc1, urc5, seconds = (float(cell) for cell in cells[1:5])
        assert 0 <= area <= 1 and urc1 <= urc5 <= 1 and seconds > 0  # the URC is a running maximum
        assert cells[5].endswith("%") and 0 <= float(cells[5][:-1]) <= 100


def test_benchmark_lime_maps_are_not_all_zero(digits, digits_ensemble):
    """Captum's default Lasso surrogate zeroes every coefficient on uncertainties; ridge does not."""
    from captum_uncertainty import UncertaintyForward
    from captum_uncertainty.experiments.benchmark import BenchmarkConfig, Context, lime

    uf = UncertaintyForward(digits_ensemble, measure="epistemic")
    maps = lime(uf, digits.x_test[:3], Context(BenchmarkConfig(lime_samples=100), digits.x_train))
    assert maps.shape == (3, 1, 8, 8)
    assert all((m != 0).sum() > 8 for m in maps)


def test_benchmark_maps_of_random_methods_do_not_depend_on_the_methods_before(digits, digits_ensemble):
    from captum_uncertainty import UncertaintyForward
    from captum_uncertainty.experiments.benchmark import BenchmarkConfig, Context, seeded, smoothgrad

    uf = UncertaintyForward(digits_ensemble, measure="epistemic")
    ctx = Context(BenchmarkConfig(smoothgrad_samples=4), digits.x_train)
    first = seeded(smoothgrad, uf, digits.x_test[:3], ctx)
    torch.rand(10)  # another method drawing from the global generator in between
    assert torch.equal(seeded(smoothgrad, uf, digits.x_test[:3], ctx), first)
    ctx.config.seed = 1
    assert not torch.equal(seeded(smoothgrad, uf, digits.x_test[:3], ctx), first)


@pytest.mark.subprocess
def test_errors_that_are_not_validation_errors_keep_their_traceback(monkeypatch, tmp_path):
    import captum_uncertainty._cli as cli

    def broken(*args, **kwargs):
        raise TypeError("an internal bug, not the user's input")

    monkeypatch.setattr(cli, "_run_demo", broken)
    with pytest.raises(TypeError, match="internal bug"):
        cli.main(["demo", "--out", str(tmp_path)])
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import captum_uncertainty._cli as c; c._run_demo = lambda *a, **k: 1 / 0; c.main(['demo'])",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "Traceback" in result.stderr and "ZeroDivisionError" in result.stderr


def test_every_benchmark_method_can_be_chosen_with_methods():
    """``--methods`` splits at commas: a method name holding one could never be selected."""
    from captum_uncertainty.experiments.benchmark import METHODS, select_methods

    assert not [name for name in METHODS if "," in name]
    assert list(select_methods(",".join(METHODS).split(","))) == list(METHODS)


def test_attribute_help_says_which_default_differs_from_the_library_and_why(capsys):

    with pytest.raises(SystemExit):
        main(["attribute", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "path='auto'" in text and "path='fullgrad' where it reads every bias" in text
    assert "FullGrad refuses" in text and "Ground truth" in text


@pytest.mark.parametrize("command", [[], ["demo"], ["benchmark"], ["attribute"]])
def test_help_reads_as_plain_text_without_rst_markup(capsys, command):
    with pytest.raises(SystemExit) as stop:
        main(command + ["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert "usage: captum_uncertainty" in text
    for markup in ("``", ":func:", ":class:", ":meth:", ":doc:"):
        assert markup not in text, markup


@pytest.mark.parametrize("no_blur, says_poorly", [(0, False), (24, False), (25, True), (28, True)])
def test_results_say_when_images_no_blur_helps_make_the_full_columns_uninformative(no_blur, says_poorly):
    from captum_uncertainty.experiments.benchmark import no_blur_sentence

    sentence = no_blur_sentence(no_blur, 100)
    assert f"{no_blur} of 100." in sentence
    assert ("separate maps poorly" in sentence) is says_poorly


def test_the_slow_rows_are_scored_on_fewer_images_and_say_so(tmp_path):
    from captum_uncertainty.experiments.benchmark import BenchmarkConfig, run_benchmark

    config = BenchmarkConfig.quick(images=3, anomaly_images=3, members=2, slow_images=1, methods=["Grad", "LIME"])
    scores = run_benchmark(tmp_path, config=config)
    assert scores["Grad"]["images"] == 3 and scores["LIME"]["images"] == 1
    table = (tmp_path / "results.md").read_text(encoding="utf-8")
    assert table.splitlines()[-1].endswith("| 1 |") and "| 3 |" in table
