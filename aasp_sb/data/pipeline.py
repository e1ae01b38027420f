"""SpeechBrain data pipelines that never crash on a bad clip.

Both builders return a :class:`speechbrain.dataio.dataset.DynamicItemDataset`
read from a manifest (``ID,duration,wav[,label]``); batches are collated by
SpeechBrain's ``PaddedBatch`` (the default ``collate_fn`` of
``sb.dataio.dataloader.make_dataloader`` and of ``Brain.fit``).

**Bad clips.** Audio is read with :func:`~aasp_sb.data.audio.load_audio`.
When it raises :class:`~aasp_sb.data.audio.AudioLoadError`, the path is
logged once and counted in the dataset's ``skip_counter``
(:class:`~aasp_sb.data.audio.SkipCounter`), and the item is *substituted*:
the next clip in manifest order (``i + 1``, ``i + 2``, ... wrapping around;
clips already known to be bad in this process are passed over) is loaded in
its place, up to ``max_tries`` attempts. Batches therefore stay full of real
audio, and for labelled data the label follows the substitute (the
``label`` item is computed from ``src_id``, the clip that supplied the
audio). Only when no substitute can be read is a zero clip returned, with
``valid=False``. ``on_error="zero"`` returns the flagged zero clip at once
(with the item's own label, e.g. to mask it out of a test metric) and
``on_error="raise"`` re-raises.

Dynamic items available on every dataset (output keys can be changed with
``set_output_keys``): ``sig`` (float32 waveform), ``rel_length`` (fraction
of ``sig`` that is real audio, < 1 only after zero padding), ``src_id`` (the
clip that supplied the audio; differs from ``id`` after substitution),
``valid`` (False for a zero clip), and for labelled data ``label``.

With DataLoader workers each worker process logs and counts on its own copy
of the counter; pass a ``SkipCounter(record_file=...)`` to gather every
process's skips in one file.
"""

import logging
import os
from collections import namedtuple

import torch
from speechbrain.dataio.dataset import DynamicItemDataset

from aasp_sb.data.audio import (
    CROP_MODES,
    PAD_MODES,
    AudioLoadError,
    SkipCounter,
    audio_info,
    crop_or_pad,
    load_audio,
)
from aasp_sb.data.folder import read_csv, write_csv

logger = logging.getLogger(__name__)

ON_ERROR = ("substitute", "zero", "raise")

Clip = namedtuple("Clip", ["sig", "rel_length", "src_id", "valid"])


