"""Inference with a fine-tuned model: label files or batches of waveforms.

:meth:`AudioClassifier.from_run` rebuilds the model of a fine-tuning run
(``recipes/finetune/train.py``) from the run's ``hyperparams.yaml`` and
``task.json`` and loads its best checkpoint (by validation metric); one can
also name a ``CKPT+*`` folder. Scores are softmax probabilities for
single-label tasks and independent sigmoid probabilities for multi-label
tasks (AS-20K). Long audio is encoded in the encoder's training-length chunks.

Example
-------
>>> clf = AudioClassifier.from_run("results/finetune/esc50/1986/fold1")  # doctest: +SKIP
>>> clf.classify_file("dog.wav", top_k=3)  # doctest: +SKIP
[('dog', 0.91), ('rooster', 0.03), ('pig', 0.02)]
"""

import json
import pathlib
import random
from typing import List, NamedTuple

import numpy as np
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.checkpoints import Checkpointer
from torch import nn

from aasp_sb.brains.finetune import pool_output
from aasp_sb.checkpoints import safe_torch_load
from aasp_sb.data.audio import load_audio
from aasp_sb.pretrained import load_state, pin_legacy_front_end

TASK_FILE = "task.json"


class ClassifierOutput(NamedTuple):
    """What :meth:`AudioClassifier.classify_batch` returns.

    scores: ``[B, C]`` probabilities (softmax, or sigmoid for multi-label).
    top_scores: ``[B, k]`` best scores, decreasing. top_indices: ``[B, k]``
    their class indices. top_labels: ``B`` lists of ``k`` class names.
    """

    scores: torch.Tensor
    top_scores: torch.Tensor
    top_indices: torch.Tensor
    top_labels: List[List[str]]


def find_run_folder(source, fold=None):
    """Resolves a fine-tuning output to ``(split folder, checkpoint folder or None)``.

    Arguments
    ---------
    source : str or pathlib.Path
        A split folder (holding ``task.json``), a cross-validation output
        folder (with ``fold`` given), a ``save`` folder or a ``CKPT+*`` folder.
    fold : str, optional
        Fold sub-folder of a cross-validation output.

    Returns
    -------
    tuple
        ``(pathlib.Path, pathlib.Path or None)``.
    """
    path = pathlib.Path(source)
    ckpt = None
    if (path / "CKPT.yaml").is_file():  # a checkpoint folder
        ckpt, path = path, path.parent.parent
    elif path.name == "save" and not (path / TASK_FILE).is_file():
        path = path.parent
    if fold is not None:
        path = path / str(fold)
    if (path / TASK_FILE).is_file():
        return path, ckpt
    folds = sorted(p.parent.name for p in path.glob(f"*/{TASK_FILE}"))
    if folds:
        raise ValueError(
            f"{path} is a cross-validation output: pass fold= one of {folds}"
        )
    raise FileNotFoundError(
        f"No {TASK_FILE} in {path}: pass a finished fine-tuning output folder "
        "(recipes/finetune/train.py) or one of its checkpoints"
    )


