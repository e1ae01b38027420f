"""Robust audio reading: resampling, down-mix, errors, windowed reads, crops."""

import logging
import math
import pickle

import numpy as np
import pytest
import soundfile as sf
import torch

from aasp_sb.data.audio import (
    AudioLoadError,
    SkipCounter,
    audio_info,
    crop_or_pad,
    load_audio,
    window_start,
)


def _sine(freq, seconds, sr, channels=1):
    t = np.arange(int(seconds * sr)) / sr
    x = 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    if channels == 1:
        return x
    return np.stack([x * (c + 1) / channels for c in range(channels)], axis=1)


@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000, 11025])
def test_resampling_length_and_pitch(tmp_path, sr):
    path = str(tmp_path / f"sine_{sr}.wav")
    n = int(0.5 * sr)
    sf.write(path, _sine(1000.0, 0.5, sr), sr)
    wav = load_audio(path)
    assert wav.dtype == torch.float32 and wav.dim() == 1
    assert abs(wav.numel() - n * 16000 / sr) <= 1
    spec = np.abs(np.fft.rfft(wav.numpy() * np.hanning(wav.numel())))
    freqs = np.fft.rfftfreq(wav.numel(), 1 / 16000)
    assert abs(freqs[spec.argmax()] - 1000.0) < 5.0


def test_no_resampling_at_target_rate(tmp_path):
    path = str(tmp_path / "a.wav")
    x = _sine(440.0, 0.25, 16000)
    sf.write(path, x, 16000, subtype="FLOAT")
    assert torch.equal(load_audio(path), torch.from_numpy(x))
    assert audio_info(path) == (4000, 16000, 1)


def test_stereo_downmix_is_channel_mean(tmp_path):
    path = str(tmp_path / "stereo.wav")
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3000, 2)) * 0.1).astype(np.float32)
    sf.write(path, x, 16000, subtype="FLOAT")
    wav = load_audio(path)
    np.testing.assert_allclose(wav.numpy(), x.mean(axis=1), atol=1e-7)
    # Six channels and a resampled rate: still the mean, then resampled.
    path6 = str(tmp_path / "six.flac")
    x6 = (rng.standard_normal((4410, 6)) * 0.1).astype(np.float32)
    sf.write(path6, x6, 44100)
    assert audio_info(path6) == (4410, 44100, 6)
    assert load_audio(path6).numel() == 1600


