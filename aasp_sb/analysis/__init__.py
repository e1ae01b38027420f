"""Analysis: what AaPE does, in numbers and pictures.

- :mod:`~aasp_sb.analysis.stability`: aliasing stability of pre-trained
  checkpoints (cosine similarity of clip embeddings under sub-patch shifts),
  side by side; ``python -m aasp_sb.analysis.stability``;
- :mod:`~aasp_sb.analysis.plots`: estimated ``(alpha, omega)``, SBLU
  responses, fusion gates, training curves and stability curves of a run
  (matplotlib, the ``plots`` extra); ``python -m aasp_sb.analysis.plots``.

The plotting module is not imported here, so the package works without
matplotlib.
"""

from aasp_sb.analysis.stability import (
    compare_checkpoints,
    measure_checkpoint_stability,
    measure_model_stability,
    parse_shifts,
)

__all__ = [
    "compare_checkpoints",
    "measure_checkpoint_stability",
    "measure_model_stability",
    "parse_shifts",
]
