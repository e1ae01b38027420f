"""Pre-computed log-mel shards for AudioSet-scale pre-training.

Decoding and resampling millions of clips every epoch costs more CPU than a
GPU step; :func:`build_logmel_shards` does it once. Each clip goes through
:func:`~aasp_sb.data.audio.load_audio` and :class:`aasp_sb.features.LogMel`
(log-mel, **not** normalised -- normalisation stays in the model so that
statistics can change without rebuilding) and is appended as float16 frames
to ``shard_00000.npy``, ``shard_00001.npy``, ... (each ``[total_frames,
n_mels]``, memory-mappable). ``index.csv`` maps ``ID`` to ``shard``,
``offset`` and ``num_frames``.

Layout of ``out_folder``::

    meta.json          options (front end, manifest fingerprint) + stats
    shard_00000.npy    float16 [frames, n_mels]
    shard_00000.csv    per-shard index; written last = shard complete
    index.csv          ID,shard,offset,num_frames (all shards)
    skipped.txt        path<TAB>reason of clips that could not be read

Shard ``k`` holds manifest rows ``[k * shard_size, (k + 1) * shard_size)``, so
an interrupted build resumes by skipping the shards whose ``.csv`` exists.
:class:`LogMelShardDataset` reads crops through ``np.load(mmap_mode="r")``:
only the frames of the crop are read from disk.
"""

import hashlib
import json
import logging
import math
import os

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
    }


def _fingerprint(rows):
    h = hashlib.sha1()
    for row in rows:
        h.update(f"{row['ID']}\t{row['wav']}\n".encode())
    return h.hexdigest()


