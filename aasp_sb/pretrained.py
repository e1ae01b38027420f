"""Rebuilds a pre-trained (or fine-tuned) AaSP encoder from a run folder or checkpoint.

A pre-training run folder (``recipes/pretrain/train.py``'s ``output_folder``)
holds ``hyperparams.yaml`` (the YAML with its overrides, as SpeechBrain saves
it) and ``save/CKPT+*/`` checkpoints with ``encoder.ckpt`` (the student,
used downstream as M2D does) and ``teacher.ckpt`` (the EMA teacher).

:func:`load_pretrained` accepts the run folder, its ``save`` folder, one
``CKPT+*`` folder, or an ``encoder.ckpt`` file next to which (or two levels
up) a ``hyperparams.yaml`` is found. Weights are read with
``torch.load(weights_only=True)``; a checkpoint from another architecture
gives one error naming the file and the mismatching keys.

Front end: a model is always embedded with the front end it was trained
with. Run YAMLs record it (top-level ``mel_scale`` / ``mel_norm``, passed to
:class:`aasp_sb.features.LogMel`). A run made before these keys existed was
trained with torchaudio's defaults (HTK mel scale, no filter normalisation,
:data:`aasp_sb.features.LEGACY_FRONT_END`), not M2D's: :func:`load_yaml`
recognises such a YAML (no ``mel_scale`` key anywhere, see
:func:`pin_legacy_front_end`), builds its ``LogMel`` with those settings and
logs one INFO line saying so.
"""

import logging
import pathlib
import re
from typing import NamedTuple

import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.checkpoints import Checkpointer

from aasp_sb.checkpoints import safe_torch_load
from aasp_sb.features import LEGACY_FRONT_END

logger = logging.getLogger(__name__)

WHICH = {"student": "encoder.ckpt", "teacher": "teacher.ckpt"}

#: Top-level keys of a pre-training YAML that define the model (front end
#: included); the fine-tuning YAMLs have the same keys (plus ``max_frames``,
#: ``norm_mean`` and ``norm_std``, read from the built modules).
ARCH_KEYS = (
    "sample_rate",
    "n_mels",
    "mel_scale",
    "mel_norm",
    "use_aape",
    "embed_dim",
    "depth",
    "num_heads",
    "patch_size",
    "aape_modes",
    "aape_fusion",
    "aape_gate_init",
    "cls_token",
    "pos_layout",
)


class PretrainedParts(NamedTuple):
    """What :func:`load_pretrained` returns.

    features: waveform -> normalised log-mel module.
    encoder: :class:`~aasp_sb.lobes.encoder.AudioViT` with the loaded weights (eval mode).
    hparams: the run's loaded hyper-parameters (dict).
    checkpoint: path of the weights file used.
    """

    features: torch.nn.Module
    encoder: torch.nn.Module
    hparams: dict
    checkpoint: pathlib.Path


def find_hparams(path):
    """Finds the run's ``hyperparams.yaml`` at or above ``path`` (up to 3 levels).

    Arguments
    ---------
    path : str or pathlib.Path
        Run folder, save folder, checkpoint folder or weights file.

    Returns
    -------
    pathlib.Path
    """
    path = pathlib.Path(path).resolve()
    start = path if path.is_dir() else path.parent
    for folder in [start, *list(start.parents)[:3]]:
        candidate = folder / "hyperparams.yaml"
        if candidate.exists():
            return candidate
    raise FileNotFoundError(
        f"No hyperparams.yaml found at or above {path}: pass a pre-training "
        "output folder (or a checkpoint inside one), or give the YAML explicitly"
    )


