"""ESC-50 (Piczak, 2015): 2,000 5-s clips, 50 classes, 5 official folds.

Official layout (``git clone https://github.com/karolpiczak/ESC-50``)::

    ESC-50/
      audio/{fold}-{clip_id}-{take}-{target}.wav     # 44.1 kHz mono
      meta/esc50.csv   # filename,fold,target,category,esc10,src_file,take

Classes are the ``category`` names in ``target`` order (0 = dog, ...).
One split per official fold: test = that fold, train = the four others
minus a class-complete 10 % that forms the validation set (EVAR protocol).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .base import (
    Item,
    LayoutError,
    TaskInfo,
    fold_splits,
    load_cached,
    options_for,
    probe_audio,
    read_meta_csv,
    require,
    require_usable,
    save_manifest,
)

NAME = "esc50"
DATASET = "ESC-50"
#: Validation: a class-complete 10 % holdout of train (no official valid set).
VALID_SOURCE = "holdout"
#: Nominal description (``prepare`` returns the counts actually found).
info = TaskInfo(
    name=NAME,
    num_classes=50,
    multilabel=False,
    metric="accuracy",
    clip_seconds=5.0,
    sample_rate=44100,
    folds=[f"fold{i}" for i in range(1, 6)],
)


def prepare_esc50(data_folder, save_folder, seed=0):
    """Writes the five ESC-50 cross-validation splits.

    Arguments
    ---------
    data_folder : str or Path
        The ``ESC-50`` folder (holding ``audio/`` and ``meta/esc50.csv``).
    save_folder : str or Path
        Where ``classes.txt`` and ``fold{k}/{train,valid,test}.csv`` go.
    seed : int
        Seed of the validation draw.

    Returns
    -------
    info : TaskInfo
        The task, with the number of classes found.
    splits : list of Split
        ``fold1`` ... ``fold5``.

    Example
    -------
    >>> info.num_classes, info.clip_seconds
    (50, 5.0)
    """
    options = options_for(NAME, data_folder, seed)
    cached = load_cached(save_folder, options)
    if cached:
        return cached
    root = Path(data_folder)
    meta = require(root, "meta/esc50.csv", DATASET)
    audio = require(root, "audio", DATASET, is_dir=True)
    rows = read_meta_csv(
        meta,
        ["filename", "fold", "target", "category"],
        DATASET,
        "meta/esc50.csv",
    )
    names = {}
    items = []
    for row in rows:
        try:
            target, fold = int(row["target"]), int(row["fold"])
        except ValueError as err:
            raise LayoutError(
                f"{DATASET}: bad row in meta/esc50.csv: {row}"
            ) from err
        if names.setdefault(target, row["category"]) != row["category"]:
            raise LayoutError(
                f"{DATASET}: target {target} has two categories in meta/esc50.csv"
            )
        items.append(
            Item(
                id=Path(row["filename"]).stem,
                path=str((audio / row["filename"]).absolute()),
                labels=(row["category"],),
                group=f"fold{fold}",
            )
        )
    if not items:
        raise LayoutError(
            f"{DATASET}: meta/esc50.csv under {root} lists no clips"
        )
    classes = [names[t] for t in sorted(names)]
    folds = sorted({it.group for it in items}, key=lambda f: int(f[4:]))
    items = probe_audio(DATASET, items, save_folder)
    require_usable(DATASET, items, root)
    splits = fold_splits(DATASET, items, folds, save_folder, seed)
    task = replace(
        info, num_classes=len(classes), folds=[s.name for s in splits]
    )
    return save_manifest(save_folder, options, task, splits, classes)


prepare = prepare_esc50
