"""Checkpoints of a collection in progress, and the ``torch.distributed`` plumbing of a sharded one.

A collection is a fixed sequence of batches per language (:func:`lapelens.activations.collect`).
With ``W`` processes, batch ``b`` is counted by rank ``b % W``; every rank reads (and hashes) the
whole stream, so that all ranks agree on the batches without talking to each other.

A checkpoint is one safetensors file per rank: the accumulator's running sums (``lang x layer x
neuron``, the order of ``ActivationStats``) plus, per language,
how many batches of the stream were passed and a SHA-256 of their token ids. Resuming loads the
sums, re-reads the passed batches without running the model, checks the hash, and continues; the
sums then receive exactly the additions, in exactly the order, of an uninterrupted run, so the
result is bit-identical. A file is written to ``*.tmp`` and renamed, so a kill at any moment leaves
either the previous checkpoint or the new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes
from torch import Tensor

from lapelens.constants import CHECKPOINT_FILE
from lapelens.defaults import DEFAULT_CHECKPOINT_EVERY
from lapelens.errors import LapelensError

#: Version of the checkpoint file's layout; a checkpoint of another one is refused, never resumed.
_FORMAT = 1


# ---- torch.distributed ---------------------------------------------------------------------
@dataclass(frozen=True)
class Shard:
    """This process's share of the work: batch ``b`` belongs to rank ``b % world``."""

    rank: int = 0
    world: int = 1

    def owns(self, batch_index: int) -> bool:
        return batch_index % self.world == self.rank


def current_shard() -> Shard:
    """The default process group's rank and size, or ``Shard(0, 1)`` when none is initialized."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Shard(dist.get_rank(), dist.get_world_size())
    return Shard()


def leave_process_group() -> None:
    """Every rank leaves the default process group here, together (when one is initialized).

    gloo and NCCL want ``destroy_process_group`` called by all ranks at one point where no more
    communication follows. The backend's threads stop there only if nothing else holds the group
    (see the import in :func:`lapelens.cli.collect.process_group`); left running, gloo's teardown
    at interpreter exit can abort the process ("terminate called without an active exception").
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_sum(tensors: Sequence[Tensor]) -> list[Tensor]:
    """Sum each tensor over the ranks of the default group (on CUDA for NCCL, on the CPU for gloo)."""
    import torch.distributed as dist

    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    out = []
    for t in tensors:
        buf = t.to(device).contiguous()
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        out.append(buf.to(t.device))
    return out


# ---- positions in the batch streams -------------------------------------------------------
@dataclass
class Position:
    """How far one language's stream was read: ``batches`` batches of ``tokens`` tokens in all."""

    batches: int = 0
    tokens: int = 0
    sha256: str = hashlib.sha256().hexdigest()


class StreamHash:
    """SHA-256 of the token ids of the batches read so far (detects a changed corpus or tokenizer)."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def update(self, batch: Tensor) -> str:
        self._h.update(batch.to(torch.int64).contiguous().numpy().tobytes())
        return self._h.hexdigest()


# ---- the checkpoint files ------------------------------------------------------------------
class Checkpointer:
    """Writes and reads this rank's checkpoint in ``folder``, at most every ``every`` seconds.

    ``settings`` (JSON-able) must be equal for a checkpoint to be used; anything else refuses it.
    """

    def __init__(self, folder: str | Path, shard: Shard, settings: dict, every: float | int = DEFAULT_CHECKPOINT_EVERY):
        if every < 0:
            raise LapelensError(f"The checkpoint interval must be >= 0 seconds, got {every}.")
        self.folder, self.shard, self.every = Path(folder), shard, float(every)
        self.settings = json.loads(json.dumps(settings))  # as it will read back
        self.path = self.folder / CHECKPOINT_FILE.format(rank=shard.rank, world=shard.world)
        self.saves = 0
        self._last = time.monotonic()

    def refuse(self, why: str) -> LapelensError:
        return LapelensError(
            f"The checkpoint in {self.folder} {why}; re-run with the same arguments, "
            f"or delete {self.folder} to start over."
        )

    def load(self) -> tuple[dict[str, Tensor], list[Position]] | None:
        """The saved tensors and positions, or None if there is no checkpoint for this rank."""
        if self.folder.is_dir():
            others = sorted(
                p.name
                for p in self.folder.glob(CHECKPOINT_FILE.format(rank="*", world="*"))
                if not p.name.endswith(f"-of-{self.shard.world}.safetensors")
            )
            if others:
                raise self.refuse(
                    f"was made by a run with a different number of processes ({others[0]}); "
                    f"this run has {self.shard.world}"
                )
        if not self.path.is_file():
            return None
        try:
            with safe_open(str(self.path), framework="pt") as f:
                info = json.loads(f.metadata()["lapelens_checkpoint"])
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:
            raise self.refuse(f"is unreadable ({type(exc).__name__}: {exc})") from exc
        if info.get("format") != _FORMAT:
            raise self.refuse(f"has format {info.get('format')!r}, not this lapelens' {_FORMAT}")
        theirs = info.get("settings", {})
        for key in sorted(set(theirs) | set(self.settings)):
            if theirs.get(key) != self.settings.get(key):
                raise self.refuse(
                    f"was made with other settings ({key}: {theirs.get(key)!r} there, {self.settings.get(key)!r} now)"
                )
        self.saves = int(info["saves"])
        return tensors, [Position(**p) for p in info["positions"]]

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.every

    def save(self, tensors: dict[str, Tensor], positions: Sequence[Position]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.saves += 1
        info = {
            "format": _FORMAT,
            "settings": self.settings,
            "saves": self.saves,
            "positions": [asdict(p) for p in positions],
        }
        data = safetensors_bytes(
            {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
            metadata={"lapelens_checkpoint": json.dumps(info)},
        )
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._last = time.monotonic()

    def remove(self) -> None:
        """Delete this rank's files (and the folder once it is empty)."""
        for p in (self.path, self.path.with_name(self.path.name + ".tmp")):
            p.unlink(missing_ok=True)
        if self.shard.world > 1:  # the folder is empty once every rank got here
            import torch.distributed as dist

            dist.barrier()
        try:
            self.folder.rmdir()
        except OSError:
            pass  # other ranks' files are still there, or it never existed


def describe(positions: Sequence[Position], languages: Sequence[str], saves: int) -> str:
    """One line saying where a resumed collection starts."""
    done = ", ".join(f"{lang} {p.tokens:,} tokens" for lang, p in zip(languages, positions) if p.batches)
    return f"resuming from checkpoint {saves}: {done or 'nothing counted yet'} already read"
