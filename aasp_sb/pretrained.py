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
"""

import logging
import pathlib
from typing import NamedTuple

import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.checkpoints import Checkpointer

from aasp_sb.checkpoints import safe_torch_load

logger = logging.getLogger(__name__)

WHICH = {"student": "encoder.ckpt", "teacher": "teacher.ckpt"}

#: Top-level keys of a pre-training YAML that define the model; the
#: fine-tuning YAMLs have the same keys (plus ``max_frames``, ``norm_mean``
#: and ``norm_std``, read from the built modules).
ARCH_KEYS = (
    "sample_rate",
    "n_mels",
    "use_aape",
    "embed_dim",
    "depth",
    "num_heads",
    "patch_size",
    "aape_modes",
    "aape_fusion",
    "aape_gate_init",
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
    return load_hyperpyyaml(text, merged or None)
