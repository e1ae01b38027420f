"""Linear evaluation on frozen, pre-computed embeddings (the EVAR protocol).

The protocol (Niizumi et al., EVAR; DESIGN.md section 5): embeddings are
standardised with a scaler fitted on the training split only; a single
``Linear`` layer is trained with Adam, batch ``min(200, N)``, up to 200
epochs, with early stopping (patience 20, ties count as a new best, as
EVAR's) on validation accuracy (mAP for multi-label tasks), and the best
weights are restored. The probe lr is a setting: :data:`EVAR_DEFAULT_LR`
(EVAR's generic default) is this module's default, :data:`EVAR_M2D_LR` is
what EVAR's ``config/m2d.yaml`` uses for M2D's 3840-d frame features (and
what ``hparams/linear_eval/evar.yaml`` sets). Fold tasks are
averaged over folds first, then mean ± 95% CI is taken over seeds. That CI
measures the probe's seeds only (initialisation and batch order, with the
embeddings and crops fixed); the fine-tuning recipe's CI is over folds
(splits) with one training seed: the two measure different things.

Everything runs on whole tensors (mini-batches are index slices), so a
probe on a few thousand embeddings trains in seconds on a CPU.
"""

import csv
import io
import json
import logging
import math
import os

import numpy as np
import torch
from torch import nn

from aasp_sb.evaluation.metrics import (
    accuracy,
    format_mean_ci,
    mean_average_precision,
    mean_ci95,
)

logger = logging.getLogger(__name__)

#: Probe lr of EVAR's generic configs (e.g. ``config/byola.yaml``
#: ``lr_lineareval: 0.0003``).
EVAR_DEFAULT_LR = 3e-4
#: Probe lr of EVAR's ``config/m2d.yaml`` (``lr_lineareval: 0.00003``), used
#: for M2D's published linear-evaluation numbers on 3840-d frame features.
EVAR_M2D_LR = 3e-5


def _as_float(x):
    """Array-like -> float32 CPU tensor."""
    if isinstance(x, torch.Tensor):
        return x.detach().float()
    return torch.as_tensor(np.asarray(x), dtype=torch.float32)


def _as_labels(y, multilabel):
    """Array-like -> long indices ``[N]`` or float multi-hot ``[N, C]``."""
    y = y.detach() if isinstance(y, torch.Tensor) else torch.as_tensor(
        np.asarray(y)
    )
    return y.float() if multilabel else y.long()


