"""Data preparation for the downstream evaluation tasks.

Each task module reads its dataset in the official layout (as users download
it) and writes SpeechBrain CSVs (``ID,duration,wav,label``) plus
``classes.txt``; see :mod:`aasp_sb.data.tasks.base` for the shared rules.

=========  ==========================  =======  ==========  ============
name       dataset                     classes  metric      splits
=========  ==========================  =======  ==========  ============
as20k      AudioSet-20K                527      mAP         official
esc50      ESC-50                      50       accuracy    5 folds
us8k       UrbanSound8K                10       accuracy    10 folds
spcv2      Speech Commands V2          35       accuracy    official
nsynth     NSynth (families)           11       accuracy    official
vc1        VoxCeleb1 identification    1251     accuracy    official
cremad     CREMA-D                     6        accuracy    by actor
gtzan      GTZAN                       10       accuracy    filtered
voxforge   VoxForge (language ID)      6        accuracy    by session
surge      Surge synth (pitch)         88       accuracy    by tone
=========  ==========================  =======  ==========  ============

Every module exposes ``info`` (nominal :class:`TaskInfo`) and
``prepare(data_folder, save_folder, seed=0) -> (TaskInfo, list[Split])``
(also as ``prepare_<name>``).

Example
-------
>>> from aasp_sb.data.tasks import get_task
>>> get_task("esc50").info.num_classes
50
"""

from __future__ import annotations

from . import (
    as20k,
    cremad,
    esc50,
    gtzan,
    nsynth,
    spcv2,
    surge,
    us8k,
    vc1,
    voxforge,
)
from .base import Split, TaskInfo

__all__ = ["EVAR_NINE", "TASKS", "Split", "TaskInfo", "get_task", "prepare_task", "valid_source"]

#: Task name -> module with ``info`` and ``prepare``.
TASKS = {
    "as20k": as20k,
    "esc50": esc50,
    "us8k": us8k,
    "spcv2": spcv2,
    "nsynth": nsynth,
    "vc1": vc1,
    "cremad": cremad,
    "gtzan": gtzan,
    "voxforge": voxforge,
    "surge": surge,
}

#: EVAR's nine linear-evaluation tasks (the "9-task average" of M2D's papers).
EVAR_NINE = ("esc50", "us8k", "spcv2", "vc1", "voxforge", "cremad", "gtzan", "nsynth", "surge")

_ALIASES = {
    "audioset20k": "as20k",
    "audioset": "as20k",
    "urbansound8k": "us8k",
    "speechcommands": "spcv2",
    "speechcommandsv2": "spcv2",
    "voxceleb1": "vc1",
}


def get_task(name):
    """Returns the module of a task by name.

    Names are case-insensitive and ignore ``-`` and ``_`` (``"ESC-50"`` is
    ``"esc50"``); a few long names are accepted (``"urbansound8k"``).

    Arguments
    ---------
    name : str
        Task name, one of :data:`TASKS`.

    Returns
    -------
    module
        The task module (``.info``, ``.prepare``).

    Example
    -------
    >>> get_task("ESC-50").info.clip_seconds
    5.0
    >>> get_task("nope")
    Traceback (most recent call last):
    ...
    KeyError: "unknown task 'nope'; valid names: as20k, cremad, esc50, gtzan, nsynth, spcv2, surge, us8k, vc1, voxforge"
    """
    key = str(name).lower().replace("-", "").replace("_", "").replace(" ", "")
    key = _ALIASES.get(key, key)
    if key not in TASKS:
        raise KeyError(
            f"unknown task {name!r}; valid names: {', '.join(sorted(TASKS))}"
        )
    return TASKS[key]


def prepare_task(name, data_folder, save_folder, seed=0, **kwargs):
    """Runs a task's ``prepare`` by name.

    Arguments
    ---------
    name : str
        Task name (see :func:`get_task`).
    data_folder : str or Path
        Dataset folder in the official layout.
    save_folder : str or Path
        Output folder.
    seed : int
        Seed of any derived split.
    **kwargs
        Task-specific options (e.g. ``split_folder`` for GTZAN).

    Returns
    -------
    tuple
        ``(TaskInfo, list of Split)``.

    Example
    -------
    >>> try:
    ...     prepare_task("esc50", "/nonexistent", "/tmp/unused")
    ... except FileNotFoundError as e:
    ...     print(e)
    ESC-50: meta/esc50.csv not found under /nonexistent
    """
    return get_task(name).prepare(data_folder, save_folder, seed=seed, **kwargs)


def valid_source(name):
    """Where a task's validation set comes from: ``"split"`` or ``"holdout"``.

    ``"holdout"`` (ESC-50, US8K, AS-20K): the task has no validation set of
    its own and preparation holds out a class-complete 10 % of train;
    ``"split"``: an official or fixed validation part (also for unknown
    names, e.g. a CSV task that brings its own ``valid.csv``).

    Arguments
    ---------
    name : str
        Task name.

    Returns
    -------
    str
        ``"split"`` or ``"holdout"``.

    Example
    -------
    >>> valid_source("esc50"), valid_source("spcv2"), valid_source("csv")
    ('holdout', 'split', 'split')
    """
    try:
        module = get_task(name)
    except KeyError:
        return "split"
    return getattr(module, "VALID_SOURCE", "split")
