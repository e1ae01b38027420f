"""The real-recordings benchmark (benchmarks/real_audio): split rules, the log-mel
floor, the pipeline end to end on a handful of generated clips, and -- only when
the Debian tools are installed -- the gathering tools."""

import csv
import importlib.util
import json
import pathlib
import shutil
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "real_audio"
SR = 16000


def _load(name):
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


rab = _load("build")
run = _load("run")


def row(path, task, label, source, role):
    return {"path": path, "task": task, "label": label, "source": source, "role": role}


def tone(freq, seconds, rng, am=0.0):
    t = np.arange(int(seconds * SR)) / SR
    env = 1.0 + am * np.sin(2 * np.pi * 5.0 * t)
    return (0.3 * env * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)
            ).astype(np.float32)


def noise_band(lo, hi, seconds, rng):
    x = rng.standard_normal(int(seconds * SR))
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(x.size, 1 / SR)
    spec[(f < lo) | (f > hi)] = 0
    return (0.3 * np.fft.irfft(spec, x.size) / (np.abs(np.fft.irfft(spec, x.size)).max() + 1e-9)
            ).astype(np.float32)


def make_catalog(folder):
    """Two tasks (tone pitch, noise band) with 3 sources each (train/valid/test) + a pool."""
    rng = np.random.default_rng(0)
    folder = pathlib.Path(folder)
    rows = []

    def add(x, rel, *rest):
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), x, SR)
        rows.append(row(str(path), *rest))

    for role, detune in (("train", 1.0), ("valid", 1.03), ("test", 0.97)):
        for label, f0 in (("low", 300.0), ("high", 2000.0)):
            for k in range(4):
                add(tone(f0 * detune * (1 + 0.02 * k), 0.8, rng, am=0.3 * k), f"tones/{role}/{label}{k}.wav",
                    "tones", label, f"osc_{role}", role)
        for label, band in (("lowband", (100, 800)), ("highband", (3000, 6000))):
            for k in range(4):
                add(noise_band(band[0] * detune, band[1] * detune, 0.7, rng),
                    f"noise/{role}/{label}{k}.wav", "noise", label, f"gen_{role}", role)
    for k in range(8):
        add(tone(500 + 100 * k, 1.0, rng, am=0.5), f"pool/p{k}.wav", "pool", "", "pool_osc", "pool")
    catalog = folder / "catalog.csv"
    rab.write_catalog(catalog, rows)
    return catalog, rows


# ------------------------------------------------------------------ split rules
def test_catalog_rules(tmp_path):
    _, rows = make_catalog(tmp_path)
    counts = rab.check_catalog(rows)
    assert counts["tones"] == {"train": 8, "valid": 8, "test": 8}
    leaked = [dict(r) for r in rows]
    test_tone = next(r for r in leaked if r["task"] == "tones" and r["role"] == "test")
    test_tone["source"] = "osc_train"
    with pytest.raises(rab.BuildError, match="several splits"):
        rab.check_catalog(leaked)
    shared = [dict(r) for r in rows]
    next(r for r in shared if r["task"] == "pool")["source"] = "gen_test"
    with pytest.raises(rab.BuildError, match="pool shares sources"):
        rab.check_catalog(shared)
    lacking = [r for r in rows if not (r["task"] == "noise" and r["role"] == "test"
                                       and r["label"] == "highband")]
    with pytest.raises(rab.BuildError, match="test lacks classes"):
        rab.check_catalog(lacking)


def test_assemble_writes_disjoint_manifests(tmp_path):
    catalog, _ = make_catalog(tmp_path / "clips")
    res = rab.assemble(str(catalog), str(tmp_path / "m"))
    assert set(res["tasks"]) == {"tones", "noise"}
    for task, entry in res["tasks"].items():
        wavs = {}
        for role in rab.ROLES:
            with open(entry[role], newline="") as f:
                rs = list(csv.DictReader(f))
            assert rs and set(rs[0]) == {"ID", "duration", "wav", "label"}
            wavs[role] = {r["wav"].split(f"/{task}/")[1].split("/")[0] for r in rs}
        assert wavs["train"] == {"train"} and wavs["test"] == {"test"}
    with open(res["pool"]["train"]) as f:
        pool = list(csv.DictReader(f))
    assert len(pool) == 7 and all("/pool/" in r["wav"] for r in pool)
    assert json.loads((tmp_path / "m" / "benchmark.json").read_text())["counts"]["pool"]


