"""Embeddings from a trained AaSP encoder: a SpeechBrain ``Pretrained`` interface.

:class:`AaSPEncoder` wraps the front end (waveform -> normalised log-mel) and
the :class:`~aasp_sb.lobes.encoder.AudioViT` of a pre-training run. Three ways
to get one:

- ``AaSPEncoder.from_run(run_folder_or_ckpt, which="student")`` reads a
  pre-training run directly (through :func:`aasp_sb.pretrained.load_pretrained`);
- ``AaSPEncoder.from_hparams(source=folder, savedir=...)``, SpeechBrain's
  usual entry point, on a folder written by :func:`export_for_inference`
  (an inference ``hyperparams.yaml`` with ``modules`` and a ``pretrainer``,
  plus ``encoder.ckpt``);
- ``AaSPEncoder.from_yaml(model_yaml, seed=0)`` builds an *untrained* model
  of the same architecture: the random-init baseline every pre-trained model
  has to beat.

Outputs (DESIGN.md section 3):

- :meth:`AaSPEncoder.encode_batch`: frame-level features ``[B, T', Fp*D]``,
  one vector per patch column (16 frames = 160 ms), ``(f t) d -> t (f d)``;
- :meth:`AaSPEncoder.embed_batch` (also named
  :meth:`~AaSPEncoder.frame_mean_embeddings`): clip embeddings ``[B, Fp*D]``, the mean of
  the frame features over the clip's real frames (``"mean+max"`` appends the
  max, ``[B, 2*Fp*D]``), as M2D's linear evaluation does;
- :meth:`AaSPEncoder.token_mean_embeddings`: ``[B, D]``, the mean of the
  final tokens (the encoder's ``clip_embedding``).

**Batch independence.** The log-mel of every clip is computed at its true
length (the centred STFT would otherwise see the zero padding in its last
frames); the features are then padded and the encoder gets relative frame
lengths, so a clip's outputs do not depend on the other clips of the batch
or on how much padding there is. Inputs longer than the encoder's
``max_frames`` are encoded in chunks by the encoder itself.

**Layers.** ``layer=-1`` (or ``depth - 1``) is the final, layer-normalised
output. Other layers are the raw outputs of the transformer blocks
(``return_layers``), *without* the final LayerNorm -- as M2D returns them; a
linear probe standardises its inputs anyway. A list of layers concatenates
their features along the last dimension.
"""

import io
import logging
import os
import pathlib

import ruamel.yaml
import torch
from hyperpyyaml import load_hyperpyyaml, resolve_references
from ruamel.yaml.comments import CommentedMap
from speechbrain.inference.interfaces import Pretrained

from aasp_sb.checkpoints import safe_torch_load
from aasp_sb.data.audio import load_audio
from aasp_sb.lobes.encoder import AudioViT, EncoderOutput
from aasp_sb.pretrained import (
    ARCH_KEYS,
    find_hparams,
    load_pretrained,
    load_state,
    pin_legacy_front_end,
)

logger = logging.getLogger(__name__)

POOLINGS = ("mean", "mean+max")
#: Top-level scalars copied into an exported inference YAML (for reference).
INFO_KEYS = (*ARCH_KEYS, "norm_mean", "norm_std", "crop_frames")
INFERENCE_TAIL = """
modules:
    compute_features: !ref <compute_features>
    encoder: !ref <encoder>

# Loads ``encoder.ckpt`` from the ``source`` folder (weights only, strict).
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        encoder: !ref <encoder>
    custom_hooks:
        encoder: !name:aasp_sb.inference.load_weights
"""


def load_weights(module, path):
    """Loads weights into ``module`` with ``weights_only=True``, strictly.

    Used as the ``Pretrainer`` hook of exported inference folders.

    Arguments
    ---------
    module : torch.nn.Module
        Target module.
    path : str or pathlib.Path
        Weights file (a state dict; ``module.``-prefixed keys are accepted).

    Example
    -------
    >>> tmp = getfixture("tmp_path")
    >>> torch.save(torch.nn.Linear(2, 2).state_dict(), tmp / "w.ckpt")
    >>> load_weights(torch.nn.Linear(2, 2), tmp / "w.ckpt")
    """
    load_state(module, safe_torch_load(path), path)


