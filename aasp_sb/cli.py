"""Command-line helpers shared by the recipes and console scripts.

- :func:`check_overrides`: every ``--key=value`` given to a recipe must name
  a top-level key of its YAML; an unknown one fails in one line with a
  suggestion (``unknown override --batchsize; did you mean --batch_size?``)
  instead of HyperPyYAML's traceback listing every key.
- :func:`check_recipe_args`: the same for a list of extra arguments that a
  wrapper script passes on to a SpeechBrain recipe.
- :func:`parse_args_or_suggest`: argparse, with the same suggestion for an
  unknown option.
- :func:`check_folder`: a missing input folder fails before anything is
  written.
- :func:`quiet_speechbrain`: drops SpeechBrain's import-time warning
  ``torchvision is not available - cannot save figures`` (we save no
  figures through SpeechBrain; our plots use matplotlib). Importing this
  module installs the filter, so import it before SpeechBrain.

Errors are raised as ``SystemExit`` carrying the one-line message (exit
status 1, the message on stderr).
"""

import difflib
import logging
import os
import pathlib

import yaml

#: The SpeechBrain logger that warns about torchvision on import.
_TRAIN_LOGGER = "speechbrain.utils.train_logger"
_TORCHVISION_WARNING = "torchvision is not available"


class _DropMessage(logging.Filter):
    """Drops log records whose message starts with a given text."""

    def __init__(self, prefix):
        super().__init__()
        self.prefix = prefix

    def filter(self, record):
        return not str(record.msg).startswith(self.prefix)


def quiet_speechbrain():
    """Silences SpeechBrain's "torchvision is not available" warning (idempotent).

    Only that message of ``speechbrain.utils.train_logger`` is dropped; it is
    logged when SpeechBrain is first imported, so call this (or import this
    module) before importing SpeechBrain.

    Example
    -------
    >>> quiet_speechbrain()
    >>> log = logging.getLogger("speechbrain.utils.train_logger")
    >>> sum(isinstance(f, _DropMessage) for f in log.filters)
    1
    """
    log = logging.getLogger(_TRAIN_LOGGER)
    if not any(isinstance(f, _DropMessage) for f in log.filters):
        log.addFilter(_DropMessage(_TORCHVISION_WARNING))


quiet_speechbrain()


def suggest(name, candidates):
    """The closest candidate to ``name`` (or None when nothing is close).

    Arguments
    ---------
    name : str
        What the user typed.
    candidates : iterable of str
        Valid names.

    Returns
    -------
    str or None

    Example
    -------
    >>> suggest("batchsize", ["batch_size", "base_lr", "seed"])
    'batch_size'
    >>> suggest("epochs", ["number_of_epochs", "seed"])
    'number_of_epochs'
    >>> suggest("zzz", ["batch_size"]) is None
    True
    """
    candidates = [str(c) for c in candidates]
    folded = {c.replace("_", "").replace("-", "").lower(): c for c in candidates}
    key = str(name).replace("_", "").replace("-", "").lower()
    if key in folded:
        return folded[key]
    close = difflib.get_close_matches(str(name), candidates, n=1, cutoff=0.6)
    if close:
        return close[0]
    # a part of a longer key ("epochs" -> "number_of_epochs")
    parts = [c for f, c in folded.items() if len(key) >= 3 and key in f]
    if parts:
        return max(parts, key=lambda c: difflib.SequenceMatcher(None, name, c).ratio())
    return None


def unknown_message(name, candidates, what="override", prefix="--"):
    """``unknown override --x; did you mean --y?`` (or the valid names).

    Arguments
    ---------
    name : str
        The unknown name.
    candidates : iterable of str
        Valid names.
    what : str
        What the name is (``"override"``, ``"option"``).
    prefix : str
        Shown before names (``"--"``).

    Returns
    -------
    str

    Example
    -------
    >>> unknown_message("batchsize", ["batch_size", "seed"])
    'unknown override --batchsize; did you mean --batch_size?'
    >>> unknown_message("zzz", ["b", "a"])
    'unknown override --zzz; valid: --a, --b'
    """
    candidates = sorted(str(c) for c in candidates)
    best = suggest(name, candidates)
    msg = f"unknown {what} {prefix}{name}"
    if best is not None:
        return f"{msg}; did you mean {prefix}{best}?"
    shown = ", ".join(f"{prefix}{c}" for c in candidates[:12])
    more = " ..." if len(candidates) > 12 else ""
    return f"{msg}; valid: {shown}{more}"


def yaml_keys(hparams_file):
    r"""Top-level keys of a (Hyper)PyYAML file, without building anything.

    Arguments
    ---------
    hparams_file : str or pathlib.Path
        The YAML (``!new:``, ``!ref`` and other tags are kept as they are).

    Returns
    -------
    list of str

    Example
    -------
    >>> p = getfixture("tmp_path") / "h.yaml"
    >>> _ = p.write_text("seed: 1\nmodel: !new:torch.nn.Linear [2, 2]\n")
    >>> yaml_keys(p)
    ['seed', 'model']
    """
    import ruamel.yaml

    text = pathlib.Path(hparams_file).read_text(encoding="utf-8")
    doc = ruamel.yaml.YAML(typ="rt").load(text)
    return [str(k) for k in (doc or {})]


