"""Tensor parallel inside one engine: rank 0 schedules and samples, worker processes mirror its forwards.

``start_ranks`` spawns N - 1 worker processes (``run_worker``) and opens the split's
process groups (``llm.parallel.group``). Every rank loads only its shard of the
weights (``llm.loader.load_model(parallel=...)``). Rank 0's ``TensorParallelRunner`` is
the ordinary ``ModelRunner`` plus one thing: whatever it stages for the device (a step's
seven metadata rows, a copy-on-write block list, a KV allocation) it first broadcasts to
the workers on the control group: one header broadcast and one payload broadcast per
step. Each worker rebuilds the same inputs (``step_inputs``) and runs the same forward
on its shard; the all-reduces inside the forward pair the ranks up. Workers discard their
logits (lm_head is replicated), rank 0 samples.

Failure handling: a worker that fails writes its reason to the store and exits; rank 0
checks its workers before every broadcast and turns a dead one (or a collective that
fails because a peer went away) into ``RankFailedError`` naming the rank, its exit
code and reason. Workers exit when told to stop, when their control socket closes, and
when their parent process is gone (a watchdog thread), so no rank outlives the engine.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import threading
import time
import traceback
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from llm.engine.config import EngineConfig, resolve_device
from llm.engine.model_runner import ModelRunner, step_inputs
from llm.engine.scheduler import ScheduledBatch
from llm.kernels.backend import use_policy
from llm.models.base import CausalLM
from llm.parallel.context import ParallelContext
from llm.parallel.group import Groups, join_store, make_store, open_groups
from llm.parallel.shard import RankFailedError

log = logging.getLogger(__name__)

# Commands of the control header: [command, number of rows, length of each row ...]
FORWARD, COPY, ALLOCATE, STOP = 1, 2, 3, 4
HEADER = 16
# Rendezvous, loading and handshakes may take minutes on a big checkpoint.
STARTUP_TIMEOUT_S = 1800.0
# One collective inside a forward: a peer slower than this is taken for dead.
MODEL_TIMEOUT_S = 300.0
# An idle worker waits this long for rank 0's next step (it exits sooner if rank 0 goes).
IDLE_TIMEOUT_S = 365 * 24 * 3600.0
STOP_GRACE_S = 10.0


@dataclass
class ShardLoader:
    """Loads one rank's shard of a model file; picklable, so the same object reaches every worker.

    Anything with this call signature (``(device, parallel) -> LoadedModel``, picklable)
    can stand in for it: tests pass tiny random models that way.
    """

    model_path: str
    dtype: torch.dtype
    native_4bit: bool = False

    def __call__(self, device: str | torch.device, parallel: ParallelContext | None) -> Any:
        from llm.loader import load_model

        return load_model(
            self.model_path,
            self.dtype,
            native_4bit=self.native_4bit,
            device=device,
            parallel=parallel,
            with_tokenizer=parallel is None or parallel.rank == 0,
        )


@dataclass
class WorkerSpec:
    """What a worker process needs to load its shard and join the split (pickled to it)."""

    loader: Callable[[str, ParallelContext], Any]
    config: EngineConfig
    rank: int
    world_size: int
    port: int
    parent_pid: int


def rank_device(config: EngineConfig, rank: int) -> str:
    """Device of ``rank``: CPU for all on CPU; on CUDA the configured index plus the rank."""
    device = resolve_device(config.device)
    if device.type != "cuda":
        return "cpu"
    return f"cuda:{(device.index or 0) + rank}"


class TensorParallelRanks:
    """Rank 0's handle on the split: the worker processes, the store and the groups."""

    def __init__(self, config: EngineConfig, loader: Callable[[str, ParallelContext], Any]) -> None:
        self.world_size = config.tensor_parallel_size
        self.context = ParallelContext(0, self.world_size)
        self.store = make_store(self.world_size, STARTUP_TIMEOUT_S)
        self.groups: Groups | None = None
        self.closed = False
        spawn = multiprocessing.get_context("spawn")
        self.workers = [
            spawn.Process(
                target=run_worker,
                args=(
                    WorkerSpec(
                        loader,
                        config,
                        rank,
                        self.world_size,
                        self.store.port,
                        os.getpid(),
                    ),
                ),
                name=f"llm-tp-rank{rank}",
                daemon=True,  # multiprocessing terminates daemonic children at interpreter exit
            )
            for rank in range(1, self.world_size)
        ]
        for worker in self.workers:
            worker.start()
        # an engine dropped without close(): its workers are killed when this handle goes
        weakref.finalize(self, _kill_live, list(self.workers))
        self.device_type = resolve_device(config.device).type

    # -- start -------------------------------------------------------------------------

    def connect(self) -> None:
        """Open the groups once every worker has reached the rendezvous, then check all loaded."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        for rank in range(1, self.world_size):
            while not self.store.check([f"hello/{rank}"]):
                self.check_alive()
                if time.monotonic() > deadline:
                    raise RankFailedError(f"tensor-parallel rank {rank} did not start in time")
                time.sleep(0.02)
        self.groups = open_groups(
            self.store, 0, self.world_size, self.device_type, MODEL_TIMEOUT_S, MODEL_TIMEOUT_S
        )
        self.context.group = self.groups.model
        ready = torch.ones(1)
        try:  # each worker joins this once its shard is loaded; one that failed closes its socket
            self.groups.control.allreduce([ready]).wait(timedelta_s(STARTUP_TIMEOUT_S))
        except RuntimeError as exc:
            raise self.failure("loading its shard", exc) from exc

    # -- steps ---------------------------------------------------------------------------

    def send(self, command: int, rows: list[list[int]]) -> None:
        """Broadcast one command and its int rows to every worker (two collectives at most)."""
        assert self.groups is not None, "connect() first"
        self.check_alive()
        header = torch.zeros(HEADER, dtype=torch.int64)
        header[0], header[1] = command, len(rows)
        header[2 : 2 + len(rows)] = torch.tensor([len(r) for r in rows], dtype=torch.int64)
        try:
            self.groups.control.broadcast(header, 0).wait()
            if rows and sum(len(r) for r in rows):
                payload = torch.tensor([v for row in rows for v in row], dtype=torch.int64)
                self.groups.control.broadcast(payload, 0).wait()
        except RuntimeError as exc:
            raise self.failure("receiving a step", exc) from exc

    def check_alive(self) -> None:
        for rank, worker in enumerate(self.workers, start=1):
            if not worker.is_alive():
                raise RankFailedError(
                    f"tensor-parallel rank {rank} (pid {worker.pid}) exited with code "
                    f"{worker.exitcode}{self._reason(rank)}; the engine cannot continue"
                )

    def failure(self, doing: str, exc: BaseException) -> RankFailedError:
        """The error to raise when a collective failed: the dead rank when one is dead."""
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:  # a peer's exit is seen a moment after its socket closes
            try:
                self.check_alive()
            except RankFailedError as dead:
                return dead
            time.sleep(0.05)
        return RankFailedError(f"tensor-parallel collective failed while {doing}: {exc}")

    def _reason(self, rank: int) -> str:
        try:
            if self.store.check([f"error/{rank}"]):
                return ": " + self.store.get(f"error/{rank}").decode(errors="replace")
        except RuntimeError:
            pass
        return ""

    # -- stop ----------------------------------------------------------------------------

    def close(self) -> None:
        """Tell the workers to stop, wait for them, and kill any that does not exit."""
        if self.closed:
            return
        self.closed = True
        if self.groups is not None:
            try:
                self.send(STOP, [])
            except RankFailedError:
                pass
        for worker in self.workers:
            worker.join(STOP_GRACE_S if self.groups is not None else 0.0)
            if worker.is_alive():
                worker.kill()
                worker.join()
        self.groups = None
        self.context.group = None


def _kill_live(workers: list) -> None:
    for worker in workers:
        if worker.is_alive():
            worker.kill()
            worker.join()


def timedelta_s(seconds: float):
    from datetime import timedelta

    return timedelta(seconds=seconds)


class TensorParallelRunner(ModelRunner):
    """Rank 0's runner: mirrors every staging of step inputs and every KV allocation to the workers."""

    def __init__(self, model: CausalLM, config: EngineConfig, ranks: TensorParallelRanks) -> None:
        self.ranks = ranks
        self._command = FORWARD
        super().__init__(model, config, None)

    def allocate_kv_cache(self, num_blocks: int) -> None:
        self.ranks.send(ALLOCATE, [[num_blocks]])
        super().allocate_kv_cache(num_blocks)

    def copy_blocks(self, copies: list[tuple[int, int]]) -> None:
        self._command = COPY
        super().copy_blocks(copies)

    def prepare(self, batch: ScheduledBatch):
        self._command = FORWARD
        return super().prepare(batch)

    def _stage(self, rows: list[list[int]]) -> list[torch.Tensor]:
        self.ranks.send(self._command, rows)
        return super()._stage(rows)

    def run(self, batch: ScheduledBatch) -> tuple[torch.Tensor, list[int]]:
        try:
            return super().run(batch)
        except RankFailedError:
            raise
        except RuntimeError as exc:  # a collective whose peer went away
            raise self.ranks.failure("running a step", exc) from exc


