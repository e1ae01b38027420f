#!/usr/bin/env python3
"""Builds the real-recordings benchmark: gather, then assemble.

**Gather** (needs Debian packages; ``--apt`` installs them with apt-get when
run as root): every recording below is made by software or people outside
this project and reaches a fresh Debian 12 machine through its package
archive.

* speech -- words spoken by three TTS engines: espeak-ng (eight English
  accents x voice variants), flite (kal, kal16, awb, rms, slt) and festival
  (kal / ked diphone voices, the slt HTS voice), and espeak-ng in thirty other
  languages (pool only);
* music -- single notes of the 72 melodic GM programs of nine instrument
  families rendered by fluidsynth from MIDI we write, with three different
  sound banks (FluidR3_GM, TimGM6mb, MuseScore_General); random polyphonic
  phrases rendered by TiMidity++ with the freepats bank (pool only);
* percussion -- GM drum kits of the three banks, the Hydrogen drum kits, the
  LMMS drum samples and the Sonic Pi samples;
* effects -- sound themes (freedesktop, Yaru, Oxygen, GNOME, sound-icons,
  ALSA) and game data (alienblaster, frozen-bubble, minetest, pinball,
  pingus): pool only.

Every clip is written as 16 kHz mono 16-bit WAV, trimmed of leading/trailing
silence (probe clips) and RMS-normalised, and recorded in a *catalog*
(``catalog.csv``: ``path,task,label,source,role``). The ``source`` is the unit
no split may share: a speaker (engine voices of one person are one source:
flite kal / kal16 and festival kal are ``kal``), an espeak accent+variant, a
sound bank, a sample package.

**Assemble** (pure Python, no packages; :func:`assemble`): checks the catalog
(every source in one role only, no pool source among the probe sources,
every class in every probe split) and writes SpeechBrain manifests:
``pool/{train,valid}.csv`` (``ID,duration,wav``) and
``<task>/{train,valid,test}.csv`` (``ID,duration,wav,label``) plus
``<task>/classes.txt``.

Probe tasks and their source-disjoint splits (train / valid / test):

==========  =======================  ==============  =================================
task        classes                  split unit      test sources
==========  =======================  ==============  =================================
words       10 command words         speaker/voice   espeak scotland / caribbean / NYC
                                                     accents x unseen variants; slt
                                                     (flite + festival); festival ked
instrument  9 GM instrument families sound bank      MuseScore_General (valid TimGM6mb)
drums       5 drum types             bank / package  MuseScore kits, Sonic Pi, Hydrogen
                                                     TR808 (valid TimGM6mb kits)
==========  =======================  ==============  =================================

Usage::

    python benchmarks/real_audio/build.py --cache ~/.cache/aasp_sb/real_audio [--apt]
"""

import argparse
import csv
import json
import logging
import os
import pathlib
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

logger = logging.getLogger("real_audio.build")

SR = 16000
#: Bump when the gathered clips or the assembly would change.
BUILD_VERSION = 2
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "aasp_sb", "real_audio")

#: Debian packages the gathering step uses (Debian 12 names).
APT_PACKAGES = [
    "espeak-ng", "flite", "festival", "festvox-kallpc16k", "festvox-kdlpc16k",
    "festvox-us-slt-hts", "fluidsynth", "fluid-soundfont-gm", "timgm6mb-soundfont",
    "musescore-general-soundfont-small", "timidity", "freepats",
    "sound-theme-freedesktop", "oxygen-sounds", "yaru-theme-sound", "gnome-audio",
    "sound-icons", "alsa-utils", "lmms-common", "hydrogen-data", "sonic-pi-samples",
    "alienblaster-data", "frozen-bubble-data", "minetest-data", "pinball-data",
    "pingus-data",
]

ROLES = ("train", "valid", "test")
CATALOG_FIELDS = ["path", "task", "label", "source", "role"]
#: Seconds each probe task's clips are cropped / padded to.
CLIP_SECONDS = {"words": 1.0, "instrument": 2.0, "drums": 1.0}
POOL_SECONDS = 4.0

# ----------------------------------------------------------------- speech
WORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
#: espeak-ng accents per role; variants per role are disjoint too.
ESPEAK_ACCENTS = {
    "train": ["en-us", "en-gb", "en-gb-x-gbclan", "en-gb-x-gbcwmd"],
    "valid": ["en-gb-x-rp"],
    "test": ["en-gb-scotland", "en-029", "en-us-nyc"],
}
ESPEAK_VARIANTS = {
    "train": ["m1", "m3", "f1", "f2", "klatt"],
    "valid": ["m4", "f4"],
    "test": ["m2", "m5", "f3", "f5", "klatt3"],
}
#: (engine, voice) -> speaker; speakers are the split unit for those engines.
OTHER_VOICES = {
    "train": [("flite", "kal"), ("flite", "kal16"), ("festival", "kal_diphone"),
              ("flite", "awb")],
    "valid": [("flite", "rms")],
    "test": [("flite", "slt"), ("festival", "cmu_us_slt_arctic_hts"),
             ("festival", "ked_diphone")],
}
SPEAKER = {"kal": "kal", "kal16": "kal", "kal_diphone": "kal", "awb": "awb", "rms": "rms",
           "slt": "slt", "cmu_us_slt_arctic_hts": "slt", "ked_diphone": "ked"}
