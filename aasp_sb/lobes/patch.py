"""The plain ViT patch stem and the padding helpers every stem shares.

A stem maps a normalised log-mel ``[B, T, F]`` to tokens ``[B, N, D]`` in
frequency-major order, without position embeddings (the encoder adds them).
Frames beyond a clip's relative length are zeroed before patchifying, so the
amount of padding in a batch never changes a clip's tokens.
"""

import torch
from torch import nn

from aasp_sb.features import frame_lengths
from aasp_sb.lobes.layers import xavier_conv_init
from aasp_sb.masking import gather_tokens


def as_pair(size, name="patch_size"):
    """Returns ``(pf, pt)`` from an int or a pair, checking positivity.

    Example
    -------
    >>> as_pair(16)
    (16, 16)
    """
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"{name} must be a positive int or pair, got {size}")
    return int(pair[0]), int(pair[1])


def check_patch_grid(n_mels, patch_size):
    """Raises a ValueError naming the keys when ``pf`` does not divide ``n_mels``.

    Arguments
    ---------
    n_mels : int
        Number of mel bins.
    patch_size : tuple
        ``(pf, pt)``.

    Returns
    -------
    int
        Number of patch rows ``n_mels // pf``.

    Example
    -------
    >>> check_patch_grid(80, (16, 16))
    5
    """
    pf = patch_size[0]
    if n_mels % pf:
        raise ValueError(
            f"patch_size[0]={pf} must divide n_mels={n_mels}: check the "
            "`patch_size` and `n_mels` keys of your hparams"
        )
    return n_mels // pf


def prepare_frames(x, lengths, patch_t):
    """Zeroes frames beyond each clip's length and pads time to a multiple of ``patch_t``.

    Arguments
    ---------
    x : torch.Tensor
        ``[B, T, F]`` features.
    lengths : torch.Tensor or None
        ``[B]`` relative lengths.
    patch_t : int
        Patch width in frames.

    Returns
    -------
    x : torch.Tensor
        ``[B, T', F]`` with ``T'`` the next multiple of ``patch_t``.
    valid_frames : torch.Tensor or None
        ``[B]`` number of real frames (None when ``lengths`` is None and no
        padding was needed).

    Example
    -------
    >>> x, n = prepare_frames(torch.ones(2, 20, 4), torch.tensor([1.0, 0.5]), 16)
    >>> x.shape, n.tolist(), x[1, 10:].abs().sum().item()
    (torch.Size([2, 32, 4]), [20, 10], 0.0)
    """
    B, T, _ = x.shape
    valid = frame_lengths(lengths, T)
    if valid is not None:
        keep = torch.arange(T, device=x.device)[None, :] < valid[:, None]
        x = x * keep.unsqueeze(-1).to(x.dtype)
    pad = (-T) % patch_t
    if pad:
        x = nn.functional.pad(x, (0, 0, 0, pad))
        if valid is None:  # the time padding added here is not signal either
            valid = torch.full((B,), T, device=x.device, dtype=torch.long)
    return x, valid


def token_mask(valid_frames, grid, patch_t):
    """Boolean ``[B, Fp*Tp]`` mask, True for tokens whose patch holds real frames.

    Arguments
    ---------
    valid_frames : torch.Tensor or None
        ``[B]`` number of real frames.
    grid : tuple
        ``(Fp, Tp)``.
    patch_t : int
        Patch width in frames.

    Returns
    -------
    torch.Tensor or None

    Example
    -------
    >>> token_mask(torch.tensor([20, 16]), (2, 2), 16).tolist()
    [[True, True, True, True], [True, False, True, False]]
    """
    if valid_frames is None:
        return None
    Fp, Tp = grid
    cols = torch.arange(Tp, device=valid_frames.device)
    valid_cols = (valid_frames + patch_t - 1) // patch_t
    keep = cols[None, :] < valid_cols[:, None]  # [B, Tp]
    return keep.unsqueeze(1).expand(-1, Fp, -1).reshape(len(valid_frames), -1)


class PatchEmbed(nn.Module):
    """Plain ViT patch stem: a ``(pf, pt)`` convolution with stride ``(pf, pt)``.

    Arguments
    ---------
    n_mels : int
        Number of mel bins ``F``; ``pf`` must divide it.
    patch_size : int or tuple
        ``(pf, pt)`` patch size in (mel bins, frames).
    embed_dim : int
        Token width ``D``.

    Example
    -------
    >>> stem = PatchEmbed(n_mels=80, patch_size=16, embed_dim=32)
    >>> stem(torch.randn(2, 100, 80)).shape
    torch.Size([2, 35, 32])
    >>> stem.grid(100)
    (5, 7)
    """

    def __init__(self, n_mels=80, patch_size=16, embed_dim=768):
        super().__init__()
        self.n_mels = n_mels
        self.patch_size = as_pair(patch_size)
        self.embed_dim = embed_dim
        self.num_rows = check_patch_grid(n_mels, self.patch_size)
        self.proj = nn.Conv2d(
            1, embed_dim, kernel_size=self.patch_size, stride=self.patch_size
        )
        xavier_conv_init(self.proj)

    def grid(self, num_frames):
        """Patch grid ``(Fp, Tp)`` for ``num_frames`` input frames."""
        pt = self.patch_size[1]
        return self.num_rows, -(-num_frames // pt)

    def check_input(self, x):
        """Raises a clear error when ``x`` is not ``[B, T, n_mels]``."""
        if x.ndim != 3 or x.shape[-1] != self.n_mels:
            raise ValueError(
                f"{type(self).__name__} expects [batch, time, n_mels={self.n_mels}] "
                f"features, got shape {tuple(x.shape)}: check the `n_mels` key "
                "against the features (and the checkpoint)"
            )

    def patchify(self, x):
        """``[B, T', F]`` (T' a multiple of pt) -> tokens ``[B, Fp*Tp, D]``."""
        y = self.proj(x.transpose(1, 2).unsqueeze(1))  # [B, D, Fp, Tp]
        return y.flatten(2).transpose(1, 2)

    def forward(self, x, lengths=None):
        """Tokenises a batch of log-mel spectrograms.

        Arguments
        ---------
        x : torch.Tensor
            ``[B, T, F]`` normalised log-mel.
        lengths : torch.Tensor, optional
            ``[B]`` relative lengths; frames beyond them are zeroed first.

        Returns
        -------
        torch.Tensor
            ``[B, Fp*Tp, D]`` tokens, frequency-major.
        """
        self.check_input(x)
        x, _ = prepare_frames(x, lengths, self.patch_size[1])
        return self.patchify(x)

    def forward_views(self, x, visible, lengths=None):
        """Tokens of the visible patches of every masked view: ``[B*M, Nv, D]``.

        The plain stem is local to its patch, so running it once per clip and
        gathering the visible tokens computes each view's tokens from its
        visible patches only (stems that are not local override this).

        Arguments
        ---------
        x : torch.Tensor
            ``[B, T, F]`` normalised log-mel.
        visible : torch.Tensor
            ``[B, M, Nv]`` visible token indices per view.
        lengths : torch.Tensor, optional
            ``[B]`` relative lengths.

        Returns
        -------
        torch.Tensor
            Row ``b*M + m`` holds view ``m`` of clip ``b``.

        Example
        -------
        >>> stem = PatchEmbed(n_mels=80, patch_size=16, embed_dim=8)
        >>> stem.forward_views(torch.randn(2, 64, 80), torch.zeros(2, 3, 5, dtype=torch.long)).shape
        torch.Size([6, 5, 8])
        """
        return gather_tokens(self(x, lengths), visible)
