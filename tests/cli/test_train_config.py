"""`archspec train --config FILE`: a run folder's config.json replays its run bit for bit, options given on
the command line override the file, and a key or value the file may not hold is an error located in it
(its line is not shown)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from archspec.cli import app
from archspec.runtime.train import Trainer, checkpoint as ckpt
from archspec.runtime.train import config as config_file
from conftest import SPECS

TINY = str(SPECS / "tiny_delugenet.arch")


def _train(*args: str):
    return CliRunner().invoke(app, ["train", *args, "--quiet", "--no-tensorboard"])


def _captured(monkeypatch) -> list[Trainer]:
    built: list[Trainer] = []
    monkeypatch.setattr(Trainer, "fit", lambda self: built.append(self) or [])
    return built


def test_a_runs_config_json_replays_it_bit_for_bit(tmp_path):
    first = _train(TINY, "--set", "n=1", "--set", "w=4", "--epochs", "1", "--batch-size", "256", "--seed", "3",
                   "--recipe-set", "mixup_alpha=0.2", "--recipe-set", "ema=true", "--out", str(tmp_path / "a"))
    assert first.exit_code == 0, first.output
    again = _train("--config", str(tmp_path / "a/config.json"), "--out", str(tmp_path / "b"))
    assert again.exit_code == 0, again.output
    a, b = (ckpt.load(tmp_path / d / "last.safetensors") for d in "ab")
    assert a.model.keys() == b.model.keys() and a.ema.keys() == b.ema.keys()
    for k in a.model:
        assert torch.equal(a.model[k], b.model[k]), k
    for k in a.ema:
        assert torch.equal(a.ema[k], b.ema[k]), k
    ca, cb = (json.loads((tmp_path / d / "config.json").read_text()) for d in "ab")
    ca.pop("started"), cb.pop("started")
    assert ca == cb and ca["seed"] == 3 and ca["recipe"]["mixup_alpha"] == 0.2


def test_options_on_the_command_line_override_the_file(tmp_path, monkeypatch):
    built = _captured(monkeypatch)
    (tmp_path / "run.json").write_text(json.dumps({
        "spec": TINY, "overrides": {"n": 1, "w": 4}, "seed": 7, "device": "cpu",
        "recipe": {"name": "imagenet-convnext", "epochs": 30, "batch_size": 64}}))
    r = _train("--config", str(tmp_path / "run.json"), "--out", str(tmp_path / "a"))
    assert r.exit_code == 0, r.output
    r = _train("--config", str(tmp_path / "run.json"), "--seed", "9", "--epochs", "10", "--set", "w=6",
               "--label-smoothing", "0.2", "--out", str(tmp_path / "b"))
    assert r.exit_code == 0, r.output
    file, flags = built
    assert (file.cfg.seed, file.cfg.sets, file.recipe.epochs, file.recipe.warmup_epochs) == (7, {"n": 1, "w": 4}, 30, 2)
    assert (file.recipe.optimizer, file.recipe.batch_size, file.recipe.label_smoothing) == ("adamw", 64, 0.1)
    assert (flags.cfg.seed, flags.cfg.sets, flags.recipe.epochs, flags.recipe.label_smoothing) == \
        (9, {"n": 1, "w": 6}, 10, 0.2)
    assert flags.recipe.warmup_epochs == pytest.approx(2 * 10 / 30)  # the file's warmup share, kept
    r = _train("--config", str(tmp_path / "run.json"), "--recipe", "quick", "--out", str(tmp_path / "c"))
    assert r.exit_code == 0 and built[-1].recipe.optimizer == "sgd"  # a --recipe replaces the file's


def test_a_yaml_config_trains_a_model_by_name(tmp_path, monkeypatch):
    pytest.importorskip("yaml")
    built = _captured(monkeypatch)
    (tmp_path / "run.yaml").write_text(f"spec: {TINY}\noverrides:\n  n: 1\n  w: 4\nrecipe: quick\nepochs: 3\n"
                                       "lr: 1e-2\nval_split: 0.1\n")
    r = _train("--config", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "a"))
    assert r.exit_code == 0, r.output
    [t] = built
    assert (t.recipe.name, t.recipe.epochs, t.recipe.lr, t.val_split) == ("quick", 3, 0.01, 0.1)


BAD = [
    ("run.json", '{\n  "seed": 1,\n  "sedd": 2\n}\n', "run.json:3:3", "unknown setting 'sedd'"),
    ("run.json", '{\n  "data": {"sourc": "x"}\n}\n', "run.json:2:12", "unknown setting 'data.sourc'"),
    ("run.json", '{"seed": }', "run.json:1:10", "not JSON"),
    ("run.json", '{"recipe": {"name": "quick", "emma": true}}', "run.json:1:30", "no field 'emma'"),
    ("run.json", '{"recipe": "cifarr"}', "run.json:1:12", "did you mean 'cifar'"),
    ("run.yaml", 'spec: tiny\nseed: "x"\n', "run.yaml:2:7", "'seed': input should be a valid integer"),
    ("run.yaml", "recipe:\n  name: quick\n  ema_decay: 2\n", "run.yaml:3:14", "ema_decay"),
    ("run.yaml", "recipe:\n  epochs: [1\n", "run.yaml:", "not YAML"),
    ("run.yaml", "overrides: &x {n: 1}\nparams: *x\n", "aliases", "aliases"),
    ("run.yaml", "- 1\n", "run.yaml:1:1", "mapping of settings"),
]


@pytest.mark.parametrize("name, text, where, message", BAD)
def test_a_bad_config_is_a_located_error(tmp_path, name, text, where, message):
    if name.endswith(".yaml"):
        pytest.importorskip("yaml")
    (tmp_path / name).write_text(text)
    r = _train("--config", str(tmp_path / name), "--out", str(tmp_path / "x"))
    assert r.exit_code == 2 and where in r.output and message in r.output, r.output
    assert "Traceback" not in r.output and not (tmp_path / "x").exists()
    assert not any(line.strip() in r.output for line in text.splitlines() if len(line.strip()) > 8)  # not shown


def test_without_pyyaml_json_is_read_and_yaml_refused_by_name(tmp_path, monkeypatch):
    monkeypatch.setattr(config_file, "_yaml", lambda: None)
    (tmp_path / "run.yaml").write_text("seed: 1\n")
    r = _train("--config", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "x"))
    assert r.exit_code == 2 and "PyYAML" in r.output
    (tmp_path / "run.json").write_text('{\n "seed": 1,\n "seeds": 1}')
    r = _train("--config", str(tmp_path / "run.json"), "--out", str(tmp_path / "x"))
    assert r.exit_code == 2 and "run.json:3:2" in r.output and "unknown setting 'seeds'" in r.output


def test_a_config_file_is_read_through_the_bounded_reader(tmp_path):
    big = tmp_path / "big.json"
    big.write_text('{"seed": 1' + " " * config_file.MAX_CONFIG_BYTES + "}")
    r = _train("--config", str(big), "--out", str(tmp_path / "x"))
    assert r.exit_code == 2 and "limit" in r.output and "Traceback" not in r.output
    r = _train("--config", str(tmp_path), "--out", str(tmp_path / "x"))  # a folder
    assert r.exit_code == 2 and "Traceback" not in r.output
