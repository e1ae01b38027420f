r"""Clip embeddings of a manifest's audio: ``python -m aasp_sb.embed`` / ``aasp-embed``.

Usage::

    aasp-embed --checkpoint results/aasp_base/1986 --csv clips.csv --output emb.npy
    aasp-embed --hparams hparams/aasp_base.yaml --random-init --csv clips.csv \
        --output emb_random.npy           # the baseline every model must beat

The manifest is a SpeechBrain CSV with a ``wav`` column (absolute paths, or
paths relative to the CSV's folder; ``$`` variables are not expanded) and
optionally ``ID`` and ``duration``. Outputs:

- ``OUT.npy``: float32 ``[N, D]``, row ``i`` = the ``i``-th manifest row;
- ``OUT.ids.txt``: the row order (the ``ID`` column, or the row number when
  the manifest has none);
- ``OUT.skipped.txt`` (only when clips were skipped): one
  ``row<TAB>ID<TAB>path<TAB>reason`` line per unreadable clip. **Those rows of
  ``OUT.npy`` are NaN** so the row order still matches the manifest; drop them
  with ``emb[~np.isnan(emb).any(1)]``. The count is logged at the end, and
  the command fails when no clip at all is readable.

``OUT`` is the output path without its ``.npy`` suffix. Clips are read with
:func:`aasp_sb.data.audio.load_audio` (any rate / channels, resampled and
down-mixed); each clip is embedded at its own length (exactly independent of
the batch), long clips in encoder-sized chunks.

The programmatic core, :func:`embed_clips`, also serves the linear
evaluation (fixed-length crops, cached embeddings).
"""

import argparse
import csv
import logging
import os
import sys
import zlib

from aasp_sb import cli  # noqa: F401 -- first: silences SpeechBrain's torchvision warning

# isort: split

import numpy as np
import torch
import yaml
from tqdm import tqdm

from aasp_sb.data.audio import (
    AudioLoadError,
    SkipCounter,
    crop_or_pad,
    load_audio,
)
from aasp_sb.inference import POOLINGS, load_encoder

logger = logging.getLogger(__name__)


class EmbedError(RuntimeError):
    """Nothing usable to embed (empty manifest, no readable clip, bad options)."""


def read_manifest(csv_path):
    r"""Reads a SpeechBrain CSV manifest and resolves its ``wav`` paths.

    Arguments
    ---------
    csv_path : str
        Manifest with a ``wav`` column (``ID``, ``duration``, ``label``
        optional).

    Returns
    -------
    list of dict
        One dict per row with ``ID`` (the row number when missing), ``wav``
        (absolute), ``duration`` (float or None) and the other columns.

    Example
    -------
    >>> tmp = getfixture("tmp_path")
    >>> _ = (tmp / "m.csv").write_text("ID,wav\na,x.wav\n")
    >>> row = read_manifest(str(tmp / "m.csv"))[0]
    >>> row["ID"], row["wav"] == str(tmp / "x.wav")
    ('a', True)
    """
    csv_path = str(csv_path)
    base = os.path.dirname(os.path.abspath(csv_path))
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, skipinitialspace=True)
        header = [h.strip() for h in reader.fieldnames or []]
        if "wav" not in header:
            raise EmbedError(
                f"{csv_path}: no `wav` column (found: {', '.join(header) or 'nothing'})"
            )
        rows = []
        for i, row in enumerate(reader):
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            wav = os.path.expanduser(row["wav"])
            row["wav"] = os.path.normpath(
                wav if os.path.isabs(wav) else os.path.join(base, wav)
            )
            row["ID"] = row.get("ID") or str(i)
            try:
                row["duration"] = float(row.get("duration", ""))
            except ValueError:
                row["duration"] = None
            rows.append(row)
    return rows


def crop_generator(seed, key):
    """Random source of a clip's crop: depends only on ``(seed, key)``.

    A clip then gets the same random crop whichever split or fold it is
    embedded in (so the embeddings can be shared and cached).

    Arguments
    ---------
    seed : int
        Crop seed.
    key : str
        Clip identity (its ID).

    Returns
    -------
    torch.Generator

    Example
    -------
    >>> a = torch.rand(1, generator=crop_generator(0, "x"))
    >>> bool(a == torch.rand(1, generator=crop_generator(0, "x")))
    True
    """
    value = zlib.crc32(f"{int(seed)}:{key}".encode())
    return torch.Generator().manual_seed(value)


