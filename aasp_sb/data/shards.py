"""Pre-computed log-mel shards for AudioSet-scale pre-training.

Decoding and resampling millions of clips every epoch costs more CPU than a
GPU step; :func:`build_logmel_shards` does it once. Each clip goes through
:func:`~aasp_sb.data.audio.load_audio` and :class:`aasp_sb.features.LogMel`
(log-mel, **not** normalised -- normalisation stays in the model so that
statistics can change without rebuilding) and is appended as float16 frames
to ``shard_00000.npy``, ``shard_00001.npy``, ... (each ``[total_frames,
n_mels]``).

Layout of ``out_folder``::

    meta.json          options (front end, manifest fingerprint) + stats
    shard_00000.npy    float16 [frames, n_mels]
    shards.jsonl       one line per finished shard: its IDs, offsets, frame
                       counts, skipped clips and .npy size (appended last)
    index.npy          compact index, one record per clip (see INDEX_DTYPE)
    ids.npy            uint8: the clip IDs, UTF-8, concatenated
    index.csv          ID,shard,offset,num_frames (the same, human-readable)
    skipped.txt        path<TAB>reason of clips that could not be read

Shard ``k`` holds manifest rows ``[k * shard_size, (k + 1) * shard_size)``,
so shards are independent: ``num_workers`` processes build different shards
at once, and a killed build resumes by building only the shards without a
complete ``shards.jsonl`` line (each ``.npy`` is renamed into place before
its line is written). The result does not depend on ``num_workers`` nor on
interruptions. One file per shard plus a few: file creation, not data, is
what costs on many file systems.

Costs that do not grow with the dataset: :class:`LogMelShardDataset` keeps at
most ``max_open_files`` shard files open per process (a least-recently-used
cache; a crop is one ``os.pread`` of its frames) and holds the index as
memory-mapped numpy arrays (about 24 bytes per clip plus the ID bytes, shared
by every DataLoader worker and every rank of a node through the page cache)
instead of one Python string and dict per clip.
"""

import collections
import csv
import hashlib
import io
import json
import logging
import math
import os
import time

import numpy as np
import torch

from aasp_sb.data.audio import (
    CROP_MODES,
    PAD_MODES,
    AudioLoadError,
    load_audio,
    window_start,
)
from aasp_sb.data.folder import log_path_list, read_csv, write_csv
from aasp_sb.features import Features, LogMel

logger = logging.getLogger(__name__)

DTYPE = np.float16
SILENCE = math.log(torch.finfo(torch.float32).eps)  # LogMel of digital silence
INDEX_DTYPE = np.dtype(
    [
        ("shard", "<i4"),
        ("num_frames", "<i4"),
        ("offset", "<i8"),  # first frame of the clip in its shard
        ("id_end", "<i8"),  # end of the clip's ID in ids.npy
    ]
)
MAX_OPEN_FILES = 64
JOURNAL = "shards.jsonl"


def _shard_name(k, ext):
    return f"shard_{k:05d}.{ext}"


def _front_end_config(logmel):
    mel = logmel.melspec
    return {
        "sample_rate": int(logmel.sample_rate),
        "n_fft": int(mel.n_fft),
        "win_length": int(mel.win_length),
        "hop_length": int(mel.hop_length),
        "n_mels": int(logmel.n_mels),
        "f_min": float(mel.f_min),
        "f_max": float(mel.f_max) if mel.f_max is not None else None,
        "eps": float(logmel.eps),
        "mel_scale": getattr(logmel, "mel_scale", "htk"),
        "mel_norm": getattr(logmel, "mel_norm", None),
    }


def check_front_end(folder, logmel):
    """Refuses shards whose log-mel was computed with another front end than ``logmel``.

    Shards built before the front end recorded its mel settings were made
    with torchaudio's defaults (``htk``, no normalisation) and are compared as
    such.

    Arguments
    ---------
    folder : str
        Shard folder (with ``meta.json``).
    logmel : aasp_sb.features.LogMel
        The front end the run uses.

    Raises
    ------
    ValueError
        Naming the folder and the differing settings.
    """
    with open(os.path.join(str(folder), "meta.json"), encoding="utf-8") as f:
        saved = json.load(f)["options"]["front_end"]
    if set(saved) <= {"n_mels"}:  # written from given features (no front end known)
        return
    saved = {"mel_scale": "htk", "mel_norm": None, **saved}
    want = json.loads(json.dumps(_front_end_config(logmel)))
    diff = {k: (saved.get(k), v) for k, v in want.items() if saved.get(k) != v}
    if diff:
        raise ValueError(
            f"shards in '{folder}' were built with another front end than the run's "
            f"(shards, run): {diff}; rebuild them with this YAML's front end"
        )


