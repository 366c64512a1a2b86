"""Training options: defaults < a config file < options given on the command line."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from rtsal.errors import RtsalError
from rtsal.training.trainer import TrainConfig, read_config_file


def test_file_then_options_override_defaults(tmp_path):
    f = tmp_path / "run.toml"
    f.write_text('blackbox = "resnet18"\ndata = "photos/"\nlr = 5e-4\nmosaic-tiles = [4]\n')
    cfg = TrainConfig.from_sources(f, {"lr": 1e-2, "steps": 7})
    assert (cfg.blackbox, cfg.data, cfg.lr, cfg.steps) == ("resnet18", "photos/", 1e-2, 7)
    assert cfg.mosaic_tiles == (4,)  # lists become tuples, dashes become underscores
    assert cfg.batch_size == TrainConfig.batch_size  # untouched: the default
    json_file = tmp_path / "run.json"
    json_file.write_text('{"blackbox": "b", "data": "d", "upsampler_channels": [32, 16]}')
    assert TrainConfig.from_sources(json_file).upsampler_channels == (32, 16)


@pytest.mark.parametrize(
    "text, message",
    [
        ("lerning_rate = 1", "unknown option"),
        ("lr = ", "not valid TOML"),
    ],
)
def test_bad_config_files(tmp_path, text, message):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(RtsalError, match=message):
        read_config_file(f)
    with pytest.raises(RtsalError, match="not found"):
        read_config_file(tmp_path / "missing.toml")


def _main(capsys, *args: str) -> tuple[int, list[str]]:
    from rtsal.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return exit_info.value.code, [line for line in err.splitlines() if line.strip()]


def test_cli_errors_are_one_line(tmp_path, capsys):
    code, lines = _main(capsys, "train", "--data", "x")
    assert code == 1 and lines == [
        "error: rtsal train needs --blackbox (or a config file naming it)"
    ]
    f = tmp_path / "bad.toml"
    f.write_text("lerning_rate = 1")
    code, lines = _main(capsys, "train", "--config", str(f))
    assert code == 1 and len(lines) == 1 and "unknown option" in lines[0]


def test_cli_defaults_are_the_config_defaults():
    from rtsal.cli import train as train_cli

    runner = CliRunner()
    app = typer.Typer()
    app.command()(train_cli.train)
    shown = runner.invoke(app, ["--help"], env={"COLUMNS": "200"}).output
    assert "[default: auto]" in shown and TrainConfig.preset == "auto"
    assert TrainConfig.batch_size is None  # the preset's (12 for photos, 32 for paper)
    assert "256,128,64" in shown and TrainConfig.upsampler_channels == (256, 128, 64)


def test_the_preset_fills_what_was_not_given():
    cfg = TrainConfig(blackbox="b", data="d")
    photos = cfg.resolved(photos=True)
    assert photos.preset == "photos"
    photo_options = (photos.lr, photos.batch_size, photos.mosaic, photos.color_jitter)
    assert photo_options == (5e-4, 12, 0.3, 0.1)
    paper = cfg.resolved(photos=False)
    assert paper.preset == "paper"
    assert (paper.lr, paper.batch_size, paper.mosaic, paper.color_jitter) == (1e-3, 32, 0.0, 0.0)
    given = TrainConfig(blackbox="b", data="d", lr=2e-4, mosaic=0.0).resolved(True)
    assert (given.lr, given.mosaic, given.batch_size) == (2e-4, 0.0, 12)  # given values win
    named = TrainConfig(blackbox="b", data="d", preset="paper").resolved(True)
    assert (named.preset, named.lr) == ("paper", 1e-3)  # a named preset is not re-decided
    assert named.resolved(False) == named  # resolving twice changes nothing
