"""The procedural demo corpus: balance, determinism, modulation content."""

import os

import numpy as np
import pytest
import soundfile as sf
import torch

from aasp_sb.data.audio import load_audio
from aasp_sb.data.demo import (
    AM_RATES,
    CLASS_GENERATORS,
    DEFAULT_CLASSES,
    make_demo_corpus,
    make_unlabeled_folder,
    synth_clip,
)
from aasp_sb.data.folder import read_csv
from aasp_sb.features import LogMel

SMALL = dict(num_per_class=4, seconds=(0.3, 0.6))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    return folder, make_demo_corpus(str(folder), **SMALL)


def test_layout_and_class_balance(corpus):
    folder, out = corpus
    classes = open(out["classes"]).read().split()
    assert classes == list(DEFAULT_CLASSES) and 6 <= len(classes) <= 8
    expected = {"train": 2, "valid": 1, "test": 1}
    all_ids = set()
    for split, per_class in expected.items():
        rows = read_csv(out[split])
        assert list(rows[0]) == ["ID", "duration", "wav", "label"]
        counts = {c: sum(r["label"] == c for r in rows) for c in classes}
        assert set(counts.values()) == {per_class}
        for r in rows:
            info = sf.info(r["wav"])
            assert info.samplerate == 16000 and info.channels == 1
            assert float(r["duration"]) == pytest.approx(
                info.frames / 16000, abs=1e-4
            )
            assert 0.3 - 1e-3 <= float(r["duration"]) <= 0.6 + 1e-3
            all_ids.add(r["ID"])
    assert len(all_ids) == 4 * len(classes)


def test_mixed_lengths_and_levels(corpus):
    _, out = corpus
    rows = read_csv(out["train"])
    durations = {r["duration"] for r in rows}
    assert len(durations) > len(rows) // 2
    peaks = [np.abs(sf.read(r["wav"])[0]).max() for r in rows]
    assert max(peaks) <= 1.0 and max(peaks) / min(peaks) > 2.0


def test_deterministic_and_idempotent(corpus, tmp_path):
    folder, out = corpus
    other = make_demo_corpus(str(tmp_path / "again"), **SMALL)
    for split in ("train", "valid", "test"):
        a, b = read_csv(out[split]), read_csv(other[split])
        assert [r["ID"] for r in a] == [r["ID"] for r in b]
        for ra, rb in zip(a, b):
            np.testing.assert_array_equal(
                sf.read(ra["wav"])[0], sf.read(rb["wav"])[0]
            )
    mtime = os.path.getmtime(read_csv(out["train"])[0]["wav"])
    make_demo_corpus(str(folder), **SMALL)
    assert os.path.getmtime(read_csv(out["train"])[0]["wav"]) == mtime
    # A different seed gives different audio.
    diff = make_demo_corpus(str(tmp_path / "seed1"), seed=1, **SMALL)
    w0 = sf.read(read_csv(out["train"])[0]["wav"])[0]
    w1 = sf.read(read_csv(diff["train"])[0]["wav"])[0]
    assert w0.shape != w1.shape or not np.array_equal(w0, w1)


def test_clips_stable_when_corpus_grows(corpus, tmp_path):
    _, out = corpus
    big = make_demo_corpus(
        str(tmp_path / "big"),
        num_per_class=6,
        seconds=(0.3, 0.6),
        classes=("chirp",),
    )
    ids = {
        r["ID"]: r["wav"]
        for s in ("train", "valid", "test")
        for r in read_csv(big[s])
    }
    small = {
        r["ID"]: r["wav"]
        for s in ("train", "valid", "test")
        for r in read_csv(out[s])
    }
    for uid in ("chirp_0000", "chirp_0003"):
        np.testing.assert_array_equal(
            sf.read(ids[uid])[0], sf.read(small[uid])[0]
        )


def _modulation_peak(x, sr=16000):
    feats = LogMel(sample_rate=sr)(torch.from_numpy(x)[None])[0]
    env = feats.exp().sum(1).numpy()[30:]  # skip the onset
    env = env - env.mean()
    spec = np.abs(np.fft.rfft(env * np.hanning(len(env))))
    freqs = np.fft.rfftfreq(len(env), 0.01)
    spec[freqs < 0.3] = 0
    return freqs[spec.argmax()]


@pytest.mark.parametrize("name", sorted(AM_RATES))
def test_am_classes_modulate_at_their_rate(name):
    rate = AM_RATES[name]
    assert rate > 3.125  # inside the alias-prone band of a 16-frame patch
    x = synth_clip(name, 3 * 16000, rng=np.random.default_rng(5))
    assert abs(_modulation_peak(x) - rate) <= 0.06 * rate + 0.35


def test_outside_classes_have_slow_modulation():
    x = synth_clip("slow_tone", 4 * 16000, rng=np.random.default_rng(1))
    assert _modulation_peak(x) < 3.125


@pytest.mark.parametrize("sr", [8000, 22050])
def test_all_generators_any_rate(sr):
    for name in CLASS_GENERATORS:
        x = synth_clip(name, sr // 4, sr, np.random.default_rng(0))
        assert (
            x.dtype == np.float32
            and np.isfinite(x).all()
            and np.abs(x).max() <= 1.0
        )
        assert np.abs(x).max() > 0


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown demo class"):
        make_demo_corpus(str(tmp_path), classes=("am_05hz", "nope"))
    with pytest.raises(ValueError, match="no training"):
        make_demo_corpus(str(tmp_path), num_per_class=2)


def test_unlabeled_folder_is_mixed(tmp_path):
    paths = make_unlabeled_folder(str(tmp_path), n=10, seconds=(0.1, 0.4))
    infos = [sf.info(p) for p in paths]
    assert {i.samplerate for i in infos} == {8000, 16000, 22050, 44100, 48000}
    assert {i.channels for i in infos} == {1, 2}
    assert {os.path.splitext(p)[1] for p in paths} == {".wav", ".flac"}
    assert len({os.path.dirname(p) for p in paths}) == 3
    for p, info in zip(paths, infos):
        wav = load_audio(p)
        assert abs(wav.numel() - info.frames * 16000 / info.samplerate) <= 1
    again = make_unlabeled_folder(str(tmp_path / "b"), n=10, seconds=(0.1, 0.4))
    np.testing.assert_array_equal(sf.read(paths[3])[0], sf.read(again[3])[0])