#: espeak-ng languages of the pool (never English: the probe's accents).
POOL_LANGUAGES = [
    "de", "fr", "es", "it", "pt", "nl", "pl", "ru", "sv", "fi", "cs", "hu", "tr", "el",
    "ro", "da", "nb", "hi", "id", "vi", "sk", "hr", "bg", "uk", "ca", "et", "lv", "lt",
    "sw", "cy",
]
#: espeak-ng variants of the pool: none of them is a probe variant (a variant is a timbre)
POOL_VARIANTS = ["m6", "m7", "m8", "klatt2", "klatt4", "croak"]

# ----------------------------------------------------------------- music
FAMILIES = ["piano", "chromatic_percussion", "organ", "guitar", "bass", "strings",
            "brass", "reed", "pipe"]
FAMILY_FIRST_PROGRAM = {"piano": 0, "chromatic_percussion": 8, "organ": 16, "guitar": 24,
                        "bass": 32, "strings": 40, "brass": 56, "reed": 64, "pipe": 72}
FAMILY_RANGE = {"bass": (28, 55), "piano": (36, 90), "chromatic_percussion": (60, 96),
                "organ": (40, 84), "guitar": (40, 76), "strings": (48, 84),
                "brass": (45, 77), "reed": (50, 82), "pipe": (60, 93)}
#: bank file -> (source name, role, notes per program)
BANKS = {
    "/usr/share/sounds/sf2/FluidR3_GM.sf2": ("FluidR3_GM", "train", 4),
    "/usr/share/sounds/sf2/TimGM6mb.sf2": ("TimGM6mb", "valid", 2),
    "/usr/share/sounds/sf3/MuseScore_General_Lite.sf3": ("MuseScore_General", "test", 3),
}
FREEPATS_CFG = "/etc/timidity/freepats.cfg"

# ----------------------------------------------------------------- drums
DRUM_CLASSES = ["kick", "snare", "tom", "hihat", "cymbal"]
GM_DRUM_KEYS = {"kick": [35, 36], "snare": [38, 40], "tom": [41, 43, 45, 47, 48, 50],
                "hihat": [42, 44, 46], "cymbal": [49, 51, 52, 55, 57, 59]}
GM_KITS = [0, 16, 24, 25, 40]
#: filename patterns -> class (checked in order; first match wins)
DRUM_PATTERNS = [
    ("hihat", r"hat|hh|cymbal_(closed|open|pedal)"),
    ("cymbal", r"crash|ride|splash|china|cymbal"),
    ("kick", r"kick|bassdrum|bass_(hard|soft)|^bd_|drum_bass"),
    ("snare", r"snare|^sn_"),
    ("tom", r"tom"),
]
DRUM_PACKAGES = {
    "/usr/share/hydrogen/data/drumkits/GMRockKit": ("hydrogen_GMRockKit", "train"),
    "/usr/share/lmms/samples/drums": ("lmms_drums", "train"),
    "/usr/share/hydrogen/data/drumkits/TR808EmulationKit": ("hydrogen_TR808", "test"),
    "/usr/share/sonic-pi/samples": ("sonic_pi", "test"),
}

# ----------------------------------------------------------------- effects
EFFECT_FOLDERS = {
    "/usr/share/games/alienblaster": "alienblaster",
    "/usr/share/games/frozen-bubble": "frozen_bubble",
    "/usr/share/games/minetest": "minetest",
    "/usr/share/games/pinball": "pinball",
    "/usr/share/games/pingus": "pingus",
    "/usr/share/sounds/freedesktop": "theme_freedesktop",
    "/usr/share/sounds/Yaru": "theme_yaru",
    "/usr/share/sounds/sound-icons": "sound_icons",
    "/usr/share/sounds/alsa": "alsa",
    "/usr/share/sounds": "theme_oxygen_gnome",  # top-level files only
}
AUDIO_EXT = (".wav", ".ogg", ".flac")


class BuildError(Exception):
    """A build step that cannot go on (missing tool, broken catalog)."""


