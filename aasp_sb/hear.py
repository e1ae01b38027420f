"""The HEAR 2021 API (https://hearbenchmark.com/hear-api.html) for AaSP encoders.

::

    from aasp_sb import hear
    model = hear.load_model("results/aasp_base/1986")        # run folder / ckpt
    scene = hear.get_scene_embeddings(audio, model)          # [n, Fp*D]
    emb, ts = hear.get_timestamp_embeddings(audio, model)    # [n, T, Fp*D], [n, T]

``audio`` is ``[n, samples]`` float at ``model.sample_rate`` (16 kHz).
Timestamp embeddings are the encoder's frame features, one per patch column
(16 log-mel frames = 160 ms); the timestamps (milliseconds) are the centres
of those columns, ``75 + 160 j`` ms with the default front end (the last,
partly filled column is centred on its real frames; see
:meth:`aasp_sb.inference.AaSPEncoder.frame_times`). Scene embeddings are
their mean over the clip. Audio longer than the encoder's training length is
encoded in chunks.
"""

import torch
from torch import nn

from aasp_sb.inference import load_encoder


class HearModel(nn.Module):
    """An :class:`~aasp_sb.inference.AaSPEncoder` with the HEAR attributes.

    Arguments
    ---------
    encoder : AaSPEncoder
        The frozen encoder.
    layer : int or list of int
        Layer choice (``-1``: final output).
    pooling : str
        Scene pooling: ``"mean"`` or ``"mean+max"``.
    batch_size : int
        Clips per forward pass.

    Example
    -------
    >>> from aasp_sb.features import Features
    >>> from aasp_sb.inference import AaSPEncoder
    >>> from aasp_sb.lobes.encoder import AudioViT
    >>> from aasp_sb.lobes.patch import PatchEmbed
    >>> vit = AudioViT(PatchEmbed(80, 16, 32), embed_dim=32, depth=1,
    ...                num_heads=4, max_frames=64)
    >>> enc = AaSPEncoder(modules={"compute_features": Features(), "encoder": vit},
    ...                   run_opts={"device": "cpu"})
    >>> model = HearModel(enc)
    >>> model.sample_rate, model.scene_embedding_size, model.timestamp_embedding_size
    (16000, 160, 160)
    >>> emb, ts = get_timestamp_embeddings(torch.zeros(2, 8000), model)
    >>> emb.shape, ts[0].tolist()
    (torch.Size([2, 4, 160]), [75.0, 235.0, 395.0, 490.0])
    """

    def __init__(self, encoder, layer=-1, pooling="mean", batch_size=16):
        super().__init__()
        self.encoder = encoder
        self.layer = layer
        self.pooling = pooling
        self.batch_size = int(batch_size)
        self.sample_rate = encoder.sample_rate
        self.timestamp_embedding_size = encoder.embedding_size(layer, "mean")
        self.scene_embedding_size = encoder.embedding_size(layer, pooling)

    @property
    def device(self):
        """Device of the encoder."""
        return self.encoder.device


def load_model(model_file_path="", **kwargs):
    """Loads an AaSP encoder for the HEAR API.

    Arguments
    ---------
    model_file_path : str
        Run folder, ``CKPT+*`` folder, weights file or exported inference
        folder. May be empty together with ``hparams_file`` and
        ``random_init=True`` (untrained baseline).
    **kwargs
        ``which`` (``"student"``/``"teacher"``), ``device``, ``precision``,
        ``hparams_file``, ``overrides``, ``random_init``, ``seed`` (see
        :func:`aasp_sb.inference.load_encoder`), ``layer``, ``pooling`` and
        ``batch_size`` (see :class:`HearModel`).

    Returns
    -------
    HearModel
    """
    model_kwargs = {
        k: kwargs.pop(k) for k in ("layer", "pooling", "batch_size") if k in kwargs
    }
    unknown = set(kwargs) - {
        "which", "device", "precision", "hparams_file", "overrides",
        "random_init", "seed",
    }
    if unknown:
        raise TypeError(f"load_model: unexpected arguments {sorted(unknown)}")
    encoder = load_encoder(checkpoint=model_file_path or None, **kwargs)
    return HearModel(encoder, **model_kwargs)


def _batches(audio, model):
    audio = torch.as_tensor(audio, dtype=torch.float32)
    if audio.ndim != 2:
        raise ValueError(f"audio must be [n_sounds, n_samples], got {tuple(audio.shape)}")
    for start in range(0, audio.shape[0], model.batch_size):
        yield audio[start : start + model.batch_size]


def get_timestamp_embeddings(audio, model):
    """Frame-level embeddings and their centre times.

    Arguments
    ---------
    audio : torch.Tensor
        ``[n_sounds, n_samples]`` at ``model.sample_rate``.
    model : HearModel
        From :func:`load_model`.

    Returns
    -------
    embeddings : torch.Tensor
        ``[n_sounds, n_timestamps, timestamp_embedding_size]`` float32.
    timestamps : torch.Tensor
        ``[n_sounds, n_timestamps]`` centres in milliseconds.
    """
    parts = [
        model.encoder.encode_batch(batch, layer=model.layer)
        for batch in _batches(audio, model)
    ]
    if not parts:
        raise ValueError("audio: no sounds given")
    emb = torch.cat(parts)
    mel_frames = int(audio.shape[-1]) // model.encoder.hop_length + 1
    times = model.encoder.frame_times(emb.shape[1], mel_frames) * 1000.0
    ts = times.float().to(emb.device).unsqueeze(0).expand(emb.shape[0], -1)
    return emb, ts.contiguous()


def get_scene_embeddings(audio, model):
    """Clip-level embeddings (frame features pooled over time).

    Arguments
    ---------
    audio : torch.Tensor
        ``[n_sounds, n_samples]`` at ``model.sample_rate``.
    model : HearModel
        From :func:`load_model`.

    Returns
    -------
    torch.Tensor
        ``[n_sounds, scene_embedding_size]`` float32.
    """
    parts = [
        model.encoder.embed_batch(batch, layer=model.layer, pooling=model.pooling)
        for batch in _batches(audio, model)
    ]
    if not parts:
        raise ValueError("audio: no sounds given")
    return torch.cat(parts)
