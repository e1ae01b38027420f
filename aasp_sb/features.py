"""Waveform -> normalised log-mel spectrogram, in SpeechBrain's ``[B, T, F]`` layout.

The defaults reproduce M2D's front end: ``wav_to_lms.py`` of M2D computes
nnAudio's ``MelSpectrogram(sr=16000, n_fft=400, win_length=400,
hop_length=160, n_mels=80, fmin=50, fmax=8000, center=True, power=2)`` --
periodic Hann window, reflect padding, **Slaney mel scale with Slaney area
normalisation** -- then ``log(power + eps)`` with the float32 ``eps``.
:class:`LogMel` computes the same with torchaudio (``mel_scale="slaney"``,
``mel_norm="slaney"``); ``tests/test_frontend.py`` checks it against nnAudio
itself (max abs difference in the log domain about 2e-4, bound 0.01, on speech and
on a synthetic chirp/noise/click signal), so M2D's AudioSet statistics
(mean -7.1, std 4.2) apply unchanged.

Runs made before the front end was aligned with M2D used torchaudio's
defaults (HTK mel scale, no filter normalisation: :data:`LEGACY_FRONT_END`);
:func:`aasp_sb.pretrained.load_pretrained` rebuilds those with their own
settings.

Statistics of one's own corpus: :func:`compute_stats`, or from the shell
``python -m aasp_sb.features --csv manifest.csv [--hparams model.yaml]``,
which prints ``norm_mean`` / ``norm_std`` to pass as YAML overrides.
"""

import argparse
import os
import sys

import torch
import torchaudio
from torch import nn

FLOAT32_EPS = torch.finfo(torch.float32).eps

#: Filterbank settings of M2D's front end (the default).
M2D_FRONT_END = {"mel_scale": "slaney", "mel_norm": "slaney"}
#: Filterbank settings of runs made before the front end matched M2D's
#: (torchaudio's ``MelSpectrogram`` defaults).
LEGACY_FRONT_END = {"mel_scale": "htk", "mel_norm": None}
MEL_SCALES = ("slaney", "htk")
MEL_NORMS = ("slaney", None)


class LogMel(nn.Module):
    """Log-mel filterbank features (M2D's front end by default).

    Arguments
    ---------
    sample_rate : int
        Expected input sample rate (resample before, see :mod:`aasp_sb.data.audio`).
    n_fft : int
        FFT size (400 = 25 ms at 16 kHz); also the window length (periodic Hann).
    hop_length : int
        Hop in samples (160 = 10 ms at 16 kHz).
    n_mels : int
        Number of mel bins.
    f_min, f_max : float
        Mel filterbank range in Hz.
    eps : float
        Floor added to the power before the log.
    mel_scale : str
        ``"slaney"`` (default, M2D / nnAudio / librosa: linear below 1 kHz,
        logarithmic above) or ``"htk"`` (``2595 log10(1 + f / 700)``,
        torchaudio's default, used by runs made before this option existed).
    mel_norm : str or None
        ``"slaney"`` (default, M2D: each triangle divided by its width in Hz,
        area normalisation) or ``None`` (triangles peak at 1, torchaudio's
        default). In YAML, ``mel_norm: null`` gives ``None``.

    Example
    -------
    >>> logmel = LogMel()
    >>> feats = logmel(torch.randn(2, 16000))
    >>> feats.shape
    torch.Size([2, 101, 80])
    >>> logmel.settings()["mel_scale"], logmel.settings()["mel_norm"]
    ('slaney', 'slaney')
    >>> legacy = LogMel(mel_scale="htk", mel_norm=None)  # pre-M2D runs
    >>> wav = torch.randn(1, 1600)
    >>> bool((legacy(wav) - logmel(wav)).abs().mean() > 1.0)
    True
    >>> LogMel(mel_norm="area")
    Traceback (most recent call last):
      ...
    ValueError: LogMel: mel_norm must be one of ('slaney', None), got 'area'
    """

    def __init__(
        self,
        sample_rate=16000,
        n_fft=400,
        hop_length=160,
        n_mels=80,
        f_min=50.0,
        f_max=8000.0,
        eps=FLOAT32_EPS,
        mel_scale="slaney",
        mel_norm="slaney",
    ):
        super().__init__()
        if mel_scale not in MEL_SCALES:
            raise ValueError(
                f"LogMel: mel_scale must be one of {MEL_SCALES}, got {mel_scale!r}"
            )
        if mel_norm not in MEL_NORMS:
            raise ValueError(
                f"LogMel: mel_norm must be one of {MEL_NORMS}, got {mel_norm!r}"
            )
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.f_min = f_min
        self.f_max = f_max
        self.eps = eps
        self.mel_scale = mel_scale
        self.mel_norm = mel_norm
        self.melspec = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=n_fft,
            win_length=n_fft,
            hop_length=hop_length,
            n_mels=n_mels,
            f_min=f_min,
            f_max=f_max,
            power=2.0,
            center=True,
            pad_mode="reflect",
            window_fn=torch.hann_window,  # periodic, as scipy's get_window("hann")
            mel_scale=mel_scale,
            norm=mel_norm,
        )

    def settings(self):
        """The constructor arguments (what a run must record to be rebuilt).

        Returns
        -------
        dict

        Example
        -------
        >>> LogMel(mel_scale="htk", mel_norm=None).settings()["mel_norm"] is None
        True
        """
        return {
            "sample_rate": self.sample_rate,
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "n_mels": self.n_mels,
            "f_min": self.f_min,
            "f_max": self.f_max,
            "eps": self.eps,
            "mel_scale": self.mel_scale,
            "mel_norm": self.mel_norm,
        }

    def extra_repr(self):
        """Shows the filterbank settings when the module is printed."""
        return f"mel_scale={self.mel_scale!r}, mel_norm={self.mel_norm!r}"

    def num_frames(self, num_samples):
        """Number of frames produced for ``num_samples`` samples (centred STFT).

        Example
        -------
        >>> LogMel().num_frames(16000)
        101
        """
        return num_samples // self.hop_length + 1

    @torch.no_grad()
    def forward(self, wav):
        """Computes log-mel features.

        Arguments
        ---------
        wav : torch.Tensor
            ``[B, S]`` (or ``[S]``) waveform at ``sample_rate``.

        Returns
        -------
        torch.Tensor
            ``[B, T, n_mels]`` float32 log-mel.
        """
        with torch.autocast(wav.device.type, enabled=False):
            spec = self.melspec(wav.float())  # [B, F, T]
        return (spec + self.eps).log().transpose(-1, -2)


