"""Analysis: what AaPE does, in numbers and pictures.

- :mod:`~aasp_sb.analysis.stability`: aliasing stability of pre-trained
  checkpoints (cosine similarity of clip embeddings under sub-patch shifts),
  side by side; ``python -m aasp_sb.analysis.stability``;
- :mod:`~aasp_sb.analysis.plots`: estimated ``(alpha, omega)``, SBLU
  responses, fusion gates, training curves and stability curves of a run
  (matplotlib, the ``plots`` extra); ``python -m aasp_sb.analysis.plots``.

Nothing is imported here until it is used (``aasp_sb.analysis.X`` loads the
stability module on first access): the plotting module needs matplotlib only
when drawn, and ``python -m aasp_sb.analysis.stability`` runs without
Python's "found in sys.modules" warning.
"""

import importlib

__all__ = [
    "compare_checkpoints",
    "measure_checkpoint_stability",
    "measure_model_stability",
    "parse_shifts",
]


def __getattr__(name):
    if name in __all__:
        return getattr(importlib.import_module("aasp_sb.analysis.stability"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
