r"""Aliasing stability of pre-trained checkpoints, side by side.

For every clip of a manifest (a crop of ``seconds`` from the start), the clip
embedding (masked mean of the encoder's final tokens,
:meth:`~aasp_sb.lobes.encoder.AudioViT.clip_embedding`) is compared with the
embedding of the same clip shifted by ``k`` feature frames (``k * hop``
samples; 10 ms at 16 kHz), for sub-patch shifts ``k = 1..15`` by default. The
number reported per shift is the mean *centred* cosine similarity over clips
(:func:`~aasp_sb.evaluation.stability.shift_cosine_similarity` after
subtracting the mean unshifted embedding over the clips, see
:func:`measure_model_stability`; raw cosines are kept as ``per_shift_raw``;
1.0 = the embedding does not move). A patch stem that aliases the alias-prone band
(3.125-50 Hz modulations at 16-frame patches) scores lower.

How a shifted view is made: the clip is read with ``max(k) * hop`` samples of
context before the analysed window (and ``max(-k) * hop`` after it, for
negative ``k``); :func:`~aasp_sb.evaluation.stability.shift_waveform` delays
the whole read by ``k * hop`` samples and the same window is cropped from it.
The window therefore always holds real audio, as long as the reference, and
only the content moves (``k > 0``: content later; fractional ``k`` gives
sub-frame shifts). Clips shorter than the window are zero-padded and masked
with relative lengths; clips that cannot be read, or that are shorter than the
context plus one patch, are skipped and logged.

Command line::

    python -m aasp_sb.analysis.stability --checkpoint RUN_A --checkpoint RUN_B \
        --names aasp,plain --csv valid.csv [--shifts 1-15] [--max-clips 200] \
        [--seconds 2.07] [--output stability.md] [--json stability.json]
"""

import argparse
import json
import logging
import pathlib
import re
import sys

from aasp_sb import cli  # noqa: F401 -- first: silences SpeechBrain's torchvision warning

# isort: split

import torch

from aasp_sb.data.audio import AudioLoadError, SkipCounter, load_audio
from aasp_sb.data.folder import read_csv
from aasp_sb.evaluation.stability import (
    shift_cosine_similarity,
    shift_waveform,
    stability_report,
)
from aasp_sb.pretrained import load_pretrained

logger = logging.getLogger(__name__)

DEFAULT_SHIFTS = tuple(range(1, 16))
_RANGE = re.compile(r"^(-?\d+)\s*-\s*(-?\d+)$")


def parse_shifts(spec):
    """Parses a shift list such as ``"1-15"``, ``"0,4,8"`` or ``"0.5,1-3"``.

    Arguments
    ---------
    spec : str or sequence of numbers
        Comma-separated items; an item is a number (frames; fractional
        values give sub-frame shifts, a leading ``-`` advances instead of
        delays) or an inclusive integer range ``a-b``.

    Returns
    -------
    list
        The shifts in order, duplicates dropped; integral values as ``int``.

    Example
    -------
    >>> parse_shifts("1-4,8")
    [1, 2, 3, 4, 8]
    >>> parse_shifts("0.5, 1, -2")
    [0.5, 1, -2]
    """
    if isinstance(spec, str):
        items = [s.strip() for s in spec.split(",") if s.strip()]
    else:
        items = list(spec)
    out = []
    for item in items:
        if isinstance(item, str):
            match = _RANGE.match(item)
            if match:
                lo, hi = int(match.group(1)), int(match.group(2))
                if hi < lo:
                    raise ValueError(f"empty shift range {item!r}")
                values = list(range(lo, hi + 1))
            else:
                try:
                    values = [float(item)]
                except ValueError:
                    raise ValueError(
                        f"cannot parse shift {item!r} (use e.g. '1-15' or '0,4,8')"
                    ) from None
        else:
            values = [float(item)]
        for v in values:
            v = int(v) if float(v).is_integer() else float(v)
            if v not in out:
                out.append(v)
    if not out:
        raise ValueError(f"no shifts in {spec!r}")
    return out


