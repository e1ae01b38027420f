"""Data: robust audio loading, manifests, demo corpus, log-mel shards, pipelines.

- :mod:`aasp_sb.data.audio`: :func:`load_audio` (mono float32 at 16 kHz,
  :class:`AudioLoadError` naming the file), :func:`crop_or_pad`,
  :class:`SkipCounter`;
- :mod:`aasp_sb.data.folder`: :func:`prepare_audio_folder` (any audio tree);
- :mod:`aasp_sb.data.audioset`: :func:`prepare_audioset`;
- :mod:`aasp_sb.data.demo`: :func:`make_demo_corpus`, the procedural corpus
  with alias-band modulation classes;
- :mod:`aasp_sb.data.shards`: float16 log-mel shards for AudioSet scale;
- :mod:`aasp_sb.data.prepare`: preparation as its own step for large corpora
  (parallel, incremental header reads; ``python -m aasp_sb.data.prepare``);
- :mod:`aasp_sb.data.pipeline`: SpeechBrain ``DynamicItemDataset`` builders
  that substitute unreadable clips instead of crashing.
"""

from aasp_sb.data.audio import (
    AudioLoadError,
    SkipCounter,
    audio_info,
    crop_or_pad,
    load_audio,
)
from aasp_sb.data.audioset import prepare_audioset
from aasp_sb.data.demo import make_demo_corpus, make_unlabeled_folder
from aasp_sb.data.folder import prepare_audio_folder
from aasp_sb.data.pipeline import labelled_dataset, pretrain_dataset
from aasp_sb.data.prepare import load_prepared, prepare_corpus
from aasp_sb.data.shards import (
    LogMelShardDataset,
    build_logmel_shards,
    write_feature_shards,
)

__all__ = [
    "AudioLoadError",
    "LogMelShardDataset",
    "SkipCounter",
    "audio_info",
    "build_logmel_shards",
    "crop_or_pad",
    "labelled_dataset",
    "load_audio",
    "load_prepared",
    "make_demo_corpus",
    "make_unlabeled_folder",
    "prepare_audio_folder",
    "prepare_audioset",
    "prepare_corpus",
    "pretrain_dataset",
    "write_feature_shards",
]
