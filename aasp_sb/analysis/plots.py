r"""Pictures of what AaPE does and how a pre-training run went.

Five figures (PNG, matplotlib's Agg canvas; no display, no global backend
change):

- ``lambda_distribution.png``: the ``(alpha, omega)`` the Lambda encoder
  estimates over the clips of a manifest, per subband: ``omega`` in Hz
  (violins, frame rate ``sample_rate / hop``, 100 Hz by default) with the
  alias-prone band shaded, ``alpha`` (boxes, log scale; right axis: the
  kernel's -3 dB bandwidth ``alpha * frame_rate / pi`` Hz), and ``alpha``
  against ``omega`` with the region the constraints allow;
- ``sblu_response.png``: the mean magnitude response ``|K(theta)|`` (dB)
  over clips of each subband's modes, 0 to the frame-rate Nyquist (50 Hz),
  alias-prone band ``(pi/pt, pi)`` shaded and the token-rate Nyquist
  (3.125 Hz at ``pt = 16``) marked;
- ``gate.png``: the fusion gate per channel, sorted (``gated_add``), or for
  ``concat`` the row norms of the fusion weights on the alias half next to
  the standard half;
- ``training_curves.png``: loss parts per step (train) and per epoch
  (valid), RankMe per epoch, learning rate and EMA decay per step, from
  ``metrics.jsonl`` / ``epochs.jsonl``;
- ``stability.png``: mean centred cosine similarity against shift, one line per
  model, from :mod:`aasp_sb.analysis.stability`'s JSON.

Command line (plots whose inputs are missing are skipped with a log line)::

    python -m aasp_sb.analysis.plots --run RUN [--csv MANIFEST] \
        [--stability STABILITY.json] [--output-dir RUN/plots]

matplotlib is the optional ``plots`` extra (``pip install aasp_sb[plots]``);
it is imported only when a figure is drawn.
"""

import argparse
import json
import logging
import math
import pathlib
import sys

from aasp_sb import cli  # noqa: F401 -- first: silences SpeechBrain's torchvision warning

# isort: split

import torch

from aasp_sb.analysis.stability import default_seconds, iter_clip_batches
from aasp_sb.data.audio import SkipCounter
from aasp_sb.lobes.aape import AaPE
from aasp_sb.lobes.sblu import sblu_response
from aasp_sb.pretrained import find_hparams, load_pretrained

logger = logging.getLogger(__name__)

BAND_COLOR = "tab:orange"
NYQUIST_COLOR = "tab:red"


def _matplotlib():
    """Imports matplotlib's object-oriented API lazily (Agg canvas)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(
            "aasp_sb.analysis.plots needs matplotlib: install the `plots` extra "
            "(pip install 'aasp_sb[plots]') or `pip install matplotlib`"
        ) from err
    return Figure, FigureCanvasAgg


def new_figure(**kwargs):
    """A matplotlib ``Figure`` on an Agg canvas (no pyplot state).

    Arguments
    ---------
    **kwargs
        Passed to ``matplotlib.figure.Figure`` (e.g. ``figsize``).

    Returns
    -------
    matplotlib.figure.Figure
    """
    Figure, FigureCanvasAgg = _matplotlib()
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path, dpi=120):
    """Writes ``fig`` as PNG, creating the folder.

    Arguments
    ---------
    fig : matplotlib.figure.Figure
        The figure.
    path : str or pathlib.Path
        Output file.
    dpi : int
        Resolution.

    Returns
    -------
    str
        The path written.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path), dpi=dpi, bbox_inches="tight")
    return str(path)


def alias_band_hz(patch_t, frame_rate=100.0):
    """Alias-prone band in Hz: token-rate Nyquist to frame-rate Nyquist.

    Arguments
    ---------
    patch_t : int
        Patch width in frames.
    frame_rate : float
        Feature frames per second.

    Returns
    -------
    tuple of float

    Example
    -------
    >>> alias_band_hz(16)
    (3.125, 50.0)
    """
    return frame_rate / (2.0 * patch_t), frame_rate / 2.0


def to_hz(omega, frame_rate=100.0):
    """Rad/frame -> Hz.

    Example
    -------
    >>> to_hz(math.pi)
    50.0
    """
    return omega * frame_rate / (2.0 * math.pi)