def iter_clip_batches(
    csv_path,
    sample_rate,
    num_samples,
    batch_size=4,
    max_clips=None,
    min_samples=1,
    skip=None,
):
    r"""Reads a manifest's clips (starts of files) in zero-padded batches.

    Arguments
    ---------
    csv_path : str
        Manifest with a ``wav`` column (``ID`` is used when present).
    sample_rate : int
        Rate to read at.
    num_samples : int
        Samples read from the start of each file (shorter clips are padded).
    batch_size : int
        Clips per batch.
    max_clips : int, optional
        Stop after this many usable clips.
    min_samples : int
        Clips with fewer real samples are skipped.
    skip : SkipCounter, optional
        Records skipped clips (a new one when None).

    Yields
    ------
    ids : list of str
        Clip IDs.
    wavs : torch.Tensor
        ``[B, num_samples]`` float32, zero beyond each clip's end.
    lengths : torch.Tensor
        ``[B]`` long, real samples per clip.

    Example
    -------
    >>> import numpy as np, soundfile as sf
    >>> tmp = getfixture("tmp_path")
    >>> sf.write(str(tmp / "a.wav"), np.zeros(800, dtype="float32"), 16000)
    >>> _ = (tmp / "m.csv").write_text(f"ID,duration,wav\na,0.05,{tmp}/a.wav\nb,1,{tmp}/missing.wav\n")
    >>> [(ids, w.shape, n.tolist()) for ids, w, n in iter_clip_batches(str(tmp / "m.csv"), 16000, 1000)]
    [(['a'], torch.Size([1, 1000]), [800])]
    """
    skip = skip if skip is not None else SkipCounter("stability")
    rows = read_csv(csv_path)
    if rows and "wav" not in rows[0]:
        raise ValueError(f"manifest {csv_path} has no `wav` column")
    seconds = num_samples / sample_rate
    ids, wavs, lengths, used = [], [], [], 0
    for i, row in enumerate(rows):
        if max_clips is not None and used >= max_clips:
            break
        path = row["wav"]
        try:
            wav = load_audio(
                path, sample_rate, max_seconds=seconds, window="start"
            )
        except AudioLoadError as err:
            skip.add(path, err)
            continue
        wav = wav[:num_samples]
        if wav.numel() < min_samples:
            skip.add(
                path,
                f"{wav.numel() / sample_rate:.3f} s is shorter than the "
                f"{min_samples / sample_rate:.3f} s needed",
            )
            continue
        used += 1
        ids.append(row.get("ID", str(i)))
        lengths.append(wav.numel())
        wavs.append(
            torch.nn.functional.pad(wav, (0, num_samples - wav.numel()))
        )
        if len(wavs) == batch_size:
            yield ids, torch.stack(wavs), torch.tensor(lengths)
            ids, wavs, lengths = [], [], []
    if wavs:
        yield ids, torch.stack(wavs), torch.tensor(lengths)


def shifted_views(wavs, lengths, shifts, hop_length, front, num_samples):
    """Shifted copies of a batch, all cropped to the same analysis window.

    The window is ``[front, front + num_samples)`` of each read; shift ``k``
    delays the read by ``round(k * hop_length)`` samples
    (:func:`~aasp_sb.evaluation.stability.shift_waveform`) before cropping,
    so the window shows content from ``k`` frames earlier.

    Arguments
    ---------
    wavs : torch.Tensor
        ``[B, L]`` reads (zero beyond each clip's end).
    lengths : torch.Tensor
        ``[B]`` real samples per read.
    shifts : sequence of float
        Shifts in frames; ``0 <= round(k * hop) <= front`` for delays, and
        the read must extend ``-round(k * hop)`` samples past the window for
        advances.
    hop_length : int
        Samples per frame.
    front : int
        Context samples before the window.
    num_samples : int
        Window length.

    Returns
    -------
    views : torch.Tensor
        ``[K, B, num_samples]``.
    valid : torch.Tensor
        ``[K, B]`` long, real samples in each view (at least 1).

    Example
    -------
    >>> w = torch.arange(1.0, 9.0)[None]
    >>> v, n = shifted_views(w, torch.tensor([8]), [0, 1, 2], 1, 2, 4)
    >>> v[:, 0].tolist()
    [[3.0, 4.0, 5.0, 6.0], [2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0]]
    """
    views, valid = [], []
    for k in shifts:
        n = int(round(k * hop_length))
        if n > front or front - n + num_samples > wavs.shape[-1]:
            raise ValueError(
                f"shift {k} ({n} samples) needs more context than the read has"
            )
        views.append(
            shift_waveform(wavs, k, hop_length)[
                ..., front : front + num_samples
            ]
        )
        valid.append((lengths - front + n).clamp(1, num_samples))
    return torch.stack(views), torch.stack(valid)