# ------------------------------------------------------------------ log-mel floor
def test_logmel_floor_embedding_and_stability(tmp_path):
    from aasp_sb.analysis.stability import measure_model_stability
    from aasp_sb.features import Features

    floor = run.LogMelStats(Features())
    rng = np.random.default_rng(1)
    x = torch.from_numpy(np.stack([tone(440, 1.0, rng), tone(3000, 1.0, rng)]))
    emb = floor.embed_batch(x, torch.tensor([1.0, 0.5]))
    assert emb.shape == (2, 160)
    feats = Features()(x)
    # clip 1 uses its first half only: mean/std over those frames
    n = int(round(0.5 * feats.shape[1]))
    assert torch.allclose(emb[1, :80], feats[1, :n].mean(0), atol=1e-5)
    assert torch.allclose(emb[0, 80:], feats[0].std(0, unbiased=False), atol=1e-4)
    paths = []
    for k, f0 in enumerate((300, 900, 2500)):
        p = tmp_path / f"s{k}.wav"
        sf.write(str(p), tone(f0, 1.2, rng), SR)
        paths.append(p)
    (tmp_path / "m.csv").write_text("ID,duration,wav\n" + "".join(
        f"s{k},1.2,{p}\n" for k, p in enumerate(paths)))
    res = measure_model_stability(floor.features, floor, str(tmp_path / "m.csv"),
                                  shifts=[3, 8], seconds=1.0)
    assert res["num_clips"] == 3 and res["overall"] > 0.95  # stationary tones


# ------------------------------------------------------------------ pipeline
TINY = ["embed_dim=32", "depth=1", "num_heads=2", "predictor_dim=32", "predictor_depth=1",
        "predictor_heads=2", "aape_modes=4", "crop_frames=48", "batch_size=4",
        "warmup_epochs=0", "num_masks=2"]


def test_pipeline_end_to_end(tmp_path, capsys):
    catalog, _ = make_catalog(tmp_path / "clips")
    rab.assemble(str(catalog), str(tmp_path / "m"))
    argv = ["--manifests", str(tmp_path / "m"), "--output", str(tmp_path / "out"),
            "--epochs", "1", "--seeds", "2", "--stability_clips", "4"]
    for kv in TINY:
        argv += ["--set", kv]
    scores, stability = run.main(argv)
    assert list(scores) == list(run.MODELS)
    for name, res in scores.items():
        assert set(res) == {"tones", "noise"}
        for r in res.values():
            assert len(r["per_seed"]) == 2 and 0.0 <= r["mean"] <= 1.0
        assert set(stability[name]) == {"tones", "noise"}
    # the floor separates these classes (pitch / band): the probe pipeline works
    assert scores["log-mel mean/std"]["tones"]["mean"] == 1.0
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(run.MODELS) and "mean over tasks" in table[0]
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(saved["scores"]) == set(run.MODELS)
    assert (tmp_path / "out" / "pretrain_aape" / "epochs.jsonl").is_file()


