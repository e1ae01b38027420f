"""The HEAR 2021 API (https://hearbenchmark.com/hear-api.html) for AaSP encoders.

::

    from aasp_sb import hear
    model = hear.load_model("results/aasp_base/1986")        # run folder / ckpt
    scene = hear.get_scene_embeddings(audio, model)          # [n, Fp*D]
    emb, ts = hear.get_timestamp_embeddings(audio, model)    # [n, T, Fp*D], [n, T]

``audio`` is ``[n, samples]`` float at ``model.sample_rate`` (16 kHz).
``model_file_path`` may be a run folder, a ``CKPT+*`` folder, a weights file
or a folder written by :func:`aasp_sb.inference.export_for_inference`.

**Timestamp embeddings** are the encoder's frame features, one per patch
column of ``pt`` log-mel frames (16 frames = 160 ms with the default front
end). Log-mel frame ``k`` is centred at ``k * hop`` (centred STFT), so column
``j`` is centred at ``(j * pt + (pt - 1) / 2) * hop / sr``: **75 + 160 j ms**,
at exactly regular intervals. Only the columns whose centre lies inside the
clip (``<= n_samples / sr``) are returned; a last, partly filled column
centred past the end is left out (its real frames are still in the scene
embedding). A clip shorter than the first centre gets one timestamp, the
centre of its real frames.

**Finer timestamps** (``load_model(..., timestamp_hop_ms=40)``): the patch
grid itself cannot be finer than one column, so finer frames are made by
*re-encoding*: the clip is encoded ``R = 160 / timestamp_hop_ms`` times,
advanced by ``0, 1, .., R - 1`` times ``pt / R`` log-mel frames (whole frames:
``pt / R * hop`` samples), and the columns of the ``R`` encodings are
interleaved. Every timestamp embedding is therefore a real encoder output for
a 160 ms column centred on its timestamp (nothing is interpolated); the
columns overlap by ``160 - timestamp_hop_ms`` ms, each encoding sees the
clip from a different start (so its attention context and position
embeddings differ slightly), and the cost is ``R`` forward passes. Allowed
hops: ``160 / R`` ms for ``R`` dividing ``pt`` (160, 80, 40, 20, 10 ms with
the defaults). The HEAR validator suggests at most 50 ms: use 40.

**Scene embeddings** are the mean of the frame features of the (unshifted)
clip over all its real frames. Audio longer than the encoder's training
length is encoded in chunks (whole columns, so the grid stays regular).
"""

from aasp_sb import cli  # noqa: F401 -- first: silences SpeechBrain's torchvision warning

# isort: split
import torch
from speechbrain.utils.autocast import AMPConfig, TorchAutocast
from torch import nn

from aasp_sb.inference import load_encoder


def allowed_timestamp_hops(encoder):
    """Timestamp hops (ms) that re-encoding can make exactly.

    Arguments
    ---------
    encoder : AaSPEncoder
        The encoder (patch width ``pt``, log-mel hop, sample rate).

    Returns
    -------
    list of float
        ``column_ms / R`` for every ``R`` dividing ``pt``, coarsest first.

    Example
    -------
    >>> from types import SimpleNamespace
    >>> allowed_timestamp_hops(SimpleNamespace(
    ...     frames_per_token=16, hop_length=160, sample_rate=16000))
    [160.0, 80.0, 40.0, 20.0, 10.0]
    """
    pt = int(encoder.frames_per_token)
    column_ms = 1000.0 * pt * encoder.hop_length / encoder.sample_rate
    return [column_ms / r for r in range(1, pt + 1) if pt % r == 0]


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
    timestamp_hop_ms : float, optional
        Interval between timestamps (default: one patch column, 160 ms);
        finer values re-encode the clip (see the module docstring).

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
    (torch.Size([2, 3, 160]), [75.0, 235.0, 395.0])
    >>> fine = HearModel(enc, timestamp_hop_ms=40)
    >>> get_timestamp_embeddings(torch.zeros(1, 8000), fine)[1][0, :5].tolist()
    [75.0, 115.0, 155.0, 195.0, 235.0]
    """

    def __init__(
        self, encoder, layer=-1, pooling="mean", batch_size=16,
        timestamp_hop_ms=None,
    ):
        super().__init__()
        self.encoder = encoder
        self.layer = layer
        self.pooling = pooling
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.sample_rate = encoder.sample_rate
        self.timestamp_embedding_size = encoder.embedding_size(layer, "mean")
        self.scene_embedding_size = encoder.embedding_size(layer, pooling)
        allowed = allowed_timestamp_hops(encoder)
        if timestamp_hop_ms is None:
            timestamp_hop_ms = allowed[0]
        matches = [
            i for i, a in enumerate(allowed) if abs(a - float(timestamp_hop_ms)) < 1e-6
        ]
        if not matches:
            raise ValueError(
                f"timestamp_hop_ms={timestamp_hop_ms} is not a whole number of "
                f"log-mel frames dividing a patch column; allowed: "
                f"{', '.join(f'{a:g}' for a in allowed)}"
            )
        #: Interval between timestamps in milliseconds.
        self.timestamp_hop_ms = allowed[matches[0]]
        #: Encodings per clip for the timestamp embeddings (1: no re-encoding).
        self.subdivisions = int(round(allowed[0] / self.timestamp_hop_ms))

    @property
    def device(self):
        """Device of the encoder."""
        return self.encoder.device

    def _apply(self, fn, *args, **kwargs):
        # ``model.to(device)`` (what the HEAR validator does) moves the
        # weights; keep the SpeechBrain interface's device in step with them.
        out = super()._apply(fn, *args, **kwargs)
        param = next(self.encoder.mods.parameters(), None)
        if param is not None and str(param.device) != str(self.encoder.device):
            enc = self.encoder
            enc.device = str(param.device)
            enc.device_type = param.device.type
            enc.inference_ctx = TorchAutocast(
                device_type=enc.device_type,
                dtype=AMPConfig.from_name(enc.precision).dtype,
            )
        return out


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
        :func:`aasp_sb.inference.load_encoder`), ``layer``, ``pooling``,
        ``batch_size`` and ``timestamp_hop_ms`` (see :class:`HearModel`).

    Returns
    -------
    HearModel
    """
    model_kwargs = {
        k: kwargs.pop(k)
        for k in ("layer", "pooling", "batch_size", "timestamp_hop_ms")
        if k in kwargs
    }
    unknown = set(kwargs) - {
        "which", "device", "precision", "hparams_file", "overrides",
        "random_init", "seed",
    }
    if unknown:
        raise TypeError(f"load_model: unexpected arguments {sorted(unknown)}")
    encoder = load_encoder(checkpoint=model_file_path or None, **kwargs)
    return HearModel(encoder, **model_kwargs)


