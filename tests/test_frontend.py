"""The front end is M2D's: compared with nnAudio itself, on speech and a synthetic signal.

M2D (``wav_to_lms.py``) computes ``nnAudio.features.MelSpectrogram(sr=16000,
n_fft=400, win_length=400, hop_length=160, n_mels=80, fmin=50, fmax=8000,
center=True, power=2)`` and then ``log(x + torch.finfo().eps)``. The speech
clips are synthesised with espeak-ng at test time (skipped, with the reason,
when it is not installed: ``apt-get install espeak-ng``); the synthetic
chirp + noise + clicks signal always runs.

Run folders made before the front end matched M2D's must still embed with the
front end they were trained with (torchaudio's defaults: HTK, no norm).
"""

import logging
import re
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
from hyperpyyaml import load_hyperpyyaml
from nnAudio.features import MelSpectrogram as NNAudioMel
from pretrained_fixture import make_run

from aasp_sb.brains.finetune import architecture_overrides, check_same_model
from aasp_sb.data.audio import load_audio
from aasp_sb.features import (
    FLOAT32_EPS,
    Features,
    LogMel,
    Normalize,
    compute_stats,
    main,
)
from aasp_sb.inference import AaSPEncoder
from aasp_sb.pretrained import load_pretrained, load_yaml, pin_legacy_front_end

SR = 16000
TOL = 0.01  # the bound: max abs difference in the log domain
SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Seven silver spoons sat still, while a shrill whistle faded.",
)


def m2d_logmel(wav):
    """M2D's front end, as ``wav_to_lms.py`` builds it: ``[B, S]`` -> ``[B, T, F]``."""
    to_spec = NNAudioMel(
        sr=16000,
        n_fft=400,
        win_length=400,
        hop_length=160,
        n_mels=80,
        fmin=50,
        fmax=8000,
        center=True,
        power=2,
        verbose=False,
    )
    x = to_spec(wav)
    return (x + torch.finfo().eps).log().transpose(-1, -2)


def torchaudio_defaults_logmel(wav):
    """The front end of runs made before this change: torchaudio's MelSpectrogram defaults."""
    spec = torchaudio.transforms.MelSpectrogram(
        sample_rate=SR,
        n_fft=400,
        win_length=400,
        hop_length=160,
        n_mels=80,
        f_min=50.0,
        f_max=8000.0,
        power=2.0,
    )(wav)
    return (spec + FLOAT32_EPS).log().transpose(-1, -2)


def synthetic_clip(seconds=3.0, seed=0):
    """Deterministic, non-trivial: log chirp 60 Hz -> 7.5 kHz, noise, clicks, quiet gaps."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    f0, f1 = 60.0, 7500.0
    k = np.log(f1 / f0) / seconds
    chirp = np.sin(2 * np.pi * f0 * (np.exp(k * t) - 1) / k)
    noise = rng.standard_normal(n) * np.linspace(0.002, 0.2, n)  # rising noise floor
    clicks = np.zeros(n)
    clicks[rng.choice(n, 25, replace=False)] = rng.uniform(-1, 1, 25)
    x = 0.4 * chirp + noise + clicks
    x[int(0.3 * SR) : int(0.5 * SR)] *= 1e-4  # near-silent gap (floor region)
    return torch.from_numpy(x.astype(np.float32))


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """Speech synthesised by espeak-ng (22.05 kHz), read and resampled to 16 kHz."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.skip("espeak-ng not installed (apt-get install espeak-ng): no speech clips")
    folder = tmp_path_factory.mktemp("speech")
    clips = []
    for i, text in enumerate(SENTENCES):
        path = folder / f"s{i}.wav"
        subprocess.run(
            [exe, "-v", "en", "-s", str(140 + 30 * i), "-w", str(path), text],
            check=True,
            capture_output=True,
            timeout=60,
        )
        wav = load_audio(str(path), SR)
        assert wav.numel() > SR and wav.abs().max() > 0.1, f"{path}: no speech"
        clips.append(wav)
    return clips


def assert_matches_m2d(wav):
    ours = LogMel()(wav[None])
    ref = m2d_logmel(wav[None])
    assert ours.shape == ref.shape
    err = (ours - ref).abs().max().item()
    assert err < TOL, f"max abs log-mel difference to nnAudio {err:.4g} >= {TOL}"
    # the comparison can fail: the front end used before this change is far off
    legacy = torchaudio_defaults_logmel(wav[None])
    assert (legacy - ref).abs().max().item() > 100 * TOL
    assert (legacy - ref).abs().mean().item() > 1.0
    return err