def start_tensor_parallel(loader: Callable[[str, ParallelContext], Any], config: EngineConfig):
    """Spawn the workers, load rank 0's shard and connect; returns (loaded model, ranks)."""
    ranks = TensorParallelRanks(config, loader)
    try:
        loaded = loader(rank_device(config, 0), ranks.context)
        ranks.connect()
    except BaseException:
        ranks.close()
        raise
    return loaded, ranks


# -- the worker process ------------------------------------------------------------------


def _exit_with_parent(parent_pid: int) -> None:
    """Watchdog thread: a worker whose rank 0 is gone exits (no orphan holds a GPU)."""
    while True:
        if os.getppid() != parent_pid:
            os._exit(3)
        time.sleep(0.5)


def run_worker(spec: WorkerSpec) -> None:
    """Entry point of rank ``spec.rank``: load the shard, then run rank 0's commands until STOP."""
    torch.set_num_threads(1)  # while loading; the runner applies num_threads when stepping
    threading.Thread(target=_exit_with_parent, args=(spec.parent_pid,), daemon=True).start()
    store = join_store(spec.port, spec.world_size, STARTUP_TIMEOUT_S)
    try:
        _serve(spec, store)
    except BaseException as exc:
        try:
            store.set(f"error/{spec.rank}", f"{type(exc).__name__}: {exc}")
        except RuntimeError:
            pass
        log.error("tensor-parallel rank %d failed:\n%s", spec.rank, traceback.format_exc())
        os._exit(1)
    os._exit(0)