def _read_id_wav(manifest_csv):
    """``(ids, paths)`` of a manifest (two lists; no per-row dicts)."""
    with open(manifest_csv, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, skipinitialspace=True)
        header = next(reader, None)
        if header is None:
            return [], []
        if "ID" not in header or "wav" not in header:
            raise ValueError(
                f"manifest '{manifest_csv}' needs 'ID' and 'wav' columns"
            )
        i_id, i_wav = header.index("ID"), header.index("wav")
        ids, paths = [], []
        for row in reader:
            if not row:
                continue
            ids.append(row[i_id])
            paths.append(row[i_wav])
    return ids, paths


def _fingerprint(ids, paths):
    h = hashlib.sha1()
    for uid, path in zip(ids, paths):
        h.update(f"{uid}\t{path}\n".encode())
    return h.hexdigest()


class _Journal:
    """``shards.jsonl``: one line per finished shard, appended by one process.

    A line holds the shard's clip IDs, offsets, frame counts, skipped clips
    and the size of its ``.npy``; a shard counts as built only when its line
    is complete and its ``.npy`` has that size, so a build killed at any
    point resumes with the shards it had finished.
    """

    def __init__(self, folder):
        self.path = os.path.join(folder, JOURNAL)
        self.done, self.file, self.torn = {}, None, False
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    self.torn = not line.endswith("\n")
                    try:
                        rec = json.loads(line)
                        k = int(rec["shard"])
                        size = int(rec["npy_size"])
                    except (ValueError, TypeError, KeyError):
                        continue  # torn last line of a killed build
                    npy = os.path.join(folder, _shard_name(k, "npy"))
                    if os.path.exists(npy) and os.path.getsize(npy) == size:
                        self.done[k] = rec

    def add(self, rec):
        if self.file is None:
            self.file = open(self.path, "a", encoding="utf-8")
            if self.torn:  # end the torn line so that this one stays whole
                self.file.write("\n")
        self.file.write(json.dumps(rec, separators=(",", ":")) + "\n")
        self.file.flush()  # a killed process loses nothing flushed
        self.done[rec["shard"]] = rec

    def close(self):
        if self.file is not None:
            self.file.close()
            self.file = None

    def adopt_legacy(self, folder, num_shards):
        """Journals shards finished by a build of the former layout.

        That layout marked a finished shard with ``shard_k.csv`` (``ID,
        offset, num_frames``) next to ``shard_k.npy`` and ``shard_k.skipped``.
        """
        for k in range(num_shards):
            csv_path = os.path.join(folder, _shard_name(k, "csv"))
            npy = os.path.join(folder, _shard_name(k, "npy"))
            if k in self.done or not (
                os.path.exists(csv_path) and os.path.exists(npy)
            ):
                continue
            rows = read_csv(csv_path)
            skipped = []
            skip_file = os.path.join(folder, _shard_name(k, "skipped"))
            if os.path.exists(skip_file):
                with open(skip_file, encoding="utf-8") as f:
                    skipped = [
                        list(line.rstrip("\n").partition("\t")[::2]) for line in f
                    ]
            self.add(
                {
                    "shard": k,
                    "ids": [r["ID"] for r in rows],
                    "offsets": [int(r["offset"]) for r in rows],
                    "frames": [int(r["num_frames"]) for r in rows],
                    "skipped": skipped,
                    "npy_size": os.path.getsize(npy),
                }
            )


class _ShardJobs(torch.utils.data.Dataset):
    """Item ``j`` builds shard ``pending[j]`` and returns its journal record."""

    def __init__(self, folder, pending, ids, paths, shard_size, logmel, max_s):
        self.folder, self.pending = folder, pending
        self.ids, self.paths = ids, paths
        self.shard_size, self.logmel, self.max_seconds = shard_size, logmel, max_s

    def __len__(self):
        return len(self.pending)

    def __getitem__(self, j):
        k = self.pending[j]
        writer = _ShardWriter(self.folder, k, self.logmel.n_mels)
        first = k * self.shard_size
        for pos in range(first, min(len(self.ids), first + self.shard_size)):
            path = self.paths[pos]
            try:
                wav = load_audio(
                    path, self.logmel.sample_rate, max_seconds=self.max_seconds
                )
            except AudioLoadError as err:
                writer.skipped.append((path, err.reason))
                continue
            with torch.no_grad():
                feats = self.logmel(wav.unsqueeze(0))[0].numpy().astype(DTYPE)
            if not np.isfinite(feats).all():
                writer.skipped.append((path, "non-finite log-mel"))
                continue
            writer.append(self.ids[pos], feats)
        return writer.finish()


def _identity(x):
    return x


def _single_thread(_):
    torch.set_num_threads(1)