def subband_labels(num_subbands, bins_per_subband=None):
    r"""Tick labels ``"0"``.. or, with the bin count, mel-bin ranges.

    Example
    -------
    >>> subband_labels(2, 16)
    ['0\nmel 0-15', '1\nmel 16-31']
    """
    if bins_per_subband is None:
        return [str(s) for s in range(num_subbands)]
    p = bins_per_subband
    return [f"{s}\nmel {s * p}-{(s + 1) * p - 1}" for s in range(num_subbands)]


def _shade_band(ax, lo, hi, vertical=True, label=True):
    """Shades the alias-prone band and marks the token-rate Nyquist."""
    span = ax.axvspan if vertical else ax.axhspan
    line = ax.axvline if vertical else ax.axhline
    span(
        lo,
        hi,
        color=BAND_COLOR,
        alpha=0.12,
        label="alias-prone band" if label else None,
    )
    line(
        lo,
        color=NYQUIST_COLOR,
        ls="--",
        lw=1,
        label=f"token-rate Nyquist {lo:g} Hz" if label else None,
    )


def _distribution(ax, groups, positions, violin=True):
    """Violins when every group has spread, boxes otherwise."""
    groups = [g.flatten().numpy() for g in groups]
    spread = all(g.size > 1 and g.max() - g.min() > 1e-9 for g in groups)
    if violin and spread:
        ax.violinplot(groups, positions=positions, showmedians=True, widths=0.8)
    else:
        ax.boxplot(groups, positions=positions, widths=0.6, showfliers=False)


def plain_log_ticks(axis):
    """Log-axis tick labels as plain numbers (``0.06``, ``6``), not ``6x10^0``.

    Arguments
    ---------
    axis : matplotlib.axis.Axis
        E.g. ``ax.yaxis`` of a log-scaled axes (or of a secondary axis).
    """
    from matplotlib.ticker import FuncFormatter, LogLocator

    label = FuncFormatter(lambda v, _: f"{v:.3g}")
    axis.set_major_formatter(label)
    axis.set_minor_locator(LogLocator(base=10.0, subs=(2.0, 5.0)))
    axis.set_minor_formatter(label)


def integer_ticks(axis):
    """Only whole-number ticks (epochs).

    Arguments
    ---------
    axis : matplotlib.axis.Axis
        E.g. ``ax.xaxis``.
    """
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


@torch.no_grad()
def collect_lambda(
    features,
    encoder,
    csv_path,
    seconds=None,
    max_clips=None,
    batch_size=8,
    device="cpu",
    skip=None,
):
    """Runs the AaPE stem over a manifest's clips and collects ``last_lambda``.

    Arguments
    ---------
    features : aasp_sb.features.Features
        Waveform -> normalised log-mel.
    encoder : aasp_sb.lobes.encoder.AudioViT
        Encoder whose ``stem`` is :class:`~aasp_sb.lobes.aape.AaPE`.
    csv_path : str
        Manifest with a ``wav`` column.
    seconds : float, optional
        Crop from each clip's start (default: the training length).
    max_clips : int, optional
        At most this many clips.
    batch_size : int
        Clips per forward pass.
    device : str
        Where to run.
    skip : SkipCounter, optional
        Collects unreadable clips.

    Returns
    -------
    alpha, omega : torch.Tensor
        ``[N, S, H]`` on the CPU (``omega`` in rad/frame).
    """
    stem = encoder.stem
    if not isinstance(stem, AaPE):
        raise ValueError(
            f"the encoder's stem is {type(stem).__name__}, not AaPE: no (alpha, omega)"
        )
    skip = skip if skip is not None else SkipCounter("plots")
    sr = features.logmel.sample_rate
    hop = features.logmel.hop_length
    seconds = default_seconds(features, encoder) if seconds is None else seconds
    num_samples = int(round(seconds * sr))
    min_samples = min(num_samples, stem.patch_size[1] * hop)
    was_training = (features.training, stem.training)
    features.to(device).eval()
    stem.to(device).eval()
    alphas, omegas = [], []
    try:
        for _, wavs, lengths in iter_clip_batches(
            csv_path, sr, num_samples, batch_size, max_clips, min_samples, skip
        ):
            wavs = wavs.to(device)
            stem(features(wavs), lengths.to(device).float() / num_samples)
            alpha, omega = stem.last_lambda
            alphas.append(alpha.float().cpu())
            omegas.append(omega.float().cpu())
    finally:
        features.train(was_training[0])
        stem.train(was_training[1])
    if not alphas:
        raise ValueError(f"no usable clip in {csv_path} ({skip.count} skipped)")
    return torch.cat(alphas), torch.cat(omegas)


