"""Robust audio reading: mono float32 at a fixed rate, clear errors, crops.

Every waveform the package reads goes through :func:`load_audio`. It uses
``soundfile`` (libsndfile) with ``str`` paths -- ``torchaudio.load`` needs
torchcodec, which SpeechBrain 1.1.2 set-ups often lack -- and turns every
failure (unreadable or corrupt file, zero-length clip, NaN/Inf samples) into an
:class:`AudioLoadError` that names the file, so data pipelines can skip the
clip, count it with a :class:`SkipCounter`, and report at the end instead of
crashing hours into a run.

Formats: whatever the installed libsndfile decodes; with libsndfile >= 1.1
that is WAV/FLAC/OGG (Vorbis, Opus)/MP3 and others (see
``soundfile.available_formats()``). MP3 needs libsndfile >= 1.1; older builds
raise :class:`AudioLoadError` for it.
"""

import logging
import math
import os
import threading

import numpy as np
import soundfile as sf
import torch
import torchaudio

logger = logging.getLogger(__name__)

CROP_MODES = ("random", "start")
PAD_MODES = ("zero", "repeat")


class AudioLoadError(Exception):
    """A clip that cannot be used: unreadable, corrupt, empty or non-finite.

    Arguments
    ---------
    path : str
        The file at fault.
    reason : str
        What went wrong.

    Example
    -------
    >>> err = AudioLoadError("/data/a.wav", "zero-length audio")
    >>> str(err)
    "cannot load audio '/data/a.wav': zero-length audio"
    >>> err.path, err.reason
    ('/data/a.wav', 'zero-length audio')
    """

    def __init__(self, path, reason):
        self.path = str(path)
        self.reason = str(reason)
        super().__init__(f"cannot load audio '{self.path}': {self.reason}")

    def __reduce__(self):
        # Keeps the exception picklable (DataLoader workers, multiprocessing).
        return (type(self), (self.path, self.reason))


def audio_info(path):
    """Header information of an audio file, without decoding it.

    Arguments
    ---------
    path : str
        Audio file.

    Returns
    -------
    tuple
        ``(num_frames, sample_rate, channels)``; ``num_frames`` counts samples
        per channel at the file's own rate.

    Raises
    ------
    AudioLoadError
        When the header cannot be read.

    Example
    -------
    >>> import soundfile as sf
    >>> path = str(getfixture("tmp_path") / "a.wav")
    >>> sf.write(path, np.zeros((800, 2), dtype="float32"), 8000)
    >>> audio_info(path)
    (800, 8000, 2)
    """
    path = str(path)
    try:
        info = sf.info(path)
    except Exception as err:  # libsndfile / OS errors of any kind
        raise AudioLoadError(path, _describe(err, path)) from err
    if info.samplerate <= 0 or info.channels <= 0:
        raise AudioLoadError(
            path,
            f"invalid header (sample rate {info.samplerate}, "
            f"{info.channels} channels)",
        )
    return int(info.frames), int(info.samplerate), int(info.channels)


def load_audio(
    path, sample_rate=16000, max_seconds=None, window="start", generator=None
):
    """Reads a clip as a mono float32 waveform at ``sample_rate``.

    Multi-channel audio is down-mixed by the mean over channels; audio at
    another rate is resampled with ``torchaudio.functional.resample``.

    Arguments
    ---------
    path : str
        Audio file (any format libsndfile decodes).
    sample_rate : int
        Output sample rate.
    max_seconds : float, optional
        When set and the file is longer, only a window of this duration is
        read from disk (``seek`` + partial read: an hours-long file is not
        decoded in full). The output then has
        ``round(max_seconds * sample_rate)`` samples.
    window : str
        Where the window starts: ``"start"`` (the beginning of the file) or
        ``"random"`` (uniform over the file).
    generator : torch.Generator, optional
        Random source for ``window="random"`` (torch's global one if None).

    Returns
    -------
    torch.Tensor
        ``[S]`` float32 mono waveform. All-silent clips are returned as they
        are.

    Raises
    ------
    AudioLoadError
        Unreadable or corrupt file, zero-length audio, NaN/Inf samples.

    Example
    -------
    >>> import soundfile as sf
    >>> path = str(getfixture("tmp_path") / "stereo_8k.wav")
    >>> sf.write(path, np.zeros((8000, 2), dtype="float32"), 8000)
    >>> load_audio(path).shape
    torch.Size([16000])
    >>> load_audio(path, max_seconds=0.25).shape
    torch.Size([4000])
    """
    path = str(path)
    if window not in CROP_MODES:
        raise ValueError(f"window must be one of {CROP_MODES}, got {window!r}")
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}")
    try:
        with sf.SoundFile(path) as f:
            file_sr, num_frames = int(f.samplerate), int(f.frames)
            if file_sr <= 0:
                raise AudioLoadError(path, f"invalid sample rate {file_sr}")
            if num_frames <= 0:
                raise AudioLoadError(path, "zero-length audio")
            frames = -1
            if max_seconds is not None:
                win = math.ceil(max_seconds * file_sr)
                if num_frames > win:
                    start = window_start(num_frames, win, window, generator)
                    if start > 0:
                        f.seek(start)
                    frames = win
            data = f.read(frames=frames, dtype="float32", always_2d=True)
    except AudioLoadError:
        raise
    except Exception as err:  # corrupt data, unsupported format, I/O error
        raise AudioLoadError(path, _describe(err, path)) from err
    if data.shape[0] == 0:
        raise AudioLoadError(path, "zero-length audio")
    if not np.isfinite(data).all():
        raise AudioLoadError(path, "non-finite samples (NaN or Inf)")
    wav = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    wav = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
    if file_sr != sample_rate:
        wav = torchaudio.functional.resample(wav, file_sr, sample_rate)
    if max_seconds is not None:
        wav = wav[: int(round(max_seconds * sample_rate))]
    return wav


