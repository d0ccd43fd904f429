"""One request inside the engine: its tokens, status, block table and progress."""

from __future__ import annotations

import enum
import time
from typing import Any

import torch

from llm.engine.sampling_params import SamplingParams


class SequenceStatus(enum.Enum):
    WAITING = "waiting"  # not admitted yet, or preempted (holds no blocks)
    RUNNING = "running"  # holds blocks; prefilling in chunks or decoding
    FINISHED = "finished"


class Sequence:
    """A request's token ids (prompt then output) and where its KV lives.

    ``num_computed_tokens`` counts tokens whose K/V are in the cache; the tokens after it
    are what the next step must feed the model (a prefill chunk, or the one token sampled
    last step). ``num_cached_tokens`` is how many prompt tokens the prefix cache supplied.
    """

    def __init__(
        self, request_id: str, prompt_token_ids: list[int], params: SamplingParams
    ) -> None:
        self.request_id = request_id
        self.token_ids: list[int] = list(prompt_token_ids)
        self.num_prompt_tokens = len(prompt_token_ids)
        self.params = params
        self.status = SequenceStatus.WAITING
        # one block table per KV group (``llm.engine.kv_groups``); group 0 is ``block_table``
        self.block_tables: list[list[int]] = [[]]
        self.num_computed_tokens = 0
        self.num_cached_tokens = 0
        self.block_hashes: list[int] = []  # chained hashes of full blocks (tokens never change)
        self.num_registered_blocks = 0  # leading blocks already offered to the prefix cache
        self.finish_reason: str | None = None
        self.logprobs: list[float] = []
        self.num_preemptions = 0
        # the request's own generator when params.seed is set; the sampler makes it on its device
        self.generator: torch.Generator | None = None
        self.arrival_time = time.monotonic()
        self.json_matcher: Any = None  # a guided.JsonMatcher when params.json_schema is set
        # a running request with the same prompt whose prefill this one waits for and shares
        self.fork_of: Sequence | None = None
        self.first_token_time: float | None = None
        self.last_token_time: float | None = None

    @property
    def block_table(self) -> list[int]:
        """The block table of KV group 0 (the only one for a model with one attention type)."""
        return self.block_tables[0]

    @block_table.setter
    def block_table(self, table: list[int]) -> None:
        self.block_tables[0] = table

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def num_uncomputed_tokens(self) -> int:
        return len(self.token_ids) - self.num_computed_tokens

    @property
    def is_finished(self) -> bool:
        return self.status == SequenceStatus.FINISHED

    def append_token(self, token_id: int, logprob: float | None = None) -> None:
        self.token_ids.append(token_id)
        if logprob is not None:
            self.logprobs.append(logprob)
