"""The stage cache of ``reproduce``: a stage is computed once, and reused while its inputs are unchanged.

A stage is a folder of the run (``out/NAME``) holding a saved result and a ``stage.json`` record
of what it was computed from: the settings that affect it, the model's and corpus's identity, and
the fingerprints of the stages it reads. A re-run reuses a stage only when that record matches,
and recomputes it otherwise (saying why), so an interrupted run resumes where it stopped and a run
with other settings recomputes exactly what they change.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from lapelens._io import atomic_write_text
from lapelens._version import __version__
from lapelens.constants import STAGE_RECORD
from lapelens.errors import LapelensError
from lapelens.provenance import digest


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """What changed between two stage records, in words."""
    out = []
    for key in sorted(set(old) | set(new), key=lambda k: (list(new) + list(old)).index(k)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if prefix == "depends":
            out.append(f"its input {key} changed" if a is not None and b is not None else f"its inputs changed ({key})")
        elif isinstance(a, dict) and isinstance(b, dict) and key == "settings":
            out += differences(a, b, key)
        elif isinstance(a, dict) and isinstance(b, dict) and key == "depends":
            out += differences(a, b, key)
        elif key in ("model", "corpus", "parallel", "eval_corpus"):
            out.append(f"the {key.replace('_', ' ')} changed")
        else:
            out.append(f"{key} {a!r} -> {b!r}")
    return out


class StageCache:
    """Runs named stages once: a stage whose output exists and was computed from the same inputs is
    loaded; otherwise it is computed (again), and the log says why."""

    def __init__(
        self,
        out: Path,
        log: Callable[[str], None] = print,
        seed: int = 0,
        lead: bool = True,
        identity: dict | None = None,
    ):
        # ``lead``: this process writes (rank 0 under torchrun); the others compute and keep nothing.
        self.out, self.log, self.seed, self.lead = out, log if lead else (lambda _: None), seed, lead
        #: What every stage is computed from besides its settings and inputs: model, languages.
        self.identity = dict(identity or {})
        self.timings: dict[str, float] = {}
        self.fingerprints: dict[str, str] = {}
        self.recomputed: dict[str, str] = {}
        self.reused: list[str] = []

    def inputs(self, depends: Sequence[str] = (), **settings: Any) -> dict:
        """A stage's record: the run's identity, its ``settings`` and the fingerprints of the stages it reads."""
        return {**self.identity, "settings": settings, "depends": {d: self.fingerprints.get(d) for d in depends}}

    def __call__(
        self,
        name: str,
        inputs: dict,
        compute: Callable[[], Any],
        load: Callable[[Path], Any],
        save: Callable[[Any, Path], Any],
    ) -> Any:
        path = self.out / name
        fingerprint = digest(inputs)
        self.fingerprints[name] = fingerprint
        reason = "not computed yet"
        if path.exists():
            try:
                record = json.loads((path / STAGE_RECORD).read_text())
                old = record["inputs"] if record["fingerprint"] != fingerprint else None
            except (OSError, ValueError, KeyError, TypeError):
                old, reason = {}, "no record of the settings it was computed from"
            if old is None:
                try:
                    result = load(path)
                except LapelensError as exc:
                    reason = f"unreadable ({exc})"
                else:
                    self.log(f"[reproduce] {name}: reusing {path} (computed with the same settings)")
                    self.reused.append(name)
                    return result
            elif old:
                reason = "; ".join(differences(old, inputs)) or "its record differs"
        self.log(f"[reproduce] {name}: computing ({reason}) ...")
        self.recomputed[name] = reason
        start = time.time()
        torch.manual_seed(self.seed)  # each stage as in a fresh run, whatever ran before it
        result = compute()
        if not self.lead:
            return result
        tmp = path.with_name(path.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        save(result, tmp)
        record = {"stage": name, "fingerprint": fingerprint, "lapelens_version": __version__, "inputs": inputs}
        atomic_write_text(tmp / STAGE_RECORD, json.dumps(record, indent=2, ensure_ascii=False, default=str))
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
        self.timings[name] = round(time.time() - start, 1)
        self.log(f"[reproduce] {name}: {self.timings[name]} s")
        return result
