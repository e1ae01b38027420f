"""Training-time augmentation for fine-tuning: SpecAugment, random resize crop, mixup.

:class:`SpecAugment` masks bands of mel bins and spans of frames of a
normalised log-mel ``[B, T, F]``. SpeechBrain 1.1.2's
``speechbrain.augment.freq_domain.SpectrogramDrop`` was checked and not used:
it writes into its input in place, draws one band count for the whole batch,
can place bands past the edge (``max(1, D, -len)`` instead of ``D - len``), so
fewer bins than stated are masked, and ignores relative lengths (time masks
land in padding). Here every clip gets exactly ``num_*_masks`` bands, each
inside the clip's real frames, and the input is left untouched.

:class:`RandomResizeCrop` is BYOL-A's random resize crop, which M2D's
fine-tuning commands switch on (``--rrc True``): a random area of a zero
canvas 1.5x the input's length (input centred) is resized back to the input
size, so content is stretched / squeezed in time and frequency and shifted.
It is batched here (one ``grid_sample`` for the batch, bicubic).

:class:`Mixup` mixes clips and their (multi-hot or one-hot) targets with the
same per-clip weight ``lambda ~ Beta(alpha, alpha)``; the fine-tuning Brain
applies it to waveforms (before the log-mel, as AST/M2D-style recipes do).
"""

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from aasp_sb.features import frame_lengths


def _width_range(width, name):
    """``int`` (max width, min 0) or ``(min, max)`` -> ``(lo, hi)`` ints."""
    lo, hi = (0, width) if isinstance(width, (int, float)) else tuple(width)
    lo, hi = int(lo), int(hi)
    if not 0 <= lo <= hi:
        raise ValueError(f"{name} must satisfy 0 <= min <= max, got {width}")
    return lo, hi


def sample_bands(batch, num_bands, width, sizes, generator=None, device=None):
    """Draws ``num_bands`` bands ``[start, start + width)`` per clip.

    Each width is uniform on the integers ``[lo, hi]``, clipped to the clip's
    size, and each start uniform over the positions that keep the band inside
    ``[0, size)``.

    Arguments
    ---------
    batch : int
        Number of clips.
    num_bands : int
        Bands per clip.
    width : int or tuple
        Maximum width (minimum 0), or ``(min, max)``.
    sizes : torch.Tensor
        ``[B]`` long, the extent each clip's bands must stay within.
    generator : torch.Generator, optional
        Random source (CPU).
    device : torch.device, optional
        Device of the returned tensors.

    Returns
    -------
    starts, widths : torch.Tensor
        ``[B, num_bands]`` long.

    Example
    -------
    >>> s, w = sample_bands(2, 3, (4, 4), torch.tensor([10, 10]))
    >>> s.shape, w.tolist(), bool((s + w <= 10).all())
    (torch.Size([2, 3]), [[4, 4, 4], [4, 4, 4]], True)
    """
    lo, hi = _width_range(width, "width")
    sizes = sizes.detach().cpu().long().view(-1, 1)
    u = torch.rand(batch, num_bands, generator=generator)
    widths = (lo + (u * (hi - lo + 1)).floor().long()).clamp(max=hi)
    widths = torch.minimum(widths, sizes)
    room = (sizes - widths + 1).clamp_min(1)
    starts = (
        (torch.rand(batch, num_bands, generator=generator) * room)
        .floor()
        .long()
    )
    return starts.to(device), widths.to(device)


def bands_to_mask(starts, widths, size):
    """Boolean ``[B, size]`` mask, True inside any band.

    Arguments
    ---------
    starts, widths : torch.Tensor
        ``[B, K]`` band starts and widths.
    size : int
        Length of the masked axis.

    Returns
    -------
    torch.Tensor

    Example
    -------
    >>> bands_to_mask(torch.tensor([[1, 6]]), torch.tensor([[2, 1]]), 8).int().tolist()
    [[0, 1, 1, 0, 0, 0, 1, 0]]
    """
    pos = torch.arange(size, device=starts.device).view(1, 1, -1)
    inside = (pos >= starts.unsqueeze(-1)) & (
        pos < (starts + widths).unsqueeze(-1)
    )
    return inside.any(dim=1)