class ClipDataset(torch.utils.data.Dataset):
    """Loads clips for embedding; failures are returned, not raised.

    Arguments
    ---------
    paths : list of str
        Audio files.
    keys : list of str
        Clip identities (seed the random crops).
    sample_rate : int
        Model sample rate.
    max_seconds : float, optional
        Read at most this much of each file (start window), no padding.
    clip_seconds : float, optional
        Fixed length: crop longer clips (``crop``), zero-pad shorter ones.
    crop : str
        ``"start"`` or ``"random"`` (with ``clip_seconds``).
    crop_seed : int
        Seed of the random crops.
    mask_padding : bool
        With ``clip_seconds``: give the encoder the true length of a
        zero-padded clip (True) or let it see the zeros (False, EVAR).

    Example
    -------
    >>> import numpy as np, soundfile as sf
    >>> tmp = getfixture("tmp_path")
    >>> sf.write(str(tmp / "a.wav"), np.zeros(8000, dtype="float32"), 16000)
    >>> ds = ClipDataset([str(tmp / "a.wav"), str(tmp / "missing.wav")], ["a", "b"],
    ...                  16000, clip_seconds=1.0)
    >>> i, wav, rel, err = ds[0]
    >>> wav.shape, rel
    (torch.Size([16000]), 0.5)
    >>> ds[1][1] is None  # unreadable: reported, not raised
    True
    """

    def __init__(
        self,
        paths,
        keys,
        sample_rate,
        max_seconds=None,
        clip_seconds=None,
        crop="start",
        crop_seed=0,
        mask_padding=True,
    ):
        self.paths, self.keys = list(paths), list(keys)
        self.sample_rate = int(sample_rate)
        self.max_seconds = max_seconds
        self.clip_seconds = clip_seconds
        self.crop = crop
        self.crop_seed = crop_seed
        self.mask_padding = mask_padding

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        """Returns ``(i, wav or None, relative length, error reason)``."""
        path = self.paths[i]
        try:
            if self.clip_seconds is None:
                wav = load_audio(path, self.sample_rate, max_seconds=self.max_seconds)
                return i, wav, 1.0, ""
            gen = crop_generator(self.crop_seed, self.keys[i])
            wav = load_audio(
                path,
                self.sample_rate,
                max_seconds=self.clip_seconds,
                window=self.crop,
                generator=gen,
            )
            n = int(round(self.clip_seconds * self.sample_rate))
            wav, rel = crop_or_pad(wav, n, mode="start", pad="zero")
            return i, wav, (rel if self.mask_padding else 1.0), ""
        except AudioLoadError as err:
            return i, None, 0.0, err.reason


def _collate(items):
    return items


def embed_clips(
    model,
    paths,
    keys=None,
    batch_size=16,
    num_workers=0,
    layer=-1,
    pooling="mean",
    max_seconds=None,
    clip_seconds=None,
    crop="start",
    crop_seed=0,
    mask_padding=True,
    durations=None,
    progress=True,
    desc="embedding",
    skip_counter=None,
):
    """Embeds audio files; unreadable ones give NaN rows.

    Arguments
    ---------
    model : aasp_sb.inference.AaSPEncoder
        The encoder.
    paths : list of str
        Audio files.
    keys : list of str, optional
        Clip IDs (seeds of random crops, names in messages); default the index.
    batch_size : int
        Clips per forward pass.
    num_workers : int
        DataLoader workers reading audio.
    layer : int or list of int
        Layer choice (see :mod:`aasp_sb.inference`).
    pooling : str
        ``"mean"`` or ``"mean+max"``.
    max_seconds : float, optional
        Read at most this many seconds of each clip (from its start).
    clip_seconds : float, optional
        Fixed clip length (crop / zero-pad), as in linear evaluation.
    crop : str
        ``"start"`` or ``"random"`` crops (with ``clip_seconds``).
    crop_seed : int
        Seed of random crops (per clip, see :func:`crop_generator`).
    mask_padding : bool
        With ``clip_seconds``, hide the zero padding of short clips from the
        encoder (True) or encode it (False).
    durations : list of float, optional
        Clip durations; clips are batched by length when given (less
        padding, same results).
    progress : bool
        Show a tqdm progress bar.
    desc : str
        Progress-bar label.
    skip_counter : SkipCounter, optional
        Counts and logs unreadable clips (a new one when None).

    Returns
    -------
    embeddings : numpy.ndarray
        ``[N, D]`` float32, NaN rows for unreadable clips.
    skipped : dict
        ``{row: (path, reason)}`` of unreadable clips.
    """
    paths = [str(p) for p in paths]
    N = len(paths)
    if N == 0:
        raise EmbedError("no clips to embed")
    keys = [str(k) for k in (keys if keys is not None else range(N))]
    if pooling not in POOLINGS:
        raise EmbedError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    counter = skip_counter if skip_counter is not None else SkipCounter(desc)
    order = list(range(N))
    if durations is not None and all(d is not None for d in durations):
        order.sort(key=lambda i: -float(durations[i]))
    dataset = ClipDataset(
        paths, keys, model.sample_rate, max_seconds, clip_seconds, crop,
        crop_seed, mask_padding,
    )
    sampler = torch.utils.data.BatchSampler(order, batch_size, drop_last=False)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=num_workers,
        collate_fn=_collate,
    )
    dim = model.embedding_size(layer, pooling)
    out = np.full((N, dim), np.nan, dtype=np.float32)
    skipped = {}
    bar = tqdm(total=N, desc=desc, disable=not progress, unit="clip")  # shows clips/s
    for batch in loader:
        bar.update(len(batch))
        good = []
        for i, wav, rel, reason in batch:
            if wav is None:
                skipped[i] = (paths[i], reason)
                counter.add(paths[i], reason)
            else:
                good.append((i, wav, rel))
        if not good:
            continue
        longest = max(w.shape[-1] for _, w, _ in good)
        wavs = torch.zeros(len(good), longest)
        lens = torch.empty(len(good))
        for k, (_, w, rel) in enumerate(good):
            wavs[k, : w.shape[-1]] = w
            lens[k] = rel * w.shape[-1] / longest
        emb = model.embed_batch(wavs, lens, layer=layer, pooling=pooling)
        out[[i for i, _, _ in good]] = emb.float().cpu().numpy()
    bar.close()
    if len(skipped) == N:
        first = next(iter(skipped.values()))
        raise EmbedError(
            f"none of the {N} clips could be read (first: '{first[0]}': {first[1]})"
        )
    if skipped:
        counter.report(logger)
    return out, skipped