def build_logmel_shards(
    manifest_csv,
    out_folder,
    shard_size=512,
    features=None,
    num_workers=0,
    max_seconds=None,
    progress=False,
):
    """Converts a manifest's clips to float16 log-mel shards (resumable).

    Arguments
    ---------
    manifest_csv : str
        SpeechBrain CSV with ``ID`` and ``wav`` columns.
    out_folder : str
        Output folder (see the module docstring for its layout).
    shard_size : int
        Manifest rows per shard (a shard of 512 ten-second clips is about
        80 MB).
    features : LogMel, optional
        Log-mel extractor (default :class:`~aasp_sb.features.LogMel`); a
        :class:`~aasp_sb.features.Features` is replaced by its un-normalised
        ``logmel``.
    num_workers : int
        Processes building shards in parallel (0: in this process). Each
        builds whole shards, so the output is the same for any value.
    max_seconds : float, optional
        Keep at most this much of each clip (its start).
    progress : bool
        Show a progress bar (shards done, clips/s) on stderr.

    Returns
    -------
    dict
        ``{"index": path of index.csv, "num_clips", "num_skipped",
        "num_shards"}``.

    Raises
    ------
    ValueError
        ``out_folder`` holds shards built with other options or another
        manifest, or the manifest lacks ``ID``/``wav`` columns.
    RuntimeError
        No clip could be read.

    Example
    -------
    >>> import soundfile as sf
    >>> from aasp_sb.data.folder import write_csv
    >>> tmp = getfixture("tmp_path")
    >>> sf.write(str(tmp / "a.wav"), np.zeros(16000, dtype="float32"), 16000)
    >>> write_csv(str(tmp / "m.csv"), [{"ID": "a", "wav": str(tmp / "a.wav")}],
    ...           ["ID", "wav"])
    >>> out = build_logmel_shards(str(tmp / "m.csv"), str(tmp / "shards"))
    >>> out["num_clips"], out["num_skipped"], out["num_shards"]
    (1, 0, 1)
    """
    out_folder = os.path.abspath(str(out_folder))
    manifest_csv = os.path.abspath(str(manifest_csv))
    if isinstance(features, Features):
        features = features.logmel
    logmel = features if features is not None else LogMel()
    ids, paths = _read_id_wav(manifest_csv)
    shard_size = int(shard_size)
    if shard_size <= 0:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    num_shards = math.ceil(len(ids) / shard_size)
    options = {
        "manifest": manifest_csv,
        "manifest_sha1": _fingerprint(ids, paths),
        "num_rows": len(ids),
        "shard_size": shard_size,
        "max_seconds": None if max_seconds is None else float(max_seconds),
        "dtype": np.dtype(DTYPE).name,
        "front_end": _front_end_config(logmel),
    }
    os.makedirs(out_folder, exist_ok=True)
    meta_path = os.path.join(out_folder, "meta.json")
    if os.path.exists(meta_path):
        with open(meta_path, encoding="utf-8") as f:
            saved = json.load(f).get("options")
        if saved != json.loads(json.dumps(options)):
            raise ValueError(
                f"'{out_folder}' holds shards built with other options or "
                f"another manifest ({meta_path}); use a new folder"
            )
    else:
        _write_json(meta_path, {"options": options})

    journal = _Journal(out_folder)
    journal.adopt_legacy(out_folder, num_shards)
    pending = [k for k in range(num_shards) if k not in journal.done]
    if len(pending) < num_shards:
        logger.info(
            "'%s': %d of %d shards already built, resuming",
            out_folder,
            num_shards - len(pending),
            num_shards,
        )
    jobs = _ShardJobs(
        out_folder, pending, ids, paths, shard_size, logmel, max_seconds
    )
    if num_workers and num_workers > 0 and len(pending) > 1:
        results = torch.utils.data.DataLoader(
            jobs,
            batch_size=None,
            num_workers=min(int(num_workers), len(pending)),
            collate_fn=_identity,
            worker_init_fn=_single_thread,
            prefetch_factor=1,
            in_order=False,
        )
    else:
        results = (jobs[j] for j in range(len(jobs)))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the workers: same bits for any num_workers
    try:
        _run_jobs(results, len(pending), journal, progress, out_folder)
    finally:
        torch.set_num_threads(threads)
    del jobs, results
    return _merge_index(out_folder, num_shards, journal, manifest_csv, options)


def _run_jobs(results, total, journal, progress, folder):
    """Consumes shard jobs, showing progress (bar and/or log lines)."""
    from tqdm import tqdm

    bar = tqdm(
        total=total, unit="shard", disable=not progress, desc="log-mel shards"
    )
    t0 = last = time.monotonic()
    done = clips = 0
    for rec in results:
        journal.add(rec)
        done += 1
        clips += len(rec["ids"])
        bar.update(1)
        now = time.monotonic()
        if now - last > 60 or done == total:
            last = now
            logger.info(
                "'%s': %d/%d shards built (%.1f clips/s)",
                folder,
                done,
                total,
                clips / max(now - t0, 1e-9),
            )
    bar.close()