def plot_lambda_distribution(
    alpha,
    omega,
    path,
    patch_t=16,
    frame_rate=100.0,
    bins_per_subband=None,
    lambda_encoder=None,
):
    """Distribution of the estimated ``(alpha, omega)`` per subband.

    Arguments
    ---------
    alpha, omega : torch.Tensor
        ``[N, S, H]`` (``omega`` in rad/frame), e.g. from :func:`collect_lambda`.
    path : str
        Output PNG.
    patch_t : int
        Patch width in frames (sets the alias-prone band).
    frame_rate : float
        Feature frames per second.
    bins_per_subband : int, optional
        Mel bins per subband (for tick labels).
    lambda_encoder : LambdaEncoder, optional
        When given, its ``alpha_min`` and ``max_alpha(omega)`` bounds are drawn.

    Returns
    -------
    str
        The path written.

    Example
    -------
    >>> a, w = torch.rand(4, 2, 3) * 0.1 + 0.02, torch.rand(4, 2, 3) * 2 + 0.5
    >>> p = plot_lambda_distribution(a, w, getfixture("tmp_path") / "l.png")
    >>> open(p, "rb").read(4)[1:]
    b'PNG'
    """
    alpha, omega = alpha.detach().float().cpu(), omega.detach().float().cpu()
    N, S, H = alpha.shape
    lo, hi = alias_band_hz(patch_t, frame_rate)
    omega_hz = to_hz(omega, frame_rate)
    pos = list(range(S))
    labels = subband_labels(S, bins_per_subband)
    fig = new_figure(figsize=(16, 4.8), layout="constrained")
    ax_w, ax_a, ax_j = fig.subplots(1, 3)

    _shade_band(ax_w, lo, hi, vertical=False)
    _distribution(ax_w, [omega_hz[:, s] for s in range(S)], pos, violin=True)
    ax_w.set_ylim(0, hi * 1.04)
    ax_w.set_xticks(pos, labels)
    ax_w.set_xlabel("subband")
    ax_w.set_ylabel("centre frequency omega (Hz)")
    ax_w.set_title("omega per subband (clips x modes)")
    ax_w.legend(loc="upper right", fontsize=8)

    _distribution(ax_a, [alpha[:, s] for s in range(S)], pos, violin=False)
    ax_a.set_yscale("log")
    plain_log_ticks(ax_a.yaxis)
    ax_a.set_xticks(pos, labels)
    ax_a.set_xlabel("subband")
    ax_a.set_ylabel("decay alpha (1/frame)")
    ax_a.set_title("alpha per subband")
    scale = frame_rate / math.pi
    sec = ax_a.secondary_yaxis(
        "right", functions=(lambda a: a * scale, lambda b: b / scale)
    )
    sec.set_ylabel("-3 dB bandwidth (Hz)")
    plain_log_ticks(sec.yaxis)

    _shade_band(ax_j, lo, hi, vertical=True, label=False)
    for s in range(S):
        ax_j.scatter(
            omega_hz[:, s].flatten(),
            alpha[:, s].flatten(),
            s=8,
            alpha=0.5,
            label=f"subband {s}",
        )
    if lambda_encoder is not None:
        grid = torch.linspace(math.pi / patch_t, math.pi, 200)
        top = lambda_encoder.max_alpha(grid).detach()
        ax_j.plot(to_hz(grid, frame_rate), top, "k--", lw=1, label="alpha max")
        ax_j.axhline(
            lambda_encoder.alpha_min, color="k", ls=":", lw=1, label="alpha min"
        )
    ax_j.set_yscale("log")
    plain_log_ticks(ax_j.yaxis)
    ax_j.set_xlim(0, hi * 1.02)
    ax_j.set_xlabel("omega (Hz)")
    ax_j.set_ylabel("alpha (1/frame)")
    ax_j.set_title("alpha vs omega")
    ax_j.legend(fontsize=7, markerscale=2)
    fig.suptitle(
        f"AaPE kernel parameters estimated over {N} clips ({H} modes/subband)"
    )
    return save_figure(fig, path)