class AudioClassifier(nn.Module):
    """A fine-tuned AaSP classifier: waveform -> log-mel -> encoder -> pooled -> head.

    Arguments
    ---------
    features : torch.nn.Module
        Waveform -> normalised log-mel.
    encoder : torch.nn.Module
        :class:`~aasp_sb.lobes.encoder.AudioViT`.
    head : torch.nn.Module
        :class:`~aasp_sb.brains.finetune.ClassifierHead`.
    classes : list of str
        Class names in index order.
    multilabel : bool
        Sigmoid scores (multi-label) instead of softmax.
    pooling : str
        ``"tokens"`` or ``"frames"`` (as the model was trained).
    sample_rate : int
        Rate files are resampled to.

    Example
    -------
    >>> from aasp_sb.brains.finetune import ClassifierHead
    >>> from aasp_sb.features import Features
    >>> from aasp_sb.lobes.encoder import AudioViT
    >>> from aasp_sb.lobes.patch import PatchEmbed
    >>> enc = AudioViT(PatchEmbed(80, 16, 32), 32, depth=1, num_heads=2, max_frames=64)
    >>> clf = AudioClassifier(Features(), enc, ClassifierHead(32, 3), ["a", "b", "c"])
    >>> out = clf.classify_batch(torch.randn(2, 16000), top_k=2)
    >>> out.scores.shape, len(out.top_labels[0]), bool(out.scores.sum(-1).allclose(torch.ones(2)))
    (torch.Size([2, 3]), 2, True)
    """

    def __init__(
        self,
        features,
        encoder,
        head,
        classes,
        multilabel=False,
        pooling="tokens",
        sample_rate=16000,
    ):
        super().__init__()
        self.features = features
        self.encoder = encoder
        self.head = head
        self.classes = list(classes)
        self.multilabel = bool(multilabel)
        self.pooling = pooling
        self.sample_rate = int(sample_rate)
        self.eval()

    @property
    def device(self):
        """Device of the model's parameters."""
        return next(self.head.parameters()).device

    @classmethod
    def from_run(cls, source, fold=None, device="cpu", use_display_names=True):
        """Loads the best checkpoint of a fine-tuning run.

        Arguments
        ---------
        source : str or pathlib.Path
            Split output folder, cross-validation output folder (with
            ``fold``), or a ``CKPT+*`` folder (that checkpoint is used).
        fold : str, optional
            Fold of a cross-validation output.
        device : str
            Where to put the model.
        use_display_names : bool
            Readable names when the task has them (AS-20K), else the
            ``classes.txt`` entries.

        Returns
        -------
        AudioClassifier
        """
        folder, ckpt_path = find_run_folder(source, fold)
        with open(folder / TASK_FILE, encoding="utf-8") as f:
            task = json.load(f)
        hp_file = folder / "hyperparams.yaml"
        if not hp_file.is_file():
            hp_file = folder.parent / "hyperparams.yaml"
        text = hp_file.read_text(encoding="utf-8")
        text, _ = pin_legacy_front_end(text, hp_file)  # runs made before mel_scale
        overrides = {
            "split_folder": str(folder),
            "num_classes": len(task["classes"]),
        }
        with _preserve_rng():  # the YAML seeds the global generators
            hparams = load_hyperpyyaml(text, overrides)
        if ckpt_path is None:
            ckpt = Checkpointer(folder / "save").find_checkpoint(
                max_key="metric"
            )
            if ckpt is None:
                ckpt = Checkpointer(folder / "save").find_checkpoint(
                    max_key="epoch"
                )
            if ckpt is None:
                raise FileNotFoundError(
                    f"No checkpoint under {folder / 'save'}"
                )
            ckpt_path = ckpt.path
        for name in ("encoder", "head"):
            weights = pathlib.Path(ckpt_path) / f"{name}.ckpt"
            load_state(hparams[name], safe_torch_load(weights), weights)
        names = task["classes"]
        if use_display_names and task.get("display_names"):
            if len(task["display_names"]) == len(names):
                names = task["display_names"]
        model = cls(
            hparams["compute_features"],
            hparams["encoder"],
            hparams["head"],
            names,
            multilabel=task["multilabel"],
            pooling=task.get("pooling", "tokens"),
            sample_rate=task.get("sample_rate", 16000),
        )
        model.checkpoint = pathlib.Path(ckpt_path)
        return model.to(device)

    @torch.no_grad()
    def scores(self, wavs, wav_lens=None):
        """Class probabilities ``[B, C]`` of a batch of waveforms.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[B, S]`` (or ``[S]``) waveforms at ``sample_rate``.
        wav_lens : torch.Tensor, optional
            ``[B]`` relative lengths (SpeechBrain convention).

        Returns
        -------
        torch.Tensor
        """
        self.eval()
        if wavs.dim() == 1:
            wavs = wavs.unsqueeze(0)
        wavs = wavs.to(self.device, torch.float32)
        if wav_lens is not None:
            wav_lens = torch.as_tensor(
                wav_lens, dtype=torch.float32, device=self.device
            )
        feats = self.features(wavs)
        pooled = pool_output(self.encoder(feats, wav_lens), self.pooling)
        logits = self.head(pooled).float()
        return logits.sigmoid() if self.multilabel else logits.softmax(-1)

    def classify_batch(self, wavs, wav_lens=None, top_k=1):
        """Scores and the ``top_k`` classes of each waveform.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[B, S]`` waveforms at ``sample_rate``.
        wav_lens : torch.Tensor, optional
            ``[B]`` relative lengths.
        top_k : int
            Number of best classes returned per clip.

        Returns
        -------
        ClassifierOutput
        """
        scores = self.scores(wavs, wav_lens)
        k = max(1, min(int(top_k), scores.shape[-1]))
        top_scores, top_idx = scores.topk(k, dim=-1, sorted=True)
        labels = [[self.classes[i] for i in row] for row in top_idx.tolist()]
        return ClassifierOutput(scores, top_scores, top_idx, labels)

    def classify_file(self, path, top_k=5):
        """``[(label, score), ...]`` of one audio file, best first.

        Arguments
        ---------
        path : str
            Audio file (any format :mod:`aasp_sb.data.audio` reads; resampled).
        top_k : int
            Number of classes returned.

        Returns
        -------
        list of tuple
        """
        wav = load_audio(str(path), self.sample_rate)
        out = self.classify_batch(wav.unsqueeze(0), top_k=top_k)
        return [
            (label, float(score))
            for label, score in zip(
                out.top_labels[0], out.top_scores[0].tolist()
            )
        ]


class _preserve_rng:
    """Restores the python, numpy and torch global generators on exit."""

    def __enter__(self):
        self.state = (
            random.getstate(),
            np.random.get_state(),
            torch.get_rng_state(),
        )
        return self

    def __exit__(self, *exc):
        random.setstate(self.state[0])
        np.random.set_state(self.state[1])
        torch.set_rng_state(self.state[2])
        return False