def test_default_front_end_is_m2ds_on_synthetic_signal():
    err = assert_matches_m2d(synthetic_clip())
    assert err < 1e-3  # measured about 2e-4: float32 conv STFT vs FFT


def test_default_front_end_is_m2ds_on_speech(speech):
    for wav in speech:
        assert_matches_m2d(wav)


def test_legacy_settings_are_torchaudio_defaults_and_both_options_matter():
    wav = synthetic_clip(1.0, seed=1)[None]
    legacy = LogMel(mel_scale="htk", mel_norm=None)(wav)
    torch.testing.assert_close(legacy, torchaudio_defaults_logmel(wav), rtol=0, atol=1e-5)
    ref = m2d_logmel(wav)
    for scale, norm in (("htk", "slaney"), ("slaney", None)):
        err = (LogMel(mel_scale=scale, mel_norm=norm)(wav) - ref).abs().max().item()
        assert err > 100 * TOL, (scale, norm, err)


@pytest.mark.parametrize("key,value", [("mel_scale", "mel"), ("mel_norm", "none")])
def test_bad_settings_name_the_argument(key, value):
    with pytest.raises(ValueError, match=f"LogMel: {key} must be one of"):
        LogMel(**{key: value})


def test_package_yamls_pin_the_m2d_front_end():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    yamls = sorted(root.glob("hparams/*.yaml")) + sorted(root.glob("hparams/*/*.yaml"))
    built = [p for p in yamls if "aasp_sb.features.LogMel" in p.read_text()]
    assert len(built) >= 3
    for path in built:
        text = path.read_text()
        assert re.search(r"^mel_scale: slaney\b", text, re.M), path
        assert re.search(r"^mel_norm: slaney\b", text, re.M), path
        assert "mel_scale: !ref <mel_scale>" in text, path
        assert "mel_norm: !ref <mel_norm>" in text, path


# ------------------------------------------------------------ run folders
def make_legacy_run(folder):
    """A run folder as made before this change: no mel_scale / mel_norm anywhere."""
    run = make_run(folder)
    path = run / "hyperparams.yaml"
    text = path.read_text(encoding="utf-8")
    old = "".join(
        line
        for line in text.splitlines(keepends=True)
        if not re.match(r"\s*(mel_scale|mel_norm)\s*:", line)
    )
    assert old != text and "mel_" not in old
    path.write_text(old, encoding="utf-8")
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return (
        make_run(tmp_path_factory.mktemp("new_run")),
        make_legacy_run(tmp_path_factory.mktemp("legacy_run")),
    )


def test_new_run_records_and_uses_the_m2d_front_end(runs):
    parts = load_pretrained(runs[0])
    assert parts.hparams["mel_scale"] == "slaney"
    assert parts.hparams["mel_norm"] == "slaney"
    wav = synthetic_clip(1.0, seed=2)[None]
    expect = (m2d_logmel(wav) + 7.1) / 4.2
    assert (parts.features(wav) - expect).abs().max().item() < TOL / 4.2


def test_legacy_run_embeds_with_its_own_front_end(runs, caplog):
    with caplog.at_level(logging.INFO, logger="aasp_sb.pretrained"):
        parts = load_pretrained(runs[1])
    notes = [r for r in caplog.records if "made before the M2D front end" in r.message]
    assert len(notes) == 1 and notes[0].levelno == logging.INFO
    logmel = parts.features.logmel
    assert (logmel.mel_scale, logmel.mel_norm) == ("htk", None)
    # recorded, so fine-tuning from it rebuilds the same front end
    assert parts.hparams["mel_scale"] == "htk" and parts.hparams["mel_norm"] is None
    keys = architecture_overrides(parts)
    assert keys["mel_scale"] == "htk" and keys["mel_norm"] is None

    wav = synthetic_clip(1.0, seed=3)[None]
    feats = parts.features(wav)
    torch.testing.assert_close(
        feats, (torchaudio_defaults_logmel(wav) + 7.1) / 4.2, rtol=0, atol=1e-5
    )
    new = Features(LogMel(), Normalize())(wav)
    assert (feats - new).abs().max().item() > 100 * TOL

    # the inference wrapper embeds with those legacy features
    model = AaSPEncoder.from_run(runs[1], device="cpu")
    torch.testing.assert_close(model.compute_features(wav)[0], feats, rtol=0, atol=1e-6)
    emb = model.embed_batch(wav)
    new_run = AaSPEncoder.from_run(runs[0], device="cpu")  # same weights (seed 0)
    assert torch.equal(
        torch.cat([p.flatten() for p in model.encoder.parameters()]),
        torch.cat([p.flatten() for p in new_run.encoder.parameters()]),
    )
    assert not torch.allclose(emb, new_run.embed_batch(wav), atol=1e-4)