def _serve(spec: WorkerSpec, store: Any) -> None:
    device = rank_device(spec.config, spec.rank)
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    config = dataclasses.replace(spec.config, device=device)
    context = ParallelContext(spec.rank, spec.world_size)
    store.set(f"hello/{spec.rank}", "1")
    groups = open_groups(
        store,
        spec.rank,
        spec.world_size,
        torch.device(device).type,
        IDLE_TIMEOUT_S,
        MODEL_TIMEOUT_S,
    )
    context.group = groups.model
    loaded = spec.loader(device, context)
    runner = ModelRunner(loaded.model, dataclasses.replace(config, tensor_parallel_size=1), None)
    groups.control.allreduce([torch.ones(1)]).wait()  # loaded: rank 0 may start
    header = torch.zeros(HEADER, dtype=torch.int64)
    while True:
        groups.control.broadcast(header, 0).wait()
        command, num_rows = int(header[0]), int(header[1])
        lengths = header[2 : 2 + num_rows].tolist()
        rows: list[list[int]] = []
        if sum(lengths):
            payload = torch.empty(sum(lengths), dtype=torch.int64)
            groups.control.broadcast(payload, 0).wait()
            rows = [part.tolist() for part in payload.split(lengths)]
        else:
            rows = [[] for _ in lengths]
        if command == STOP:
            return
        if command == ALLOCATE:
            runner.allocate_kv_cache(rows[0][0])
        elif command == COPY:
            runner.copy_blocks(list(zip(rows[0], rows[1], strict=True)))
        elif command == FORWARD:
            _forward(runner, rows)
        else:
            raise RankFailedError(f"unknown command {command} from rank 0")


@torch.inference_mode()
def _forward(runner: ModelRunner, rows: list[list[int]]) -> None:
    runner._use_own_threads()
    ids, positions, meta = step_inputs(runner._stage(rows), runner.kv_groups.layer_group)
    with use_policy(runner.kernel_policy):
        logits = runner.model(ids, positions, runner.kv_caches, meta)
    if (
        logits.is_cuda
    ):  # the pinned staging buffer is rewritten next step (rank 0 syncs by sampling)
        torch.cuda.current_stream(logits.device).synchronize()
