#!/usr/bin/env python3
"""Recipe: linear evaluation (EVAR protocol) of a frozen AaSP encoder.

Usage::

    python recipes/linear_eval/evaluate.py hparams/linear_eval/evar.yaml \
        --checkpoint=results/aasp_base/1986 --tasks=esc50,us8k \
        --esc50_folder=/data/ESC-50 --us8k_folder=/data/UrbanSound8K
    python recipes/linear_eval/evaluate.py hparams/linear_eval/evar.yaml \
        --random_init=True --model_hparams=hparams/aasp_base.yaml \
        --tasks=esc50 --esc50_folder=/data/ESC-50 --output_folder=results/le_random

Every top-level YAML key can be overridden on the command line; ``--device``
(``cpu``, ``cuda:0``) and ``--precision`` (``bf16`` autocast of the encoder
on CUDA) are SpeechBrain run options. Each task is prepared, embedded
(cached: a re-run only trains the probes), and evaluated; the table goes to
``<output_folder>/results.{md,csv,json}``.
"""

import logging
import sys

from aasp_sb import cli  # first: silences SpeechBrain's torchvision warning

# isort: split
import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml

from aasp_sb.evaluation.linear_eval import evaluate_tasks, tasks_from_hparams
from aasp_sb.evaluation.linear_probe import results_table
from aasp_sb.inference import load_encoder

logger = logging.getLogger(__name__)


def main(argv=None):
    """Parses arguments, loads the encoder, evaluates the tasks.

    Arguments
    ---------
    argv : list of str, optional
        Command-line arguments (default ``sys.argv[1:]``).

    Returns
    -------
    dict
        ``{task: result}``.
    """
    argv = sys.argv[1:] if argv is None else argv
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    cli.check_overrides(hparams_file, overrides, prog="evaluate.py")
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    specs = tasks_from_hparams(hparams)  # fail on missing folders before any work
    for name, spec in specs.items():  # ... and on folders that do not exist
        if spec.data_folder is not None and spec.splits is None:
            cli.check_folder(spec.data_folder, f"{name}_folder", prog="evaluate.py")
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    device = run_opts.get("device") or sb.utils.distributed.infer_device()
    model = load_encoder(
        checkpoint=hparams["checkpoint"],
        which=hparams["which"],
        hparams_file=hparams["model_hparams"],
        overrides=hparams["model_overrides"] or None,
        random_init=hparams["random_init"],
        seed=hparams["seed"],
        device=device,
        precision=run_opts.get("precision"),
    )
    probe_kwargs = {
        "lr": hparams["lr"],
        "max_epochs": hparams["max_epochs"],
        "patience": hparams["patience"],
        "batch_size": hparams["probe_batch_size"],
        "weight_decay": hparams["weight_decay"],
        "device": device,
    }
    results = evaluate_tasks(
        model,
        specs,
        hparams["output_folder"],
        save_folder=hparams["save_folder"],
        cache_folder=hparams["cache_folder"],
        seeds=hparams["probe_seeds"],
        prep_seed=hparams["prep_seed"],
        crop_seed=hparams["crop_seed"],
        batch_size=hparams["batch_size"],
        num_workers=hparams["num_workers"],
        layer=hparams["layer"],
        pooling=hparams["pooling"],
        mask_padding=hparams["mask_padding"],
        probe_kwargs=probe_kwargs,
        results_name=hparams["results_name"],
    )
    table = results_table(results)
    logger.info("Linear evaluation results:\n%s", table)
    print(table)
    return results


if __name__ == "__main__":
    main()