def _merge_index(folder, num_shards, journal, manifest_csv, options):
    """Joins the shards' journal lines into index.npy/ids.npy/index.csv."""
    journal.close()
    parts, id_bytes, skipped = [], [], []
    end = 0
    for k in range(num_shards):
        rec = journal.done.get(k)
        if rec is None:
            raise RuntimeError(f"shard {k} of '{folder}' was not built")
        raw = [uid.encode("utf-8") for uid in rec["ids"]]
        part = np.empty(len(raw), dtype=INDEX_DTYPE)
        part["shard"] = k
        part["num_frames"] = rec["frames"]
        part["offset"] = rec["offsets"]
        part["id_end"] = end + np.cumsum([len(r) for r in raw], dtype=np.int64)
        end = int(part["id_end"][-1]) if len(raw) else end
        parts.append(part)
        id_bytes.append(b"".join(raw))
        skipped.extend(tuple(x) for x in rec["skipped"])
    log_path_list(
        skipped,
        f"clips of '{manifest_csv}' skipped while building shards",
        list_file=os.path.join(folder, "skipped.txt"),
    )
    index = np.concatenate(parts) if parts else np.empty(0, INDEX_DTYPE)
    if not len(index):
        raise RuntimeError(
            f"no clip of '{manifest_csv}' could be read ({len(skipped)} skipped)"
        )
    _save_npy(os.path.join(folder, "index.npy"), index)
    _save_npy(
        os.path.join(folder, "ids.npy"),
        np.frombuffer(b"".join(id_bytes), dtype=np.uint8),
    )
    index_path = os.path.join(folder, "index.csv")
    csv_rows = (
        {"ID": uid, "shard": k, "offset": off, "num_frames": n}
        for k in range(num_shards)
        for uid, off, n in zip(
            journal.done[k]["ids"],
            journal.done[k]["offsets"],
            journal.done[k]["frames"],
        )
    )
    write_csv(index_path, csv_rows, ["ID", "shard", "offset", "num_frames"])
    stats = {
        "num_clips": len(index),
        "num_skipped": len(skipped),
        "num_shards": num_shards,
        "num_frames": int(index["num_frames"].sum()),
    }
    _write_json(
        os.path.join(folder, "meta.json"), {"options": options, "stats": stats}
    )
    logger.info(
        "log-mel shards in '%s': %d clips, %d skipped, %d shards",
        folder,
        stats["num_clips"],
        stats["num_skipped"],
        num_shards,
    )
    return {
        "index": index_path,
        "num_clips": stats["num_clips"],
        "num_skipped": stats["num_skipped"],
        "num_shards": num_shards,
    }


def _save_npy(path, array):
    tmp = f"{path}.tmp{os.getpid()}.npy"
    np.save(tmp, array)
    os.replace(tmp, path)


class _ShardWriter:
    """One shard: collects clips (spilling to a raw file when large).

    :meth:`finish` writes the ``.npy`` and returns the journal record.
    """

    SPILL_BYTES = 64 << 20

    def __init__(self, folder, k, n_mels):
        self.folder, self.k, self.n_mels = folder, k, n_mels
        self.raw_path = os.path.join(folder, _shard_name(k, "raw.tmp"))
        self.raw = None
        self.chunks, self.buffered = [], 0
        self.ids, self.offsets, self.frames = [], [], []
        self.skipped, self.total = [], 0

    def append(self, uid, feats):
        if feats.ndim != 2 or feats.shape[1] != self.n_mels:
            raise ValueError(
                f"{uid}: features of shape {tuple(feats.shape)}, expected "
                f"[frames, {self.n_mels}]"
            )
        data = np.ascontiguousarray(feats, dtype=DTYPE).tobytes()
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > self.SPILL_BYTES:
            if self.raw is None:
                self.raw = open(self.raw_path, "wb")
            self.raw.write(b"".join(self.chunks))
            self.chunks, self.buffered = [], 0
        self.ids.append(uid)
        self.offsets.append(self.total)
        self.frames.append(int(feats.shape[0]))
        self.total += int(feats.shape[0])

    def finish(self):
        npy = os.path.join(self.folder, _shard_name(self.k, "npy"))
        tmp = npy + ".tmp.npy"
        shape = (self.total, self.n_mels)
        if self.raw is None:
            data = np.frombuffer(b"".join(self.chunks), dtype=DTYPE)
            np.save(tmp, data.reshape(shape))
        else:
            self.raw.write(b"".join(self.chunks))
            self.raw.close()
            src = np.memmap(self.raw_path, dtype=DTYPE, mode="r", shape=shape)
            dst = np.lib.format.open_memmap(
                tmp, mode="w+", dtype=DTYPE, shape=shape
            )
            step = 1 << 20
            for i in range(0, self.total, step):
                dst[i : i + step] = src[i : i + step]
            dst.flush()
            del src, dst
            os.remove(self.raw_path)
        self.chunks = []
        os.replace(tmp, npy)
        if os.path.exists(self.raw_path):  # left by an interrupted build
            os.remove(self.raw_path)
        logger.debug(
            "shard %d: %d clips, %d frames, %d skipped",
            self.k,
            len(self.ids),
            self.total,
            len(self.skipped),
        )
        return {
            "shard": self.k,
            "ids": self.ids,
            "offsets": self.offsets,
            "frames": self.frames,
            "skipped": self.skipped,
            "npy_size": os.path.getsize(npy),
        }


