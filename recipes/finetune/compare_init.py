#!/usr/bin/env python3
"""Pre-trained vs random initialisation on a labelled CSV task (the demo corpus).

Fine-tunes ``hparams/finetune/demo.yaml`` twice with identical settings and
seed: once from the pre-trained run (``--pretrained_path``), once from a
random initialisation of the same architecture (``--model_hparams`` = the
run), then prints both test accuracies and writes ``compare.json``::

    python -c "from aasp_sb.data.demo import make_demo_corpus; make_demo_corpus('/tmp/corpus')"
    python recipes/pretrain/train.py hparams/aasp_tiny.yaml --data_folder=/tmp/corpus \
        --train_csv=/tmp/corpus/train.csv --valid_csv=/tmp/corpus/valid.csv \
        --output_folder=/tmp/aasp_tiny_run
    python recipes/finetune/compare_init.py --pretrained_path=/tmp/aasp_tiny_run \
        --corpus=/tmp/corpus --output_folder=/tmp/compare_init

``--labels_per_class=N`` fine-tunes both on the first ``N`` training clips
of each class (same validation and test sets): the few-label setting where
pre-training is expected to matter most. Any further ``--key=value`` is
passed to both fine-tuning runs (e.g. ``--number_of_epochs=10``,
``--device=cpu``, ``--freeze_encoder=True``).
"""

import argparse
import json
import os
import pathlib
import shutil
import sys

from aasp_sb.cli import check_recipe_args
from aasp_sb.data.folder import first_per_class, read_csv, write_csv
from aasp_sb.recipe_import import import_recipe

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DEFAULT_HPARAMS = ROOT / "hparams" / "finetune" / "demo.yaml"


def few_label_corpus(corpus, out_folder, labels_per_class):
    """Writes a corpus folder whose training manifest keeps ``labels_per_class`` clips per class.

    ``valid.csv``, ``test.csv`` and ``classes.txt`` (if any) are copied
    unchanged; the audio is not copied (the manifests' paths are kept as
    they are).

    Arguments
    ---------
    corpus : str
        Folder with ``train.csv``, ``valid.csv``, ``test.csv``, ``classes.txt``.
    out_folder : str
        Where the reduced corpus is written.
    labels_per_class : int
        Training clips kept per class (the first ones in manifest order).

    Returns
    -------
    str
        ``out_folder``.
    """
    os.makedirs(out_folder, exist_ok=True)
    for name in ("train.csv", "valid.csv", "test.csv", "classes.txt"):
        src = os.path.join(str(corpus), name)
        if not os.path.isfile(src):
            if name == "classes.txt":  # optional: the recipe reads the labels
                continue
            raise FileNotFoundError(f"{src}: missing (a corpus needs {name})")
        if name == "train.csv":
            rows = read_csv(src)
            kept = first_per_class(rows, labels_per_class, where=src)
            fields = list(rows[0].keys())
            write_csv(os.path.join(out_folder, name), kept, fields)
        else:
            shutil.copyfile(src, os.path.join(out_folder, name))
    return out_folder


def compare_init(
    pretrained_path,
    corpus,
    output_folder,
    hparams_file=DEFAULT_HPARAMS,
    extra_args=(),
    labels_per_class=None,
):
    """Fine-tunes from the pre-trained run and from random init; returns both results.

    Arguments
    ---------
    pretrained_path : str
        Pre-training run folder (or checkpoint).
    corpus : str
        Folder with ``train.csv``, ``valid.csv``, ``test.csv`` and ``classes.txt``.
    output_folder : str
        Runs go to ``<output_folder>/pretrained`` and ``<output_folder>/random``.
    hparams_file : str
        Fine-tuning YAML (a ``task: csv`` one).
    extra_args : sequence of str
        Further command-line overrides for both runs.
    labels_per_class : int, optional
        Fine-tune on the first ``N`` training clips of each class only (the
        reduced manifests go to ``<output_folder>/corpus``).

    Returns
    -------
    dict
        ``{"pretrained": summary, "random": summary, "metric": str}``; each
        summary as returned by the recipe's ``main`` (``mean`` is the test
        metric of the single split).
    """
    train = import_recipe(HERE / "train.py", "aasp_finetune_recipe")
    if labels_per_class:
        corpus = few_label_corpus(
            corpus, os.path.join(str(output_folder), "corpus"), labels_per_class
        )
    common = [str(hparams_file), f"--data_folder={corpus}", *extra_args]
    runs = {
        "pretrained": [f"--pretrained_path={pretrained_path}"],
        "random": [
            "--pretrained_path=null",
            f"--model_hparams={pretrained_path}",
        ],
    }
    out = {}
    for name, args in runs.items():
        folder = os.path.join(str(output_folder), name)
        out[name] = train.main(common + args + [f"--output_folder={folder}"])
    out["metric"] = out["pretrained"]["metric"]
    record = {
        "metric": out["metric"],
        "pretrained_path": str(pretrained_path),
        "corpus": str(corpus),
        "pretrained": out["pretrained"]["mean"],
        "random": out["random"]["mean"],
        "args": list(extra_args),
        "labels_per_class": labels_per_class,
    }
    os.makedirs(str(output_folder), exist_ok=True)
    with open(
        os.path.join(str(output_folder), "compare.json"), "w", encoding="utf-8"
    ) as f:
        json.dump(record, f, indent=2)
    return out


def main(argv=None):
    """Command-line entry point; prints the two test accuracies."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pretrained_path", required=True)
    parser.add_argument("--corpus", required=True)
    parser.add_argument(
        "--output_folder", default="results/finetune/compare_init"
    )
    parser.add_argument("--hparams", default=str(DEFAULT_HPARAMS))
    parser.add_argument(
        "--labels_per_class",
        type=int,
        default=None,
        help="fine-tune on the first N training clips of each class",
    )
    args, extra = parser.parse_known_args(
        sys.argv[1:] if argv is None else argv
    )
    # the rest goes to the fine-tuning recipe: YAML keys or SpeechBrain options
    check_recipe_args(args.hparams, extra, prog="compare_init.py")
    out = compare_init(
        args.pretrained_path,
        args.corpus,
        args.output_folder,
        args.hparams,
        extra,
        args.labels_per_class,
    )
    metric = out["metric"]
    print(
        f"\nTest {metric} on {args.corpus} (same settings, seed and architecture):"
    )
    for name in ("pretrained", "random"):
        value = out[name]["mean"]
        shown = "n/a" if value is None else f"{100 * value:.2f} %"
        print(f"  {name:<10} init: {shown}")
    print(f"Details: {os.path.join(args.output_folder, 'compare.json')}")
    return out


if __name__ == "__main__":
    main()