def test_fine_tuning_from_a_legacy_run_rebuilds_its_front_end(runs, tmp_path):
    from pathlib import Path

    ft_yaml = Path(__file__).resolve().parents[1] / "hparams" / "finetune" / "esc50.yaml"
    parts = load_pretrained(runs[1])
    base = {"output_folder": str(tmp_path), "num_classes": 50}
    hp = load_yaml(ft_yaml, {**base, **architecture_overrides(parts)})
    assert hp["compute_features"].logmel.mel_scale == "htk"
    check_same_model(parts, hp["compute_features"], hp["encoder"])  # no error
    arch = {
        k: v
        for k, v in architecture_overrides(parts).items()
        if k not in ("mel_scale", "mel_norm")
    }
    hp = load_yaml(ft_yaml, {**base, **arch})  # the M2D front end: detected
    with pytest.raises(ValueError, match="front end built from the fine-tuning YAML"):
        check_same_model(parts, hp["compute_features"], hp["encoder"])


def test_pinning_only_touches_legacy_yamls_and_names_the_file():
    block = "fe: !new:aasp_sb.features.Features\n    logmel: !new:aasp_sb.features.LogMel\n"
    pinned, legacy = pin_legacy_front_end(block + "        n_mels: 80\n")
    assert legacy and "        mel_scale: !ref <mel_scale>" in pinned
    pinned, legacy = pin_legacy_front_end(block + "    normalize: null\n")  # no arguments
    assert legacy and "        mel_norm: !ref <mel_norm>" in pinned
    fe = load_hyperpyyaml(pinned)["fe"]
    assert (fe.logmel.mel_scale, fe.logmel.mel_norm) == ("htk", None)
    explicit = block + "        mel_scale: slaney\n"
    assert pin_legacy_front_end(explicit) == (explicit, False)
    flow = "fe: !new:aasp_sb.features.Features\n    logmel: !new:aasp_sb.features.LogMel {}\n"
    with pytest.raises(ValueError, match="old.yaml: cannot tell which front end"):
        pin_legacy_front_end(flow, "old.yaml")


# ------------------------------------------------------------ statistics
def test_stats_cli_uses_the_configured_front_end(tmp_path, runs, capsys):
    paths = []
    for i in range(3):
        path = tmp_path / f"c{i}.wav"
        sf.write(str(path), synthetic_clip(1.0, seed=10 + i).numpy(), SR)
        paths.append(path)
    csv = tmp_path / "manifest.csv"
    csv.write_text(
        "ID,duration,wav\n" + "".join(f"c{i},1.0,{p}\n" for i, p in enumerate(paths))
    )
    wavs = [load_audio(str(p), SR) for p in paths]
    mean, std = main(["--csv", str(csv)])
    out = capsys.readouterr().out
    assert f"norm_mean: {mean:.6f}" in out and f"norm_std: {std:.6f}" in out
    expect = torch.cat([m2d_logmel(w[None]).flatten() for w in wavs]).double()
    assert abs(mean - expect.mean().item()) < 1e-3
    assert abs(std - expect.std(unbiased=False).item()) < 1e-3

    legacy = main(["--csv", str(csv), "--hparams", str(runs[1])])
    assert legacy == pytest.approx(compute_stats(wavs, LogMel(mel_scale="htk", mel_norm=None)))
    assert abs(legacy[0] - mean) > 1.0  # the filterbank changes the statistics
    assert main(["--csv", str(csv), "--hparams", str(runs[0])]) == pytest.approx((mean, std))
    with pytest.raises(SystemExit, match="no `path` column"):
        main(["--csv", str(csv), "--column", "path"])
    with pytest.raises(SystemExit, match="missing.csv: no such manifest"):
        main(["--csv", str(tmp_path / "missing.csv")])