# ================================================================= audio helpers
def to_mono_16k(x, sr):
    """Float32 mono at 16 kHz.

    Arguments
    ---------
    x : numpy.ndarray
        ``[S]`` or ``[S, C]`` samples.
    sr : int
        Their rate.

    Returns
    -------
    numpy.ndarray

    Example
    -------
    >>> to_mono_16k(np.ones((22050, 2)), 22050).shape
    (16000,)
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if sr != SR:
        g = np.gcd(int(sr), SR)
        x = resample_poly(x, SR // g, int(sr) // g)
    return x.astype(np.float32)


def trim_silence(x, threshold_db=-45.0, frame=160):
    """Drops leading / trailing frames quieter than ``threshold_db`` below the peak frame.

    Example
    -------
    >>> x = np.concatenate([np.zeros(1600), np.ones(800), np.zeros(1600)])
    >>> len(trim_silence(x))
    800
    """
    if len(x) < frame:
        return x
    n = len(x) // frame
    energy = (x[: n * frame].reshape(n, frame) ** 2).mean(axis=1)
    peak = energy.max()
    if peak <= 0:
        return x[:0]
    loud = np.nonzero(energy > peak * 10 ** (threshold_db / 10))[0]
    return x[loud[0] * frame: (loud[-1] + 1) * frame]


def normalise(x, rms_db=-23.0):
    """Scales to ``rms_db`` dBFS RMS (over frames within 40 dB of the loudest), peak <= 0.99.

    Example
    -------
    >>> y = normalise(np.sin(np.arange(16000) / 5.0) * 1e-3)
    >>> round(float(20 * np.log10(np.sqrt((y ** 2).mean()))), 1)
    -23.0
    """
    x = np.asarray(x, dtype=np.float64)
    frame = 160
    n = max(1, len(x) // frame)
    e = (x[: n * frame].reshape(n, -1) ** 2).mean(axis=1) if len(x) >= frame else np.array(
        [float((x ** 2).mean())])
    active = e[e > e.max() * 1e-4] if e.max() > 0 else e
    rms = np.sqrt(active.mean()) if active.size else 0.0
    if rms <= 0:
        return x.astype(np.float32)
    y = x * (10 ** (rms_db / 20) / rms)
    peak = np.abs(y).max()
    if peak > 0.99:
        y *= 0.99 / peak
    return y.astype(np.float32)


def write_clip(path, x):
    """Writes 16 kHz mono PCM-16 WAV (creating folders)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, SR, subtype="PCM_16")


def read_any(path):
    """Reads an audio file to 16 kHz mono float32 (None when unreadable)."""
    try:
        x, sr = sf.read(str(path), dtype="float32", always_2d=False)
    except (RuntimeError, sf.LibsndfileError, OSError) as err:
        logger.warning("skipping unreadable %s (%s)", path, err)
        return None
    if x.size == 0 or not np.isfinite(x).all():
        return None
    return to_mono_16k(x, sr)


def read_trimmed(path, min_samples, max_samples=None):
    """:func:`read_any`, then :func:`trim_silence` (and a cut to ``max_samples``).

    Returns None when the file is unreadable or fewer than ``min_samples``
    remain.
    """
    x = read_any(path)
    if x is None:
        return None
    x = trim_silence(x)[:max_samples]
    return x if len(x) >= min_samples else None


# ================================================================= MIDI

def _vlq(n):
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    return bytes(reversed(out))


def write_midi(path, events, ticks_per_beat=480, tempo_us=500000):
    """Writes a format-0 MIDI file.

    Arguments
    ---------
    path : str
        Output file.
    events : list of tuple
        ``(time_seconds, status_byte, data...)``; sorted here.
    ticks_per_beat, tempo_us : int
        Timing (default 120 bpm: 960 ticks per second).

    Example
    -------
    >>> p = getfixture("tmp_path") / "a.mid"
    >>> write_midi(str(p), [(0.0, 0x90, 60, 100), (1.0, 0x80, 60, 0)])
    >>> p.read_bytes()[:4]
    b'MThd'
    """
    tps = ticks_per_beat * 1e6 / tempo_us
    body = _vlq(0) + b"\xff\x51\x03" + tempo_us.to_bytes(3, "big")
    last = 0
    for ev in sorted(events, key=lambda e: (e[0], e[1] & 0xF0 != 0x80)):
        tick = int(round(ev[0] * tps))
        body += _vlq(tick - last) + bytes(ev[1:])
        last = tick
    body += _vlq(0) + b"\xff\x2f\x00"
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, ticks_per_beat)
    with open(path, "wb") as f:
        f.write(header + b"MTrk" + struct.pack(">I", len(body)) + body)


