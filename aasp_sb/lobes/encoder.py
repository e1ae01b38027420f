"""The audio ViT encoder: a patch stem, fixed 2D positions, pre-LN blocks.

M2D-style: no CLS token, fixed sine-cosine position embeddings, SDPA attention
with key-padding masks. Inputs longer than the training length are encoded in
``max_frames`` chunks concatenated along time; as in M2D's runtime, the last,
shorter chunk is encoded at its own length (trimmed positions), not padded.
"""

from typing import List, NamedTuple, Optional, Tuple

import torch
from torch import nn

from aasp_sb.features import frame_lengths
from aasp_sb.lobes.layers import Block, sincos_pos_embed_2d, trunc_normal_init
from aasp_sb.lobes.patch import token_mask


class EncoderOutput(NamedTuple):
    """What :meth:`AudioViT.forward` returns.

    tokens: ``[B, Fp*Tp, D]`` final (layer-normalised) tokens, frequency-major.
    mask: ``[B, Fp*Tp]`` True for real tokens, or None (no padding).
    grid: ``(Fp, Tp)``.
    layers: per-block outputs ``[B, Fp*Tp, D]`` when requested, else None.
    """

    tokens: torch.Tensor
    mask: Optional[torch.Tensor]
    grid: Tuple[int, int]
    layers: Optional[List[torch.Tensor]] = None


def masked_mean(x, mask, dim=1):
    """Mean of ``x`` over ``dim`` counting only positions where ``mask`` is True.

    Arguments
    ---------
    x : torch.Tensor
        ``[B, N, D]``.
    mask : torch.Tensor or None
        ``[B, N]`` boolean.
    dim : int
        Axis to reduce.

    Returns
    -------
    torch.Tensor

    Example
    -------
    >>> x = torch.tensor([[[1.0], [3.0], [9.0]]])
    >>> masked_mean(x, torch.tensor([[True, True, False]])).item()
    2.0
    """
    if mask is None:
        return x.mean(dim)
    w = mask.to(x.dtype).unsqueeze(-1)
    return (x * w).sum(dim) / w.sum(dim).clamp_min(1.0)


