"""FinetuneBrain: supervised fine-tuning of a (pre-trained) AaPE/ViT encoder.

Model (DESIGN §5, M2D-style): waveform -> normalised log-mel -> stem + ViT
(:class:`~aasp_sb.lobes.encoder.AudioViT`, chunking inputs longer than its
``max_frames``) -> masked mean of the real tokens (``pooling: tokens``; or
``frames``: mean over time of the ``Fp*D`` frame features) ->
:class:`ClassifierHead` (``BatchNorm1d(affine=False)`` + ``Linear``).

Objective and metric follow the task: single-label tasks use cross-entropy
(soft targets under mixup) and accuracy, multi-label tasks (AS-20K) use
BCE-with-logits and mAP (:class:`~aasp_sb.evaluation.metrics.MultiLabelStats`).

Training-time regularisation: mixup of waveforms and targets
(:class:`~aasp_sb.augment.Mixup`, ``mixup_alpha > 0``), SpecAugment-style
masking of the log-mel (:class:`~aasp_sb.augment.SpecAugment`), random
resize crop (:class:`~aasp_sb.augment.RandomResizeCrop`, ``rrc: True``), stochastic
depth (the encoder's ``drop_path``), optional random token dropping
(``token_drop``, M2D's "training mask"), layer-wise lr decay, warm-up + cosine
schedule. ``freeze_stem`` keeps the patch stem (plain or AaPE) fixed and in eval
mode; ``freeze_encoder`` keeps the whole encoder fixed (linear-probe style).

SpeechBrain 1.1.2 pitfalls handled here (DESIGN §7): frozen parameters are
kept out of the optimiser and frozen modules are put back into eval mode
after ``Brain`` calls ``modules.train()``; gradients are clipped over *all*
parameter groups; the lr schedule keeps each group's layer-decay
``lr_scale``; checkpoint meta values are plain floats.

The best checkpoint by validation metric is kept; ``evaluate(test_set,
max_key="metric")`` restores it and writes ``results.json`` and
``test_per_class.csv`` into ``split_folder``.
"""

import csv
import json
import logging
import math
import os

import speechbrain as sb
import torch
from torch import nn

from aasp_sb.augment import one_hot
from aasp_sb.brains.scheduled import ScheduledBrain
from aasp_sb.evaluation.metrics import (
    MultiLabelStats,
    accuracy,
    per_class_accuracy,
)
from aasp_sb.features import frame_lengths
from aasp_sb.lobes.encoder import AudioViT, masked_mean
from aasp_sb.pretrained import ARCH_KEYS, load_state
from aasp_sb.schedulers import param_groups

logger = logging.getLogger(__name__)

POOLINGS = ("tokens", "frames")


# --------------------------------------------------------------------- model
class ClassifierHead(nn.Module):
    """``BatchNorm1d(affine=False)`` then ``Linear``: the M2D / MAE fine-tuning head.

    Arguments
    ---------
    in_dim : int
        Width of the pooled embedding.
    num_classes : int
        Number of classes.
    init_std : float
        Standard deviation of the (truncated normal) weight initialisation.

    Example
    -------
    >>> head = ClassifierHead(32, 5)
    >>> head(torch.randn(4, 32)).shape
    torch.Size([4, 5])
    """

    def __init__(self, in_dim, num_classes, init_std=0.01):
        super().__init__()
        self.norm = nn.BatchNorm1d(int(in_dim), affine=False, eps=1e-6)
        self.linear = nn.Linear(int(in_dim), int(num_classes))
        nn.init.trunc_normal_(self.linear.weight, std=init_std)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x):
        """``[B, in_dim]`` -> logits ``[B, num_classes]``."""
        return self.linear(self.norm(x))