class SpecAugment(nn.Module):
    """Frequency and time masking of ``[B, T, F]`` features (SpecAugment without warping).

    Every clip gets ``num_freq_masks`` bands of mel bins and ``num_time_masks``
    spans of frames replaced by ``value`` (0 = the dataset mean after
    :class:`~aasp_sb.features.Normalize`). Widths are uniform integers in
    ``[0, width]`` (or a given ``(min, max)``), as torchaudio's
    ``FrequencyMasking``/``TimeMasking``; time spans stay inside the clip's
    real frames (relative ``lengths``) and are at most
    ``time_mask_max_ratio`` of them, so a short clip is never blanked out.
    Only active in training mode (or with ``force=True``).

    Arguments
    ---------
    freq_mask_width : int or tuple
        Maximum band width in mel bins (0 disables), or ``(min, max)``.
    num_freq_masks : int
        Frequency bands per clip.
    time_mask_width : int or tuple
        Maximum span in frames (0 disables), or ``(min, max)``.
    num_time_masks : int
        Time spans per clip.
    time_mask_max_ratio : float
        Upper bound of a span as a fraction of the clip's real frames.
    value : float
        Replacement value.
    shared : bool
        One set of masks for the whole batch, as EVAR's fine-tuning (its
        ``finetune.py`` applies torchaudio's ``FrequencyMasking`` /
        ``TimeMasking`` to the batch tensor, whose default ``iid_masks=False``
        masks every clip alike); time spans then stay inside the shortest
        clip's real frames. False (default): masks drawn per clip.

    Example
    -------
    >>> aug = SpecAugment(freq_mask_width=(8, 8), num_freq_masks=2,
    ...                   time_mask_width=0)
    >>> x = torch.ones(2, 50, 80)
    >>> y, (fmask, tmask) = aug(x, return_masks=True)
    >>> y.shape, bool((y[fmask.unsqueeze(1).expand_as(y)] == 0).all())
    (torch.Size([2, 50, 80]), True)
    >>> aug.eval()(x) is x   # identity outside training
    True
    """

    def __init__(
        self,
        freq_mask_width=30,
        num_freq_masks=1,
        time_mask_width=100,
        num_time_masks=1,
        time_mask_max_ratio=0.5,
        value=0.0,
        shared=False,
    ):
        super().__init__()
        self.shared = bool(shared)
        self.freq_width = _width_range(freq_mask_width, "freq_mask_width")
        self.time_width = _width_range(time_mask_width, "time_mask_width")
        if int(num_freq_masks) < 0 or int(num_time_masks) < 0:
            raise ValueError("num_freq_masks and num_time_masks must be >= 0")
        if not 0.0 < float(time_mask_max_ratio) <= 1.0:
            raise ValueError(
                f"time_mask_max_ratio must be in (0, 1], got {time_mask_max_ratio}"
            )
        self.num_freq_masks = int(num_freq_masks)
        self.num_time_masks = int(num_time_masks)
        self.time_mask_max_ratio = float(time_mask_max_ratio)
        self.value = float(value)

    @property
    def enabled(self):
        """Whether any band can be masked."""
        return (self.num_freq_masks > 0 and self.freq_width[1] > 0) or (
            self.num_time_masks > 0 and self.time_width[1] > 0
        )

    def sample_masks(self, x, lengths=None, generator=None):
        """Draws the masks for ``x`` without applying them.

        Arguments
        ---------
        x : torch.Tensor
            ``[B, T, F]`` features.
        lengths : torch.Tensor, optional
            ``[B]`` relative lengths.
        generator : torch.Generator, optional
            Random source.

        Returns
        -------
        freq_mask : torch.Tensor
            ``[B, F]`` True on masked mel bins.
        time_mask : torch.Tensor
            ``[B, T]`` True on masked frames.
        """
        B = x.shape[0]
        if self.shared and B > 1:
            shortest = None
            if lengths is not None:
                shortest = lengths.reshape(-1).min().reshape(1)
            fm, tm = self._per_clip_masks(x[:1], shortest, generator)
            return fm.expand(B, -1).clone(), tm.expand(B, -1).clone()
        return self._per_clip_masks(x, lengths, generator)

    def _per_clip_masks(self, x, lengths, generator):
        """Masks drawn independently for every clip of ``x``."""
        B, T, F = x.shape
        freq_mask = torch.zeros(B, F, dtype=torch.bool, device=x.device)
        time_mask = torch.zeros(B, T, dtype=torch.bool, device=x.device)
        if self.num_freq_masks and self.freq_width[1] > 0:
            starts, widths = sample_bands(
                B,
                self.num_freq_masks,
                self.freq_width,
                torch.full((B,), F),
                generator,
                x.device,
            )
            freq_mask = bands_to_mask(starts, widths, F)
        if self.num_time_masks and self.time_width[1] > 0:
            valid = frame_lengths(lengths, T)
            if valid is None:
                valid = torch.full((B,), T, dtype=torch.long)
            valid = valid.cpu()
            limit = (valid.float() * self.time_mask_max_ratio).floor().long()
            starts, widths = sample_bands(
                B,
                self.num_time_masks,
                self.time_width,
                valid,
                generator,
            )
            widths = torch.minimum(widths, limit.view(-1, 1))
            time_mask = bands_to_mask(starts, widths, T).to(x.device)
        return freq_mask, time_mask

    def forward(
        self, x, lengths=None, generator=None, force=False, return_masks=False
    ):
        """Masks ``x`` (a new tensor; ``x`` itself is not modified).

        Arguments
        ---------
        x : torch.Tensor
            ``[B, T, F]`` features.
        lengths : torch.Tensor, optional
            ``[B]`` relative lengths.
        generator : torch.Generator, optional
            Random source.
        force : bool
            Mask even in eval mode.
        return_masks : bool
            Also return ``(freq_mask, time_mask)``.

        Returns
        -------
        torch.Tensor
            The masked features (``x`` itself when inactive).
        tuple
            Only with ``return_masks``: ``(freq_mask [B, F], time_mask [B, T])``.
        """
        if not (self.training or force) or not self.enabled:
            if return_masks:
                B, T, F = x.shape
                none = torch.zeros(B, F, dtype=torch.bool, device=x.device)
                return x, (
                    none,
                    torch.zeros(B, T, dtype=torch.bool, device=x.device),
                )
            return x
        freq_mask, time_mask = self.sample_masks(x, lengths, generator)
        mask = freq_mask.unsqueeze(1) | time_mask.unsqueeze(2)
        out = x.masked_fill(mask, self.value)
        if return_masks:
            return out, (freq_mask, time_mask)
        return out


