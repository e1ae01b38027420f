import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch
from hyperpyyaml import load_hyperpyyaml

from aasp_sb.analysis.stability import (
    compare_checkpoints,
    main,
    measure_checkpoint_stability,
    measure_model_stability,
    parse_shifts,
    shifted_views,
)
from aasp_sb.checkpoints import AtomicCheckpointer
from aasp_sb.evaluation.stability import shift_waveform
from aasp_sb.pretrained import load_pretrained

SR = 16000

RUN_YAML = """
sample_rate: 16000
n_mels: 32
embed_dim: 16
crop_frames: 64
compute_features: !new:aasp_sb.features.Features
    logmel: !new:aasp_sb.features.LogMel
        sample_rate: !ref <sample_rate>
        n_mels: !ref <n_mels>
stem: !apply:aasp_sb.lobes.aape.make_stem
    use_aape: {use_aape}
    n_mels: !ref <n_mels>
    patch_size: 16
    embed_dim: !ref <embed_dim>
    num_modes: 2
    fusion: {fusion}
encoder: !new:aasp_sb.lobes.encoder.AudioViT
    stem: !ref <stem>
    embed_dim: !ref <embed_dim>
    depth: 1
    num_heads: 2
    max_frames: !ref <crop_frames>
"""


def make_corpus(folder, n=4, seconds=1.0):
    """n AM-modulated noise clips, one corrupt file, one too-short clip."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        t = np.arange(int(seconds * SR)) / SR
        am = 0.5 * (1 + np.sin(2 * np.pi * (4 + 5 * i) * t))
        wav = (0.1 * am * rng.standard_normal(t.size)).astype("float32")
        path = folder / f"clip{i}.wav"
        sf.write(str(path), wav, SR)
        rows.append((f"clip{i}", seconds, path))
    bad = folder / "corrupt.wav"
    bad.write_bytes(b"not audio at all")
    rows.insert(1, ("corrupt", 1.0, bad))
    short = folder / "short.wav"
    sf.write(str(short), np.zeros(800, dtype="float32"), SR)
    rows.insert(2, ("short", 0.05, short))
    csv = folder / "clips.csv"
    lines = ["ID,duration,wav"] + [f"{i},{d},{p}" for i, d, p in rows]
    csv.write_text("\n".join(lines) + "\n")
    return csv


def make_fake_run(folder, use_aape=True, fusion="gated_add", seed=0):
    """A run folder as the recipe leaves it (hyperparams, checkpoint, logs)."""
    folder.mkdir(parents=True, exist_ok=True)
    text = RUN_YAML.format(use_aape=use_aape, fusion=fusion)
    (folder / "hyperparams.yaml").write_text(text)
    torch.manual_seed(seed)
    hparams = load_hyperpyyaml(text)
    encoder = hparams["encoder"]
    if use_aape and fusion == "gated_add":
        with torch.no_grad():
            encoder.stem.gate.normal_(std=0.1)
    AtomicCheckpointer(
        folder / "save", recoverables={"encoder": encoder}
    ).save_checkpoint()
    steps = [
        {
            "step": s,
            "epoch": 1 + (s - 1) // 3,
            "lr": 1e-3 * s / 6,
            "ema_decay": 0.99 + 0.001 * s,
            "regression": 2.0 / s,
            "contrastive": 3.0 - 0.1 * s,
            "loss": 2.0 / s + 0.3 - 0.01 * s,
        }
        for s in range(1, 7)
    ]
    epochs = [
        {
            "epoch": e,
            "lr": 1e-3,
            "ema_decay": 0.995,
            "train_loss": 1.0 / e,
            "valid_regression": 0.5 / e,
            "valid_contrastive": 2.0,
            "valid_loss": 0.7 / e,
            "valid_rankme": 5.0 + e,
        }
        for e in (1, 2)
    ]
    with open(folder / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in steps)
    with open(folder / "epochs.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in epochs)
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("analysis")
    return {
        "csv": make_corpus(root / "audio"),
        "aasp": make_fake_run(root / "aasp", use_aape=True, seed=1),
        "plain": make_fake_run(root / "plain", use_aape=False, seed=2),
    }


def test_parse_shifts():
    assert parse_shifts("1-15") == list(range(1, 16))
    assert parse_shifts("0,2-3,2,0.5") == [0, 2, 3, 0.5]
    assert parse_shifts([1, 2.0]) == [1, 2]
    with pytest.raises(ValueError, match="cannot parse"):
        parse_shifts("1-x")
    with pytest.raises(ValueError, match="empty"):
        parse_shifts("5-2")


def test_shifted_views_are_per_clip_shifts_of_the_same_window():
    wavs = torch.randn(3, 500)
    lengths = torch.tensor([500, 420, 300])
    wavs[1, 420:] = 0
    wavs[2, 300:] = 0
    shifts = [0, 1, 2.5, -1]
    front, n = 60, 400  # 2.5 frames of hop 20 = 50 samples of context
    views, valid = shifted_views(wavs, lengths, shifts, 20, front, n)
    assert views.shape == (4, 3, n)
    for i, k in enumerate(shifts):
        for b in range(3):
            ref = shift_waveform(wavs[b], k, 20)[front : front + n]
            assert torch.equal(views[i, b], ref)
            delay = round(k * 20)
            assert valid[i, b] == min(n, lengths[b].item() - front + delay)
    with pytest.raises(ValueError, match="context"):
        shifted_views(wavs, lengths, [4], 20, front, n)


def test_columns_belong_to_their_checkpoints_and_zero_shift_is_one(setup, caplog):
    """Two different models (AaPE and plain stem, other seeds) get their own numbers.

    Each column equals that checkpoint measured on its own, whatever its
    position in the list; the two models' columns differ; the same checkpoint
    listed twice gives identical columns.
    """
    kwargs = dict(shifts="0-3,8", max_clips=3)
    result = compare_checkpoints(
        [setup["aasp"], setup["plain"], setup["aasp"]], setup["csv"], **kwargs
    )
    models = result["models"]
    assert list(models) == ["aasp", "plain", "aasp-2"]
    a, pl = models["aasp"], models["plain"]
    assert a["stem"] == "AaPE" and pl["stem"] == "PatchEmbed"
    assert a["checkpoint"].startswith(str(setup["aasp"]))
    assert pl["checkpoint"].startswith(str(setup["plain"]))
    assert models["aasp-2"]["per_shift"] == a["per_shift"]
    # the models differ: at least one shifted cosine differs clearly
    assert max(abs(x - y) for x, y in zip(a["per_shift"][1:], pl["per_shift"][1:])) > 1e-3
    for name, run in (("aasp", setup["aasp"]), ("plain", setup["plain"])):
        alone = measure_checkpoint_stability(run, setup["csv"], **kwargs)
        assert models[name]["per_shift"] == pytest.approx(alone["per_shift"], abs=1e-9)
    swapped = compare_checkpoints([setup["plain"], setup["aasp"]], setup["csv"], **kwargs)
    assert list(swapped["models"]) == ["plain", "aasp"]
    for name in ("aasp", "plain"):
        assert swapped["models"][name]["per_shift"] == pytest.approx(
            models[name]["per_shift"], abs=1e-9
        )
    assert a["num_clips"] == 3
    assert a["shifts"] == [0, 1, 2, 3, 8]
    for r in (a, pl):
        assert r["per_shift"][0] == pytest.approx(1.0, abs=1e-9)
        assert all(-1.0 <= v <= 1.0 + 1e-9 for v in r["per_shift"])
        assert r["overall"] == pytest.approx(sum(r["per_shift"]) / 5)
    # the corrupt file and the too-short clip are skipped and logged, not fatal
    skipped = result["skipped"]
    assert sorted(p.rsplit("/", 1)[-1] for p in skipped) == [
        "corrupt.wav",
        "short.wav",
    ]
    assert "shorter" in next(
        r for p, r in skipped.items() if p.endswith("short.wav")
    )
    json.dumps(result)  # serialisable


def test_batching_does_not_change_the_numbers(setup):
    parts = load_pretrained(setup["plain"])
    kwargs = dict(shifts=[1, 5, 11], max_clips=3)
    one = measure_model_stability(
        parts.features, parts.encoder, setup["csv"], batch_size=1, **kwargs
    )
    three = measure_model_stability(
        parts.features, parts.encoder, setup["csv"], batch_size=3, **kwargs
    )
    assert one["per_shift"] == pytest.approx(three["per_shift"], abs=1e-5)
    # an explicit crop longer than the training length is chunked by the encoder
    api = measure_checkpoint_stability(
        setup["plain"], setup["csv"], shifts=[2], seconds=0.9, max_clips=2
    )
    assert api["num_clips"] == 2 and api["seconds"] == 0.9
    assert api["checkpoint"].endswith("encoder.ckpt")
    assert not math.isnan(api["per_shift"][0])


def test_command_writes_side_by_side_markdown_and_json(setup, tmp_path):
    md, js = tmp_path / "out" / "stab.md", tmp_path / "out" / "stab.json"
    main(
        [
            "--checkpoint",
            str(setup["aasp"]),
            "--checkpoint",
            str(setup["plain"]),
            "--names",
            "aasp,plain",
            "--csv",
            str(setup["csv"]),
            "--shifts",
            "1-4",
            "--max-clips",
            "2",
            "--batch-size",
            "2",
            "--output",
            str(md),
            "--json",
            str(js),
        ]
    )
    text = md.read_text()
    assert "| shift | aasp | plain |" in text
    assert "| 4 |" in text and "| mean |" in text
    data = json.loads(js.read_text())
    assert list(data["models"]) == ["aasp", "plain"]
    assert data["models"]["plain"]["stem"] == "PatchEmbed"
    assert len(data["models"]["aasp"]["per_shift"]) == 4
    assert data["num_clips"] == {"aasp": 2, "plain": 2}
    # the Markdown cells are the JSON numbers, each under its own model's column
    rows = {
        line.split("|")[1].strip(): [float(c) for c in line.split("|")[2:4]]
        for line in text.splitlines()
        if line.startswith("| ") and not line.startswith("| shift")
    }
    for i, shift in enumerate(data["shifts"]):
        for j, name in enumerate(("aasp", "plain")):
            assert rows[str(shift)][j] == pytest.approx(
                data["models"][name]["per_shift"][i], abs=6e-5
            )
    assert rows["mean"] == pytest.approx(
        [data["models"][n]["overall"] for n in ("aasp", "plain")], abs=6e-5
    )
    assert rows["1"][0] != rows["1"][1]  # two different models, two columns
    with pytest.raises(ValueError, match="distinct names"):
        compare_checkpoints([setup["aasp"]], setup["csv"], names=["a", "b"])
