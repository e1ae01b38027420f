"""Cross-attention predictor of the masked tokens' teacher features.

**[paper]** AaSP predicts the teacher's features of the masked tokens with a
cross-attention predictor. **Our design** of it: one query per masked
position (a learned mask token plus the fixed 2D sin-cos embedding of that
position) attends to the student's outputs of the visible tokens (projected
to the predictor width, plus their positions); ``depth`` pre-LN
:class:`~aasp_sb.lobes.layers.CrossBlock` layers (optionally with
self-attention among the queries), then LayerNorm and a Linear map to the
teacher's width. The queries never see each other unless
``self_attention=True``, so the cost is linear in the number of masked
tokens.
"""

import torch
from torch import nn

from aasp_sb.lobes.layers import (
    CrossBlock,
    sincos_pos_embed_2d,
    trunc_normal_init,
)


class CrossAttentionPredictor(nn.Module):
    """Predicts features at masked positions from the visible tokens.

    Arguments
    ---------
    encoder_dim : int
        Width of the student's outputs (the context).
    predictor_dim : int
        Width inside the predictor (multiple of 4 and of ``num_heads``).
    depth : int
        Number of cross-attention blocks.
    num_heads : int
        Attention heads.
    mlp_ratio : float
        MLP hidden width as a multiple of ``predictor_dim``.
    output_dim : int, optional
        Width of the predictions (the teacher's width); defaults to
        ``encoder_dim``.
    self_attention : bool
        Whether the queries also attend to each other in every block.

    Example
    -------
    >>> pred = CrossAttentionPredictor(32, predictor_dim=16, depth=2, num_heads=4)
    >>> vis = torch.tensor([[0, 2, 5], [1, 3, 4]])
    >>> msk = torch.tensor([[1, 3, 4], [0, 2, 5]])
    >>> pred(torch.randn(2, 3, 32), vis, msk, grid=(2, 3)).shape
    torch.Size([2, 3, 32])
    """

    def __init__(
        self,
        encoder_dim,
        predictor_dim=512,
        depth=4,
        num_heads=16,
        mlp_ratio=4.0,
        output_dim=None,
        self_attention=False,
    ):
        super().__init__()
        if predictor_dim % 4:
            raise ValueError(
                f"predictor_dim must be a multiple of 4 (2D sin-cos positions), "
                f"got {predictor_dim}"
            )
        self.encoder_dim = encoder_dim
        self.predictor_dim = predictor_dim
        self.output_dim = output_dim or encoder_dim
        self.context_proj = nn.Linear(encoder_dim, predictor_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, predictor_dim))
        self.blocks = nn.ModuleList(
            [
                CrossBlock(
                    predictor_dim,
                    num_heads,
                    mlp_ratio=mlp_ratio,
                    self_attention=self_attention,
                )
                for _ in range(depth)
            ]
        )
        self.norm = nn.LayerNorm(predictor_dim, eps=1e-6)
        self.head = nn.Linear(predictor_dim, self.output_dim)
        self.apply(trunc_normal_init)
        nn.init.normal_(self.mask_token, std=0.02)
        # Fixed tables keyed by (grid_f, grid_t, device); not in state_dict.
        self._pos_cache = {}

    def pos_table(self, grid, device):
        """The ``[Fp * Tp, predictor_dim]`` sin-cos table for a patch grid.

        Arguments
        ---------
        grid : tuple of int
            Patch grid ``(Fp, Tp)``.
        device : torch.device
            Device of the table.

        Returns
        -------
        torch.Tensor
            Float32 ``[Fp * Tp, predictor_dim]`` (cached per grid and device).
        """
        key = (int(grid[0]), int(grid[1]), str(device))
        table = self._pos_cache.get(key)
        if table is None:
            table = sincos_pos_embed_2d(self.predictor_dim, key[0], key[1])
            table = table.to(device)
            self._pos_cache[key] = table
        return table

    def forward(
        self, context, visible_idx, masked_idx, grid, key_padding_mask=None
    ):
        """Predicts the features of the masked tokens of every view.

        Arguments
        ---------
        context : torch.Tensor
            Student outputs of the visible tokens ``[B', Nv, encoder_dim]``.
        visible_idx : torch.Tensor
            Long ``[B', Nv]`` grid positions of the context tokens.
        masked_idx : torch.Tensor
            Long ``[B', Nm]`` grid positions to predict.
        grid : tuple of int
            Patch grid ``(Fp, Tp)``; positions index the frequency-major
            ``Fp * Tp`` grid.
        key_padding_mask : torch.Tensor, optional
            Boolean ``[B', Nv]``, True for real context tokens.

        Returns
        -------
        torch.Tensor
            Predictions ``[B', Nm, output_dim]``.
        """
        if context.shape[:2] != visible_idx.shape:
            raise ValueError(
                f"context {tuple(context.shape)} and visible_idx "
                f"{tuple(visible_idx.shape)} disagree"
            )
        kv = self.context_proj(context)
        pos = self.pos_table(grid, kv.device).to(kv.dtype)
        kv = kv + pos[visible_idx]
        queries = self.mask_token.to(kv.dtype) + pos[masked_idx]
        for blk in self.blocks:
            queries = blk(queries, kv, key_padding_mask=key_padding_mask)
        return self.head(self.norm(queries))
