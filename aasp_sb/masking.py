"""Multi-mask generation for masked modelling.

AaSP draws ``M`` independent random masks per clip **[paper: multi-mask]**;
the clip's tokens are computed once and the ``M`` masked views are batched.
Masks are index tensors (not boolean maps) so that the student encodes only
the visible tokens, which is where M2D-style pre-training gets its speed.

Views are flattened **clip-major**: view ``m`` of clip ``b`` is row
``b * M + m`` of every ``[B * M, ...]`` tensor in the package.
"""

import torch


def num_visible(num_tokens, mask_ratio):
    """Number of visible tokens per view, M2D's rounding.

    ``int(num_tokens * (1 - mask_ratio))``, clamped so that at least one
    token is visible and at least one is masked.

    Arguments
    ---------
    num_tokens : int
        Tokens per clip ``N`` (at least 2).
    mask_ratio : float
        Fraction of masked tokens, in (0, 1).

    Returns
    -------
    int
        ``Nv``; the number of masked tokens is ``N - Nv``.

    Example
    -------
    >>> num_visible(190, 0.7)
    57
    >>> num_visible(10, 0.99)
    1
    """
    if not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
    if num_tokens < 2:
        raise ValueError(
            f"num_tokens must be at least 2 to mask and keep one, got {num_tokens}"
        )
    nv = int(num_tokens * (1.0 - mask_ratio))
    return min(max(nv, 1), num_tokens - 1)


def multi_mask(
    batch_size,
    num_tokens,
    num_masks,
    mask_ratio,
    generator=None,
    device=None,
):
    """Draws ``num_masks`` random masks for each clip of a batch.

    Each mask is a uniformly random subset of ``Nm = N - Nv`` masked tokens
    (argsort of uniform noise, as in MAE/M2D), drawn independently per clip
    and per view. Both index sets come back sorted, so the visible tokens keep
    their frequency-major order.

    Arguments
    ---------
    batch_size : int
        Number of clips ``B``.
    num_tokens : int
        Tokens per clip ``N``.
    num_masks : int
        Masks (views) per clip ``M`` (at least 1).
    mask_ratio : float
        Fraction of masked tokens, in (0, 1). ``Nv = int(N * (1 - ratio))``.
    generator : torch.Generator, optional
        Source of randomness (for reproducible masks).
    device : torch.device or str, optional
        Device of the outputs; defaults to the generator's device, else CPU.

    Returns
    -------
    visible_idx : torch.Tensor
        ``[B, M, Nv]`` long, sorted along the last dimension.
    masked_idx : torch.Tensor
        ``[B, M, N - Nv]`` long, sorted along the last dimension.

    Example
    -------
    >>> g = torch.Generator().manual_seed(0)
    >>> vis, msk = multi_mask(2, 190, 4, 0.7, generator=g)
    >>> vis.shape, msk.shape
    (torch.Size([2, 4, 57]), torch.Size([2, 4, 133]))
    >>> torch.cat([vis, msk], -1).sort(-1).values.equal(
    ...     torch.arange(190).expand(2, 4, 190))
    True
    """
    if num_masks < 1:
        raise ValueError(f"num_masks must be at least 1, got {num_masks}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    nv = num_visible(num_tokens, mask_ratio)
    if device is None:
        device = generator.device if generator is not None else "cpu"
    noise = torch.rand(
        batch_size, num_masks, num_tokens, generator=generator, device=device
    )
    order = noise.argsort(dim=-1)
    visible_idx = order[..., :nv].sort(dim=-1).values
    masked_idx = order[..., nv:].sort(dim=-1).values
    return visible_idx, masked_idx


def gather_tokens(x, idx):
    """Gathers, for every view, the tokens named by ``idx``.

    Arguments
    ---------
    x : torch.Tensor
        Tokens ``[B, N, D]`` (one row per clip).
    idx : torch.Tensor
        Long ``[B, M, K]`` token indices per clip and view (e.g. from
        :func:`multi_mask`).

    Returns
    -------
    torch.Tensor
        ``[B * M, K, D]``; row ``b * M + m`` holds ``x[b, idx[b, m]]``.

    Example
    -------
    >>> x = torch.arange(12.0).view(2, 3, 2)
    >>> idx = torch.tensor([[[0], [2]], [[1], [1]]])
    >>> gather_tokens(x, idx)[:, 0].tolist()
    [[0.0, 1.0], [4.0, 5.0], [8.0, 9.0], [8.0, 9.0]]
    """
    B, N, D = x.shape
    if idx.shape[0] != B:
        raise ValueError(
            f"idx has {idx.shape[0]} clips but x has {B} (shapes "
            f"{tuple(idx.shape)} and {tuple(x.shape)})"
        )
    M, K = idx.shape[1], idx.shape[2]
    offsets = torch.arange(B, device=idx.device).mul_(N).view(B, 1, 1)
    flat = (idx + offsets).reshape(-1)
    return x.reshape(B * N, D).index_select(0, flat).view(B * M, K, D)


def views_index(visible_idx):
    """Flattens ``[B, M, K]`` per-view indices to ``[B * M, K]`` (clip-major).

    Arguments
    ---------
    visible_idx : torch.Tensor
        ``[B, M, K]`` indices.

    Returns
    -------
    torch.Tensor
        ``[B * M, K]``, row ``b * M + m``.

    Example
    -------
    >>> views_index(torch.zeros(2, 4, 5, dtype=torch.long)).shape
    torch.Size([8, 5])
    """
    return visible_idx.flatten(0, 1)
