"""CREMA-D (Cao et al., 2014): 7,442 clips of 91 actors, 6 emotions.

Official layout (``git clone https://github.com/CheyneyComputerScience/CREMA-D``
with Git LFS)::

    CREMA-D/
      AudioWAV/{ActorID}_{Sentence}_{Emotion}_{Level}.wav   # 16 kHz
               # e.g. 1001_DFA_ANG_XX.wav; emotions ANG DIS FEA HAP NEU SAD

There is no official split. The split is **speaker independent** and, by
default, EVAR's: ``evar/metadata/cremad.csv`` of nttcslab/eval-audio-repr
assigns 63 / 9 / 19 of the 91 actors to train / valid / test (drawn once,
without a seed, by ``make_metadata.py``); :data:`EVAR_VALID_ACTORS` and
:data:`EVAR_TEST_ACTORS` are that assignment, the rest of 1001-1091 train.
Three ways to split (``split``):

- ``"evar"`` (default): EVAR's actors; every readable clip of an actor
  goes to the actor's part. EVAR's CSV lists 7,438 clips (the TFDS download
  list): four clips of the 7,442 on disk are not in it, so counts differ
  by at most those four;
- ``split_csv=<EVAR's cremad.csv>``: exactly EVAR's clip list
  (``file_name,label,speaker_id,split``); clips on disk that the list does
  not name are left out (and counted in the log);
- ``"seeded"``: the actors shuffled with ``seed``, first ``int(0.7 N)`` to
  train, next ``int(0.1 N)`` to valid (EVAR's ratios), for copies with
  other actors. Only this mode reads ``seed``.

A fine-tuning or probe seed never moves the split: the recipes pass their
own ``prep_seed``, not the training seed. Classes are the six emotion codes
in alphabetical order. Known-broken clips (e.g. an empty
``1076_MTI_SAD_XX.wav`` in some copies) are listed and skipped.
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
    require,
    require_usable,
    save_manifest,
    write_split,
)

NAME = "cremad"
DATASET = "CREMA-D"
EMOTIONS = ["ANG", "DIS", "FEA", "HAP", "NEU", "SAD"]
#: Split names written for each mode (the name says which split was used).
SPLIT_NAMES = {
    "evar": "evar_actors",
    "evar_csv": "evar_csv",
    "seeded": "seeded_actors",
}
SPLIT_MODES = ("evar", "seeded")
#: Actor IDs of CREMA-D (1001-1091).
ACTORS = [str(a) for a in range(1001, 1092)]
#: Valid actors of EVAR's ``evar/metadata/cremad.csv`` (split column).
EVAR_VALID_ACTORS = (
    "1009 1011 1022 1034 1039 1047 1066 1070 1082"
).split()
#: Test actors of EVAR's ``evar/metadata/cremad.csv`` (split column).
EVAR_TEST_ACTORS = (
    "1001 1004 1017 1019 1020 1025 1026 1029 1033 1035 1042 1044 1050 1053 "
    "1056 1058 1060 1069 1083"
).split()
#: Validation is an official (fixed) part of the split, not a holdout.
VALID_SOURCE = "split"
#: Nominal description (``prepare`` returns the counts actually found).
info = TaskInfo(
    name=NAME,
    num_classes=6,
    multilabel=False,
    metric="accuracy",
    clip_seconds=2.5,
    sample_rate=16000,
    folds=None,
)


def evar_actor_split():
    """EVAR's actor assignment (``evar/metadata/cremad.csv``).

    Returns
    -------
    dict
        ``actor -> "train" | "valid" | "test"`` for the 91 actors.

    Example
    -------
    >>> parts = list(evar_actor_split().values())
    >>> [parts.count(p) for p in ("train", "valid", "test")]
    [63, 9, 19]
    """
    parts = {a: "train" for a in ACTORS}
    parts.update({a: "valid" for a in EVAR_VALID_ACTORS})
    parts.update({a: "test" for a in EVAR_TEST_ACTORS})
    return parts


def read_evar_csv(path):
    r"""Reads EVAR's ``cremad.csv``: ``file name stem -> part``.

    Arguments
    ---------
    path : str or Path
        EVAR's metadata CSV (``file_name,label,speaker_id,split``).

    Returns
    -------
    dict
        ``{stem: "train" | "valid" | "test"}``.

    Example
    -------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "cremad.csv")
    >>> _ = open(p, "w").write(
    ...     "file_name,label,speaker_id,split\n1001_DFA_ANG_XX.wav,ANG,1001,test\n")
    >>> read_evar_csv(p)
    {'1001_DFA_ANG_XX': 'test'}
    """
    if not Path(path).is_file():
        raise LayoutError(f"{DATASET}: split_csv {path} not found")
    rows = read_meta_csv(path, ["file_name", "split"], DATASET, rel=str(path))
    parts = {}
    for row in rows:
        part = row["split"]
        if part not in ("train", "valid", "test"):
            raise LayoutError(
                f"{DATASET}: {path}: split {part!r} of {row['file_name']} "
                "is not train, valid or test"
            )
        parts[Path(row["file_name"]).stem] = part
    return parts


def actor_split(actors, seed=0, train=0.7, valid=0.1):
    """Deterministic speaker-independent split of actor IDs (EVAR ratios).

    Arguments
    ---------
    actors : iterable of str
        Actor IDs.
    seed : int
        Seed of the shuffle (applied to the sorted IDs).
    train, valid : float
        Shares of actors for train and valid (test gets the rest); each part
        gets at least one actor when there are three or more.

    Returns
    -------
    dict
        ``actor -> "train" | "valid" | "test"``.

    Example
    -------
    >>> s = actor_split([str(1001 + i) for i in range(91)])
    >>> [list(s.values()).count(p) for p in ("train", "valid", "test")]
    [63, 9, 19]
    """
    order = sorted(set(actors))
    random.Random(seed).shuffle(order)
    n = len(order)
    n_train, n_valid = int(n * train), int(n * valid)
    if n >= 3:
        n_valid = max(1, n_valid)
        n_train = min(max(1, n_train), n - n_valid - 1)
    parts = {}
    for i, actor in enumerate(order):
        parts[actor] = (
            "train"
            if i < n_train
            else "valid"
            if i < n_train + n_valid
            else "test"
        )
    return parts


def prepare_cremad(data_folder, save_folder, seed=0, split="evar", split_csv=None):
    """Writes a speaker-independent CREMA-D split (EVAR's by default).

    Arguments
    ---------
    data_folder : str or Path
        The ``CREMA-D`` folder holding ``AudioWAV/``.
    save_folder : str or Path
        Where ``classes.txt`` and ``<split name>/{train,valid,test}.csv`` go.
    seed : int
        Seed of the actor shuffle; read only with ``split="seeded"``.
    split : str
        ``"evar"`` (EVAR's actors) or ``"seeded"`` (see the module notes).
    split_csv : str or Path, optional
        EVAR's ``evar/metadata/cremad.csv``: its clip list, exactly.

    Returns
    -------
    info : TaskInfo
        The task (six emotions).
    splits : list of Split
        One split, named ``evar_actors``, ``evar_csv`` or
        ``seeded_actors_seed<seed>``.

    Example
    -------
    >>> info.num_classes, info.clip_seconds
    (6, 2.5)
    """
    if split not in SPLIT_MODES:
        raise ValueError(
            f"{DATASET}: split must be one of {SPLIT_MODES}, got {split!r}"
        )
    mode = "evar_csv" if split_csv else split
    extra = {"split": mode}
    if mode == "evar_csv":
        extra["split_csv"] = str(Path(split_csv).absolute())
    if mode != "seeded":
        seed = 0  # the split does not depend on it: same record for any seed
    options = options_for(NAME, data_folder, seed, train=0.7, valid=0.1, **extra)
    cached = load_cached(save_folder, options)
    if cached:
        return cached
    root = Path(data_folder)
    audio = require(root, "AudioWAV", DATASET, is_dir=True)
    listed = read_evar_csv(split_csv) if mode == "evar_csv" else None
    items, odd = [], []
    for wav in sorted(audio.glob("*.wav")):
        fields = wav.stem.split("_")
        if len(fields) != 4 or fields[2] not in EMOTIONS:
            odd.append(wav.name)
            continue
        items.append(
            Item(wav.stem, str(wav.absolute()), (fields[2],), fields[0])
        )
    if odd:
        logger.warning(
            "%s: %d file(s) not named {ActorID}_{Sentence}_{Emotion}_{Level}.wav "
            "ignored: %s",
            DATASET,
            len(odd),
            ", ".join(odd[:10]),
        )
    if not items:
        raise LayoutError(
            f"{DATASET}: no {{ActorID}}_..._{{Emotion}}_....wav under {audio}"
        )
    if listed is not None:
        unlisted = [it.id for it in items if it.id not in listed]
        if unlisted:
            logger.warning(
                "%s: %d clip(s) on disk are not in %s and are left out (as "
                "in EVAR): %s",
                DATASET, len(unlisted), split_csv, ", ".join(unlisted[:10]),
            )
        items = [it for it in items if it.id in listed]
    items = probe_audio(DATASET, items, save_folder)
    require_usable(DATASET, items, root)
    if listed is not None:
        part_of = {it.id: listed[it.id] for it in items}
    else:
        actors = (
            evar_actor_split()
            if mode == "evar"
            else actor_split((it.group for it in items), seed)
        )
        unknown = sorted({it.group for it in items} - set(actors))
        if unknown:
            raise LayoutError(
                f"{DATASET}: actor(s) {', '.join(unknown[:5])} are not in "
                "EVAR's 1001-1091 list; use split='seeded' for other copies"
            )
        part_of = {it.id: actors[it.group] for it in items}
    by_part = {
        p: [it for it in items if part_of[it.id] == p]
        for p in ("train", "valid", "test")
    }
    empty = [p for p, rows in by_part.items() if not rows]
    if empty:
        raise LayoutError(
            f"{DATASET}: no clip of the {'/'.join(empty)} actors of the "
            f"{mode} split under {audio}"
        )
    name = SPLIT_NAMES[mode] + (f"_seed{seed}" if mode == "seeded" else "")
    split_obj = write_split(
        save_folder,
        name,
        by_part["train"],
        by_part["valid"],
        by_part["test"],
    )
    logger.info(
        "%s: %s split, %d/%d/%d clips of %d/%d/%d actors", DATASET, name,
        *(len(by_part[p]) for p in ("train", "valid", "test")),
        *(len({it.group for it in by_part[p]}) for p in ("train", "valid", "test")),
    )
    return save_manifest(
        save_folder,
        options,
        replace(info, num_classes=len(EMOTIONS)),
        [split_obj],
        EMOTIONS,
    )


prepare = prepare_cremad