class RobustClipLoader:
    """Loads (and crops) the clip of a manifest ID, substituting bad clips.

    Arguments
    ---------
    data : dict
        ``{ID: row}`` with a ``wav`` column (``DynamicItemDataset.data``).
    ids : list of str
        Manifest order, used to pick substitutes (next index, wrapping).
    sample_rate : int
        Output sample rate.
    num_samples : int, optional
        Crop length; None keeps whole clips.
    mode : str
        ``"random"`` or ``"start"`` crop (and read window) position.
    pad : str
        ``"repeat"``, ``"zero"``, or ``"none"`` (short clips stay short; the
        batch padding of ``PaddedBatch`` then gives the relative lengths).
    on_error : str
        ``"substitute"``, ``"zero"`` or ``"raise"`` (see the module
        docstring).
    max_tries : int
        Substitutes tried before falling back to a zero clip.
    skip_counter : SkipCounter, optional
        Where skips are counted (a new one if None).
    seed : int, optional
        With a seed, random crops depend only on (seed, epoch, clip), so a
        resumed run sees the same crops; None uses torch's global RNG.

    Example
    -------
    >>> loader = RobustClipLoader({"a": {"wav": "/missing.wav"}}, ["a"],
    ...                           num_samples=160)
    >>> clip = loader("a")
    >>> clip.sig.shape, clip.valid, loader.skip_counter.num_files
    (torch.Size([160]), False, 1)
    """

    def __init__(
        self,
        data,
        ids,
        sample_rate=16000,
        num_samples=None,
        mode="random",
        pad="repeat",
        on_error="substitute",
        max_tries=10,
        skip_counter=None,
        seed=None,
    ):
        if mode not in CROP_MODES:
            raise ValueError(f"mode must be one of {CROP_MODES}, got {mode!r}")
        if pad not in (*PAD_MODES, "none"):
            raise ValueError(
                f"pad must be one of {PAD_MODES + ('none',)}, got {pad!r}"
            )
        if on_error not in ON_ERROR:
            raise ValueError(
                f"on_error must be one of {ON_ERROR}, got {on_error!r}"
            )
        self.data = data
        self.ids = list(ids)
        self.position = {uid: i for i, uid in enumerate(self.ids)}
        self.sample_rate = int(sample_rate)
        self.num_samples = None if num_samples is None else int(num_samples)
        if self.num_samples is not None and self.num_samples <= 0:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        self.mode, self.pad, self.on_error = mode, pad, on_error
        self.max_tries = int(max_tries)
        self.skip_counter = (
            skip_counter if skip_counter is not None else SkipCounter()
        )
        self.bad_ids = set()
        self.seed = seed
        # in shared memory: DataLoader workers kept alive across epochs
        # (persistent_workers) see set_epoch too
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    @property
    def epoch(self):
        """The epoch that, with ``seed``, decides the random crops."""
        return int(self._epoch[0])

    def set_epoch(self, epoch):
        """Sets the epoch that, with ``seed``, decides the random crops."""
        self._epoch[0] = int(epoch)

    def generator(self, uid):
        """Crop generator seeded by (seed, epoch, clip position), or None (global RNG)."""
        if self.seed is None or self.mode != "random":
            return None
        key = (int(self.seed) * 1_000_003 + self.epoch) * 1_000_033
        return torch.Generator().manual_seed(key + self.position.get(uid, 0))

    def _load(self, uid):
        path = self.data[uid]["wav"]
        if self.num_samples is None:
            return load_audio(path, self.sample_rate), 1.0
        gen = self.generator(uid)
        wav = load_audio(
            path,
            self.sample_rate,
            max_seconds=self.num_samples / self.sample_rate,
            window=self.mode,
            generator=gen,
        )
        if self.pad == "none":
            return wav[: self.num_samples], 1.0
        return crop_or_pad(wav, self.num_samples, self.mode, self.pad, gen)

    def _try(self, uid):
        try:
            sig, rel = self._load(uid)
        except AudioLoadError as err:
            self.bad_ids.add(uid)
            self.skip_counter.add(err.path, err.reason)
            if self.on_error == "raise":
                raise
            return None
        return Clip(sig, float(rel), uid, True)

    def _zero_clip(self, uid):
        num = self.num_samples
        if num is None:
            seconds = float(self.data[uid].get("duration") or 1.0)
            num = max(1, int(round(seconds * self.sample_rate)))
        return Clip(torch.zeros(num), 1.0, uid, False)

    def __call__(self, uid):
        """Returns the :data:`Clip` ``(sig, rel_length, src_id, valid)`` of ``uid``."""
        clip = None if uid in self.bad_ids else self._try(uid)
        if clip is not None:
            return clip
        if self.on_error == "raise":  # known bad from an earlier call
            path = self.data[uid]["wav"]
            raise AudioLoadError(
                path, self.skip_counter.reasons.get(path, "bad clip")
            )
        if self.on_error == "substitute" and len(self.ids) > 1:
            start, tries = self.position.get(uid, -1), 0
            for step in range(1, len(self.ids)):
                cand = self.ids[(start + step) % len(self.ids)]
                if cand in self.bad_ids or cand == uid:
                    continue
                clip = self._try(cand)
                if clip is not None:
                    return clip
                tries += 1
                if tries >= self.max_tries:
                    break
        return self._zero_clip(uid)


def _attach_loader(
    dataset, csv, sample_rate, num, mode, pad, on_error, max_tries, skip_counter, seed=None
):
    """Builds the :class:`RobustClipLoader` of ``dataset`` and registers its items.

    Sets ``dataset.skip_counter``, ``dataset.loader`` and ``dataset.set_epoch``.
    """
    counter = skip_counter
    if counter is None:
        counter = SkipCounter(os.path.basename(str(csv)))
    loader = RobustClipLoader(
        dataset.data,
        dataset.data_ids,
        sample_rate,
        num,
        mode,
        pad,
        on_error,
        max_tries,
        counter,
        seed,
    )
    _add_clip_items(dataset, loader)
    dataset.skip_counter, dataset.loader = counter, loader
    dataset.set_epoch = loader.set_epoch
    return loader


