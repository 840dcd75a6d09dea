"""Predicting cache state without running anything: ``haz run --dry-run`` and ``haz why``.

Spec coverage:
* EXEC-030 — :func:`predict`: each task's key and predicted state, in canonical order.
* EXEC-030 — ``key unknown (waits on X)`` when a hard predecessor would not hit.
* CACHE-007 — a predicted hit's manifest (local or remote) gives its digests: dependants' keys.
* CACHE-018 — ``cache: false`` tasks, and every task with ``--force``, are predicted to run.
* RC-001 — the remote is asked only when the local cache misses.
Out of scope: talking to the remote (the caller passes ``remote_lookup``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from hazremote.cache.manifest import Manifest
from hazremote.cache.tier import LookupResult, LookupStatus
from hazremote.domain.digest import Digest
from hazremote.domain.refs import TaskId
from hazremote.graph import TaskGraph
from hazremote.keys.components import PredecessorStreams
from hazremote.keys.deriver import DerivedKey, KeyDeriver
from hazremote.keys.resolve import InputError

__all__ = ["PredictedState", "Prediction", "predict"]


class PredictedState(enum.Enum):
    LOCAL_HIT = "local hit"
    REMOTE_HIT = "remote hit"
    MISS = "miss"
    KEY_UNKNOWN = "key unknown"
    ERROR = "error"


@dataclass(frozen=True, slots=True, kw_only=True)
class Prediction:
    task: TaskId
    state: PredictedState
    key: Digest | None = None
    derived: DerivedKey | None = None
    lookup: LookupResult | None = None
    waits_on: TaskId | None = None
    error: str | None = None
    remote: Manifest | None = None

    @property
    def hit_manifest(self) -> Manifest | None:
        """The manifest a hit would restore (local or remote), else ``None``."""
        if self.state is PredictedState.REMOTE_HIT:
            return self.remote
        if self.state is PredictedState.LOCAL_HIT and self.lookup is not None:
            return self.lookup.manifest
        return None

    def describe(self) -> str:
        if self.state is PredictedState.KEY_UNKNOWN:
            return f"key unknown (waits on {self.waits_on})"
        if self.state is PredictedState.ERROR:
            return f"error: {self.error}"
        lookup = self.lookup
        if (
            self.state is PredictedState.MISS
            and lookup is not None
            and lookup.status is not LookupStatus.MISS_NO_ENTRY
        ):
            return f"miss ({lookup.status.value})"
        text: str = self.state.value
        return text

    def to_json(self) -> dict[str, object]:
        return {
            "task": str(self.task),
            "key": self.key.hex if self.key else None,
            "state": self.state.value,
            "waits_on": str(self.waits_on) if self.waits_on else None,
            "error": self.error,
        }


def predict(
    *,
    graph: TaskGraph,
    run_set: Iterable[TaskId],
    deriver: KeyDeriver,
    lookup: Callable[[Digest], LookupResult],
    use_cache: bool = True,
    remote_lookup: Callable[[Digest], Manifest | None] | None = None,
) -> dict[TaskId, Prediction]:
    """Predict each task of ``run_set`` (and, on the way, its hard predecessors).

    ``remote_lookup`` (RC-001) is asked for keys the local cache misses.
    """
    predictions: dict[TaskId, Prediction] = {}
    outputs: dict[TaskId, Digest] = {}  # a hit's outputs digest, once per task (CACHE-007)

    def visit(task_id: TaskId) -> Prediction:
        known = predictions.get(task_id)
        if known is not None:
            return known
        streams: list[PredecessorStreams] = []
        blocked: TaskId | None = None
        for pred in graph.hard.get(task_id, ()):
            outcome = visit(pred)
            manifest = outcome.hit_manifest
            if manifest is not None:
                if pred not in outputs:
                    outputs[pred] = manifest.outputs_digest()
                streams.append(
                    PredecessorStreams(
                        task=pred,
                        stdout=manifest.stdout.hash,
                        stderr=manifest.stderr.hash,
                        outputs=outputs[pred],
                    )
                )
            elif blocked is None:
                blocked = (
                    pred if outcome.state is not PredictedState.KEY_UNKNOWN else outcome.waits_on
                )
        task = graph.tasks[task_id]
        prediction: Prediction
        if blocked is not None:
            prediction = Prediction(
                task=task_id, state=PredictedState.KEY_UNKNOWN, waits_on=blocked
            )
        else:
            try:
                derived = deriver.derive(task, streams)
            except InputError as error:
                prediction = Prediction(task=task_id, state=PredictedState.ERROR, error=str(error))
            else:
                cacheable = use_cache and task.spec.cache
                found = lookup(derived.key) if cacheable else None
                hit = found is not None and found.hit
                remote = (
                    remote_lookup(derived.key)
                    if cacheable and not hit and remote_lookup is not None
                    else None
                )
                state = PredictedState.MISS
                if hit:
                    state = PredictedState.LOCAL_HIT
                elif remote is not None:
                    state = PredictedState.REMOTE_HIT
                prediction = Prediction(
                    task=task_id,
                    state=state,
                    key=derived.key,
                    derived=derived,
                    lookup=found,
                    remote=remote,
                )
        predictions[task_id] = prediction
        return prediction

    wanted = sorted(run_set)
    for task_id in wanted:
        visit(task_id)
    return {t: predictions[t] for t in wanted}