def pool_frames(frames, mask=None, pooling="mean"):
    """Pools frame features ``[B, T, D]`` over the real frames.

    Arguments
    ---------
    frames : torch.Tensor
        ``[B, T, D]`` frame features.
    mask : torch.Tensor, optional
        ``[B, T]`` True for real frames.
    pooling : str
        ``"mean"`` (``[B, D]``) or ``"mean+max"`` (``[B, 2D]``, mean then max).

    Returns
    -------
    torch.Tensor

    Example
    -------
    >>> x = torch.tensor([[[1.0], [3.0], [100.0]]])
    >>> m = torch.tensor([[True, True, False]])
    >>> pool_frames(x, m).tolist(), pool_frames(x, m, "mean+max").tolist()
    ([[2.0]], [[2.0, 3.0]])
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if mask is None:
        mask = torch.ones(frames.shape[:2], dtype=torch.bool, device=frames.device)
    w = mask.to(frames.dtype).unsqueeze(-1)
    mean = (frames * w).sum(1) / w.sum(1).clamp_min(1.0)
    if pooling == "mean":
        return mean
    neg = torch.finfo(frames.dtype).min
    mx = frames.masked_fill(~mask.unsqueeze(-1), neg).amax(1)
    return torch.cat([mean, mx], dim=-1)


def as_layer_list(layer, depth):
    """Normalises a layer choice to a list of block indices in ``[0, depth)``.

    Arguments
    ---------
    layer : int or sequence of int
        Python-style indices (``-1`` is the last block).
    depth : int
        Number of blocks.

    Returns
    -------
    list of int

    Example
    -------
    >>> as_layer_list(-1, 4), as_layer_list([0, -2], 4)
    ([3], [0, 2])
    """
    layers = [layer] if isinstance(layer, int) else list(layer)
    if not layers:
        raise ValueError("layer: give at least one layer index")
    out = []
    for idx in layers:
        idx = int(idx)
        if not -depth <= idx < depth:
            raise ValueError(
                f"layer {idx} out of range for an encoder of depth {depth} "
                f"(valid: {-depth} .. {depth - 1})"
            )
        out.append(idx % depth)
    return out


class AaSPEncoder(Pretrained):
    """Frozen AaSP encoder: waveforms in, frame features or clip embeddings out.

    Build it with :meth:`from_run`, :meth:`from_hparams` (an exported folder)
    or :meth:`from_yaml` (random initialisation). ``modules`` must hold
    ``compute_features`` (:class:`~aasp_sb.features.Features`) and
    ``encoder`` (:class:`~aasp_sb.lobes.encoder.AudioViT`). The device comes
    from ``run_opts={"device": ...}`` (default: CUDA when available); with
    ``run_opts={"precision": "bf16"}`` the encoder runs under bf16 autocast
    (the log-mel is always computed in float32), outputs are float32.

    Arguments
    ---------
    modules : dict
        ``compute_features`` and ``encoder``.
    hparams : dict
        Hyper-parameters (available as ``self.hparams``).
    run_opts : dict, optional
        SpeechBrain run options (``device``, ``precision``).
    freeze_params : bool
        Freeze the parameters and switch to eval mode (default).

    Example
    -------
    >>> from aasp_sb.features import Features
    >>> from aasp_sb.lobes.patch import PatchEmbed
    >>> enc = AudioViT(PatchEmbed(80, 16, 32), embed_dim=32, depth=2,
    ...                num_heads=4, max_frames=64)
    >>> model = AaSPEncoder(
    ...     modules={"compute_features": Features(), "encoder": enc},
    ...     hparams={}, run_opts={"device": "cpu"})
    >>> wavs = torch.randn(2, 16000)
    >>> model.encode_batch(wavs).shape
    torch.Size([2, 7, 160])
    >>> model.embed_batch(wavs, torch.tensor([1.0, 0.5])).shape  # [B, Fp*D]
    torch.Size([2, 160])
    >>> model.token_mean_embeddings(wavs).shape  # [B, D]
    torch.Size([2, 32])
    >>> model.embedding_size(layer=[-1, 0], pooling="mean+max")
    640
    """

    MODULES_NEEDED = ["compute_features", "encoder"]

    def __init__(self, modules=None, hparams=None, run_opts=None, freeze_params=True):
        hparams = {} if hparams is None else hparams
        super().__init__(modules, hparams, run_opts, freeze_params)
        for name in self.MODULES_NEEDED:
            if name not in self.mods:
                raise ValueError(f"AaSPEncoder needs a `{name}` module")
        self.fingerprint = None

    # ------------------------------------------------------------ builders
    @classmethod
    def from_run(
        cls,
        source,
        which="student",
        device=None,
        hparams_file=None,
        overrides=None,
        precision=None,
    ):
        """Loads the encoder of a pre-training run (or an exported folder).

        Arguments
        ---------
        source : str or pathlib.Path
            Run folder, its ``save`` folder, a ``CKPT+*`` folder, a weights
            file, or a folder written by :func:`export_for_inference`.
        which : str
            ``"student"`` (default) or ``"teacher"`` (EMA) weights.
        device : str, optional
            ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ... (default: CUDA if available).
        hparams_file : str, optional
            Model YAML (default: the run's ``hyperparams.yaml``).
        overrides : dict, optional
            YAML overrides.
        precision : str, optional
            ``"fp32"`` (default), ``"bf16"`` or ``"fp16"`` autocast for the encoder.

        Returns
        -------
        AaSPEncoder
        """
        parts = load_pretrained(
            source, which=which, hparams_file=hparams_file, overrides=overrides
        )
        hparams = {
            "compute_features": parts.features,
            "encoder": parts.encoder,
            "checkpoint": str(parts.checkpoint),
            "which": which,
        }
        return cls._build(parts.features, parts.encoder, hparams, device, precision)

    @classmethod
    def from_yaml(
        cls, hparams_file, overrides=None, seed=0, device=None, precision=None
    ):
        """Builds an untrained model from a model YAML (the random-init baseline).

        Only the YAML's ``compute_features`` and ``encoder`` (and what they
        refer to) are built, after seeding the global RNG with ``seed``: the
        YAML's own seeding (``__set_seed``), optimisers, checkpointers and
        other training objects are left out, so the weights depend on
        ``seed`` alone.

        Arguments
        ---------
        hparams_file : str or pathlib.Path
            YAML with ``compute_features`` and ``encoder`` keys.
        overrides : dict, optional
            YAML overrides.
        seed : int
            Initialisation seed.
        device : str, optional
            Device.
        precision : str, optional
            Encoder autocast precision.

        Returns
        -------
        AaSPEncoder
        """
        text = inference_yaml(hparams_file, overrides)
        torch.manual_seed(int(seed))
        hparams = load_hyperpyyaml(text)
        features, encoder = hparams["compute_features"], hparams["encoder"]
        info = {
            "compute_features": features,
            "encoder": encoder,
            "checkpoint": None,
            "random_init": True,
            "seed": int(seed),
        }
        logger.info("Built an untrained encoder from %s (seed %d)", hparams_file, seed)
        return cls._build(features, encoder, info, device, precision)

    @classmethod
    def from_m2d(cls, path, which="online", device=None, precision=None, num_heads=None):
        """Loads one of M2D's published checkpoints (``checkpoint-*.pth``).

        The front end is M2D's (:class:`~aasp_sb.features.LogMel` defaults)
        normalised with the checkpoint's ``norm_stats`` (AudioSet's -7.1, 4.2
        when it has none); frame features are laid out as M2D's runtime lays
        them out, ``b t (f d)``; inputs longer than the pre-training length
        are encoded in chunks with a shorter last chunk, as M2D's runtime does.

        Arguments
        ---------
        path : str or pathlib.Path
            The checkpoint (its folder name, e.g.
            ``m2d_vit_base-80x608p16x16-...``, gives the input size).
        which : str
            ``"online"`` (M2D's runtime) or ``"target"`` (the EMA encoder).
        device, precision : str, optional
            As in :meth:`from_run`.
        num_heads : int, optional
            Attention heads (default ``embed_dim // 64``).

        Returns
        -------
        AaSPEncoder
        """
        from aasp_sb.features import Features, LogMel, Normalize
        from aasp_sb.m2d import m2d_encoder

        encoder, info = m2d_encoder(path, num_heads=num_heads, which=which)
        mean, std = info.norm_stats
        features = Features(LogMel(n_mels=info.input_size[0]), Normalize(mean, std))
        hparams = {
            "compute_features": features,
            "encoder": encoder,
            "checkpoint": str(path),
            "which": which,
            "m2d": info._asdict(),
        }
        return cls._build(features, encoder, hparams, device, precision)

    @classmethod
    def _build(cls, features, encoder, hparams, device, precision):
        run_opts = {}
        if device is not None:
            run_opts["device"] = str(device)
        if precision is not None:
            run_opts["precision"] = precision
        return cls(
            modules={"compute_features": features, "encoder": encoder},
            hparams=hparams,
            run_opts=run_opts or None,
        )

    # ------------------------------------------------------------ properties
    @property
    def features(self):
        """The front end (waveform -> normalised log-mel)."""
        return self.mods.compute_features

    @property
    def encoder(self):
        """The :class:`~aasp_sb.lobes.encoder.AudioViT`."""
        return self.mods.encoder

    @property
    def sample_rate(self):
        """Input sample rate in Hz."""
        return int(self.features.logmel.sample_rate)

    @property
    def hop_length(self):
        """Hop of the log-mel in samples."""
        return int(self.features.logmel.hop_length)

    @property
    def frames_per_token(self):
        """Log-mel frames per patch column (the frame-feature rate)."""
        return int(self.encoder.patch_size[1])

    @property
    def frame_feature_size(self):
        """Width of one frame feature of one layer: ``Fp * D``."""
        Fp, _ = self.encoder.stem.grid(self.frames_per_token)
        return int(Fp * self.encoder.embed_dim)

    def embedding_size(self, layer=-1, pooling="mean"):
        """Width of :meth:`embed_batch`'s output for ``layer`` and ``pooling``.

        Arguments
        ---------
        layer : int or list of int
            Layer choice.
        pooling : str
            ``"mean"`` or ``"mean+max"``.

        Returns
        -------
        int
        """
        n = len(as_layer_list(layer, self.encoder.depth))
        return n * self.frame_feature_size * (2 if pooling == "mean+max" else 1)

    def frame_times(self, num_frames, num_mel_frames=None):
        """Centre times in seconds of the first ``num_frames`` frame features.

        A frame feature covers one patch column of ``pt`` log-mel frames;
        log-mel frame ``k`` is centred at ``k * hop`` (centred STFT), so
        column ``j`` is centred at ``(j * pt + (pt - 1) / 2) * hop / sr``
        (75 ms + j * 160 ms with the default 10 ms hop and 16-frame patches).
        With ``num_mel_frames``, a last, partly padded column is centred on
        its real frames instead (the time stays inside the clip).

        Arguments
        ---------
        num_frames : int
            Number of frame features.
        num_mel_frames : int, optional
            Number of real log-mel frames of the clip.

        Returns
        -------
        torch.Tensor
            ``[num_frames]`` float64 seconds.
        """
        pt = self.frames_per_token
        first = torch.arange(num_frames, dtype=torch.float64) * pt
        last = first + pt - 1
        if num_mel_frames is not None:
            last = last.clamp(max=max(int(num_mel_frames) - 1, 0))
            last = torch.maximum(last, first)
        return (first + last) / 2.0 * self.hop_length / self.sample_rate

    # ------------------------------------------------------------ inputs
    def load_audio(self, path, savedir=None):
        """Reads a file as mono float32 at the model's sample rate.

        Uses :func:`aasp_sb.data.audio.load_audio` (soundfile), which raises
        :class:`~aasp_sb.data.audio.AudioLoadError` naming the file.

        Arguments
        ---------
        path : str
            Audio file.
        savedir : None
            Unused (SpeechBrain signature).

        Returns
        -------
        torch.Tensor
            ``[S]`` waveform on the model's device.
        """
        del savedir
        return load_audio(str(path), sample_rate=self.sample_rate).to(self.device)

    @torch.no_grad()
    def compute_features(self, wavs, wav_lens=None):
        """Log-mel of each clip at its true length, padded into a batch.

        Clips of equal length are processed together.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[B, S]`` (or ``[S]``) waveforms at :attr:`sample_rate`.
        wav_lens : torch.Tensor, optional
            ``[B]`` relative lengths in (0, 1].

        Returns
        -------
        feats : torch.Tensor
            ``[B, T, F]`` normalised log-mel (zero beyond each clip's frames).
        lengths : torch.Tensor
            ``[B]`` relative frame lengths (frames / T).
        """
        wavs = torch.as_tensor(wavs, dtype=torch.float32)
        if wavs.ndim == 1:
            wavs = wavs.unsqueeze(0)
        if wavs.ndim != 2:
            raise ValueError(f"wavs must be [batch, samples], got {tuple(wavs.shape)}")
        wavs = wavs.to(self.device)
        B, S = wavs.shape
        if S == 0:
            raise ValueError("wavs: empty waveforms")
        if wav_lens is None:
            n = torch.full((B,), S, dtype=torch.long)
        else:
            n = (torch.as_tensor(wav_lens).float().cpu() * S).round().long()
            n = n.clamp(1, S)
        per_clip = [None] * B
        for length in torch.unique(n).tolist():
            idx = (n == length).nonzero().flatten().tolist()
            feats = self.features(wavs[idx, :length])
            for k, i in enumerate(idx):
                per_clip[i] = feats[k]
        frames = torch.tensor([f.shape[0] for f in per_clip])
        T = int(frames.max())
        out = per_clip[0].new_zeros(B, T, per_clip[0].shape[-1])
        for i, f in enumerate(per_clip):
            out[i, : f.shape[0]] = f
        lengths = (frames.float() / T).to(self.device)
        return out, lengths

    # ------------------------------------------------------------ outputs
    @torch.no_grad()
    def encode_features(self, feats, lengths=None, layer=-1, chunk_frames=None):
        """Encoder on log-mel features: frame features and their mask.

        Arguments
        ---------
        feats : torch.Tensor
            ``[B, T, F]`` normalised log-mel.
        lengths : torch.Tensor, optional
            ``[B]`` relative frame lengths.
        layer : int or list of int
            Layer choice (see the module docstring).
        chunk_frames : int, optional
            Chunk length for long inputs (default: the encoder's ``max_frames``).

        Returns
        -------
        frames : torch.Tensor
            ``[B, Tp, n_layers * Fp * D]`` float32.
        mask : torch.Tensor
            ``[B, Tp]`` True for frames holding real input.
        """
        layers = as_layer_list(layer, self.encoder.depth)
        last = self.encoder.depth - 1
        need_layers = any(i != last for i in layers)
        feats = feats.to(self.device)
        if lengths is not None:
            lengths = torch.as_tensor(lengths).to(self.device)
        with self.inference_ctx:
            out = self.encoder(
                feats, lengths, return_layers=need_layers, chunk_frames=chunk_frames
            )
        parts = []
        for i in layers:
            tokens = out.tokens if i == last else out.layers[i]
            view = EncoderOutput(tokens.float(), out.mask, out.grid)
            parts.append(AudioViT.frame_features(view))
        frames = torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]
        mask = AudioViT.frame_mask(out)
        if mask is None:
            mask = torch.ones(frames.shape[:2], dtype=torch.bool, device=frames.device)
        return frames, mask

    def encode_batch(self, wavs, wav_lens=None, layer=-1, return_mask=False):
        """Frame-level features of a batch of waveforms.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[B, S]`` waveforms at :attr:`sample_rate` (``[S]`` for one clip).
        wav_lens : torch.Tensor, optional
            ``[B]`` relative lengths (SpeechBrain convention).
        layer : int or list of int
            ``-1``: final (normalised) output; see the module docstring.
        return_mask : bool
            Also return the ``[B, T']`` mask of real frames.

        Returns
        -------
        torch.Tensor
            ``[B, T', Fp*D]`` (times the number of layers), zero-padded beyond
            each clip's frames; with ``return_mask``, ``(features, mask)``.
        """
        feats, lengths = self.compute_features(wavs, wav_lens)
        frames, mask = self.encode_features(feats, lengths, layer)
        frames = frames * mask.unsqueeze(-1).to(frames.dtype)
        return (frames, mask) if return_mask else frames

    def embed_batch(self, wavs, wav_lens=None, layer=-1, pooling="mean"):
        """Clip embeddings ``[B, Fp*D]``: frame features pooled over real frames.

        Also available as :meth:`frame_mean_embeddings`, the name that says
        what it is. Each frame feature stacks the ``Fp`` frequency rows of a
        patch column (``Fp * D``: 5 x 768 = 3840 for the base model), so this
        is **not** the ``[B, D]`` token mean of
        :meth:`~aasp_sb.lobes.encoder.AudioViT.clip_embedding` (see
        :meth:`token_mean_embeddings`); M2D's linear evaluation uses this one.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[B, S]`` waveforms at :attr:`sample_rate`.
        wav_lens : torch.Tensor, optional
            ``[B]`` relative lengths.
        layer : int or list of int
            Layer choice.
        pooling : str
            ``"mean"`` or ``"mean+max"``.

        Returns
        -------
        torch.Tensor
            ``[B, embedding_size(layer, pooling)]`` float32: ``Fp * D`` per
            layer, twice that with ``"mean+max"``.
        """
        frames, mask = self.encode_batch(wavs, wav_lens, layer, return_mask=True)
        return pool_frames(frames, mask, pooling)

    #: :meth:`embed_batch` under the name that says what it returns.
    frame_mean_embeddings = embed_batch

    @torch.no_grad()
    def token_mean_embeddings(self, wavs, wav_lens=None):
        """Clip embeddings ``[B, D]``: the final tokens averaged over the clip.

        The encoder's :meth:`~aasp_sb.lobes.encoder.AudioViT.clip_embedding`
        (what :mod:`aasp_sb.analysis.stability` compares), unlike the
        ``[B, Fp*D]`` :meth:`frame_mean_embeddings`.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[B, S]`` waveforms at :attr:`sample_rate`.
        wav_lens : torch.Tensor, optional
            ``[B]`` relative lengths.

        Returns
        -------
        torch.Tensor
            ``[B, D]`` float32.
        """
        feats, lengths = self.compute_features(wavs, wav_lens)
        with self.inference_ctx:
            out = self.encoder(feats, lengths)
        return AudioViT.clip_embedding(out).float()

    def forward(self, wavs, wav_lens=None):
        """Same as :meth:`embed_batch` with the defaults."""
        return self.embed_batch(wavs, wav_lens)

    def encode_file(self, path, layer=-1):
        """Frame features ``[T', Fp*D]`` of an audio file.

        Arguments
        ---------
        path : str
            Audio file (any rate / channels; resampled and down-mixed).
        layer : int or list of int
            Layer choice.

        Returns
        -------
        torch.Tensor
        """
        return self.encode_batch(self.load_audio(path).unsqueeze(0), layer=layer)[0]

    def embed_file(self, path, layer=-1, pooling="mean"):
        """Clip embedding ``[D]`` of an audio file.

        Arguments
        ---------
        path : str
            Audio file.
        layer : int or list of int
            Layer choice.
        pooling : str
            ``"mean"`` or ``"mean+max"``.

        Returns
        -------
        torch.Tensor
        """
        wav = self.load_audio(path).unsqueeze(0)
        return self.embed_batch(wav, layer=layer, pooling=pooling)[0]

    def model_fingerprint(self):
        """Hash of the weights and front-end settings (cache key for embeddings).

        Returns
        -------
        str
            40 hex digits; equal for models that compute the same function.
        """
        if self.fingerprint is None:
            self.fingerprint = module_fingerprint(self.features, self.encoder)
        return self.fingerprint


def module_fingerprint(*modules):
    """SHA-1 over the class names, state dicts and front-end settings of modules.

    Arguments
    ---------
    *modules : torch.nn.Module
        Modules to hash.

    Returns
    -------
    str

    Example
    -------
    >>> a = torch.nn.Linear(2, 2)
    >>> module_fingerprint(a) == module_fingerprint(a)
    True
    """
    import hashlib

    h = hashlib.sha1()
    for module in modules:
        for name, sub in module.named_modules():
            h.update(f"{name}:{type(sub).__name__};".encode())
            for attr in ("sample_rate", "hop_length", "n_mels", "eps", "max_frames"):
                if isinstance(getattr(sub, attr, None), (int, float)):
                    h.update(f"{attr}={getattr(sub, attr)};".encode())
        for key, value in module.state_dict().items():
            t = value.detach().cpu().contiguous()
            h.update(f"{key}{tuple(t.shape)}{t.dtype}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def inference_yaml(hparams_file, overrides=None, note=""):
    """Text of an inference ``hyperparams.yaml`` for a model YAML.

    The model YAML is resolved (references, overrides), and only
    ``compute_features``, ``encoder`` (with everything they refer to) and a
    few informative scalars are kept; ``modules`` and a ``pretrainer``
    loading ``encoder.ckpt`` are added.

    Arguments
    ---------
    hparams_file : str or pathlib.Path
        Model YAML (e.g. a run's ``hyperparams.yaml``).
    overrides : dict, optional
        Overrides applied before resolving.
    note : str
        Comment put at the top.

    Returns
    -------
    str
    """
    text = pathlib.Path(hparams_file).read_text(encoding="utf-8")
    text, _ = pin_legacy_front_end(text, hparams_file)  # runs made before mel_scale
    merged = {}
    if "!PLACEHOLDER" in text:
        merged["data_folder"] = "unused"
    merged.update(overrides or {})
    resolved = resolve_references(text, merged or None).getvalue()
    yaml = ruamel.yaml.YAML()
    doc = yaml.load(resolved)
    out = CommentedMap()
    for key in INFO_KEYS:
        value = doc.get(key)
        if value is None and key in doc or isinstance(value, (int, float, str, bool)):
            out[key] = value
    for key in ("compute_features", "encoder"):
        if key not in doc:
            raise ValueError(f"{hparams_file} has no top-level `{key}` key")
        out[key] = doc[key]
    buf = io.StringIO()
    yaml.dump(out, buf)
    header = "# AaSP inference hyper-parameters (aasp_sb.inference.export_for_inference)\n"
    if note:
        header += "".join(f"# {line}\n" for line in note.splitlines())
    return header + buf.getvalue() + INFERENCE_TAIL


def export_for_inference(
    run_or_ckpt, out_dir, which="student", hparams_file=None, overrides=None
):
    """Writes a folder that ``AaSPEncoder.from_hparams(source=out_dir)`` loads.

    The folder gets ``hyperparams.yaml`` (front end, encoder, ``modules``,
    ``pretrainer``) and ``encoder.ckpt`` (the chosen weights as a plain
    state dict). The written YAML is loaded back once to check it.

    Arguments
    ---------
    run_or_ckpt : str or pathlib.Path
        Run folder, ``save`` folder, ``CKPT+*`` folder or weights file.
    out_dir : str or pathlib.Path
        Output folder (created).
    which : str
        ``"student"`` or ``"teacher"``.
    hparams_file : str, optional
        Model YAML (default: the run's ``hyperparams.yaml``).
    overrides : dict, optional
        YAML overrides.

    Returns
    -------
    pathlib.Path
        ``out_dir``.
    """
    parts = load_pretrained(run_or_ckpt, which, hparams_file, overrides)
    yaml_path = pathlib.Path(hparams_file) if hparams_file else find_hparams(run_or_ckpt)
    note = f"source: {parts.checkpoint} ({which})\nmodel YAML: {yaml_path}"
    text = inference_yaml(yaml_path, overrides, note)
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # check the YAML builds the same architecture before writing anything
    check = load_hyperpyyaml(text)
    load_state(check["encoder"], parts.encoder.state_dict(), parts.checkpoint)
    _atomic_write(
        out_dir / "encoder.ckpt",
        lambda f: torch.save(
            {k: v.detach().cpu() for k, v in parts.encoder.state_dict().items()}, f
        ),
    )
    _atomic_write(out_dir / "hyperparams.yaml", lambda f: f.write(text.encode()))
    logger.info("Exported %s weights of %s to %s", which, parts.checkpoint, out_dir)
    return out_dir


def _atomic_write(path, write):
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


def load_encoder(
    checkpoint=None,
    which="student",
    hparams_file=None,
    overrides=None,
    random_init=False,
    seed=0,
    device=None,
    precision=None,
    m2d_checkpoint=None,
):
    """One entry point for the CLI, the HEAR API and the linear-eval recipe.

    Arguments
    ---------
    checkpoint : str, optional
        Run folder / checkpoint / exported folder (see :meth:`AaSPEncoder.from_run`),
        or one of M2D's ``checkpoint-*.pth`` files (recognised by the
        ``.pth`` suffix, see :meth:`AaSPEncoder.from_m2d`).
    which : str
        ``"student"`` or ``"teacher"``.
    hparams_file : str, optional
        Model YAML; required with ``random_init`` when no ``checkpoint`` is given.
    overrides : dict, optional
        YAML overrides.
    random_init : bool
        Build an untrained model (from ``hparams_file`` or the checkpoint's YAML).
    seed : int
        Initialisation seed for ``random_init``.
    device : str, optional
        Device.
    precision : str, optional
        Encoder autocast precision.
    m2d_checkpoint : str, optional
        An M2D checkpoint, whatever its file name (``which``: ``"student"``
        takes M2D's online encoder, ``"teacher"`` its EMA target encoder).

    Returns
    -------
    AaSPEncoder
    """
    if checkpoint and not m2d_checkpoint and str(checkpoint).endswith(".pth"):
        m2d_checkpoint = checkpoint
    if m2d_checkpoint and not random_init:
        m2d_which = {"student": "online", "teacher": "target"}.get(which, which)
        return AaSPEncoder.from_m2d(m2d_checkpoint, m2d_which, device, precision)
    if random_init:
        yaml_path = hparams_file or (find_hparams(checkpoint) if checkpoint else None)
        if yaml_path is None:
            raise ValueError("random init needs a model YAML (hparams_file / --hparams)")
        return AaSPEncoder.from_yaml(yaml_path, overrides, seed, device, precision)
    if not checkpoint:
        raise ValueError(
            "give a checkpoint (run folder, CKPT+* folder, weights file or "
            "exported folder), or ask for a random-init model with a YAML"
        )
    return AaSPEncoder.from_run(
        checkpoint, which, device, hparams_file, overrides, precision
    )