@pytest.mark.parametrize("kind", ["garbage", "truncated_header", "missing"])
def test_unreadable_file_raises_with_path(tmp_path, kind):
    path = str(tmp_path / f"{kind}.wav")
    if kind == "garbage":
        with open(path, "wb") as f:
            f.write(np.random.default_rng(0).bytes(5000))
    elif kind == "truncated_header":
        sf.write(path, _sine(440.0, 0.1, 16000), 16000)
        with open(path, "rb") as f:
            head = f.read(20)
        with open(path, "wb") as f:
            f.write(head)
    with pytest.raises(AudioLoadError) as info:
        load_audio(path)
    assert path in str(info.value) and info.value.path == path
    assert info.value.reason
    with pytest.raises(AudioLoadError, match=kind):
        audio_info(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_rejected(tmp_path, bad):
    path = str(tmp_path / "nan.wav")
    x = _sine(440.0, 0.1, 16000)
    x[100] = bad
    sf.write(path, x, 16000, subtype="FLOAT")
    with pytest.raises(AudioLoadError, match="non-finite") as info:
        load_audio(path)
    assert path in str(info.value)


def test_zero_length_rejected(tmp_path):
    path = str(tmp_path / "empty.wav")
    sf.write(path, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioLoadError, match="zero-length") as info:
        load_audio(path)
    assert path in str(info.value)


def test_silent_clip_is_legal(tmp_path):
    path = str(tmp_path / "silence.wav")
    sf.write(path, np.zeros(800, dtype=np.float32), 8000)
    wav = load_audio(path)
    assert wav.numel() == 1600 and torch.count_nonzero(wav) == 0


def test_error_pickles():
    err = pickle.loads(pickle.dumps(AudioLoadError("/x.wav", "corrupt")))
    assert (err.path, err.reason) == ("/x.wav", "corrupt")
    assert "/x.wav" in str(err)


@pytest.mark.parametrize("fmt", ["ogg", "mp3", "flac"])
def test_compressed_formats(tmp_path, fmt):
    if fmt.upper() not in sf.available_formats():
        pytest.skip(f"libsndfile here cannot handle {fmt}")
    path = str(tmp_path / f"a.{fmt}")
    sf.write(path, _sine(440.0, 1.0, 16000), 16000)
    wav = load_audio(path)
    assert abs(wav.numel() - 16000) <= 1200  # mp3 may add encoder delay
    assert wav.abs().max() > 0.1


@pytest.fixture
def ramp_file(tmp_path):
    """60 s float wav whose sample i equals i / n (unique, for windows)."""
    sr, seconds = 8000, 60
    n = sr * seconds
    x = (np.arange(n) / n).astype(np.float32)
    path = str(tmp_path / "long.wav")
    sf.write(path, x, sr, subtype="FLOAT")
    return path, x, sr


def _record_reads(monkeypatch):
    calls = []
    original = sf.SoundFile.read

    def read(self, frames=-1, *args, **kwargs):
        calls.append(frames)
        return original(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", read)
    return calls


def test_windowed_read_reads_only_the_window(ramp_file, monkeypatch):
    path, x, sr = ramp_file
    calls = _record_reads(monkeypatch)
    wav = load_audio(path, sample_rate=sr, max_seconds=1.5, window="start")
    assert calls == [int(1.5 * sr)]
    assert torch.equal(wav, torch.from_numpy(x[: int(1.5 * sr)]))

    calls.clear()
    gen = torch.Generator().manual_seed(3)
    wav = load_audio(
        path, sample_rate=sr, max_seconds=2.0, window="random", generator=gen
    )
    assert calls == [2 * sr]
    start = int(round(wav[0].item() * len(x)))
    assert start > 0
    assert torch.equal(wav, torch.from_numpy(x[start : start + 2 * sr]))
    gen = torch.Generator().manual_seed(3)
    again = load_audio(
        path, sample_rate=sr, max_seconds=2.0, window="random", generator=gen
    )
    assert torch.equal(wav, again)


def test_windowed_read_with_resampling(ramp_file, monkeypatch):
    path, _, sr = ramp_file
    calls = _record_reads(monkeypatch)
    wav = load_audio(path, sample_rate=16000, max_seconds=0.75)
    assert calls == [math.ceil(0.75 * sr)]
    assert wav.numel() == 12000


def test_window_longer_than_file_reads_everything(tmp_path):
    path = str(tmp_path / "short.wav")
    sf.write(path, _sine(440.0, 0.5, 16000), 16000)
    assert load_audio(path, max_seconds=3.0, window="random").numel() == 8000


def test_crop_or_pad_modes():
    x = torch.arange(10.0)
    out, rel = crop_or_pad(x, 4, mode="start")
    assert torch.equal(out, torch.arange(4.0)) and rel == 1.0
    gen = torch.Generator().manual_seed(0)
    starts = set()
    for _ in range(50):
        out, rel = crop_or_pad(x, 4, mode="random", generator=gen)
        assert out.numel() == 4 and rel == 1.0
        assert torch.equal(out, torch.arange(out[0], out[0] + 4))
        starts.add(int(out[0]))
    assert starts == set(range(7))  # every valid start is reachable

    out, rel = crop_or_pad(x, 16, mode="start", pad="zero")
    assert torch.equal(out[:10], x) and out[10:].abs().sum() == 0
    assert rel == pytest.approx(10 / 16)

    out, rel = crop_or_pad(x, 25, mode="start", pad="repeat")
    assert torch.equal(out, x.repeat(3)[:25]) and rel == 1.0
    out, rel = crop_or_pad(x, 25, mode="random", pad="repeat", generator=gen)
    assert out.numel() == 25 and rel == 1.0
    assert torch.all((out[1:] - out[:-1]) % 10 == 1)  # seamless tiling

    assert crop_or_pad(x, 10)[0].numel() == 10
    batch = torch.randn(2, 3, 5)
    assert crop_or_pad(batch, 8, pad="zero")[0].shape == (2, 3, 8)
    with pytest.raises(ValueError):
        crop_or_pad(x, 4, mode="center")
    with pytest.raises(ValueError):
        crop_or_pad(x, 4, pad="reflect")
    with pytest.raises(ValueError):
        crop_or_pad(torch.zeros(0), 4)
    assert window_start(5, 10, "random") == 0


def test_skip_counter_logs_once_and_records(tmp_path, caplog):
    record = str(tmp_path / "skips.txt")
    a, b = (
        SkipCounter("train", record_file=record),
        SkipCounter("train", record_file=record),
    )
    with caplog.at_level(logging.WARNING, logger="aasp_sb.data.audio"):
        assert a.add("/d/x.wav", AudioLoadError("/d/x.wav", "corrupt"))
        assert not a.add("/d/x.wav", "corrupt")
        a.add("/d/y.wav", "nan")
        b.add("/d/z.wav", "empty")
    assert sum("/d/x.wav" in r.getMessage() for r in caplog.records) == 1
    assert (
        a.count == 3 and a.num_files == 2 and a.reasons["/d/x.wav"] == "corrupt"
    )
    assert SkipCounter.read_record(record) == {
        "/d/x.wav": "corrupt",
        "/d/y.wav": "nan",
        "/d/z.wav": "empty",
    }
    assert (
        "3 clips skipped" in a.summary()
        and "3 distinct files in all" in a.summary()
    )
    c = pickle.loads(pickle.dumps(a))
    assert c.count == 3 and c.add("/d/new.wav", "x")
    assert "0 clips skipped" in SkipCounter().report()
