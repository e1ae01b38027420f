"""A procedural demo corpus that exercises aliasing in the patch stem.

The project cannot ship or download data, so it generates its own. Classes:

- ``am_05hz``, ``am_09hz``, ``am_14hz``, ``am_22hz``, ``am_35hz``: the same
  carriers (band-limited noise or harmonic tones, random centre/pitch)
  amplitude-modulated at 5, 9, 14, 22 or 35 Hz. They differ **only** by the
  modulation rate, and every rate lies in the alias-prone band: at 100
  frames/s, a 16-frame patch stem samples each mel trajectory at 6.25 Hz
  (Nyquist 3.125 Hz), so these rates fold to 1.25, 2.75, 1.5, 3.0 and
  2.5 Hz and a plain stem cannot tell them apart by sampling alone.
- ``slow_tone`` (harmonic tone, 0.5-2 Hz amplitude modulation), ``chirp``
  (repeated exponential sweeps) and ``click_train`` (1-3 clicks/s): cues
  outside the alias-prone band.
- Extra classes, not in the default set: ``noise_band`` (steady filtered
  noise), ``tone_low`` / ``tone_high`` (steady harmonic tones, different
  pitch ranges).

Each clip varies at random: carrier, pitch, modulation depth and phase
(+-4 % rate jitter), level, onset, background noise (15-35 dB SNR) and
length. Every clip is drawn from its own generator seeded by
``(seed, class, index)``, so the corpus is deterministic and clips do not
change when ``num_per_class`` grows.
"""

import logging
import math
import os
import zlib

import numpy as np
import soundfile as sf

from aasp_sb.data.folder import options_match, read_csv, save_options, write_csv

logger = logging.getLogger(__name__)

AM_RATES = {
    "am_05hz": 5.0,
    "am_09hz": 9.0,
    "am_14hz": 14.0,
    "am_22hz": 22.0,
    "am_35hz": 35.0,
}
DEFAULT_CLASSES = (*AM_RATES, "slow_tone", "chirp", "click_train")


# ----------------------------------------------------------------------------
# Signal building blocks (numpy, float64)
# ----------------------------------------------------------------------------