class RandomResizeCrop(nn.Module):
    """Random resize crop of ``[B, T, F]`` features (BYOL-A / M2D fine-tuning).

    Per clip: the input sits in the centre of a zero canvas of
    ``virtual_crop_scale`` times its size; an area of ``time_scale`` x
    ``freq_scale`` times the input size (uniform draws, clipped to the
    canvas) is taken at a uniform position and resized back to ``[T, F]``
    with bicubic interpolation (corners aligned). Zero is the dataset mean
    after :class:`~aasp_sb.features.Normalize`. Only active in training
    mode (or with ``force=True``); padding frames are treated as content, as
    in M2D's fixed-length crops.

    Arguments
    ---------
    virtual_crop_scale : tuple of float
        Canvas size relative to the input, ``(time, freq)``; each >= 1.
    time_scale : tuple of float
        ``(min, max)`` crop length relative to the input's frames (max >= 1).
    freq_scale : tuple of float
        ``(min, max)`` crop height relative to the mel bins (max >= 1).
    mode : str
        ``grid_sample`` interpolation: ``"bicubic"`` (BYOL-A) or ``"bilinear"``.

    Example
    -------
    >>> x = torch.randn(2, 100, 80)
    >>> same = RandomResizeCrop((1.0, 1.0), (1.0, 1.0), (1.0, 1.0))
    >>> torch.allclose(same(x), x, atol=1e-4)   # whole input, no resize
    True
    >>> rrc = RandomResizeCrop()
    >>> rrc(x, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([2, 100, 80])
    >>> rrc.eval()(x) is x
    True
    """

    def __init__(
        self,
        virtual_crop_scale=(1.5, 1.0),
        time_scale=(0.6, 1.5),
        freq_scale=(0.6, 1.5),
        mode="bicubic",
    ):
        super().__init__()
        self.virtual_crop_scale = tuple(float(v) for v in virtual_crop_scale)
        self.time_scale = tuple(float(v) for v in time_scale)
        self.freq_scale = tuple(float(v) for v in freq_scale)
        if len(self.virtual_crop_scale) != 2 or min(self.virtual_crop_scale) < 1.0:
            raise ValueError(
                f"virtual_crop_scale must be (time, freq), each >= 1, got {virtual_crop_scale}"
            )
        for name, (lo, hi) in (
            ("time_scale", self.time_scale),
            ("freq_scale", self.freq_scale),
        ):
            if not 0.0 < lo <= hi or hi < 1.0:
                raise ValueError(
                    f"{name} must be (min, max) with 0 < min <= max and max >= 1, "
                    f"got {(lo, hi)}"
                )
        if mode not in ("bicubic", "bilinear"):
            raise ValueError(f"mode must be 'bicubic' or 'bilinear', got {mode!r}")
        self.mode = mode

    def sample_boxes(self, batch, size, generator=None):
        """Crop boxes on the canvas, in input coordinates.

        Arguments
        ---------
        batch : int
            Number of clips.
        size : tuple of int
            ``(T, F)`` of the input.
        generator : torch.Generator, optional
            Random source.

        Returns
        -------
        torch.Tensor
            ``[B, 2, 2]``: per clip and axis (time, freq) the first and last
            sampled input coordinate (may lie outside ``[0, size - 1]``).
        """
        boxes = []
        for n, canvas_scale, (lo, hi) in zip(
            size, self.virtual_crop_scale, (self.time_scale, self.freq_scale)
        ):
            canvas = int(n * canvas_scale)
            u = torch.rand(batch, 2, generator=generator, dtype=torch.float64)
            length = (lo + (hi - lo) * u[:, 0]) * n
            length = length.floor().clamp(1, canvas)
            start = (u[:, 1] * (canvas - length + 1)).floor()  # integer offsets
            start = start - (canvas - n) // 2  # canvas -> input coordinates
            boxes.append(torch.stack([start, start + length - 1], dim=-1))
        return torch.stack(boxes, dim=1).float()

    def forward(self, x, lengths=None, generator=None, force=False):
        """Crops and resizes every clip of ``x`` (a new tensor).

        Arguments
        ---------
        x : torch.Tensor
            ``[B, T, F]`` features.
        lengths : torch.Tensor, optional
            Accepted for a common augmentation signature; not used.
        generator : torch.Generator, optional
            Random source.
        force : bool
            Apply even in eval mode.

        Returns
        -------
        torch.Tensor
            ``[B, T, F]`` (``x`` itself when inactive).
        """
        del lengths
        if not (self.training or force):
            return x
        B, T, Fb = x.shape
        box = self.sample_boxes(B, (T, Fb), generator).to(x.device)

        def axis(n, lo_hi):
            # output index k -> input coordinate first + k (last - first) / (n - 1),
            # then to grid_sample's [-1, 1] (align_corners=True)
            steps = torch.linspace(0.0, 1.0, n, device=x.device)
            coord = lo_hi[:, :1] + steps * (lo_hi[:, 1:] - lo_hi[:, :1])
            return 2.0 * coord / max(n - 1, 1) - 1.0

        t = axis(T, box[:, 0])  # [B, T]
        f = axis(Fb, box[:, 1])  # [B, F]
        grid = torch.stack(
            [f.unsqueeze(1).expand(B, T, Fb), t.unsqueeze(2).expand(B, T, Fb)], dim=-1
        )  # grid_sample's (x, y) = (width = F, height = T)
        out = F.grid_sample(
            x.float().unsqueeze(1),
            grid,
            mode=self.mode,
            padding_mode="zeros",
            align_corners=True,
        )
        return out.squeeze(1).to(x.dtype)


