"""A tiny fake pre-training run folder, as ``recipes/pretrain/train.py`` leaves it.

``make_run(folder)`` builds the modules of ``hparams/aasp_tiny.yaml`` with
small overrides, writes ``hyperparams.yaml`` (the YAML with its overrides
applied and references resolved, as SpeechBrain's
``create_experiment_directory`` saves it) and one checkpoint
``save/CKPT+*/{encoder,teacher,...}.ckpt`` through ``AtomicCheckpointer``.
"""

from pathlib import Path

import torch
from hyperpyyaml import load_hyperpyyaml, resolve_references

ROOT = Path(__file__).resolve().parents[1]
TINY_YAML = ROOT / "hparams" / "aasp_tiny.yaml"

#: Small enough for fast CPU tests: 32-d, 2 blocks, 64-frame (0.64 s) chunks.
TINY_OVERRIDES = {
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "crop_frames": 64,
    "aape_modes": 4,
    "predictor_dim": 32,
    "predictor_depth": 1,
    "predictor_heads": 2,
}


def model_yaml(folder, overrides=None):
    """Writes the tiny YAML with overrides applied (references resolved)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ovr = {
        "data_folder": "unused",
        "output_folder": str(folder),
        **TINY_OVERRIDES,
        **(overrides or {}),
    }
    text = TINY_YAML.read_text(encoding="utf-8")
    resolved = resolve_references(text, ovr).getvalue()
    path = folder / "hyperparams.yaml"
    path.write_text(resolved, encoding="utf-8")
    return path


def make_run(folder, overrides=None, seed=0, gate=0.5):
    """Builds a run folder with random (but non-trivial) weights.

    Arguments
    ---------
    folder : str or Path
        The run's ``output_folder``.
    overrides : dict, optional
        Extra YAML overrides (e.g. ``{"use_aape": False}``).
    seed : int
        Weight initialisation seed.
    gate : float
        Value of the AaPE fusion gate (fixed here so the fixture does not
        depend on the default ``gate_init``; 0 would hide the alias branch).

    Returns
    -------
    Path
        The run folder.
    """
    folder = Path(folder)
    path = model_yaml(folder, {"seed": seed, **(overrides or {})})
    with open(path, encoding="utf-8") as f:
        hparams = load_hyperpyyaml(f)
    encoder, teacher = hparams["encoder"], hparams["teacher"]
    with torch.no_grad():
        if hasattr(encoder.stem, "gate"):
            encoder.stem.gate.fill_(gate)
        teacher.update(encoder, 0.0)
        for p in teacher.parameters():  # a teacher that differs from the student
            p.add_(0.01 * torch.randn_like(p))
    hparams["checkpointer"].save_checkpoint(meta={"loss": 1.0})
    return folder