def write_feature_shards(clips, out_folder, shard_size=512, front_end=None):
    """Writes shards from features already computed (no audio decoding).

    For features from another front end, and for tests and benchmarks at
    scale. The folder reads with :class:`LogMelShardDataset` like one of
    :func:`build_logmel_shards`.

    Arguments
    ---------
    clips : iterable of tuple
        ``(ID, array [frames, n_mels])`` (stored as float16).
    out_folder : str
        New (or empty) output folder.
    shard_size : int
        Clips per shard.
    front_end : dict, optional
        Recorded in ``meta.json`` as the front end (default: only
        ``n_mels``, from the first clip).

    Returns
    -------
    dict
        As :func:`build_logmel_shards`.

    Example
    -------
    >>> tmp = getfixture("tmp_path")
    >>> clips = [(f"c{i}", np.full((3 + i, 4), i)) for i in range(5)]
    >>> write_feature_shards(clips, str(tmp / "s"), shard_size=2)["num_shards"]
    3
    >>> LogMelShardDataset(str(tmp / "s"))[4]["feats"].shape
    torch.Size([7, 4])
    """
    out_folder = os.path.abspath(str(out_folder))
    shard_size = int(shard_size)
    if shard_size <= 0:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    if os.path.exists(out_folder) and os.listdir(out_folder):
        raise ValueError(f"'{out_folder}' is not empty; use a new folder")
    os.makedirs(out_folder, exist_ok=True)
    journal = _Journal(out_folder)
    writer, n, k = None, 0, -1
    for uid, feats in clips:
        n += 1
        feats = np.asarray(feats)
        if writer is None or len(writer.ids) == shard_size:
            if writer is not None:
                journal.add(writer.finish())
            k += 1
            if front_end is None and k == 0:
                front_end = {"n_mels": int(feats.shape[-1])}
            writer = _ShardWriter(out_folder, k, int(front_end["n_mels"]))
        writer.append(str(uid), feats)
    if writer is not None:
        journal.add(writer.finish())
    options = {
        "source": "features",
        "num_rows": n,
        "shard_size": shard_size,
        "dtype": np.dtype(DTYPE).name,
        "front_end": front_end or {"n_mels": 0},
    }
    return _merge_index(out_folder, k + 1, journal, out_folder, options)


def _write_json(path, obj):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


class ClipIds:
    """The clip IDs of a shard set as one byte array (a read-only sequence).

    ``ids[i]`` decodes one ID on demand, so a million IDs cost their UTF-8
    bytes plus 8 bytes each, not a million Python strings.

    Arguments
    ---------
    blob : numpy.ndarray
        uint8, the IDs concatenated.
    ends : numpy.ndarray
        int64, the end of ID ``i`` in ``blob``.

    Example
    -------
    >>> ids = ClipIds(np.frombuffer(b"abcde", np.uint8), np.array([2, 5]))
    >>> len(ids), ids[1], list(ids), ids.index("ab")
    (2, 'cde', ['ab', 'cde'], 0)
    """

    def __init__(self, blob, ends):
        self.blob, self.ends = blob, ends

    def __len__(self):
        return len(self.ends)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"clip index {i} out of range")
        start = int(self.ends[i - 1]) if i else 0
        return self.blob[start : int(self.ends[i])].tobytes().decode("utf-8")

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def index(self, uid):
        """Position of ``uid`` (a linear scan of the bytes).

        Arguments
        ---------
        uid : str
            A clip ID.

        Returns
        -------
        int
            Its index.
        """
        raw = np.frombuffer(str(uid).encode("utf-8"), dtype=np.uint8)
        lengths = np.diff(self.ends, prepend=0)
        for i in np.flatnonzero(lengths == len(raw)):
            start = int(self.ends[i]) - len(raw)
            if np.array_equal(self.blob[start : int(self.ends[i])], raw):
                return int(i)
        raise ValueError(f"{uid!r} is not a clip of this shard set")