def test_pipeline_over_pretraining_seeds(tmp_path):
    """--pretrain_seeds 2: two pre-trainings and two random inits per stem, CIs over them."""
    catalog, _ = make_catalog(tmp_path / "clips")
    rab.assemble(str(catalog), str(tmp_path / "m"))
    argv = ["--manifests", str(tmp_path / "m"), "--output", str(tmp_path / "out"),
            "--epochs", "2", "--seeds", "3", "--pretrain_seeds", "2", "--stability_clips", "4",
            "--skip_random_plain", "--set", "keep_checkpoints=2"]
    for kv in TINY:
        argv += ["--set", kv]
    scores, _ = run.main(argv)
    for name in ("AaPE, pre-trained", "plain stem, pre-trained", "AaPE, random init"):
        for r in scores[name].values():
            assert len(r["per_seed"]) == 2 and len(r["per_model_seed"]) == 2
            assert all(len(p) == 3 for p in r["per_model_seed"])
            assert r["mean"] == pytest.approx(sum(r["per_seed"]) / 2)
    assert len(scores["log-mel mean/std"]["tones"]["per_seed"]) == 3
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["pretrain_seeds"] == 2
    # the second seed is a different model: its own run and its own random weights
    assert (tmp_path / "out" / "pretrain_aape_seed1" / "epochs.jsonl").is_file()
    hp = (tmp_path / "out" / "pretrain_aape_seed1" / "hyperparams.yaml").read_text()
    assert "seed: 1\n" in hp
    assert run.build_model(("random", tmp_path / "out" / "pretrain_aape", 0)).model_fingerprint() \
        != run.build_model(("random", tmp_path / "out" / "pretrain_aape", 1)).model_fingerprint()
    # the paired line: each seed's pre-trained minus random init from the same weights
    seed1 = tmp_path / "out" / "pretrain_aape_seed1"
    assert len(saved["paired_gain"]["AaPE"]) == 2 and "plain stem" not in saved["paired_gain"]
    assert run.run_seed(seed1) == 1
    # the random-init rows are built with each run's own seed: the weights it started from
    from hyperpyyaml import load_hyperpyyaml
    for i, folder in ((0, tmp_path / "out" / "pretrain_aape"), (1, seed1)):
        kind, used, seed = saved["models"][f"AaPE, random init #{i}"]
        assert (kind, used, int(seed)) == ("random", str(folder), run.run_seed(folder))
        with open(folder / "hyperparams.yaml", encoding="utf-8") as f:
            start = load_hyperpyyaml(f, {})["encoder"].state_dict()
        rand = run.build_model(("random", folder, int(seed))).encoder.state_dict()
        assert all(torch.equal(start[k], rand[k]) for k in start)
    # re-running the folder with other settings is refused before anything runs or is lost
    before = sorted(p.name for p in (seed1 / "save").iterdir())
    with pytest.raises(SystemExit, match="pre-trained with other settings .*mask_ratio"):
        run.main(argv + ["--set", "mask_ratio=0.5"])
    assert sorted(p.name for p in (seed1 / "save").iterdir()) == before
    # diagnose.py --over_training: random init + both kept epochs, per layer
    diagnose = _load("diagnose")
    result = diagnose.main(["--manifests", str(tmp_path / "m"), "--over_training", str(seed1),
                            "--seeds", "1", "--threads", "1"])
    assert sorted(result) == [0, 1, 2]
    for per_task in result.values():
        assert set(per_task) == {"tones", "noise"}
        assert all(0.0 <= r["mean"] <= 1.0 and r["rankme"] >= 1.0
                   for layers in per_task.values() for r in layers.values())
    assert result[1] != result[2]  # two different checkpoints, not one read twice
    rows = [line for line in (seed1 / "OVER_TRAINING.md").read_text().splitlines()
            if line[:3] in ("| 0", "| 1", "| 2")]
    assert [r.split(" | ")[0] for r in rows] == ["| 0", "| 1", "| 2"]


def test_missing_build_is_one_line_error(tmp_path):
    with pytest.raises(SystemExit, match="run with --build first"):
        run.main(["--manifests", str(tmp_path / "nothing"), "--output", str(tmp_path / "o")])


# ------------------------------------------------------------------ gathering tools
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_gather_tts_espeak(tmp_path):
    g = rab.Gatherer(tmp_path / "clips")
    g.tts("espeak", "en-us+m1", "yes", str(tmp_path / "a.wav"))
    x = rab.trim_silence(rab.read_any(tmp_path / "a.wav"))
    assert 0.2 * SR < len(x) < 1.5 * SR


@pytest.mark.skipif(shutil.which("fluidsynth") is None
                    or not pathlib.Path("/usr/share/sounds/sf2/FluidR3_GM.sf2").is_file(),
                    reason="fluidsynth / fluid-soundfont-gm not installed")
def test_gather_midi_render(tmp_path):
    mid, wav = str(tmp_path / "a.mid"), str(tmp_path / "a.wav")
    rab.write_midi(mid, [(0.0, 0xC0, 0), (0.1, 0x90, 69, 100), (0.9, 0x80, 69, 0)])
    rab.render_fluidsynth("/usr/share/sounds/sf2/FluidR3_GM.sf2", mid, wav)
    (seg,) = rab.slice_rendering(wav, [0.1], 0.8)
    spec = np.abs(np.fft.rfft(seg))
    f = np.fft.rfftfreq(seg.size, 1 / SR)
    assert abs(f[spec.argmax()] - 440.0) < 20  # A4 comes out at 440 Hz


def test_benchmark_doctests(tmp_path):
    """The benchmark scripts' Example blocks (outside the doctest paths) run."""
    import doctest
    fixtures = {"tmp_path": tmp_path}
    for module in (run, rab, _load("diagnose")):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS,
                                 extraglobs={"getfixture": fixtures.__getitem__})
        assert result.failed == 0, module.__name__