def _add_clip_items(dataset, loader):
    """Registers ``clip`` and its fields as dynamic items of ``dataset``."""
    dataset.add_dynamic_item(loader, takes=["id"], provides=["clip"])
    for field in ("sig", "rel_length", "src_id", "valid"):
        dataset.add_dynamic_item(
            _Field(field), takes=["clip"], provides=[field]
        )


class _Field:
    """Picklable ``clip -> clip.<name>`` accessor."""

    def __init__(self, name):
        self.name = name

    def __call__(self, clip):
        return getattr(clip, self.name)


def _num_samples(crop_seconds, sample_rate):
    if crop_seconds is None:
        return None
    if not crop_seconds > 0:
        raise ValueError(f"crop_seconds must be positive, got {crop_seconds}")
    return int(round(crop_seconds * sample_rate))


def pretrain_dataset(
    csv,
    crop_seconds,
    sample_rate=16000,
    pad="repeat",
    mode="random",
    on_error="substitute",
    max_tries=10,
    skip_counter=None,
    replacements=None,
    seed=None,
):
    """Unlabelled crops for pre-training: output keys ``id``, ``sig``.

    Every ``sig`` has exactly ``round(crop_seconds * sample_rate)`` samples:
    long clips are cropped (only the crop window is read from disk), short
    clips tiled (``pad="repeat"``, no padding) or zero-padded.

    Arguments
    ---------
    csv : str
        Manifest with ``ID`` and ``wav`` columns.
    crop_seconds : float
        Crop duration.
    sample_rate : int
        Output sample rate.
    pad : str
        ``"repeat"`` or ``"zero"``.
    mode : str
        ``"random"`` or ``"start"``.
    on_error : str
        ``"substitute"`` (default), ``"zero"`` or ``"raise"``.
    max_tries : int
        Substitutes tried per bad clip.
    skip_counter : SkipCounter, optional
        Counter of skipped clips (a new one named after the CSV if None);
        also available as ``dataset.skip_counter``.
    replacements : dict, optional
        ``$variable`` replacements for the CSV (SpeechBrain).
    seed : int, optional
        Makes random crops a function of (seed, epoch, clip); call
        ``dataset.set_epoch(epoch)`` before each epoch (AaSPBrain does).

    Returns
    -------
    DynamicItemDataset
        With attributes ``skip_counter``, ``loader`` and ``set_epoch``.

    Example
    -------
    >>> import numpy as np, soundfile as sf
    >>> from aasp_sb.data.folder import write_csv
    >>> tmp = getfixture("tmp_path")
    >>> sf.write(str(tmp / "a.wav"), np.zeros(4000, dtype="float32"), 8000)
    >>> write_csv(str(tmp / "m.csv"), [{"ID": "a", "duration": 0.5,
    ...           "wav": str(tmp / "a.wav")}], ["ID", "duration", "wav"])
    >>> ds = pretrain_dataset(str(tmp / "m.csv"), crop_seconds=2.0)
    >>> ds[0]["id"], ds[0]["sig"].shape
    ('a', torch.Size([32000]))
    """
    if pad not in PAD_MODES:
        raise ValueError(f"pad must be one of {PAD_MODES}, got {pad!r}")
    num = _num_samples(crop_seconds, sample_rate)
    if num is None:
        raise ValueError("pretrain_dataset needs crop_seconds")
    dataset = DynamicItemDataset.from_csv(str(csv), replacements=replacements)
    _check_columns(dataset, csv, ["wav"])
    _attach_loader(
        dataset, csv, sample_rate, num, mode, pad, on_error, max_tries, skip_counter, seed
    )
    dataset.set_output_keys(["id", "sig"])
    return dataset


