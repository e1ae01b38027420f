r"""Data preparation as its own step, for corpora too large to prepare in a recipe.

For the full AudioSet (about 2 million clips), reading every header takes
longer than a distributed job may wait at a barrier. Run this once, before
``torchrun``::

    python -m aasp_sb.data.prepare --source audioset --data-folder /data/audioset \
        --save-folder /data/as_prep --valid-clips 5000 --processes 16
    # optional: also build the log-mel shards (train/ and valid/)
    python -m aasp_sb.data.prepare --source audioset --data-folder /data/audioset \
        --save-folder /data/as_prep --valid-clips 5000 --shard-folder /data/as_shards

It lists the tree, reads headers in ``--processes`` processes with a progress
bar, and is incremental: a header cache (``<save>/train_headers.jsonl``)
keeps size, modification time and duration of every file, so a re-run (new
clips downloaded, an interrupted run) only reads new or changed files. It
writes the manifests (``train.csv``, ``valid.csv``) and ``prepared.json``,
which every rank of the recipe then only reads (:func:`load_prepared`): no
rank waits for preparation.

Small folders need none of this: the recipes still prepare them in one
command (:func:`~aasp_sb.data.folder.prepare_audio_folder` /
:func:`~aasp_sb.data.audioset.prepare_audioset` under ``run_on_main``).
"""

import json
import logging
import os
import sys

from aasp_sb.data.audioset import prepare_audioset
from aasp_sb.data.folder import HeaderCache, prepare_audio_folder

logger = logging.getLogger(__name__)

PREPARED_NAME = "prepared.json"
SOURCES = ("folder", "audioset")


def _count_rows(csv_path):
    with open(csv_path, "rb") as f:
        return max(0, sum(1 for line in f if line.strip()) - 1)


