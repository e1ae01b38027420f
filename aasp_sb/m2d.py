"""M2D's published checkpoints as our encoder (and teacher).

M2D (Niizumi et al., nttcslab/m2d) releases ``checkpoint-*.pth`` files whose
``model`` entry is the state dict of its ``M2DViT``: the online encoder
(``patch_embed.proj``, ``cls_token``, ``pos_embed`` -- fixed sin-cos with a zero
CLS position --, ``blocks.<i>`` timm blocks with a fused ``attn.qkv``, ``norm``),
the EMA target encoder (``target_blocks.<i>``, ``target_norm``; it shares the
online patch embedding, CLS token and positions) and the decoder
(``decoder_*``, ``mask_token``), plus, in recent releases, ``norm_stats`` (the
log-mel mean and std it was trained with). Its encoder is ours with two
differences that :class:`~aasp_sb.lobes.encoder.AudioViT` represents as
options: a CLS token that takes part in attention and is dropped from the
outputs (``cls_token=True``), and the sin-cos channels in MAE's order, time
half first (``pos_layout="time_freq"``). LayerNorm eps 1e-6 and qkv bias are
the same.

:func:`convert_m2d_state` maps the online encoder to our stem + ``AudioViT``
keys (``qkv`` split into our ``q`` and ``kv``) and the target encoder to the
teacher's; every key is either used or a known decoder key, so nothing is
silently ignored, and a missing key or wrong shape is refused by name.
:func:`m2d_encoder` builds the encoder with the weights loaded.

Example
-------
>>> state = fake_m2d_state(embed_dim=32, depth=2, grid=(5, 4))
>>> enc, info = m2d_encoder(state, num_heads=4)
>>> info.input_size, enc.cls_token is not None, enc.pos_layout
((80, 64), True, 'time_freq')
"""

import argparse
import logging
import math
import pathlib
import re
from typing import NamedTuple, Optional, Tuple

import torch

from aasp_sb.lobes.encoder import AudioViT
from aasp_sb.lobes.layers import sincos_pos_embed_2d
from aasp_sb.lobes.patch import PatchEmbed

logger = logging.getLogger(__name__)

BLOCK_PARTS = (
    "norm1.weight",
    "norm1.bias",
    "attn.proj.weight",
    "attn.proj.bias",
    "norm2.weight",
    "norm2.bias",
    "mlp.fc1.weight",
    "mlp.fc1.bias",
    "mlp.fc2.weight",
    "mlp.fc2.bias",
)
DECODER_PREFIXES = ("decoder_", "mask_token")
M2D_STATS = (-7.1, 4.2)  # M2D's AudioSet log-mel statistics (its default)


class M2DError(ValueError):
    """An M2D checkpoint that does not fit (names the file and the key)."""


class M2DInfo(NamedTuple):
    """What a checkpoint says about itself.

    input_size: ``(n_mels, frames)`` of pre-training; patch_size: ``(pf, pt)``;
    embed_dim, depth, mlp_hidden (MLP width); norm_stats: ``(mean, std)`` of the log-mel (M2D's
    AudioSet default when the file has none); has_target: whether the EMA
    target encoder is there; source: the file.
    """

    input_size: Tuple[int, int]
    patch_size: Tuple[int, int]
    embed_dim: int
    depth: int
    mlp_hidden: int
    norm_stats: Tuple[float, float]
    has_target: bool
    source: Optional[str] = None


