"""Speech Commands V2 (Warden, 2018): 105,829 1-s utterances of 35 words.

Official layout (``speech_commands_v0.02.tar.gz`` extracted into a folder)::

    speech_commands_v0.02/
      backward/ bed/ ... zero/        # one folder per word, *.wav at 16 kHz
      _background_noise_/            # excluded (not a word)
      validation_list.txt            # lines like right/bb05582b_nohash_3.wav
      testing_list.txt
      LICENSE README.md

Classes are the 35 word folders in alphabetical order (folders starting with
``_`` are skipped). The official lists give valid and test; train is every
other clip, as in the dataset's README and EVAR. IDs are ``word_stem`` since
the same file name occurs under several words.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .base import (
    Item,
    LayoutError,
    TaskInfo,
    load_cached,
    options_for,
    probe_audio,
    read_list,
    require,
    require_usable,
    save_manifest,
    write_split,
)

NAME = "spcv2"
DATASET = "Speech Commands V2"
#: Validation is an official part of the split, not a holdout.
VALID_SOURCE = "split"
#: Nominal description (``prepare`` returns the counts actually found).
info = TaskInfo(
    name=NAME,
    num_classes=35,
    multilabel=False,
    metric="accuracy",
    clip_seconds=1.0,
    sample_rate=16000,
    folds=None,
)


def _item(root, rel):
    word, name = rel.split("/", 1) if "/" in rel else ("", rel)
    return Item(
        id=f"{word}_{Path(name).stem}",
        path=str((root / word / name).absolute()),
        labels=(word,),
        group=word,
    )


def prepare_spcv2(data_folder, save_folder, seed=0):
    """Writes the official Speech Commands V2 (35 words) split.

    Arguments
    ---------
    data_folder : str or Path
        The extracted ``speech_commands_v0.02`` folder.
    save_folder : str or Path
        Where ``classes.txt`` and ``official/{train,valid,test}.csv`` go.
    seed : int
        Unused (the split is official); recorded for uniformity.

    Returns
    -------
    info : TaskInfo
        The task, with the number of words found.
    splits : list of Split
        One ``official`` split.

    Example
    -------
    >>> info.num_classes, info.clip_seconds
    (35, 1.0)
    """
    options = options_for(NAME, data_folder, seed)
    cached = load_cached(save_folder, options)
    if cached:
        return cached
    root = Path(data_folder)
    valid_list = read_list(require(root, "validation_list.txt", DATASET))
    test_list = read_list(require(root, "testing_list.txt", DATASET))
    classes = sorted(
        d.name
        for d in root.iterdir()
        if d.is_dir() and not d.name.startswith((".", "_"))
    )
    if not classes:
        raise LayoutError(
            f"{DATASET}: no word folders (e.g. yes/) found under {root}"
        )
    known = set(classes)
    valid_set, test_set = set(valid_list), set(test_list)
    train, missing = [], []
    for word in classes:
        for wav in sorted((root / word).glob("*.wav")):
            rel = f"{word}/{wav.name}"
            if rel not in valid_set and rel not in test_set:
                train.append(_item(root, rel))
    parts = {}
    for part, rels in (("valid", valid_list), ("test", test_list)):
        keep = []
        for rel in dict.fromkeys(rels):  # de-duplicated, order kept
            if rel.split("/", 1)[0] in known:
                keep.append(_item(root, rel))
            else:
                missing.append(f"{root / rel} (no word folder)")
        parts[part] = keep
    train = probe_audio(
        DATASET, train + parts["valid"] + parts["test"], save_folder, missing
    )
    require_usable(DATASET, train, root)
    ids = {p: {it.id for it in parts[p]} for p in parts}
    ids["valid"] -= ids["test"]  # a clip in both lists counts as test
    valid = [it for it in train if it.id in ids["valid"]]
    test = [it for it in train if it.id in ids["test"]]
    train = [
        it
        for it in train
        if it.id not in ids["valid"] and it.id not in ids["test"]
    ]
    split = write_split(save_folder, "official", train, valid, test)
    task = replace(info, num_classes=len(classes))
    return save_manifest(save_folder, options, task, [split], classes)


prepare = prepare_spcv2
