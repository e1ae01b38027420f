"""Process-group clean-up for recipes started with ``torchrun``.

SpeechBrain's ``ddp_init_group`` creates the process group but nothing tears
it down. A rank that leaves the interpreter while another still works (rank 0
writing the last checkpoint) can then abort in the backend's destructor
(gloo: ``terminate called without an active exception``), and ``torchrun``
reports the whole run as failed although training finished.
"""

import torch


def finish_distributed():
    """Waits for every rank, then destroys the process group (no-op without one).

    Example
    -------
    >>> finish_distributed()  # single process: nothing to do
    """
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
