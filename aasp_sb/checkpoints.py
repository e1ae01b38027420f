"""Checkpointing: atomic saves and weights-only loading on top of SpeechBrain's Checkpointer.

SpeechBrain 1.1.2 writes a checkpoint's meta file first and its parameter
files after, into the final ``CKPT+...`` folder: a run killed while saving
leaves a folder that looks complete and is loaded on the next start.
:class:`AtomicCheckpointer` writes everything into a hidden temporary folder,
the meta file last, and renames it into place (``os.replace`` of a directory
is atomic on POSIX), so a kill during saving leaves the previous checkpoint as
the newest usable one.

Every ``torch.nn.Module`` and optimiser it restores is read with
``torch.load(..., weights_only=True)``: a checkpoint that tries to run code
while unpickling is refused.
"""

import logging
import os
import pathlib
import shutil

import torch
from speechbrain.utils.checkpoints import (
    DEFAULT_SAVE_HOOKS,
    METAFNAME,
    PARAMFILE_EXT,
    Checkpoint,
    Checkpointer,
    get_default_hook,
)
from speechbrain.utils.distributed import (
    ddp_barrier,
    ddp_broadcast,
    if_main_process,
)

logger = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint file could not be read as plain tensors and containers."""


def safe_torch_load(path, map_location="cpu"):
    """``torch.load`` restricted to weights (no code execution), with a clear error.

    Arguments
    ---------
    path : str or pathlib.Path
        File to read.
    map_location : str or torch.device
        Where to put the tensors.

    Returns
    -------
    object
        The stored state (tensors, numbers, strings, containers).

    Example
    -------
    >>> tmp = getfixture("tmp_path")
    >>> torch.save({"w": torch.ones(2)}, tmp / "ok.ckpt")
    >>> safe_torch_load(tmp / "ok.ckpt")["w"].tolist()
    [1.0, 1.0]
    """
    try:
        return torch.load(str(path), map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises UnpicklingError / RuntimeError
        raise UnsafeCheckpointError(
            f"Refusing to load {path}: it is not a weights-only checkpoint "
            f"(torch.load(weights_only=True) failed: {str(err).splitlines()[0]})"
        ) from err


def safe_load_hook(obj, path, end_of_epoch=False):
    """SpeechBrain load hook for modules and optimisers, weights-only.

    Arguments
    ---------
    obj : torch.nn.Module or torch.optim.Optimizer
        Object to restore.
    path : str or pathlib.Path
        Its parameter file.
    end_of_epoch : bool
        Unused (SpeechBrain's hook signature).
    """
    del end_of_epoch
    obj.load_state_dict(safe_torch_load(path))


class AtomicCheckpointer(Checkpointer):
    """A SpeechBrain ``Checkpointer`` with atomic saves and weights-only loads.

    Arguments are those of :class:`speechbrain.utils.checkpoints.Checkpointer`.

    Example
    -------
    >>> tmp = getfixture("tmp_path")
    >>> model = torch.nn.Linear(2, 2)
    >>> ckpt = AtomicCheckpointer(tmp, recoverables={"model": model})
    >>> _ = ckpt.save_checkpoint(meta={"loss": 1.0})
    >>> [p.name.startswith("CKPT") for p in tmp.iterdir()]
    [True]
    >>> ckpt.recover_if_possible().meta["loss"]
    1.0
    """

    def add_recoverable(
        self,
        name,
        obj,
        custom_load_hook=None,
        custom_save_hook=None,
        optional_load=False,
    ):
        """Registers ``obj``; modules and optimisers get the weights-only loader."""
        if custom_load_hook is None and isinstance(
            obj, (torch.nn.Module, torch.optim.Optimizer)
        ):
            custom_load_hook = safe_load_hook
        super().add_recoverable(
            name, obj, custom_load_hook, custom_save_hook, optional_load
        )

    def save_checkpoint(
        self, meta=None, end_of_epoch=True, name=None, verbosity=logging.INFO
    ):
        """Saves into a temporary folder, meta last, then renames it into place.

        Arguments
        ---------
        meta : mapping
            Added to the meta file (plain Python values only).
        end_of_epoch : bool
            Whether this is an end-of-epoch checkpoint.
        name : str, optional
            Custom checkpoint name.
        verbosity : int
            Logging level.

        Returns
        -------
        Checkpoint or None
            The saved checkpoint (None on non-main processes).
        """
        if meta is None:
            meta = {}
        final_dir = tmp_dir = None
        if if_main_process():
            if name is None:
                final_dir = self._new_checkpoint_dirpath()
            else:
                final_dir = self._custom_checkpoint_dirpath(name)
            tmp_dir = final_dir.parent / (TMP_PREFIX + final_dir.name)
            self.remove_stale_temporaries()
            os.makedirs(tmp_dir)
        final_dir = ddp_broadcast(final_dir, src=0)
        tmp_dir = ddp_broadcast(tmp_dir, src=0)

        paramfiles = {}
        for key, obj in self.recoverables.items():
            savepath = tmp_dir / f"{key}{PARAMFILE_EXT}"
            paramfiles[key] = final_dir / savepath.name
            if key in self.custom_save_hooks:
                self.custom_save_hooks[key](obj, savepath)
                continue
            hook = get_default_hook(obj, DEFAULT_SAVE_HOOKS)
            if hook is None:
                raise RuntimeError(
                    f"Don't know how to save recoverable {key!r} of type {type(obj)}"
                )
            hook(obj, savepath)
        ddp_barrier()  # every rank's parameter files are written
        saved = None
        if if_main_process():
            saved_meta = self._save_checkpoint_metafile(
                tmp_dir / METAFNAME, meta, end_of_epoch
            )
            os.replace(tmp_dir, final_dir)
            kind = "end-of-epoch" if end_of_epoch else "intra-epoch"
            logger.log(verbosity, f"Saved an {kind} checkpoint in {final_dir}")
            saved = Checkpoint(final_dir, saved_meta, paramfiles)
        # The checkpoint is in place before any rank goes on: SpeechBrain's
        # save_and_keep_only then lists the checkpoints on every rank and calls
        # one collective per deletion; a rank listing before the rename would
        # see one checkpoint fewer and the ranks would deadlock.
        ddp_barrier()
        return saved

    def remove_stale_temporaries(self):
        """Deletes half-written checkpoints left by a run killed while saving."""
        root = pathlib.Path(self.checkpoints_dir)
        if not root.exists():
            return
        for path in root.iterdir():
            if path.name.startswith(TMP_PREFIX) and path.is_dir():
                logger.warning("Removing incomplete checkpoint %s", path)
                shutil.rmtree(path, ignore_errors=True)
