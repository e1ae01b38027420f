#!/usr/bin/env python3
"""Recipe: AaSP pre-training (AaPE + ViT, teacher-student masked modelling).

Usage::

    python recipes/pretrain/train.py hparams/aasp_base.yaml --data_folder=/data/audioset
    python recipes/pretrain/train.py hparams/aasp_tiny.yaml \
        --data_folder=/any/folder/of/audio --output_folder=results/tiny
    torchrun --nproc_per_node=4 recipes/pretrain/train.py hparams/aasp_base.yaml \
        --data_folder=/data/audioset

AudioSet scale: convert the audio once (``python -m aasp_sb.data.shards
--audio-folder /data/audioset --output /data/as_shards``) and pre-train with
``--shard_folder=/data/as_shards`` so no audio is decoded during training.

Every top-level YAML key can be overridden on the command line
(``--use_aape=False`` gives the plain-stem ablation with everything else equal).
Re-running the same command resumes from the last checkpoint.
"""

import logging
import os
import sys

from aasp_sb import cli  # first: silences SpeechBrain's torchvision warning

# isort: split
import ruamel.yaml
import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml, resolve_references
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.utils.distributed import run_on_main

from aasp_sb.brains.pretrain import AaSPBrain, check_pretrain_hparams
from aasp_sb.data.audio import SkipCounter
from aasp_sb.data.audioset import prepare_audioset
from aasp_sb.data.folder import prepare_audio_folder
from aasp_sb.data.pipeline import pretrain_dataset
from aasp_sb.data.prepare import load_prepared
from aasp_sb.data.shards import LogMelShardDataset, check_front_end
from aasp_sb.distributed import finish_distributed, init_distributed
from aasp_sb.m2d import apply_init_from

logger = logging.getLogger(__name__)


def crop_seconds(hparams):
    """Seconds of audio giving exactly ``crop_frames`` log-mel frames."""
    hop = hparams["compute_features"].logmel.hop_length
    return (hparams["crop_frames"] - 1) * hop / hparams["sample_rate"]


def prepare_data(hparams):
    """Writes train/valid manifests for a folder of audio or AudioSet.

    With ``train_csv`` set (a manifest ``ID,duration,wav``), no preparation
    runs and ``valid_csv`` (optional) is used as given.
    """
    if hparams.get("train_csv"):
        return hparams["train_csv"], hparams.get("valid_csv")
    if hparams.get("prepared_manifest"):  # prepared once, before torchrun: just read
        prep = load_prepared(hparams["prepared_manifest"])
        return prep["train"], prep.get("valid")
    save = os.path.join(hparams["output_folder"], "data")
    valid_clips = hparams.get("valid_clips")
    kwargs = dict(
        data_folder=hparams["data_folder"],
        save_folder=save,
        valid_fraction=0.0 if valid_clips is not None else hparams["valid_fraction"],
        valid_clips=valid_clips,
        seed=hparams["seed"],
    )
    source = hparams["data_source"]
    try:
        if source == "folder":
            run_on_main(prepare_audio_folder, kwargs=kwargs)
        elif source == "audioset":
            kwargs["segments_csv"] = hparams.get("segments_csv")
            run_on_main(prepare_audioset, kwargs=kwargs)
        else:
            raise ValueError(
                f"data_source must be 'folder' or 'audioset', got {source!r}"
            )
    except ValueError as err:
        if "valid_fraction=" in str(err) and hparams.get("valid_fraction", 0) > 0:
            raise SystemExit(
                f"train.py: error: {err}; pass --valid_fraction=0 to train on "
                "every clip without a validation set"
            ) from err
        raise
    train_csv = os.path.join(save, "train.csv")
    valid_csv = os.path.join(save, "valid.csv")
    return train_csv, valid_csv if os.path.exists(valid_csv) else None


def shard_folders(hparams):
    """``(train, valid)`` shard folders: the keys, else those of ``prepared_manifest``."""
    train, valid = hparams.get("shard_folder"), hparams.get("valid_shard_folder")
    if not train and hparams.get("prepared_manifest"):
        prep = load_prepared(hparams["prepared_manifest"])
        train, valid = prep.get("train_shards"), valid or prep.get("valid_shards")
    return train, valid