def window_start(num_available, num_wanted, mode="random", generator=None):
    """First index of a window of ``num_wanted`` items among ``num_available``.

    Arguments
    ---------
    num_available : int
        Length of the signal.
    num_wanted : int
        Length of the window.
    mode : str
        ``"random"`` (uniform over valid starts) or ``"start"`` (always 0).
    generator : torch.Generator, optional
        Random source (torch's global one if None).

    Returns
    -------
    int
        The start index (0 when the signal is not longer than the window).

    Example
    -------
    >>> window_start(100, 10, "start")
    0
    >>> 0 <= window_start(100, 10, "random") <= 90
    True
    """
    if mode not in CROP_MODES:
        raise ValueError(f"mode must be one of {CROP_MODES}, got {mode!r}")
    slack = int(num_available) - int(num_wanted)
    if slack <= 0 or mode == "start":
        return 0
    return int(torch.randint(0, slack + 1, (1,), generator=generator))


def crop_or_pad(wav, num_samples, mode="random", pad="zero", generator=None):
    """Crops or pads the last dimension of ``wav`` to exactly ``num_samples``.

    Arguments
    ---------
    wav : torch.Tensor
        ``[..., S]`` signal (``S >= 1``).
    num_samples : int
        Output length.
    mode : str
        Crop position for long clips: ``"random"`` (training) or ``"start"``
        (evaluation). With ``pad="repeat"`` and ``"random"``, short clips are
        also tiled from a random phase.
    pad : str
        For short clips: ``"zero"`` (zeros at the end) or ``"repeat"`` (tile
        the clip, so the result has no padding; used for pre-training).
    generator : torch.Generator, optional
        Random source (torch's global one if None).

    Returns
    -------
    wav : torch.Tensor
        ``[..., num_samples]``.
    relative_length : float
        Fraction of the output that is real signal (< 1 only for zero
        padding), as SpeechBrain's relative lengths.

    Example
    -------
    >>> x = torch.arange(1.0, 4.0)
    >>> crop_or_pad(x, 5, mode="start", pad="zero")
    (tensor([1., 2., 3., 0., 0.]), 0.6)
    >>> crop_or_pad(x, 7, mode="start", pad="repeat")
    (tensor([1., 2., 3., 1., 2., 3., 1.]), 1.0)
    >>> crop_or_pad(x, 2, mode="start")
    (tensor([1., 2.]), 1.0)
    """
    if mode not in CROP_MODES:
        raise ValueError(f"mode must be one of {CROP_MODES}, got {mode!r}")
    if pad not in PAD_MODES:
        raise ValueError(f"pad must be one of {PAD_MODES}, got {pad!r}")
    num_samples = int(num_samples)
    if num_samples <= 0:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    n = wav.shape[-1]
    if n == 0:
        raise ValueError("crop_or_pad: empty signal")
    if n >= num_samples:
        start = window_start(n, num_samples, mode, generator)
        return wav[..., start : start + num_samples], 1.0
    if pad == "zero":
        out = torch.nn.functional.pad(wav, (0, num_samples - n))
        return out, n / num_samples
    phase = 0
    if mode == "random":
        phase = int(torch.randint(0, n, (1,), generator=generator))
    reps = math.ceil((num_samples + phase) / n)
    tiled = wav.repeat(*([1] * (wav.dim() - 1)), reps)
    return tiled[..., phase : phase + num_samples], 1.0