def default_seconds(features, encoder):
    """Crop giving exactly the encoder's training length (``max_frames`` frames).

    Arguments
    ---------
    features : aasp_sb.features.Features
        Front end (sample rate and hop).
    encoder : aasp_sb.lobes.encoder.AudioViT
        The encoder (``max_frames``).

    Returns
    -------
    float
        Seconds.

    Example
    -------
    >>> from aasp_sb.features import Features
    >>> from aasp_sb.lobes.encoder import AudioViT
    >>> from aasp_sb.lobes.patch import PatchEmbed
    >>> enc = AudioViT(PatchEmbed(80, 16, 16), 16, depth=1, num_heads=2, max_frames=208)
    >>> default_seconds(Features(), enc)
    2.07
    """
    logmel = features.logmel
    return (encoder.max_frames - 1) * logmel.hop_length / logmel.sample_rate


@torch.no_grad()
def measure_model_stability(
    features,
    encoder,
    csv_path,
    shifts=DEFAULT_SHIFTS,
    seconds=None,
    max_clips=None,
    batch_size=4,
    device="cpu",
    skip=None,
    center=True,
):
    r"""Per-shift mean cosine similarity of clip embeddings for one model.

    With ``center=True`` (default) the mean reference embedding over the
    clips is subtracted from every embedding first: raw cosines of mean-pooled
    transformer outputs sit near 1 for any pair of clips (a shared direction
    dominates), so only the centred cosine shows how far a shift moves the
    clip-specific part. Raw values are kept in ``per_shift_raw``.

    All the shifted views of a batch of clips go through the front end and
    the encoder in one forward pass; views with the same sample shift are
    computed once, and shift 0 reuses the reference (exactly 1.0).

    Arguments
    ---------
    features : aasp_sb.features.Features
        Waveform -> normalised log-mel.
    encoder : aasp_sb.lobes.encoder.AudioViT
        The encoder (any stem).
    csv_path : str
        Manifest with a ``wav`` column.
    shifts : sequence or str
        Shifts in frames (see :func:`parse_shifts`).
    seconds : float, optional
        Analysed crop from the start of each clip (default: the encoder's
        training length, see :func:`default_seconds`).
    max_clips : int, optional
        Use at most this many clips (the first readable ones).
    batch_size : int
        Clips per forward pass (each brings ``len(shifts) + 1`` views).
    device : str or torch.device
        Where to run.
    skip : SkipCounter, optional
        Collects skipped clips.
    center : bool
        Subtract the mean reference embedding before the cosine.

    Returns
    -------
    dict
        ``shifts``, ``per_shift`` (mean centred cosine similarity per shift; raw in ``per_shift_raw``),
        ``overall`` (their mean), ``num_clips``, ``seconds``,
        ``sample_rate``, ``hop_length``, ``stem`` and ``patch_size``.

    Example
    -------
    >>> import numpy as np, soundfile as sf
    >>> from aasp_sb.features import Features
    >>> from aasp_sb.lobes.encoder import AudioViT
    >>> from aasp_sb.lobes.patch import PatchEmbed
    >>> tmp = getfixture("tmp_path")
    >>> sf.write(str(tmp / "a.wav"), np.random.randn(16000).astype("float32"), 16000)
    >>> _ = (tmp / "m.csv").write_text(f"ID,duration,wav\na,1.0,{tmp}/a.wav\n")
    >>> enc = AudioViT(PatchEmbed(80, 16, 16), 16, depth=1, num_heads=2, max_frames=64)
    >>> res = measure_model_stability(Features(), enc, str(tmp / "m.csv"), shifts=[0, 3])
    >>> res["num_clips"], round(res["per_shift"][0], 6)
    (1, 1.0)
    """
    shifts = parse_shifts(shifts)
    skip = skip if skip is not None else SkipCounter("stability")
    sr = features.logmel.sample_rate
    hop = features.logmel.hop_length
    seconds = default_seconds(features, encoder) if seconds is None else seconds
    num_samples = int(round(seconds * sr))
    if num_samples <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    samples = [int(round(k * hop)) for k in shifts]
    front, back = max(0, *samples), max(0, *(-s for s in samples))
    # the first view of each distinct sample shift; 0 is the reference
    distinct = {0: 0}
    computed = [0]
    for k, n in zip(shifts, samples):
        if n not in distinct:
            distinct[n] = len(computed)
            computed.append(k)
    patch_samples = encoder.patch_size[1] * hop
    min_samples = front + back + min(num_samples, patch_samples)
    was_training = (features.training, encoder.training)
    features.to(device).eval()
    encoder.to(device).eval()
    refs, moved = [], []
    try:
        for _, wavs, lengths in iter_clip_batches(
            csv_path,
            sr,
            front + num_samples + back,
            batch_size,
            max_clips,
            min_samples,
            skip,
        ):
            views, valid = shifted_views(
                wavs.to(device),
                lengths.to(device),
                computed,
                hop,
                front,
                num_samples,
            )
            V, B, _ = views.shape
            emb = embed_waveforms(
                features, encoder, views.reshape(V * B, -1), valid.reshape(-1)
            ).view(V, B, -1)
            refs.append(emb[0].double().cpu())
            moved.append(emb[[distinct[n] for n in samples]].double().cpu())
    finally:
        features.train(was_training[0])
        encoder.train(was_training[1])
    count = sum(len(r) for r in refs)
    if count == 0:
        raise ValueError(
            f"no usable clip in {csv_path} ({skip.count} skipped): clips must "
            f"be readable and at least {min_samples / sr:.3f} s long"
        )
    ref = torch.cat(refs)  # [N, D]
    shifted = torch.cat(moved, dim=1)  # [S, N, D]
    raw, _ = shift_cosine_similarity(ref, shifted)
    center = center and count > 1  # one clip has nothing to centre against
    mean = ref.mean(dim=0) if center else torch.zeros_like(ref[0])
    centred, _ = shift_cosine_similarity(ref - mean, shifted - mean)
    per_shift = centred.tolist()
    return {
        "centered": bool(center),
        "per_shift_raw": raw.tolist(),
        "shifts": shifts,
        "per_shift": per_shift,
        "overall": sum(per_shift) / len(per_shift),
        "num_clips": count,
        "seconds": float(seconds),
        "sample_rate": int(sr),
        "hop_length": int(hop),
        "stem": type(encoder.stem).__name__,
        "patch_size": list(encoder.patch_size),
    }