def read_m2d_checkpoint(path):
    """Loads an M2D ``.pth`` safely (``weights_only=True``) and returns its state dict.

    M2D's training script saves its ``argparse.Namespace`` next to the
    weights; that one class is allowed, nothing else that is not a tensor or
    a plain container.

    Arguments
    ---------
    path : str or pathlib.Path
        ``checkpoint-*.pth`` (a full training checkpoint with ``model``) or an
        encoder-only state dict.

    Returns
    -------
    tuple
        ``(state_dict, norm_stats or None)``.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise M2DError(f"M2D checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling refused or corrupt file
        raise M2DError(f"cannot read M2D checkpoint {path}: {err}") from None
    if not isinstance(ckpt, dict):
        raise M2DError(f"{path} holds a {type(ckpt).__name__}, not a state dict")
    stats = ckpt.get("norm_stats")
    state = ckpt.get("model", ckpt)
    if not isinstance(state, dict):
        raise M2DError(f"{path}: its `model` entry is not a state dict")
    stats = state.get("norm_stats", stats)
    return dict(state), stats


def parse_folder_name(name):
    """``m2d_vit_base-80x608p16x16-...`` -> ``((80, 608), (16, 16))`` or None.

    Example
    -------
    >>> parse_folder_name("m2d_vit_base-80x608p16x16-221006-mr7")
    ((80, 608), (16, 16))
    """
    m = re.search(r"-(\d+)x(\d+)p(\d+)x(\d+)", name)
    if not m:
        return None
    a, b, c, d = (int(v) for v in m.groups())
    return (a, b), (c, d)


def _stats(value):
    if value is None:
        return M2D_STATS
    vals = torch.as_tensor(value, dtype=torch.float64).flatten().tolist()
    if len(vals) != 2 or not vals[1] > 0:
        raise M2DError(f"norm_stats must be (mean, std > 0), got {value}")
    return float(vals[0]), float(vals[1])


def describe(state, source=None, n_mels=None, norm_stats=None):
    """Reads sizes from the tensors (and the folder name, when it has them).

    Arguments
    ---------
    state : dict
        M2D state dict.
    source : str, optional
        File the state came from (named in errors; its folder name may give
        the input size).
    n_mels : int, optional
        Mel bins, when neither the folder name nor 80 applies.
    norm_stats : sequence, optional
        ``(mean, std)`` found in the checkpoint.

    Returns
    -------
    M2DInfo
    """
    where = source or "the M2D state dict"
    for key in ("patch_embed.proj.weight", "pos_embed", "norm.weight"):
        if key not in state:
            raise M2DError(f"{where} has no `{key}`: not an M2D encoder checkpoint")
    w = state["patch_embed.proj.weight"]
    if w.ndim != 4 or w.shape[1] != 1:
        raise M2DError(f"{where}: `patch_embed.proj.weight` has shape {tuple(w.shape)}, "
                       "expected [D, 1, pf, pt]")
    D, _, pf, pt = w.shape
    depth = 1 + max(
        (int(k.split(".")[1]) for k in state if k.startswith("blocks.")), default=-1
    )
    if depth < 1:
        raise M2DError(f"{where} has no `blocks.<i>` keys")
    named = parse_folder_name(pathlib.Path(source).parent.name) if source else None
    F = named[0][0] if named else (n_mels or 80)
    if F % pf:
        raise M2DError(f"{where}: {F} mel bins are not a multiple of the patch height {pf}")
    num = state["pos_embed"].shape[1] - 1
    Fp = F // pf
    if num % Fp:
        raise M2DError(f"{where}: `pos_embed` holds {num} patch positions, not a "
                       f"multiple of {Fp} rows ({F} mels / {pf})")
    frames = (num // Fp) * pt
    if named and named[0][1] != frames:
        raise M2DError(f"{where}: the folder name says {named[0][1]} frames, "
                       f"`pos_embed` {frames}")
    has_target = any(k.startswith("target_blocks.") for k in state)
    fc1 = state.get("blocks.0.mlp.fc1.weight")
    hidden = int(fc1.shape[0]) if fc1 is not None else 4 * int(D)
    return M2DInfo((F, frames), (pf, pt), int(D), depth, hidden, _stats(norm_stats),
                   has_target, None if source is None else str(source))


def _take(state, key, shape, where, used):
    if key not in state:
        raise M2DError(f"{where} has no `{key}`")
    t = state[key]
    if tuple(t.shape) != tuple(shape):
        raise M2DError(f"{where}: `{key}` has shape {tuple(t.shape)}, expected {tuple(shape)}")
    used.add(key)
    return t


def _encoder_keys(state, info, blocks, norm, where, used, prefix=""):
    """Our encoder's state (``prefix`` + names) from M2D's ``blocks`` / ``norm`` keys."""
    D, hidden = info.embed_dim, info.mlp_hidden
    shapes = {
        "norm1.weight": (D,), "norm1.bias": (D,), "attn.proj.weight": (D, D),
        "attn.proj.bias": (D,), "norm2.weight": (D,), "norm2.bias": (D,),
        "mlp.fc1.weight": (hidden, D), "mlp.fc1.bias": (hidden,),
        "mlp.fc2.weight": (D, hidden), "mlp.fc2.bias": (D,),
    }
    out = {}
    for i in range(info.depth):
        src = f"{blocks}.{i}"
        for part in BLOCK_PARTS:
            out[f"{prefix}blocks.{i}.{part}"] = _take(state, f"{src}.{part}", shapes[part], where, used)
        qkv_w = _take(state, f"{src}.attn.qkv.weight", (3 * D, D), where, used)
        qkv_b = _take(state, f"{src}.attn.qkv.bias", (3 * D,), where, used)
        out[f"{prefix}blocks.{i}.attn.q.weight"] = qkv_w[:D]
        out[f"{prefix}blocks.{i}.attn.kv.weight"] = qkv_w[D:]
        out[f"{prefix}blocks.{i}.attn.q.bias"] = qkv_b[:D]
        out[f"{prefix}blocks.{i}.attn.kv.bias"] = qkv_b[D:]
    out[f"{prefix}norm.weight"] = _take(state, f"{norm}.weight", (D,), where, used)
    out[f"{prefix}norm.bias"] = _take(state, f"{norm}.bias", (D,), where, used)
    return out


def convert_m2d_state(state, info, source=None):
    """M2D keys -> our keys for the student encoder and (if present) the teacher.

    Arguments
    ---------
    state : dict
        M2D state dict (``model`` of a ``checkpoint-*.pth``).
    info : M2DInfo
        From :func:`describe`.
    source : str, optional
        Named in errors.

    Returns
    -------
    tuple
        ``(encoder_state, teacher_state or None)``: state dicts of
        :class:`AudioViT` (stem ``PatchEmbed``, ``cls_token=True``) with our
        key names. The teacher's has the same keys (the EMA encoder: target
        blocks and norm, and the shared patch embedding and CLS token).

    Raises
    ------
    M2DError
        For a missing key, a wrong shape, a ``pos_embed`` that is not M2D's
        fixed sin-cos table, or a key that is neither used nor a known
        decoder key.
    """
    where = source or info.source or "the M2D state dict"
    D, (pf, pt) = info.embed_dim, info.patch_size
    used = set()
    stem = {
        "stem.proj.weight": _take(state, "patch_embed.proj.weight", (D, 1, pf, pt), where, used),
        "stem.proj.bias": _take(state, "patch_embed.proj.bias", (D,), where, used),
        "cls_token": _take(state, "cls_token", (1, 1, D), where, used),
    }
    Fp, Tp = info.input_size[0] // pf, info.input_size[1] // pt
    pos = _take(state, "pos_embed", (1, 1 + Fp * Tp, D), where, used)[0].float()
    expected = sincos_pos_embed_2d(D, Fp, Tp, time_first=True)
    err = max(pos[0].abs().max().item(), (pos[1:] - expected).abs().max().item())
    if err > 1e-4:
        raise M2DError(
            f"{where}: `pos_embed` is not M2D's fixed sin-cos table (max difference "
            f"{err:.3g}); learned or interpolated positions are not supported"
        )
    encoder = dict(stem)
    encoder.update(_encoder_keys(state, info, "blocks", "norm", where, used))
    teacher = None
    if info.has_target:
        teacher = dict(stem)
        teacher.update(_encoder_keys(state, info, "target_blocks", "target_norm", where, used))
    left = sorted(
        k for k in state
        if k not in used and k != "norm_stats" and not k.startswith(DECODER_PREFIXES)
    )
    if left:
        shown = ", ".join(f"`{k}`" for k in left[:8]) + (" ..." if len(left) > 8 else "")
        raise M2DError(f"{where}: {len(left)} key(s) fit nothing in the encoder: {shown}")
    return encoder, teacher


def load_m2d(source, n_mels=None):
    """Reads an M2D checkpoint file or state dict and describes it.

    Arguments
    ---------
    source : str, pathlib.Path or dict
        ``checkpoint-*.pth`` (its folder name may give the input size) or the
        state dict itself.
    n_mels : int, optional
        See :func:`describe`.

    Returns
    -------
    tuple
        ``(state_dict, M2DInfo)``; ``info.source`` names the file (None for a dict).
    """
    if isinstance(source, dict):
        return source, describe(source, None, n_mels, source.get("norm_stats"))
    state, stats = read_m2d_checkpoint(source)
    return state, describe(state, str(source), n_mels, stats)


def build_m2d_encoder(info, num_heads=None, long_inputs="chunk", stem=None):
    """An :class:`AudioViT` shaped like the checkpoint (weights not loaded).

    Arguments
    ---------
    info : M2DInfo
    num_heads : int, optional
        Attention heads (default ``embed_dim // 64``, M2D's ViT-B: 12).
    long_inputs : str
        ``"chunk"`` (M2D's runtime) or ``"extend"`` (M2D's fine-tuning).
    stem : torch.nn.Module, optional
        Another stem (e.g. AaPE with the same width and patch size) in place
        of the plain one; its ``proj`` takes M2D's patch embedding.

    Returns
    -------
    AudioViT
    """
    D = info.embed_dim
    heads = num_heads or max(1, D // 64)
    stem = stem if stem is not None else PatchEmbed(info.input_size[0], info.patch_size, D)
    return AudioViT(
        stem, D, info.depth, heads, mlp_ratio=info.mlp_hidden / D, max_frames=info.input_size[1],
        long_inputs=long_inputs, cls_token=True, pos_layout="time_freq",
    )


def m2d_encoder(source, num_heads=None, which="online", n_mels=None, long_inputs="chunk"):
    """Builds our encoder from an M2D checkpoint file or state dict.

    Arguments
    ---------
    source : str, pathlib.Path or dict
        ``checkpoint-*.pth`` (its folder name may give the input size) or the
        state dict itself.
    num_heads : int, optional
        See :func:`build_m2d_encoder`.
    which : str
        ``"online"`` (M2D's runtime uses it) or ``"target"`` (the EMA encoder).
    n_mels : int, optional
        Mel bins if not 80 and not in the folder name.
    long_inputs : str
        See :func:`build_m2d_encoder`.

    Returns
    -------
    tuple
        ``(AudioViT in eval mode, M2DInfo)``.
    """
    state, info = load_m2d(source, n_mels)
    name = info.source
    enc_state, teacher_state = convert_m2d_state(state, info, name)
    if which not in ("online", "target"):
        raise ValueError(f"which must be 'online' or 'target', got {which!r}")
    if which == "target":
        if teacher_state is None:
            raise M2DError(f"{name or 'the M2D state dict'} has no target encoder "
                           "(`target_blocks.*`): an encoder-only checkpoint")
        enc_state = teacher_state
    encoder = build_m2d_encoder(info, num_heads, long_inputs)
    encoder.load_state_dict(enc_state, strict=True)
    logger.info("Loaded M2D %s encoder from %s (%d blocks, %d-d, input %dx%d, norm_stats %s)",
                which, name or "a state dict", info.depth, info.embed_dim, *info.input_size,
                info.norm_stats)
    return encoder.eval(), info


def fake_m2d_state(embed_dim=768, depth=12, grid=(5, 38), patch=(16, 16), hidden=None,
                   decoder_dim=16, target=True, seed=0):
    """A random state dict with M2D's exact key names and shapes (tests, examples).

    Arguments
    ---------
    embed_dim, depth : int
        Encoder size.
    grid : tuple
        ``(Fp, Tp)`` of pre-training (base 80x608 p16: ``(5, 38)``).
    patch : tuple
        ``(pf, pt)``.
    hidden : int, optional
        MLP width (default ``4 * embed_dim``).
    decoder_dim : int
        Width of the (ignored) decoder entries.
    target : bool
        Include the EMA target encoder.
    seed : int
        Random seed.

    Returns
    -------
    dict
    """
    g = torch.Generator().manual_seed(seed)
    D, H = embed_dim, hidden or 4 * embed_dim
    Fp, Tp = grid

    def rnd(*shape, scale=0.02):
        return torch.randn(*shape, generator=g) * scale

    def blocks(prefix):
        out = {}
        for i in range(depth):
            p = f"{prefix}.{i}."
            out.update({
                p + "norm1.weight": 1 + rnd(D), p + "norm1.bias": rnd(D),
                p + "attn.qkv.weight": rnd(3 * D, D, scale=1 / math.sqrt(D)),
                p + "attn.qkv.bias": rnd(3 * D),
                p + "attn.proj.weight": rnd(D, D, scale=1 / math.sqrt(D)),
                p + "attn.proj.bias": rnd(D),
                p + "norm2.weight": 1 + rnd(D), p + "norm2.bias": rnd(D),
                p + "mlp.fc1.weight": rnd(H, D, scale=1 / math.sqrt(D)), p + "mlp.fc1.bias": rnd(H),
                p + "mlp.fc2.weight": rnd(D, H, scale=1 / math.sqrt(H)), p + "mlp.fc2.bias": rnd(D),
            })
        return out

    pos = torch.cat([torch.zeros(1, D), sincos_pos_embed_2d(D, Fp, Tp, time_first=True)])
    state = {
        "cls_token": rnd(1, 1, D),
        "pos_embed": pos[None],
        "patch_embed.proj.weight": rnd(D, 1, *patch, scale=1 / 16),
        "patch_embed.proj.bias": rnd(D),
        **blocks("blocks"),
        "norm.weight": 1 + rnd(D), "norm.bias": rnd(D),
        "mask_token": rnd(1, 1, decoder_dim),
        "decoder_embed.weight": rnd(decoder_dim, D), "decoder_embed.bias": rnd(decoder_dim),
        "decoder_pos_embed": torch.zeros(1, 1 + Fp * Tp, decoder_dim),
        "decoder_norm.weight": torch.ones(decoder_dim), "decoder_norm.bias": torch.zeros(decoder_dim),
        "decoder_pred.weight": rnd(D, decoder_dim), "decoder_pred.bias": rnd(D),
    }
    if target:
        state.update(blocks("target_blocks"))
        state["target_norm.weight"] = 1 + rnd(D)
        state["target_norm.bias"] = rnd(D)
    return state


def init_from_m2d(encoder, source, teacher=None, n_mels=None):
    """Starts our encoder (and EMA teacher) from an M2D checkpoint, for continued pre-training.

    The student's blocks, final norm and CLS token take M2D's online encoder;
    the stem's standard branch (``stem.proj``, AaPE's or the plain stem's)
    takes M2D's patch embedding; anything else in the stem (AaPE's alias
    branch) keeps its fresh initialisation. The teacher becomes a copy of
    that student with M2D's EMA target encoder in the blocks and norm (M2D's
    target shares the online patch embedding and CLS token); without a
    target encoder in the file, a copy of the student.

    Arguments
    ---------
    encoder : AudioViT
        Built with ``cls_token=True`` and ``pos_layout="time_freq"`` and the
        checkpoint's width, depth, patch size and input length.
    source : str, pathlib.Path, dict or tuple
        M2D checkpoint or state dict, or what :func:`load_m2d` returned.
    teacher : torch.nn.Module, optional
        An :class:`~aasp_sb.lobes.teacher.EMATeacher` (or ``MaskedTeacher``)
        of ``encoder``.
    n_mels : int, optional
        See :func:`describe`.

    Returns
    -------
    M2DInfo
        What was loaded (``norm_stats`` included, for the front end).

    Example
    -------
    >>> from aasp_sb.lobes.aape import AaPE
    >>> state = fake_m2d_state(embed_dim=32, depth=2, grid=(5, 4))
    >>> info = describe(state)
    >>> enc = build_m2d_encoder(info, num_heads=4, stem=AaPE(80, 16, 32, num_modes=2))
    >>> init_from_m2d(enc, state).depth
    2
    >>> bool(torch.equal(enc.stem.proj.weight, state["patch_embed.proj.weight"]))
    True
    """
    state, info = source if isinstance(source, tuple) else load_m2d(source, n_mels)
    name = info.source
    where = name or "the M2D state dict"
    enc_state, tgt_state = convert_m2d_state(state, info, name)
    if encoder.cls_token is None or encoder.pos_layout != "time_freq":
        raise M2DError(
            f"{where}: M2D weights need an encoder built with cls_token=True and "
            "pos_layout='time_freq' (YAML keys `m2d_cls_token: True`, "
            "`pos_layout: time_freq`; see hparams/aasp_base_from_m2d.yaml)"
        )
    if (encoder.max_frames, encoder.patch_size) != (info.input_size[1], info.patch_size):
        raise M2DError(
            f"{where}: pre-trained on {info.input_size[1]} frames with patches "
            f"{info.patch_size}, the encoder has max_frames={encoder.max_frames} "
            f"(`crop_frames`) and patch_size={encoder.patch_size}"
        )
    _load_partial(encoder, enc_state, where)
    if teacher is not None:
        module = getattr(teacher, "module", teacher)
        module.load_state_dict(encoder.state_dict())
        if tgt_state is not None:
            _load_partial(module, tgt_state, where)
    logger.info(
        "Initialised from M2D %s: blocks, norm, CLS token and the stem's standard "
        "branch%s; %s", where, " (teacher: target encoder)" if tgt_state is not None and
        teacher is not None else "", "the rest of the stem is fresh" if
        any(k.startswith("stem.") and k not in enc_state for k in encoder.state_dict())
        else "nothing else to initialise")
    return info


def _load_partial(encoder, state, where):
    """Loads ``state``; only stem entries other than ``stem.proj`` may stay as they are."""
    ours = encoder.state_dict()
    for key, value in state.items():
        if key not in ours:
            raise M2DError(f"{where}: our encoder has no `{key}` (converted from M2D)")
        if ours[key].shape != value.shape:
            raise M2DError(f"{where}: `{key}` is {tuple(value.shape)} in M2D, "
                           f"{tuple(ours[key].shape)} in our encoder (check the YAML sizes)")
    missing = [k for k in ours if k not in state and not k.startswith("stem.")]
    if missing:
        raise M2DError(f"{where}: M2D has nothing for our `{missing[0]}`"
                       + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
    encoder.load_state_dict(state, strict=False)


def apply_init_from(hparams):
    """The pre-training recipe's ``init_from`` key: start from an M2D checkpoint.

    Runs before training (a resumed run's own checkpoint then takes over, as
    SpeechBrain recovers after this). Refuses a front end whose statistics
    differ from the ones the checkpoint was trained with, naming the keys.

    Arguments
    ---------
    hparams : dict
        Loaded pre-training hyper-parameters (``encoder``, ``teacher``,
        ``init_from``, ``norm_mean``, ``norm_std``).

    Returns
    -------
    M2DInfo or None
        None when ``init_from`` is empty.
    """
    source = hparams.get("init_from")
    if not source:
        return None
    state, info = load_m2d(source, hparams.get("n_mels"))
    want = (float(hparams.get("norm_mean", -7.1)), float(hparams.get("norm_std", 4.2)))
    if any(abs(a - b) > 1e-3 for a, b in zip(info.norm_stats, want)):
        raise M2DError(
            f"init_from: {source} was trained with log-mel statistics {info.norm_stats}, "
            f"the YAML has norm_mean/norm_std {want}: pass --norm_mean={info.norm_stats[0]} "
            f"--norm_std={info.norm_stats[1]}"
        )
    return init_from_m2d(hparams["encoder"], (state, info), hparams.get("teacher"))


def is_m2d_checkpoint(path):
    """True for a ``.pth`` file (M2D's format; our runs write ``.ckpt`` files and folders).

    Example
    -------
    >>> is_m2d_checkpoint("m2d_vit_base-80x608p16x16-221006/checkpoint-300.pth")
    True
    >>> is_m2d_checkpoint("results/aasp_base/1986")
    False
    """
    return str(path).endswith(".pth")


def m2d_pretrained_parts(path, which="student", num_heads=None):
    """An M2D checkpoint as :class:`~aasp_sb.pretrained.PretrainedParts` (fine-tuning).

    The hyper-parameters carry the model keys a fine-tuning YAML mirrors
    (``use_aape: False``, ``cls_token: True``, ``pos_layout: time_freq``, the
    sizes, M2D's front end and the checkpoint's ``norm_stats``), so the
    fine-tuning recipe builds M2D's encoder and checks it computes what the
    checkpoint's does before loading the weights.

    Arguments
    ---------
    path : str or pathlib.Path
        ``checkpoint-*.pth``.
    which : str
        ``"student"`` (M2D's online encoder, what its fine-tuning uses) or
        ``"teacher"`` (the EMA target encoder).
    num_heads : int, optional
        See :func:`build_m2d_encoder`.

    Returns
    -------
    PretrainedParts
    """
    from aasp_sb.features import M2D_FRONT_END, Features, LogMel, Normalize
    from aasp_sb.pretrained import PretrainedParts

    m2d_which = {"student": "online", "teacher": "target"}.get(which, which)
    encoder, info = m2d_encoder(path, num_heads=num_heads, which=m2d_which)
    mean, std = info.norm_stats
    features = Features(LogMel(n_mels=info.input_size[0]), Normalize(mean, std))
    pf, pt = info.patch_size
    hparams = {
        "sample_rate": 16000,
        "n_mels": info.input_size[0],
        **{k: v for k, v in M2D_FRONT_END.items() if k in ("mel_scale", "mel_norm")},
        "use_aape": False,
        "embed_dim": info.embed_dim,
        "depth": info.depth,
        "num_heads": int(encoder.blocks[0].attn.num_heads),
        "patch_size": pf if pf == pt else [pf, pt],
        "cls_token": True,
        "pos_layout": "time_freq",
        "norm_mean": mean,
        "norm_std": std,
    }
    return PretrainedParts(features.eval(), encoder, hparams, pathlib.Path(path))