class Normalize(nn.Module):
    """Standardises log-mel with fixed dataset statistics.

    Arguments
    ---------
    mean : float
        Dataset mean of the log-mel (M2D's AudioSet value by default).
    std : float
        Dataset standard deviation.

    Example
    -------
    >>> norm = Normalize(mean=1.0, std=2.0)
    >>> norm(torch.tensor([3.0])).item()
    1.0
    """

    def __init__(self, mean=-7.1, std=4.2):
        super().__init__()
        if not std > 0:
            raise ValueError(f"Normalize: std must be positive, got {std}")
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x):
        """Returns ``(x - mean) / std``."""
        return (x - self.mean) / self.std


class Features(nn.Module):
    """Log-mel plus normalisation: the front end every model in the package uses.

    Arguments
    ---------
    logmel : LogMel, optional
        Log-mel extractor (M2D's front end, the :class:`LogMel` defaults, when None).
    normalize : Normalize, optional
        Normaliser (M2D AudioSet statistics when None).

    Example
    -------
    >>> feats = Features()
    >>> x = feats(torch.randn(2, 16000))
    >>> x.shape
    torch.Size([2, 101, 80])
    """

    def __init__(self, logmel=None, normalize=None):
        super().__init__()
        self.logmel = logmel if logmel is not None else LogMel()
        self.normalize = normalize if normalize is not None else Normalize()

    @property
    def n_mels(self):
        """Number of mel bins."""
        return self.logmel.n_mels

    def forward(self, wav):
        """``[B, S]`` waveform -> normalised ``[B, T, F]`` log-mel."""
        return self.normalize(self.logmel(wav))


def frame_lengths(lengths, num_frames):
    """Relative lengths -> number of valid frames (at least 1).

    Arguments
    ---------
    lengths : torch.Tensor or None
        ``[B]`` relative lengths in (0, 1] (SpeechBrain convention).
    num_frames : int
        Padded number of frames ``T``.

    Returns
    -------
    torch.Tensor
        ``[B]`` long, number of valid frames (``T`` when ``lengths`` is None).

    Example
    -------
    >>> frame_lengths(torch.tensor([1.0, 0.5]), 101)
    tensor([101,  50])
    """
    if lengths is None:
        return None
    return (lengths.float() * num_frames).round().long().clamp(1, num_frames)