def _shaped_noise(rng, n, sr, weight):
    """White noise shaped in frequency by ``weight(freqs)``, unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    spec *= weight(freqs)
    out = np.fft.irfft(spec, n)
    return out / (np.sqrt(np.mean(out**2)) + 1e-12)


def _band_noise(rng, n, sr, fc, bw_oct):
    """Noise band centred at ``fc`` Hz, Gaussian on a log-frequency axis."""
    sigma = bw_oct / 2.0

    def weight(f):
        logf = np.log2(np.maximum(f, 1.0) / fc)
        return np.exp(-0.5 * (logf / sigma) ** 2)

    return _shaped_noise(rng, n, sr, weight)


def _harmonic(rng, t, sr, f0, num_harm=None):
    """Harmonic tone (1/k partials, random phases) below 0.45 ``sr``."""
    num_harm = num_harm or int(rng.integers(3, 9))
    out = np.zeros_like(t)
    for k in range(1, num_harm + 1):
        if k * f0 >= 0.45 * sr:
            break
        out += np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k
    return out / (np.sqrt(np.mean(out**2)) + 1e-12)


def _carrier(rng, t, sr):
    """The shared carrier of the AM classes: noise band or harmonic tone."""
    nyq = 0.45 * sr
    if rng.random() < 0.5:
        fc = math.exp(
            rng.uniform(math.log(300.0), math.log(min(3000.0, nyq / 1.5)))
        )
        return _band_noise(rng, len(t), sr, fc, rng.uniform(0.5, 1.5))
    f0 = math.exp(rng.uniform(math.log(100.0), math.log(600.0)))
    return _harmonic(rng, t, sr, f0)


def _am(rng, t, sr, rate):
    carrier = _carrier(rng, t, sr)
    fm = rate * (1.0 + rng.uniform(-0.04, 0.04))
    depth = rng.uniform(0.8, 1.0)
    env = 1.0 - depth * (
        0.5 - 0.5 * np.cos(2 * np.pi * fm * t + rng.uniform(0, 2 * np.pi))
    )
    return carrier * env


def _slow_tone(rng, t, sr):
    f0 = math.exp(rng.uniform(math.log(100.0), math.log(800.0)))
    fm = rng.uniform(0.5, 2.0)
    depth = rng.uniform(0.3, 0.8)
    env = 1.0 - depth * (
        0.5 - 0.5 * np.cos(2 * np.pi * fm * t + rng.uniform(0, 2 * np.pi))
    )
    return _harmonic(rng, t, sr, f0) * env


def _chirp(rng, t, sr):
    nyq = 0.45 * sr
    f_lo = rng.uniform(200.0, 500.0)
    f_hi = min(rng.uniform(1500.0, 4000.0), nyq)
    period = rng.uniform(0.5, 1.5)
    up = rng.random() < 0.5
    tau = np.mod(t + rng.uniform(0, period), period)
    f1, f2 = (f_lo, f_hi) if up else (f_hi, f_lo)
    k = math.log(f2 / f1)
    phase = 2 * np.pi * f1 * period / k * (np.exp(k * tau / period) - 1.0)
    fade = np.minimum(1.0, np.minimum(tau, period - tau) / 0.01)
    return np.sin(phase) * fade


def _click_train(rng, t, sr):
    n = len(t)
    rate = rng.uniform(1.0, 3.0)
    klen = int(0.04 * sr)
    tau = rng.uniform(0.002, 0.006)
    fc = rng.uniform(1000.0, min(5000.0, 0.3 * sr))
    out = np.zeros(n + klen)
    pos = rng.uniform(0, 1.0 / rate)
    while pos * sr < n:
        kernel = _band_noise(rng, klen, sr, fc, 2.0) * np.exp(
            -np.arange(klen) / (tau * sr)
        )
        i = int(pos * sr)
        out[i : i + klen] += kernel * rng.uniform(0.7, 1.0)
        pos += (1.0 / rate) * (1.0 + rng.uniform(-0.1, 0.1))
    return out[:n]


def _noise_band(rng, t, sr):
    fc = math.exp(rng.uniform(math.log(200.0), math.log(min(4000.0, 0.3 * sr))))
    drift = 1.0 + 0.2 * np.sin(
        2 * np.pi * rng.uniform(0.1, 0.4) * t + rng.uniform(0, 6.3)
    )
    return _band_noise(rng, len(t), sr, fc, rng.uniform(0.3, 1.0)) * drift


def _tone(lo, hi):
    def gen(rng, t, sr):
        f0 = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        return _harmonic(rng, t, sr, f0)

    return gen


def _am_gen(rate):
    def gen(rng, t, sr):
        return _am(rng, t, sr, rate)

    return gen


CLASS_GENERATORS = {name: _am_gen(rate) for name, rate in AM_RATES.items()}
CLASS_GENERATORS.update(
    {
        "slow_tone": _slow_tone,
        "chirp": _chirp,
        "click_train": _click_train,
        "noise_band": _noise_band,
        "tone_low": _tone(80.0, 200.0),
        "tone_high": _tone(400.0, 1000.0),
    }
)


def synth_clip(class_name, num_samples, sample_rate=16000, rng=None):
    """One clip of a demo class, with random level, onset and background.

    Arguments
    ---------
    class_name : str
        A key of ``CLASS_GENERATORS``.
    num_samples : int
        Clip length.
    sample_rate : int
        Sample rate (content is kept below 0.45 of it).
    rng : numpy.random.Generator, optional
        Random source (a fresh unseeded one if None).

    Returns
    -------
    numpy.ndarray
        ``[num_samples]`` float32 in [-1, 1].

    Example
    -------
    >>> x = synth_clip("am_09hz", 16000, rng=np.random.default_rng(0))
    >>> x.shape, x.dtype, bool(np.abs(x).max() <= 1.0)
    ((16000,), dtype('float32'), True)
    """
    if class_name not in CLASS_GENERATORS:
        raise ValueError(
            f"unknown demo class {class_name!r}; known: {sorted(CLASS_GENERATORS)}"
        )
    rng = rng if rng is not None else np.random.default_rng()
    n = int(num_samples)
    t = np.arange(n) / sample_rate
    source = CLASS_GENERATORS[class_name](rng, t, sample_rate)
    # Onset in the first 15 % of the clip, 10 ms fades.
    onset = int(rng.uniform(0.0, 0.15) * n)
    env = np.zeros(n)
    env[onset:] = 1.0
    fade = max(1, int(0.01 * sample_rate))
    ramp = np.linspace(0.0, 1.0, min(fade, n - onset))
    env[onset : onset + len(ramp)] = ramp
    env[n - len(ramp) :] *= ramp[::-1]
    source = source * env
    rms = np.sqrt(np.mean(source**2)) + 1e-12
    level = 10 ** (rng.uniform(-30.0, -12.0) / 20.0)
    source = source * (level / rms)
    snr_db = rng.uniform(15.0, 35.0)
    pink = _shaped_noise(
        rng, n, sample_rate, lambda f: 1.0 / np.sqrt(np.maximum(f, 20.0))
    )
    noise = pink * level * 10 ** (-snr_db / 20.0)
    return np.clip(source + noise, -1.0, 1.0).astype(np.float32)


def _clip_rng(seed, name, index):
    return np.random.default_rng(
        [int(seed), zlib.crc32(name.encode()), int(index)]
    )


def _seconds_range(seconds):
    if isinstance(seconds, (int, float)):
        return float(seconds), float(seconds)
    lo, hi = (float(s) for s in seconds)
    if not 0 < lo <= hi:
        raise ValueError(f"seconds must satisfy 0 < min <= max, got {seconds}")
    return lo, hi


def make_demo_corpus(
    save_folder,
    num_per_class=40,
    seconds=(2.0, 4.0),
    sample_rate=16000,
    seed=0,
    classes=DEFAULT_CLASSES,
    valid_fraction=0.15,
    test_fraction=0.15,
):
    """Writes the demo corpus: wav files, split manifests and ``classes.txt``.

    Layout: ``save_folder/audio/<class>/<class>_<index>.wav`` (16-bit PCM),
    ``train.csv``, ``valid.csv``, ``test.csv`` (``ID,duration,wav,label``,
    every class in every split) and ``classes.txt`` (one class per line, in
    the order of ``classes``). Deterministic under ``seed``; idempotent (the
    options are recorded in ``demo_corpus.json``).

    The default (8 classes x 40 clips of 2-4 s, about 16 minutes of audio,
    30 MB) is sized for a tiny pre-training run on 2 CPU cores; the arguments
    scale it.

    Arguments
    ---------
    save_folder : str
        Output folder.
    num_per_class : int
        Clips per class (at least 3 when validation and test are non-empty).
    seconds : float or tuple of float
        Clip length, or ``(min, max)`` for uniformly drawn lengths.
    sample_rate : int
        Sample rate of the files.
    seed : int
        Corpus seed.
    classes : sequence of str
        Classes to generate (keys of ``CLASS_GENERATORS``).
    valid_fraction, test_fraction : float
        Per-class fractions of clips in ``valid.csv`` / ``test.csv`` (each at
        least one clip when positive).

    Returns
    -------
    dict
        Paths: ``{"train", "valid", "test", "classes"}``.

    Example
    -------
    >>> out = make_demo_corpus(str(getfixture("tmp_path")), num_per_class=3,
    ...                        seconds=0.2, classes=("am_05hz", "chirp"))
    >>> [len(read_csv(out[s])) for s in ("train", "valid", "test")]
    [2, 2, 2]
    >>> open(out["classes"]).read().split()
    ['am_05hz', 'chirp']
    """
    save_folder = os.path.abspath(str(save_folder))
    classes = list(classes)
    for name in classes:
        if name not in CLASS_GENERATORS:
            raise ValueError(
                f"unknown demo class {name!r}; known: {sorted(CLASS_GENERATORS)}"
            )
    if len(set(classes)) != len(classes):
        raise ValueError(f"duplicate classes in {classes}")
    lo, hi = _seconds_range(seconds)
    num_per_class = int(num_per_class)
    n_valid = (
        max(1, round(valid_fraction * num_per_class))
        if valid_fraction > 0
        else 0
    )
    n_test = (
        max(1, round(test_fraction * num_per_class)) if test_fraction > 0 else 0
    )
    if num_per_class - n_valid - n_test < 1:
        raise ValueError(
            f"num_per_class={num_per_class} leaves no training clip "
            f"({n_valid} valid, {n_test} test per class)"
        )
    paths = {
        s: os.path.join(save_folder, f"{s}.csv")
        for s in ("train", "valid", "test")
    }
    paths["classes"] = os.path.join(save_folder, "classes.txt")
    record = os.path.join(save_folder, "demo_corpus.json")
    options = {
        "num_per_class": num_per_class,
        "seconds": [lo, hi],
        "sample_rate": int(sample_rate),
        "seed": int(seed),
        "classes": classes,
        "valid_fraction": float(valid_fraction),
        "test_fraction": float(test_fraction),
    }
    if options_match(record, options, list(paths.values())) and all(
        os.path.exists(row["wav"])
        for split in ("train", "valid", "test")
        for row in read_csv(paths[split])
    ):
        logger.info("demo corpus already in '%s', skipping", save_folder)
        return paths

    rows = {"train": [], "valid": [], "test": []}
    for name in classes:
        class_dir = os.path.join(save_folder, "audio", name)
        os.makedirs(class_dir, exist_ok=True)
        for index in range(num_per_class):
            rng = _clip_rng(seed, name, index)
            num = int(round(rng.uniform(lo, hi) * sample_rate))
            wav = synth_clip(name, num, sample_rate, rng)
            uid = f"{name}_{index:04d}"
            path = os.path.join(class_dir, f"{uid}.wav")
            sf.write(path, wav, sample_rate, subtype="PCM_16")
            if index < n_valid:
                split = "valid"
            elif index < n_valid + n_test:
                split = "test"
            else:
                split = "train"
            rows[split].append(
                {
                    "ID": uid,
                    "duration": round(num / sample_rate, 4),
                    "wav": path,
                    "label": name,
                }
            )
    for split, split_rows in rows.items():
        write_csv(paths[split], split_rows, ["ID", "duration", "wav", "label"])
    with open(paths["classes"], "w", encoding="utf-8") as f:
        f.write("".join(f"{c}\n" for c in classes))
    save_options(record, options)
    logger.info(
        "demo corpus in '%s': %d classes, %d train / %d valid / %d test clips",
        save_folder,
        len(classes),
        len(rows["train"]),
        len(rows["valid"]),
        len(rows["test"]),
    )
    return paths


def make_unlabeled_folder(
    folder,
    n=12,
    seconds=(0.5, 3.0),
    sample_rates=(8000, 16000, 22050, 44100, 48000),
    channels=(1, 2),
    formats=("wav", "flac"),
    seed=0,
    classes=DEFAULT_CLASSES,
):
    """Writes unlabelled clips of mixed rate, channel count, length and format.

    For pre-training and data-preparation tests: clip ``i`` uses
    ``sample_rates[i % len]``, ``channels[(i // len(sample_rates)) % len]``
    and ``formats[i % len]``, in sub-folders ``part0`` .. ``part2``. Stereo
    clips hold two different mixes of the same source.

    Arguments
    ---------
    folder : str
        Output folder.
    n : int
        Number of files.
    seconds : float or tuple of float
        Length, or ``(min, max)`` range.
    sample_rates : sequence of int
        Rates cycled through.
    channels : sequence of int
        Channel counts cycled through.
    formats : sequence of str
        File extensions cycled through (any libsndfile format).
    seed : int
        Seed.
    classes : sequence of str
        Demo classes the content is drawn from.

    Returns
    -------
    list of str
        The paths written, in index order.

    Example
    -------
    >>> paths = make_unlabeled_folder(str(getfixture("tmp_path")), n=3,
    ...                               seconds=0.1)
    >>> [sf.info(p).samplerate for p in paths]
    [8000, 16000, 22050]
    """
    folder = os.path.abspath(str(folder))
    lo, hi = _seconds_range(seconds)
    out = []
    for i in range(int(n)):
        rng = np.random.default_rng([int(seed), 7919, i])
        sr = int(sample_rates[i % len(sample_rates)])
        ch = int(channels[(i // len(sample_rates)) % len(channels)])
        ext = formats[i % len(formats)]
        name = classes[int(rng.integers(len(classes)))]
        num = max(1, int(round(rng.uniform(lo, hi) * sr)))
        mono = synth_clip(name, num, sr, rng)
        if ch == 1:
            data = mono
        else:
            gains = rng.uniform(0.5, 1.0, size=ch)
            extra = rng.standard_normal((num, ch)) * 0.01 * np.abs(mono).max()
            data = np.clip(mono[:, None] * gains[None, :] + extra, -1, 1)
        sub = os.path.join(folder, f"part{i % 3}")
        os.makedirs(sub, exist_ok=True)
        path = os.path.join(sub, f"clip_{i:04d}.{ext}")
        sf.write(path, data.astype(np.float32), sr)
        out.append(path)
    return out
