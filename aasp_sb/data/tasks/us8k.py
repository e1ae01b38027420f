"""UrbanSound8K (Salamon et al., 2014): 8,732 clips (<= 4 s), 10 classes.

Official layout (archive ``UrbanSound8K.tar.gz``)::

    UrbanSound8K/
      audio/fold1/ ... audio/fold10/*.wav   # mostly 44.1 kHz; rates vary
      metadata/UrbanSound8K.csv
        # slice_file_name,fsID,start,end,salience,fold,classID,class

Classes are the ``class`` names in ``classID`` order (0 = air_conditioner).
One split per official fold: test = that fold, train = the nine others minus
a class-complete 10 % that forms the validation set (EVAR protocol). The
authors ask for exactly these folds: slices of one recording share a fold.
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

NAME = "us8k"
DATASET = "UrbanSound8K"
#: Validation: a class-complete 10 % holdout of train (no official valid set).
VALID_SOURCE = "holdout"
#: Nominal description (``prepare`` returns the counts actually found).
info = TaskInfo(
    name=NAME,
    num_classes=10,
    multilabel=False,
    metric="accuracy",
    clip_seconds=4.0,
    sample_rate=44100,
    folds=[f"fold{i}" for i in range(1, 11)],
)

META = "metadata/UrbanSound8K.csv"


def prepare_us8k(data_folder, save_folder, seed=0):
    """Writes the ten UrbanSound8K cross-validation splits.

    Arguments
    ---------
    data_folder : str or Path
        The ``UrbanSound8K`` folder (holding ``audio/`` and ``metadata/``).
    save_folder : str or Path
        Where ``classes.txt`` and ``fold{k}/{train,valid,test}.csv`` go.
    seed : int
        Seed of the validation draw.

    Returns
    -------
    info : TaskInfo
        The task, with the number of classes found.
    splits : list of Split
        ``fold1`` ... ``fold10``.

    Example
    -------
    >>> info.num_classes, len(info.folds)
    (10, 10)
    """
    options = options_for(NAME, data_folder, seed)
    cached = load_cached(save_folder, options)
    if cached:
        return cached
    root = Path(data_folder)
    meta = require(root, META, DATASET)
    audio = require(root, "audio", DATASET, is_dir=True)
    rows = read_meta_csv(
        meta, ["slice_file_name", "fold", "classID", "class"], DATASET, META
    )
    names, items = {}, []
    for row in rows:
        try:
            cid, fold = int(row["classID"]), int(row["fold"])
        except ValueError as err:
            raise LayoutError(f"{DATASET}: bad row in {META}: {row}") from err
        if names.setdefault(cid, row["class"]) != row["class"]:
            raise LayoutError(
                f"{DATASET}: classID {cid} has two names in {META}"
            )
        items.append(
            Item(
                id=Path(row["slice_file_name"]).stem,
                path=str(
                    (audio / f"fold{fold}" / row["slice_file_name"]).absolute()
                ),
                labels=(row["class"],),
                group=f"fold{fold}",
            )
        )
    if not items:
        raise LayoutError(f"{DATASET}: {META} under {root} lists no clips")
    classes = [names[c] for c in sorted(names)]
    folds = sorted({it.group for it in items}, key=lambda f: int(f[4:]))
    items = probe_audio(DATASET, items, save_folder)
    require_usable(DATASET, items, root)
    splits = fold_splits(DATASET, items, folds, save_folder, seed)
    task = replace(
        info, num_classes=len(classes), folds=[s.name for s in splits]
    )
    return save_manifest(save_folder, options, task, splits, classes)


prepare = prepare_us8k
