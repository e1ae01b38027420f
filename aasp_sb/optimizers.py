"""Optimiser chosen by name, so a YAML key (and a command-line override) switches it.

HyperPyYAML overrides (``--key=value``) change values, not tags: with
``opt_class: !name:torch.optim.SGD`` the optimiser can only be changed by
editing the YAML. The fine-tuning YAMLs instead write::

    optimizer: sgd              # sgd | adamw | adam
    momentum: 0.9               # used by sgd
    betas: [0.9, 0.999]         # used by adamw / adam
    opt_class: !apply:aasp_sb.optimizers.optimizer_class
        name: !ref <optimizer>
        momentum: !ref <momentum>
        betas: !ref <betas>

and ``--optimizer=adamw`` switches. Each optimiser takes the options it
understands and ignores the others (that is what lets one YAML hold both
sets); ``None`` means "the optimiser's default".
"""

import functools

import torch

#: name -> (class, options it accepts)
OPTIMIZERS = {
    "sgd": (torch.optim.SGD, ("momentum", "dampening", "nesterov")),
    "adamw": (torch.optim.AdamW, ("betas", "eps", "amsgrad")),
    "adam": (torch.optim.Adam, ("betas", "eps", "amsgrad")),
}
#: every option some optimiser takes
KNOWN_OPTIONS = frozenset(opt for _, accepted in OPTIMIZERS.values() for opt in accepted)


def optimizer_class(name, **options):
    """An ``opt_class`` for a SpeechBrain ``Brain``: the named optimiser with its options.

    Arguments
    ---------
    name : str
        ``"sgd"``, ``"adamw"`` or ``"adam"`` (case-insensitive).
    **options
        Optimiser options; those the named optimiser does not take, and those
        set to ``None``, are left out (an option no optimiser takes is an
        error). Weight decay and learning rate are set
        per parameter group by the Brain.

    Returns
    -------
    functools.partial
        Called with the parameter groups, builds the optimiser (``.keywords``
        holds the options, as for a ``!name:`` tag).

    Example
    -------
    >>> make = optimizer_class("sgd", momentum=0.9, betas=[0.9, 0.95])
    >>> opt = make([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    >>> type(opt).__name__, opt.defaults["momentum"]
    ('SGD', 0.9)
    >>> make = optimizer_class("AdamW", momentum=0.9, betas=[0.9, 0.95], eps=None)
    >>> make.func.__name__, make.keywords
    ('AdamW', {'betas': (0.9, 0.95)})
    """
    key = str(name).lower()
    if key not in OPTIMIZERS:
        raise ValueError(
            f"optimizer: unknown name {name!r}; choose one of {sorted(OPTIMIZERS)}"
        )
    unknown = sorted(set(options) - KNOWN_OPTIONS)
    if unknown:
        raise ValueError(
            f"optimizer: unknown option(s) {unknown}; known: {sorted(KNOWN_OPTIONS)}"
        )
    cls, accepted = OPTIMIZERS[key]
    kept = {k: v for k, v in options.items() if k in accepted and v is not None}
    if "betas" in kept:
        kept["betas"] = tuple(float(b) for b in kept["betas"])
    return functools.partial(cls, **kept)
