"""VoxForge spoken-language identification (EVAR's task): 6 languages.

EVAR downloads VoxForge with ``evar/utils/download_voxforge.py`` (the TFDS
list of session archives, each extracted to ``<session>/wav/*.wav``) and
defines labels and splits in ``evar/metadata/voxforge.csv``
(``file_name,label,split``; sessions drawn 70 / 15 / 15 %, "total=176428"
clips, by ``make_metadata.py``). Two layouts are read:

- ``split_csv=<EVAR's voxforge.csv>``: its clip list exactly, with
  ``file_name`` relative to ``data_folder`` (the extracted archives); split
  named ``evar_csv``;
- ``<language>/<session>/wav/*.wav`` (the archives sorted into one folder
  per language): sessions are drawn with ``seed`` in EVAR's shares
  (``int(0.7 N)`` train, ``int(0.15 N)`` valid, the rest test; split named
  ``seeded_sessions_seed<seed>``) and a warning says that the split is not
  EVAR's.

Sessions never straddle parts. Clips are 5.8 s (EVAR ``ds_tasks.py``:
``'voxforge': [1, 5.8, ...]``); classes are the language codes sorted.
"""

from __future__ import annotations

import random
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

NAME = "voxforge"
DATASET = "VoxForge"
#: Validation is a fixed part of the split (session-disjoint), not a holdout.
VALID_SOURCE = "split"
#: Nominal description (``prepare`` returns the counts actually found).
info = TaskInfo(
    name=NAME,
    num_classes=6,
    multilabel=False,
    metric="accuracy",
    clip_seconds=5.8,
    sample_rate=16000,
    folds=None,
)


def session_split(sessions, seed=0, train=0.7, valid=0.15):
    """Seeded session-disjoint split in EVAR's shares.

    Arguments
    ---------
    sessions : iterable of str
        Session (archive folder) names.
    seed : int
        Seed of the draw.
    train, valid : float
        Shares of sessions for train and valid (test gets the rest).

    Returns
    -------
    dict
        ``session -> "train" | "valid" | "test"``.

    Example
    -------
    >>> parts = list(session_split([f"s{i}" for i in range(20)]).values())
    >>> [parts.count(p) for p in ("train", "valid", "test")]
    [14, 3, 3]
    """
    order = sorted(set(sessions))
    random.Random(seed).shuffle(order)
    n = len(order)
    n_train, n_valid = int(n * train), int(n * valid)
    if n >= 3:
        n_valid = max(1, n_valid)
        n_train = min(max(1, n_train), n - n_valid - 1)
    return {
        s: "train" if i < n_train else "valid" if i < n_train + n_valid else "test"
        for i, s in enumerate(order)
    }


def prepare_voxforge(data_folder, save_folder, seed=0, split_csv=None):
    """Writes the session-disjoint VoxForge split (EVAR's with ``split_csv``).

    Arguments
    ---------
    data_folder : str or Path
        The extracted archives (with ``split_csv``), or
        ``<language>/<session>/wav/*.wav``.
    save_folder : str or Path
        Where ``classes.txt`` and ``<split>/{train,valid,test}.csv`` go.
    seed : int
        Seed of the session draw without ``split_csv``.
    split_csv : str or Path, optional
        EVAR's ``evar/metadata/voxforge.csv``.

    Returns
    -------
    info : TaskInfo
    splits : list of Split

    Example
    -------
    >>> info.clip_seconds, info.num_classes
    (5.8, 6)
    """
    mode = "evar_csv" if split_csv else "seeded_sessions"
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
    if split_csv:
        if not Path(split_csv).is_file():
            raise LayoutError(f"{DATASET}: split_csv {split_csv} not found")
        rows = read_meta_csv(split_csv, ["file_name", "label", "split"], DATASET,
                             rel=str(split_csv))
        items, parts = [], {}
        for r in rows:
            if r["split"] not in ("train", "valid", "test"):
                raise LayoutError(
                    f"{DATASET}: {split_csv}: split {r['split']!r} of {r['file_name']}"
                )
            rel = Path(r["file_name"])
            stem = rel.with_suffix("").parts  # <session>/wav/<clip> -> <session>/<clip>
            uid = "/".join(p for p in stem[:-1] if p != "wav") + "/" + stem[-1]
            items.append(Item(uid, str((root / rel).absolute()), (r["label"],), r["split"]))
            parts[uid] = r["split"]
        part_of = parts
        name = mode
    else:
        items = []
        for wav in sorted(root.glob("*/*/wav/*.wav")):
            lang, session = wav.parts[-4], wav.parts[-3]
            items.append(
                Item(f"{lang}/{session}/{wav.stem}", str(wav.absolute()), (lang,), session)
            )
        if not items:
            raise LayoutError(
                f"{DATASET}: no <language>/<session>/wav/*.wav under {root} "
                "(or give EVAR's voxforge.csv as split_csv)"
            )
        sessions = session_split((it.group for it in items), seed)
        part_of = {it.id: sessions[it.group] for it in items}
        name = f"{mode}_seed{seed}"
        logger.warning(
            "%s: no split_csv (EVAR's evar/metadata/voxforge.csv) given; using the "
            "split '%s' drawn with seed %d, NOT EVAR's: scores are not comparable "
            "with EVAR's", DATASET, name, seed,
        )
    items = probe_audio(DATASET, items, save_folder)
    require_usable(DATASET, items, root)
    by_part = {p: [it for it in items if part_of[it.id] == p] for p in ("train", "valid", "test")}
    empty = [p for p, rs in by_part.items() if not rs]
    if empty:
        raise LayoutError(f"{DATASET}: the {'/'.join(empty)} part of split {name} has no clip")
    classes = sorted({it.labels[0] for it in items})
    split = write_split(save_folder, name, by_part["train"], by_part["valid"], by_part["test"])
    return save_manifest(
        save_folder, options, replace(info, num_classes=len(classes)), [split], classes
    )


prepare = prepare_voxforge