def sidecar(output, suffix):
    """``OUT.suffix`` for an output ``OUT.npy``.

    Example
    -------
    >>> sidecar("emb/x.npy", "ids.txt")
    'emb/x.ids.txt'
    """
    base = output[:-4] if output.endswith(".npy") else output
    return f"{base}.{suffix}"


def manifest_durations(rows):
    """Clip durations for length-sorted batches: the ``duration`` column, else the headers.

    Reading a header costs a fraction of a millisecond; an unreadable file
    gets 0 (it is reported when it is read for embedding).

    Arguments
    ---------
    rows : list of dict
        Manifest rows (``wav``, optional ``duration``).

    Returns
    -------
    list of float
    """
    from aasp_sb.data.audio import AudioLoadError, audio_info

    out = []
    for row in rows:
        if row.get("duration") is not None:
            out.append(float(row["duration"]))
            continue
        try:
            frames, rate, _ = audio_info(str(row["wav"]))
            out.append(frames / float(rate))
        except (AudioLoadError, OSError, RuntimeError):
            out.append(0.0)
    return out


def embed_manifest(
    model, csv_path, output, batch_size=16, num_workers=0, layer=-1,
    pooling="mean", max_seconds=None, progress=True,
):
    """Embeds every clip of a manifest and writes ``OUT.npy`` and its sidecars.

    Arguments
    ---------
    model : aasp_sb.inference.AaSPEncoder
        The encoder.
    csv_path : str
        Manifest (``wav`` column).
    output : str
        Output ``.npy`` path (``.npy`` is appended when missing).
    batch_size, num_workers, layer, pooling, max_seconds, progress
        See :func:`embed_clips`.

    Returns
    -------
    dict
        ``output``, ``ids``, ``skipped`` (path of the list or None),
        ``shape``, ``num_skipped``.
    """
    rows = read_manifest(csv_path)
    if not rows:
        raise EmbedError(f"{csv_path}: the manifest has no rows")
    output = str(output)
    if not output.endswith(".npy"):
        output += ".npy"
    emb, skipped = embed_clips(
        model,
        [r["wav"] for r in rows],
        keys=[r["ID"] for r in rows],
        batch_size=batch_size,
        num_workers=num_workers,
        layer=layer,
        pooling=pooling,
        max_seconds=max_seconds,
        durations=manifest_durations(rows),
        progress=progress,
        desc=os.path.basename(csv_path),
    )
    folder = os.path.dirname(os.path.abspath(output))
    os.makedirs(folder, exist_ok=True)
    tmp = output + ".tmp.npy"
    np.save(tmp, emb)
    os.replace(tmp, output)
    ids_path = sidecar(output, "ids.txt")
    with open(ids_path, "w", encoding="utf-8") as f:
        f.write("".join(f"{r['ID']}\n" for r in rows))
    skip_path = sidecar(output, "skipped.txt")
    if skipped:
        with open(skip_path, "w", encoding="utf-8") as f:
            for i in sorted(skipped):
                path, reason = skipped[i]
                f.write(f"{i}\t{rows[i]['ID']}\t{path}\t{reason}\n")
    elif os.path.exists(skip_path):
        os.remove(skip_path)
    return {
        "output": output,
        "ids": ids_path,
        "skipped": skip_path if skipped else None,
        "shape": tuple(emb.shape),
        "num_skipped": len(skipped),
    }


