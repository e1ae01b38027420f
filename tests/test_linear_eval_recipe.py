"""Linear evaluation end to end: CSV tasks, the ESC-50 layout, the recipe, caching."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from pretrained_fixture import ROOT, TINY_YAML, make_run
from task_fixtures import make_esc50, write_corrupt

import aasp_sb.evaluation.linear_eval as le
from aasp_sb.data.demo import make_demo_corpus
from aasp_sb.evaluation.metrics import format_mean_ci, mean_ci95
from aasp_sb.inference import AaSPEncoder
from aasp_sb.recipe_import import import_recipe

SR = 16000
RECIPE = ROOT / "recipes" / "linear_eval" / "evaluate.py"
YAML = ROOT / "hparams" / "linear_eval" / "evar.yaml"
FAST_PROBE = {"max_epochs": 30, "patience": 10, "lr": 0.01}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def model(run):
    return AaSPEncoder.from_run(run, device="cpu")


def toy_clip(label, k):
    """Low tone / high tone / noise; lengths vary (some shorter than the crop)."""
    rng = np.random.default_rng(100 * k + len(label))
    n = int(SR * (0.3 + 0.1 * (k % 4)))
    t = np.arange(n) / SR
    if label == "low":
        x = np.sin(2 * np.pi * (200 + 10 * k) * t)
    elif label == "high":
        x = np.sin(2 * np.pi * (3000 + 50 * k) * t)
    else:
        x = rng.standard_normal(n)
    return (0.3 * x + 0.01 * rng.standard_normal(n)).astype("float32")


def make_toy_corpus(root, per_split=(6, 2, 2)):
    root = Path(root)
    paths = {}
    for split, count in zip(("train", "valid", "test"), per_split):
        rows = []
        for label in ("low", "high", "noise"):
            for k in range(count):
                uid = f"{split}_{label}_{k}"
                wav = root / "audio" / f"{uid}.wav"
                wav.parent.mkdir(parents=True, exist_ok=True)
                data = toy_clip(label, k + 10 * len(rows))
                sf.write(str(wav), data, SR)
                rows.append([uid, len(data) / SR, str(wav), label])
        paths[split] = root / f"{split}.csv"
        with open(paths[split], "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["ID", "duration", "wav", "label"])
            w.writerows(rows)
    return paths


def load_recipe():
    return import_recipe(RECIPE, "le_recipe")


def test_csv_task_end_to_end_and_cache(model, tmp_path, monkeypatch):
    paths = make_toy_corpus(tmp_path / "toy")
    task = {
        "train_csv": str(paths["train"]), "valid_csv": str(paths["valid"]),
        "test_csv": str(paths["test"]), "clip_seconds": 0.5,
    }
    out = tmp_path / "out"
    res = le.evaluate_tasks(model, {"toy": task}, out, probe_kwargs=FAST_PROBE, progress=False)
    r = res["toy"]
    assert r["metric"] == "accuracy" and r["num_classes"] == 3
    assert r["seeds"] == [0, 1, 2] and len(r["per_seed"]) == 3
    assert r["clips"]["official"] == {"train": 18, "valid": 6, "test": 6}
    assert r["mean"] > 0.6  # tones vs noise are easy even for random weights
    table = (out / "results.md").read_text()
    assert "| toy | accuracy |" in table
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert rows[0]["task"] == "toy" and rows[0]["seeds"] == "3"
    cached = sorted((out / "embeddings").rglob("*.npy"))
    assert len(cached) == 2  # random crops (train+valid) and start crops (test)

    def boom(*args, **kwargs):
        raise AssertionError("embeddings should come from the cache")

    monkeypatch.setattr(le, "embed_clips", boom)
    again = le.evaluate_tasks(model, {"toy": task}, out, probe_kwargs=FAST_PROBE, progress=False)
    assert again["toy"]["per_fold"] == r["per_fold"]


def test_crops_are_per_clip_and_seeded(model, tmp_path):
    paths = make_toy_corpus(tmp_path / "toy", per_split=(3, 1, 1))
    clips = [(r["ID"], r["wav"]) for r in le.read_manifest(str(paths["train"]))]
    opts = {"batch_size": 4, "num_workers": 0, "layer": -1, "pooling": "mean",
            "mask_padding": False, "crop_seed": 0}
    a, _ = le.cached_embeddings(model, clips, "random", 0.25, None, opts, progress=False)
    b, _ = le.cached_embeddings(model, clips[::-1], "random", 0.25, None, opts, progress=False)
    np.testing.assert_allclose(a, b[::-1], atol=1e-5)  # same clip, same crop
    c, _ = le.cached_embeddings(model, clips, "random", 0.25, None, {**opts, "crop_seed": 1}, progress=False)
    assert not np.allclose(a, c)
    s, _ = le.cached_embeddings(model, clips, "start", 0.25, None, opts, progress=False)
    assert not np.allclose(a, s)


def test_unreadable_clip_is_left_out(model, tmp_path):
    paths = make_toy_corpus(tmp_path / "toy", per_split=(4, 1, 1))
    bad = write_corrupt(tmp_path / "toy" / "audio" / "bad.wav")
    with open(paths["train"], "a") as f:
        f.write(f"bad,1.0,{bad},low\n")
    task = le.csv_task("toy", paths["train"], paths["valid"], paths["test"], 0.5)
    res = le.evaluate_tasks(model, [task], tmp_path / "out", seeds=(0,),
                            probe_kwargs=FAST_PROBE, progress=False)
    assert res["toy"]["skipped"] == [str(bad)]
    assert res["toy"]["clips"]["official"]["train"] == 12


def test_demo_corpus_through_the_recipe_random_init(tmp_path):
    """Random-init baseline on three steady demo classes (noise band, low tone,
    high tone: separable by spectrum alone, even for untrained weights).

    The score is above chance, the CI is the one of the per-seed scores, and
    results.md / results.csv print exactly the numbers of results.json.
    """
    demo = make_demo_corpus(str(tmp_path / "demo"), num_per_class=10, seconds=0.4,
                            classes=("noise_band", "tone_low", "tone_high"))
    out = tmp_path / "le_random"
    csv_tasks = (
        f"{{demo: {{train_csv: {demo['train']}, valid_csv: {demo['valid']}, "
        f"test_csv: {demo['test']}, clip_seconds: 0.5}}}}"
    )
    results = load_recipe().main([
        str(YAML), "--random_init=True", f"--model_hparams={TINY_YAML}",
        "--model_overrides={embed_dim: 32, depth: 1, num_heads: 2, crop_frames: 64, aape_modes: 4}",
        "--tasks=demo", f"--csv_tasks={csv_tasks}", f"--output_folder={out}",
        "--max_epochs=30", "--lr=0.01", "--device=cpu",
    ])
    r = results["demo"]
    assert r["num_classes"] == 3  # classes.txt next to the CSVs
    assert r["clips"]["official"] == {"train": 18, "valid": 6, "test": 6}
    # chance is 1/3; measured 5 of 6 test clips right with every probe seed
    assert r["mean"] >= 2 / 3, r
    # one official fold, three probe seeds: the fold average per seed, then mean ± CI
    assert r["folds"] == ["official"] and r["seeds"] == [0, 1, 2]
    assert r["per_seed"] == pytest.approx(r["per_fold"]["official"])
    mean, ci = mean_ci95(r["per_seed"])
    assert r["mean"] == pytest.approx(mean) and r["ci95"] == pytest.approx(ci)
    saved = json.loads((out / "results.json").read_text())["demo"]
    for key in ("mean", "ci95", "per_seed", "num_classes"):
        assert saved[key] == pytest.approx(r[key]), key
    # the tables print the JSON's numbers
    row = next(line for line in (out / "results.md").read_text().splitlines()
               if line.startswith("| demo |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    expected = ["demo", "accuracy", format_mean_ci(saved["mean"], saved["ci95"]),
                f"{100 * saved['mean']:.2f}", f"{100 * saved['ci95']:.2f}", "1", "3"]
    assert cells == expected
    (csv_row,) = list(csv.reader(open(out / "results.csv")))[1:]
    assert csv_row == expected
    assert (out / "hyperparams.yaml").exists()


def test_esc50_layout_through_the_recipe(run, tmp_path):
    data = tmp_path / "ESC-50"
    make_esc50(data, folds=5, clips=2)
    out = tmp_path / "le"
    args = [
        str(YAML), f"--checkpoint={run}", "--tasks=esc50", f"--esc50_folder={data}",
        f"--output_folder={out}", "--max_epochs=5", "--device=cpu", "--batch_size=8",
    ]
    results = load_recipe().main(args)
    r = results["esc50"]
    assert r["folds"] == [f"fold{i}" for i in range(1, 6)]
    assert all(len(v) == 3 for v in r["per_fold"].values())
    # fold averaging: each seed's score is the mean over the five folds
    for s in range(3):
        fold_mean = np.mean([r["per_fold"][f][s] for f in r["folds"]])
        assert r["per_seed"][s] == pytest.approx(fold_mean)
    assert r["clip_seconds"] == 5.0 and r["num_classes"] == 3
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert rows[0]["task"] == "esc50" and rows[0]["folds"] == "5" and rows[0]["seeds"] == "3"
    saved = json.loads((out / "results.json").read_text())
    assert saved["esc50"]["mean"] == pytest.approx(r["mean"])
    mean, ci = mean_ci95(r["per_seed"])  # the CI is over the seeds' fold averages
    assert r["mean"] == pytest.approx(mean) and r["ci95"] == pytest.approx(ci)
    assert saved["esc50"]["ci95"] == pytest.approx(ci)
    md = next(line for line in (out / "results.md").read_text().splitlines()
              if line.startswith("| esc50 |"))
    assert [c.strip() for c in md.strip("|").split("|")][2:5] == [
        format_mean_ci(mean, ci), f"{100 * mean:.2f}", f"{100 * ci:.2f}"]
    assert (out / "data" / "esc50" / "classes.txt").exists()
    # a second run reads every embedding from the cache
    before = {p: p.stat().st_mtime_ns for p in (out / "embeddings").rglob("*.npy")}
    again = load_recipe().main(args)
    after = {p: p.stat().st_mtime_ns for p in (out / "embeddings").rglob("*.npy")}
    assert before == after and again["esc50"]["per_fold"] == r["per_fold"]


def test_missing_folder_fails_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="us8k_folder"):
        load_recipe().main([
            str(YAML), "--checkpoint=/nonexistent", "--tasks=esc50,us8k",
            f"--esc50_folder={tmp_path}", f"--output_folder={tmp_path / 'o'}",
        ])
    assert not (tmp_path / "o").exists()


def test_unknown_task_names_csv_tasks():
    with pytest.raises(ValueError, match="csv_tasks"):
        le.tasks_from_hparams({"tasks": "nope"})