def prepare_corpus(
    data_folder,
    save_folder,
    source="folder",
    segments_csv=None,
    class_labels_csv=None,
    valid_clips=None,
    valid_fraction=0.0,
    min_seconds=0.0,
    seed=0,
    processes=None,
    progress=False,
    shard_folder=None,
    shard_size=512,
    shard_workers=None,
    max_seconds=None,
    extensions=None,
):
    """Prepares a large corpus once: manifests (+ shards) and ``prepared.json``.

    Arguments
    ---------
    data_folder : str
        Root of the audio tree.
    save_folder : str
        Where manifests, the header cache and ``prepared.json`` go.
    source : str
        ``"folder"`` (any tree) or ``"audioset"`` (clips named by YouTube id).
    segments_csv : str or list of str, optional
        AudioSet segment CSV(s) (``source="audioset"`` only).
    class_labels_csv : str, optional
        AudioSet ``class_labels_indices.csv`` (``source="audioset"`` only).
    valid_clips : int, optional
        Clips held out for validation (a fixed number; AudioSet: a few
        thousand).
    valid_fraction : float
        Fraction held out instead (when ``valid_clips`` is None).
    min_seconds : float
        Shorter files are left out.
    seed : int
        Seed of the validation split.
    processes : int, optional
        Processes reading headers (default: the number of CPUs; 0: this
        process).
    progress : bool
        Progress bars on stderr.
    shard_folder : str, optional
        Also build log-mel shards: ``<shard_folder>/train`` and, with a
        validation split, ``<shard_folder>/valid`` (resumable; see
        :func:`~aasp_sb.data.shards.build_logmel_shards`).
    shard_size : int
        Clips per shard.
    shard_workers : int, optional
        Processes building shards (default: ``processes``).
    max_seconds : float, optional
        Keep at most this much of each clip in the shards.
    extensions : sequence of str, optional
        Audio extensions listed (default: those of
        :func:`~aasp_sb.data.folder.prepare_audio_folder` /
        :func:`~aasp_sb.data.audioset.prepare_audioset`).

    Returns
    -------
    dict
        The contents of ``prepared.json``: ``train``, ``valid`` (manifest
        paths, ``valid`` None without a split), ``num_train``, ``num_valid``,
        ``train_shards`` / ``valid_shards`` (None without ``shard_folder``),
        ``headers_read``, ``headers_reused``, ``options``.

    Example
    -------
    >>> import numpy as np, soundfile as sf
    >>> root = getfixture("tmp_path")
    >>> (root / "audio").mkdir()
    >>> for i in range(3):
    ...     sf.write(str(root / "audio" / f"{i}.wav"), np.zeros(1600), 16000)
    >>> out = prepare_corpus(str(root / "audio"), str(root / "prep"),
    ...                      valid_clips=1, processes=0)
    >>> out["num_train"], out["num_valid"], out["headers_read"]
    (2, 1, 3)
    >>> again = prepare_corpus(str(root / "audio"), str(root / "prep"),
    ...                        valid_clips=1, processes=0)
    >>> again["headers_read"], again["headers_reused"]
    (0, 3)
    >>> load_prepared(str(root / "prep"))["train"] == out["train"]
    True
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if source == "folder" and (segments_csv or class_labels_csv):
        raise ValueError(
            "segments_csv / class_labels_csv need source='audioset'"
        )
    data_folder = os.path.abspath(str(data_folder))
    save_folder = os.path.abspath(str(save_folder))
    if processes is None:
        processes = os.cpu_count() or 1
    os.makedirs(save_folder, exist_ok=True)
    cache = HeaderCache(os.path.join(save_folder, "train_headers.jsonl"))
    kwargs = dict(
        data_folder=data_folder,
        save_folder=save_folder,
        valid_fraction=float(valid_fraction),
        valid_clips=valid_clips,
        min_seconds=float(min_seconds),
        seed=int(seed),
        processes=int(processes),
        header_cache=cache,
        progress=progress,
    )
    if extensions:
        kwargs["extensions"] = tuple(extensions)
    if source == "folder":
        out = prepare_audio_folder(**kwargs)
    else:
        out = prepare_audioset(
            segments_csv=segments_csv, class_labels_csv=class_labels_csv, **kwargs
        )
    options = {
        "source": source,
        "data_folder": data_folder,
        "segments_csv": segments_csv,
        "class_labels_csv": class_labels_csv,
        "valid_clips": valid_clips,
        "valid_fraction": float(valid_fraction),
        "min_seconds": float(min_seconds),
        "seed": int(seed),
        "shard_size": int(shard_size) if shard_folder else None,
        "max_seconds": max_seconds,
        "extensions": list(extensions) if extensions else None,
    }
    record = {
        "train": out["train"],
        "valid": out["valid"],
        "num_train": _count_rows(out["train"]),
        "num_valid": _count_rows(out["valid"]) if out["valid"] else 0,
        "train_shards": None,
        "valid_shards": None,
        "headers_read": cache.num_read,
        "headers_reused": cache.num_reused,
        "options": options,
    }
    if shard_folder:
        from aasp_sb.data.shards import build_logmel_shards

        workers = processes if shard_workers is None else shard_workers
        parts = [("train", out["train"])]
        if out["valid"]:
            parts.append(("valid", out["valid"]))
        for part, manifest in parts:
            folder = os.path.join(os.path.abspath(str(shard_folder)), part)
            build_logmel_shards(
                manifest,
                folder,
                shard_size=shard_size,
                num_workers=workers,
                max_seconds=max_seconds,
                progress=progress,
            )
            record[f"{part}_shards"] = folder
    record["sizes"] = {
        key: os.path.getsize(record[key])
        for key in ("train", "valid")
        if record[key]
    }
    path = os.path.join(save_folder, PREPARED_NAME)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2, sort_keys=True)
    os.replace(tmp, path)
    logger.info(
        "prepared '%s': %d train, %d valid clips (%d headers read, %d "
        "reused) -> %s",
        data_folder,
        record["num_train"],
        record["num_valid"],
        record["headers_read"],
        record["headers_reused"],
        path,
    )
    return record


def load_prepared(path):
    """Reads what :func:`prepare_corpus` wrote (cheap: for every rank).

    Arguments
    ---------
    path : str
        ``prepared.json`` or the folder holding it.

    Returns
    -------
    dict
        See :func:`prepare_corpus`; ``train``/``valid`` are manifest paths,
        ``train_shards``/``valid_shards`` shard folders or None.

    Raises
    ------
    FileNotFoundError
        Nothing prepared there, or a manifest it lists is gone.
    ValueError
        A manifest changed size since preparation (re-run the preparation).
    """
    path = os.path.abspath(str(path))
    if os.path.isdir(path):
        path = os.path.join(path, PREPARED_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"no prepared data at '{path}': run `python -m aasp_sb.data.prepare "
            "--data-folder ... --save-folder ...` before the recipe"
        )
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except ValueError as err:
        raise ValueError(f"'{path}' is not valid JSON: {err}") from err
    for key in ("train", "valid"):
        manifest = record.get(key)
        if key == "train" and not manifest:
            raise ValueError(f"'{path}' has no 'train' manifest")
        if not manifest:
            continue
        if not os.path.isfile(manifest):
            raise FileNotFoundError(
                f"manifest '{manifest}' listed in '{path}' does not exist"
            )
        size = record.get("sizes", {}).get(key)
        if size is not None and os.path.getsize(manifest) != size:
            raise ValueError(
                f"manifest '{manifest}' changed since '{path}' was written; "
                "re-run python -m aasp_sb.data.prepare"
            )
    for key in ("train_shards", "valid_shards"):
        folder = record.get(key)
        if folder and not os.path.isfile(os.path.join(folder, "index.npy")):
            raise FileNotFoundError(
                f"shard folder '{folder}' listed in '{path}' has no index.npy"
            )
    return record


def main(argv=None):
    """Command line of :func:`prepare_corpus` (see the module docstring).

    Arguments
    ---------
    argv : list of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    dict
        The prepared record.
    """
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m aasp_sb.data.prepare",
        description="Prepare a large audio corpus once, before torchrun "
        "(parallel, incremental header reads; optional log-mel shards)",
    )
    parser.add_argument("--data-folder", required=True, help="root of the audio tree")
    parser.add_argument("--save-folder", required=True, help="manifests + prepared.json")
    parser.add_argument("--source", choices=SOURCES, default="folder")
    parser.add_argument("--segments-csv", nargs="+", default=None)
    parser.add_argument("--class-labels-csv", default=None)
    split = parser.add_mutually_exclusive_group()
    split.add_argument("--valid-clips", type=int, default=None)
    split.add_argument("--valid-fraction", type=float, default=0.0)
    parser.add_argument("--min-seconds", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--processes", type=int, default=None, help="header readers (default: CPUs)"
    )
    parser.add_argument("--shard-folder", default=None, help="also build log-mel shards")
    parser.add_argument("--shard-size", type=int, default=512)
    parser.add_argument("--shard-workers", type=int, default=None)
    parser.add_argument("--max-seconds", type=float, default=None)
    parser.add_argument(
        "--extensions", nargs="+", default=None, help="e.g. wav flac (default per source)"
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s - %(message)s")
    return prepare_corpus(
        args.data_folder,
        args.save_folder,
        source=args.source,
        segments_csv=args.segments_csv,
        class_labels_csv=args.class_labels_csv,
        valid_clips=args.valid_clips,
        valid_fraction=args.valid_fraction,
        min_seconds=args.min_seconds,
        seed=args.seed,
        processes=args.processes,
        progress=not args.no_progress,
        shard_folder=args.shard_folder,
        shard_size=args.shard_size,
        shard_workers=args.shard_workers,
        max_seconds=args.max_seconds,
        extensions=args.extensions,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