class AudioViT(nn.Module):
    """Audio spectrogram transformer on a pluggable patch stem.

    Arguments
    ---------
    stem : torch.nn.Module
        :class:`~aasp_sb.lobes.patch.PatchEmbed` or
        :class:`~aasp_sb.lobes.aape.AaPE` (anything with ``patch_size``,
        ``n_mels``, ``embed_dim``, ``grid(T)`` and ``forward(x, lengths)``).
    embed_dim : int
        Token width; must equal the stem's.
    depth : int
        Number of transformer blocks.
    num_heads : int
        Attention heads.
    mlp_ratio : float
        MLP width multiple.
    max_frames : int
        Training input length in frames; longer inputs are chunked.
    drop_path : float
        Stochastic depth at the last block (linearly increasing).
    long_inputs : str
        Inputs longer than ``max_frames``: ``"chunk"`` (default) encodes
        ``max_frames`` chunks separately and concatenates them (no attention
        across chunks); ``"extend"`` encodes the whole clip as one sequence
        with the sin-cos positions computed for the wider grid, as M2D's
        fine-tuning does for AS-20K (1001 frames) and VoxCeleb1 (821; EVAR
        ``dur_frames``). The first ``max_frames`` columns of the extended
        table equal the training table (sin-cos positions depend on the
        column index only).
    cls_token : bool
        Prepends a learned CLS token (position embedding zero) to every
        sequence the blocks see (each chunk), takes part in attention and is
        dropped from the outputs, as M2D's encoder does. Off by default (our
        pre-training uses none); on for M2D weights
        (:mod:`aasp_sb.m2d`).
    pos_layout : str
        ``"freq_time"`` (default: the frequency half of the sin-cos channels
        first) or ``"time_freq"`` (MAE's / M2D's layout, for M2D weights).

    Example
    -------
    >>> from aasp_sb.lobes.patch import PatchEmbed
    >>> enc = AudioViT(PatchEmbed(80, 16, 32), embed_dim=32, depth=2, num_heads=4, max_frames=96)
    >>> out = enc(torch.randn(2, 200, 80), torch.tensor([1.0, 0.6]))
    >>> out.tokens.shape, out.grid
    (torch.Size([2, 65, 32]), (5, 13))
    >>> enc.frame_features(out).shape
    torch.Size([2, 13, 160])
    >>> enc.clip_embedding(out).shape
    torch.Size([2, 32])
    >>> ext = AudioViT(PatchEmbed(80, 16, 32), 32, 2, 4, max_frames=96, long_inputs="extend")
    >>> ext(torch.randn(2, 200, 80)).grid
    (5, 13)
    """

    LONG_INPUTS = ("chunk", "extend")
    POS_LAYOUTS = ("freq_time", "time_freq")

    def __init__(
        self,
        stem,
        embed_dim=768,
        depth=12,
        num_heads=12,
        mlp_ratio=4.0,
        max_frames=608,
        drop_path=0.0,
        long_inputs="chunk",
        cls_token=False,
        pos_layout="freq_time",
    ):
        super().__init__()
        if pos_layout not in self.POS_LAYOUTS:
            raise ValueError(
                f"pos_layout must be one of {self.POS_LAYOUTS}, got {pos_layout!r}"
            )
        self.pos_layout = pos_layout
        if long_inputs not in self.LONG_INPUTS:
            raise ValueError(
                f"long_inputs must be one of {self.LONG_INPUTS}, got {long_inputs!r}"
            )
        self.long_inputs = long_inputs
        if stem.embed_dim != embed_dim:
            raise ValueError(
                f"stem embed_dim={stem.embed_dim} differs from encoder "
                f"embed_dim={embed_dim}: set both from the same `embed_dim` key"
            )
        pt = stem.patch_size[1]
        if max_frames % pt:
            raise ValueError(
                f"max_frames={max_frames} must be a multiple of the patch "
                f"width {pt}"
            )
        self.stem = stem
        self.embed_dim = embed_dim
        self.depth = depth
        self.max_frames = max_frames
        self.blocks = nn.ModuleList(
            [
                Block(
                    embed_dim,
                    num_heads,
                    mlp_ratio,
                    drop_path=drop_path * i / max(depth - 1, 1),
                )
                for i in range(depth)
            ]
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        Fp, Tp = stem.grid(max_frames)
        self.register_buffer("pos_embed", self.sincos(Fp, Tp), persistent=False)
        self.blocks.apply(trunc_normal_init)
        self.cls_token = None
        if cls_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            nn.init.normal_(self.cls_token, std=0.02)

    def sincos(self, Fp, Tp):
        """Fixed sin-cos positions ``[Fp*Tp, D]`` in this encoder's channel layout."""
        return sincos_pos_embed_2d(
            self.embed_dim, Fp, Tp, time_first=self.pos_layout == "time_freq"
        )

    @property
    def patch_size(self):
        """``(pf, pt)`` of the stem."""
        return self.stem.patch_size

    @property
    def n_mels(self):
        """Number of mel bins the stem expects."""
        return self.stem.n_mels

    def positions(self, grid):
        """Position embeddings ``[Fp*Tp, D]`` for a grid no wider than the training one."""
        Fp, Tp = grid
        Fmax, Tmax = self.stem.grid(self.max_frames)
        if Tp > Tmax and Fp == Fmax and self.long_inputs == "extend":
            return self.sincos(Fp, Tp).to(self.pos_embed.device)
        if Tp > Tmax or Fp != Fmax:
            raise ValueError(
                f"grid {grid} exceeds the position table {(Fmax, Tmax)}; "
                "encode long inputs with forward(), which chunks them"
            )
        return self.pos_embed.view(Fmax, Tmax, -1)[:, :Tp].reshape(Fp * Tp, -1)

    def embed(self, x, lengths=None):
        """Stem + positions for inputs up to ``max_frames`` frames.

        Arguments
        ---------
        x : torch.Tensor
            ``[B, T, F]`` normalised log-mel, ``T <= max_frames`` (any ``T``
            with ``long_inputs="extend"``).
        lengths : torch.Tensor, optional
            ``[B]`` relative lengths.

        Returns
        -------
        tokens : torch.Tensor
            ``[B, N, D]`` with positions added.
        mask : torch.Tensor or None
            ``[B, N]`` True for real tokens.
        grid : tuple
            ``(Fp, Tp)``.
        """
        grid = self.stem.grid(x.shape[1])
        tokens = self.stem(x, lengths)
        tokens = tokens + self.positions(grid).to(tokens.dtype)
        valid = frame_lengths(lengths, x.shape[1])
        return tokens, token_mask(valid, grid, self.patch_size[1]), grid

    def encode(self, tokens, mask=None, return_layers=False):
        """Runs the blocks on (possibly subsampled) tokens.

        Arguments
        ---------
        tokens : torch.Tensor
            ``[B, N, D]`` tokens with positions.
        mask : torch.Tensor, optional
            ``[B, N]`` True for real tokens.
        return_layers : bool
            Also return every block's output.

        Returns
        -------
        tokens : torch.Tensor
            ``[B, N, D]`` after the final LayerNorm.
        layers : list of torch.Tensor or None
        """
        layers = [] if return_layers else None
        if mask is not None and not torch.compiler.is_compiling() and bool(mask.all()):
            mask = None  # nothing to mask: let SDPA take its fastest (mask-free) path
        skip = 0
        if self.cls_token is not None:  # M2D: a CLS token in every sequence, dropped after
            cls = self.cls_token.to(tokens.dtype).expand(tokens.shape[0], -1, -1)
            tokens = torch.cat([cls, tokens], dim=1)
            if mask is not None:
                mask = nn.functional.pad(mask, (1, 0), value=True)
            skip = 1
        for blk in self.blocks:
            tokens = blk(tokens, key_padding_mask=mask)
            if return_layers:
                layers.append(tokens[:, skip:])
        return self.norm(tokens)[:, skip:], layers

    def forward(self, x, lengths=None, return_layers=False, chunk_frames=None):
        """Encodes a batch of any length, chunking beyond ``chunk_frames``.

        Arguments
        ---------
        x : torch.Tensor
            ``[B, T, F]`` normalised log-mel.
        lengths : torch.Tensor, optional
            ``[B]`` relative lengths.
        return_layers : bool
            Also return per-block outputs.
        chunk_frames : int, optional
            Chunk length (a multiple of the patch width, at most
            ``max_frames``; default ``max_frames``).

        Returns
        -------
        EncoderOutput
        """
        chunk = chunk_frames or self.max_frames
        pt = self.patch_size[1]
        if chunk % pt or chunk > self.max_frames:
            raise ValueError(
                f"chunk_frames={chunk} must be a multiple of {pt} and at most "
                f"max_frames={self.max_frames}"
            )
        B, T, F = x.shape
        one_sequence = self.long_inputs == "extend" and chunk_frames is None
        if T <= chunk or one_sequence:
            tokens, mask, grid = self.embed(x, lengths)
            tokens, layers = self.encode(tokens, mask, return_layers)
            return EncoderOutput(tokens, mask, grid, layers)
        return self._forward_chunked(x, lengths, return_layers, chunk)

    def _encode_chunks(self, xc, valid, return_layers):
        """Encodes ``[N, L, F]`` chunks with ``valid`` real frames each (mask only if needed)."""
        lengths = None
        if bool((valid < xc.shape[1]).any()):
            lengths = valid.clamp_min(1).float() / xc.shape[1]
        tokens, mask, grid = self.embed(xc, lengths)
        tokens, layers = self.encode(tokens, mask, return_layers)
        return tokens, layers, grid

    def _forward_chunked(self, x, lengths, return_layers, chunk):
        """Full ``chunk``-frame chunks in one batch, the shorter last chunk at its own length.

        M2D's runtime does the same (the last chunk is encoded with trimmed
        position embeddings, not padded to ``chunk`` frames), so no compute is
        spent on padding a shorter chunk avoids. Chunks that hold no real
        frame keep one (masked) frame so attention stays defined; chunks that
        are all real frames run without an attention mask (SDPA's fastest
        path).
        """
        B, T, F = x.shape
        C = -(-T // chunk)
        pt = self.patch_size[1]
        valid = frame_lengths(lengths, T)
        if valid is None:
            valid = torch.full((B,), T, device=x.device, dtype=torch.long)
        starts = torch.arange(C, device=x.device) * chunk
        chunk_valid = (valid[:, None] - starts[None, :]).clamp(0, chunk)  # [B, C]
        full_frames = (C - 1) * chunk
        head = x[:, :full_frames].reshape(B * (C - 1), chunk, F)
        tok_h, lay_h, (Fp, Tpc) = self._encode_chunks(
            head, chunk_valid[:, :-1].reshape(-1), return_layers
        )
        tail = x[:, full_frames:]
        tok_t, lay_t, (_, Tpl) = self._encode_chunks(
            tail, chunk_valid[:, -1].clamp_max(tail.shape[1]), return_layers
        )
        Tp = -(-T // pt)

        def merge(h, t):
            h = h.view(B, C - 1, Fp, Tpc, -1).transpose(1, 2).reshape(B, Fp, -1, h.shape[-1])
            t = t.view(B, Fp, Tpl, -1)
            return torch.cat([h, t], dim=2).reshape(B, Fp * Tp, -1)

        full_mask = token_mask(valid, (Fp, Tp), pt) if lengths is not None else None
        layers = None
        if return_layers:
            layers = [merge(h, t) for h, t in zip(lay_h, lay_t)]
        return EncoderOutput(merge(tok_h, tok_t), full_mask, (Fp, Tp), layers)

    @staticmethod
    def frame_features(out):
        """``(f t) d -> t (f d)``: frame-level features ``[B, Tp, Fp*D]``.

        Arguments
        ---------
        out : EncoderOutput

        Returns
        -------
        torch.Tensor
        """
        Fp, Tp = out.grid
        B, _, D = out.tokens.shape
        t = out.tokens.view(B, Fp, Tp, D).permute(0, 2, 1, 3)
        return t.reshape(B, Tp, Fp * D)

    @staticmethod
    def frame_mask(out):
        """``[B, Tp]`` True for real frames of :meth:`frame_features` (or None)."""
        if out.mask is None:
            return None
        Fp, Tp = out.grid
        return out.mask.view(-1, Fp, Tp)[:, 0]

    @staticmethod
    def clip_embedding(out):
        """Clip-level mean of the real tokens ``[B, D]``."""
        return masked_mean(out.tokens, out.mask)
