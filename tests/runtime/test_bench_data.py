"""`archspec bench data`: the image loader's decode-and-augment rate, and its errors."""

import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from archspec.cli import app


def test_cli_bench_data(tmp_path):
    for split in ("train", "val"):
        (tmp_path / split / "a").mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / split / "a" / f"{i}.png")
    r = CliRunner().invoke(app, ["bench", "data", str(tmp_path), "--size", "16", "--workers", "0",
                                 "--batch-size", "2", "--images", "4", "--json", str(tmp_path / "d.json")])
    assert r.exit_code == 0 and "images/s" in r.output, r.output
    figures = json.loads((tmp_path / "d.json").read_text())
    assert figures["images"] >= 4 and figures["images_per_s"] > 0
    bad = CliRunner().invoke(app, ["bench", "data", str(tmp_path), "--split", "test"])
    assert bad.exit_code == 2 and "unknown split 'test'" in bad.output and "Traceback" not in bad.output