def embed_waveforms(features, encoder, wavs, valid):
    """Clip embeddings (masked token mean) of zero-padded waveforms.

    Arguments
    ---------
    features : torch.nn.Module
        Waveform -> normalised log-mel.
    encoder : aasp_sb.lobes.encoder.AudioViT
        The encoder.
    wavs : torch.Tensor
        ``[B, L]`` waveforms.
    valid : torch.Tensor
        ``[B]`` real samples.

    Returns
    -------
    torch.Tensor
        ``[B, D]`` float32.
    """
    lengths = valid.float() / wavs.shape[-1]
    out = encoder(features(wavs), lengths)
    return encoder.clip_embedding(out).float()


def measure_checkpoint_stability(
    checkpoint,
    csv_path,
    shifts=DEFAULT_SHIFTS,
    seconds=None,
    max_clips=None,
    batch_size=4,
    which="student",
    device="cpu",
    skip=None,
):
    """Loads a pre-trained checkpoint and measures its aliasing stability.

    Arguments
    ---------
    checkpoint : str
        Run folder, save folder, ``CKPT+*`` folder or weights file
        (see :func:`aasp_sb.pretrained.load_pretrained`).
    csv_path : str
        Manifest with a ``wav`` column.
    shifts : sequence or str
        Shifts in frames (see :func:`parse_shifts`).
    seconds : float, optional
        Analysed crop (default: the run's training length).
    max_clips : int, optional
        At most this many clips.
    batch_size : int
        Clips per forward pass.
    which : str
        ``"student"`` or ``"teacher"``.
    device : str
        Where to run.
    skip : SkipCounter, optional
        Collects skipped clips.

    Returns
    -------
    dict
        :func:`measure_model_stability`'s result plus ``checkpoint`` (the
        weights file used).
    """
    parts = load_pretrained(checkpoint, which=which, device=device)
    result = measure_model_stability(
        parts.features,
        parts.encoder,
        csv_path,
        shifts=shifts,
        seconds=seconds,
        max_clips=max_clips,
        batch_size=batch_size,
        device=device,
        skip=skip,
    )
    result["checkpoint"] = str(parts.checkpoint)
    return result