class SkipCounter:
    """Counts clips skipped because they could not be loaded.

    Each distinct path is logged once (warning) when first seen; later
    failures of the same file are counted silently. :meth:`summary` gives the
    "N clips skipped" line to print at the end of a run.

    DataLoader workers are separate processes holding their own copy of the
    counter; give ``record_file`` to collect the skips of all processes in
    one file (one ``path<TAB>reason`` line per distinct path and process) and
    read it back with :meth:`read_record`.

    Arguments
    ---------
    name : str
        What is being skipped, used in messages (e.g. ``"train"``).
    record_file : str, optional
        File to which first sightings are appended.

    Example
    -------
    >>> counter = SkipCounter("demo")
    >>> counter.add("/data/bad.wav", "corrupt")
    True
    >>> counter.add("/data/bad.wav", "corrupt")
    False
    >>> counter.count, counter.num_files, counter.paths
    (2, 1, ['/data/bad.wav'])
    >>> counter.summary()
    'demo: 2 clips skipped (1 distinct files)'
    """

    def __init__(self, name="audio", record_file=None):
        self.name = name
        self.record_file = None if record_file is None else str(record_file)
        self.count = 0
        self.reasons = {}
        self._lock = threading.Lock()

    def __getstate__(self):
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def num_files(self):
        """Number of distinct files skipped."""
        return len(self.reasons)

    @property
    def paths(self):
        """Skipped paths, in the order they were first seen."""
        return list(self.reasons)

    def add(self, path, reason=""):
        """Records one skip; returns True when the path is new (and logged).

        Arguments
        ---------
        path : str
            The clip's file.
        reason : str or Exception
            Why it was skipped.

        Returns
        -------
        bool
            True the first time this path is seen.
        """
        path = str(path)
        if isinstance(reason, AudioLoadError):
            reason = reason.reason
        with self._lock:
            self.count += 1
            if path in self.reasons:
                return False
            self.reasons[path] = str(reason)
        logger.warning("%s: skipping '%s' (%s)", self.name, path, reason)
        if self.record_file is not None:
            line = f"{path}\t{reason}".replace("\n", " ") + "\n"
            try:
                with open(self.record_file, "a", encoding="utf-8") as f:
                    f.write(line)
            except OSError as err:
                logger.warning(
                    "cannot write skip record '%s': %s", self.record_file, err
                )
        return True

    def summary(self):
        """One line: how many clips were skipped.

        With a ``record_file``, the distinct files skipped by all processes
        writing to it are added.
        """
        msg = (
            f"{self.name}: {self.count} clips skipped "
            f"({self.num_files} distinct files)"
        )
        if self.record_file is not None:
            everywhere = set(self.read_record(self.record_file)) | set(
                self.reasons
            )
            msg += f"; {len(everywhere)} distinct files in all processes"
        return msg

    def report(self, log=None):
        """Logs :meth:`summary` (warning if anything was skipped) and returns it.

        Arguments
        ---------
        log : logging.Logger, optional
            Where to log (this module's logger by default).

        Returns
        -------
        str
            The summary line.
        """
        log = log if log is not None else logger
        msg = self.summary()
        (log.warning if self.count else log.info)(msg)
        return msg

    @staticmethod
    def read_record(record_file):
        """Reads a ``record_file`` back: ``{path: reason}`` over all processes.

        Arguments
        ---------
        record_file : str
            A file written by counters created with ``record_file``.

        Returns
        -------
        dict
            Distinct skipped paths and their first recorded reason ({} if the
            file does not exist).
        """
        out = {}
        if not os.path.exists(str(record_file)):
            return out
        with open(str(record_file), encoding="utf-8") as f:
            for line in f:
                path, _, reason = line.rstrip("\n").partition("\t")
                if path:
                    out.setdefault(path, reason)
        return out


def _describe(err, path=None):
    """Short text for an exception raised while reading audio.

    libsndfile reports a missing file as ``System error.``: say so instead.

    Example
    -------
    >>> _describe(RuntimeError("Error opening 'x': System error."), "/no/such.wav")
    'file does not exist'
    """
    if path is not None and not os.path.exists(path):
        return "file does not exist"
    text = str(err).strip() or type(err).__name__
    return " ".join(text.split())
