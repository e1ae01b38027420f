"""Aliasing stability: how much embeddings change when the input is shifted.

A patch stem with stride equal to its patch size sub-samples the
spectrogram; shifting the input by a fraction of a patch changes what each
patch sees, and an aliasing-prone model's embedding changes with it. The
metric is the mean cosine similarity between the embedding of each clip and
the embedding of the same clip shifted by ``k`` frames, for several ``k``
(1.0 = perfectly shift-stable).

Shift directions
----------------
- :func:`shift_features` with ``k > 0`` *advances* the content: output frame
  ``t`` is input frame ``t + k`` (``crop`` drops the first ``k`` frames and
  pads the end; ``roll`` wraps them around to the end). ``k < 0`` delays.
- :func:`shift_waveform` with ``k > 0`` *delays* the signal by
  ``round(k * hop_length)`` samples (zeros in front), so its log-mel frames
  move ``k`` frames later (up to edge effects): it corresponds to
  ``shift_features(feats, -k)``. Fractional ``k`` gives sub-frame shifts.
"""

import torch
import torch.nn.functional as F


def shift_features(feats, shift_frames, mode="crop", pad="repeat"):
    """Shifts features along time (dimension ``-2``) by whole frames.

    Arguments
    ---------
    feats : torch.Tensor
        ``[B, T, F]`` (or ``[T, F]``) features, e.g. log-mel.
    shift_frames : int
        ``k``; output frame ``t`` holds input frame ``t + k`` (``k > 0``
        advances the content, ``k < 0`` delays it). Output length is ``T``.
    mode : str
        ``"crop"``: frames shifted out are dropped and the vacated end (start
        for ``k < 0``) is padded according to ``pad``. ``"roll"``: circular
        shift (frames shifted out re-enter at the other end).
    pad : str
        For ``crop``: ``"repeat"`` repeats the last (first for ``k < 0``)
        remaining frame; ``"zero"`` pads with zeros (with normalised log-mel,
        0 is the mean level, not silence).

    Returns
    -------
    torch.Tensor
        Shifted features, same shape as ``feats``.

    Example
    -------
    >>> x = torch.arange(5.0).view(1, 5, 1)
    >>> shift_features(x, 2).flatten().tolist()
    [2.0, 3.0, 4.0, 4.0, 4.0]
    >>> shift_features(x, 2, pad="zero").flatten().tolist()
    [2.0, 3.0, 4.0, 0.0, 0.0]
    >>> shift_features(x, 2, mode="roll").flatten().tolist()
    [2.0, 3.0, 4.0, 0.0, 1.0]
    >>> shift_features(x, -1).flatten().tolist()
    [0.0, 0.0, 1.0, 2.0, 3.0]
    """
    k = int(shift_frames)
    if k != shift_frames:
        raise ValueError(f"shift_frames must be an integer, got {shift_frames}")
    if feats.ndim < 2:
        raise ValueError("feats must be [..., T, F]")
    if mode == "roll":
        return torch.roll(feats, shifts=-k, dims=-2)
    if mode != "crop":
        raise ValueError(f"mode must be 'crop' or 'roll', got {mode!r}")
    if pad not in ("repeat", "zero"):
        raise ValueError(f"pad must be 'repeat' or 'zero', got {pad!r}")
    t = feats.shape[-2]
    if k == 0:
        return feats.clone()
    if abs(k) >= t:
        raise ValueError(f"|shift| {abs(k)} must be smaller than T = {t}")
    if k > 0:
        kept = feats[..., k:, :]
        edge = kept[..., -1:, :]
    else:
        kept = feats[..., : t + k, :]
        edge = kept[..., :1, :]
    fill_shape = list(feats.shape)
    fill_shape[-2] = abs(k)
    if pad == "repeat":
        fill = edge.expand(*fill_shape)
    else:
        fill = feats.new_zeros(fill_shape)
    parts = (kept, fill) if k > 0 else (fill, kept)
    return torch.cat(parts, dim=-2)


def shift_waveform(wav, shift_frames, hop_length=160, keep_length=True):
    """Delays a waveform by ``shift_frames`` hops (zeros in front).

    Arguments
    ---------
    wav : torch.Tensor
        ``[B, L]`` or ``[L]`` waveform (time last).
    shift_frames : float
        Delay in frames; ``round(shift_frames * hop_length)`` samples, so
        fractional values give sub-frame shifts. Negative values advance the
        signal (drop the first samples, zeros at the end).
    hop_length : int
        Feature hop in samples (160 = 10 ms at 16 kHz).
    keep_length : bool
        Keep ``L`` samples (the tail is dropped when delaying); otherwise
        the output grows by the delay (only for ``shift_frames >= 0``).

    Returns
    -------
    torch.Tensor
        The shifted waveform.

    Example
    -------
    >>> w = torch.arange(1.0, 7.0)
    >>> shift_waveform(w, 1, hop_length=2).tolist()
    [0.0, 0.0, 1.0, 2.0, 3.0, 4.0]
    >>> shift_waveform(w, 0.5, hop_length=2, keep_length=False).tolist()
    [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    >>> shift_waveform(w, -1, hop_length=2).tolist()
    [3.0, 4.0, 5.0, 6.0, 0.0, 0.0]
    """
    n = int(round(shift_frames * hop_length))
    length = wav.shape[-1]
    if n == 0:
        return wav.clone()
    if abs(n) >= length and keep_length:
        return torch.zeros_like(wav)
    if n > 0:
        out = F.pad(wav, (n, 0))
        return out[..., :length] if keep_length else out
    return F.pad(wav[..., -n:], (0, -n))


