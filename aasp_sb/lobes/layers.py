"""Transformer layers shared by the encoder and the predictor.

All attention goes through :func:`torch.nn.functional.scaled_dot_product_attention`
(SDPA), which picks the fused flash / memory-efficient kernels on CUDA.

Masks follow one convention everywhere in the package: a boolean
``key_padding_mask`` of shape ``[B, N]`` is **True for real tokens** and False
for padding.
"""

import torch
import torch.nn.functional as F
from torch import nn


def sincos_pos_embed_1d(embed_dim, positions):
    """Fixed sine-cosine embedding of 1D positions.

    Arguments
    ---------
    embed_dim : int
        Output width (even).
    positions : torch.Tensor
        Positions, any shape.

    Returns
    -------
    torch.Tensor
        ``[*positions.shape, embed_dim]``.

    Example
    -------
    >>> sincos_pos_embed_1d(8, torch.arange(3.0)).shape
    torch.Size([3, 8])
    """
    if embed_dim % 2:
        raise ValueError(f"embed_dim must be even, got {embed_dim}")
    omega = torch.arange(embed_dim // 2, dtype=torch.float64)
    omega = 1.0 / 10000 ** (omega / (embed_dim / 2.0))
    out = positions.double().unsqueeze(-1) * omega
    return torch.cat([out.sin(), out.cos()], dim=-1).float()


def sincos_pos_embed_2d(embed_dim, grid_f, grid_t, time_first=False):
    """Fixed 2D sine-cosine position embeddings for a (frequency, time) grid.

    Half of the channels encode the frequency row, half the time column
    (frequency first; ``time_first=True`` puts the time half first, the layout
    of MAE's ``get_2d_sincos_pos_embed``, which M2D's checkpoints use).
    Rows are ordered frequency-major, matching the patch stems' token order
    (token ``i`` sits at row ``i // grid_t``, column ``i % grid_t``).

    Arguments
    ---------
    embed_dim : int
        Output width (multiple of 4).
    grid_f : int
        Number of patch rows (frequency).
    grid_t : int
        Number of patch columns (time).
    time_first : bool
        Time half first (MAE / M2D layout).

    Returns
    -------
    torch.Tensor
        ``[grid_f * grid_t, embed_dim]``.

    Example
    -------
    >>> pos = sincos_pos_embed_2d(16, 5, 38)
    >>> pos.shape
    torch.Size([190, 16])
    >>> bool(torch.equal(sincos_pos_embed_2d(16, 5, 38, time_first=True), pos.roll(8, -1)))
    True
    """
    if embed_dim % 4:
        raise ValueError(f"embed_dim must be a multiple of 4, got {embed_dim}")
    f = torch.arange(grid_f).repeat_interleave(grid_t)
    t = torch.arange(grid_t).repeat(grid_f)
    halves = [
        sincos_pos_embed_1d(embed_dim // 2, f),
        sincos_pos_embed_1d(embed_dim // 2, t),
    ]
    return torch.cat(halves[::-1] if time_first else halves, dim=-1)


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample.

    Arguments
    ---------
    p : float
        Drop probability (0 disables it).

    Example
    -------
    >>> DropPath(0.0)(torch.ones(2, 3)).sum().item()
    6.0
    """

    def __init__(self, p=0.0):
        super().__init__()
        self.p = p

    def forward(self, x):
        """Applies stochastic depth in training mode."""
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = x.new_empty(shape).bernoulli_(keep)
        return x * mask / keep


class Mlp(nn.Module):
    """Two-layer perceptron with GELU.

    Arguments
    ---------
    dim : int
        Input and output width.
    hidden : int
        Hidden width.
    dropout : float
        Dropout after each layer.

    Example
    -------
    >>> Mlp(8, 32)(torch.randn(2, 5, 8)).shape
    torch.Size([2, 5, 8])
    """

    def __init__(self, dim, hidden, dropout=0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        """Computes the MLP."""
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def attention_mask(key_padding_mask):
    """Turns a ``[B, Nk]`` key padding mask (True = real) into an SDPA mask.

    Arguments
    ---------
    key_padding_mask : torch.Tensor or None
        Boolean ``[B, Nk]``.

    Returns
    -------
    torch.Tensor or None
        Boolean ``[B, 1, 1, Nk]`` (True = attend), or None.

    Example
    -------
    >>> attention_mask(torch.tensor([[True, False]])).shape
    torch.Size([1, 1, 1, 2])
    """
    if key_padding_mask is None:
        return None
    return key_padding_mask[:, None, None, :]


class Attention(nn.Module):
    """Multi-head (self- or cross-) attention on SDPA.

    Arguments
    ---------
    dim : int
        Query width (and output width).
    num_heads : int
        Number of heads; must divide ``dim``.
    kv_dim : int, optional
        Width of the context for cross-attention (defaults to ``dim``).
    qkv_bias : bool
        Bias on the input projections.
    dropout : float
        Attention and output dropout.

    Example
    -------
    >>> attn = Attention(16, 4)
    >>> x = torch.randn(2, 5, 16)
    >>> attn(x).shape
    torch.Size([2, 5, 16])
    >>> attn(x[:, :2], context=x).shape
    torch.Size([2, 2, 16])
    """

    def __init__(self, dim, num_heads, kv_dim=None, qkv_bias=True, dropout=0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(
                f"num_heads={num_heads} must divide the width dim={dim}"
            )
        kv_dim = kv_dim or dim
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(kv_dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x, context=None, key_padding_mask=None):
        """Attends from ``x`` to ``context`` (``x`` itself when None).

        Arguments
        ---------
        x : torch.Tensor
            Queries ``[B, Nq, dim]``.
        context : torch.Tensor, optional
            Keys/values ``[B, Nk, kv_dim]``.
        key_padding_mask : torch.Tensor, optional
            ``[B, Nk]``, True for real keys.

        Returns
        -------
        torch.Tensor
            ``[B, Nq, dim]``.
        """
        context = x if context is None else context
        B, Nq, D = x.shape
        H = self.num_heads
        q = self.q(x).view(B, Nq, H, D // H).transpose(1, 2)
        k, v = (
            self.kv(context)
            .view(B, context.shape[1], 2, H, D // H)
            .permute(2, 0, 3, 1, 4)
        )
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attention_mask(key_padding_mask),
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.proj(out.transpose(1, 2).reshape(B, Nq, D))


class Block(nn.Module):
    """Pre-LN transformer block: self-attention then MLP, both residual.

    Arguments
    ---------
    dim : int
        Token width.
    num_heads : int
        Attention heads.
    mlp_ratio : float
        MLP hidden width as a multiple of ``dim``.
    drop_path : float
        Stochastic depth probability.
    dropout : float
        Dropout inside attention and MLP.

    Example
    -------
    >>> blk = Block(16, 4)
    >>> blk(torch.randn(2, 5, 16)).shape
    torch.Size([2, 5, 16])
    """

    def __init__(self, dim, num_heads, mlp_ratio=4.0, drop_path=0.0, dropout=0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout=dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x, key_padding_mask=None):
        """Runs the block; padded keys are excluded from attention."""
        x = x + self.drop_path(
            self.attn(self.norm1(x), key_padding_mask=key_padding_mask)
        )
        return x + self.drop_path(self.mlp(self.norm2(x)))


class CrossBlock(nn.Module):
    """Pre-LN block whose queries attend to a context (then optional self-attention and MLP).

    Arguments
    ---------
    dim : int
        Query width.
    num_heads : int
        Attention heads.
    mlp_ratio : float
        MLP hidden width as a multiple of ``dim``.
    self_attention : bool
        Whether queries also attend to each other after the cross-attention.

    Example
    -------
    >>> blk = CrossBlock(16, 4, self_attention=True)
    >>> blk(torch.randn(2, 3, 16), torch.randn(2, 7, 16)).shape
    torch.Size([2, 3, 16])
    """

    def __init__(self, dim, num_heads, mlp_ratio=4.0, self_attention=False):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim, eps=1e-6)
        self.norm_kv = nn.LayerNorm(dim, eps=1e-6)
        self.cross = Attention(dim, num_heads)
        self.self_attention = self_attention
        if self_attention:
            self.norm_self = nn.LayerNorm(dim, eps=1e-6)
            self.self_attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, queries, context, key_padding_mask=None):
        """Updates ``queries`` from ``context`` (``key_padding_mask`` on the context)."""
        x = queries + self.cross(
            self.norm_q(queries),
            context=self.norm_kv(context),
            key_padding_mask=key_padding_mask,
        )
        if self.self_attention:
            x = x + self.self_attn(self.norm_self(x))
        return x + self.mlp(self.norm2(x))


def trunc_normal_init(module):
    """Initialises Linear layers (truncated normal, std 0.02) and LayerNorms.

    Arguments
    ---------
    module : torch.nn.Module
        Module to initialise in place (use with ``Module.apply``).

    Example
    -------
    >>> _ = Mlp(4, 8).apply(trunc_normal_init)
    """
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def xavier_conv_init(conv):
    """Initialises a patch convolution like a Linear layer (MAE's choice).

    Arguments
    ---------
    conv : torch.nn.Conv2d
        The patchify convolution.

    Example
    -------
    >>> xavier_conv_init(nn.Conv2d(1, 8, 4, 4))
    """
    w = conv.weight.data
    nn.init.xavier_uniform_(w.view(w.shape[0], -1))
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


