"""NSynth (Engel et al., 2017): 305,979 4-s notes, 11 instrument families.

Official layout (the three ``nsynth-*.jsonwav.tar.gz`` archives extracted
side by side)::

    nsynth/
      nsynth-train/examples.json  nsynth-train/audio/{note}.wav   # 16 kHz
      nsynth-valid/examples.json  nsynth-valid/audio/{note}.wav
      nsynth-test/examples.json   nsynth-test/audio/{note}.wav

``examples.json`` maps each note name (e.g. ``bass_synthetic_033-022-050``)
to its attributes; the label is ``instrument_family_str`` and classes are
ordered by ``instrument_family`` (0 = bass ... 10 = vocal). The official
train/valid/test subsets are used as they are (EVAR).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from .base import (
    Item,
    LayoutError,
    TaskInfo,
    load_cached,
    options_for,
    probe_audio,
    require,
    require_usable,
    save_manifest,
    write_split,
)

NAME = "nsynth"
DATASET = "NSynth"
#: The official families in ``instrument_family`` order.
FAMILIES = [
    "bass",
    "brass",
    "flute",
    "guitar",
    "keyboard",
    "mallet",
    "organ",
    "reed",
    "string",
    "synth_lead",
    "vocal",
]
#: Validation is an official part of the split, not a holdout.
VALID_SOURCE = "split"
#: Nominal description (``prepare`` returns the counts actually found).
info = TaskInfo(
    name=NAME,
    num_classes=11,
    multilabel=False,
    metric="accuracy",
    clip_seconds=4.0,
    sample_rate=16000,
    folds=None,
)
SUBSETS = ("train", "valid", "test")


def prepare_nsynth(data_folder, save_folder, seed=0):
    """Writes the official NSynth instrument-family split.

    Arguments
    ---------
    data_folder : str or Path
        The folder holding ``nsynth-train``, ``nsynth-valid``, ``nsynth-test``.
    save_folder : str or Path
        Where ``classes.txt`` and ``official/{train,valid,test}.csv`` go.
    seed : int
        Unused (the split is official); recorded for uniformity.

    Returns
    -------
    info : TaskInfo
        The task, with the number of families found.
    splits : list of Split
        One ``official`` split.

    Example
    -------
    >>> info.num_classes, FAMILIES[9]
    (11, 'synth_lead')
    """
    options = options_for(NAME, data_folder, seed)
    cached = load_cached(save_folder, options)
    if cached:
        return cached
    root = Path(data_folder)
    metas = {
        s: require(root, f"nsynth-{s}/examples.json", DATASET) for s in SUBSETS
    }
    order = {name: i for i, name in enumerate(FAMILIES)}
    items = []
    for subset, meta in metas.items():
        rel = f"nsynth-{subset}/examples.json"
        try:
            notes = json.loads(meta.read_text(encoding="utf-8"))
        except ValueError as err:
            raise LayoutError(
                f"{DATASET}: {rel} under {root} is not JSON"
            ) from err
        audio = root / f"nsynth-{subset}" / "audio"
        for note in sorted(notes):
            attrs = notes[note]
            family = attrs.get("instrument_family_str")
            if family is None:
                raise LayoutError(
                    f"{DATASET}: {rel} entry {note} lacks instrument_family_str"
                )
            index = attrs.get("instrument_family")
            if index is not None and order.setdefault(
                family, int(index)
            ) != int(index):
                raise LayoutError(
                    f"{DATASET}: {rel}: family {family} has index {index}, "
                    f"expected {order[family]}"
                )
            items.append(
                Item(
                    id=note,
                    path=str((audio / f"{note}.wav").absolute()),
                    labels=(family,),
                    group=subset,
                )
            )
    if not items:
        raise LayoutError(
            f"{DATASET}: the examples.json files under {root} list no notes"
        )
    present = {it.labels[0] for it in items}
    classes = sorted(present, key=lambda f: (order.get(f, len(order)), f))
    items = probe_audio(DATASET, items, save_folder)
    require_usable(DATASET, items, root)
    parts = {s: [it for it in items if it.group == s] for s in SUBSETS}
    split = write_split(
        save_folder, "official", parts["train"], parts["valid"], parts["test"]
    )
    task = replace(info, num_classes=len(classes))
    return save_manifest(save_folder, options, task, [split], classes)


prepare = prepare_nsynth