def _pread(fd, num, pos):
    if hasattr(os, "pread"):
        return os.pread(fd, num, pos)
    os.lseek(fd, pos, os.SEEK_SET)  # pragma: no cover - Windows
    return os.read(fd, num)


class _ShardFiles:
    """At most ``max_open`` open shard files (LRU); reads rows by ``pread``.

    ``pread`` does not move a file offset, so descriptors inherited by
    forked DataLoader workers stay valid. The ``.npy`` header of each shard
    is parsed once (two integers kept per shard), so re-opening an evicted
    shard costs one ``open``.
    """

    def __init__(self, folder, n_mels, max_open):
        self.folder, self.n_mels = folder, n_mels
        self.max_open = max(1, int(max_open))
        self.fds = collections.OrderedDict()  # k -> fd
        self.headers = {}  # k -> (data offset, rows)

    def _path(self, k):
        return os.path.join(self.folder, _shard_name(k, "npy"))

    def _fd(self, k):
        fd = self.fds.get(k)
        if fd is not None:
            self.fds.move_to_end(k)
            return fd
        while len(self.fds) >= self.max_open:
            os.close(self.fds.popitem(last=False)[1])
        fd = os.open(self._path(k), os.O_RDONLY | getattr(os, "O_BINARY", 0))
        self.fds[k] = fd
        return fd

    def _header(self, k, fd):
        path = self._path(k)
        head = io.BytesIO(_pread(fd, 65536, 0))
        try:
            version = np.lib.format.read_magic(head)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(head)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(head)
        except (ValueError, OSError) as err:
            raise ValueError(f"shard '{path}' is not a .npy file: {err}") from err
        if dtype != np.dtype(DTYPE) or len(shape) != 2 or shape[1] != self.n_mels:
            raise ValueError(
                f"shard '{path}' holds {dtype} {shape}, expected float16 "
                f"[frames, {self.n_mels}]"
            )
        self.headers[k] = (head.tell(), shape[0])
        return self.headers[k]

    @property
    def open(self):
        """The open descriptors, ``{shard: fd}``."""
        return self.fds

    def rows(self, k, start, num):
        """Frames ``[start, start + num)`` of shard ``k``, float32."""
        fd = self._fd(k)
        data_offset, total = self.headers.get(k) or self._header(k, fd)
        if start < 0 or start + num > total:
            raise ValueError(
                f"frames [{start}, {start + num}) outside shard "
                f"'{self._path(k)}' ({total} frames): index and shard disagree"
            )
        row_bytes = self.n_mels * 2
        raw = _pread(fd, num * row_bytes, data_offset + start * row_bytes)
        if len(raw) != num * row_bytes:
            raise OSError(f"shard '{self._path(k)}' is truncated")
        out = np.frombuffer(raw, dtype=DTYPE).reshape(num, self.n_mels)
        return out.astype(np.float32)

    def close(self):
        """Closes every open descriptor."""
        while self.fds:
            os.close(self.fds.popitem()[1])

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass


def _index_from_csv(path):
    """Compact index arrays from an ``index.csv`` (folders built before 0.x)."""
    records, blob, end = [], [], 0
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            raw = row["ID"].encode("utf-8")
            end += len(raw)
            blob.append(raw)
            records.append(
                (int(row["shard"]), int(row["num_frames"]), int(row["offset"]), end)
            )
    return (
        np.array(records, dtype=INDEX_DTYPE),
        np.frombuffer(b"".join(blob), dtype=np.uint8),
    )