def mean_responses(alpha, omega, theta, chunk=64):
    """Mean over clips of ``K(theta)`` for every subband and mode.

    Arguments
    ---------
    alpha, omega : torch.Tensor
        ``[N, S, H]``.
    theta : torch.Tensor
        ``[G]`` frequencies (rad/frame).
    chunk : int
        Clips evaluated at once (bounds memory).

    Returns
    -------
    torch.Tensor
        ``[S, H, G]``.

    Example
    -------
    >>> k = mean_responses(torch.full((2, 1, 1), 0.1), torch.ones(2, 1, 1), torch.tensor([1.0]))
    >>> round(k.item(), 6)
    1.0
    """
    total = 0.0
    for i in range(0, alpha.shape[0], chunk):
        a = alpha[i : i + chunk, ..., None].double()
        w = omega[i : i + chunk, ..., None].double()
        total = total + sblu_response(a, w, theta.double()).sum(0)
    return (total / alpha.shape[0]).float()


def plot_sblu_responses(
    alpha,
    omega,
    path,
    patch_t=16,
    frame_rate=100.0,
    num_points=512,
    db_floor=-40.0,
    bins_per_subband=None,
):
    """Mean SBLU magnitude responses per subband and mode, in dB.

    Arguments
    ---------
    alpha, omega : torch.Tensor
        ``[N, S, H]`` estimated kernel parameters (rad/frame).
    path : str
        Output PNG.
    patch_t : int
        Patch width in frames.
    frame_rate : float
        Feature frames per second.
    num_points : int
        Frequencies evaluated between 0 and the frame-rate Nyquist.
    db_floor : float
        Lowest dB shown.
    bins_per_subband : int, optional
        Mel bins per subband (for titles).

    Returns
    -------
    str
        The path written.

    Example
    -------
    >>> a, w = torch.full((3, 2, 2), 0.05), torch.rand(3, 2, 2) * 2 + 0.5
    >>> p = plot_sblu_responses(a, w, getfixture("tmp_path") / "k.png")
    >>> open(p, "rb").read(4)[1:]
    b'PNG'
    """
    alpha, omega = alpha.detach().float().cpu(), omega.detach().float().cpu()
    N, S, H = alpha.shape
    lo, hi = alias_band_hz(patch_t, frame_rate)
    theta = torch.linspace(0.0, math.pi, num_points)
    hz = to_hz(theta, frame_rate)
    K = mean_responses(alpha, omega, theta)  # [S, H, G]
    db = 20 * torch.log10(K.clamp_min(1e-12))
    ncols = min(S, 5)
    nrows = -(-S // ncols)
    fig = new_figure(
        figsize=(3.6 * ncols, 3.2 * nrows + 0.6), layout="constrained"
    )
    axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False).flatten()
    for s in range(S):
        ax = axes[s]
        _shade_band(ax, lo, hi, vertical=True, label=s == 0)
        for h in range(H):
            ax.plot(hz, db[s, h], lw=0.9, alpha=0.8)
        mode_mean = 20 * torch.log10(K[s].mean(0).clamp_min(1e-12))
        ax.plot(
            hz,
            mode_mean,
            "k",
            lw=1.8,
            label="mean over modes" if s == 0 else None,
        )
        ax.set_xlim(0, hi)
        ax.set_ylim(db_floor, 3)
        title = f"subband {s}"
        if bins_per_subband:
            title += f" (mel {s * bins_per_subband}-{(s + 1) * bins_per_subband - 1})"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("modulation frequency (Hz)")
        if s % ncols == 0:
            ax.set_ylabel("|K| (dB)")
    for ax in axes[S:]:
        ax.set_visible(False)
    fig.legend(fontsize=8, loc="outside lower center", ncols=3)
    fig.suptitle(
        f"SBLU magnitude responses, mean over {N} clips (one line per mode)"
    )
    return save_figure(fig, path)