def find_weights(path, which="student"):
    """Resolves the weights file for ``path``.

    In a run folder: the checkpoint with the highest ``metric`` (fine-tuning
    runs keep their best-on-validation one under that key, the checkpoint
    :class:`~aasp_sb.classify.AudioClassifier` loads), otherwise the newest
    (pre-training runs).

    Arguments
    ---------
    path : str or pathlib.Path
        Run folder, save folder, ``CKPT+*`` folder or a weights file.
    which : str
        ``"student"`` (``encoder.ckpt``) or ``"teacher"`` (``teacher.ckpt``).

    Returns
    -------
    pathlib.Path
    """
    if which not in WHICH:
        raise ValueError(f"which must be one of {tuple(WHICH)}, got {which!r}")
    path = pathlib.Path(path)
    if path.is_file():
        return path
    fname = WHICH[which]
    if (path / fname).exists():
        return path / fname
    for save in (path / "save", path):
        if save.is_dir():
            finder = Checkpointer(save)
            # fine-tuning runs: best on validation (as AudioClassifier); else newest
            ckpt = finder.find_checkpoint(max_key="metric") or finder.find_checkpoint()
            if ckpt is not None and (ckpt.path / fname).exists():
                return ckpt.path / fname
    raise FileNotFoundError(f"No {fname} checkpoint found under {path}")


def load_state(module, state, source):
    """Loads ``state`` into ``module`` or raises one error naming ``source`` and the mismatch.

    Arguments
    ---------
    module : torch.nn.Module
        Target module.
    state : dict
        State dict (``module.``-prefixed teacher states are accepted).
    source : str or pathlib.Path
        File the state came from (for the message).
    """
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(
                f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
            )
        if shapes:
            parts.append(f"shape mismatches {shapes[:5]}")
        raise ValueError(
            f"Checkpoint {source} does not fit this architecture ("
            + "; ".join(parts)
            + "): check `use_aape`, `embed_dim`, `depth`, `n_mels` and "
            "`patch_size` against the run that produced it"
        )
    module.load_state_dict(state)


def load_pretrained(
    source, which="student", hparams_file=None, overrides=None, device="cpu"
):
    """Builds the run's front end and encoder and loads the trained weights.

    Arguments
    ---------
    source : str or pathlib.Path
        Run folder, save folder, ``CKPT+*`` folder or weights file.
    which : str
        ``"student"`` (default, the online encoder) or ``"teacher"`` (EMA).
    hparams_file : str, optional
        YAML to build the model from (default: the run's ``hyperparams.yaml``).
    overrides : dict, optional
        YAML overrides (e.g. ``{"data_folder": "unused"}``).
    device : str
        Device for the returned modules.

    Returns
    -------
    PretrainedParts
    """
    yaml_path = pathlib.Path(hparams_file) if hparams_file else find_hparams(source)
    weights = find_weights(source, which)
    hparams = load_yaml(yaml_path, overrides)
    encoder = hparams["encoder"]
    load_state(encoder, safe_torch_load(weights), weights)
    features = hparams["compute_features"]
    logger.info("Loaded %s weights from %s", which, weights)
    return PretrainedParts(
        features.to(device).eval(), encoder.to(device).eval(), hparams, weights
    )


def load_yaml(path, overrides=None):
    """Loads a model YAML; ``data_folder`` placeholders are filled with a dummy.

    Arguments
    ---------
    path : str or pathlib.Path
        The YAML file.
    overrides : dict, optional
        Extra overrides.

    Returns
    -------
    dict
    """
    text = pathlib.Path(path).read_text(encoding="utf-8")
    merged = {}
    if "!PLACEHOLDER" in text:
        merged["data_folder"] = "unused"
    merged.update(overrides or {})
    for key in ("encoder", "compute_features"):
        if not any(line.startswith(f"{key}:") for line in text.splitlines()):
            raise ValueError(f"{path} has no top-level `{key}` key")
    text, legacy = pin_legacy_front_end(text, path)
    if legacy:
        logger.info(
            "%s has no `mel_scale` key (made before the M2D front end): building its "
            "LogMel with the settings it was trained with (mel_scale=%r, mel_norm=%r); "
            "if it was trained with the M2D front end, add `mel_scale: slaney` and "
            "`mel_norm: slaney` to it",
            path,
            LEGACY_FRONT_END["mel_scale"],
            LEGACY_FRONT_END["mel_norm"],
        )
    return load_hyperpyyaml(text, merged or None)


LOGMEL_TAG = "!new:aasp_sb.features.LogMel"
_LOGMEL_NODE = re.compile(
    r"^(?P<indent> *)[^\s#][^:#]*:\s*" + re.escape(LOGMEL_TAG) + r"\s*(#.*)?$"
)
_TOP_FRONT_END_KEY = re.compile(r"^(mel_scale|mel_norm)\s*:", re.MULTILINE)
_FIRST_TOP_KEY = re.compile(r"^[^\s#%-]", re.MULTILINE)