def shard_datasets(hparams, train_folder, valid_folder):
    """Log-mel shard datasets (checked against the run's front end)."""
    crop = hparams["crop_frames"]
    logmel = hparams["compute_features"].logmel
    opened = int(hparams.get("max_open_shards", 64) or 64)
    check_front_end(train_folder, logmel)
    train = LogMelShardDataset(
        train_folder, crop, mode="random", pad="repeat", seed=hparams["seed"],
        max_open_files=opened,
    )
    valid = None
    if valid_folder:
        check_front_end(valid_folder, logmel)
        valid = LogMelShardDataset(
            valid_folder, crop, mode="start", pad="repeat", max_open_files=opened
        )
    return train, valid


def loader_options(hparams, run_opts, shards):
    """DataLoader options; on CUDA pinned memory, persistent workers and prefetching."""
    workers = int(hparams["num_workers"])
    opts = {"batch_size": hparams["batch_size"], "num_workers": workers}
    device = str(run_opts.get("device") or sb.utils.distributed.infer_device())
    if device.startswith("cuda"):
        opts["pin_memory"] = True
        if workers > 0:  # the datasets keep their epoch in shared memory (seeded crops)
            opts["persistent_workers"] = True
            opts["prefetch_factor"] = int(hparams.get("prefetch_factor", 4) or 4)
    if shards:  # plain Datasets: SpeechBrain's collation
        opts["collate_fn"] = PaddedBatch
    return opts


def skip_record(hparams):
    """File where every process (and DataLoader worker) lists the clips it skipped."""
    return os.path.join(hparams["output_folder"], "skipped_clips.txt")


def dataio_prep(hparams, train_csv, valid_csv):
    """Random crops for training, start crops for validation."""
    seconds = crop_seconds(hparams)
    counter = SkipCounter("pre-training audio", record_file=skip_record(hparams))
    train = pretrain_dataset(
        train_csv,
        seconds,
        sample_rate=hparams["sample_rate"],
        mode="random",
        seed=hparams["seed"],
        skip_counter=counter,
    )
    valid = None
    if valid_csv is not None:
        valid = pretrain_dataset(
            valid_csv,
            seconds,
            sample_rate=hparams["sample_rate"],
            mode="start",
            skip_counter=counter,
        )
    return train, valid


def preparation_skip_list(hparams):
    """The list of files the data preparation found unreadable (may not exist)."""
    return os.path.join(hparams["output_folder"], "data", "train_skipped.txt")


def report_skipped(hparams):
    """One report of every skipped clip: at preparation and during training.

    Returns
    -------
    dict
        ``{path: reason}`` of the distinct files skipped (both stages).
    """
    prepared = {}
    if not hparams.get("train_csv") and not hparams.get("shard_folder"):
        prepared = SkipCounter.read_record(preparation_skip_list(hparams))
    during = SkipCounter.read_record(skip_record(hparams))
    skipped = {**prepared, **during}
    if not skipped:
        logger.info("No clip was skipped.")
        return skipped
    parts = []
    if prepared:
        parts.append(
            f"{len(prepared)} unreadable at data preparation (left out of "
            f"the manifest; list: {preparation_skip_list(hparams)})"
        )
    if during:
        parts.append(
            f"{len(during)} unreadable during training (replaced by the next "
            f"clip of the manifest; list: {skip_record(hparams)})"
        )
    logger.warning("%d clip(s) skipped: %s", len(skipped), "; ".join(parts))
    return skipped


def read_plain_keys(hparams_file, overrides):
    """Top-level values of the YAML with overrides, without building anything.

    (Loading the YAML builds the checkpointer, which creates the output
    folder: input checks that must leave nothing behind use these.)
    """
    with open(hparams_file, encoding="utf-8") as fin:
        text = fin.read()
    try:
        resolved = resolve_references(text, overrides or None).getvalue()
    except ValueError as err:
        if "!PLACEHOLDER" not in str(err):
            raise
        key = str(err).split("'")[1] if "'" in str(err) else "data_folder"
        raise SystemExit(
            f"train.py: error: give --{key}=... on the command line ({err})"
        ) from err
    return ruamel.yaml.YAML(typ="rt").load(resolved)


