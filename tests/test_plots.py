import json
import logging
import os
import sys

import matplotlib  # noqa: F401  (the `plots` extra, installed by `make test`)
import pytest
import torch
from test_analysis_stability import make_corpus, make_fake_run

from aasp_sb.analysis import plots
from aasp_sb.lobes.aape import AaPE

PNG = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    with open(path, "rb") as f:
        head = f.read(8)
    assert head == PNG, path
    assert os.path.getsize(path) > 1000


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("plots")
    stability = {
        "shifts": [1, 2, 3],
        "models": {
            "aasp": {
                "shifts": [1, 2, 3],
                "per_shift": [0.99, 0.98, 0.97],
                "overall": 0.98,
                "hop_length": 160,
                "sample_rate": 16000,
                "patch_size": [16, 16],
            },
            "plain": {
                "shifts": [1, 2, 3],
                "per_shift": [0.95, 0.9, 0.85],
                "overall": 0.9,
            },
        },
    }
    stab = root / "stability.json"
    stab.write_text(json.dumps(stability))
    return {
        "csv": make_corpus(root / "audio", n=3),
        "aasp": make_fake_run(root / "aasp", use_aape=True, seed=1),
        "plain": make_fake_run(root / "plain", use_aape=False, seed=2),
        "stability": stab,
    }


def test_all_plots_for_an_aape_run(runs, tmp_path):
    out = tmp_path / "plots"
    written = plots.run(
        [
            "--run",
            str(runs["aasp"]),
            "--csv",
            str(runs["csv"]),
            "--stability",
            str(runs["stability"]),
            "--output-dir",
            str(out),
            "--max-clips",
            "3",
        ]
    )
    names = sorted(p.rsplit("/", 1)[-1] for p in written)
    assert names == [
        "gate.png",
        "lambda_distribution.png",
        "sblu_response.png",
        "stability.png",
        "training_curves.png",
    ]
    for path in written:
        assert_png(path)


def test_plain_run_skips_the_aape_plots_and_defaults_to_run_plots(runs, caplog):
    with caplog.at_level(logging.INFO, logger="aasp_sb.analysis.plots"):
        written = plots.make_plots(runs["plain"], csv=runs["csv"])
    assert [p.rsplit("/", 1)[-1] for p in written] == ["training_curves.png"]
    assert all(p.startswith(str(runs["plain"] / "plots")) for p in written)
    assert "no AaPE" in caplog.text and "stability" in caplog.text


def test_lambda_collection_and_response_plot(runs, tmp_path):
    from aasp_sb.pretrained import load_pretrained

    parts = load_pretrained(runs["aasp"])
    alpha, omega = plots.collect_lambda(
        parts.features, parts.encoder, runs["csv"], max_clips=2
    )
    assert alpha.shape == omega.shape == (2, 2, 2)
    assert bool(((omega > torch.pi / 16) & (omega < torch.pi)).all())
    assert_png(
        plots.plot_sblu_responses(
            alpha, omega, tmp_path / "k.png", num_points=64
        )
    )
    with pytest.raises(ValueError, match="not AaPE"):
        plots.collect_lambda(
            parts.features, load_pretrained(runs["plain"]).encoder, runs["csv"]
        )


def test_concat_gate_and_epoch_only_curves(tmp_path):
    stem = AaPE(
        n_mels=32, patch_size=16, embed_dim=8, num_modes=2, fusion="concat"
    )
    assert_png(plots.plot_gate(stem, tmp_path / "gate.png"))
    epochs = [
        {"epoch": e, "lr": 1e-3, "train_loss": 1.0 / e, "valid_rankme": 3.0}
        for e in (1, 2)
    ]
    assert_png(plots.plot_training_curves([], epochs, tmp_path / "curves.png"))
    with pytest.raises(ValueError):
        plots.plot_training_curves([], [], tmp_path / "none.png")


def test_missing_matplotlib_gives_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"aasp_sb\[plots\]"):
        plots.new_figure()