class LogMelShardDataset(torch.utils.data.Dataset):
    """Crops of pre-computed log-mel, read from shard files.

    Items are dicts ``{"id": str, "feats": float32 [crop_frames, n_mels],
    "length": float}`` where ``length`` is the relative length of real frames
    (1.0 unless ``pad="zero"`` padded a short clip). Fixed-size crops collate
    with torch's default collate; :func:`collate_shard_items` also pads
    whole clips (``crop_frames=None``).

    Randomness: with ``seed=None`` crops come from torch's global generator,
    which the DataLoader seeds differently per worker and epoch. With an
    integer ``seed`` the crop of item ``i`` depends only on
    ``(seed, epoch, i)`` (reproducible whatever the number of workers, and
    so resumable mid-epoch); call :meth:`set_epoch` before each epoch (the
    epoch is held in shared memory, so persistent workers pick it up too).

    Scale: whatever the number of shards, each process keeps at most
    ``max_open_files`` shard files open, and the index is memory-mapped
    (``index.npy`` + ``ids.npy``, about 24 bytes per clip plus its ID).

    Arguments
    ---------
    folder : str
        Output folder of :func:`build_logmel_shards`.
    crop_frames : int, optional
        Frames per item (None: whole clips).
    mode : str
        ``"random"`` or ``"start"`` crop position.
    pad : str
        Short clips: ``"repeat"`` (tile) or ``"zero"`` (pad with the log-mel
        of digital silence, ``log(eps)``, and report the relative length).
    seed : int, optional
        See above.
    max_open_files : int
        Shard files kept open per process (least recently used closed).

    Example
    -------
    >>> import soundfile as sf
    >>> from aasp_sb.data.folder import write_csv
    >>> tmp = getfixture("tmp_path")
    >>> sf.write(str(tmp / "a.wav"), np.random.randn(8000) * 0.1, 16000)
    >>> write_csv(str(tmp / "m.csv"), [{"ID": "a", "wav": str(tmp / "a.wav")}],
    ...           ["ID", "wav"])
    >>> _ = build_logmel_shards(str(tmp / "m.csv"), str(tmp / "shards"))
    >>> ds = LogMelShardDataset(str(tmp / "shards"), crop_frames=100, pad="zero")
    >>> item = ds[0]
    >>> item["id"], tuple(item["feats"].shape), round(item["length"], 2)
    ('a', (100, 80), 0.51)
    """

    def __init__(
        self,
        folder,
        crop_frames=None,
        mode="random",
        pad="repeat",
        seed=None,
        max_open_files=MAX_OPEN_FILES,
    ):
        if mode not in CROP_MODES:
            raise ValueError(f"mode must be one of {CROP_MODES}, got {mode!r}")
        if pad not in PAD_MODES:
            raise ValueError(f"pad must be one of {PAD_MODES}, got {pad!r}")
        if crop_frames is not None and int(crop_frames) <= 0:
            raise ValueError(f"crop_frames must be positive, got {crop_frames}")
        if int(max_open_files) <= 0:
            raise ValueError(
                f"max_open_files must be positive, got {max_open_files}"
            )
        self.folder = os.path.abspath(str(folder))
        if not os.path.exists(os.path.join(self.folder, "index.csv")) and not (
            os.path.exists(os.path.join(self.folder, "index.npy"))
        ):
            raise FileNotFoundError(
                f"no index in '{self.folder}': build the shards with "
                "build_logmel_shards"
            )
        with open(
            os.path.join(self.folder, "meta.json"), encoding="utf-8"
        ) as f:
            self.meta = json.load(f)
        self.n_mels = int(self.meta["options"]["front_end"]["n_mels"])
        self.max_open_files = int(max_open_files)
        self.crop_frames = None if crop_frames is None else int(crop_frames)
        self.mode, self.pad, self.seed = mode, pad, seed
        # In shared memory: persistent DataLoader workers see set_epoch too.
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._load_index()

    def _load_index(self):
        npy = os.path.join(self.folder, "index.npy")
        if os.path.exists(npy):
            index = np.load(npy, mmap_mode="r")
            blob = np.load(os.path.join(self.folder, "ids.npy"), mmap_mode="r")
            if index.dtype != INDEX_DTYPE:
                raise ValueError(f"'{npy}' has dtype {index.dtype}, not {INDEX_DTYPE}")
        else:
            index, blob = _index_from_csv(os.path.join(self.folder, "index.csv"))
        self.index = index
        self.ids = ClipIds(blob, index["id_end"])
        self.shard = index["shard"]
        self.offset = index["offset"]
        self.num_frames = index["num_frames"]
        self._files = _ShardFiles(self.folder, self.n_mels, self.max_open_files)

    def __getstate__(self):
        state = self.__dict__.copy()
        for key in ("index", "ids", "shard", "offset", "num_frames", "_files"):
            state.pop(key)  # re-opened (memory-mapped) where unpickled
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._load_index()

    def __len__(self):
        return len(self.index)

    @property
    def epoch(self):
        """The epoch mixed into seeded crops (see :meth:`set_epoch`)."""
        return int(self._epoch[0])

    def set_epoch(self, epoch):
        """Sets the epoch mixed into seeded crops.

        The value lives in shared memory, so DataLoader workers started
        earlier (``persistent_workers=True``) use it from their next item on:
        call it before iterating the epoch's loader.

        Arguments
        ---------
        epoch : int
            Current epoch.
        """
        self._epoch[0] = int(epoch)

    def close(self):
        """Closes the open shard files (they re-open on the next read)."""
        self._files.close()

    def clip(self, index):
        """Whole log-mel of clip ``index`` as float32 ``[num_frames, n_mels]``.

        Arguments
        ---------
        index : int
            Item index.

        Returns
        -------
        torch.Tensor
            The clip's frames.
        """
        rec = self.index[int(index)]
        k, off, n = int(rec["shard"]), int(rec["offset"]), int(rec["num_frames"])
        return torch.from_numpy(self._files.rows(k, off, n))

    def _generator(self, index):
        if self.seed is None:
            return None
        state = np.random.SeedSequence([int(self.seed), self.epoch, int(index)])
        return torch.Generator().manual_seed(int(state.generate_state(1)[0]))

    def __getitem__(self, index):
        index = int(index)
        if index < 0:
            index += len(self)
        rec = self.index[index]
        k, off, n = int(rec["shard"]), int(rec["offset"]), int(rec["num_frames"])
        uid = self.ids[index]
        crop = self.crop_frames
        if crop is None:
            feats = self._files.rows(k, off, n)
            return {"id": uid, "feats": torch.from_numpy(feats), "length": 1.0}
        gen = self._generator(index) if self.mode == "random" else None
        if n >= crop:
            start = window_start(n, crop, self.mode, gen)
            feats = self._files.rows(k, off + start, crop)
            length = 1.0
        elif self.pad == "zero":
            feats = np.full((crop, self.n_mels), SILENCE, dtype=np.float32)
            feats[:n] = self._files.rows(k, off, n)
            length = n / crop
        else:
            clip = self._files.rows(k, off, n)
            phase = 0
            if self.mode == "random":
                phase = int(torch.randint(0, n, (1,), generator=gen))
            reps = math.ceil((crop + phase) / n)
            feats = np.ascontiguousarray(
                np.tile(clip, (reps, 1))[phase : phase + crop]
            )
            length = 1.0
        return {"id": uid, "feats": torch.from_numpy(feats), "length": length}


