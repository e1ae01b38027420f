"""Surge synthesizer pitch dataset (Turian et al., 2021): 88 pitches, EVAR's task.

Official layout (https://zenodo.org/record/4677097, uncompressed)::

    surge/
      <tone>/<pitch>.ogg        # one folder per synthesizer preset ("tone")

As EVAR's ``make_metadata.py surge``: every ``<tone>/<pitch>.ogg`` is a clip,
its label is the file name stem (the pitch) and its part is its *tone's*
(tone-disjoint train / valid / test). EVAR's tone assignment ships as
``evar/predefined/dataset_surge_tone_splits.csv`` (``tone,split``; drawn
once, without a seed): give it as ``split_csv`` to reproduce EVAR's split
(named ``evar_tones``). Without it, tones are drawn with ``seed`` in EVAR's
shares (10 % test, 10 % valid, the rest train; named
``seeded_tones_seed<seed>``) and a warning says that the split is not
EVAR's. Clips are 4 s (EVAR ``ds_tasks.py``: ``'surge': [1, 4.0, ...]``);
classes are the pitch names in natural order.
"""

from __future__ import annotations

import random
import re
from dataclasses import replace
from pathlib import Path

from .base import (
    Item,
    LayoutError,
    TaskInfo,
    load_cached,
    logger,
    options_for,
    probe_audio,
    read_meta_csv,
    require_usable,
    save_manifest,
    write_split,
)

NAME = "surge"
DATASET = "Surge"
#: Validation is a fixed part of the split (tone-disjoint), not a holdout.
VALID_SOURCE = "split"
#: Nominal description (``prepare`` returns the counts actually found).
info = TaskInfo(
    name=NAME,
    num_classes=88,
    multilabel=False,
    metric="accuracy",
    clip_seconds=4.0,
    sample_rate=16000,
    folds=None,
)


def _natural(name):
    """Sort key: numbers by value (``"9" < "10"``)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def tone_split(tones, seed=0, test=0.1, valid=0.1):
    """Seeded tone-disjoint split in EVAR's shares (``N // 10`` tones each).

    Arguments
    ---------
    tones : iterable of str
        Tone (preset folder) names.
    seed : int
        Seed of the draw.
    test, valid : float
        Shares of tones for test and valid.

    Returns
    -------
    dict
        ``tone -> "train" | "valid" | "test"``.

    Example
    -------
    >>> parts = list(tone_split([f"t{i}" for i in range(20)]).values())
    >>> [parts.count(p) for p in ("train", "valid", "test")]
    [16, 2, 2]
    """
    order = sorted(set(tones))
    random.Random(seed).shuffle(order)
    n = len(order)
    n_test, n_valid = max(1, int(n * test)), max(1, int(n * valid))
    parts = {}
    for i, tone in enumerate(order):
        parts[tone] = "test" if i < n_test else "valid" if i < n_test + n_valid else "train"
    return parts


def read_tone_splits(path):
    """EVAR's ``dataset_surge_tone_splits.csv``: ``tone -> part``.

    Arguments
    ---------
    path : str or Path
        CSV with ``tone,split`` columns.

    Returns
    -------
    dict
        ``{tone: "train" | "valid" | "test"}``.
    """
    if not Path(path).is_file():
        raise LayoutError(f"{DATASET}: split_csv {path} not found")
    rows = read_meta_csv(path, ["tone", "split"], DATASET, rel=str(path))
    bad = [r["tone"] for r in rows if r["split"] not in ("train", "valid", "test")]
    if bad:
        raise LayoutError(f"{DATASET}: {path}: tones with no train/valid/test split: {bad[:5]}")
    return {r["tone"]: r["split"] for r in rows}


def prepare_surge(data_folder, save_folder, seed=0, split_csv=None):
    """Writes the tone-disjoint Surge split (EVAR's with ``split_csv``).

    Arguments
    ---------
    data_folder : str or Path
        Folder holding ``<tone>/<pitch>.ogg``.
    save_folder : str or Path
        Where ``classes.txt`` and ``<split>/{train,valid,test}.csv`` go.
    seed : int
        Seed of the tone draw without ``split_csv``.
    split_csv : str or Path, optional
        EVAR's ``evar/predefined/dataset_surge_tone_splits.csv``.

    Returns
    -------
    info : TaskInfo
    splits : list of Split
        One ``evar_tones`` or ``seeded_tones_seed<seed>`` split.

    Example
    -------
    >>> info.clip_seconds, info.metric
    (4.0, 'accuracy')
    """
    mode = "evar_tones" if split_csv else "seeded_tones"
    extra = {"split": mode}
    if split_csv:
        extra["split_csv"] = str(Path(split_csv).absolute())
        seed = 0
    options = options_for(NAME, data_folder, seed, **extra)
    cached = load_cached(save_folder, options)
    if cached:
        return cached
    root = Path(data_folder)
    if not root.is_dir():
        raise LayoutError(f"{DATASET}: {root} not found")
    files = sorted(root.glob("*/*.ogg"))
    if not files:
        raise LayoutError(f"{DATASET}: no <tone>/<pitch>.ogg under {root}")
    items = [
        Item(f"{f.parent.name}/{f.stem}", str(f.absolute()), (f.stem,), f.parent.name)
        for f in files
    ]
    tones = sorted({it.group for it in items})
    if split_csv:
        parts = read_tone_splits(split_csv)
        unknown = [t for t in tones if t not in parts]
        if unknown:
            logger.warning(
                "%s: %d tone folder(s) are not in %s and are left out: %s",
                DATASET, len(unknown), split_csv, ", ".join(unknown[:5]),
            )
            items = [it for it in items if it.group in parts]
        name = mode
    else:
        parts = tone_split(tones, seed)
        name = f"{mode}_seed{seed}"
        logger.warning(
            "%s: no split_csv (EVAR's evar/predefined/dataset_surge_tone_splits.csv) "
            "given; using the split '%s' drawn with seed %d, NOT EVAR's: scores "
            "are not comparable with EVAR's", DATASET, name, seed,
        )
    items = probe_audio(DATASET, items, save_folder)
    require_usable(DATASET, items, root)
    by_part = {p: [it for it in items if parts[it.group] == p] for p in ("train", "valid", "test")}
    empty = [p for p, rows in by_part.items() if not rows]
    if empty:
        raise LayoutError(f"{DATASET}: the {'/'.join(empty)} part of split {name} has no clip")
    classes = sorted({it.labels[0] for it in items}, key=_natural)
    split = write_split(save_folder, name, by_part["train"], by_part["valid"], by_part["test"])
    return save_manifest(
        save_folder, options, replace(info, num_classes=len(classes)), [split], classes
    )


prepare = prepare_surge
