"""VoxCeleb1 speaker identification (Nagrani et al., 2017): 1,251 speakers.

Official layout (``vox1_dev_wav.zip`` and ``vox1_test_wav.zip`` both extract
to ``wav/``; merge them) plus the identification split file from the
VoxCeleb website::

    VoxCeleb1/
      wav/id10001/1zcIwhmdeo4/00001.wav      # 16 kHz
      iden_split.txt   # "1 id10001/1zcIwhmdeo4/00001.wav"; 1=train 2=valid 3=test

``iden_split.txt`` is looked for in the data folder, then ``meta/`` and
``metadata/``. Clips are looked up under ``wav/`` and, for unmerged
downloads, under ``*/wav/`` (e.g. ``vox1_dev_wav/wav``). Classes are the
speaker IDs in sorted order; the official identification split is used as is
(EVAR). IDs are ``speaker_video_utterance``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .base import (
    Item,
    LayoutError,
    TaskInfo,
    find_file,
    load_cached,
    options_for,
    probe_audio,
    read_list,
    require_usable,
    save_manifest,
    write_split,
)

NAME = "vc1"
DATASET = "VoxCeleb1"
SPLIT_FILE = "iden_split.txt"
PARTS = {"1": "train", "2": "valid", "3": "test"}
#: Validation is an official part of the split, not a holdout.
VALID_SOURCE = "split"
#: Nominal description (``prepare`` returns the counts actually found).
info = TaskInfo(
    name=NAME,
    num_classes=1251,
    multilabel=False,
    metric="accuracy",
    clip_seconds=8.2,
    sample_rate=16000,
    folds=None,
)


def _wav_roots(root):
    roots = [root / "wav"] if (root / "wav").is_dir() else []
    roots += sorted(p for p in root.glob("*/wav") if p.is_dir())
    if not roots:
        raise LayoutError(f"{DATASET}: wav/ not found under {root}")
    return roots


def prepare_vc1(data_folder, save_folder, seed=0):
    """Writes the official VoxCeleb1 identification split.

    Arguments
    ---------
    data_folder : str or Path
        Folder holding ``wav/`` and ``iden_split.txt``.
    save_folder : str or Path
        Where ``classes.txt`` and ``official/{train,valid,test}.csv`` go.
    seed : int
        Unused (the split is official); recorded for uniformity.

    Returns
    -------
    info : TaskInfo
        The task, with the number of speakers found.
    splits : list of Split
        One ``official`` split.

    Example
    -------
    >>> info.num_classes, info.clip_seconds
    (1251, 8.2)
    """
    options = options_for(NAME, data_folder, seed)
    cached = load_cached(save_folder, options)
    if cached:
        return cached
    root = Path(data_folder)
    lines = read_list(find_file(root, SPLIT_FILE, DATASET))
    wav_roots = _wav_roots(root)
    items, seen = [], set()
    for lineno, line in enumerate(lines, 1):
        fields = line.split()
        if (
            len(fields) != 2
            or fields[0] not in PARTS
            or fields[1].count("/") != 2
        ):
            raise LayoutError(
                f"{DATASET}: {SPLIT_FILE} line {lineno} is not "
                f"'<1|2|3> idXXXXX/<video>/<nnnnn>.wav': {line}"
            )
        rel = fields[1]
        if rel in seen:
            continue
        seen.add(rel)
        speaker, video, name = rel.split("/")
        path = next(
            (r / rel for r in wav_roots if (r / rel).is_file()),
            wav_roots[0] / rel,
        )
        items.append(
            Item(
                id=f"{speaker}_{video}_{Path(name).stem}",
                path=str(path.absolute()),
                labels=(speaker,),
                group=PARTS[fields[0]],
            )
        )
    if not items:
        raise LayoutError(
            f"{DATASET}: {SPLIT_FILE} under {root} lists no clips"
        )
    classes = sorted({it.labels[0] for it in items})
    items = probe_audio(DATASET, items, save_folder)
    require_usable(DATASET, items, root)
    parts = {p: [it for it in items if it.group == p] for p in PARTS.values()}
    split = write_split(
        save_folder, "official", parts["train"], parts["valid"], parts["test"]
    )
    task = replace(info, num_classes=len(classes))
    return save_manifest(save_folder, options, task, [split], classes)


prepare = prepare_vc1
