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


def init_distributed(run_opts):
    """SpeechBrain's ``ddp_init_group``, safe across ``torchrun --max-restarts`` restarts.

    Under ``torchrun`` the workers share the elastic agent's key-value store,
    and it outlives a restart: a restarted group would read the previous
    attempt's addresses (gloo: "connectFullMesh failed ... Connection
    refused"). Here each attempt gets its own key prefix
    (``TORCHELASTIC_RESTART_COUNT``); everything else is as in
    :func:`speechbrain.utils.distributed.ddp_init_group` (which runs
    unchanged outside torchrun, or without the agent's store).

    Arguments
    ---------
    run_opts : dict
        SpeechBrain run options (``distributed_backend``).

    Example
    -------
    >>> init_distributed({"distributed_backend": "gloo"})  # not under torchrun: nothing
    """
    import datetime
    import os

    from speechbrain.utils.distributed import ddp_init_group

    env = os.environ
    if "RANK" not in env or "LOCAL_RANK" not in env:
        return ddp_init_group(run_opts)
    if env.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or torch.distributed.is_initialized():
        return ddp_init_group(run_opts)
    backend = run_opts.get("distributed_backend", "nccl")
    rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    if backend == "nccl":
        torch.cuda.set_device(torch.device(f"cuda:{int(env['LOCAL_RANK'])}"))
    timeout = datetime.timedelta(seconds=7200)
    store = torch.distributed.TCPStore(
        env["MASTER_ADDR"], int(env["MASTER_PORT"]), world, is_master=False, timeout=timeout
    )
    attempt = env.get("TORCHELASTIC_RESTART_COUNT", "0")
    store = torch.distributed.PrefixStore(f"aasp_attempt_{attempt}", store)
    torch.distributed.init_process_group(
        backend=backend, store=store, rank=rank, world_size=world, timeout=timeout
    )
    return None