def default_names(checkpoints):
    """Short unique names for checkpoints (their run folder names).

    Arguments
    ---------
    checkpoints : sequence of str
        Paths.

    Returns
    -------
    list of str

    Example
    -------
    >>> default_names(["runs/aasp", "runs/plain/save", "other/aasp"])
    ['aasp', 'plain', 'aasp-2']
    """
    names = []
    for ckpt in checkpoints:
        path = pathlib.Path(ckpt)
        if path.name.endswith(".ckpt"):
            path = path.parent
        while path.name == "save" or path.name.startswith("CKPT+"):
            path = path.parent
        base = path.name or str(ckpt)
        name, i = base, 2
        while name in names:
            name, i = f"{base}-{i}", i + 1
        names.append(name)
    return names


def compare_checkpoints(
    checkpoints,
    csv_path,
    names=None,
    shifts=DEFAULT_SHIFTS,
    seconds=None,
    max_clips=None,
    batch_size=4,
    which="student",
    device="cpu",
):
    """Measures several checkpoints on the same clips and shifts.

    Arguments
    ---------
    checkpoints : sequence of str
        Runs or checkpoints (see :func:`measure_checkpoint_stability`).
    csv_path : str
        Manifest with a ``wav`` column.
    names : sequence of str, optional
        Column names (default: run folder names).
    shifts : sequence or str
        Shifts in frames.
    seconds : float, optional
        Analysed crop (default: the first checkpoint's training length, used
        for all so the columns are comparable).
    max_clips : int, optional
        At most this many clips.
    batch_size : int
        Clips per forward pass.
    which : str
        ``"student"`` or ``"teacher"``.
    device : str
        Where to run.

    Returns
    -------
    dict
        JSON-serialisable: ``csv``, ``shifts``, ``seconds``, ``num_clips``,
        ``skipped`` (``{path: reason}``) and ``models``
        (``{name: measure_checkpoint_stability result}``, in order).
    """
    checkpoints = [str(c) for c in checkpoints]
    if not checkpoints:
        raise ValueError("give at least one checkpoint")
    names = default_names(checkpoints) if names is None else list(names)
    if len(names) != len(checkpoints) or len(set(names)) != len(names):
        raise ValueError(
            f"need {len(checkpoints)} distinct names for the checkpoints, got {names}"
        )
    shifts = parse_shifts(shifts)
    skip = SkipCounter("stability")
    models = {}
    for name, ckpt in zip(names, checkpoints):
        result = measure_checkpoint_stability(
            ckpt,
            csv_path,
            shifts=shifts,
            seconds=seconds,
            max_clips=max_clips,
            batch_size=batch_size,
            which=which,
            device=device,
            skip=skip,
        )
        seconds = result["seconds"]  # the first model's length serves them all
        models[name] = result
        logger.info(
            "%s (%s): mean centred shift cosine similarity %.4f over %d clips",
            name,
            result["checkpoint"],
            result["overall"],
            result["num_clips"],
        )
    skip.report(logger)
    return {
        "csv": str(csv_path),
        "which": which,
        "shifts": shifts,
        "seconds": float(seconds),
        "num_clips": {n: r["num_clips"] for n, r in models.items()},
        "skipped": dict(skip.reasons),
        "models": models,
    }