def read_classes(classes):
    """Class list from a list, a ``classes.txt`` path, or a label encoder.

    Arguments
    ---------
    classes : list of str, str, or CategoricalEncoder
        Class names in index order; a path to a file with one class per line;
        or a SpeechBrain ``CategoricalEncoder``.

    Returns
    -------
    list of str
        Class names, index order.

    Example
    -------
    >>> read_classes(["dog", "cat"])
    ['dog', 'cat']
    """
    if isinstance(classes, (str, os.PathLike)):
        with open(str(classes), encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]
    if hasattr(classes, "ind2lab"):
        return [classes.ind2lab[i] for i in range(len(classes.ind2lab))]
    return [str(c) for c in classes]


class LabelEncoder:
    """Label string -> index tensor ``[1]`` (long) or multi-hot ``[C]`` (float).

    Arguments
    ---------
    classes : list of str
        Class names in index order.
    multilabel : bool
        Multi-hot over ``;``-separated labels instead of a single index.

    Example
    -------
    >>> LabelEncoder(["a", "b", "c"])("b")
    tensor([1])
    >>> LabelEncoder(["a", "b", "c"], multilabel=True)("a;c")
    tensor([1., 0., 1.])
    """

    def __init__(self, classes, multilabel=False):
        self.classes = list(classes)
        self.lab2ind = {c: i for i, c in enumerate(self.classes)}
        if len(self.lab2ind) != len(self.classes):
            raise ValueError(f"duplicate class names in {self.classes}")
        self.multilabel = multilabel

    def split(self, label):
        """Label string -> list of class names."""
        if self.multilabel:
            return [x.strip() for x in str(label).split(";") if x.strip()]
        return [str(label).strip()]

    def __call__(self, label):
        """Encodes one label string."""
        names = self.split(label)
        if self.multilabel:
            out = torch.zeros(len(self.classes))
            for name in names:
                out[self.lab2ind[name]] = 1.0
            return out
        return torch.tensor([self.lab2ind[names[0]]], dtype=torch.long)


def labelled_dataset(
    csv,
    crop_seconds=None,
    classes=None,
    multilabel=False,
    mode="random",
    pad="zero",
    sample_rate=16000,
    on_error="substitute",
    max_tries=10,
    skip_counter=None,
    replacements=None,
    seed=None,
):
    """Labelled clips: output keys ``id``, ``sig``, ``label``.

    ``label`` is a long tensor ``[1]`` with the class index (SpeechBrain's
    ``CategoricalEncoder`` convention; batches give ``[B, 1]``), or for
    ``multilabel`` a float multi-hot ``[C]`` over the ``;``-separated labels.
    Labels are checked when the dataset is built: an unknown class raises an
    error naming the clip.

    Arguments
    ---------
    csv : str
        Manifest with ``ID``, ``wav`` and ``label`` columns.
    crop_seconds : float, optional
        Crop length (EVAR protocol: random crop for train/valid, start crop
        for test); None keeps whole clips (``PaddedBatch`` pads the batch).
    classes : list, str or CategoricalEncoder, optional
        Classes in index order (see :func:`read_classes`); None uses the
        sorted labels found in ``csv`` -- pass the training classes for
        valid/test sets.
    multilabel : bool
        Multi-hot labels.
    mode : str
        ``"random"`` or ``"start"`` crop.
    pad : str
        ``"zero"`` (default, EVAR), ``"repeat"`` or ``"none"``.
    sample_rate : int
        Output sample rate.
    on_error : str
        ``"substitute"`` (default), ``"zero"`` or ``"raise"``.
    max_tries : int
        Substitutes tried per bad clip.
    skip_counter : SkipCounter, optional
        Counter of skipped clips (``dataset.skip_counter``).
    replacements : dict, optional
        ``$variable`` replacements for the CSV.
    seed : int, optional
        Random crops as a function of (seed, epoch, clip) (see
        :func:`pretrain_dataset`).

    Returns
    -------
    DynamicItemDataset
        With attributes ``classes``, ``label_encoder``, ``skip_counter``;
        the CSV's label string is the static key ``label_str``.

    Example
    -------
    >>> import numpy as np, soundfile as sf
    >>> from aasp_sb.data.folder import write_csv
    >>> tmp = getfixture("tmp_path")
    >>> sf.write(str(tmp / "a.wav"), np.zeros(1600, dtype="float32"), 16000)
    >>> write_csv(str(tmp / "m.csv"), [{"ID": "a", "duration": 0.1,
    ...           "wav": str(tmp / "a.wav"), "label": "dog"}],
    ...           ["ID", "duration", "wav", "label"])
    >>> ds = labelled_dataset(str(tmp / "m.csv"), 0.5, classes=["cat", "dog"])
    >>> ds[0]["sig"].shape, ds[0]["label"]
    (torch.Size([8000]), tensor([1]))
    """
    num = _num_samples(crop_seconds, sample_rate)
    dataset = DynamicItemDataset.from_csv(str(csv), replacements=replacements)
    _check_columns(dataset, csv, ["wav", "label"])
    if classes is None:
        probe = LabelEncoder([], multilabel)
        found = {
            n
            for row in dataset.data.values()
            for n in probe.split(row["label"])
        }
        classes = sorted(found)
    encoder = LabelEncoder(read_classes(classes), multilabel)
    for uid in dataset.data_ids:
        label = dataset.data[uid]["label"]
        names = encoder.split(label)
        if not names:
            raise ValueError(f"'{csv}': clip '{uid}' has an empty label")
        if not multilabel and ";" in str(label):
            raise ValueError(
                f"'{csv}': clip '{uid}' has several labels '{label}'; "
                "use multilabel=True"
            )
        unknown = [n for n in names if n not in encoder.lab2ind]
        if unknown:
            raise ValueError(
                f"'{csv}': clip '{uid}' has labels {unknown} not among the "
                f"{len(encoder.classes)} classes"
            )
    # The encoded label is the dynamic item "label" (computed from the clip
    # that supplied the audio); the CSV's string stays as "label_str".
    for row in dataset.data.values():
        row["label_str"] = row.pop("label")
    _attach_loader(
        dataset, csv, sample_rate, num, mode, pad, on_error, max_tries, skip_counter, seed
    )
    dataset.add_dynamic_item(
        _LabelOf(dataset.data, encoder), takes=["src_id"], provides=["label"]
    )
    dataset.set_output_keys(["id", "sig", "label"])
    dataset.classes, dataset.label_encoder = encoder.classes, encoder
    return dataset