def shift_cosine_similarity(reference, shifted, eps=1e-8):
    """Mean cosine similarity between reference and shifted embeddings.

    Arguments
    ---------
    reference : torch.Tensor
        ``[N, D]`` embeddings of the unshifted inputs.
    shifted : torch.Tensor
        ``[S, N, D]`` embeddings of the same inputs under ``S`` shifts
        (``[N, D]`` is treated as ``S = 1``).
    eps : float
        Guards against zero-norm embeddings.

    Returns
    -------
    per_shift : torch.Tensor
        ``[S]`` float64, mean over the ``N`` clips of the cosine similarity.
    overall : float
        Mean of ``per_shift``.

    Example
    -------
    >>> ref = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    >>> shifted = torch.stack([ref, torch.tensor([[0.0, 1.0], [0.0, 1.0]])])
    >>> per_shift, overall = shift_cosine_similarity(ref, shifted)
    >>> per_shift.tolist(), overall
    ([1.0, 0.5], 0.75)
    """
    ref = torch.as_tensor(reference).double()
    sh = torch.as_tensor(shifted).double()
    if sh.ndim == 2:
        sh = sh.unsqueeze(0)
    if ref.ndim != 2 or sh.shape[1:] != ref.shape:
        raise ValueError(
            f"reference {tuple(ref.shape)} must be [N, D] and shifted "
            f"{tuple(sh.shape)} [S, N, D]"
        )
    cos = F.cosine_similarity(sh, ref.unsqueeze(0), dim=-1, eps=eps)
    per_shift = cos.mean(dim=1)
    return per_shift, per_shift.mean().item()


@torch.no_grad()
def measure_shift_stability(embed_fn, feats, shifts, mode="crop", pad="repeat"):
    """Embeds features and their shifted copies, and compares them.

    Arguments
    ---------
    embed_fn : callable
        Maps ``[B, T, F]`` features to ``[B, D]`` clip embeddings.
    feats : torch.Tensor
        ``[B, T, F]`` features.
    shifts : sequence of int
        Frame shifts ``k`` (see :func:`shift_features`).
    mode : str
        ``"crop"`` or ``"roll"``.
    pad : str
        ``"repeat"`` or ``"zero"`` (crop mode).

    Returns
    -------
    per_shift : torch.Tensor
        ``[len(shifts)]`` mean cosine similarity per shift.
    overall : float
        Mean over shifts.

    Example
    -------
    >>> feats = torch.randn(3, 16, 8)
    >>> per_shift, overall = measure_shift_stability(
    ...     lambda x: x.mean(dim=1), feats, [1, 2], mode="roll"
    ... )
    >>> round(overall, 6)
    1.0
    """
    reference = embed_fn(feats)
    shifted = torch.stack(
        [embed_fn(shift_features(feats, k, mode=mode, pad=pad)) for k in shifts]
    )
    return shift_cosine_similarity(reference, shifted)


def stability_report(per_model, shifts, digits=4):
    """Markdown table of per-shift similarities, models side by side.

    Arguments
    ---------
    per_model : dict
        ``{model name: per-shift mean cosine similarities}`` (sequence or
        tensor of ``len(shifts)`` values).
    shifts : sequence
        The shifts, used as row labels.
    digits : int
        Decimal places.

    Returns
    -------
    str
        Markdown table with one row per shift and a final ``mean`` row.

    Example
    -------
    >>> print(stability_report({"plain": [0.9, 0.8], "aape": [0.99, 0.97]}, [1, 2]))
    | shift | plain | aape |
    |---|---|---|
    | 1 | 0.9000 | 0.9900 |
    | 2 | 0.8000 | 0.9700 |
    | mean | 0.8500 | 0.9800 |
    """
    shifts = list(shifts)
    names = list(per_model)
    cols = {}
    for name in names:
        vals = torch.as_tensor(per_model[name], dtype=torch.float64).flatten()
        if vals.numel() != len(shifts):
            raise ValueError(
                f"{name}: {vals.numel()} values for {len(shifts)} shifts"
            )
        cols[name] = vals
    lines = [
        "| shift | " + " | ".join(names) + " |",
        "|" + "---|" * (len(names) + 1),
    ]
    for i, k in enumerate(shifts):
        cells = [f"{cols[n][i].item():.{digits}f}" for n in names]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    means = [f"{cols[n].mean().item():.{digits}f}" for n in names]
    lines.append("| mean | " + " | ".join(means) + " |")
    return "\n".join(lines)
