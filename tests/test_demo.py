"""`make demo`'s script runs end to end (shrunk: few clips, one epoch, one probe seed).

One demo run (both pre-trainings, three linear-probe arms, stability) is
shared by the tests; they check that each arm is its own model and that every
number in the tables is the one its arm produced.
"""

import json
import re
import shutil

import numpy as np
import pytest
from pretrain_utils import ROOT

from aasp_sb.evaluation.metrics import format_mean_ci
from aasp_sb.recipe_import import import_recipe

ARMS = {"AaSP (AaPE)": "aasp", "plain stem": "plain", "random init (AaPE)": "random"}
DEMO_ARGS = ["--epochs=1", "--per_class=5", "--seeds=1"]


def load_demo():
    return import_recipe(ROOT / "recipes" / "demo" / "run_demo.py", "run_demo")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    scores = load_demo().main([f"--output_folder={out}", *DEMO_ARGS])
    return out, scores


def table_rows(text, first_cell):
    """Cells of the Markdown rows whose first cell is ``first_cell``."""
    return [
        [c.strip() for c in line.strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith(f"| {first_cell} |")
    ]


def test_demo_results_table_reports_each_arm(demo_run):
    out, scores = demo_run
    assert set(scores) == set(ARMS)
    report = (out / "RESULTS.md").read_text()
    stab = json.loads((out / "stability.json").read_text())["models"]
    for name, slug in ARMS.items():
        saved = json.loads((out / "linear_eval" / slug / "results.json").read_text())["demo"]
        assert scores[name]["mean"] == pytest.approx(saved["mean"])
        (row,) = table_rows(report, name)
        assert row[1] == format_mean_ci(saved["mean"], saved["ci95"])
        assert row[2] == (f"{stab[name]['overall']:.4f}" if name in stab else "-")
    assert set(stab) == {"AaSP (AaPE)", "plain stem"}
    # three different encoders: pre-trained AaPE, pre-trained plain stem, AaPE at random init
    emb = {
        slug: np.load(next((out / "linear_eval" / slug / "embeddings").rglob("start-*.npy")))
        for slug in ARMS.values()
    }
    assert len({e.shape for e in emb.values()}) == 1
    for a, b in (("aasp", "random"), ("aasp", "plain"), ("plain", "random")):
        assert np.abs(emb[a] - emb[b]).max() > 1e-3 * np.abs(emb[a]).max(), (a, b)
    # the probes learn the task: 8 classes (chance 1/8), 1 test clip per class per arm;
    # measured 4, 3 and 5 of 8 correct. Labels mixed up anywhere give about 1 of 8.
    assert sum(s["mean"] for s in scores.values()) / 3 >= 1 / 3, scores
    # the pre-training curves are each run's own log
    for name, run in (("AaSP (AaPE)", "pretrain_aasp"), ("plain stem", "pretrain_plain")):
        logged = [json.loads(line) for line in open(out / run / "epochs.jsonl")]
        header = table_rows(report, "epoch")[0]
        col = header.index(f"{name} RankMe")
        (row,) = table_rows(report, "1")
        assert row[col] == f"{logged[0]['valid_rankme']:.1f}"
        assert row[header.index(f"{name} valid reg.")] == f"{logged[0]['valid_regression']:.3f}"


def test_demo_skip_ablation_reuses_the_run(demo_run, tmp_path):
    src, scores = demo_run
    out = tmp_path / "demo"
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("ft"))
    again = load_demo().main([f"--output_folder={out}", *DEMO_ARGS, "--skip_ablation"])
    assert set(again) == {"AaSP (AaPE)", "random init (AaPE)"}
    for name in again:  # same runs and cached embeddings: the same numbers
        assert again[name]["mean"] == scores[name]["mean"]
    report = (out / "RESULTS.md").read_text()
    assert "| AaSP (AaPE) |" in report and "| random init (AaPE) |" in report
    assert "plain stem" not in report and "RankMe" in report


def encoder_weights(run):
    import torch

    (path,) = run.glob("save/CKPT+*/encoder.ckpt")
    state = torch.load(path, weights_only=True, map_location="cpu")
    return {k: v for k, v in state.items() if v.is_floating_point()}


def arm_settings(ft, arm, run):
    """An arm's saved hyperparams.yaml with its own folder and its weights' source blanked."""
    text = (ft / arm / "hyperparams.yaml").read_text().replace(str(ft / arm), "<ARM>")
    text = re.sub(r"\s+", " ", text)  # long values are wrapped at different places
    sources = {"pretrained_path": f"pretrained_path: {run} ", "model_hparams": f"model_hparams: {run} "}
    found = {key: src in text for key, src in sources.items()}
    for key, src in sources.items():
        text = text.replace(src, f"{key}: ")
    return text, found


def test_demo_finetune_comparison_runs_both_label_settings_and_the_ablation(demo_run):
    out, _ = demo_run
    demo = load_demo()
    tiny = {"number_of_epochs": 1, "warmup_epochs": 0, "batch_size": 4,
            "crop_seconds": 0.5}
    runs = {"AaSP (AaPE)": out / "pretrain_aasp", "plain stem": out / "pretrain_plain"}
    lines = demo.finetune_comparison(
        runs, out / "corpus", out / "ft", labels_per_class=1, overrides=tiny,
    )
    expected = [("AaSP (AaPE)", "all training clips, 1 epochs", "aasp_aape_all", None),
                ("AaSP (AaPE)", "1 clips per class, 1 epochs", "aasp_aape_few", 1),
                ("plain stem", "all training clips, 1 epochs", "plain_stem_all", None)]
    assert len(lines) == 2 + len(expected)
    for line, (model, setting, folder, per_class) in zip(lines[2:], expected):
        ft = out / "ft" / folder
        record = json.loads((ft / "compare.json").read_text())
        assert record["labels_per_class"] == per_class
        assert record["pretrained_path"] == str(runs[model])
        # each column is its own arm's result, in the order of the header
        for arm in ("pretrained", "random"):
            summary = json.loads((ft / arm / "summary.json").read_text())
            assert record[arm] == pytest.approx(summary["mean"])
        assert line == (f"| {model} | {setting} | {100 * record['pretrained']:.2f} | "
                        f"{100 * record['random']:.2f} |")
        # the arms differ in their initial weights only
        pre, pre_found = arm_settings(ft, "pretrained", runs[model])
        rand, rand_found = arm_settings(ft, "random", runs[model])
        assert pre_found == {"pretrained_path": True, "model_hparams": False}
        assert rand_found == {"pretrained_path": False, "model_hparams": True}
        assert pre == rand
        # same seed, data and settings: equal weights would mean equal starts
        a, b = encoder_weights(ft / "pretrained"), encoder_weights(ft / "random")
        assert a.keys() == b.keys()
        assert max(float((a[k] - b[k]).abs().max()) for k in a) > 1e-3
    plain = (out / "ft" / "plain_stem_all" / "random" / "hyperparams.yaml").read_text()
    assert "use_aape: false" in plain  # the ablation's random arm is a plain-stem model
    few_train = (out / "ft" / "aasp_aape_few" / "corpus" / "train.csv").read_text()
    assert len(few_train.splitlines()) == 1 + 8  # header + one clip of each of the 8 classes