class _LabelOf:
    """Picklable ``src_id -> encoded label`` of that manifest row."""

    def __init__(self, data, encoder):
        self.data, self.encoder = data, encoder

    def __call__(self, src_id):
        return self.encoder(self.data[src_id]["label_str"])


def _check_columns(dataset, csv, columns):
    if not dataset.data_ids:
        return
    row = dataset.data[dataset.data_ids[0]]
    missing = [c for c in columns if c not in row]
    if missing:
        raise ValueError(f"manifest '{csv}' lacks columns {missing}")


def validate_manifest(csv, out_csv=None, decode=False):
    """Finds the clips of a manifest that cannot be used.

    Useful before evaluation, where substituting a clip would change the test
    set: write a clean manifest and evaluate on it.

    Arguments
    ---------
    csv : str
        Manifest (``ID``, ``wav``, ...).
    out_csv : str, optional
        Where to write the manifest without the bad clips.
    decode : bool
        Decode every clip (finds corrupt data and NaN/Inf samples) instead of
        only reading headers (fast).

    Returns
    -------
    list of tuple
        ``(ID, path, reason)`` of the bad clips.

    Example
    -------
    >>> from aasp_sb.data.folder import write_csv
    >>> tmp = getfixture("tmp_path")
    >>> write_csv(str(tmp / "m.csv"), [{"ID": "x", "wav": "/missing.wav"}],
    ...           ["ID", "wav"])
    >>> [bad[0] for bad in validate_manifest(str(tmp / "m.csv"))]
    ['x']
    """
    rows = read_csv(csv)
    bad, good = [], []
    for row in rows:
        try:
            if decode:
                load_audio(row["wav"])
            else:
                frames, _, _ = audio_info(row["wav"])
                if frames <= 0:
                    raise AudioLoadError(row["wav"], "zero-length audio")
        except AudioLoadError as err:
            bad.append((row["ID"], err.path, err.reason))
            continue
        good.append(row)
    if bad:
        logger.warning("%d bad clips in '%s'", len(bad), csv)
    if out_csv is not None:
        fields = list(rows[0].keys()) if rows else ["ID", "duration", "wav"]
        write_csv(out_csv, good, fields)
    return bad