def pooled_dim(embed_dim, n_mels, patch_size, pooling="tokens"):
    """Width of the pooled embedding the head receives.

    Arguments
    ---------
    embed_dim : int
        Token width ``D``.
    n_mels : int
        Mel bins.
    patch_size : int or tuple
        Patch size ``(pf, pt)``.
    pooling : str
        ``"tokens"`` (``D``) or ``"frames"`` (``(n_mels / pf) * D``).

    Returns
    -------
    int

    Example
    -------
    >>> pooled_dim(768, 80, 16, "tokens"), pooled_dim(768, 80, 16, "frames")
    (768, 3840)
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if pooling == "tokens":
        return int(embed_dim)
    pf = patch_size if isinstance(patch_size, int) else patch_size[0]
    return int(embed_dim) * (int(n_mels) // int(pf))


def pool_output(out, pooling="tokens"):
    """Clip embedding from an :class:`~aasp_sb.lobes.encoder.EncoderOutput`.

    Arguments
    ---------
    out : EncoderOutput
        Encoder output.
    pooling : str
        ``"tokens"``: masked mean of the tokens ``[B, D]``; ``"frames"``:
        masked mean over time of the frame features ``[B, Fp*D]``.

    Returns
    -------
    torch.Tensor

    Example
    -------
    >>> from aasp_sb.lobes.patch import PatchEmbed
    >>> enc = AudioViT(PatchEmbed(80, 16, 32), 32, depth=1, num_heads=2, max_frames=64)
    >>> out = enc(torch.randn(2, 64, 80))
    >>> pool_output(out).shape, pool_output(out, "frames").shape
    (torch.Size([2, 32]), torch.Size([2, 160]))
    """
    if pooling == "tokens":
        return masked_mean(out.tokens, out.mask)
    if pooling == "frames":
        return masked_mean(
            AudioViT.frame_features(out), AudioViT.frame_mask(out)
        )
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


#: Token-drop geometries: independent tokens, or M2D's whole rows + columns.
TOKEN_DROP_MODES = ("random", "structured")


def structured_token_mask(batch, grid, ratio, generator=None):
    """M2D's fine-tuning "training mask": whole patch rows and columns.

    The geometry of M2D's ``random_structured_mask`` (used after
    ``set_random_structured_mask()``, nttcslab/m2d ``m2d/runtime_audio.py``):
    with a ``Fp x Tp`` patch grid and ratio ``r``, one uniform draw ``u``
    gives ``NF = min(Fp - 1, int(Fp (r + 1/Fp) u))`` frequency rows and
    ``NT = int(Tp max(r + 0.5/Tp - NF/Fp, 0))`` time columns; every clip of
    the batch masks that many rows and columns, at its own random places,
    so all clips keep the same number of tokens. Ours additionally caps
    ``NT`` at ``Tp - 1`` so that a token always survives (M2D's formula can
    reach ``NT = Tp`` only for ``r`` near 1).

    Arguments
    ---------
    batch : int
        Number of grids (clips, or clip chunks).
    grid : tuple of int
        ``(Fp, Tp)``.
    ratio : float
        Mask ratio ``r`` in ``[0, 1)``.
    generator : torch.Generator, optional
        Random source.

    Returns
    -------
    torch.Tensor
        ``[batch, Fp, Tp]`` bool, True where a token is dropped.

    Example
    -------
    >>> m = structured_token_mask(2, (5, 8), 0.5, torch.Generator().manual_seed(0))
    >>> m.shape, bool((~m | m.all(2, keepdim=True) | m.all(1, keepdim=True)).all())
    (torch.Size([2, 5, 8]), True)
    """
    Fp, Tp = int(grid[0]), int(grid[1])
    u = float(torch.rand((), generator=generator))
    nf = min(Fp - 1, int(Fp * (ratio + 1.0 / Fp) * u))
    nt = min(Tp - 1, int(Tp * max(ratio + 0.5 / Tp - nf / Fp, 0.0)))
    mask = torch.zeros(batch, Fp, Tp, dtype=torch.bool)
    for b in range(batch):
        mask[b, torch.randperm(Fp, generator=generator)[:nf]] = True
        mask[b, :, torch.randperm(Tp, generator=generator)[:nt]] = True
    return mask


def encode_pooled(
    encoder,
    x,
    lengths=None,
    pooling="tokens",
    token_drop=0.0,
    generator=None,
    token_drop_mode="random",
):
    """Encodes log-mel and pools it, optionally dropping random tokens first.

    With ``token_drop = r > 0`` (M2D's fine-tuning "training mask"), each
    ``max_frames`` chunk keeps a random ``1 - r`` of its tokens (real tokens
    first), which are encoded and averaged: a regulariser that also cuts the
    cost. Chunks that are pure padding are excluded from the mean. Only
    ``pooling="tokens"`` is defined with dropping.

    Arguments
    ---------
    encoder : AudioViT
        The encoder.
    x : torch.Tensor
        ``[B, T, F]`` normalised log-mel.
    lengths : torch.Tensor, optional
        ``[B]`` relative lengths.
    pooling : str
        ``"tokens"`` or ``"frames"``.
    token_drop : float
        Fraction of tokens dropped, in ``[0, 1)``.
    generator : torch.Generator, optional
        Random source of the kept tokens.
    token_drop_mode : str
        ``"random"``: tokens dropped independently (real tokens kept
        first); ``"structured"``: whole patch rows and columns, M2D's
        geometry (:func:`structured_token_mask`).

    Returns
    -------
    torch.Tensor
        ``[B, pooled_dim]``.

    Example
    -------
    >>> from aasp_sb.lobes.patch import PatchEmbed
    >>> enc = AudioViT(PatchEmbed(80, 16, 32), 32, depth=1, num_heads=2, max_frames=64)
    >>> encode_pooled(enc, torch.randn(2, 150, 80), torch.tensor([1.0, 0.3]),
    ...               token_drop=0.5).shape
    torch.Size([2, 32])
    """
    if not 0.0 <= token_drop < 1.0:
        raise ValueError(f"token_drop must be in [0, 1), got {token_drop}")
    if token_drop_mode not in TOKEN_DROP_MODES:
        raise ValueError(
            f"token_drop_mode must be one of {TOKEN_DROP_MODES}, got {token_drop_mode!r}"
        )
    if token_drop == 0.0:
        return pool_output(encoder(x, lengths), pooling)
    if pooling != "tokens":
        raise ValueError("token_drop > 0 needs pooling='tokens'")
    B, T, F = x.shape
    valid = frame_lengths(lengths, T)
    if valid is None:
        valid = torch.full((B,), T, dtype=torch.long, device=x.device)
    chunk = encoder.max_frames
    if T <= chunk or getattr(encoder, "long_inputs", "chunk") == "extend":
        xc, clen, C = x, T, 1
        chunk_valid = valid.view(B, 1)
    else:
        C = -(-T // chunk)
        x = nn.functional.pad(x, (0, 0, 0, C * chunk - T))
        xc, clen = x.reshape(B * C, chunk, F), chunk
        starts = torch.arange(C, device=x.device) * chunk
        chunk_valid = (valid[:, None] - starts[None, :]).clamp(0, chunk)
    rel = chunk_valid.clamp_min(1).reshape(-1).float() / clen
    tokens, attn_mask, grid = encoder.embed(xc, rel)
    real = attn_mask & (chunk_valid.reshape(-1, 1) > 0)
    N = tokens.shape[1]
    if token_drop_mode == "structured":
        dropped = structured_token_mask(B * C, grid, token_drop, generator)
        dropped = dropped.reshape(B * C, N)
        keep = int((~dropped[0]).sum())
        # stable sort: the kept tokens, in grid order, come first
        idx = dropped.to(torch.uint8).argsort(dim=1, stable=True)[:, :keep]
        idx = idx.to(x.device)
    else:
        keep = max(1, int(round(N * (1.0 - token_drop))))
        score = torch.rand(B * C, N, generator=generator).to(x.device)
        score = score + 2.0 * (~attn_mask).float()  # real tokens first
        idx = score.argsort(dim=1)[:, :keep]
    tokens = torch.gather(
        tokens, 1, idx.unsqueeze(-1).expand(-1, -1, tokens.shape[-1])
    )
    attn_mask = torch.gather(attn_mask, 1, idx)
    real = torch.gather(real, 1, idx)
    out, _ = encoder.encode(tokens, attn_mask)
    w = real.to(out.dtype).unsqueeze(-1)
    summed = (out * w).reshape(B, C * keep, -1).sum(1)
    return summed / w.reshape(B, -1).sum(1).clamp_min(1.0).unsqueeze(-1)


def set_trainable(encoder, freeze_stem=False, freeze_encoder=False):
    """Sets ``requires_grad`` of the encoder's parameters for the freeze modes.

    Arguments
    ---------
    encoder : AudioViT
        The encoder (possibly wrapped: ``.module`` is used when present).
    freeze_stem : bool
        Freeze the patch stem (plain conv or AaPE).
    freeze_encoder : bool
        Freeze every encoder parameter (linear-probe style).

    Example
    -------
    >>> from aasp_sb.lobes.patch import PatchEmbed
    >>> enc = AudioViT(PatchEmbed(80, 16, 32), 32, depth=1, num_heads=2, max_frames=64)
    >>> set_trainable(enc, freeze_stem=True)
    >>> any(p.requires_grad for p in enc.stem.parameters()), enc.norm.weight.requires_grad
    (False, True)
    """
    encoder = getattr(encoder, "module", encoder)
    for p in encoder.parameters():
        p.requires_grad_(not freeze_encoder)
    if freeze_stem:
        for p in encoder.stem.parameters():
            p.requires_grad_(False)


#: Fine-tuning protocols: which epoch is tested (see :func:`protocol_split`).
PROTOCOLS = ("clean", "evar")
#: What each protocol's reported number is, written into ``results.json``.
SELECTION = {
    "clean": "best epoch on the validation set, then tested once",
    "evar_holdout": (
        "EVAR finetune.py: no validation split, so valid = test and the "
        "best test epoch is reported (optimistic)"
    ),
    "evar_split": (
        "EVAR finetune.py: best epoch on the official validation set, then "
        "tested once"
    ),
}


def protocol_split(split, protocol="clean", valid_source="split", folder=None):
    """The train / valid / test CSVs a fine-tuning protocol runs on.

    ``clean`` keeps the task's split: the best epoch on validation (an
    official validation set, or a class-complete 10 % holdout of train) is
    tested once. ``evar`` reproduces EVAR's ``finetune.py``: when a task has
    no validation split of its own (``valid_source == "holdout"``: ESC-50,
    US8K, AS-20K) the holdout goes back into training and the **test set
    is the validation set**, so the reported number is the best test epoch
    (optimistic: the epoch is selected on test); tasks with a validation
    split are run as ``clean``.

    Arguments
    ---------
    split : aasp_sb.data.tasks.Split
        The task's split.
    protocol : str
        ``"clean"`` or ``"evar"``.
    valid_source : str
        ``"holdout"`` or ``"split"`` (the task module's ``VALID_SOURCE``).
    folder : str, optional
        Where the merged training CSV of ``evar`` goes (needed then).

    Returns
    -------
    split : Split
        The split to run.
    selection : str
        Key of :data:`SELECTION` (what the reported number is).

    Example
    -------
    >>> from aasp_sb.data.tasks import Split
    >>> s = Split("fold1", "tr.csv", "va.csv", "te.csv")
    >>> protocol_split(s, "evar", "split")[1]
    'evar_split'
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if protocol == "clean":
        return split, "clean"
    if valid_source != "holdout":
        return split, "evar_split"
    if folder is None:
        raise ValueError("protocol_split: protocol 'evar' needs a folder")
    os.makedirs(folder, exist_ok=True)
    merged = os.path.join(folder, "evar_train.csv")
    rows, header = [], None
    for path in (split.train_csv, split.valid_csv):
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            head = next(reader, None)
            if head is None:
                continue
            if header is not None and head != header:
                raise ValueError(f"{path}: columns {head} differ from {header}")
            header = head
            rows.extend(reader)
    tmp = merged + ".tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header or ["ID", "duration", "wav", "label"])
        writer.writerows(rows)
    os.replace(tmp, merged)
    return (
        type(split)(split.name, merged, split.test_csv, split.test_csv),
        "evar_holdout",
    )


def trainable_summary(modules):
    """Trainable / total parameter counts, per module and in all.

    SpeechBrain's own "Trainable Parameters" line counts before
    ``on_fit_start`` freezes anything; this is the count the optimiser sees.

    Arguments
    ---------
    modules : dict of nn.Module
        ``{name: module}``.

    Returns
    -------
    dict
        ``{name: (trainable, total)}`` plus ``"all"``.

    Example
    -------
    >>> trainable_summary({"a": nn.Linear(2, 2)})["all"]
    (6, 6)
    """
    out, seen = {}, set()
    tot_t = tot = 0
    for name, module in modules.items():
        t = n = 0
        for p in module.parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            n += p.numel()
            t += p.numel() if p.requires_grad else 0
        out[name] = (t, n)
        tot_t, tot = tot_t + t, tot + n
    out["all"] = (tot_t, tot)
    return out


def check_finetune_hparams(hparams):
    """Validates the fine-tuning keys before anything is built or trained.

    Arguments
    ---------
    hparams : dict
        Loaded hyper-parameters.

    Raises
    ------
    ValueError
        Naming the offending key.

    Example
    -------
    >>> check_finetune_hparams({"mixup_alpha": 0.3, "token_drop": 0.5})
    >>> check_finetune_hparams({"layer_decay": 1.5})
    Traceback (most recent call last):
    ...
    ValueError: layer_decay must be in (0, 1] or null, got 1.5
    """
    get = hparams.get
    if float(get("mixup_alpha", 0.0) or 0.0) < 0:
        raise ValueError(
            f"mixup_alpha must be >= 0, got {hparams['mixup_alpha']}"
        )
    drop = float(get("token_drop", 0.0) or 0.0)
    if not 0.0 <= drop < 1.0:
        raise ValueError(f"token_drop must be in [0, 1), got {drop}")
    mode = get("token_drop_mode", "random")
    if mode not in TOKEN_DROP_MODES:
        raise ValueError(
            f"token_drop_mode must be one of {TOKEN_DROP_MODES}, got {mode!r}"
        )
    pooling = get("pooling", "tokens")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if drop > 0 and pooling != "tokens":
        raise ValueError("token_drop > 0 needs pooling: tokens")
    if get("rrc", False) and "rrc" not in (get("modules") or {}):
        raise ValueError(
            "rrc: True needs an `rrc` entry in `modules` "
            "(!new:aasp_sb.augment.RandomResizeCrop)"
        )
    if get("pretrained_parts", "all") not in PRETRAINED_PARTS:
        raise ValueError(
            f"pretrained_parts must be one of {PRETRAINED_PARTS}, "
            f"got {hparams['pretrained_parts']!r}"
        )
    if get("protocol", "clean") not in PROTOCOLS:
        raise ValueError(
            f"protocol must be one of {PROTOCOLS}, got {hparams['protocol']!r}"
        )
    decay = get("layer_decay")
    if decay is not None and not 0.0 < float(decay) <= 1.0:
        raise ValueError(f"layer_decay must be in (0, 1] or null, got {decay}")
    if int(get("number_of_epochs", 1)) < 1:
        raise ValueError(
            f"number_of_epochs must be >= 1, got {hparams['number_of_epochs']}"
        )
    crop = get("crop_seconds")
    if crop is not None and not float(crop) > 0:
        raise ValueError(f"crop_seconds must be positive or null, got {crop}")
    if float(get("warmup_epochs", 0.0)) < 0:
        raise ValueError(
            f"warmup_epochs must be >= 0, got {hparams['warmup_epochs']}"
        )


# ------------------------------------------------------- pre-trained weights
def architecture_overrides(parts):
    """YAML overrides that rebuild a pre-training run's model in a fine-tuning YAML.

    Arguments
    ---------
    parts : PretrainedParts
        From :func:`aasp_sb.pretrained.load_pretrained` (or built from a YAML).

    Returns
    -------
    dict
        Values of :data:`ARCH_KEYS` found in the run's hyper-parameters, plus
        ``max_frames`` (the encoder's chunk length), ``norm_mean`` and
        ``norm_std``.

    Example
    -------
    >>> from aasp_sb.features import Features
    >>> from aasp_sb.lobes.patch import PatchEmbed
    >>> from aasp_sb.pretrained import PretrainedParts
    >>> enc = AudioViT(PatchEmbed(80, 16, 32), 32, depth=1, num_heads=2, max_frames=64)
    >>> parts = PretrainedParts(Features(), enc, {"embed_dim": 32, "lr": 1.0}, None)
    >>> sorted(architecture_overrides(parts).items())
    [('embed_dim', 32), ('max_frames', 64), ('norm_mean', -7.1), ('norm_std', 4.2)]
    """
    hp = parts.hparams
    arch = {k: hp[k] for k in ARCH_KEYS if k in hp}
    arch["max_frames"] = int(parts.encoder.max_frames)
    norm = parts.features.normalize
    arch["norm_mean"] = float(hp.get("norm_mean", round(float(norm.mean), 6)))
    arch["norm_std"] = float(hp.get("norm_std", round(float(norm.std), 6)))
    return arch


@torch.no_grad()
def check_same_model(
    reference, features, encoder, source="the pre-training run"
):
    """Checks that ``features``/``encoder`` compute what the reference run's do.

    The encoder's weights are temporarily replaced by the reference's, both
    are run on the same random input (eval mode), and the weights restored.
    Catches a model key the fine-tuning YAML does not mirror (any AaPE option,
    say), which a shape check would miss.

    Arguments
    ---------
    reference : PretrainedParts
        The run's features and encoder.
    features, encoder : torch.nn.Module
        Modules built by the fine-tuning YAML.
    source : str
        Named in the error message.

    Raises
    ------
    ValueError
        When the outputs differ (or the weights do not fit).
    """
    gen = torch.Generator().manual_seed(0)
    sr = int(getattr(reference.features.logmel, "sample_rate", 16000))
    wav = torch.randn(1, sr // 2, generator=gen) * 0.1
    modes = [
        (m, m.training)
        for m in (features, encoder, reference.features, reference.encoder)
    ]
    own = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
    try:
        for m, _ in modes:
            m.eval()
        a, b = reference.features(wav), features(wav)
        if a.shape != b.shape or not torch.allclose(a, b, atol=1e-4, rtol=1e-4):
            raise ValueError(
                f"The front end built from the fine-tuning YAML differs from {source}'s "
                "(check sample_rate, n_mels, norm_mean, norm_std and the LogMel settings)"
            )
        load_state(encoder, reference.encoder.state_dict(), source)
        x = a[:, : min(a.shape[1], reference.encoder.max_frames)]
        ra, rb = reference.encoder(x).tokens, encoder(x).tokens
        if ra.shape != rb.shape or not torch.allclose(
            ra, rb, atol=1e-4, rtol=1e-4
        ):
            raise ValueError(
                f"The encoder built from the fine-tuning YAML computes something else than "
                f"{source}'s with the same weights: a model option of the pre-training YAML "
                "is not mirrored by the fine-tuning YAML (compare its stem/encoder keys)"
            )
    finally:
        encoder.load_state_dict(own)
        for m, mode in modes:
            m.train(mode)


PRETRAINED_PARTS = ("all", "stem", "blocks")


def select_pretrained_parts(pretrained, fresh, parts="all"):
    """An encoder state with pre-trained tensors for ``parts`` and fresh ones elsewhere.

    Arguments
    ---------
    pretrained : dict
        The pre-trained encoder's ``state_dict``.
    fresh : dict
        A freshly initialised encoder's ``state_dict`` (same architecture).
    parts : str
        ``"all"``; ``"stem"``: only the patch stem (AaPE or convolution,
        keys ``stem.*``) is transferred; ``"blocks"``: everything but the stem
        (transformer blocks and final norm).

    Returns
    -------
    dict

    Example
    -------
    >>> pre = {"stem.w": torch.ones(1), "blocks.0.w": torch.ones(1)}
    >>> new = {"stem.w": torch.zeros(1), "blocks.0.w": torch.zeros(1)}
    >>> select_pretrained_parts(pre, new, "stem")
    {'stem.w': tensor([1.]), 'blocks.0.w': tensor([0.])}
    """
    if parts not in PRETRAINED_PARTS:
        raise ValueError(
            f"pretrained_parts must be one of {PRETRAINED_PARTS}, got {parts!r}"
        )
    if parts == "all":
        return dict(pretrained)
    missing = set(pretrained) ^ set(fresh)
    if missing:
        raise ValueError(f"pre-trained and fresh encoders differ in keys {sorted(missing)[:5]}")
    want_stem = parts == "stem"
    return {
        k: (pretrained[k] if k.startswith("stem.") == want_stem else fresh[k])
        for k in pretrained
    }


# ---------------------------------------------------------------------- brain
class FinetuneBrain(ScheduledBrain):
    """Fine-tunes stem + encoder + head on a labelled task.

    Expected ``modules``: ``compute_features`` (waveform -> log-mel),
    ``encoder`` (:class:`~aasp_sb.lobes.encoder.AudioViT`), ``head``
    (:class:`ClassifierHead`); optional ``augment``
    (:class:`~aasp_sb.augment.SpecAugment`) and ``mixup``
    (:class:`~aasp_sb.augment.Mixup`).

    Expected hparams: ``multilabel`` (bool), ``num_classes``, ``lr`` (peak lr
    of the top layer group), ``weight_decay``, ``layer_decay`` (or null),
    ``warmup_epochs``, ``number_of_epochs``, ``epoch_counter``; optional
    ``classes`` (names, for the per-class file), ``min_lr_ratio``,
    ``pooling``, ``token_drop``, ``freeze_stem``, ``freeze_encoder``,
    ``split_folder`` (where test results go), ``task``, ``split_name``,
    ``train_logger``.

    Batches provide ``sig`` and ``label`` (long ``[B, 1]`` indices, or float
    multi-hot ``[B, C]``); optionally ``rel_length`` (real fraction of each
    crop) and ``valid`` (False for a clip that could not be read, left out of
    the metrics).

    Example
    -------
    >>> from aasp_sb.features import Features
    >>> from aasp_sb.lobes.patch import PatchEmbed
    >>> from speechbrain.utils.epoch_loop import EpochCounter
    >>> from speechbrain.dataio.batch import PaddedBatch
    >>> from torch.utils.data import DataLoader
    >>> enc = AudioViT(PatchEmbed(80, 16, 32), 32, depth=1, num_heads=2, max_frames=64)
    >>> modules = {"compute_features": Features(), "encoder": enc,
    ...            "head": ClassifierHead(32, 3)}
    >>> hparams = {"multilabel": False, "num_classes": 3, "lr": 1e-3,
    ...            "weight_decay": 0.05, "layer_decay": 0.75, "warmup_epochs": 0,
    ...            "number_of_epochs": 1, "epoch_counter": EpochCounter(1)}
    >>> brain = FinetuneBrain(modules, torch.optim.AdamW, hparams,
    ...                       run_opts={"noprogressbar": True})
    >>> data = [{"id": str(i), "sig": torch.randn(3200), "label": torch.tensor([i % 3])}
    ...         for i in range(4)]
    >>> loader = DataLoader(data, batch_size=4, collate_fn=PaddedBatch)
    >>> brain.fit(brain.hparams.epoch_counter, loader)
    >>> brain.optimizer_step
    1
    """

    # ---------------------------------------------------------------- set-up
    def on_fit_start(self):
        """Checks the config, freezes what is frozen, builds the optimiser, recovers."""
        check_finetune_hparams(vars(self.hparams))
        set_trainable(
            self.modules.encoder,
            freeze_stem=self._flag("freeze_stem"),
            freeze_encoder=self._flag("freeze_encoder"),
        )
        counts = trainable_summary(
            {k: self.modules[k] for k in ("encoder", "head") if k in self.modules}
        )
        t, n = counts["all"]
        logger.info(
            "Trainable parameters after freezing: %s of %s (%.2f%%; encoder "
            "%s of %s, head %s)%s",
            f"{t:,}", f"{n:,}", 100.0 * t / max(n, 1),
            f"{counts.get('encoder', (0, 0))[0]:,}",
            f"{counts.get('encoder', (0, 0))[1]:,}",
            f"{counts.get('head', (0, 0))[0]:,}",
            " [stem frozen]" if self._flag("freeze_stem") else "",
        )
        self.trainable_counts = counts
        super().on_fit_start()

    def print_trainable_parameters(self):
        """SpeechBrain's parameter count, after the configured freezing.

        ``Brain.__init__`` prints it before ``on_fit_start``: freezing first
        makes its "Trainable Parameters" line true (``freeze_stem``,
        ``freeze_encoder``); :meth:`on_fit_start` logs the per-module count.
        """
        if "encoder" in self.modules and getattr(self, "hparams", None) is not None:
            set_trainable(
                self.modules.encoder,
                freeze_stem=self._flag("freeze_stem"),
                freeze_encoder=self._flag("freeze_encoder"),
            )
        super().print_trainable_parameters()

    def _flag(self, name):
        return bool(getattr(self.hparams, name, False))

    def _encoder(self):
        enc = self.modules.encoder
        return getattr(enc, "module", enc)

    def init_optimizers(self):
        """AdamW (or ``opt_class``) over trainable encoder + head params, layer-wise lr decay.

        Frozen parameters (``requires_grad=False``) are left out. Every group
        carries ``lr_scale = layer_decay ** (depth + 1 - layer_id)``, which
        :class:`~aasp_sb.schedulers.WarmupCosine` applies at every step.
        """
        hp = self.hparams
        trainable = nn.ModuleDict(
            {"encoder": self.modules.encoder, "head": self.modules.head}
        )
        decay = getattr(hp, "layer_decay", None)
        groups = param_groups(
            trainable,
            float(hp.weight_decay),
            lr=float(hp.lr),
            layer_decay=None if decay is None else float(decay),
            num_layers=self._encoder().depth,
        )
        self.build_optimizer(
            groups,
            getattr(hp, "warmup_epochs", 0),
            getattr(hp, "min_lr_ratio", 0.0),
        )

    def on_fit_batch_start(self, batch, should_step):
        """Puts frozen parts back into eval mode (``Brain`` calls ``modules.train()``)."""
        self._eval_frozen()

    def _eval_frozen(self):
        enc = self._encoder()
        if self._flag("freeze_encoder"):
            enc.eval()
        elif self._flag("freeze_stem"):
            enc.stem.eval()

    # --------------------------------------------------------------- forward
    def _targets(self, batch):
        labels = batch.label
        labels = labels.data if hasattr(labels, "data") else labels
        if self.hparams.multilabel:
            return labels.float()
        return labels.reshape(-1).long()

    def compute_forward(self, batch, stage):
        """Mixup (train) -> log-mel -> SpecAugment (train) -> encoder -> pooling -> head."""
        batch = batch.to(self.device)
        wavs, lengths = batch.sig
        if hasattr(batch, "rel_length"):
            lengths = lengths * batch.rel_length.to(lengths.dtype)
        targets = self._targets(batch)
        out = {"targets": targets}
        hp = self.hparams
        train = stage == sb.Stage.TRAIN
        mixup = self.modules["mixup"] if "mixup" in self.modules else None
        if train and mixup is not None and mixup.alpha > 0:
            soft = (
                targets if hp.multilabel else one_hot(targets, hp.num_classes)
            )
            mixed = mixup(wavs, soft.to(wavs.dtype), lengths)
            wavs, lengths = mixed.inputs, mixed.lengths
            out.update(targets=mixed.targets, lam=mixed.lam, perm=mixed.perm)
        feats = self.modules.compute_features(wavs)
        if train and "augment" in self.modules:
            feats = self.modules.augment(feats, lengths)
        if train and getattr(hp, "rrc", False):  # after SpecAugment, as M2D
            feats = self.modules.rrc(feats, lengths)
        out["pooled"] = self.embed(feats, lengths, stage)
        out["logits"] = self.modules.head(out["pooled"])
        return out

    def embed(self, feats, lengths, stage):
        """Pooled clip embeddings (no gradient through a frozen encoder)."""
        hp = self.hparams
        drop = (
            float(getattr(hp, "token_drop", 0.0) or 0.0)
            if stage == sb.Stage.TRAIN
            else 0.0
        )
        pooling = getattr(hp, "pooling", "tokens")
        with torch.set_grad_enabled(
            torch.is_grad_enabled() and not self._flag("freeze_encoder")
        ):
            return encode_pooled(
                self.modules.encoder,
                feats,
                lengths,
                pooling,
                drop,
                token_drop_mode=getattr(hp, "token_drop_mode", "random"),
            )

    def compute_objectives(self, predictions, batch, stage):
        """BCE-with-logits (multi-label) or cross-entropy (soft under mixup); gathers metrics."""
        logits = predictions["logits"].float()
        targets = predictions["targets"]
        if self.hparams.multilabel:
            loss = nn.functional.binary_cross_entropy_with_logits(
                logits, targets.float()
            )
        elif targets.dtype.is_floating_point:  # mixed one-hot targets
            loss = -(targets * logits.log_softmax(-1)).sum(-1).mean()
        else:
            loss = nn.functional.cross_entropy(logits, targets)
        if stage != sb.Stage.TRAIN:
            keep = torch.ones(len(logits), dtype=torch.bool)
            if hasattr(batch, "valid"):
                keep = (
                    torch.as_tensor(batch.valid, dtype=torch.bool)
                    .cpu()
                    .reshape(-1)
                )
            self._skipped_eval += int((~keep).sum())
            ids = [i for i, k in zip(batch.id, keep.tolist()) if k]
            self._eval_logits.append(logits.detach().cpu()[keep])
            self._eval_targets.append(targets.detach().cpu()[keep])
            self._eval_ids.extend(ids)
        return loss

    # ------------------------------------------------------------ stages
    def on_stage_start(self, stage, epoch=None):
        """Resets the metric accumulators; notes the lr the epoch starts with."""
        super().on_stage_start(stage, epoch)
        self._eval_logits, self._eval_targets, self._eval_ids = [], [], []
        self._skipped_eval = 0
        if stage == sb.Stage.TRAIN and hasattr(self, "lr_scheduler"):
            self._epoch_lr = self.lr_scheduler.current_lr

    def compute_metrics(self, per_class=False):
        """Metric of the gathered evaluation outputs (accuracy or mAP).

        Arguments
        ---------
        per_class : bool
            Also return the per-class values (accuracy or AP, ``nan`` where
            undefined) and supports (clips, or positives).

        Returns
        -------
        float, or (float, torch.Tensor, torch.Tensor)
        """
        C = int(self.hparams.num_classes)
        if not self._eval_logits:
            nan = float("nan")
            empty = torch.full((C,), nan, dtype=torch.float64)
            return (nan, empty, torch.zeros(C)) if per_class else nan
        logits = torch.cat(self._eval_logits)
        targets = torch.cat(self._eval_targets)
        if self.hparams.multilabel:
            stats = MultiLabelStats()
            stats.append(self._eval_ids, logits, targets)
            value = float(stats.summarize())
            if per_class:
                return value, stats.per_class_ap, (targets > 0.5).sum(0)
            return value
        value = float(accuracy(logits, targets))
        if per_class:
            return (
                value,
                per_class_accuracy(logits, targets, C),
                torch.bincount(targets, minlength=C),
            )
        return value

    @property
    def metric_name(self):
        """``"mAP"`` for multi-label tasks, ``"accuracy"`` otherwise."""
        return "mAP" if self.hparams.multilabel else "accuracy"

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs; checkpoints (best by validation metric); writes test results."""
        if stage == sb.Stage.TRAIN:
            self.train_loss = float(stage_loss)
            if (
                not getattr(self, "has_valid", True)
                and self.checkpointer is not None
            ):
                self.checkpointer.save_and_keep_only(
                    meta={"epoch": float(epoch), "loss": self.train_loss},
                    max_keys=["epoch"],
                    num_to_keep=1,
                )
            return
        loss = round(float(stage_loss), 5)
        if stage == sb.Stage.VALID:
            value = self.compute_metrics()
            stats = {"loss": loss, self.metric_name: round(value, 5)}
            meta = {
                "metric": float(value) if not math.isnan(value) else -1.0,
                "epoch": float(epoch),
                "loss": float(stage_loss),
            }
            lr = getattr(self, "_epoch_lr", None)
            if hasattr(self.hparams, "train_logger"):
                self.hparams.train_logger.log_stats(
                    stats_meta={"epoch": epoch, "lr": lr},
                    train_stats={
                        "loss": round(
                            getattr(self, "train_loss", float("nan")), 5
                        )
                    },
                    valid_stats=stats,
                )
            self._tensorboard(epoch, lr, stats)
            if self.checkpointer is not None:
                self.checkpointer.save_and_keep_only(
                    meta=meta, max_keys=["metric"], num_to_keep=1
                )
            return
        value, per_class, support = self.compute_metrics(per_class=True)
        self.test_results = self._test_record(value, loss, per_class, support)
        if hasattr(self.hparams, "train_logger"):
            self.hparams.train_logger.log_stats(
                stats_meta={"Epoch loaded": self.test_results["best_epoch"]},
                test_stats={"loss": loss, self.metric_name: round(value, 5)},
            )
        if sb.utils.distributed.if_main_process():
            self._write_test_files(per_class, support)

    def _tensorboard(self, epoch, lr, valid_stats):
        """Epoch curves in ``tensorboard_logger`` (x axis: the epoch, so resumed runs continue)."""
        tb = getattr(self.hparams, "tensorboard_logger", None)
        writer = getattr(tb, "writer", None) if tb is not None else None
        if writer is None:
            return
        writer.add_scalar("train/loss", float(getattr(self, "train_loss", float("nan"))), epoch)
        for key, value in valid_stats.items():
            writer.add_scalar(f"valid/{key}", float(value), epoch)
        if lr is not None:
            writer.add_scalar("epoch/lr", float(lr), epoch)
        writer.flush()

    def on_evaluate_start(self, max_key=None, min_key=None):
        """Restores the best checkpoint and remembers which one it was."""
        self.test_checkpoint = None
        if self.checkpointer is not None:
            if not getattr(self, "has_valid", True) and max_key == "metric":
                max_key = "epoch"
            self.test_checkpoint = self.checkpointer.recover_if_possible(
                max_key=max_key, min_key=min_key
            )

    def _test_record(self, value, loss, per_class, support):
        hp = self.hparams
        ckpt = getattr(self, "test_checkpoint", None)
        meta = dict(ckpt.meta) if ckpt is not None else {}
        best_valid = (
            meta.get("metric") if getattr(self, "has_valid", True) else None
        )
        return {
            "task": getattr(hp, "task", None),
            "split": getattr(hp, "split_name", None),
            "metric": self.metric_name,
            "test": _json_float(value),
            "test_loss": _json_float(loss),
            "best_valid": _json_float(best_valid),
            "best_epoch": int(meta["epoch"]) if "epoch" in meta else None,
            "checkpoint": str(ckpt.path) if ckpt is not None else None,
            "num_test": int(sum(len(t) for t in self._eval_targets)),
            "num_skipped": int(self._skipped_eval),
            "num_classes": int(hp.num_classes),
            "pretrained_path": getattr(hp, "pretrained_path", None),
            "protocol": getattr(hp, "protocol", "clean"),
            "selection": SELECTION.get(getattr(hp, "selection", "clean")),
            "optimistic": getattr(hp, "selection", "clean") == "evar_holdout",
            "debug": bool(self.debug),
        }

    def _write_test_files(self, per_class, support):
        folder = getattr(self.hparams, "split_folder", None)
        if not folder:
            return
        os.makedirs(folder, exist_ok=True)
        classes = list(getattr(self.hparams, "classes", None) or [])
        C = int(self.hparams.num_classes)
        if len(classes) != C:
            classes = [str(i) for i in range(C)]
        column = "AP" if self.hparams.multilabel else "accuracy"
        count = "positives" if self.hparams.multilabel else "clips"
        path = os.path.join(folder, "test_per_class.csv")
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["index", "class", column, count])
            for i, name in enumerate(classes):
                v = float(per_class[i])
                writer.writerow(
                    [
                        i,
                        name,
                        "" if math.isnan(v) else f"{v:.6f}",
                        int(support[i]),
                    ]
                )
        with open(
            os.path.join(folder, "results.json"), "w", encoding="utf-8"
        ) as f:
            json.dump(self.test_results, f, indent=2)
        logger.info(
            "Test %s = %.4f (%d clips); results in %s",
            self.metric_name,
            self.test_results["test"] or float("nan"),
            self.test_results["num_test"],
            folder,
        )


def _json_float(x):
    """Plain float, or None for missing / nan values (strict JSON)."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x
