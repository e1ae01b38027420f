"""Manifest for a folder of unlabelled audio (any tree of audio files).

:func:`prepare_audio_folder` turns a directory tree into SpeechBrain CSV
manifests (``ID,duration,wav``) for pre-training. The manifest helpers here
(:func:`write_csv`, :func:`read_csv`, :func:`probe_files`, the option record
that makes preparation idempotent) are shared by the other preparation
modules.

Supported formats are those of the installed libsndfile (checked with
libsndfile 1.2.2 / soundfile 0.14: WAV, FLAC, OGG Vorbis/Opus and MP3 all
read, with exact frame counts and seeking). With libsndfile < 1.1, MP3 files
fail their header read and are listed as unreadable instead of crashing.
"""

import csv
import json
import logging
import multiprocessing
import os
import random
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

from aasp_sb.data.audio import AudioLoadError, audio_info

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS = ("wav", "flac", "ogg", "mp3")
MAX_LOGGED_PATHS = 20


def list_audio_files(data_folder, extensions=AUDIO_EXTENSIONS):
    """All audio files under ``data_folder``, sorted (deterministic).

    Hidden files and folders (name starting with ``.``, e.g. macOS ``._x.wav``
    resource forks) are ignored; extensions match case-insensitively.

    Arguments
    ---------
    data_folder : str
        Root of the tree.
    extensions : sequence of str
        Extensions without dot.

    Returns
    -------
    list of str
        Absolute paths, sorted.

    Example
    -------
    >>> root = getfixture("tmp_path")
    >>> (root / "sub").mkdir()
    >>> for name in ["b.WAV", "sub/a.flac", "notes.txt", ".hidden.wav"]:
    ...     _ = (root / name).write_bytes(b"")
    >>> [os.path.relpath(p, root) for p in list_audio_files(str(root))]
    ['b.WAV', 'sub/a.flac']
    """
    data_folder = os.path.abspath(str(data_folder))
    if not os.path.isdir(data_folder):
        raise FileNotFoundError(f"data folder '{data_folder}' does not exist")
    exts = {"." + e.lower().lstrip(".") for e in extensions}
    found = []
    for root, dirs, files in os.walk(data_folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name.startswith("."):
                continue
            if os.path.splitext(name)[1].lower() in exts:
                found.append(os.path.join(root, name))
    return sorted(found)


def _probe_one(path):
    """``(duration, error)`` of one file (module level: picklable)."""
    try:
        frames, sr, _ = audio_info(path)
    except AudioLoadError as err:
        return None, err.reason
    if frames <= 0:
        return None, "zero-length audio"
    return frames / sr, None


def _probe_chunk(paths):
    return [_probe_one(p) for p in paths]


def _pool_context():
    """``fork`` where the platform has it (instant start), else ``spawn``."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _probe_many(paths, num_workers=0, processes=0, progress=False, on_chunk=None):
    """Probes ``paths`` in processes, threads or this thread, in order.

    ``on_chunk(paths, results)`` is called as results arrive (in order).
    """
    from tqdm import tqdm

    paths = list(paths)
    out = []
    if not paths:
        return out
    workers = int(processes or 0) or int(num_workers or 0)
    size = max(1, min(256, len(paths) // (max(workers, 1) * 8) or 1))
    chunks = [paths[i : i + size] for i in range(0, len(paths), size)]
    bar = tqdm(
        total=len(paths),
        unit="file",
        desc="reading headers",
        disable=not progress,
        mininterval=1.0,
    )
    if processes and int(processes) > 0:
        pool = ProcessPoolExecutor(int(processes), mp_context=_pool_context())
    elif num_workers and int(num_workers) > 0:
        pool = ThreadPoolExecutor(max_workers=int(num_workers))
    else:
        pool = None
    try:
        results = pool.map(_probe_chunk, chunks) if pool else map(_probe_chunk, chunks)
        for chunk, res in zip(chunks, results):
            out.extend(res)
            if on_chunk is not None:
                on_chunk(chunk, res)
            bar.update(len(chunk))
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return out


def _stat(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


class HeaderCache:
    """Incremental header reads: a file is re-read only when new or changed.

    A JSON-lines journal of ``[path, size, mtime_ns, duration, error]``.
    :meth:`probe` stats every path, reuses the entries whose size and
    modification time match, reads the other headers and appends them to the
    journal as they arrive (a killed run keeps what it read; a torn last line
    is ignored), then rewrites the journal with the current paths only.

    Arguments
    ---------
    path : str
        The journal file (created on first use).

    Example
    -------
    >>> import numpy as np, soundfile as sf
    >>> tmp = getfixture("tmp_path")
    >>> wav = str(tmp / "a.wav")
    >>> sf.write(wav, np.zeros(8000, dtype="float32"), 16000)
    >>> cache = HeaderCache(str(tmp / "headers.jsonl"))
    >>> cache.probe([wav]), cache.num_read, cache.num_reused
    ([(0.5, None)], 1, 0)
    >>> again = HeaderCache(str(tmp / "headers.jsonl"))
    >>> again.probe([wav]), again.num_read, again.num_reused
    ([(0.5, None)], 0, 1)
    """

    def __init__(self, path):
        self.path = os.path.abspath(str(path))
        self.entries = {}
        self.num_read = self.num_reused = 0
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        p, size, mtime, dur, err = json.loads(line)
                    except (ValueError, TypeError):
                        continue  # torn line of a killed run
                    self.entries[p] = (size, mtime, dur, err)

    def probe(self, paths, num_workers=0, processes=0, progress=False):
        """``(duration or None, error or None)`` per path (see the class).

        Arguments
        ---------
        paths : list of str
            Audio files.
        num_workers : int
            Threads stat-ing files and reading headers (without processes).
        processes : int
            Processes reading headers (0: threads or this thread).
        progress : bool
            Progress bar on stderr.

        Returns
        -------
        list of tuple
            As :func:`probe_files`.
        """
        paths = list(paths)
        if num_workers and int(num_workers) > 0:
            with ThreadPoolExecutor(max_workers=int(num_workers)) as pool:
                stats = list(pool.map(_stat, paths, chunksize=256))
        else:
            stats = [_stat(p) for p in paths]
        out = [None] * len(paths)
        todo = []
        for i, (path, st) in enumerate(zip(paths, stats)):
            old = self.entries.get(path)
            if st is not None and old is not None and tuple(old[:2]) == st:
                out[i] = (old[2], old[3])
            else:
                todo.append(i)
        self.num_reused = len(paths) - len(todo)
        self.num_read = len(todo)
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        t0 = time.monotonic()
        with open(self.path, "a", encoding="utf-8") as journal:

            def record(chunk, results):
                for path, (dur, err) in zip(chunk, results):
                    st = _stat(path)  # after the read: a file being written
                    if st is None:  # is re-read next time
                        continue
                    self.entries[path] = (st[0], st[1], dur, err)
                    journal.write(json.dumps([path, st[0], st[1], dur, err]) + "\n")
                journal.flush()

            results = _probe_many(
                [paths[i] for i in todo],
                num_workers=num_workers,
                processes=processes,
                progress=progress,
                on_chunk=record,
            )
        for i, res in zip(todo, results):
            out[i] = res
        if todo:
            elapsed = time.monotonic() - t0
            logger.info(
                "read %d headers in %.1f s (%.0f files/s), %d unchanged reused",
                len(todo),
                elapsed,
                len(todo) / max(elapsed, 1e-9),
                self.num_reused,
            )
        self._compact(paths)
        return out

    def _compact(self, paths):
        keep = set(paths)
        tmp = f"{self.path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            for p in paths:
                entry = self.entries.get(p)
                if entry is not None:
                    f.write(json.dumps([p, *entry]) + "\n")
        os.replace(tmp, self.path)
        self.entries = {p: e for p, e in self.entries.items() if p in keep}


def probe_files(paths, num_workers=0, processes=0, cache=None, progress=False):
    """Reads the headers of ``paths``: duration or the reason for failure.

    Arguments
    ---------
    paths : list of str
        Audio files.
    num_workers : int
        Threads used to read headers (0: in this thread).
    processes : int
        Processes used to read headers (takes precedence over threads; for
        large corpora, where one process is CPU-bound on header parsing).
    cache : HeaderCache or str, optional
        Reuse the headers of unchanged files (see :class:`HeaderCache`).
    progress : bool
        Progress bar on stderr.

    Returns
    -------
    list of tuple
        One ``(duration_seconds or None, error_reason or None)`` per path.

    Example
    -------
    >>> import numpy as np, soundfile as sf
    >>> good = str(getfixture("tmp_path") / "good.wav")
    >>> sf.write(good, np.zeros(8000, dtype="float32"), 16000)
    >>> probe_files([good, "/nonexistent.wav"])[0]
    (0.5, None)
    """
    if cache is not None:
        if not isinstance(cache, HeaderCache):
            cache = HeaderCache(cache)
        return cache.probe(paths, num_workers, processes, progress)
    return _probe_many(paths, num_workers, processes, progress)


def write_csv(path, rows, fieldnames):
    """Writes a SpeechBrain CSV atomically (temporary file, then rename).

    Arguments
    ---------
    path : str
        Output CSV.
    rows : iterable of dict
        Rows; keys are a superset of ``fieldnames``.
    fieldnames : list of str
        Columns, ``ID`` first.

    Example
    -------
    >>> path = str(getfixture("tmp_path") / "m.csv")
    >>> write_csv(path, [{"ID": "a", "duration": 1.5, "wav": "/a.wav"}],
    ...           ["ID", "duration", "wav"])
    >>> read_csv(path)
    [{'ID': 'a', 'duration': '1.5', 'wav': '/a.wav'}]
    """
    path = str(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
    os.replace(tmp, path)


def read_csv(path):
    """Reads a CSV manifest into a list of dicts (strings), in file order.

    Arguments
    ---------
    path : str
        CSV with a header line.

    Returns
    -------
    list of dict
        The rows.
    """
    with open(str(path), newline="", encoding="utf-8") as f:
        return [dict(row) for row in csv.DictReader(f, skipinitialspace=True)]


def options_match(record_path, options, outputs):
    """True when ``outputs`` all exist and ``record_path`` holds ``options``.

    Arguments
    ---------
    record_path : str
        JSON written by :func:`save_options`.
    options : dict
        JSON-serialisable options of the current call.
    outputs : list of str
        Files the preparation writes.

    Returns
    -------
    bool
        Whether preparation can be skipped.

    Example
    -------
    >>> rec = str(getfixture("tmp_path") / "opts.json")
    >>> save_options(rec, {"a": 1})
    >>> options_match(rec, {"a": 1}, [rec]), options_match(rec, {"a": 2}, [rec])
    (True, False)
    """
    if not all(os.path.exists(str(p)) for p in outputs):
        return False
    try:
        with open(str(record_path), encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return False
    return saved == json.loads(json.dumps(options))


def save_options(record_path, options):
    """Writes the options record used by :func:`options_match`.

    Arguments
    ---------
    record_path : str
        JSON file.
    options : dict
        JSON-serialisable options.
    """
    record_path = str(record_path)
    tmp = f"{record_path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(options, f, indent=2, sort_keys=True)
    os.replace(tmp, record_path)


def log_path_list(
    paths_reasons, what, list_file=None, log_level=logging.WARNING
):
    """Logs a list of problem files once: a count, the first paths, a file.

    Arguments
    ---------
    paths_reasons : list of tuple
        ``(path_or_id, reason)`` pairs.
    what : str
        Description for the message, e.g. ``"unreadable files skipped"``.
    list_file : str, optional
        Where to write the complete list (one ``path<TAB>reason`` per line).
    log_level : int
        Logging level of the message.
    """
    if not paths_reasons:
        return
    shown = "\n".join(
        f"  {p}" + (f" ({r})" if r else "")
        for p, r in paths_reasons[:MAX_LOGGED_PATHS]
    )
    more = len(paths_reasons) - MAX_LOGGED_PATHS
    if more > 0:
        shown += f"\n  ... and {more} more"
    if list_file is not None:
        with open(str(list_file), "w", encoding="utf-8") as f:
            for p, r in paths_reasons:
                f.write(f"{p}\t{r or ''}\n")
        shown += f"\n  (full list in '{list_file}')"
    logger.log(log_level, "%d %s:\n%s", len(paths_reasons), what, shown)


def split_rows(rows, valid_fraction, seed=0, where="", valid_clips=None):
    """Deterministic random hold-out of a fraction or a number of ``rows``.

    Arguments
    ---------
    rows : list
        Items to split (order kept inside each part).
    valid_fraction : float
        Fraction in [0, 1) held out; when positive at least one item.
    seed : int
        Shuffle seed.
    where : str
        Name used in error messages.
    valid_clips : int, optional
        Hold out exactly this many items instead of a fraction (AudioSet
        scale: a few thousand, not a tenth of the data); needs
        ``valid_fraction=0``.

    Returns
    -------
    tuple of list
        ``(train_rows, valid_rows)``.

    Example
    -------
    >>> train, valid = split_rows(list(range(10)), 0.2, seed=0)
    >>> len(train), len(valid), sorted(train + valid) == list(range(10))
    (8, 2, True)
    >>> [len(part) for part in split_rows(list(range(10)), 0, valid_clips=3)]
    [7, 3]
    """
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(
            f"valid_fraction must be in [0, 1), got {valid_fraction}"
        )
    if valid_clips is not None:
        if valid_fraction > 0:
            raise ValueError(
                f"{where}: give valid_clips ({valid_clips}) or valid_fraction "
                f"({valid_fraction}), not both"
            )
        n_valid = int(valid_clips)
        if n_valid < 0:
            raise ValueError(f"valid_clips must be >= 0, got {valid_clips}")
        if n_valid and n_valid >= len(rows):
            raise ValueError(
                f"{where}: valid_clips={valid_clips} leaves no training clips "
                f"out of {len(rows)}; pass --valid_clips=0 (or fewer clips)"
            )
    elif valid_fraction == 0.0:
        n_valid = 0
    else:
        n_valid = max(1, int(round(valid_fraction * len(rows))))
        if n_valid >= len(rows):
            raise ValueError(
                f"{where}: valid_fraction={valid_fraction} leaves no training "
                f"clips out of {len(rows)}"
            )
    if n_valid == 0:
        return list(rows), []
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = set(order[:n_valid])
    train = [r for i, r in enumerate(rows) if i not in held]
    valid = [r for i, r in enumerate(rows) if i in held]
    return train, valid


def first_per_class(rows, num, label_key="label", where=""):
    """The first ``num`` rows of every class, in file order (a few-label subset).

    Arguments
    ---------
    rows : list of dict
        Manifest rows with a single label in ``label_key``.
    num : int
        Rows kept per class (at least 1).
    label_key : str
        Column holding the class.
    where : str
        Name used in error messages (the manifest).

    Returns
    -------
    list of dict
        The kept rows, in their original order.

    Example
    -------
    >>> rows = [{"ID": str(i), "label": "ab"[i % 2]} for i in range(6)]
    >>> [r["ID"] for r in first_per_class(rows, 2)]
    ['0', '1', '2', '3']
    """
    if int(num) < 1:
        raise ValueError(f"{where}: rows per class must be >= 1, got {num}")
    if not rows:
        raise ValueError(f"{where}: no rows")
    kept, taken = [], {}
    for row in rows:
        if label_key not in row:
            raise KeyError(f"{where}: no {label_key!r} column")
        label = row[label_key]
        if taken.get(label, 0) < num:
            kept.append(row)
            taken[label] = taken.get(label, 0) + 1
    short = sorted(c for c, n in taken.items() if n < num)
    if short:
        raise ValueError(
            f"{where}: fewer than {num} rows for class(es) {', '.join(short)}"
        )
    return kept


def unique_ids(paths, root):
    """IDs from paths relative to ``root`` (posix, extension dropped).

    Files that would share an ID (``a.wav`` and ``a.flac``) keep their
    extension.

    Arguments
    ---------
    paths : list of str
        Absolute paths under ``root``.
    root : str
        Common root.

    Returns
    -------
    list of str
        One unique ID per path.

    Example
    -------
    >>> unique_ids(["/r/x/a.wav", "/r/x/a.flac", "/r/b.wav"], "/r")
    ['x/a.wav', 'x/a.flac', 'b']
    """
    rel = [os.path.relpath(p, root).replace(os.sep, "/") for p in paths]
    stems = [os.path.splitext(r)[0] for r in rel]
    counts = {}
    for s in stems:
        counts[s] = counts.get(s, 0) + 1
    return [s if counts[s] == 1 else r for s, r in zip(stems, rel)]


def prepare_audio_folder(
    data_folder,
    save_folder,
    valid_fraction=0.0,
    extensions=AUDIO_EXTENSIONS,
    min_seconds=0.0,
    seed=0,
    csv_name="train.csv",
    valid_csv_name="valid.csv",
    num_workers=0,
    valid_clips=None,
    processes=0,
    header_cache=None,
    progress=False,
):
    """Writes manifests ``ID,duration,wav`` for every audio file of a tree.

    Files are listed recursively and sorted; each file's header is read with
    :func:`~aasp_sb.data.audio.audio_info`. Files whose header cannot be read
    (or that are empty) are left out and listed once in the log (the full list
    goes to ``<csv stem>_skipped.txt``); files shorter than ``min_seconds``
    are left out and counted. The call is idempotent: it returns at once when
    the CSVs exist and were written with the same options (recorded in
    ``<csv stem>_prep.json``). With ``header_cache`` (large corpora, see
    :mod:`aasp_sb.data.prepare`) the tree is listed again on every call and
    only new or changed files (size, modification time) have their header
    read, so added files are picked up.

    Arguments
    ---------
    data_folder : str
        Root of the audio tree.
    save_folder : str
        Where the CSVs go (created if needed).
    valid_fraction : float
        Fraction of files held out (random, seeded) into ``valid_csv_name``;
        0 writes only ``csv_name``.
    extensions : sequence of str
        Audio extensions, matched case-insensitively.
    min_seconds : float
        Minimum duration kept.
    seed : int
        Seed of the validation split.
    csv_name : str
        Training manifest file name.
    valid_csv_name : str
        Validation manifest file name (written when ``valid_fraction > 0``).
    num_workers : int
        Threads reading headers (useful on network file systems).
    valid_clips : int, optional
        Hold out this many files instead of ``valid_fraction``.
    processes : int
        Processes reading headers (0: threads / this process).
    header_cache : HeaderCache or str, optional
        Incremental header cache (see above).
    progress : bool
        Progress bar while reading headers.

    Returns
    -------
    dict
        ``{"train": csv_path, "valid": csv_path or None}``.

    Raises
    ------
    FileNotFoundError
        ``data_folder`` does not exist.
    RuntimeError
        No usable audio found (the message names the folder).

    Example
    -------
    >>> import numpy as np, soundfile as sf
    >>> root = getfixture("tmp_path")
    >>> (root / "audio").mkdir()
    >>> sf.write(str(root / "audio" / "x.wav"), np.zeros(1600), 16000)
    >>> out = prepare_audio_folder(str(root / "audio"), str(root / "save"))
    >>> read_csv(out["train"])[0]["ID"], read_csv(out["train"])[0]["duration"]
    ('x', '0.1')
    """
    data_folder = os.path.abspath(str(data_folder))
    save_folder = os.path.abspath(str(save_folder))
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
        "valid_fraction": float(valid_fraction),
        "valid_clips": None if valid_clips is None else int(valid_clips),
        "extensions": sorted(e.lower().lstrip(".") for e in extensions),
        "min_seconds": float(min_seconds),
        "seed": int(seed),
        "csv_name": csv_name,
        "valid_csv_name": valid_csv_name if valid_csv else None,
    }
    outputs = [train_csv] + ([valid_csv] if valid_csv else [])
    if header_cache is None and options_match(record, options, outputs):
        logger.info("%s already prepared in '%s', skipping", stem, save_folder)
        return {"train": train_csv, "valid": valid_csv}

    skipped_file = os.path.join(save_folder, f"{stem}_skipped.txt")
    if os.path.exists(skipped_file):
        os.remove(skipped_file)
    paths = list_audio_files(data_folder, extensions)
    probes = probe_files(
        paths,
        num_workers=num_workers,
        processes=processes,
        cache=header_cache,
        progress=progress,
    )
    ids = unique_ids(paths, data_folder)
    rows, bad, short = [], [], 0
    for path, uid, (duration, error) in zip(paths, ids, probes):
        if error is not None:
            bad.append((path, error))
        elif duration < min_seconds:
            short += 1
        else:
            rows.append(
                {"ID": uid, "duration": round(duration, 4), "wav": path}
            )
    os.makedirs(save_folder, exist_ok=True)
    log_path_list(
        bad,
        f"unreadable audio files skipped in '{data_folder}'",
        list_file=skipped_file,
    )
    if short:
        logger.info("%d files shorter than %.3f s left out", short, min_seconds)
    if not rows:
        raise RuntimeError(
            f"no usable audio in '{data_folder}': {len(paths)} files with "
            f"extensions {tuple(extensions)} found, {len(bad)} unreadable, "
            f"{short} shorter than {min_seconds} s"
        )
    train, valid = split_rows(
        rows, valid_fraction, seed, where=data_folder, valid_clips=valid_clips
    )
    fields = ["ID", "duration", "wav"]
    write_csv(train_csv, train, fields)
    if valid_csv:
        write_csv(valid_csv, valid, fields)
    save_options(record, options)
    logger.info(
        "prepared '%s': %d train, %d valid clips (%d unreadable, %d short)",
        data_folder,
        len(train),
        len(valid),
        len(bad),
        short,
    )
    return {"train": train_csv, "valid": valid_csv}