def render_fluidsynth(bank, midi, wav):
    """Renders ``midi`` with ``bank`` (no reverb / chorus) to ``wav`` at 16 kHz."""
    cmd = ["fluidsynth", "-ni", "-q", "-R", "0", "-C", "0", "-g", "0.5", "-r", str(SR),
           "-F", wav, bank, midi]
    subprocess.run(cmd, check=True, capture_output=True, timeout=1800)


def render_timidity(cfg, midi, wav):
    """Renders ``midi`` with TiMidity++ and config ``cfg`` to ``wav`` at 16 kHz."""
    cmd = ["timidity", "-c", cfg, "-Ow", "-s", str(SR), "--reverb=d", "--chorus=d",
           "-o", wav, midi]
    subprocess.run(cmd, check=True, capture_output=True, timeout=1800)


def slice_rendering(wav, starts, seconds):
    """Cuts ``[start, start + seconds)`` windows out of a rendered file (mono 16 kHz)."""
    x = read_any(wav)
    if x is None:
        raise BuildError(f"rendering failed: {wav} is unreadable")
    n = int(round(seconds * SR))
    out = []
    for t in starts:
        a = int(round(t * SR))
        seg = x[a: a + n]
        if len(seg) < n:
            seg = np.pad(seg, (0, n - len(seg)))
        out.append(seg)
    return out