def _as_dict(overrides):
    if overrides is None or overrides == "":
        return {}
    if isinstance(overrides, dict):
        return overrides
    return dict(yaml.safe_load(overrides) or {})


def _fail(prog, message):
    raise SystemExit(f"{prog}: error: {message}" if prog else f"error: {message}")


def check_overrides(hparams_file, overrides, prog=None):
    r"""Fails in one line when an override is not a key of the recipe's YAML.

    Call it right after ``sb.parse_arguments``, before the YAML is loaded.

    Arguments
    ---------
    hparams_file : str or pathlib.Path
        The recipe's YAML.
    overrides : str or dict
        SpeechBrain's override string (YAML) or a dict.
    prog : str, optional
        Name shown before the message (default: the YAML's recipe, none).

    Raises
    ------
    SystemExit
        ``"<prog>: error: unknown override --x; did you mean --y?"``.

    Example
    -------
    >>> p = getfixture("tmp_path") / "h.yaml"
    >>> _ = p.write_text("batch_size: 8\nseed: 1\n")
    >>> check_overrides(p, "seed: 3")
    >>> check_overrides(p, "batchsize: 4", prog="train.py")
    Traceback (most recent call last):
    SystemExit: train.py: error: unknown override --batchsize; did you mean --batch_size?
    """
    if not os.path.isfile(str(hparams_file)):
        _fail(prog, f"hyper-parameter file '{hparams_file}' does not exist")
    given = _as_dict(overrides)
    if not given:
        return
    keys = yaml_keys(hparams_file)
    for name in given:
        if str(name) not in keys:
            _fail(prog, unknown_message(name, keys))


def check_recipe_args(hparams_file, args, prog=None):
    r""":func:`check_overrides` for arguments passed on to a SpeechBrain recipe.

    SpeechBrain's own run options (``--device``, ``--debug``, ...) are
    separated out exactly as the recipe will do it (``sb.parse_arguments``).

    Arguments
    ---------
    hparams_file : str or pathlib.Path
        The recipe's YAML.
    args : list of str
        Extra command-line arguments (``--key=value`` or ``--key value``).
    prog : str, optional
        Name shown before the message.

    Example
    -------
    >>> p = getfixture("tmp_path") / "h.yaml"
    >>> _ = p.write_text("number_of_epochs: 8\n")
    >>> check_recipe_args(p, ["--number_of_epochs=2", "--device=cpu"])
    >>> check_recipe_args(p, ["--epochs", "2"])
    Traceback (most recent call last):
    SystemExit: error: unknown override --epochs; did you mean --number_of_epochs?
    """
    import speechbrain as sb

    _, _, overrides = sb.parse_arguments([str(hparams_file), *args])
    check_overrides(hparams_file, overrides, prog)


def parse_args_or_suggest(parser, argv=None):
    """``parser.parse_args`` whose unknown-option error suggests the closest one.

    Arguments
    ---------
    parser : argparse.ArgumentParser
        The parser.
    argv : list of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    argparse.Namespace

    Example
    -------
    >>> import argparse
    >>> p = argparse.ArgumentParser(prog="demo")
    >>> _ = p.add_argument("--per_class", type=int, default=1)
    >>> p.exit = lambda status=0, message=None: print(message.strip())
    >>> _ = parse_args_or_suggest(p, ["--perclass=3"])
    demo: error: unknown option --perclass; did you mean --per_class?
    """
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        options = [
            s[2:]
            for action in parser._actions
            for s in action.option_strings
            if s.startswith("--")
        ]
        first = next((u for u in unknown if u.startswith("-")), unknown[0])
        name = first.lstrip("-").split("=", 1)[0]
        if first.startswith("-"):
            message = unknown_message(name, options, what="option")
        else:
            message = f"unexpected argument {first!r}"
        parser.exit(2, f"{parser.prog}: error: {message}\n")
    return args


def check_folder(path, key="data_folder", prog=None):
    """Fails in one line when an input folder does not exist.

    Call it before the output folder is created, so nothing is left behind.

    Arguments
    ---------
    path : str
        The folder.
    key : str
        The YAML key / option that gave it.
    prog : str, optional
        Name shown before the message.

    Example
    -------
    >>> check_folder(str(getfixture("tmp_path")))
    >>> check_folder("/no/such/folder")
    Traceback (most recent call last):
    SystemExit: error: --data_folder=/no/such/folder: the folder does not exist
    """
    if path is None or str(path) == "":
        _fail(prog, f"give --{key}=FOLDER")
    if not os.path.isdir(str(path)):
        what = "is not a folder" if os.path.exists(str(path)) else "the folder does not exist"
        _fail(prog, f"--{key}={path}: {what}")


def console_main(run, argv=None, prog="aasp", errors=(ValueError, FileNotFoundError, ImportError)):
    """A console script's ``main``: ``run(argv)``, exit status 0; bad input one line, status 1.

    Arguments
    ---------
    run : callable
        The programmatic entry point (its return value is not the exit status).
    argv : list of str, optional
        Arguments (default ``sys.argv[1:]``).
    prog : str
        Named in the error line.
    errors : tuple
        Exceptions that mean bad input (a missing file, an unusable manifest).

    Returns
    -------
    int
        0.

    Example
    -------
    >>> console_main(lambda argv: {"result": 1}, [])
    0
    """
    import sys

    try:
        run(argv)
    except errors as err:
        sys.exit(f"{prog}: error: {err}")
    return 0