def check_inputs(keys):
    """Fails in one line, before anything is written, when the input is missing."""
    if keys.get("train_csv"):
        if not os.path.isfile(str(keys["train_csv"])):
            raise SystemExit(
                f"train.py: error: --train_csv={keys['train_csv']}: the file "
                "does not exist"
            )
        return
    if keys.get("shard_folder"):
        cli.check_folder(keys["shard_folder"], "shard_folder", prog="train.py")
        return
    if keys.get("prepared_manifest"):
        cli.check_folder(keys["prepared_manifest"], "prepared_manifest", prog="train.py")
        return
    folder = keys.get("data_folder")
    if not isinstance(folder, str):  # still the YAML's !PLACEHOLDER
        raise SystemExit("train.py: error: give --data_folder=FOLDER (audio to pre-train on)")
    cli.check_folder(folder, "data_folder", prog="train.py")


def check_steps(hparams, train_set, valid_set, world=1):
    """Refuses a run whose epochs would make no optimiser step.

    The training loader drops the last incomplete batch (``drop_last``), so
    each process needs at least ``batch_size`` training clips.
    """
    n_train, batch = len(train_set), int(hparams["batch_size"])
    if n_train // max(1, world) >= batch:
        return
    held = len(valid_set) if valid_set is not None else 0
    msg = (
        f"only {n_train} training clip(s)"
        + (f" on {world} processes" if world > 1 else "")
        + f", fewer than batch_size={batch}: every epoch would make no "
        f"optimiser step (the last incomplete batch is dropped). Pass "
        f"--batch_size={max(1, n_train // max(1, world))} or lower, or add clips"
    )
    if held and hparams.get("valid_fraction", 0) > 0:
        msg += (
            f" ({held} more {'is' if held == 1 else 'are'} held out for validation: "
            "--valid_fraction=0 trains on them too)"
        )
    raise SystemExit(f"train.py: error: {msg}")


def resolve_precision(hparams, run_opts):
    """bf16 autocast on CUDA; fp32 on CPU unless ``--precision`` was given."""
    device = run_opts.get("device") or ("cuda:0" if sb.utils.distributed.infer_device().startswith("cuda") else "cpu")
    if "precision" not in run_opts and not device.startswith("cuda"):
        if hparams.get("precision", "fp32") != "fp32":
            logger.info("CPU run: using fp32 instead of %s", hparams["precision"])
        hparams["precision"] = "fp32"


def main(argv):
    """Parses arguments, prepares data, pre-trains."""
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    cli.check_overrides(hparams_file, overrides, prog="train.py")
    check_inputs(read_plain_keys(hparams_file, overrides))
    init_distributed(run_opts)  # ddp_init_group, safe across torchrun restarts
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    check_pretrain_hparams(hparams)  # fail before any data preparation
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    resolve_precision(hparams, run_opts)
    train_shards, valid_shards = shard_folders(hparams)
    shards = bool(train_shards)
    if shards:  # pre-computed log-mel: no audio decoding
        train_set, valid_set = shard_datasets(hparams, train_shards, valid_shards)
    else:
        train_csv, valid_csv = prepare_data(hparams)
        train_set, valid_set = dataio_prep(hparams, train_csv, valid_csv)

    world = int(os.environ.get("WORLD_SIZE", "1"))
    check_steps(hparams, train_set, valid_set, world)
    effective_batch = hparams["batch_size"] * hparams["grad_accumulation_factor"] * world
    hparams["lr"] = hparams["base_lr"] * effective_batch / 256
    logger.info("Effective batch %d -> lr %.3g", effective_batch, hparams["lr"])
    hparams["opt_class"].keywords["lr"] = hparams["lr"]
    apply_init_from(hparams)  # --init_from: M2D's weights (a resumed run's own take over)
    if hparams.get("use_tensorboard"):
        from speechbrain.utils.train_logger import TensorboardLogger

        hparams["tensorboard_logger"] = TensorboardLogger(
            os.path.join(hparams["output_folder"], "tensorboard")
        )

    brain = AaSPBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    valid_loader = loader_options(hparams, run_opts, shards)
    loader = dict(valid_loader, shuffle=True, drop_last=True)
    brain.fit(
        brain.hparams.epoch_counter,
        train_set,
        valid_set,
        train_loader_kwargs=loader,
        valid_loader_kwargs=valid_loader,
    )
    brain.skipped_clips = report_skipped(hparams)
    return brain


if __name__ == "__main__":
    main(sys.argv[1:])
    finish_distributed()