# ================================================================= gatherers
class Gatherer:
    """Collects catalog rows and runs external tools.

    Arguments
    ---------
    root : pathlib.Path
        ``<cache>/clips``.
    jobs : int
        Parallel tool calls.
    seed : int
        Seed of every random choice.
    """

    def __init__(self, root, jobs=2, seed=0):
        self.root = pathlib.Path(root)
        self.jobs = int(jobs)
        self.rng = random.Random(seed)
        self.rows = []

    def add(self, x, rel, task, label, source, role):
        """Writes one clip and records it."""
        path = self.root / rel
        write_clip(path, normalise(x))
        self.rows.append({"path": str(path), "task": task, "label": label,
                          "source": source, "role": role})

    # ---------------------------------------------------------- TTS
    def tts(self, engine, voice, text, wav, rate=1.0, pitch=50):
        """Synthesises ``text`` to ``wav`` (any rate) with one engine."""
        if engine == "espeak":
            cmd = ["espeak-ng", "-v", voice, "-s", str(int(160 * rate)), "-p", str(pitch),
                   "-w", wav, text]
            subprocess.run(cmd, check=True, capture_output=True, timeout=120)
        elif engine == "flite":
            cmd = ["flite", "-voice", voice, "--setf", f"duration_stretch={1 / rate:.3f}",
                   "--setf", f"int_f0_target_mean={60 + pitch:.0f}", "-t", text, "-o", wav]
            subprocess.run(cmd, check=True, capture_output=True, timeout=120)
        elif engine == "festival":
            cmd = ["text2wave", "-eval", f"(voice_{voice})", "-eval",
                   f"(Parameter.set 'Duration_Stretch {1 / rate:.3f})", "-o", wav]
            subprocess.run(cmd, input=text.encode(), check=True, capture_output=True,
                           timeout=120)
        else:
            raise BuildError(f"unknown TTS engine {engine!r}")

    def _run_jobs(self, jobs):
        """Runs ``(fn, args, on_done)`` jobs in a thread pool; results in order."""
        with ThreadPoolExecutor(self.jobs) as ex:
            futures = [(ex.submit(fn, *args), done) for fn, args, done in jobs]
            for fut, done in futures:
                try:
                    fut.result()
                except (subprocess.SubprocessError, OSError) as err:
                    logger.warning("tool call failed (%s); clip left out", err)
                    continue
                done()

    def words(self, tmp):
        """The ``words`` probe: command words by voices split by speaker."""
        jobs = []

        def job(engine, voice, source, role, word, k, rate, pitch):
            wav = os.path.join(tmp, f"w_{engine}_{voice}_{word}_{k}.wav".replace("+", "_"))

            def done():
                x = read_trimmed(wav, 1600)
                if x is None:
                    return
                self.add(x, f"words/{source}/{word}_{k}.wav", "words", word, source, role)
            return (self.tts, (engine, voice, word, wav, rate, pitch), done)

        for role in ROLES:
            for accent in ESPEAK_ACCENTS[role]:
                for variant in ESPEAK_VARIANTS[role]:
                    voice = f"{accent}+{variant}"
                    source = f"espeak_{accent}_{variant}"
                    for word in WORDS:
                        for k, (rate, pitch) in enumerate([(0.85, 40), (1.15, 60)]):
                            jobs.append(job("espeak", voice, source, role, word, k, rate, pitch))
            for engine, voice in OTHER_VOICES[role]:
                source = f"speaker_{SPEAKER[voice]}"
                for word in WORDS:
                    for k, (rate, pitch) in enumerate([(0.8, 45), (0.95, 55), (1.1, 40),
                                                       (1.25, 60)]):
                        jobs.append(job(engine, voice, source, role, word, k, rate, pitch))
        self._run_jobs(jobs)

    def pool_speech(self, tmp, clips_per_voice=5):
        """Pool speech: espeak-ng in 30 non-English languages, pool-only variants."""
        jobs = []
        for lang in POOL_LANGUAGES:
            for v in self.rng.sample(POOL_VARIANTS, 2):
                for k in range(clips_per_voice):
                    digits = " ".join(str(self.rng.randint(0, 9999)) for _ in range(5))
                    text = f"{digits}, {self.rng.randint(10, 999)}."
                    wav = os.path.join(tmp, f"p_{lang}_{v}_{k}.wav")
                    rate = self.rng.uniform(0.8, 1.2)
                    pitch = self.rng.randint(30, 70)

                    def done(wav=wav, lang=lang, v=v, k=k):
                        x = read_any(wav)
                        if x is None:
                            return
                        for j, seg in enumerate(pool_segments(trim_silence(x))):
                            self.add(seg, f"pool/speech/{lang}_{v}_{k}_{j}.wav", "pool", "",
                                     f"espeak_{lang}_{v}", "pool")
                    jobs.append((self.tts, ("espeak", f"{lang}+{v}", text, wav, rate, pitch),
                                 done))
        self._run_jobs(jobs)

    # ---------------------------------------------------------- music
    def instrument(self, tmp):
        """The ``instrument`` probe: GM family of single notes, split by sound bank."""
        for bank, (source, role, per_program) in BANKS.items():
            if not os.path.isfile(bank):
                raise BuildError(f"sound bank {bank} missing (install its package or --apt)")
            events, starts, labels = [], [], []
            t = 0.0
            for fam in FAMILIES:
                lo, hi = FAMILY_RANGE[fam]
                for prog in range(FAMILY_FIRST_PROGRAM[fam], FAMILY_FIRST_PROGRAM[fam] + 8):
                    for _ in range(per_program):
                        note = self.rng.randint(lo, hi)
                        vel = self.rng.randint(60, 120)
                        events += [(t, 0xC0, prog), (t + 0.05, 0x90, note, vel),
                                   (t + 1.55, 0x80, note, 0)]
                        starts.append(t + 0.05)
                        labels.append((fam, prog, note))
                        t += 3.0
            midi = os.path.join(tmp, f"{source}.mid")
            wav = os.path.join(tmp, f"{source}.wav")
            write_midi(midi, events)
            render_fluidsynth(bank, midi, wav)
            for i, (seg, (fam, prog, note)) in enumerate(
                    zip(slice_rendering(wav, starts, 2.0), labels)):
                if np.abs(seg).max() < 1e-4:
                    continue  # the bank lacks this program
                self.add(seg, f"instrument/{source}/{prog:03d}_{note}_{i}.wav", "instrument",
                         fam, source, role)

    def pool_music(self, tmp, num_clips=200):
        """Pool music: random polyphonic phrases, TiMidity++ with freepats."""
        if not os.path.isfile(FREEPATS_CFG):
            raise BuildError(f"{FREEPATS_CFG} missing (install freepats or --apt)")
        programs = freepats_programs(FREEPATS_CFG)
        events, starts = [], []
        t = 0.0
        for _ in range(num_clips):
            lead, chord = self.rng.sample(programs, 2)
            events += [(t, 0xC0, lead), (t, 0xC1, chord)]
            root = self.rng.randint(45, 60)
            step = 60.0 / self.rng.randint(80, 160) / 2
            n = int(POOL_SECONDS / step)
            scale = [0, 2, 4, 5, 7, 9, 11, 12]
            for k in range(n):
                a = t + k * step
                note = root + 12 + self.rng.choice(scale)
                events += [(a, 0x90, note, self.rng.randint(60, 110)),
                           (a + step * 0.9, 0x80, note, 0)]
                if k % 4 == 0:
                    for iv in (0, 4, 7):
                        events += [(a, 0x91, root + iv, 70), (a + 4 * step * 0.95, 0x81,
                                                               root + iv, 0)]
                if k % 2 == 0 and self.rng.random() < 0.7:
                    key = self.rng.choice([35, 38, 42, 46])
                    events += [(a, 0x99, key, 90), (a + 0.1, 0x89, key, 0)]
            starts.append(t)
            t += POOL_SECONDS + 1.0
        midi = os.path.join(tmp, "pool_freepats.mid")
        wav = os.path.join(tmp, "pool_freepats.wav")
        write_midi(midi, events)
        render_timidity(FREEPATS_CFG, midi, wav)
        for i, seg in enumerate(slice_rendering(wav, starts, POOL_SECONDS)):
            if np.abs(seg).max() < 1e-4:
                continue
            self.add(seg, f"pool/music/freepats_{i:04d}.wav", "pool", "", "freepats", "pool")

    # ---------------------------------------------------------- drums
    def drums(self, tmp):
        """The ``drums`` probe: drum type, split by bank / sample package."""
        for bank, (source, role, _) in BANKS.items():
            events, starts, labels = [], [], []
            t = 0.0
            for kit in GM_KITS:
                for cls in DRUM_CLASSES:
                    for key in GM_DRUM_KEYS[cls]:
                        for vel in (self.rng.randint(60, 120),):
                            events += [(t, 0xC9, kit), (t + 0.05, 0x99, key, vel),
                                       (t + 0.3, 0x89, key, 0)]
                            starts.append(t + 0.05)
                            labels.append((cls, kit, key, vel))
                            t += 2.0
            midi = os.path.join(tmp, f"drums_{source}.mid")
            wav = os.path.join(tmp, f"drums_{source}.wav")
            write_midi(midi, events)
            render_fluidsynth(bank, midi, wav)
            for seg, (cls, kit, key, vel) in zip(slice_rendering(wav, starts, 1.5), labels):
                seg = trim_silence(seg)
                if len(seg) < 800:
                    continue
                self.add(seg, f"drums/{source}/{kit}_{key}_{vel}.wav", "drums", cls,
                         f"{source}", role)
        for folder, (source, role) in DRUM_PACKAGES.items():
            if not os.path.isdir(folder):
                raise BuildError(f"{folder} missing (install its package or --apt)")
            for path in sorted(pathlib.Path(folder).iterdir()):
                cls = drum_class(path.name)
                if cls is None or path.suffix.lower() not in AUDIO_EXT:
                    continue
                x = read_trimmed(path, 800, int(1.5 * SR))
                if x is None:
                    continue
                for k, semis in enumerate((0, self.rng.choice((-2, 2)))):  # and re-pitched
                    y = x if semis == 0 else repitch(x, semis)
                    self.add(y, f"drums/{source}/{path.stem}_{k}.wav", "drums", cls, source,
                             role)

    # ---------------------------------------------------------- effects
    def pool_effects(self):
        """Pool effects: sound themes and game data, packed into 4 s clips."""
        for folder, source in EFFECT_FOLDERS.items():
            if not os.path.isdir(folder):
                logger.warning("%s missing: its effects are left out of the pool", folder)
                continue
            if source == "theme_oxygen_gnome":
                files = [p for p in sorted(pathlib.Path(folder).iterdir()) if p.is_file()]
            else:
                files = sorted(p for p in pathlib.Path(folder).rglob("*") if p.is_file())
            files = [p for p in files if p.suffix.lower() in AUDIO_EXT]
            buf, k = [], 0
            for path in files:
                x = read_trimmed(path, 400)
                if x is None:
                    continue
                buf.append(normalise(x))
                buf.append(np.zeros(int(0.2 * SR), np.float32))
                joined = np.concatenate(buf)
                if len(joined) >= POOL_SECONDS * SR:
                    for seg in pool_segments(joined, max_segments=4):
                        self.add(seg, f"pool/effects/{source}_{k:04d}.wav", "pool", "",
                                 source, "pool")
                        k += 1
                    buf = []
            if buf:
                joined = np.concatenate(buf)
                if len(joined) >= SR:
                    self.add(joined, f"pool/effects/{source}_{k:04d}.wav", "pool", "", source,
                             "pool")


