"""Helpers to run the pre-training recipe on tiny settings inside tests."""

import pathlib

from aasp_sb.recipe_import import import_recipe

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ROOT / "hparams" / "aasp_tiny.yaml"

TINY_OVERRIDES = {
    "embed_dim": 32,
    "depth": 1,
    "num_heads": 2,
    "crop_frames": 64,
    "aape_modes": 4,
    "predictor_dim": 32,
    "predictor_depth": 1,
    "predictor_heads": 2,
    "batch_size": 4,
    "number_of_epochs": 2,
    "valid_fraction": 0.2,
}


def load_recipe():
    """Imports recipes/pretrain/train.py as a module."""
    return import_recipe(ROOT / "recipes" / "pretrain" / "train.py", "aasp_pretrain_recipe")


def recipe_args(data_folder, output_folder, **overrides):
    """Command-line arguments for a tiny CPU pre-training run."""
    opts = dict(TINY_OVERRIDES)
    opts.update(overrides)
    args = [str(TINY), f"--data_folder={data_folder}", f"--output_folder={output_folder}"]
    args += [f"--{k}={v}" for k, v in opts.items()]
    return args + ["--device=cpu"]


def free_port():
    """A TCP port nobody listens on now (bound to port 0 and released)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