class _ClipFeatures(torch.utils.data.Dataset):
    """Manifest rows -> ``(position, ID, float16 log-mel or None, error)``."""

    def __init__(self, items, logmel, max_seconds):
        self.items = items  # list of (position, ID, path)
        self.logmel = logmel
        self.max_seconds = max_seconds

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        pos, uid, path = self.items[i]
        try:
            wav = load_audio(
                path, self.logmel.sample_rate, max_seconds=self.max_seconds
            )
        except AudioLoadError as err:
            return pos, uid, path, None, err.reason
        feats = self.logmel(wav.unsqueeze(0))[0].numpy().astype(DTYPE)
        if not np.isfinite(feats).all():
            return pos, uid, path, None, "non-finite log-mel"
        return pos, uid, path, feats, None


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
        DataLoader worker processes decoding clips (0: in this process).
    max_seconds : float, optional
        Keep at most this much of each clip (its start).

    Returns
    -------
    dict
        ``{"index": path, "num_clips", "num_skipped", "num_shards"}``.

    Raises
    ------
    ValueError
        ``out_folder`` holds shards built with other options or another
        manifest.
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
    rows = read_csv(manifest_csv)
    if rows and ("ID" not in rows[0] or "wav" not in rows[0]):
        raise ValueError(
            f"manifest '{manifest_csv}' needs 'ID' and 'wav' columns"
        )
    shard_size = int(shard_size)
    if shard_size <= 0:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    num_shards = math.ceil(len(rows) / shard_size)
    options = {
        "manifest": manifest_csv,
        "manifest_sha1": _fingerprint(rows),
        "num_rows": len(rows),
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

    pending = [
        k
        for k in range(num_shards)
        if not (
            os.path.exists(os.path.join(out_folder, _shard_name(k, "csv")))
            and os.path.exists(os.path.join(out_folder, _shard_name(k, "npy")))
        )
    ]
    if len(pending) < num_shards:
        logger.info(
            "'%s': %d of %d shards already built, resuming",
            out_folder,
            num_shards - len(pending),
            num_shards,
        )
    items = [
        (pos, rows[pos]["ID"], rows[pos]["wav"])
        for k in pending
        for pos in range(k * shard_size, min(len(rows), (k + 1) * shard_size))
    ]
    dataset = _ClipFeatures(items, logmel, max_seconds)
    if num_workers and num_workers > 0:
        results = torch.utils.data.DataLoader(
            dataset,
            batch_size=None,
            num_workers=int(num_workers),
            collate_fn=_identity,
            worker_init_fn=_single_thread,
        )
    else:
        results = (dataset[i] for i in range(len(dataset)))

    writer = None
    for pos, uid, path, feats, error in results:
        k = pos // shard_size
        if writer is None or writer.k != k:
            if writer is not None:
                writer.finish()
            writer = _ShardWriter(out_folder, k, logmel.n_mels)
        if feats is None:
            writer.skipped.append((path, error))
        else:
            writer.append(uid, feats)
    if writer is not None:
        writer.finish()

    index_rows, skipped = [], []
    for k in range(num_shards):
        for row in read_csv(os.path.join(out_folder, _shard_name(k, "csv"))):
            index_rows.append(
                {
                    "ID": row["ID"],
                    "shard": k,
                    "offset": row["offset"],
                    "num_frames": row["num_frames"],
                }
            )
        skip_file = os.path.join(out_folder, _shard_name(k, "skipped"))
        if os.path.exists(skip_file):
            with open(skip_file, encoding="utf-8") as f:
                for line in f:
                    path, _, reason = line.rstrip("\n").partition("\t")
                    skipped.append((path, reason))
    log_path_list(
        skipped,
        f"clips of '{manifest_csv}' skipped while building shards",
        list_file=os.path.join(out_folder, "skipped.txt"),
    )
    if not index_rows:
        raise RuntimeError(
            f"no clip of '{manifest_csv}' could be read ({len(skipped)} skipped)"
        )
    index_path = os.path.join(out_folder, "index.csv")
    write_csv(index_path, index_rows, ["ID", "shard", "offset", "num_frames"])
    stats = {
        "num_clips": len(index_rows),
        "num_skipped": len(skipped),
        "num_shards": num_shards,
        "num_frames": int(sum(int(r["num_frames"]) for r in index_rows)),
    }
    _write_json(meta_path, {"options": options, "stats": stats})
    logger.info(
        "log-mel shards in '%s': %d clips, %d skipped, %d shards",
        out_folder,
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


class _ShardWriter:
    """Streams one shard to a raw file, then writes the ``.npy`` and index."""

    def __init__(self, folder, k, n_mels):
        self.folder, self.k, self.n_mels = folder, k, n_mels
        self.raw_path = os.path.join(folder, _shard_name(k, "raw.tmp"))
        self.raw = open(self.raw_path, "wb")
        self.rows, self.skipped, self.total = [], [], 0

    def append(self, uid, feats):
        if feats.shape[1] != self.n_mels:
            raise ValueError(
                f"{uid}: {feats.shape[1]} mel bins, expected {self.n_mels}"
            )
        self.raw.write(np.ascontiguousarray(feats, dtype=DTYPE).tobytes())
        self.rows.append(
            {"ID": uid, "offset": self.total, "num_frames": feats.shape[0]}
        )
        self.total += feats.shape[0]

    def finish(self):
        self.raw.close()
        npy = os.path.join(self.folder, _shard_name(self.k, "npy"))
        tmp = npy + ".tmp.npy"
        shape = (self.total, self.n_mels)
        if self.total == 0:
            np.save(tmp, np.zeros(shape, dtype=DTYPE))
        else:
            src = np.memmap(self.raw_path, dtype=DTYPE, mode="r", shape=shape)
            dst = np.lib.format.open_memmap(
                tmp, mode="w+", dtype=DTYPE, shape=shape
            )
            step = 1 << 20
            for i in range(0, self.total, step):
                dst[i : i + step] = src[i : i + step]
            dst.flush()
            del src, dst
        os.replace(tmp, npy)
        os.remove(self.raw_path)
        skip_file = os.path.join(self.folder, _shard_name(self.k, "skipped"))
        with open(skip_file, "w", encoding="utf-8") as f:
            for path, reason in self.skipped:
                f.write(f"{path}\t{reason}\n")
        # The per-shard index is written last: its presence marks completion.
        write_csv(
            os.path.join(self.folder, _shard_name(self.k, "csv")),
            self.rows,
            ["ID", "offset", "num_frames"],
        )
        logger.info(
            "shard %d: %d clips, %d frames, %d skipped",
            self.k,
            len(self.rows),
            self.total,
            len(self.skipped),
        )


def _write_json(path, obj):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


class LogMelShardDataset(torch.utils.data.Dataset):
    """Crops of pre-computed log-mel, read from memory-mapped shards.

    Items are dicts ``{"id": str, "feats": float32 [crop_frames, n_mels],
    "length": float}`` where ``length`` is the relative length of real frames
    (1.0 unless ``pad="zero"`` padded a short clip). Fixed-size crops collate
    with torch's default collate; :func:`collate_shard_items` also pads
    whole clips (``crop_frames=None``).

    Randomness: with ``seed=None`` crops come from torch's global generator,
    which the DataLoader seeds differently per worker and epoch. With an
    integer ``seed`` the crop of item ``i`` depends only on
    ``(seed, epoch, i)`` (reproducible whatever the number of workers); call
    :meth:`set_epoch` before each epoch (non-persistent workers pick it up).

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
        self, folder, crop_frames=None, mode="random", pad="repeat", seed=None
    ):
        if mode not in CROP_MODES:
            raise ValueError(f"mode must be one of {CROP_MODES}, got {mode!r}")
        if pad not in PAD_MODES:
            raise ValueError(f"pad must be one of {PAD_MODES}, got {pad!r}")
        if crop_frames is not None and int(crop_frames) <= 0:
            raise ValueError(f"crop_frames must be positive, got {crop_frames}")
        self.folder = os.path.abspath(str(folder))
        index_path = os.path.join(self.folder, "index.csv")
        if not os.path.exists(index_path):
            raise FileNotFoundError(
                f"no '{index_path}': build the shards with build_logmel_shards"
            )
        with open(
            os.path.join(self.folder, "meta.json"), encoding="utf-8"
        ) as f:
            self.meta = json.load(f)
        self.n_mels = int(self.meta["options"]["front_end"]["n_mels"])
        rows = read_csv(index_path)
        self.ids = [r["ID"] for r in rows]
        self.shard = np.array([int(r["shard"]) for r in rows], dtype=np.int64)
        self.offset = np.array([int(r["offset"]) for r in rows], dtype=np.int64)
        self.num_frames = np.array(
            [int(r["num_frames"]) for r in rows], dtype=np.int64
        )
        self.crop_frames = None if crop_frames is None else int(crop_frames)
        self.mode, self.pad, self.seed = mode, pad, seed
        self.epoch = 0
        self._mmaps = {}

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_mmaps"] = {}  # memory maps are re-opened in each worker
        return state

    def __len__(self):
        return len(self.ids)

    def set_epoch(self, epoch):
        """Sets the epoch mixed into seeded crops.

        Arguments
        ---------
        epoch : int
            Current epoch.
        """
        self.epoch = int(epoch)

    def _array(self, k):
        mm = self._mmaps.get(k)
        if mm is None:
            path = os.path.join(self.folder, _shard_name(k, "npy"))
            mm = np.load(path, mmap_mode="r")
            self._mmaps[k] = mm
        return mm

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
        k, off, n = (
            self.shard[index],
            self.offset[index],
            self.num_frames[index],
        )
        return torch.from_numpy(
            np.array(self._array(k)[off : off + n], dtype=np.float32)
        )

    def _generator(self, index):
        if self.seed is None:
            return None
        state = np.random.SeedSequence([int(self.seed), self.epoch, int(index)])
        return torch.Generator().manual_seed(int(state.generate_state(1)[0]))

    def __getitem__(self, index):
        if index < 0:
            index += len(self)
        k, off, n = (
            int(self.shard[index]),
            int(self.offset[index]),
            int(self.num_frames[index]),
        )
        mm = self._array(k)
        crop = self.crop_frames
        if crop is None:
            feats = np.array(mm[off : off + n], dtype=np.float32)
            return {
                "id": self.ids[index],
                "feats": torch.from_numpy(feats),
                "length": 1.0,
            }
        gen = self._generator(index) if self.mode == "random" else None
        if n >= crop:
            start = window_start(n, crop, self.mode, gen)
            feats = np.array(
                mm[off + start : off + start + crop], dtype=np.float32
            )
            length = 1.0
        elif self.pad == "zero":
            feats = np.full((crop, mm.shape[1]), SILENCE, dtype=np.float32)
            feats[:n] = mm[off : off + n]
            length = n / crop
        else:
            clip = np.asarray(mm[off : off + n], dtype=np.float32)
            phase = 0
            if self.mode == "random":
                phase = int(torch.randint(0, n, (1,), generator=gen))
            reps = math.ceil((crop + phase) / n)
            feats = np.ascontiguousarray(
                np.tile(clip, (reps, 1))[phase : phase + crop]
            )
            length = 1.0
        return {
            "id": self.ids[index],
            "feats": torch.from_numpy(feats),
            "length": length,
        }


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


def main(argv=None):
    """Command line: audio folder or manifest -> log-mel shards.

    Usage::

        python -m aasp_sb.data.shards --audio-folder /data/audioset --output /data/as_shards
        python -m aasp_sb.data.shards --csv train.csv --output /data/shards --num-workers 8

    Then pre-train from the shards with ``--shard_folder=/data/as_shards``.

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
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument(
        "--max-seconds", type=float, default=None, help="keep at most this much per clip"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s - %(message)s")
    csv = args.csv
    if args.audio_folder:
        prep = prepare_audio_folder(args.audio_folder, os.path.join(args.output, "manifest"))
        csv = prep["train"]
    build_logmel_shards(
        csv,
        args.output,
        shard_size=args.shard_size,
        num_workers=args.num_workers,
        max_seconds=args.max_seconds,
    )
    return args.output


if __name__ == "__main__":
    main()