class MixupOutput(NamedTuple):
    """What :meth:`Mixup.forward` returns.

    inputs: mixed inputs. targets: mixed targets (float). lengths: relative
    lengths of the mixture (the longer of the two), or None. lam: ``[B]``
    weight of each clip's own part. perm: ``[B]`` index of the partner clip.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    lengths: Optional[torch.Tensor]
    lam: torch.Tensor
    perm: torch.Tensor


class Mixup(nn.Module):
    """Mixup: ``x = lam x_i + (1 - lam) x_perm(i)``, same ``lam`` for the targets.

    ``lam`` is drawn per clip from ``Beta(alpha, alpha)``; the partner is a
    random permutation of the batch. Targets must be float (multi-hot, or
    one-hot for single-label tasks; see :func:`one_hot`). Only active in
    training mode (or with ``force=True``) and when ``alpha > 0``.

    Arguments
    ---------
    alpha : float
        Beta distribution parameter (0 disables mixup).
    prob : float
        Probability that a batch is mixed at all.

    Example
    -------
    >>> mix = Mixup(alpha=0.3)
    >>> x, y = torch.randn(4, 100), torch.eye(4)
    >>> out = mix(x, y)
    >>> lam = out.lam.view(-1, 1)
    >>> torch.allclose(out.targets, lam * y + (1 - lam) * y[out.perm])
    True
    >>> torch.allclose(out.inputs, lam * x + (1 - lam) * x[out.perm])
    True
    """

    def __init__(self, alpha=0.3, prob=1.0):
        super().__init__()
        if alpha < 0:
            raise ValueError(f"mixup alpha must be >= 0, got {alpha}")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"mixup prob must be in [0, 1], got {prob}")
        self.alpha = float(alpha)
        self.prob = float(prob)

    def forward(
        self, inputs, targets, lengths=None, generator=None, force=False
    ):
        """Mixes a batch.

        Arguments
        ---------
        inputs : torch.Tensor
            ``[B, ...]`` (waveforms or features).
        targets : torch.Tensor
            ``[B, C]`` float targets.
        lengths : torch.Tensor, optional
            ``[B]`` relative lengths.
        generator : torch.Generator, optional
            Random source of the permutation and of the skip draw.
        force : bool
            Mix even in eval mode.

        Returns
        -------
        MixupOutput
        """
        B = inputs.shape[0]
        targets = targets.float()
        identity = torch.arange(B, device=inputs.device)
        active = (self.training or force) and self.alpha > 0 and B > 1
        if active and self.prob < 1.0:
            active = bool(torch.rand((), generator=generator) < self.prob)
        if not active:
            ones = torch.ones(B, device=inputs.device)
            return MixupOutput(inputs, targets, lengths, ones, identity)
        lam = torch.distributions.Beta(self.alpha, self.alpha).sample((B,))
        lam = lam.to(device=inputs.device, dtype=inputs.dtype)
        perm = torch.randperm(B, generator=generator).to(inputs.device)
        lx = lam.view(-1, *([1] * (inputs.dim() - 1)))
        mixed = lx * inputs + (1 - lx) * inputs[perm]
        ly = lam.view(-1, *([1] * (targets.dim() - 1))).to(targets.dtype)
        mixed_targets = ly * targets + (1 - ly) * targets[perm]
        if lengths is not None:
            lengths = torch.maximum(lengths, lengths[perm])
        return MixupOutput(mixed, mixed_targets, lengths, lam, perm)


def one_hot(labels, num_classes):
    """Class indices ``[B]`` or ``[B, 1]`` -> float one-hot ``[B, C]``.

    Arguments
    ---------
    labels : torch.Tensor
        Long class indices.
    num_classes : int
        Number of classes.

    Returns
    -------
    torch.Tensor

    Example
    -------
    >>> one_hot(torch.tensor([[1], [0]]), 3)
    tensor([[0., 1., 0.],
            [1., 0., 0.]])
    """
    return nn.functional.one_hot(labels.reshape(-1).long(), num_classes).float()