def parse_layer(text):
    """``"-1"`` -> -1, ``"3,-1"`` -> [3, -1].

    Example
    -------
    >>> parse_layer("-1"), parse_layer("3,-1")
    (-1, [3, -1])
    """
    parts = [int(p) for p in str(text).split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"bad layer {text!r}")
    return parts[0] if len(parts) == 1 else parts


def build_parser():
    """The command-line parser."""
    p = argparse.ArgumentParser(
        prog="aasp-embed",
        description=(
            "Clip embeddings [N, D] (float32 .npy, manifest row order) of a "
            "CSV manifest's audio with a trained AaSP encoder. Unreadable "
            "clips get NaN rows and are listed in OUT.skipped.txt."
        ),
    )
    p.add_argument("--checkpoint", help="run folder, CKPT+* folder, weights file or exported folder "
                   "(a .pth file is taken as an M2D checkpoint)")
    p.add_argument("--m2d-checkpoint", help="one of M2D's checkpoint-*.pth files (its online "
                   "encoder; --which teacher: its EMA target encoder), M2D's front end and norm_stats")
    p.add_argument("--csv", required=True, help="manifest with a `wav` column")
    p.add_argument("--output", required=True, help="output .npy file")
    p.add_argument("--hparams", help="model YAML (default: the run's hyperparams.yaml)")
    p.add_argument("--overrides", default=None, help="YAML mapping of overrides, e.g. '{embed_dim: 32}'")
    p.add_argument("--random-init", action="store_true", help="untrained model from --hparams (baseline)")
    p.add_argument("--seed", type=int, default=0, help="seed of --random-init")
    p.add_argument("--which", default="student", choices=("student", "teacher"))
    p.add_argument("--layer", type=parse_layer, default=-1, help="block index or comma list (-1: final output)")
    p.add_argument("--pooling", default="mean", choices=POOLINGS)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--precision", default=None, choices=("fp32", "bf16", "fp16"))
    p.add_argument("--max-seconds", type=float, default=None, help="read at most S seconds of each clip")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run(argv=None):
    """Parses the command line and embeds the manifest (the programmatic form).

    Arguments
    ---------
    argv : list of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    dict
        What :func:`embed_manifest` returns.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.m2d_checkpoint and (args.checkpoint or args.random_init):
        parser.error("--m2d-checkpoint replaces --checkpoint / --random-init")
    if not (args.checkpoint or args.m2d_checkpoint) and not (args.random_init and args.hparams):
        parser.error("give --checkpoint, --m2d-checkpoint, or --random-init with --hparams")
    overrides = yaml.safe_load(args.overrides) if args.overrides else None
    if overrides is not None and not isinstance(overrides, dict):
        parser.error("--overrides must be a YAML mapping, e.g. '{embed_dim: 32}'")
    if args.batch_size < 1:
        parser.error("--batch-size must be positive")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        model = load_encoder(
            checkpoint=args.checkpoint,
            which=args.which,
            hparams_file=args.hparams,
            overrides=overrides,
            random_init=args.random_init,
            seed=args.seed,
            device=device,
            precision=args.precision,
            m2d_checkpoint=args.m2d_checkpoint,
        )
        info = embed_manifest(
            model,
            args.csv,
            args.output,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            layer=args.layer,
            pooling=args.pooling,
            max_seconds=args.max_seconds,
            progress=not args.no_progress,
        )
    except (EmbedError, FileNotFoundError, ValueError) as err:
        parser.exit(1, f"aasp-embed: error: {err}\n")
    msg = f"wrote {info['shape'][0]} x {info['shape'][1]} embeddings to {info['output']}"
    if info["num_skipped"]:
        msg += (
            f"; {info['num_skipped']} unreadable clip(s) skipped (NaN rows), "
            f"listed in {info['skipped']}"
        )
    logger.info(msg)
    print(msg, file=sys.stderr)
    return info


def main(argv=None):
    """Command-line entry point (``aasp-embed``): :func:`run`, exit status 0.

    Errors exit with status 1 (bad input) or 2 (bad arguments) and a one-line
    message; use :func:`run` to get the result dict.

    Arguments
    ---------
    argv : list of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 (the console script's exit status).
    """
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