def pin_legacy_front_end(text, source="the YAML"):
    r"""Makes a YAML from before the M2D front end build the front end it was trained with.

    A YAML is taken to predate the M2D front end when it has no top-level
    ``mel_scale`` / ``mel_norm`` key and none of its
    ``!new:aasp_sb.features.LogMel`` nodes passes ``mel_scale`` or
    ``mel_norm``: it was run when ``LogMel`` had torchaudio's defaults. Then
    the top-level keys of :data:`aasp_sb.features.LEGACY_FRONT_END` are added
    (so the loaded hyper-parameters, fine-tuning overrides and exports carry
    them) and every ``LogMel`` node gets ``mel_scale: !ref <mel_scale>`` and
    ``mel_norm: !ref <mel_norm>``. Any other YAML is returned unchanged.

    Arguments
    ---------
    text : str
        YAML text (a run's ``hyperparams.yaml`` or a model YAML).
    source : str or pathlib.Path
        Named in the error message.

    Returns
    -------
    tuple
        ``(text, legacy)``: the (possibly) rewritten text and whether it was
        a legacy YAML.

    Raises
    ------
    ValueError
        When a legacy YAML builds ``LogMel`` in a form other than a block
        mapping (the settings cannot be added safely).

    Example
    -------
    >>> old = "n_mels: 80\nfe: !new:aasp_sb.features.LogMel\n    n_mels: !ref <n_mels>\n"
    >>> new, legacy = pin_legacy_front_end(old)
    >>> legacy
    True
    >>> from hyperpyyaml import load_hyperpyyaml
    >>> fe = load_hyperpyyaml(new)["fe"]
    >>> fe.mel_scale, fe.mel_norm
    ('htk', None)
    >>> pin_legacy_front_end(new)[1]  # already pinned
    False
    >>> pin_legacy_front_end("mel_scale: slaney\n" + old)[1]
    False
    """
    if LOGMEL_TAG not in text or _TOP_FRONT_END_KEY.search(text):
        return text, False
    lines = text.splitlines()
    nodes = []  # (header line index, child indent)
    for i, line in enumerate(lines):
        if LOGMEL_TAG not in line or line.lstrip().startswith("#"):
            continue
        match = _LOGMEL_NODE.match(line)
        if match is None:
            raise ValueError(
                f"{source}: cannot tell which front end this run used: it builds "
                f"{LOGMEL_TAG} without `mel_scale` in a form other than a block mapping; "
                "add `mel_scale: htk` and `mel_norm: null` (runs made before the M2D "
                "front end) or `mel_scale: slaney` and `mel_norm: slaney` to its LogMel"
            )
        indent = len(match.group("indent"))
        child_indent, explicit = None, False
        for child in lines[i + 1 :]:
            stripped = child.lstrip(" ")
            if not stripped or stripped.startswith("#"):
                continue
            depth = len(child) - len(stripped)
            if depth <= indent:
                break
            child_indent = depth if child_indent is None else child_indent
            if depth == child_indent and re.match(r"(mel_scale|mel_norm)\s*:", stripped):
                explicit = True
        if explicit:
            return text, False
        nodes.append((i, child_indent if child_indent is not None else indent + 4))
    for i, child_indent in reversed(nodes):
        pad = " " * child_indent
        lines[i + 1 : i + 1] = [
            f"{pad}mel_scale: !ref <mel_scale>",
            f"{pad}mel_norm: !ref <mel_norm>",
        ]
    first = _FIRST_TOP_KEY.search("\n".join(lines))
    at = "\n".join(lines)[: first.start()].count("\n") if first else 0
    norm = LEGACY_FRONT_END["mel_norm"]
    lines[at:at] = [
        "# Added on loading: this run predates the M2D front end "
        "(aasp_sb.pretrained.pin_legacy_front_end)",
        f"mel_scale: {LEGACY_FRONT_END['mel_scale']}",
        f"mel_norm: {'null' if norm is None else norm}",
    ]
    return "\n".join(lines) + "\n", True