def collate_shard_items(items):
    """Batches :class:`LogMelShardDataset` items (pads variable lengths).

    Arguments
    ---------
    items : list of dict
        Dataset items.

    Returns
    -------
    dict
        ``{"id": list, "feats": [B, T, F] float32, "lengths": [B] float32}``
        with ``lengths`` relative to the batch's ``T`` (SpeechBrain style);
        short items are padded with the log-mel of silence.

    Example
    -------
    >>> a = {"id": "a", "feats": torch.zeros(4, 2), "length": 1.0}
    >>> b = {"id": "b", "feats": torch.zeros(2, 2), "length": 1.0}
    >>> batch = collate_shard_items([a, b])
    >>> batch["feats"].shape, batch["lengths"]
    (torch.Size([2, 4, 2]), tensor([1.0000, 0.5000]))
    """
    num = [it["feats"].shape[0] for it in items]
    t_max = max(num)
    feats = torch.full((len(items), t_max, items[0]["feats"].shape[1]), SILENCE)
    lengths = torch.empty(len(items))
    for i, it in enumerate(items):
        feats[i, : num[i]] = it["feats"]
        lengths[i] = it["length"] * num[i] / t_max
    return {
        "id": [it["id"] for it in items],
        "feats": feats,
        "lengths": lengths,
    }


def run(argv=None):
    """Command line: audio folder or manifest -> log-mel shards.

    Usage::

        python -m aasp_sb.data.shards --audio-folder /data/audioset --output /data/as_shards
        python -m aasp_sb.data.shards --csv train.csv --output /data/shards --num-workers 8

    Then pre-train from the shards with ``--shard_folder=/data/as_shards``.
    For the full AudioSet prefer ``python -m aasp_sb.data.prepare ...
    --shard-folder`` (incremental header reads, a validation split).

    Arguments
    ---------
    argv : list of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    str
        The shard folder.
    """
    import argparse

    from aasp_sb.data.folder import prepare_audio_folder

    parser = argparse.ArgumentParser(
        description="Convert audio to memory-mappable float16 log-mel shards"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--audio-folder", help="folder of audio (recursive)")
    source.add_argument("--csv", help="manifest with ID,duration,wav columns")
    parser.add_argument("--output", required=True, help="shard folder")
    parser.add_argument("--shard-size", type=int, default=512, help="clips per shard")
    parser.add_argument(
        "--num-workers", type=int, default=0, help="processes (headers and shards)"
    )
    parser.add_argument(
        "--max-seconds", type=float, default=None, help="keep at most this much per clip"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s - %(message)s")
    manifest = args.csv
    if args.audio_folder:
        prep = prepare_audio_folder(
            args.audio_folder,
            os.path.join(args.output, "manifest"),
            processes=args.num_workers,
            progress=True,
        )
        manifest = prep["train"]
    build_logmel_shards(
        manifest,
        args.output,
        shard_size=args.shard_size,
        num_workers=args.num_workers,
        max_seconds=args.max_seconds,
        progress=True,
    )
    return args.output


def main(argv=None):
    """``aasp-shards`` / ``python -m aasp_sb.data.shards``: :func:`run`, exit status 0."""
    run(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