def pool_segments(x, max_segments=3):
    """Up to ``max_segments`` 4 s pieces of a long clip (the whole clip if shorter).

    Example
    -------
    >>> [len(s) for s in pool_segments(np.zeros(150000))]
    [64000, 64000]
    """
    n = int(POOL_SECONDS * SR)
    if len(x) <= n:
        return [x] if len(x) >= SR // 2 else []
    return [x[i * n: (i + 1) * n] for i in range(min(max_segments, len(x) // n))]


def repitch(x, semitones):
    """Resamples by ``2 ** (semitones / 12)`` (pitch and length change together)."""
    num = int(round(100 * 2 ** (-semitones / 12)))
    return resample_poly(x, num, 100).astype(np.float32)


def drum_class(name):
    """Drum class of a sample file name (None when it is no kick/snare/tom/hihat/cymbal).

    Example
    -------
    >>> [drum_class(n) for n in ["HatOpen-Soft.wav", "kick01.ogg", "drum_cymbal_hard.flac",
    ...                          "drum_cymbal_closed.flac", "Cowbell-Med.wav"]]
    ['hihat', 'kick', 'cymbal', 'hihat', None]
    """
    low = name.lower()
    for cls, pattern in DRUM_PATTERNS:
        if re.search(pattern, low):
            return cls
    return None


def freepats_programs(cfg):
    """Melodic GM programs the freepats config defines (bank 0)."""
    progs, in_drums = [], False
    with open(cfg, encoding="utf-8", errors="replace") as f:
        for line in f:
            s = line.strip()
            if s.startswith("drumset"):
                in_drums = True
            elif s.startswith("bank"):
                in_drums = False
            elif s and s[0].isdigit() and not in_drums:
                progs.append(int(s.split()[0]))
    if len(progs) < 2:
        raise BuildError(f"{cfg}: fewer than two melodic programs")
    return progs


# ================================================================= catalog + assembly
def write_catalog(path, rows):
    """Writes ``catalog.csv``."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, CATALOG_FIELDS)
        w.writeheader()
        w.writerows(rows)


def read_catalog(path):
    """Reads ``catalog.csv`` (error names the file and the bad row)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for i, r in enumerate(rows):
        if set(CATALOG_FIELDS) - set(r):
            raise BuildError(f"{path}: missing columns {sorted(set(CATALOG_FIELDS) - set(r))}")
        if r["role"] not in ROLES + ("pool",):
            raise BuildError(f"{path}: row {i + 2} has role {r['role']!r}")
    return rows


def check_catalog(rows):
    """Checks the split rules; returns ``{task: {role: count}}``.

    * a source belongs to one role of one task (never train and test);
    * no pool source is a probe source;
    * every class of a task occurs in each of its train, valid and test splits.

    Example
    -------
    >>> rows = [dict(path="a", task="t", label="x", source="s", role="train"),
    ...         dict(path="b", task="t", label="x", source="s", role="test")]
    >>> try:
    ...     check_catalog(rows)
    ... except BuildError as err:
    ...     print(err)
    source 's' of task 't' is in several splits: ['test', 'train']
    """
    roles = defaultdict(set)
    labels = defaultdict(lambda: defaultdict(set))
    counts = defaultdict(Counter)
    for r in rows:
        roles[(r["task"], r["source"])].add(r["role"])
        counts[r["task"]][r["role"]] += 1
        if r["role"] != "pool":
            labels[r["task"]][r["role"]].add(r["label"])
    for (task, source), rs in roles.items():
        if len(rs) > 1:
            raise BuildError(f"source {source!r} of task {task!r} is in several splits: "
                             f"{sorted(rs)}")
    pool_sources = {s for (t, s) in roles if t == "pool"}
    probe_sources = {s for (t, s) in roles if t != "pool"}
    if pool_sources & probe_sources:
        raise BuildError(f"pool shares sources with the probes: {sorted(pool_sources & probe_sources)}")
    for task, by_role in labels.items():
        missing = [role for role in ROLES if role not in by_role]
        if missing:
            raise BuildError(f"task {task!r} has no {'/'.join(missing)} clips")
        classes = set().union(*by_role.values())
        for role in ROLES:
            if by_role[role] != classes:
                raise BuildError(f"task {task!r}: {role} lacks classes "
                                 f"{sorted(classes - by_role[role])}")
    return {t: dict(c) for t, c in counts.items()}


def _manifest(path, rows, labelled):
    fields = ["ID", "duration", "wav"] + (["label"] if labelled else [])
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fields)
        w.writeheader()
        for r in rows:
            info = sf.info(r["path"])
            row = {"ID": r["ID"], "duration": f"{info.frames / info.samplerate:.4f}",
                   "wav": os.path.abspath(r["path"])}
            if labelled:
                row["label"] = r["label"]
            w.writerow(row)


def assemble(catalog_csv, out_folder, pool_valid_fraction=0.05, seed=0):
    """Checks a catalog and writes the pool and probe manifests.

    Arguments
    ---------
    catalog_csv : str
        ``path,task,label,source,role`` rows (role ``pool`` for the pool).
    out_folder : str
        Where ``pool/`` and ``<task>/`` manifests go.
    pool_valid_fraction : float
        Pool clips held out for validation (RankMe, losses).
    seed : int
        Seed of that hold-out.

    Returns
    -------
    dict
        ``pool`` (train/valid CSVs), ``tasks`` (``{task: {train, valid, test,
        classes}}``) and ``counts``.
    """
    rows = read_catalog(catalog_csv)
    counts = check_catalog(rows)
    if "pool" not in counts:
        raise BuildError(f"{catalog_csv}: no pool clips")
    out = pathlib.Path(out_folder)
    for i, r in enumerate(rows):
        r["ID"] = f"{r['task']}_{i:06d}"
    pool = [r for r in rows if r["task"] == "pool"]
    rng = random.Random(seed)
    rng.shuffle(pool)
    n_valid = max(1, int(round(pool_valid_fraction * len(pool))))
    result = {"pool": {"train": str(out / "pool" / "train.csv"),
                       "valid": str(out / "pool" / "valid.csv")},
              "tasks": {}, "counts": counts}
    _manifest(out / "pool" / "train.csv", pool[n_valid:], False)
    _manifest(out / "pool" / "valid.csv", pool[:n_valid], False)
    for task in sorted(t for t in counts if t != "pool"):
        trows = [r for r in rows if r["task"] == task]
        classes = sorted({r["label"] for r in trows})
        entry = {}
        for role in ROLES:
            path = out / task / f"{role}.csv"
            _manifest(path, [r for r in trows if r["role"] == role], True)
            entry[role] = str(path)
        (out / task / "classes.txt").write_text("\n".join(classes) + "\n", encoding="utf-8")
        entry["classes"] = str(out / task / "classes.txt")
        entry["clip_seconds"] = CLIP_SECONDS.get(task, 1.0)
        result["tasks"][task] = entry
    with open(out / "benchmark.json", "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    return result


# ================================================================= tools
TOOLS = ["espeak-ng", "flite", "text2wave", "fluidsynth", "timidity"]


def missing_tools():
    """Command-line tools of the gathering step that are not on PATH."""
    return [t for t in TOOLS if shutil.which(t) is None]


def missing_packages(packages=APT_PACKAGES):
    """Packages of :data:`APT_PACKAGES` that dpkg does not list as installed."""
    if shutil.which("dpkg-query") is None:
        return list(packages)
    out = []
    for pkg in packages:
        res = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True,
                             text=True)
        if "install ok installed" not in res.stdout:
            out.append(pkg)
    return out


def apt_install(packages=APT_PACKAGES):
    """``apt-get update`` + ``install`` (root only)."""
    if os.geteuid() != 0:
        raise BuildError("--apt needs root (or install the packages: "
                         + " ".join(packages) + ")")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
                   check=True, env=env)


def gather(cache, jobs=2, seed=0):
    """Runs every gatherer and writes ``<cache>/catalog.csv``; returns its path."""
    cache = pathlib.Path(cache)
    missing = missing_tools()
    if missing:
        raise BuildError("missing tools: " + ", ".join(missing)
                         + " (run with --apt as root, or apt-get install "
                         + " ".join(APT_PACKAGES) + ")")
    clips = cache / "clips"
    if clips.exists():
        shutil.rmtree(clips)
    g = Gatherer(clips, jobs=jobs, seed=seed)
    with tempfile.TemporaryDirectory(prefix="real_audio_") as tmp:
        for step in ("words", "instrument", "drums", "pool_speech", "pool_music"):
            logger.info("gathering %s", step)
            getattr(g, step)(tmp)
        logger.info("gathering pool effects")
        g.pool_effects()
    catalog = cache / "catalog.csv"
    write_catalog(catalog, g.rows)
    return str(catalog)


def build(cache=DEFAULT_CACHE, apt=False, jobs=2, seed=0, force=False):
    """Gathers (unless done with the same version) and assembles; returns :func:`assemble`'s dict.

    Arguments
    ---------
    cache : str
        Cache folder (clips, catalog, manifests).
    apt : bool
        Install missing packages with apt-get first.
    jobs : int
        Parallel tool calls.
    seed : int
        Seed of the random notes, texts and hold-outs.
    force : bool
        Gather again even when a complete build exists.
    """
    cache = pathlib.Path(cache).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    stamp = cache / "build.json"
    options = {"version": BUILD_VERSION, "seed": int(seed)}
    done = (stamp.is_file() and json.loads(stamp.read_text(encoding="utf-8")) == options
            and (cache / "catalog.csv").is_file())
    if not done or force:
        if apt:
            missing = missing_packages()
            if missing:
                apt_install(missing)
        if stamp.exists():
            stamp.unlink()
        gather(cache, jobs=jobs, seed=seed)
        stamp.write_text(json.dumps(options), encoding="utf-8")
    else:
        logger.info("reusing the gathered clips in %s", cache)
    return assemble(str(cache / "catalog.csv"), str(cache / "manifests"), seed=seed)


def summary(result):
    """Human-readable clip counts and pool minutes."""
    lines = []
    for task, c in sorted(result["counts"].items()):
        lines.append(f"{task}: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())))
    return "\n".join(lines)


def main(argv=None):
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cache", default=DEFAULT_CACHE)
    p.add_argument("--apt", action="store_true", help="apt-get install missing packages")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s - %(message)s")
    try:
        res = build(args.cache, args.apt, args.jobs, args.seed, args.force)
    except BuildError as err:
        sys.exit(f"build: {err}")
    print(summary(res))
    return res


if __name__ == "__main__":
    main()