def markdown_report(result, digits=4):
    """Markdown page for a :func:`compare_checkpoints` result.

    Arguments
    ---------
    result : dict
        :func:`compare_checkpoints`'s output.
    digits : int
        Decimal places.

    Returns
    -------
    str
    """
    models = result["models"]
    table = stability_report(
        {n: r["per_shift"] for n, r in models.items()}, result["shifts"], digits
    )
    first = next(iter(models.values()))
    hop_ms = 1000.0 * first["hop_length"] / first["sample_rate"]
    counts = sorted(set(result["num_clips"].values()))
    centred = all(r.get("centered", False) for r in models.values())
    how = "Mean *centred* cosine similarity" if centred else "Mean cosine similarity"
    why = (
        " Centred: the mean unshifted embedding over the clips is subtracted "
        "from every embedding first (raw cosines of mean-pooled tokens sit "
        "near 1 for any two clips; they are in the JSON as `per_shift_raw`)."
        if centred
        else " Not centred (raw cosines)."
    )
    lines = [
        "# Aliasing stability",
        "",
        f"{how} between each clip's embedding (masked mean of "
        "the encoder's tokens) and the embedding of the same clip shifted by "
        f"`shift` frames ({hop_ms:g} ms each; positive = content later), "
        f"{', '.join(map(str, counts))} clips from `{result['csv']}`, "
        f"{result['seconds']:.3f} s crops, {result['which']} weights. "
        "1.0 = the embedding does not move." + why,
        "",
        table,
        "",
    ]
    for name, r in models.items():
        lines.append(
            f"- `{name}`: {r['stem']} (patch {r['patch_size']}), `{r['checkpoint']}`"
        )
    if result.get("skipped"):
        lines.append(
            f"- {len(result['skipped'])} clip(s) skipped (see the JSON)"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    """Command-line arguments of ``python -m aasp_sb.analysis.stability``."""
    parser = argparse.ArgumentParser(
        prog="python -m aasp_sb.analysis.stability",
        description="Cosine similarity of clip embeddings under sub-patch "
        "shifts, for one or more pre-trained checkpoints side by side.",
    )
    parser.add_argument(
        "--checkpoint",
        action="append",
        required=True,
        help="run folder, save folder, CKPT+* folder or encoder.ckpt (repeat)",
    )
    parser.add_argument("--names", help="comma-separated column names")
    parser.add_argument(
        "--csv", required=True, help="manifest with a wav column"
    )
    parser.add_argument(
        "--shifts",
        default="1-15",
        help="frames, e.g. 1-15 or 0,4,8 (default 1-15)",
    )
    parser.add_argument("--max-clips", type=int, default=None)
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="crop from each clip's start (default: the training length)",
    )
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument(
        "--which", choices=("student", "teacher"), default="student"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", help="write the markdown report here")
    parser.add_argument("--json", help="write the full results here")
    return parser.parse_args(argv)


def run(argv=None):
    """Runs the comparison, prints the markdown table, writes the outputs.

    Arguments
    ---------
    argv : list of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    dict
        :func:`compare_checkpoints`'s result.
    """
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(name)s - %(levelname)s - %(message)s"
    )
    names = None
    if args.names:
        names = [n.strip() for n in args.names.split(",")]
    result = compare_checkpoints(
        args.checkpoint,
        args.csv,
        names=names,
        shifts=args.shifts,
        seconds=args.seconds,
        max_clips=args.max_clips,
        batch_size=args.batch_size,
        which=args.which,
        device=args.device,
    )
    report = markdown_report(result)
    sys.stdout.write(report)
    for path, text in (
        (args.output, report),
        (args.json, json.dumps(result, indent=2) + "\n" if args.json else None),
    ):
        if path:
            pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
            pathlib.Path(path).write_text(text, encoding="utf-8")
            logger.info("wrote %s", path)
    return result


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
        0; use :func:`run` for the result.
    """
    from aasp_sb.cli import console_main

    return console_main(run, argv, "aasp-stability")


if __name__ == "__main__":
    sys.exit(main())