def compute_stats(wavs, logmel=None):
    """Mean and std of the log-mel over an iterable of waveforms.

    Use it to normalise a corpus whose statistics differ from AudioSet's;
    give the run's own front end (the statistics depend on the filterbank:
    M2D's and the legacy one differ by several units in the log domain).
    The result goes into the YAML as ``norm_mean`` / ``norm_std``.

    Arguments
    ---------
    wavs : iterable of torch.Tensor
        1D waveforms at the extractor's sample rate.
    logmel : LogMel or Features, optional
        Extractor (default :class:`LogMel` settings when None). A
        :class:`Features` contributes its ``logmel`` (its normalisation is
        not applied: statistics are of the raw log-mel).

    Returns
    -------
    tuple of float
        ``(mean, std)``.

    Example
    -------
    >>> m, s = compute_stats([torch.randn(16000), torch.randn(8000)])
    >>> s > 0
    True
    >>> m2, _ = compute_stats([torch.randn(16000)], Features(normalize=Normalize(100.0, 1.0)))
    >>> abs(m2 - m) < 0.5  # the normaliser is not applied
    True
    """
    if logmel is None:
        logmel = LogMel()
    elif isinstance(logmel, Features):
        logmel = logmel.logmel
    total, total_sq, count = 0.0, 0.0, 0
    for wav in wavs:
        x = logmel(wav.reshape(1, -1)).double()
        total += x.sum().item()
        total_sq += (x**2).sum().item()
        count += x.numel()
    if count == 0:
        raise ValueError("compute_stats: no audio given")
    mean = total / count
    var = max(total_sq / count - mean**2, 1e-12)
    return float(mean), float(var**0.5)


def front_end_from_yaml(path):
    """The (un-normalised) :class:`LogMel` a model YAML or run folder builds.

    Runs made before the M2D front end get their legacy settings (see
    :func:`aasp_sb.pretrained.load_yaml`).

    Arguments
    ---------
    path : str or pathlib.Path
        Model YAML (with ``compute_features`` and ``encoder``) or a run folder
        holding ``hyperparams.yaml``.

    Returns
    -------
    LogMel
    """
    import pathlib

    from aasp_sb.pretrained import find_hparams, load_yaml

    path = pathlib.Path(path)
    yaml_path = find_hparams(path) if path.is_dir() else path
    features = load_yaml(yaml_path)["compute_features"]
    logmel = getattr(features, "logmel", features)
    if not isinstance(logmel, LogMel):
        raise ValueError(
            f"{yaml_path}: `compute_features` has no aasp_sb.features.LogMel front end"
        )
    return logmel


def main(argv=None):
    """``python -m aasp_sb.features --csv manifest.csv``: prints a corpus' mean and std.

    Arguments
    ---------
    argv : list of str, optional
        Command-line arguments (``sys.argv[1:]`` when None).

    Returns
    -------
    tuple of float
        ``(mean, std)`` (also printed).
    """
    from aasp_sb.data.audio import AudioLoadError, load_audio
    from aasp_sb.data.folder import read_csv

    parser = argparse.ArgumentParser(
        prog="python -m aasp_sb.features",
        description="Log-mel mean/std of the clips of a manifest, for norm_mean/norm_std.",
    )
    parser.add_argument("--csv", required=True, nargs="+", help="manifest(s) with a wav column")
    parser.add_argument("--column", default="wav", help="audio path column (default: wav)")
    parser.add_argument(
        "--hparams",
        default=None,
        help="model YAML or run folder whose front end to use (default: M2D's, or the flags)",
    )
    parser.add_argument("--sample_rate", type=int, default=16000)
    parser.add_argument("--n_mels", type=int, default=80)
    parser.add_argument("--mel_scale", default="slaney", choices=MEL_SCALES)
    parser.add_argument(
        "--mel_norm", default="slaney", choices=("slaney", "none"), help="none: no normalisation"
    )
    parser.add_argument(
        "--max_seconds", type=float, default=None, help="read at most this much of each clip"
    )
    parser.add_argument(
        "--max_files", type=int, default=None, help="use the first N clips only"
    )
    args = parser.parse_args(argv)
    if args.hparams:
        logmel = front_end_from_yaml(args.hparams)
    else:
        logmel = LogMel(
            sample_rate=args.sample_rate,
            n_mels=args.n_mels,
            mel_scale=args.mel_scale,
            mel_norm=None if args.mel_norm == "none" else args.mel_norm,
        )
    paths = []
    for csv_path in args.csv:
        if not os.path.isfile(csv_path):
            raise SystemExit(f"{csv_path}: no such manifest")
        rows = read_csv(csv_path)
        if rows and args.column not in rows[0]:
            raise SystemExit(f"{csv_path}: no `{args.column}` column")
        paths += [row[args.column] for row in rows]
    paths = paths[: args.max_files] if args.max_files else paths
    if not paths:
        raise SystemExit(f"{' '.join(args.csv)}: no clips listed")
    wavs = (
        load_audio(p, logmel.sample_rate, max_seconds=args.max_seconds) for p in paths
    )
    try:
        mean, std = compute_stats(wavs, logmel)
    except AudioLoadError as err:
        raise SystemExit(f"{err} (listed in {', '.join(args.csv)})") from err
    print(f"# {len(paths)} clips, {logmel.extra_repr()}")
    print(f"norm_mean: {mean:.6f}")
    print(f"norm_std: {std:.6f}")
    return mean, std


if __name__ == "__main__":  # pragma: no cover
    # run the package's module (not this ``__main__`` copy): its classes are the YAML's
    from aasp_sb.features import main as _main

    _main(sys.argv[1:])