def plot_gate(stem, path):
    """Fusion strength per channel: gate values or the alias half's weight norms.

    Arguments
    ---------
    stem : AaPE
        The AaPE stem (``gated_add`` or ``concat`` fusion).
    path : str
        Output PNG.

    Returns
    -------
    str
        The path written.

    Example
    -------
    >>> stem = AaPE(n_mels=32, patch_size=16, embed_dim=8, num_modes=2)
    >>> p = plot_gate(stem, getfixture("tmp_path") / "g.png")
    >>> open(p, "rb").read(4)[1:]
    b'PNG'
    """
    fig = new_figure(figsize=(8, 4), layout="constrained")
    ax = fig.subplots()
    if stem.fusion == "gated_add":
        gate = stem.gate.detach().float().cpu()
        values, _ = gate.sort(descending=True)
        x = torch.arange(values.numel())
        if values.numel() <= 96:
            ax.bar(x, values, width=0.9, color="tab:blue")
        else:
            ax.fill_between(
                x, 0, values, step="mid", color="tab:blue", alpha=0.6
            )
            ax.plot(x, values, color="tab:blue", lw=0.8, drawstyle="steps-mid")
        ax.axhline(0, color="k", lw=0.6)
        ax.set_ylabel("gate value")
        ax.set_title(
            f"gated_add fusion: tokens = std + gate * aa  "
            f"(|gate| mean {gate.abs().mean():.4f}, min {gate.abs().min():.4f}, "
            f"max {gate.abs().max():.4f})"
        )
    else:
        D = stem.embed_dim
        weight = stem.fuse.weight.detach().float().cpu()
        std_norm = weight[:, :D].norm(dim=1)
        aa_norm = weight[:, D:].norm(dim=1)
        order = aa_norm.argsort(descending=True)
        x = torch.arange(D)
        ax.plot(x, aa_norm[order], label="alias half ||W[:, D:]|| (sorted)")
        ax.plot(
            x,
            std_norm[order],
            lw=0.8,
            alpha=0.7,
            label="standard half ||W[:, :D]||",
        )
        ax.set_ylabel("row norm of the fusion weight")
        ratio = (aa_norm.mean() / std_norm.mean().clamp_min(1e-12)).item()
        ax.set_title(
            f"concat fusion: alias / standard weight norm = {ratio:.3g}"
        )
        ax.legend(fontsize=8)
    ax.set_xlabel("output channel (sorted)")
    return save_figure(fig, path)


def read_jsonl(path):
    r"""Reads a JSON-lines file, skipping (and counting in the log) bad lines.

    Arguments
    ---------
    path : str
        File (missing -> empty list).

    Returns
    -------
    list of dict

    Example
    -------
    >>> p = getfixture("tmp_path") / "m.jsonl"
    >>> _ = p.write_text('{"step": 1}\nnot json\n')
    >>> read_jsonl(p)
    [{'step': 1}]
    """
    path = pathlib.Path(path)
    if not path.exists():
        return []
    rows, bad = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad += 1
    if bad:
        logger.warning("%s: skipped %d unreadable line(s)", path, bad)
    return rows


def _series(rows, xkey, ykey):
    """``(xs, ys)`` of rows holding numeric ``xkey`` and ``ykey``."""
    xs, ys = [], []
    for row in rows:
        x, y = row.get(xkey), row.get(ykey)
        if isinstance(x, (int, float)) and isinstance(y, (int, float)):
            xs.append(x)
            ys.append(y)
    return xs, ys


