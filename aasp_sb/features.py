"""Waveform -> normalised log-mel spectrogram, in SpeechBrain's ``[B, T, F]`` layout.

The defaults reproduce M2D's front end (16 kHz, 80 mel bins, 25 ms window,
10 ms hop, 50-8000 Hz, ``log(power + eps)``) so that M2D's AudioSet statistics
(mean -7.1, std 4.2) apply unchanged.
"""

import torch
import torchaudio
from torch import nn

FLOAT32_EPS = torch.finfo(torch.float32).eps


class LogMel(nn.Module):
    """Log-mel filterbank features.

    Arguments
    ---------
    sample_rate : int
        Expected input sample rate (resample before, see :mod:`aasp_sb.data.audio`).
    n_fft : int
        FFT size (400 = 25 ms at 16 kHz); also the window length.
    hop_length : int
        Hop in samples (160 = 10 ms at 16 kHz).
    n_mels : int
        Number of mel bins.
    f_min, f_max : float
        Mel filterbank range in Hz.
    eps : float
        Floor added to the power before the log.

    Example
    -------
    >>> logmel = LogMel()
    >>> feats = logmel(torch.randn(2, 16000))
    >>> feats.shape
    torch.Size([2, 101, 80])
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
    ):
        super().__init__()
        self.sample_rate = sample_rate
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.eps = eps
        self.melspec = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=n_fft,
            win_length=n_fft,
            hop_length=hop_length,
            n_mels=n_mels,
            f_min=f_min,
            f_max=f_max,
            power=2.0,
        )

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
        Log-mel extractor (default settings when None).
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

    Use it to normalise a corpus whose statistics differ from AudioSet's.

    Arguments
    ---------
    wavs : iterable of torch.Tensor
        1D waveforms at the extractor's sample rate.
    logmel : LogMel, optional
        Extractor (default settings when None).

    Returns
    -------
    tuple of float
        ``(mean, std)``.

    Example
    -------
    >>> m, s = compute_stats([torch.randn(16000), torch.randn(8000)])
    >>> s > 0
    True
    """
    logmel = logmel if logmel is not None else LogMel()
    total, total_sq, count = 0.0, 0.0, 0
    for wav in wavs:
        x = logmel(wav.unsqueeze(0)).double()
        total += x.sum().item()
        total_sq += (x**2).sum().item()
        count += x.numel()
    if count == 0:
        raise ValueError("compute_stats: no audio given")
    mean = total / count
    var = max(total_sq / count - mean**2, 1e-12)
    return float(mean), float(var**0.5)
