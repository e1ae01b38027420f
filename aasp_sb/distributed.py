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


class ShardSampler(torch.utils.data.Sampler):
    """Every ``world``-th index from ``rank``: disjoint evaluation shards, no padding.

    SpeechBrain gives only the training loader a ``DistributedSampler``, so
    every rank would evaluate the whole validation set; with this sampler each
    rank evaluates its share (sizes differ by at most one, nothing is
    duplicated) and the statistics are reduced across ranks afterwards.

    Arguments
    ---------
    num_items : int
        Dataset length.
    rank, world : int
        This process's rank and the number of processes.

    Example
    -------
    >>> list(ShardSampler(7, 1, 3))
    [1, 4]
    """

    def __init__(self, num_items, rank, world):
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside a world of {world}")
        self.num_items, self.rank, self.world = int(num_items), int(rank), int(world)

    def __iter__(self):
        return iter(range(self.rank, self.num_items, self.world))

    def __len__(self):
        return len(range(self.rank, self.num_items, self.world))