def plot_training_curves(metrics, epochs, path):
    """Loss parts, RankMe, learning rate and EMA decay of a pre-training run.

    Arguments
    ---------
    metrics : list of dict
        ``metrics.jsonl`` rows (one per optimiser step: ``step``, ``epoch``,
        ``lr``, ``ema_decay``, ``regression``, ``contrastive``, ``loss``);
        may be empty.
    epochs : list of dict
        ``epochs.jsonl`` rows (``epoch``, ``lr``, ``ema_decay``,
        ``train_*``, ``valid_*`` incl. ``valid_rankme``); may be empty.
    path : str
        Output PNG.

    Returns
    -------
    str
        The path written.

    Example
    -------
    >>> steps = [{"step": i, "epoch": 1 + i // 3, "lr": 1e-3, "ema_decay": 0.99,
    ...           "regression": 1.0 / i, "contrastive": 2.0, "loss": 1.2} for i in range(1, 7)]
    >>> ep = [{"epoch": 1, "valid_loss": 1.0, "valid_rankme": 5.0}]
    >>> p = plot_training_curves(steps, ep, getfixture("tmp_path") / "t.png")
    >>> open(p, "rb").read(4)[1:]
    b'PNG'
    """
    if not metrics and not epochs:
        raise ValueError("no metrics.jsonl or epochs.jsonl rows to plot")
    by_step = {}
    for row in metrics:
        if isinstance(row.get("step"), (int, float)):
            by_step[row["step"]] = (
                row  # a resumed run rewrites steps: keep the last
            )
    steps = [by_step[k] for k in sorted(by_step)]
    use_steps = bool(steps)
    # x position of each epoch's end: its last step, or the epoch number
    epoch_end = {}
    for row in steps:
        if isinstance(row.get("epoch"), (int, float)):
            epoch_end[row["epoch"]] = row["step"]

    def epoch_x(rows, key):
        xs, ys = _series(rows, "epoch", key)
        if use_steps:
            pairs = [
                (epoch_end[e], y) for e, y in zip(xs, ys) if e in epoch_end
            ]
            return [p[0] for p in pairs], [p[1] for p in pairs]
        return xs, ys

    xlabel = "optimiser step" if use_steps else "epoch"
    fig = new_figure(figsize=(12, 7.5), layout="constrained")
    (ax_l, ax_r), (ax_lr, ax_ema) = fig.subplots(2, 2)
    colors = {"regression": "tab:blue", "contrastive": "tab:green", "loss": "k"}
    for part, color in colors.items():
        if use_steps:
            xs, ys = _series(steps, "step", part)
            if xs:
                ax_l.plot(
                    xs,
                    ys,
                    color=color,
                    lw=0.9,
                    alpha=0.8,
                    label=f"train {part}",
                )
        else:
            xs, ys = _series(epochs, "epoch", f"train_{part}")
            if xs:
                ax_l.plot(
                    xs, ys, color=color, marker="o", label=f"train {part}"
                )
        xs, ys = epoch_x(epochs, f"valid_{part}")
        if xs:
            ax_l.plot(
                xs,
                ys,
                color=color,
                ls="--",
                marker="s",
                ms=4,
                label=f"valid {part}",
            )
    ax_l.set_xlabel(xlabel)
    integer_ticks(ax_l.xaxis)  # steps and epochs are whole numbers
    ax_l.set_ylabel("loss")
    ax_l.set_title("losses")
    if ax_l.lines:
        # outside the axes: the curves fill the whole box
        ax_l.legend(
            fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
            borderaxespad=0.0,
        )

    xs, ys = _series(epochs, "epoch", "valid_rankme")
    if xs:
        ax_r.plot(xs, ys, marker="o", color="tab:purple")
        ax_r.set_xlabel("epoch")
        integer_ticks(ax_r.xaxis)
        ax_r.set_ylabel("effective rank")
    else:
        ax_r.text(0.5, 0.5, "no valid_rankme", ha="center", va="center")
    ax_r.set_title("RankMe of validation clip embeddings")

    for ax, key, title in (
        (ax_lr, "lr", "learning rate"),
        (ax_ema, "ema_decay", "teacher EMA decay"),
    ):
        xs, ys = (
            _series(steps, "step", key)
            if use_steps
            else _series(epochs, "epoch", key)
        )
        if xs:
            ax.plot(xs, ys, color="tab:red" if key == "lr" else "tab:brown")
        else:
            ax.text(0.5, 0.5, f"no {key}", ha="center", va="center")
        ax.set_xlabel(xlabel)
        integer_ticks(ax.xaxis)
        ax.set_title(title)
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    ax_ema.ticklabel_format(axis="y", useOffset=False)
    return save_figure(fig, path)


