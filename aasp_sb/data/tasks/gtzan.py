"""GTZAN (Tzanetakis & Cook, 2002): 1,000 30-s excerpts, 10 genres.

Official layout (``genres.tar.gz``; the Kaggle copy calls the folder
``genres_original``)::

    GTZAN/
      genres/<genre>/<genre>.000NN.wav     # 22.05 kHz (.au in the original)
      train_filtered.txt valid_filtered.txt test_filtered.txt   # optional

The split lists are the fault-filtered artist-conditional split of Kereliuk,
Sturm & Larsen (2015) as used by EVAR (lines like ``blues/blues.00029.wav``;
``.au`` entries match the same clip). They are looked for in ``split_folder``
when given, else in the data folder, ``genres/`` and ``splits/``. When they
are absent, a deterministic stratified split (70/10/20 % per genre, shuffled
with ``seed``) is written instead and named ``stratified``; note that it
is *not* artist-filtered, so scores are optimistic compared with papers.

Classes are the genre folders in alphabetical order. The known-corrupt
``jazz.00054.wav`` (unreadable in most copies) is listed and skipped.
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
    read_list,
    require_usable,
    save_manifest,
    write_split,
)

NAME = "gtzan"
DATASET = "GTZAN"
LISTS = {
    "train": "train_filtered.txt",
    "valid": "valid_filtered.txt",
    "test": "test_filtered.txt",
}
GENRE_DIRS = ("genres", "genres_original", "Data/genres_original")
#: Validation is a fixed part of the split (the filtered lists), not a holdout.
VALID_SOURCE = "split"
#: Nominal description (``prepare`` returns the counts actually found).
info = TaskInfo(
    name=NAME,
    num_classes=10,
    multilabel=False,
    metric="accuracy",
    clip_seconds=30.0,
    sample_rate=22050,
    folds=None,
)


def _key(rel):
    """``blues/blues.00029.wav`` -> ``blues/blues.00029`` (any extension)."""
    rel = rel.strip().replace("\\", "/")
    parts = rel.split("/")
    genre, name = (parts[-2] if len(parts) > 1 else ""), parts[-1]
    for ext in (".wav", ".au"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    return f"{genre}/{name}"


def find_split_lists(root, genres, split_folder=None):
    """Returns the three fault-filtered list files, or None if there are none.

    Arguments
    ---------
    root : Path
        Data folder.
    genres : Path
        The genre folder.
    split_folder : str or Path, optional
        Folder that must hold the three lists.

    Returns
    -------
    dict or None
        ``part -> Path``.

    Example
    -------
    >>> find_split_lists(Path("/nonexistent"), Path("/nonexistent")) is None
    True
    """
    folders = (
        [Path(split_folder)]
        if split_folder
        else [root, genres, root / "splits"]
    )
    for folder in folders:
        found = {
            p: folder / f for p, f in LISTS.items() if (folder / f).is_file()
        }
        if len(found) == len(LISTS):
            return found
        if found or split_folder:
            lacking = [f for p, f in LISTS.items() if p not in found]
            raise LayoutError(
                f"{DATASET}: {', '.join(lacking)} not found under {folder}"
            )
    return None


def stratified(items, seed=0, shares=(0.7, 0.1)):
    """Deterministic per-genre train/valid/test assignment.

    Arguments
    ---------
    items : sequence of Item
        Clips.
    seed : int
        Seed of the shuffle.
    shares : tuple of float
        Train and valid shares (test gets the rest); each part gets at least
        one clip of a genre with three or more clips.

    Returns
    -------
    dict
        ``part -> list of Item``.

    Example
    -------
    >>> xs = [Item(f"g.{i}", "", ("g",)) for i in range(100)]
    >>> {p: len(v) for p, v in stratified(xs).items()}
    {'train': 70, 'valid': 10, 'test': 20}
    """
    out = {"train": [], "valid": [], "test": []}
    rng = random.Random(seed)
    for genre in sorted({it.labels[0] for it in items}):
        group = sorted(
            (it for it in items if it.labels[0] == genre), key=lambda it: it.id
        )
        rng.shuffle(group)
        n = len(group)
        n_train, n_valid = round(n * shares[0]), round(n * shares[1])
        if n >= 3:
            n_valid = max(1, n_valid)
            n_train = min(max(1, n_train), n - n_valid - 1)
        out["train"] += group[:n_train]
        out["valid"] += group[n_train : n_train + n_valid]
        out["test"] += group[n_train + n_valid :]
    return out


def prepare_gtzan(data_folder, save_folder, seed=0, split_folder=None):
    """Writes the GTZAN split (fault-filtered if the lists are available).

    Arguments
    ---------
    data_folder : str or Path
        Folder holding ``genres/`` (or ``genres_original/``).
    save_folder : str or Path
        Where ``classes.txt`` and ``<split>/{train,valid,test}.csv`` go.
    seed : int
        Seed of the stratified fallback split.
    split_folder : str or Path, optional
        Folder with ``train_filtered.txt``, ``valid_filtered.txt`` and
        ``test_filtered.txt``.

    Returns
    -------
    info : TaskInfo
        The task, with the number of genres found.
    splits : list of Split
        One ``filtered`` or ``stratified`` split.

    Example
    -------
    >>> info.num_classes, info.sample_rate
    (10, 22050)
    """
    split_folder = str(Path(split_folder).absolute()) if split_folder else None
    options = options_for(NAME, data_folder, seed, split_folder=split_folder)
    cached = load_cached(save_folder, options)
    if cached:
        return cached
    root = Path(data_folder)
    genres = next((root / d for d in GENRE_DIRS if (root / d).is_dir()), None)
    if genres is None:
        raise LayoutError(f"{DATASET}: genres/ not found under {root}")
    classes = sorted(
        d.name
        for d in genres.iterdir()
        if d.is_dir() and not d.name.startswith(".")
    )
    if not classes:
        raise LayoutError(
            f"{DATASET}: no genre folders (e.g. blues/) found under {genres}"
        )
    on_disk = {}
    for genre in classes:
        for f in sorted((genres / genre).iterdir()):
            if f.suffix.lower() in (".wav", ".au") and not f.name.startswith(
                "."
            ):
                on_disk.setdefault(_key(f"{genre}/{f.name}"), f)
    lists = find_split_lists(root, genres, split_folder)
    if lists is None:
        items = [
            Item(k.split("/")[1], str(p.absolute()), (k.split("/")[0],))
            for k, p in on_disk.items()
        ]
        items = probe_audio(DATASET, items, save_folder)
        require_usable(DATASET, items, root)
        parts, name = stratified(items, seed), "stratified"
        logger.warning(
            "%s: no fault-filtered lists (train/valid/test_filtered.txt) found "
            "under %s; using the split 'stratified' (seed %d), which is NOT "
            "artist-filtered: scores are optimistic and not comparable with "
            "EVAR's (give split_folder= to use the lists)",
            DATASET, root, seed,
        )
    else:
        items, missing, listed = [], [], set()
        for part, path in lists.items():
            for rel in read_list(path):
                key = _key(rel)
                genre, stem = key.split("/")
                if key in listed:
                    continue
                listed.add(key)
                if genre not in classes:
                    missing.append(
                        f"{rel} ({path.name}; no genre folder {genre}/)"
                    )
                    continue
                wav = on_disk.get(key, genres / genre / f"{stem}.wav")
                items.append(Item(stem, str(wav.absolute()), (genre,), part))
        if len(on_disk.keys() - listed):
            logger.info(
                "%s: %d clip(s) on disk are in none of the filtered lists (by design)",
                DATASET,
                len(on_disk.keys() - listed),
            )
        items = probe_audio(DATASET, items, save_folder, missing)
        require_usable(DATASET, items, root)
        parts = {p: [it for it in items if it.group == p] for p in LISTS}
        name = "filtered"
    split = write_split(
        save_folder, name, parts["train"], parts["valid"], parts["test"]
    )
    return save_manifest(
        save_folder,
        options,
        replace(info, num_classes=len(classes)),
        [split],
        classes,
    )


prepare = prepare_gtzan
