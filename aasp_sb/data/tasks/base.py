"""Shared machinery for downstream-task data preparation.

Every task module (:mod:`aasp_sb.data.tasks.esc50`, ...) turns a dataset, laid
out exactly as its authors distribute it, into SpeechBrain CSV manifests with
the columns ``ID,duration,wav,label`` (``wav`` absolute, ``duration`` in
seconds from :func:`soundfile.info`, several labels joined by ``;``) plus a
``classes.txt`` with one class name per line in index order.

This module holds what the tasks share:

- :class:`TaskInfo` / :class:`Split`, the values every ``prepare`` returns;
- :func:`probe_audio`, which measures durations and lists missing or
  unreadable clips once (in the log and in ``skipped.txt``) before skipping them;
- :func:`class_complete_holdout`, the deterministic, class-complete 10 %
  validation subset of the EVAR protocol (single- and multi-label);
- :func:`fold_splits` / :func:`write_split`, which write the CSVs;
- :func:`load_cached` / :func:`save_manifest`, which make preparation
  idempotent: a ``prepare.json`` in ``save_folder`` records the options, and
  a later call with the same options and all outputs present is skipped.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import random
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import soundfile as sf

logger = logging.getLogger(__name__)

#: Bump when the CSV content for the same options would change.
PREP_VERSION = 1
#: File in ``save_folder`` that records options, task info and splits.
MANIFEST = "prepare.json"
#: Audio extensions looked for when a dataset is found by walking folders.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".au")
#: Missing/unreadable clips printed in the log (all go to ``skipped.txt``).
LOG_LIST_LIMIT = 20


@dataclass(frozen=True)
class TaskInfo:
    """What a downstream task is and how it is scored.

    Arguments
    ---------
    name : str
        Registry name of the task (``"esc50"``, ...).
    num_classes : int
        Number of classes (lines in ``classes.txt``).
    multilabel : bool
        True when a clip may carry several labels (joined by ``;``).
    metric : str
        ``"accuracy"`` or ``"mAP"``.
    clip_seconds : float
        Clip length of the EVAR linear-evaluation protocol (crop/pad).
    sample_rate : int
        Sample rate of the distributed audio (clips are resampled on load).
    folds : list of str, optional
        Split names of a cross-validation task, None for a single split.

    Example
    -------
    >>> TaskInfo("toy", 2, False, "accuracy", 1.0, 16000).folds is None
    True
    """

    name: str
    num_classes: int
    multilabel: bool
    metric: str
    clip_seconds: float
    sample_rate: int
    folds: list[str] | None = None


@dataclass(frozen=True)
class Split:
    """One train/valid/test partition, as three CSV paths.

    Arguments
    ---------
    name : str
        ``"fold1"`` ... for cross-validation tasks, otherwise the split's
        origin (``"official"``, ``"filtered"``, ``"speaker_independent"``).
    train_csv, valid_csv, test_csv : str
        Absolute paths of the SpeechBrain CSVs.

    Example
    -------
    >>> Split("official", "a/train.csv", "a/valid.csv", "a/test.csv").name
    'official'
    """

    name: str
    train_csv: str
    valid_csv: str
    test_csv: str


@dataclass
class Item:
    """One clip before it is written out.

    Arguments
    ---------
    id : str
        Unique utterance ID.
    path : str
        Audio path (made absolute when written).
    labels : tuple of str
        Class names.
    group : str
        Fold, official subset or speaker the clip belongs to.
    duration : float
        Seconds, filled in by :func:`probe_audio`.

    Example
    -------
    >>> Item("a", "/x/a.wav", ("dog",)).label
    'dog'
    """

    id: str
    path: str
    labels: tuple = field(default_factory=tuple)
    group: str = ""
    duration: float = 0.0

    @property
    def label(self) -> str:
        """The CSV ``label`` field (labels joined by ``;``)."""
        return ";".join(self.labels)


class LayoutError(FileNotFoundError):
    """The data folder does not look like the official dataset layout."""


def require(root, rel, dataset, is_dir=False) -> Path:
    """Returns ``root/rel`` or raises :class:`LayoutError` naming it.

    Arguments
    ---------
    root : str or Path
        Data folder.
    rel : str
        Expected path relative to ``root``.
    dataset : str
        Display name used in the message.
    is_dir : bool
        Whether a folder (rather than a file) is expected.

    Returns
    -------
    Path
        The existing path.

    Example
    -------
    >>> try:
    ...     require("/nonexistent", "meta/esc50.csv", "ESC-50")
    ... except LayoutError as e:
    ...     print(e)
    ESC-50: meta/esc50.csv not found under /nonexistent
    """
    path = Path(root) / rel
    ok = path.is_dir() if is_dir else path.is_file()
    if not ok:
        suffix = "/" if is_dir and not rel.endswith("/") else ""
        raise LayoutError(f"{dataset}: {rel}{suffix} not found under {root}")
    return path


def find_file(root, name, dataset, subdirs=("", "meta", "metadata")) -> Path:
    """Finds ``name`` in ``root`` or one of its ``subdirs``.

    Arguments
    ---------
    root : str or Path
        Data folder.
    name : str
        File name.
    dataset : str
        Display name used in the error.
    subdirs : sequence of str
        Sub-folders of ``root`` searched in order (``""`` is ``root``).

    Returns
    -------
    Path
        The first match.

    Example
    -------
    >>> try:
    ...     find_file("/nonexistent", "iden_split.txt", "VoxCeleb1")
    ... except LayoutError as e:
    ...     print(str(e)[:38])
    VoxCeleb1: iden_split.txt not found un
    """
    for sub in subdirs:
        path = Path(root) / sub / name
        if path.is_file():
            return path
    where = ", ".join(f"{s}/" for s in subdirs if s)
    extra = f" (also looked in {where})" if where else ""
    raise LayoutError(f"{dataset}: {name} not found under {root}{extra}")


def read_meta_csv(path, columns, dataset, rel=None) -> list[dict]:
    r"""Reads a metadata CSV with a header, checking required columns.

    Arguments
    ---------
    path : str or Path
        CSV file.
    columns : sequence of str
        Columns that must be present.
    dataset : str
        Display name used in errors.
    rel : str, optional
        Name shown in errors (default: the file name).

    Returns
    -------
    list of dict
        The rows, values stripped of surrounding white space.

    Example
    -------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "m.csv")
    >>> _ = open(p, "w").write("a,b\n1,2\n")
    >>> read_meta_csv(p, ["a"], "toy")
    [{'a': '1', 'b': '2'}]
    """
    rel = rel or Path(path).name
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, skipinitialspace=True)
        header = [h.strip() for h in (reader.fieldnames or [])]
        lacking = [c for c in columns if c not in header]
        if lacking:
            raise LayoutError(
                f"{dataset}: {rel} lacks column(s) {', '.join(lacking)} "
                f"(found: {', '.join(header) or 'nothing'})"
            )
        rows = []
        for row in reader:
            rows.append(
                {
                    (k or "").strip(): (v or "").strip()
                    for k, v in row.items()
                    if k is not None
                }
            )
    return rows


def probe_audio(dataset, items, save_folder, missing=()) -> list[Item]:
    """Measures clip durations and drops missing or unreadable clips.

    Each skipped clip is listed once: the log gets one warning with the
    counts and the first few entries, ``save_folder/skipped.txt`` gets all.

    Arguments
    ---------
    dataset : str
        Display name used in messages.
    items : iterable of Item
        Candidate clips; ``duration`` is filled in for the usable ones.
    save_folder : str or Path
        Where ``skipped.txt`` is written.
    missing : iterable of str
        Clips already known to be missing (e.g. a segment without a file),
        listed with the others.

    Returns
    -------
    list of Item
        The usable clips, in input order.

    Example
    -------
    >>> import tempfile
    >>> probe_audio("toy", [Item("a", "/nonexistent.wav", ("x",))],
    ...             tempfile.mkdtemp())
    []
    """
    good, skipped = [], [f"missing\t{m}" for m in missing]
    for item in items:
        path = str(item.path)
        if not os.path.isfile(path):
            skipped.append(f"missing\t{path}")
            continue
        try:
            info = sf.info(path)
            duration = float(info.frames) / float(info.samplerate)
        except Exception as err:  # libsndfile raises several kinds
            msg = str(err).splitlines()[0] if str(err) else type(err).__name__
            skipped.append(f"unreadable\t{path}\t{msg}")
            continue
        if info.frames <= 0:
            skipped.append(f"unreadable\t{path}\tempty file")
            continue
        item.duration = duration
        good.append(item)
    save_folder = Path(save_folder)
    save_folder.mkdir(parents=True, exist_ok=True)
    report = save_folder / "skipped.txt"
    if skipped:
        report.write_text("\n".join(skipped) + "\n", encoding="utf-8")
        n_missing = sum(s.startswith("missing") for s in skipped)
        shown = "\n  ".join(skipped[:LOG_LIST_LIMIT])
        more = len(skipped) - LOG_LIST_LIMIT
        tail = f"\n  ... and {more} more" if more > 0 else ""
        logger.warning(
            "%s: skipping %d missing and %d unreadable clip(s) (full list in "
            "%s):\n  %s%s",
            dataset,
            n_missing,
            len(skipped) - n_missing,
            report,
            shown,
            tail,
        )
    elif report.exists():
        report.unlink()
    return good


def class_complete_holdout(items, fraction=0.1, seed=0):
    """Splits off a deterministic, class-complete ``fraction`` of ``items``.

    Every class with at least two clips gets at least one clip in the
    held-out part while keeping at least one in the rest. For single-label
    data each class contributes ``max(1, round(fraction * n))`` clips
    (stratified); for multi-label data rare classes are covered first, then
    random clips fill the held-out part up to ``round(fraction * N)``.

    Arguments
    ---------
    items : sequence of Item
        Clips to split (IDs must be unique).
    fraction : float
        Target share of the held-out part.
    seed : int
        Seed of the shuffle; the result only depends on the IDs, labels and
        seed, not on the input order.

    Returns
    -------
    rest : list of Item
        The remaining clips, sorted by ID.
    held : list of Item
        The held-out clips, sorted by ID.

    Example
    -------
    >>> xs = [Item(str(i), "", ("ab"[i % 2],)) for i in range(10)]
    >>> rest, held = class_complete_holdout(xs)
    >>> sorted(x.label for x in held), len(rest)
    (['a', 'b'], 8)
    """
    order = sorted(items, key=lambda it: it.id)
    random.Random(seed).shuffle(order)
    counts = Counter(lab for it in order for lab in it.labels)
    left = Counter(counts)  # clips of each class still in `rest`
    in_held = Counter()
    held_ids = set()
    multilabel = any(len(it.labels) > 1 for it in order)

    def movable(it):
        return it.id not in held_ids and all(left[lb] >= 2 for lb in it.labels)

    def move(it):
        held_ids.add(it.id)
        for lb in it.labels:
            left[lb] -= 1
            in_held[lb] += 1

    by_label = defaultdict(list)
    for it in order:
        for lb in it.labels:
            by_label[lb].append(it)
    # 1) coverage: one clip per class, rarest classes first
    for lb in sorted(counts, key=lambda c: (counts[c], c)):
        if counts[lb] < 2 or in_held[lb]:
            continue
        for it in by_label[lb]:
            if movable(it):
                move(it)
                break
    # 2) fill up to the target share
    if multilabel:
        target = round(fraction * len(order))
        for it in order:
            if len(held_ids) >= target:
                break
            if movable(it):
                move(it)
    else:
        for lb in sorted(by_label):
            quota = (
                max(1, round(fraction * counts[lb])) if counts[lb] >= 2 else 0
            )
            for it in by_label[lb]:
                if in_held[lb] >= quota:
                    break
                if movable(it):
                    move(it)
    rest = sorted((it for it in order if it.id not in held_ids), key=_id)
    held = sorted((it for it in order if it.id in held_ids), key=_id)
    return rest, held


def _id(item):
    return item.id


def write_csv(path, items) -> str:
    """Writes a SpeechBrain CSV (``ID,duration,wav,label``) sorted by ID.

    Arguments
    ---------
    path : str or Path
        Output file (parent folders are created).
    items : iterable of Item
        Clips with durations.

    Returns
    -------
    str
        The absolute path written.

    Example
    -------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "x.csv")
    >>> _ = write_csv(p, [Item("a", "/d/a.wav", ("x", "y"), duration=1.0)])
    >>> open(p).read().splitlines()[1]
    'a,1.0,/d/a.wav,x;y'
    """
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = sorted(items, key=_id)
    seen = Counter(it.id for it in rows)
    dup = [i for i, n in seen.items() if n > 1]
    if dup:
        raise ValueError(f"duplicate IDs in {path}: {dup[:5]}")
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["ID", "duration", "wav", "label"])
        for it in rows:
            wav = os.path.abspath(str(it.path))
            writer.writerow([it.id, round(it.duration, 6), wav, it.label])
    os.replace(tmp, path)
    return str(path)


def write_lines(path, lines) -> str:
    r"""Writes one entry per line (used for ``classes.txt``).

    Arguments
    ---------
    path : str or Path
        Output file.
    lines : iterable of str
        Entries.

    Returns
    -------
    str
        The absolute path written.

    Example
    -------
    >>> import tempfile, os
    >>> p = write_lines(os.path.join(tempfile.mkdtemp(), "c.txt"), ["a", "b"])
    >>> open(p).read()
    'a\nb\n'
    """
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return str(path)


def read_list(path) -> list[str]:
    """Reads non-empty, stripped lines of a text file.

    Arguments
    ---------
    path : str or Path
        Text file.

    Returns
    -------
    list of str
        The lines.

    Example
    -------
    >>> import tempfile, os
    >>> p = write_lines(os.path.join(tempfile.mkdtemp(), "c.txt"), ["a", ""])
    >>> read_list(p)
    ['a']
    """
    with open(path, encoding="utf-8") as f:
        return [s.strip() for s in f if s.strip()]


def write_split(save_folder, name, train, valid, test) -> Split:
    """Writes ``save_folder/name/{train,valid,test}.csv``.

    Arguments
    ---------
    save_folder : str or Path
        Output folder of the task.
    name : str
        Split name (also the sub-folder).
    train, valid, test : iterable of Item
        Clips of each part.

    Returns
    -------
    Split
        The written split.

    Example
    -------
    >>> import tempfile
    >>> it = Item("a", "/d/a.wav", ("x",), duration=1.0)
    >>> write_split(tempfile.mkdtemp(), "s", [it], [], []).name
    's'
    """
    folder = Path(save_folder) / name
    return Split(
        name=name,
        train_csv=write_csv(folder / "train.csv", train),
        valid_csv=write_csv(folder / "valid.csv", valid),
        test_csv=write_csv(folder / "test.csv", test),
    )


def fold_splits(dataset, items, folds, save_folder, seed=0, fraction=0.1):
    """Writes one split per fold: test = the fold, train/valid = the others.

    The validation set is a class-complete ``fraction`` of the training folds
    (:func:`class_complete_holdout`), as in the EVAR protocol.

    Arguments
    ---------
    dataset : str
        Display name used in messages.
    items : sequence of Item
        Usable clips; ``group`` is the fold name.
    folds : sequence of str
        Fold names in order (``"fold1"``, ...).
    save_folder : str or Path
        Output folder of the task.
    seed : int
        Seed of the validation draw.
    fraction : float
        Validation share of the training folds.

    Returns
    -------
    list of Split
        One per fold that has usable test clips.

    Example
    -------
    >>> import tempfile
    >>> xs = [Item(f"{f}{i}", "/d.wav", ("ab"[i % 2],), f"fold{f}", 1.0)
    ...       for f in (1, 2) for i in range(4)]
    >>> [s.name for s in fold_splits("toy", xs, ["fold1", "fold2"],
    ...                                tempfile.mkdtemp())]
    ['fold1', 'fold2']
    """
    splits = []
    for fold in folds:
        test = [it for it in items if it.group == fold]
        others = [it for it in items if it.group != fold]
        if not test or not others:
            logger.warning(
                "%s: %s has no usable clips; split skipped", dataset, fold
            )
            continue
        train, valid = class_complete_holdout(others, fraction, seed)
        splits.append(write_split(save_folder, fold, train, valid, test))
    if not splits:
        raise RuntimeError(f"{dataset}: no fold has usable clips")
    return splits


def require_usable(dataset, items, data_folder):
    """Raises when no clip survived probing.

    Arguments
    ---------
    dataset : str
        Display name used in the message.
    items : sequence of Item
        Usable clips.
    data_folder : str or Path
        Data folder named in the message.

    Example
    -------
    >>> require_usable("toy", [Item("a", "")], "/d")
    """
    if not items:
        raise RuntimeError(
            f"{dataset}: no usable audio found under {data_folder} "
            "(every listed clip is missing or unreadable; see skipped.txt)"
        )


def options_for(task, data_folder, seed, **extra) -> dict:
    """The options recorded in ``prepare.json`` for idempotency checks.

    Arguments
    ---------
    task : str
        Task name.
    data_folder : str or Path
        Data folder (made absolute).
    seed : int
        Seed.
    **extra
        Further options (JSON-serialisable).

    Returns
    -------
    dict
        The options.

    Example
    -------
    >>> options_for("esc50", "/d", 0)["seed"]
    0
    """
    opts = {
        "task": task,
        "data_folder": os.path.abspath(str(data_folder)),
        "seed": seed,
        "version": PREP_VERSION,
    }
    opts.update(
        {k: (str(v) if isinstance(v, Path) else v) for k, v in extra.items()}
    )
    return opts


def load_cached(save_folder, options):
    """Returns the recorded ``(TaskInfo, splits)`` if outputs are up to date.

    Arguments
    ---------
    save_folder : str or Path
        Output folder of the task.
    options : dict
        Options of the current call (see :func:`options_for`).

    Returns
    -------
    tuple or None
        ``(TaskInfo, list of Split)`` when ``prepare.json`` matches the
        options and every file it lists exists, else None.

    Example
    -------
    >>> load_cached("/nonexistent", {}) is None
    True
    """
    path = Path(save_folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("options") != json.loads(json.dumps(options)):
            return None
        info = TaskInfo(**record["info"])
        splits = [Split(**s) for s in record["splits"]]
    except (ValueError, KeyError, TypeError):
        return None
    files = [record.get("classes", "")]
    files += [p for s in splits for p in (s.train_csv, s.valid_csv, s.test_csv)]
    if not all(os.path.isfile(p) for p in files):
        return None
    logger.info(
        "%s: %s is up to date, skipping preparation", info.name, save_folder
    )
    return info, splits


def save_manifest(save_folder, options, info, splits, classes) -> tuple:
    """Writes ``classes.txt`` and ``prepare.json``; returns ``(info, splits)``.

    Arguments
    ---------
    save_folder : str or Path
        Output folder of the task.
    options : dict
        Options of the call (see :func:`options_for`).
    info : TaskInfo
        Task description.
    splits : list of Split
        Written splits.
    classes : sequence of str
        Class names in index order.

    Returns
    -------
    tuple
        ``(info, splits)``.

    Example
    -------
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> info = TaskInfo("toy", 1, False, "accuracy", 1.0, 16000)
    >>> save_manifest(d, {"seed": 0}, info, [], ["x"])[0].name
    'toy'
    >>> load_cached(d, {"seed": 0})[0] == info
    True
    """
    classes_path = write_lines(Path(save_folder) / "classes.txt", classes)
    record = {
        "options": options,
        "info": asdict(info),
        "splits": [asdict(s) for s in splits],
        "classes": classes_path,
    }
    path = Path(save_folder) / MANIFEST
    path.write_text(json.dumps(record, indent=2), encoding="utf-8")
    return info, splits


def check_labels(dataset, items, classes):
    """Drops clips whose labels are not in ``classes`` (logged once).

    Arguments
    ---------
    dataset : str
        Display name used in messages.
    items : sequence of Item
        Clips.
    classes : sequence of str
        Known classes.

    Returns
    -------
    list of Item
        Clips whose labels are all known.

    Example
    -------
    >>> len(check_labels("toy", [Item("a", "", ("x",))], ["x"]))
    1
    """
    known = set(classes)
    good = [it for it in items if it.labels and set(it.labels) <= known]
    if len(good) < len(items):
        logger.warning(
            "%s: %d clip(s) with unknown or no labels dropped",
            dataset,
            len(items) - len(good),
        )
    return good


def walk_audio(
    root, extensions: Sequence[str] = AUDIO_EXTENSIONS
) -> Iterable[Path]:
    """Yields audio files below ``root`` in sorted, deterministic order.

    Arguments
    ---------
    root : str or Path
        Folder to walk (symbolic links to folders are followed).
    extensions : sequence of str
        Lower-case suffixes to keep.

    Yields
    ------
    Path
        Audio files.

    Example
    -------
    >>> list(walk_audio("/nonexistent"))
    []
    """
    for dirpath, dirnames, filenames in os.walk(str(root), followlinks=True):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(tuple(extensions)) and not name.startswith(
                "."
            ):
                yield Path(dirpath) / name
