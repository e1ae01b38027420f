"""Evaluation metrics: accuracy, mAP, confidence intervals, RankMe.

SpeechBrain 1.1.2 has no multi-label metric, so this module provides
:func:`mean_average_precision` (per-class average precision computed exactly
like scikit-learn's ``average_precision_score``) and a SpeechBrain-style
accumulator, :class:`MultiLabelStats`, for use inside a ``Brain``.

All functions accept ``torch.Tensor`` or NumPy arrays and return plain Python
floats (or tensors for per-class values), so results can go straight into
checkpoint ``meta`` or JSON.
"""

import logging
import math

import torch
from speechbrain.utils.metric_stats import MetricStats

logger = logging.getLogger(__name__)


def _as_tensor(x):
    """Converts array-likes to a CPU tensor (no copy when possible)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    return torch.as_tensor(x)


def _to_pred(logits_or_pred, targets):
    """Returns ``(pred, target)`` class-index tensors of shape ``[N]``."""
    pred = _as_tensor(logits_or_pred)
    targets = _as_tensor(targets)
    if targets.ndim == 2:  # one-hot (or soft) targets
        targets = targets.argmax(dim=-1)
    if pred.ndim == targets.ndim + 1:  # scores / logits
        pred = pred.argmax(dim=-1)
    if pred.shape != targets.shape:
        raise ValueError(
            f"predictions {tuple(pred.shape)} and targets "
            f"{tuple(targets.shape)} do not match"
        )
    return pred.long(), targets.long()


def accuracy(logits_or_pred, targets):
    """Top-1 accuracy.

    Arguments
    ---------
    logits_or_pred : torch.Tensor
        Scores / logits ``[N, C]`` (arg-maxed) or predicted indices ``[N]``.
    targets : torch.Tensor
        Class indices ``[N]`` or one-hot targets ``[N, C]``.

    Returns
    -------
    float
        Fraction of correct predictions in [0, 1] (``nan`` when ``N == 0``).

    Example
    -------
    >>> accuracy(torch.tensor([[2.0, 1.0], [0.0, 3.0]]), torch.tensor([0, 0]))
    0.5
    >>> accuracy(torch.tensor([1, 2, 2]), torch.tensor([1, 2, 0]))
    0.6666666666666666
    """
    pred, targets = _to_pred(logits_or_pred, targets)
    if pred.numel() == 0:
        return float("nan")
    return (pred == targets).double().mean().item()


def per_class_accuracy(logits_or_pred, targets, num_classes=None):
    """Per-class accuracy (recall of each class).

    Arguments
    ---------
    logits_or_pred : torch.Tensor
        Scores / logits ``[N, C]`` or predicted indices ``[N]``.
    targets : torch.Tensor
        Class indices ``[N]`` or one-hot targets ``[N, C]``.
    num_classes : int, optional
        Number of classes; inferred from the inputs when omitted.

    Returns
    -------
    torch.Tensor
        ``[num_classes]`` float64; ``nan`` for classes absent from
        ``targets``.

    Example
    -------
    >>> per_class_accuracy(torch.tensor([0, 1, 1, 0]), torch.tensor([0, 1, 0, 0]), 3)
    tensor([0.6667, 1.0000,    nan], dtype=torch.float64)
    """
    scores = _as_tensor(logits_or_pred)
    pred, targets = _to_pred(scores, targets)
    if num_classes is None:
        num_classes = scores.shape[-1] if scores.ndim == 2 else 0
        if pred.numel():
            num_classes = max(
                num_classes, int(pred.max()) + 1, int(targets.max()) + 1
            )
    total = torch.bincount(targets, minlength=num_classes).double()
    correct = torch.bincount(
        targets[pred == targets], minlength=num_classes
    ).double()
    out = correct / total
    out[total == 0] = float("nan")
    return out


def average_precision(scores, targets):
    """Per-class average precision, as scikit-learn's ``average_precision_score``.

    For each class, with the samples sorted by decreasing score and tied
    scores forming a single threshold,
    ``AP = sum_k (R_k - R_{k-1}) * P_k`` over the distinct thresholds ``k``
    (step-wise, no interpolation), ``P_k`` and ``R_k`` being the precision and
    recall when everything scoring ``>=`` threshold ``k`` is predicted
    positive. Fully vectorised over classes.

    Arguments
    ---------
    scores : torch.Tensor
        ``[N, C]`` scores (any monotone scale: logits or probabilities).
    targets : torch.Tensor
        ``[N, C]`` multi-hot targets; entries ``> 0.5`` are positives.

    Returns
    -------
    torch.Tensor
        ``[C]`` float64 AP; ``nan`` for classes without positives.

    Example
    -------
    >>> s = torch.tensor([[0.9], [0.8], [0.7], [0.6]])
    >>> y = torch.tensor([[1], [0], [1], [0]])
    >>> average_precision(s, y)  # (1/2) * 1 + (1/2) * 2/3
    tensor([0.8333], dtype=torch.float64)
    """
    scores = _as_tensor(scores).double()
    targets = _as_tensor(targets)
    if scores.ndim == 1:
        scores, targets = scores[:, None], targets[:, None]
    if scores.shape != targets.shape or scores.ndim != 2:
        raise ValueError(
            f"scores {tuple(scores.shape)} and targets "
            f"{tuple(targets.shape)} must both be [N, C]"
        )
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN")
    positives = (targets > 0.5).double()
    n = scores.shape[0]
    if n == 0:
        return torch.full((scores.shape[1],), float("nan"), dtype=torch.float64)
    order = torch.argsort(scores, dim=0, descending=True, stable=True)
    s_sorted = torch.gather(scores, 0, order)
    y_sorted = torch.gather(positives, 0, order)
    tp = torch.cumsum(y_sorted, dim=0)
    rank = torch.arange(1, n + 1, dtype=torch.float64)[:, None]
    precision = tp / rank
    # Index of the last element of each tie group: every sample in a group
    # shares the precision at the group's end (one threshold per value).
    is_last = torch.ones_like(s_sorted, dtype=torch.bool)
    is_last[:-1] = s_sorted[:-1] != s_sorted[1:]
    idx = torch.arange(n)[:, None].expand_as(s_sorted)
    last = torch.where(is_last, idx, torch.full_like(idx, n))
    group_end = torch.cummin(last.flip(0), dim=0).values.flip(0)
    prec_at_group = torch.gather(precision, 0, group_end)
    n_pos = positives.sum(dim=0)
    ap = (y_sorted * prec_at_group).sum(dim=0) / n_pos
    ap[n_pos == 0] = float("nan")
    return ap


def mean_average_precision(
    scores, targets, return_per_class=False, warn_excluded=True
):
    """Macro mean of per-class average precision (mAP).

    Classes without any positive target are excluded from the mean (their
    AP is undefined) and reported with a warning in the log.

    Arguments
    ---------
    scores : torch.Tensor
        ``[N, C]`` scores.
    targets : torch.Tensor
        ``[N, C]`` multi-hot targets (entries ``> 0.5`` are positives).
    return_per_class : bool
        If True, also return the per-class AP and the excluded class indices.
    warn_excluded : bool
        Log a warning naming the excluded classes (off for repeated calls,
        e.g. per-epoch validation).

    Returns
    -------
    float
        mAP in [0, 1]; ``nan`` if no class has a positive.
    torch.Tensor
        Only if ``return_per_class``: ``[C]`` AP with ``nan`` for excluded
        classes.
    list of int
        Only if ``return_per_class``: indices of the excluded classes.

    Example
    -------
    >>> s = torch.tensor([[0.9, 0.1], [0.8, 0.7], [0.7, 0.2], [0.6, 0.3]])
    >>> y = torch.tensor([[1, 0], [0, 1], [1, 0], [0, 0]])
    >>> round(mean_average_precision(s, y), 4)  # (5/6 + 1) / 2
    0.9167
    >>> m, ap, excluded = mean_average_precision(
    ...     s, torch.tensor([[1, 0], [0, 0], [1, 0], [0, 0]]), return_per_class=True
    ... )
    >>> m, excluded
    (0.8333333333333333, [1])
    """
    ap = average_precision(scores, targets)
    valid = ~torch.isnan(ap)
    excluded = torch.nonzero(~valid).flatten().tolist()
    if excluded and warn_excluded:
        logger.warning(
            "mAP: %d of %d classes have no positive target and are "
            "excluded: %s",
            len(excluded),
            ap.numel(),
            excluded[:20] + (["..."] if len(excluded) > 20 else []),
        )
    m = ap[valid].mean().item() if valid.any() else float("nan")
    if return_per_class:
        return m, ap, excluded
    return m


def mean_ci95(values, confidence=0.95):
    """Mean and half-width of a Student-t confidence interval.

    ``half_width = t_{(1 + confidence) / 2, n - 1} * s / sqrt(n)`` with ``s``
    the sample standard deviation (``ddof=1``). With a single value the
    interval is undefined: the half-width is ``nan`` (not 0, which would
    claim certainty); :func:`format_mean_ci` then prints the mean alone.

    Arguments
    ---------
    values : sequence of float
        Independent measurements (e.g. one score per seed).
    confidence : float
        Confidence level (default 0.95).

    Returns
    -------
    mean : float
        Sample mean (``nan`` for no values).
    half_width : float
        Half-width of the interval (``nan`` when fewer than two values).

    Example
    -------
    >>> m, h = mean_ci95([0.80, 0.82, 0.84])
    >>> round(m, 4), round(h, 4)  # 4.3027 * 0.02 / sqrt(3)
    (0.82, 0.0497)
    >>> mean_ci95([0.5])
    (0.5, nan)
    """
    from scipy import stats

    v = _as_tensor(values).double().flatten()
    n = v.numel()
    if n == 0:
        return float("nan"), float("nan")
    mean = v.mean().item()
    if n == 1:
        return mean, float("nan")
    sd = v.std(unbiased=True).item()
    t = float(stats.t.ppf(0.5 + confidence / 2.0, df=n - 1))
    return mean, t * sd / math.sqrt(n)


def format_mean_ci(mean, half_width, scale=100.0, digits=2):
    """Formats ``mean ± half_width`` (the mean alone when the width is nan).

    Arguments
    ---------
    mean : float
        Mean value.
    half_width : float
        Half-width of the interval, may be ``nan``.
    scale : float
        Multiplier applied to both (100 for percentages).
    digits : int
        Decimal places.

    Returns
    -------
    str
        e.g. ``"82.00 ± 4.97"``.

    Example
    -------
    >>> format_mean_ci(0.82, 0.0497)
    '82.00 ± 4.97'
    >>> format_mean_ci(0.5, float("nan"))
    '50.00'
    """
    text = f"{mean * scale:.{digits}f}"
    if half_width is not None and not math.isnan(half_width):
        text += f" ± {half_width * scale:.{digits}f}"
    return text


def rankme(embeddings, eps=1e-7):
    """RankMe effective rank of a set of embeddings (Garrido et al., 2023).

    ``exp(-sum_k p_k log p_k)`` with ``p_k = sigma_k / ||sigma||_1 + eps``,
    ``sigma`` the singular values of the ``[N, D]`` embedding matrix. Ranges
    from about 1 (collapse to one direction) to ``min(N, D)``; use it to
    monitor representation collapse during self-supervised pre-training.
    The embeddings are not centred (as in the paper).

    Arguments
    ---------
    embeddings : torch.Tensor
        ``[N, D]`` embeddings.
    eps : float
        Small constant for numerical stability.

    Returns
    -------
    float
        Effective rank.

    Example
    -------
    >>> round(rankme(torch.eye(4)), 3)
    4.0
    >>> round(rankme(torch.ones(8, 4)), 3)
    1.0
    """
    z = _as_tensor(embeddings).double()
    if z.ndim != 2:
        raise ValueError(f"embeddings must be [N, D], got {tuple(z.shape)}")
    sigma = torch.linalg.svdvals(z)
    total = sigma.sum()
    if total <= 0:
        return 0.0
    p = sigma / total + eps
    return math.exp(-(p * p.log()).sum().item())


class MultiLabelStats(MetricStats):
    """Accumulates multi-label scores and targets and reports mAP.

    A SpeechBrain ``MetricStats``-style object (``append`` per batch,
    ``summarize`` at the end of the stage, ``write_stats`` for a log file),
    since SpeechBrain 1.1.2 has no mAP metric.

    ``summarize()`` returns the mAP (a float); ``summarize(field)`` returns
    another entry of ``self.summary``: ``"mAP"``, ``"num_classes"``,
    ``"num_excluded"``, ``"excluded"``, ``"num_samples"``.

    Example
    -------
    >>> stats = MultiLabelStats()
    >>> stats.append(["a", "b"], torch.tensor([[0.9, 0.1], [0.8, 0.7]]),
    ...              torch.tensor([[1, 0], [0, 1]]))
    >>> stats.append(["c", "d"], torch.tensor([[0.7, 0.2], [0.6, 0.3]]),
    ...              torch.tensor([[1, 0], [0, 0]]))
    >>> round(stats.summarize(), 4)
    0.9167
    >>> stats.summarize("num_samples")
    4
    """

    def __init__(self):
        self.clear()

    def clear(self):
        """Removes all accumulated scores and targets."""
        self.ids = []
        self.scores = []
        self.targets = []
        self.summary = {}
        self.per_class_ap = None

    def append(self, ids, scores, targets):
        """Stores one batch.

        Arguments
        ---------
        ids : list
            Sample ids, one per row.
        scores : torch.Tensor
            ``[B, C]`` scores or logits.
        targets : torch.Tensor
            ``[B, C]`` multi-hot targets.
        """
        scores = _as_tensor(scores).float()
        targets = _as_tensor(targets)
        if scores.shape != targets.shape:
            raise ValueError(
                f"scores {tuple(scores.shape)} and targets "
                f"{tuple(targets.shape)} do not match"
            )
        self.ids.extend(ids)
        self.scores.append(scores)
        self.targets.append(targets)

    def summarize(self, field=None):
        """Computes the mAP over everything appended so far.

        Arguments
        ---------
        field : str, optional
            Entry of the summary to return; the mAP when omitted.

        Returns
        -------
        float or dict entry
            The mAP, or ``self.summary[field]``.
        """
        if not self.scores:
            raise ValueError("MultiLabelStats.summarize: nothing appended")
        scores = torch.cat(self.scores)
        targets = torch.cat(self.targets)
        m, ap, excluded = mean_average_precision(
            scores, targets, return_per_class=True
        )
        self.per_class_ap = ap
        self.summary = {
            "mAP": m,
            "num_classes": int(ap.numel()),
            "num_excluded": len(excluded),
            "excluded": excluded,
            "num_samples": int(scores.shape[0]),
        }
        if field is None:
            return m
        return self.summary[field]

    def write_stats(self, filestream, verbose=False):
        """Writes the mAP and the per-class AP to a stream.

        Arguments
        ---------
        filestream : file-like
            Stream to write to.
        verbose : bool
            Also print to stdout.
        """
        if not self.summary:
            self.summarize()
        lines = [
            f"mAP: {self.summary['mAP']:.6f} over "
            f"{self.summary['num_classes'] - self.summary['num_excluded']}"
            f" classes ({self.summary['num_excluded']} without positives "
            f"excluded), {self.summary['num_samples']} samples",
            "class,AP",
        ]
        lines += [
            f"{c},{ap:.6f}" for c, ap in enumerate(self.per_class_ap.tolist())
        ]
        text = "\n".join(lines) + "\n"
        filestream.write(text)
        if verbose:
            print(text, end="")
