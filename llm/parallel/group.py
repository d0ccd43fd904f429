"""The process groups of a tensor-parallel split, built without torch.distributed's global state.

Each split has two groups over one ``TCPStore`` that rank 0 hosts on 127.0.0.1 (a free
port picked by the OS):
- ``model``: the all-reduces inside the forward pass; NCCL on CUDA, gloo on CPU.
- ``control``: gloo on the CPU, rank 0's broadcast of each step's inputs. Kept apart so
  an idle worker waits for the next step on a socket (no GPU spin, no NCCL watchdog) with
  a long timeout, while the model's collectives keep a bounded one.

Groups are made directly (``ProcessGroupGloo(store, rank, size, options)``), not through
``init_process_group``, so a process may hold several splits in turn (tests do) and
nothing outlives the engine that made them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch.distributed as dist

HOST = "127.0.0.1"


@dataclass
class Groups:
    control: Any
    model: Any


def make_store(world_size: int, timeout_s: float, port: int = 0) -> dist.TCPStore:
    """Rank 0: host the rendezvous store (``port`` 0: the OS picks one, read it from ``.port``)."""
    return dist.TCPStore(
        HOST,
        port,
        world_size,
        is_master=True,
        wait_for_workers=False,
        timeout=timedelta(seconds=timeout_s),
    )


def join_store(port: int, world_size: int, timeout_s: float) -> dist.TCPStore:
    """Workers: connect to rank 0's store."""
    return dist.TCPStore(
        HOST, port, world_size, is_master=False, timeout=timedelta(seconds=timeout_s)
    )


def gloo_group(store: Any, prefix: str, rank: int, world_size: int, timeout_s: float) -> Any:
    options = dist.ProcessGroupGloo._Options()  # type: ignore[attr-defined]
    options._timeout = timedelta(seconds=timeout_s)
    options._devices = [dist.ProcessGroupGloo.create_device(hostname=HOST)]
    return dist.ProcessGroupGloo(dist.PrefixStore(prefix, store), rank, world_size, options)


def nccl_group(store: Any, prefix: str, rank: int, world_size: int, timeout_s: float) -> Any:
    options = dist.ProcessGroupNCCL.Options()
    options._timeout = timedelta(seconds=timeout_s)
    options.global_ranks_in_group = list(range(world_size))
    # the same on every rank of a split, distinct between splits (c10d keys groups by name)
    options.group_name = f"enclave-{prefix}-{store.port}"  # type: ignore[assignment]
    return dist.ProcessGroupNCCL(dist.PrefixStore(prefix, store), rank, world_size, options)


def open_groups(
    store: Any,
    rank: int,
    world_size: int,
    device_type: str,
    control_timeout_s: float,
    model_timeout_s: float,
) -> Groups:
    """Both groups of this rank (every rank calls this; it returns once all have joined)."""
    control = gloo_group(store, "control", rank, world_size, control_timeout_s)
    if device_type == "cuda":
        model = nccl_group(store, "model", rank, world_size, model_timeout_s)
    else:
        model = gloo_group(store, "model", rank, world_size, model_timeout_s)
    return Groups(control=control, model=model)
