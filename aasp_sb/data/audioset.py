"""AudioSet as users hold it: a tree of clips named by YouTube id.

Recognised file names (any folder depth, ``.wav``/``.flac`` by default)::

    Y--0bntG9i7E.wav            (PANNs / AudioSet-downloader style)
    --0bntG9i7E.flac
    --0bntG9i7E_30.000.wav      (id_start)
    --0bntG9i7E_30.000_40.000.wav

The optional official segment CSVs (``balanced_train_segments.csv``,
``unbalanced_train_segments.csv``, ``eval_segments.csv``) select a subset and
attach labels. Their format is three ``#`` comment lines, then rows
``YTID, start_seconds, end_seconds, "label1,label2"`` where labels are
ontology MIDs (e.g. ``/m/09x0r``). The manifest's ``label`` column joins the
MIDs with ``;`` (the package-wide multi-label separator); give
``class_labels_csv`` (``class_labels_indices.csv``: ``index,mid,display_name``)
to check every MID against the 527-class list.
"""

import csv
import logging
import os
import re

from aasp_sb.data.folder import (
    list_audio_files,
    log_path_list,
    options_match,
    probe_files,
    save_options,
    split_rows,
    write_csv,
)

logger = logging.getLogger(__name__)

_YTID_RE = re.compile(
    r"^Y?(?P<ytid>[A-Za-z0-9_-]{11})"
    r"(?:_(?P<start>\d+(?:\.\d+)?)(?:_(?P<end>\d+(?:\.\d+)?))?)?$"
)


def parse_ytid(filename):
    """YouTube id of an AudioSet clip file, or None when the name is not one.

    Arguments
    ---------
    filename : str
        File name or path.

    Returns
    -------
    str or None
        The 11-character id.

    Example
    -------
    >>> parse_ytid("Y--0bntG9i7E.wav")
    '--0bntG9i7E'
    >>> parse_ytid("/data/--0bntG9i7E_30.000.wav")
    '--0bntG9i7E'
    >>> parse_ytid("--0bntG9i7E.flac")
    '--0bntG9i7E'
    >>> parse_ytid("readme.wav") is None
    True
    """
    stem = os.path.splitext(os.path.basename(str(filename)))[0]
    match = _YTID_RE.match(stem)
    return match.group("ytid") if match else None


def parse_segments_csv(path):
    r"""Reads an official AudioSet segment CSV.

    Arguments
    ---------
    path : str
        ``*_segments.csv``: ``#`` comment lines, then
        ``YTID, start_seconds, end_seconds, "label1,label2"``.

    Returns
    -------
    list of dict
        ``{"ytid", "start", "end", "labels" (list of str)}`` in file order.

    Raises
    ------
    ValueError
        A malformed row (the message names the file and line).

    Example
    -------
    >>> path = getfixture("tmp_path") / "seg.csv"
    >>> _ = path.write_text(
    ...     "# Segments csv\n# num_ytids=1\n# YTID, start_seconds, "
    ...     'end_seconds, positive_labels\n--PJHxphWEs, 30.000, 40.000, '
    ...     '"/m/09x0r,/t/dd00088"\n')
    >>> parse_segments_csv(str(path))
    [{'ytid': '--PJHxphWEs', 'start': 30.0, 'end': 40.0, 'labels': ['/m/09x0r', '/t/dd00088']}]
    """
    path = str(path)
    out = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, skipinitialspace=True)
        for row in reader:
            if not row or not "".join(row).strip():
                continue
            if row[0].lstrip().startswith("#"):
                continue
            if len(row) < 4:
                raise ValueError(
                    f"{path}, line {reader.line_num}: expected 'YTID, start, "
                    f"end, labels', got {row}"
                )
            try:
                start, end = float(row[1]), float(row[2])
            except ValueError as err:
                raise ValueError(
                    f"{path}, line {reader.line_num}: bad times {row[1:3]}"
                ) from err
            # Unquoted label lists split into several fields: join them back.
            labels = ",".join(row[3:]).split(",")
            labels = [x.strip() for x in labels if x.strip()]
            out.append(
                {
                    "ytid": row[0].strip(),
                    "start": start,
                    "end": end,
                    "labels": labels,
                }
            )
    return out


def read_class_labels(path):
    r"""Reads ``class_labels_indices.csv`` (``index,mid,display_name``).

    Arguments
    ---------
    path : str
        The CSV shipped with AudioSet.

    Returns
    -------
    list of tuple
        ``(mid, display_name)`` ordered by index.

    Example
    -------
    >>> path = getfixture("tmp_path") / "classes.csv"
    >>> _ = path.write_text('index,mid,display_name\n0,/m/09x0r,"Speech"\n'
    ...                     '1,/m/05zppz,"Male speech, man speaking"\n')
    >>> read_class_labels(str(path))[1]
    ('/m/05zppz', 'Male speech, man speaking')
    """
    with open(str(path), newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, skipinitialspace=True))
    rows.sort(key=lambda r: int(r["index"]))
    return [(r["mid"].strip(), r["display_name"].strip()) for r in rows]


