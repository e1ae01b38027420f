"""AudioSet-20K (Gemmeke et al., 2017): balanced train (~20K) + eval (~20K).

AudioSet is distributed as segment lists; clips are fetched from YouTube by
each user, so only the CSVs have an official form::

    audioset/
      balanced_train_segments.csv   # 3 '#' comment lines, then rows
      eval_segments.csv             #   YTID, start_seconds, end_seconds, "/m/a,/m/b"
      class_labels_indices.csv      # index,mid,display_name (527 rows)
      <any folder tree of clips>    # Y{YTID}.wav, {YTID}.wav, {YTID}_{start}.wav,
                                    # same with .flac (or .ogg)

The CSVs are looked for in the data folder, then in ``meta/`` and
``metadata/``. Clips are found by walking the whole tree and matching the
11-character YouTube ID. Segments without a clip (videos vanish) are counted
and listed once, then skipped; this is normal for AudioSet.

Multi-label (527 classes, mAP). Classes (``classes.txt``) are the ``mid``
codes in official index order, labels in the CSVs are ``;``-joined mids
(``display_names.txt`` holds the readable names in the same order). Test is
the official eval set; validation is a class-complete 10 % of the balanced
train set (there is no official validation set).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from aasp_sb.data.audioset import parse_segments_csv

from .base import (
    Item,
    LayoutError,
    TaskInfo,
    class_complete_holdout,
    find_file,
    load_cached,
    logger,
    options_for,
    probe_audio,
    read_meta_csv,
    require_usable,
    save_manifest,
    walk_audio,
    write_lines,
    write_split,
)

NAME = "as20k"
DATASET = "AudioSet-20K"
#: Validation: a class-complete 10 % holdout of train (no official valid set).
VALID_SOURCE = "holdout"
#: Nominal description (``prepare`` returns the counts actually found).
info = TaskInfo(
    name=NAME,
    num_classes=527,
    multilabel=True,
    metric="mAP",
    clip_seconds=10.0,
    sample_rate=16000,
    folds=None,
)
TRAIN_CSV = "balanced_train_segments.csv"
EVAL_CSV = "eval_segments.csv"
LABELS_CSV = "class_labels_indices.csv"


def read_segments(path, dataset=DATASET):
    r"""Reads an official AudioSet segments CSV.

    Arguments
    ---------
    path : str or Path
        ``balanced_train_segments.csv``, ``eval_segments.csv``, ...
    dataset : str
        Display name used in errors.

    Returns
    -------
    list of tuple
        ``(ytid, start_seconds, label_mids)`` per segment, comment lines
        (``#``) skipped, duplicate YouTube IDs dropped.

    Example
    -------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "s.csv")
    >>> _ = open(p, "w").write('# c\n--4gqARaEJE, 0.000, 10.000, "/m/a,/m/b"\n')
    >>> read_segments(p)
    [('--4gqARaEJE', 0.0, ('/m/a', '/m/b'))]
    """
    try:
        segments = parse_segments_csv(path)
    except ValueError as err:  # the message names the file and line
        raise LayoutError(f"{dataset}: {err}") from err
    rows, seen = [], set()
    for seg in segments:
        if seg["ytid"] and seg["ytid"] not in seen:
            seen.add(seg["ytid"])
            rows.append((seg["ytid"], seg["start"], tuple(dict.fromkeys(seg["labels"]))))
    return rows


def ytid_keys(stem):
    """YouTube IDs a clip file stem may stand for, best match first.

    Arguments
    ---------
    stem : str
        File name without extension.

    Returns
    -------
    list of tuple
        ``(ytid, rank)``; rank 0 for ``{YTID}`` / ``Y{YTID}``, 1 for names
        with a ``_{start}`` suffix.

    Example
    -------
    >>> ytid_keys("Y--4gqARaEJE"), ytid_keys("--4gqARaEJE_30.000")
    ([('--4gqARaEJE', 0)], [('--4gqARaEJE', 1)])
    """
    keys = []
    if len(stem) >= 11 and (len(stem) == 11 or stem[11] == "_"):
        keys.append((stem[:11], int(len(stem) > 11)))
    if (
        stem.startswith("Y")
        and len(stem) >= 12
        and (len(stem) == 12 or stem[12] == "_")
    ):
        keys.append((stem[1:12], int(len(stem) > 12)))
    return sorted(keys, key=lambda k: k[1])


def index_clips(root, wanted):
    """Maps each wanted YouTube ID to the clip file found under ``root``.

    Arguments
    ---------
    root : str or Path
        Folder tree to walk.
    wanted : set of str
        YouTube IDs of interest.

    Returns
    -------
    dict
        ``ytid -> Path``; exact names beat suffixed ones, then sorted order.

    Example
    -------
    >>> index_clips("/nonexistent", {"--4gqARaEJE"})
    {}
    """
    found = {}
    for path in walk_audio(root):
        for ytid, rank in ytid_keys(path.stem):
            if ytid in wanted and (ytid not in found or rank < found[ytid][1]):
                found[ytid] = (path, rank)
    return {k: v[0] for k, v in found.items()}


def prepare_as20k(data_folder, save_folder, seed=0):
    """Writes the AudioSet-20K split (balanced train / eval).

    Arguments
    ---------
    data_folder : str or Path
        Folder holding the official CSVs and, anywhere below it, the clips.
    save_folder : str or Path
        Where ``classes.txt``, ``display_names.txt`` and
        ``official/{train,valid,test}.csv`` go.
    seed : int
        Seed of the validation draw.

    Returns
    -------
    info : TaskInfo
        The task (527 classes with the official label index).
    splits : list of Split
        One ``official`` split.

    Example
    -------
    >>> info.multilabel, info.metric, info.num_classes
    (True, 'mAP', 527)
    """
    options = options_for(NAME, data_folder, seed)
    cached = load_cached(save_folder, options)
    if cached:
        return cached
    root = Path(data_folder)
    train_csv = find_file(root, TRAIN_CSV, DATASET)
    eval_csv = find_file(root, EVAL_CSV, DATASET)
    labels_csv = find_file(root, LABELS_CSV, DATASET)
    rows = read_meta_csv(labels_csv, ["index", "mid", "display_name"], DATASET)
    try:
        rows = sorted(rows, key=lambda r: int(r["index"]))
    except ValueError as err:
        raise LayoutError(
            f"{DATASET}: non-integer index in {LABELS_CSV}"
        ) from err
    classes = [r["mid"] for r in rows]
    if not classes:
        raise LayoutError(
            f"{DATASET}: {LABELS_CSV} under {root} lists no classes"
        )
    known = {mid: i for i, mid in enumerate(classes)}
    segments = {
        "train": read_segments(train_csv),
        "test": read_segments(eval_csv),
    }
    wanted = {y for segs in segments.values() for y, _, _ in segs}
    clips = index_clips(root, wanted)
    items, missing, unknown = {}, [], set()
    for part, segs in segments.items():
        items[part] = []
        for ytid, start, mids in segs:
            unknown.update(m for m in mids if m not in known)
            mids = tuple(m for m in mids if m in known)
            if not mids:
                continue
            if ytid not in clips:
                missing.append(f"{ytid} (start {start:g} s; {part})")
                continue
            items[part].append(
                Item(
                    ytid,
                    str(clips[ytid].absolute()),
                    tuple(sorted(mids, key=known.get)),
                    part,
                )
            )
    if unknown:
        logger.warning(
            "%s: %d label(s) not in %s ignored: %s",
            DATASET,
            len(unknown),
            LABELS_CSV,
            ", ".join(sorted(unknown)[:10]),
        )
    usable = probe_audio(
        DATASET, items["train"] + items["test"], save_folder, missing
    )
    require_usable(DATASET, usable, root)
    test = [it for it in usable if it.group == "test"]
    train, valid = class_complete_holdout(
        [it for it in usable if it.group == "train"], 0.1, seed
    )
    split = write_split(save_folder, "official", train, valid, test)
    write_lines(
        Path(save_folder) / "display_names.txt",
        [r["display_name"] for r in rows],
    )
    return save_manifest(
        save_folder,
        options,
        replace(info, num_classes=len(classes)),
        [split],
        classes,
    )


prepare = prepare_as20k
