"""aasp_sb: AaSP (aliasing-aware self-supervised pre-training) for SpeechBrain.

The package follows the data flow of the method:

- :mod:`aasp_sb.features`: waveform -> normalised log-mel ``[B, T, F]``;
- :mod:`aasp_sb.lobes`: patch stems (plain and AaPE), the ViT encoder, the
  cross-attention predictor and the EMA teacher;
- :mod:`aasp_sb.masking`, :mod:`aasp_sb.losses`: multi-mask generation and
  the regression + contrastive objectives;
- :mod:`aasp_sb.brains`: SpeechBrain ``Brain`` classes for pre-training and
  fine-tuning;
- :mod:`aasp_sb.data`: robust audio loading, data preparation, demo corpus;
- :mod:`aasp_sb.inference`, :mod:`aasp_sb.embed`: embeddings from checkpoints;
- :mod:`aasp_sb.evaluation`, :mod:`aasp_sb.analysis`: linear evaluation,
  aliasing stability, plots.
"""

__version__ = "0.1.0"

from aasp_sb import cli as _cli  # noqa: E402, F401  (silences SpeechBrain's torchvision notice)