def _check_audio(audio):
    audio = torch.as_tensor(audio, dtype=torch.float32)
    if audio.ndim != 2:
        raise ValueError(f"audio must be [n_sounds, n_samples], got {tuple(audio.shape)}")
    if audio.shape[0] == 0:
        raise ValueError("audio: no sounds given")
    if audio.shape[1] == 0:
        raise ValueError("audio: the sounds have no samples")
    return audio


def _encode(audio, model):
    """Frame features ``[n, Tp, D]`` of equal-length sounds, in batches."""
    return torch.cat([
        model.encoder.encode_batch(audio[i : i + model.batch_size], layer=model.layer)
        for i in range(0, audio.shape[0], model.batch_size)
    ])


def timestamps_ms(model, num_samples):
    """The regular timestamps (ms) :func:`get_timestamp_embeddings` returns.

    Arguments
    ---------
    model : HearModel
        The model (patch width, hop, sample rate, ``timestamp_hop_ms``).
    num_samples : int
        Clip length in samples.

    Returns
    -------
    torch.Tensor
        ``[T]`` float64: ``first + m * timestamp_hop_ms`` for every ``m``
        whose time is inside the clip (at least one).
    """
    enc = model.encoder
    frame_ms = 1000.0 * enc.hop_length / enc.sample_rate
    first = (enc.frames_per_token - 1) / 2.0 * frame_ms
    duration = 1000.0 * num_samples / enc.sample_rate
    count = int((duration - first) // model.timestamp_hop_ms) + 1
    if count < 1:  # shorter than the first centre: the centre of its frames
        real_frames = num_samples // enc.hop_length + 1
        return torch.tensor([(real_frames - 1) / 2.0 * frame_ms], dtype=torch.float64)
    return first + torch.arange(count, dtype=torch.float64) * model.timestamp_hop_ms


def get_timestamp_embeddings(audio, model):
    """Frame-level embeddings at regular timestamps (see the module docstring).

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
        ``[n_sounds, n_timestamps]`` float32 centres in milliseconds, at
        intervals of exactly ``model.timestamp_hop_ms``, all inside the clip.
    """
    audio = _check_audio(audio)
    n, S = audio.shape
    times = timestamps_ms(model, S)
    count = times.numel()
    R = model.subdivisions
    step = model.encoder.frames_per_token // R * model.encoder.hop_length
    emb = None
    for r in range(R):
        idx = torch.arange(r, count, R)
        if idx.numel() == 0:
            break
        frames = _encode(audio[:, r * step :], model)  # columns j -> m = R j + r
        if emb is None:
            emb = frames.new_zeros(n, count, frames.shape[-1])
        emb[:, idx] = frames[:, : idx.numel()]
    ts = times.float().to(emb.device).unsqueeze(0).expand(n, -1)
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
    audio = _check_audio(audio)
    return torch.cat([
        model.encoder.embed_batch(
            audio[i : i + model.batch_size], layer=model.layer, pooling=model.pooling
        )
        for i in range(0, audio.shape[0], model.batch_size)
    ])