class StandardScaler(nn.Module):
    """Per-dimension standardisation fitted on training data only.

    As scikit-learn's ``StandardScaler``: population statistics (``ddof=0``),
    and dimensions with zero variance keep a scale of 1. The statistics are
    buffers, so the scaler is saved in ``state_dict`` (and loads with
    ``weights_only=True``).

    Arguments
    ---------
    dim : int, optional
        Feature dimension; may be left out and set by :meth:`fit`.

    Example
    -------
    >>> x = torch.tensor([[1.0, 5.0], [3.0, 5.0]])
    >>> scaler = StandardScaler().fit(x)
    >>> scaler.mean, scaler.scale
    (tensor([2., 5.]), tensor([1., 1.]))
    >>> scaler(x)
    tensor([[-1.,  0.],
            [ 1.,  0.]])
    """

    def __init__(self, dim=None):
        super().__init__()
        dim = 0 if dim is None else dim
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Allow loading into a scaler created without ``dim``.
        for name in ("mean", "scale"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def fit(self, x, chunk_rows=None):
        """Computes the mean and scale of ``x``, in float64, chunk by chunk.

        The statistics are accumulated over row chunks (Chan et al.'s
        pairwise update of mean and sum of squared deviations, in float64),
        so memory stays at one float64 chunk instead of a float64 copy of
        ``x`` (NSynth: 289k x 3840 would be 8.9 GB, with temporaries near
        20 GB); the result equals the one-pass float64 statistics to
        rounding.

        Arguments
        ---------
        x : torch.Tensor
            ``[N, D]`` training embeddings (float32 is kept as is).
        chunk_rows : int, optional
            Rows per chunk (default: about 64 MB of float64 per chunk).

        Returns
        -------
        StandardScaler
            ``self``.
        """
        x = _as_float(x)
        n_rows, dim = x.shape
        if n_rows == 0:
            raise ValueError("StandardScaler.fit: no rows")
        rows = int(chunk_rows or max(1, (8 << 20) // max(dim, 1)))
        count = 0
        mean = torch.zeros(dim, dtype=torch.float64)
        m2 = torch.zeros(dim, dtype=torch.float64)
        for start in range(0, n_rows, rows):
            c = x[start : start + rows].double().cpu()
            k = c.shape[0]
            c_mean = c.mean(dim=0)
            c_m2 = ((c - c_mean) ** 2).sum(dim=0)
            delta = c_mean - mean
            total = count + k
            mean = mean + delta * (k / total)
            m2 = m2 + c_m2 + delta**2 * (count * k / total)
            count = total
        std = (m2 / count).sqrt()
        std = torch.where(std > 1e-12 * mean.abs().clamp_min(1.0), std, 1.0)
        device = self.mean.device
        self.mean = mean.float().to(device)
        self.scale = std.float().to(device)
        return self

    def forward(self, x):
        """Standardises ``x``.

        Arguments
        ---------
        x : torch.Tensor
            ``[..., D]`` embeddings.

        Returns
        -------
        torch.Tensor
            ``(x - mean) / scale``.
        """
        return (x - self.mean) / self.scale

    transform = forward

    def fit_transform(self, x):
        """Fits on ``x`` and returns it standardised.

        Arguments
        ---------
        x : torch.Tensor
            ``[N, D]`` embeddings.

        Returns
        -------
        torch.Tensor
            Standardised ``x``.
        """
        return self.fit(x)(_as_float(x).to(self.mean.device))


def class_complete_split(y, valid_fraction=0.1, seed=0):
    """Splits training indices so that validation covers every class.

    Each class with at least two samples puts ``max(1, round(fraction *
    n_c))`` random samples into validation (always leaving one in
    training); singleton classes stay in training. Used when a task has no
    official validation split (EVAR: a class-complete 10% of train).

    Arguments
    ---------
    y : torch.Tensor
        ``[N]`` class indices.
    valid_fraction : float
        Fraction of each class for validation.
    seed : int
        Random seed.

    Returns
    -------
    train_idx : torch.Tensor
        Sorted indices kept for training.
    valid_idx : torch.Tensor
        Sorted indices for validation.

    Example
    -------
    >>> y = torch.tensor([0] * 10 + [1] * 10 + [2])
    >>> tr, va = class_complete_split(y, 0.1)
    >>> sorted(y[va].tolist()), len(tr)
    ([0, 1], 19)
    """
    y = _as_labels(y, multilabel=False)
    if y.ndim != 1:
        raise ValueError("class_complete_split needs single-label [N] targets")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(y.numel(), generator=g)
    y_perm = y[perm]
    # Position of each sample within its class, in random order.
    order = torch.argsort(y_perm, stable=True)
    counts = torch.bincount(y_perm)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel()) - starts[y_perm[order]]
    n_valid = torch.clamp((counts.double() * valid_fraction).round(), min=1)
    n_valid = torch.minimum(n_valid, (counts - 1).clamp_min(0).double()).long()
    is_valid = rank < n_valid[y_perm]
    return perm[~is_valid].sort().values, perm[is_valid].sort().values


def _score(logits, y, multilabel, warn=True):
    """Validation / test score: accuracy or mAP."""
    if multilabel:
        return mean_average_precision(
            torch.sigmoid(logits), y, warn_excluded=warn
        )
    return accuracy(logits, y)


@torch.no_grad()
def _predict(model, x, chunk=8192):
    """Logits for ``x`` in chunks (bounded memory)."""
    return torch.cat([model(x[i : i + chunk]) for i in range(0, len(x), chunk)])


#: Tie rules of :class:`EarlyStopping`.
TIE_RULES = ("latest", "first")


class EarlyStopping:
    """Early stopping on a validation score (higher is better).

    EVAR's rule (``EarlyStopping.on_epoch_end`` in nttcslab/eval-audio-repr
    ``evar/utils/torch_mlp_clf2.py``, used by its ``lineareval.py``): an
    epoch whose score is **at least** the best so far (``>=``) becomes the
    best one: a tie resets the patience and the latest tied epoch's weights
    are kept (``ties="latest"``). Training stops at the first epoch that is
    not the best and comes ``patience`` epochs after the best.
    ``ties="first"`` needs a strictly better score (keeps the first tied
    epoch, stops earlier on plateaus).

    Arguments
    ---------
    patience : int
        Epochs without a new best before stopping.
    ties : str
        ``"latest"`` (EVAR) or ``"first"``.

    Example
    -------
    >>> stop = EarlyStopping(patience=2)
    >>> [stop.step(s, e) for e, s in enumerate([0.5, 0.7, 0.7, 0.6, 0.6])]
    [(True, False), (True, False), (True, False), (False, False), (False, True)]
    >>> stop.best_epoch, stop.best_score
    (2, 0.7)
    """

    def __init__(self, patience=20, ties="latest"):
        if ties not in TIE_RULES:
            raise ValueError(f"ties must be one of {TIE_RULES}, got {ties!r}")
        self.patience = int(patience)
        self.ties = ties
        self.best_score = -math.inf
        self.best_epoch = -1

    def step(self, score, epoch):
        """Records one epoch's validation score.

        Arguments
        ---------
        score : float
            Validation score of ``epoch``.
        epoch : int
            0-based epoch index.

        Returns
        -------
        improved : bool
            ``epoch`` is the new best (keep its weights).
        stop : bool
            Training should stop now.
        """
        better = (
            score >= self.best_score
            if self.ties == "latest"
            else score > self.best_score
        )
        if better:
            self.best_score, self.best_epoch = score, epoch
            return True, False
        return False, epoch - self.best_epoch >= self.patience


def train_linear_probe(
    train_x,
    train_y,
    valid_x,
    valid_y,
    num_classes,
    multilabel=False,
    lr=EVAR_DEFAULT_LR,
    max_epochs=200,
    patience=20,
    batch_size=None,
    seed=0,
    device="cpu",
    weight_decay=0.0,
    ties="latest",
):
    """Trains a linear classifier on frozen embeddings with early stopping.

    Arguments
    ---------
    train_x : torch.Tensor
        ``[N, D]`` training embeddings.
    train_y : torch.Tensor
        ``[N]`` class indices, or ``[N, C]`` multi-hot if ``multilabel``.
    valid_x : torch.Tensor
        ``[M, D]`` validation embeddings.
    valid_y : torch.Tensor
        Validation targets (as ``train_y``).
    num_classes : int
        Number of output classes.
    multilabel : bool
        Binary cross-entropy and validation mAP instead of cross-entropy and
        accuracy.
    lr : float
        Adam learning rate.
    max_epochs : int
        Maximum number of epochs.
    patience : int
        Stop after this many epochs without a new best validation score
        (see :class:`EarlyStopping`).
    batch_size : int, optional
        Mini-batch size; ``min(200, N)`` by default.
    seed : int
        Seeds the weight initialisation and the shuffling (the global RNG
        state is left untouched).
    device : str
        Training device.
    weight_decay : float
        Adam weight decay.
    ties : str
        ``"latest"``: a tied validation score is a new best (EVAR's ``>=``);
        ``"first"``: only a strictly better one is.

    Returns
    -------
    model : torch.nn.Linear
        The probe with the best validation weights restored (in eval mode).
    scaler : StandardScaler
        Scaler fitted on ``train_x``; apply it before ``model``.
    history : dict
        ``train_loss`` and ``valid_score`` (one entry per epoch),
        ``best_epoch`` (0-based), ``best_valid_score``, ``epochs``.

    Example
    -------
    >>> _ = torch.manual_seed(0)
    >>> x = torch.cat([torch.randn(40, 4) + 3, torch.randn(40, 4) - 3])
    >>> y = torch.tensor([0] * 40 + [1] * 40)
    >>> model, scaler, hist = train_linear_probe(
    ...     x, y, x, y, num_classes=2, lr=0.1, max_epochs=20
    ... )
    >>> hist["best_valid_score"]
    1.0
    """
    train_x, valid_x = _as_float(train_x), _as_float(valid_x)
    train_y = _as_labels(train_y, multilabel)
    valid_y = _as_labels(valid_y, multilabel)
    n, dim = train_x.shape
    if n == 0 or len(valid_x) == 0:
        raise ValueError("train and valid splits must be non-empty")
    if multilabel and not bool((valid_y > 0.5).any()):
        raise ValueError("multi-label validation targets have no positive")
    if batch_size is None:
        batch_size = min(200, n)

    scaler = StandardScaler(dim).fit(train_x).to(device)
    xt = scaler(train_x.to(device))
    xv = scaler(valid_x.to(device))
    yt, yv = train_y.to(device), valid_y.cpu()

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Linear(dim, num_classes)
    model.to(device)
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=lr, weight_decay=weight_decay
    )
    loss_fn = nn.BCEWithLogitsLoss() if multilabel else nn.CrossEntropyLoss()

    history = {"train_loss": [], "valid_score": []}
    stopper, best_state = EarlyStopping(patience, ties), None
    for epoch in range(max_epochs):
        model.train()
        perm = torch.randperm(n, generator=gen).to(device)
        total = torch.zeros((), device=device)
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            loss = loss_fn(model(xt[idx]), yt[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * idx.numel()
        history["train_loss"].append((total / n).item())

        model.eval()
        score = _score(
            _predict(model, xv).cpu(), yv, multilabel, warn=epoch == 0
        )
        history["valid_score"].append(score)
        improved, stop = stopper.step(score, epoch)
        if improved:
            best_state = {
                k: v.detach().clone() for k, v in model.state_dict().items()
            }
        elif stop:
            break

    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    history["best_epoch"] = stopper.best_epoch
    history["best_valid_score"] = stopper.best_score
    history["epochs"] = len(history["valid_score"])
    return model, scaler, history


@torch.no_grad()
def evaluate_probe(model, scaler, x, y, multilabel=False):
    """Scores a trained probe on a split.

    Arguments
    ---------
    model : torch.nn.Module
        Probe returned by :func:`train_linear_probe`.
    scaler : StandardScaler
        Its scaler.
    x : torch.Tensor
        ``[N, D]`` embeddings.
    y : torch.Tensor
        ``[N]`` class indices or ``[N, C]`` multi-hot.
    multilabel : bool
        Report mAP instead of accuracy.

    Returns
    -------
    dict
        ``{"metric": "accuracy" | "mAP", "score": float, "loss": float}``
        plus the metric under its own name.

    Example
    -------
    >>> model = torch.nn.Linear(2, 2)
    >>> with torch.no_grad():
    ...     _ = model.weight.copy_(torch.eye(2)); _ = model.bias.zero_()
    >>> scaler = StandardScaler(2)
    >>> evaluate_probe(model, scaler, torch.eye(2), torch.tensor([0, 1]))["accuracy"]
    1.0
    """
    model.eval()
    device = next(model.parameters()).device
    x = _as_float(x).to(device)
    y = _as_labels(y, multilabel)
    logits = _predict(model, scaler.to(device)(x)).cpu()
    if multilabel:
        loss = nn.functional.binary_cross_entropy_with_logits(logits, y)
    else:
        loss = nn.functional.cross_entropy(logits, y)
    metric = "mAP" if multilabel else "accuracy"
    score = _score(logits, y, multilabel)
    return {"metric": metric, "score": score, metric: score, "loss": loss.item()}


def _infer_num_classes(splits, multilabel):
    """Number of classes from the targets of every split."""
    if multilabel:
        return int(_as_labels(splits[0]["train"][1], True).shape[1])
    return 1 + max(
        int(_as_labels(s[part][1], False).max())
        for s in splits
        for part in ("train", "valid", "test")
    )


def run_linear_eval(
    splits, seeds=(0, 1, 2), multilabel=False, num_classes=None, **probe_kwargs
):
    """Runs the linear-evaluation protocol over splits (folds) and seeds.

    Arguments
    ---------
    splits : list of dict
        One dict per split / fold: ``{"name": str, "train": (x, y),
        "valid": (x, y), "test": (x, y)}``. A task with an official split
        passes a single entry.
    seeds : sequence of int
        Seeds; each fold is trained once per seed.
    multilabel : bool
        Multi-label task (mAP) instead of single-label (accuracy).
    num_classes : int, optional
        Inferred from the targets when omitted.
    **probe_kwargs : dict
        Passed to :func:`train_linear_probe` (``lr``, ``max_epochs``,
        ``patience``, ``batch_size``, ``device``, ``weight_decay``).

    Returns
    -------
    dict
        JSON-serialisable: ``metric``, ``folds`` (names), ``seeds``,
        ``per_fold`` (``{fold: [test score per seed]}``), ``best_epochs``
        (``{fold: [...]}``), ``per_seed`` (fold average per seed), ``mean``
        and ``ci95`` (half-width over seeds, see
        :func:`~aasp_sb.evaluation.metrics.mean_ci95`).

    Example
    -------
    >>> _ = torch.manual_seed(0)
    >>> x = torch.cat([torch.randn(30, 4) + 3, torch.randn(30, 4) - 3])
    >>> y = torch.tensor([0, 1]).repeat_interleave(30)
    >>> split = {"name": "f1", "train": (x, y), "valid": (x, y), "test": (x, y)}
    >>> res = run_linear_eval([split], seeds=(0, 1), lr=0.1, max_epochs=20)
    >>> res["per_seed"], res["mean"]
    ([1.0, 1.0], 1.0)
    """
    if not splits:
        raise ValueError("run_linear_eval: no splits given")
    if num_classes is None:
        num_classes = _infer_num_classes(splits, multilabel)
    names = [str(s.get("name", f"fold{i + 1}")) for i, s in enumerate(splits)]
    if len(set(names)) != len(names):
        raise ValueError(f"split names must be unique, got {names}")
    per_fold = {name: [] for name in names}
    best_epochs = {name: [] for name in names}
    for name, split in zip(names, splits):
        for seed in seeds:
            model, scaler, hist = train_linear_probe(
                *split["train"],
                *split["valid"],
                num_classes=num_classes,
                multilabel=multilabel,
                seed=seed,
                **probe_kwargs,
            )
            res = evaluate_probe(model, scaler, *split["test"], multilabel)
            logger.info(
                "linear eval %s seed %d: test %s %.4f (best epoch %d of %d)",
                name, seed, res["metric"], res["score"], hist["best_epoch"],
                hist["epochs"],
            )
            per_fold[name].append(res["score"])
            best_epochs[name].append(hist["best_epoch"])
    return summarize_folds(
        per_fold, seeds, metric="mAP" if multilabel else "accuracy",
        best_epochs=best_epochs,
    )


def summarize_folds(per_fold, seeds, metric="accuracy", best_epochs=None):
    """Averages fold scores per seed, then takes mean ± 95% CI over seeds.

    Arguments
    ---------
    per_fold : dict
        ``{fold name: [test score per seed]}``.
    seeds : sequence of int
        The seeds, in the order of the score lists.
    metric : str
        Name of the metric.
    best_epochs : dict, optional
        ``{fold name: [best epoch per seed]}``, stored as is.

    Returns
    -------
    dict
        See :func:`run_linear_eval`.

    Example
    -------
    >>> res = summarize_folds({"f1": [0.8, 0.9], "f2": [0.6, 0.7]}, seeds=[0, 1])
    >>> [round(v, 6) for v in res["per_seed"]], round(res["mean"], 6)
    ([0.7, 0.8], 0.75)
    """
    seeds = [int(s) for s in seeds]
    scores = torch.tensor(
        [[float(v) for v in per_fold[f]] for f in per_fold], dtype=torch.float64
    )
    if scores.shape[1] != len(seeds):
        raise ValueError("every fold needs one score per seed")
    per_seed = scores.mean(dim=0).tolist()
    mean, hw = mean_ci95(per_seed)
    return {
        "metric": metric,
        "folds": list(per_fold),
        "seeds": seeds,
        "per_fold": {f: [float(v) for v in per_fold[f]] for f in per_fold},
        "best_epochs": dict(best_epochs or {}),
        "per_seed": per_seed,
        "mean": mean,
        "ci95": hw,
    }


def average_label(tasks):
    """Label of an average row: which tasks it averages (and if EVAR's nine).

    Arguments
    ---------
    tasks : iterable of str
        Task names.

    Returns
    -------
    str
        E.g. ``"average of 2 (esc50, us8k)"``; ``"... = EVAR's 9"`` when the
        tasks are exactly EVAR's nine linear-evaluation tasks.

    Example
    -------
    >>> average_label(["esc50", "us8k"])
    'average of 2 (esc50, us8k)'
    """
    from aasp_sb.data.tasks import EVAR_NINE

    names = [str(t) for t in tasks]
    label = f"average of {len(names)} ({', '.join(names)})"
    if sorted(names) == sorted(EVAR_NINE):
        label += " = EVAR's 9"
    return label


def results_table(results, fmt="markdown", scale=100.0, digits=2, average=True):
    """Formats linear-evaluation results of several tasks as a table.

    Arguments
    ---------
    results : dict
        ``{task name: result of run_linear_eval}``.
    fmt : str
        ``"markdown"`` or ``"csv"``.
    scale : float
        Multiplier for scores (100 gives percentages).
    digits : int
        Decimal places.
    average : bool
        Append an average row (mean of the task means, labelled with the
        tasks it averages, see :func:`average_label`) when there is more
        than one task.

    Returns
    -------
    str
        The table.

    Example
    -------
    >>> res = summarize_folds({"f1": [0.80, 0.82, 0.84]}, seeds=[0, 1, 2])
    >>> print(results_table({"esc50": res}))
    | task | metric | score | mean | ci95 | folds | seeds |
    |---|---|---|---|---|---|---|
    | esc50 | accuracy | 82.00 ± 4.97 | 82.00 | 4.97 | 1 | 3 |
    """
    if fmt not in ("markdown", "csv"):
        raise ValueError(f"fmt must be 'markdown' or 'csv', got {fmt!r}")
    header = ["task", "metric", "score", "mean", "ci95", "folds", "seeds"]
    rows = []
    for task, r in results.items():
        hw = r.get("ci95", float("nan"))
        rows.append(
            [
                str(task),
                r.get("metric", ""),
                format_mean_ci(r["mean"], hw, scale, digits),
                f"{r['mean'] * scale:.{digits}f}",
                "" if hw is None or math.isnan(hw) else f"{hw * scale:.{digits}f}",
                str(len(r.get("folds", []))),
                str(len(r.get("seeds", []))),
            ]
        )
    if average and len(results) > 1:
        avg = sum(r["mean"] for r in results.values()) / len(results)
        text = f"{avg * scale:.{digits}f}"
        rows.append([average_label(results), "", text, text, "", "", ""])
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        return buf.getvalue().rstrip("\n")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(results, path, fmt=None, **table_kwargs):
    """Writes results to a file as markdown, CSV or JSON.

    Arguments
    ---------
    results : dict
        ``{task name: result of run_linear_eval}``.
    path : str
        Output file; its folder is created if needed.
    fmt : str, optional
        ``"markdown"``, ``"csv"`` or ``"json"``; from the extension when
        omitted (``.md``, ``.csv``, ``.json``; markdown otherwise).
    **table_kwargs : dict
        Passed to :func:`results_table`.

    Returns
    -------
    str
        ``path``.

    Example
    -------
    >>> import tempfile
    >>> res = {"t": summarize_folds({"f": [0.5, 0.7]}, [0, 1])}
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = write_results(res, os.path.join(d, "le.csv"))
    ...     print(open(p).read().splitlines()[1])
    t,accuracy,60.00 ± 127.06,60.00,127.06,1,2
    """
    if fmt is None:
        ext = os.path.splitext(str(path))[1].lower()
        fmt = {".csv": "csv", ".json": "json"}.get(ext, "markdown")
    folder = os.path.dirname(str(path))
    if folder:
        os.makedirs(folder, exist_ok=True)
    if fmt == "json":
        text = json.dumps(results, indent=2, default=float)
    else:
        text = results_table(results, fmt=fmt, **table_kwargs)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    return path