def plot_stability(result, path):
    """Stability-vs-shift curves, one line per model.

    Arguments
    ---------
    result : dict or str
        :func:`~aasp_sb.analysis.stability.compare_checkpoints`'s result
        (or the path of its JSON); a single
        :func:`~aasp_sb.analysis.stability.measure_checkpoint_stability`
        result is accepted too.
    path : str
        Output PNG.

    Returns
    -------
    str
        The path written.

    Example
    -------
    >>> res = {"shifts": [1, 2], "models": {"a": {"shifts": [1, 2], "per_shift": [0.9, 0.8]}}}
    >>> p = plot_stability(res, getfixture("tmp_path") / "s.png")
    >>> open(p, "rb").read(4)[1:]
    b'PNG'
    """
    if isinstance(result, (str, pathlib.Path)):
        result = json.loads(pathlib.Path(result).read_text(encoding="utf-8"))
    models = result.get("models")
    if models is None and "per_shift" in result:
        models = {"model": result}
    if not models:
        raise ValueError("stability result has no models")
    fig = new_figure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.subplots()
    hop_ms = None
    patch = None
    centred = None
    for name, r in models.items():
        shifts = r.get("shifts", result.get("shifts"))
        values = r["per_shift"]
        overall = r.get("overall", sum(values) / len(values))
        ax.plot(
            shifts,
            values,
            marker="o",
            ms=4,
            label=f"{name} (mean {overall:.4f})",
        )
        if "hop_length" in r and "sample_rate" in r:
            hop_ms = 1000.0 * r["hop_length"] / r["sample_rate"]
        patch = r.get("patch_size", patch)
        centred = r.get("centered", centred)
    ax.set_xlabel("shift (frames)")
    if centred:
        ax.set_ylabel("mean centred cosine similarity to unshifted")
    else:
        ax.set_ylabel("mean cosine similarity to unshifted")
    if hop_ms:
        sec = ax.secondary_xaxis(
            "top", functions=(lambda f: f * hop_ms, lambda ms: ms / hop_ms)
        )
        sec.set_xlabel("shift (ms)")
    title = "Clip-embedding stability under shifts"
    if patch:
        title += f" (patch width {patch[1]} frames)"
    if centred:
        title += (
            "\ncentred: the mean unshifted embedding over the clips is "
            "subtracted first"
        )
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return save_figure(fig, path)


def run_folder(run):
    """The run folder for a run, save or checkpoint path (where hyperparams.yaml is).

    Arguments
    ---------
    run : str
        Path.

    Returns
    -------
    pathlib.Path
    """
    try:
        return find_hparams(run).parent
    except FileNotFoundError:
        return pathlib.Path(run)


def default_manifest(run, hparams):
    """A manifest to analyse when none is given: the run's valid (or train) CSV.

    Arguments
    ---------
    run : pathlib.Path
        Run folder.
    hparams : dict
        The run's hyper-parameters.

    Returns
    -------
    str or None
    """
    candidates = [hparams.get("valid_csv"), str(run / "data" / "valid.csv")]
    candidates += [hparams.get("train_csv"), str(run / "data" / "train.csv")]
    for c in candidates:
        if c and pathlib.Path(str(c)).is_file():
            return str(c)
    return None