def _list_clip_files(data_folder, extensions):
    """``{ytid: [paths]}`` for every clip file under ``data_folder``."""
    by_id, unnamed = {}, 0
    for path in list_audio_files(data_folder, extensions):
        ytid = parse_ytid(path)
        if ytid is None:
            unnamed += 1
            continue
        by_id.setdefault(ytid, []).append(path)
    if unnamed:
        logger.info(
            "%d files in '%s' are not named by a YouTube id; ignored",
            unnamed,
            data_folder,
        )
    return by_id


def prepare_audioset(
    data_folder,
    save_folder,
    segments_csv=None,
    class_labels_csv=None,
    extensions=("wav", "flac"),
    csv_name="train.csv",
    valid_fraction=0.0,
    valid_csv_name="valid.csv",
    min_seconds=0.0,
    seed=0,
    num_workers=0,
    valid_clips=None,
    processes=0,
    header_cache=None,
    progress=False,
):
    """Writes an AudioSet manifest from a folder of clips.

    Without ``segments_csv`` every clip named by a YouTube id is listed
    (``ID,duration,wav``; for pre-training). With one or more segment CSVs,
    only the clips they list are kept and a ``label`` column is added (MIDs
    joined by ``;``). Clips listed in the CSV but missing on disk, and files
    whose header cannot be read, are counted and listed once in the log
    (complete lists in ``<csv stem>_missing.txt`` / ``_skipped.txt``).
    Idempotent (options recorded in ``<csv stem>_prep.json``). With
    ``header_cache`` (the full AudioSet, see :mod:`aasp_sb.data.prepare`)
    the tree is listed again on every call and only new or changed files
    have their header read.

    Arguments
    ---------
    data_folder : str
        Root of the clip tree.
    save_folder : str
        Where the manifest goes.
    segments_csv : str or list of str, optional
        Official segment CSV(s) selecting clips and giving labels; a clip in
        several CSVs gets the union of its labels.
    class_labels_csv : str, optional
        ``class_labels_indices.csv``; when given, unknown MIDs raise an error.
    extensions : sequence of str
        Audio extensions considered.
    csv_name : str
        Output manifest name.
    valid_fraction : float
        Fraction held out into ``valid_csv_name`` (0: none).
    valid_csv_name : str
        Validation manifest name.
    min_seconds : float
        Clips shorter than this are left out.
    seed : int
        Seed of the validation split.
    num_workers : int
        Threads reading headers.
    valid_clips : int, optional
        Hold out this many clips instead of ``valid_fraction``.
    processes : int
        Processes reading headers (0: threads / this process).
    header_cache : HeaderCache or str, optional
        Incremental header cache (:class:`~aasp_sb.data.folder.HeaderCache`).
    progress : bool
        Progress bar while reading headers.

    Returns
    -------
    dict
        ``{"train": csv_path, "valid": csv_path or None, "num_missing": int}``.

    Raises
    ------
    RuntimeError
        Nothing usable remains (the message names the folder and the CSV).

    Example
    -------
    >>> import numpy as np, soundfile as sf
    >>> root = getfixture("tmp_path")
    >>> (root / "clips").mkdir()
    >>> sf.write(str(root / "clips" / "Y--0bntG9i7E.wav"), np.zeros(160), 16000)
    >>> out = prepare_audioset(str(root / "clips"), str(root / "save"))
    >>> from aasp_sb.data.folder import read_csv
    >>> read_csv(out["train"])[0]["ID"]
    '--0bntG9i7E'
    """
    data_folder = os.path.abspath(str(data_folder))
    save_folder = os.path.abspath(str(save_folder))
    if segments_csv is None:
        csvs = []
    elif isinstance(segments_csv, (list, tuple)):
        csvs = [os.path.abspath(str(c)) for c in segments_csv]
    else:
        csvs = [os.path.abspath(str(segments_csv))]
    stem = os.path.splitext(csv_name)[0]
    train_csv = os.path.join(save_folder, csv_name)
    valid_csv = (
        os.path.join(save_folder, valid_csv_name)
        if valid_fraction > 0 or valid_clips
        else None
    )
    record = os.path.join(save_folder, f"{stem}_prep.json")
    options = {
        "data_folder": data_folder,
        "segments_csv": csvs,
        "class_labels_csv": (
            os.path.abspath(str(class_labels_csv)) if class_labels_csv else None
        ),
        "extensions": sorted(e.lower().lstrip(".") for e in extensions),
        "csv_name": csv_name,
        "valid_fraction": float(valid_fraction),
        "valid_clips": None if valid_clips is None else int(valid_clips),
        "valid_csv_name": valid_csv_name if valid_csv else None,
        "min_seconds": float(min_seconds),
        "seed": int(seed),
    }
    outputs = [train_csv] + ([valid_csv] if valid_csv else [])
    if header_cache is None and options_match(record, options, outputs):
        logger.info("%s already prepared in '%s', skipping", stem, save_folder)
        missing_file = os.path.join(save_folder, f"{stem}_missing.txt")
        num_missing = 0
        if os.path.exists(missing_file):
            with open(missing_file, encoding="utf-8") as f:
                num_missing = sum(1 for line in f if line.strip())
        return {
            "train": train_csv,
            "valid": valid_csv,
            "num_missing": num_missing,
        }
    for old in (f"{stem}_missing.txt", f"{stem}_skipped.txt"):
        if os.path.exists(os.path.join(save_folder, old)):
            os.remove(os.path.join(save_folder, old))

    by_id = _list_clip_files(data_folder, extensions)
    duplicates = [
        (ytid, ", ".join(p)) for ytid, p in by_id.items() if len(p) > 1
    ]
    log_path_list(
        duplicates,
        "YouTube ids with several files (the first in sorted order is used)",
        log_level=logging.INFO,
    )

    labels = None
    missing = []
    if csvs:
        labels = {}
        for seg_csv in csvs:
            if not os.path.isfile(seg_csv):
                raise FileNotFoundError(
                    f"segment CSV '{seg_csv}' does not exist"
                )
            for seg in parse_segments_csv(seg_csv):
                merged = labels.setdefault(seg["ytid"], [])
                merged.extend(x for x in seg["labels"] if x not in merged)
        if class_labels_csv:
            known = {mid for mid, _ in read_class_labels(class_labels_csv)}
            unknown = sorted({x for v in labels.values() for x in v} - known)
            if unknown:
                raise ValueError(
                    f"labels {unknown[:10]} in {csvs} are not in "
                    f"'{class_labels_csv}'"
                )
        selected = [y for y in labels if y in by_id]
        missing = [
            (y, "listed in segment CSV, not on disk")
            for y in labels
            if y not in by_id
        ]
        log_path_list(
            missing,
            f"clips of {[os.path.basename(c) for c in csvs]} missing in "
            f"'{data_folder}'",
            list_file=_ensure(save_folder, f"{stem}_missing.txt"),
        )
        not_listed = len(by_id) - len(selected)
        if not_listed:
            logger.info(
                "%d clips on disk are not in the segment CSVs", not_listed
            )
        selected.sort()
    else:
        selected = sorted(by_id)

    paths = [by_id[y][0] for y in selected]
    probes = probe_files(
        paths,
        num_workers=num_workers,
        processes=processes,
        cache=header_cache,
        progress=progress,
    )
    rows, bad, short = [], [], 0
    for ytid, path, (duration, error) in zip(selected, paths, probes):
        if error is not None:
            bad.append((path, error))
            continue
        if duration < min_seconds:
            short += 1
            continue
        row = {"ID": ytid, "duration": round(duration, 4), "wav": path}
        if labels is not None:
            row["label"] = ";".join(labels[ytid])
        rows.append(row)
    log_path_list(
        bad,
        f"unreadable AudioSet clips skipped in '{data_folder}'",
        list_file=_ensure(save_folder, f"{stem}_skipped.txt"),
    )
    if not rows:
        raise RuntimeError(
            f"no usable AudioSet clips in '{data_folder}'"
            + (f" for {csvs}" if csvs else "")
            + f": {len(by_id)} clip files found, {len(missing)} listed clips "
            f"missing, {len(bad)} unreadable, {short} too short"
        )
    train, valid = split_rows(
        rows, valid_fraction, seed, where=data_folder, valid_clips=valid_clips
    )
    fields = ["ID", "duration", "wav"] + (
        ["label"] if labels is not None else []
    )
    write_csv(train_csv, train, fields)
    if valid_csv:
        write_csv(valid_csv, valid, fields)
    save_options(record, options)
    logger.info(
        "prepared AudioSet '%s': %d train, %d valid clips (%d missing, "
        "%d unreadable, %d short)",
        data_folder,
        len(train),
        len(valid),
        len(missing),
        len(bad),
        short,
    )
    return {"train": train_csv, "valid": valid_csv, "num_missing": len(missing)}


def _ensure(folder, name):
    """``folder/name`` with ``folder`` created."""
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, name)