def make_plots(
    run,
    csv=None,
    stability=None,
    output_dir=None,
    max_clips=64,
    seconds=None,
    batch_size=8,
    which="student",
    device="cpu",
):
    """Writes every plot whose inputs exist for a pre-training run.

    Arguments
    ---------
    run : str
        Run folder (or a checkpoint inside one).
    csv : str, optional
        Manifest for the ``(alpha, omega)`` and SBLU plots (default: the
        run's ``valid_csv``/``train_csv`` or prepared manifests, if present).
    stability : str, optional
        Stability JSON (default: ``RUN/stability.json`` if present).
    output_dir : str, optional
        Where to write (default ``RUN/plots``).
    max_clips : int, optional
        Clips used for the ``(alpha, omega)`` statistics.
    seconds : float, optional
        Crop per clip (default: the training length).
    batch_size : int
        Clips per forward pass.
    which : str
        ``"student"`` or ``"teacher"`` weights.
    device : str
        Where to run the stem.

    Returns
    -------
    list of str
        The files written.
    """
    _matplotlib()  # fail early with the install hint
    if not pathlib.Path(run).exists():
        raise FileNotFoundError(f"--run {run}: no such folder or file")
    root = run_folder(run)
    out = pathlib.Path(output_dir) if output_dir else root / "plots"
    written = []
    try:
        parts = load_pretrained(run, which=which, device=device)
    except FileNotFoundError as err:
        logger.info("no checkpoint (%s): skipping the model plots", err)
        parts = None
    if parts is not None:
        stem = parts.encoder.stem
        if not isinstance(stem, AaPE):
            logger.info(
                "stem is %s (no AaPE): skipping the alpha/omega, SBLU response "
                "and gate plots",
                type(stem).__name__,
            )
        else:
            written.append(plot_gate(stem, out / "gate.png"))
            manifest = csv or default_manifest(root, parts.hparams)
            if manifest is None:
                logger.info(
                    "no manifest (--csv) found: skipping the alpha/omega and "
                    "SBLU response plots"
                )
            else:
                logger.info("estimating (alpha, omega) on %s", manifest)
                skip = SkipCounter("plots")
                alpha, omega = collect_lambda(
                    parts.features,
                    parts.encoder,
                    manifest,
                    seconds=seconds,
                    max_clips=max_clips,
                    batch_size=batch_size,
                    device=device,
                    skip=skip,
                )
                skip.report(logger)
                logmel = parts.features.logmel
                frame_rate = logmel.sample_rate / logmel.hop_length
                pf, pt = stem.patch_size
                written.append(
                    plot_lambda_distribution(
                        alpha,
                        omega,
                        out / "lambda_distribution.png",
                        patch_t=pt,
                        frame_rate=frame_rate,
                        bins_per_subband=pf,
                        lambda_encoder=stem.lambda_encoder,
                    )
                )
                written.append(
                    plot_sblu_responses(
                        alpha,
                        omega,
                        out / "sblu_response.png",
                        patch_t=pt,
                        frame_rate=frame_rate,
                        bins_per_subband=pf,
                    )
                )
    metrics = read_jsonl(root / "metrics.jsonl")
    epochs = read_jsonl(root / "epochs.jsonl")
    if metrics or epochs:
        written.append(
            plot_training_curves(metrics, epochs, out / "training_curves.png")
        )
    else:
        logger.info(
            "no metrics.jsonl / epochs.jsonl in %s: skipping training curves",
            root,
        )
    if stability is None and (root / "stability.json").is_file():
        stability = root / "stability.json"
    if stability is not None:
        written.append(plot_stability(stability, out / "stability.png"))
    else:
        logger.info(
            "no stability JSON (--stability): skipping the stability plot"
        )
    for path in written:
        logger.info("wrote %s", path)
    return written


def parse_args(argv=None):
    """Command-line arguments of ``python -m aasp_sb.analysis.plots``."""
    parser = argparse.ArgumentParser(
        prog="python -m aasp_sb.analysis.plots",
        description="Writes the AaPE analysis plots and training curves of a run.",
    )
    parser.add_argument(
        "--run", required=True, help="pre-training output folder"
    )
    parser.add_argument(
        "--csv", help="manifest for the alpha/omega and SBLU plots"
    )
    parser.add_argument(
        "--stability", help="JSON from aasp_sb.analysis.stability"
    )
    parser.add_argument("--output-dir", help="default: RUN/plots")
    parser.add_argument("--max-clips", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--which", choices=("student", "teacher"), default="student"
    )
    parser.add_argument("--device", default="cpu")
    return parser.parse_args(argv)


def run(argv=None):
    """Command-line entry point; prints the files written.

    Arguments
    ---------
    argv : list of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    list of str
        The files written.
    """
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(name)s - %(levelname)s - %(message)s"
    )
    written = make_plots(
        args.run,
        csv=args.csv,
        stability=args.stability,
        output_dir=args.output_dir,
        max_clips=args.max_clips,
        seconds=args.seconds,
        batch_size=args.batch_size,
        which=args.which,
        device=args.device,
    )
    for path in written:
        print(path)
    return written


def main(argv=None):
    """Console-script entry point: :func:`run`, then exit status 0.

    Bad input (a missing file or folder, an unusable manifest) exits with
    status 1 and a one-line message; bad arguments with status 2.

    Arguments
    ---------
    argv : list of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0; use :func:`run` for the list of files.
    """
    from aasp_sb.cli import console_main

    return console_main(run, argv, "aasp-plots")


if __name__ == "__main__":
    sys.exit(main())
