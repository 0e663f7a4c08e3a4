"""Tuning: the batch size and the partitions of a branch, proposed from the experiences of similar
past runs, for what the spec leaves open.

A branch (extract -> transforms -> loads, streaming together) with one extract is tuned as a unit:
its **setting** is (``batch_size``, ``partitions``); ``batch_size`` applies to every task of the
branch, ``partitions`` to the extract (only when its tool reads in partitions: a ``partition_on``
key, or a table split by its storage blocks). What the spec pins is never changed: an explicit
``defaults.batch_size``, an explicit ``partitions`` option.

The past: memory's experiences nearest to the extract's descriptor (same tool and branch shape,
cosine distance < ``NEAR``), one per run, each with the setting it ran with and the branch's
throughput (its slowest task's rows/s: an extract can end while its loads still write); a run whose
branch failed counts as 1 row/s, so a setting that fails is not tried again and again.
Per setting, the mean of log(rows/s), weighted by similarity. Then a hill climb on the ladder of
settings (batch sizes x2 / /2, partitions x2 / /2):

- no similar experience: the spec's values, as they are (the first run is the baseline);
- else the best setting known; while one of its neighbours was never tried, the next of them is
  (partitions up, batch size up, batch size down, partitions down): "exploring";
- once all its neighbours ran slower, the best setting is kept: "converged". Every run adds to the
  means, so a neighbour that later proves better takes over, and its own neighbours are tried.

``propose`` is the arithmetic (no I/O); ``tune`` reads memory for a pipeline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from agent_etl.agents.outcomes import rate

NEAR = 0.35  # cosine distance under which a past task counts as similar
RECALL = 100  # experiences recalled per branch
BATCH_MIN, BATCH_MAX = 1_000, 2_000_000
PARTS_MAX = 16
DIMENSIONS = ("batch_size", "partitions")
Setting = tuple[int, int]  # (batch_size, partitions)
FAILED = 1.0  # rows/s a failed run counts as: its setting was tried, and is not tried again for a while


@dataclass(frozen=True)
class Observed:
    """One past run of a similar branch."""

    setting: Setting
    rows_per_second: float
    similarity: float = 1.0  # 1 - cosine distance


@dataclass(frozen=True)
class Proposal:
    params: dict[str, int]  # what to apply (only values that differ from the spec's or are tuned)
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {**self.params, "reason": self.reason}


def _said(s: Setting, free: Iterable[str]) -> str:
    names = set(free)
    parts = [f"batch_size {s[0]:,}" if "batch_size" in names else "", f"partitions {s[1]}" if "partitions" in names else ""]
    return ", ".join(p for p in parts if p)


def _n(count: int, what: str) -> str:
    return f"{count} {what}{'' if count == 1 else 's'}"


# the steps of the ladder, in the order they are tried: (dimension, up or down)
STEPS = (("partitions", 1), ("batch_size", 1), ("batch_size", -1), ("partitions", -1))


def step(s: Setting, dimension: str, sign: int) -> Setting | None:
    """``s`` one step up or down in ``dimension`` (x2 or /2), None past the ladder's end."""
    b, p = s
    if dimension == "batch_size":
        b = b * 2 if sign > 0 else b // 2
        return (b, p) if BATCH_MIN <= b <= BATCH_MAX else None
    if sign < 0 and p <= 1:
        return None
    p = p * 2 if sign > 0 else max(1, p // 2)
    return (b, p) if p <= PARTS_MAX else None


def neighbours(s: Setting, free: Sequence[str]) -> list[tuple[Setting, tuple[str, int]]]:
    """The settings one step from ``s`` in the free dimensions, with their step, in the order they are tried."""
    out = []
    for d, sign in STEPS:
        n = step(s, d, sign) if d in free else None
        if n is not None:
            out.append((n, (d, sign)))
    return out


def _losing(mean: dict[Setting, float]) -> set[tuple[str, int]]:
    """The steps that did not make runs faster more often than slower, among pairs of settings tried
    one step apart: the same step from the best setting is likely no better, so it is not tried."""
    score: dict[tuple[str, int], int] = {}
    for s in mean:
        for d, sign in STEPS:
            n = step(s, d, sign)
            if n in mean:
                score[(d, sign)] = score.get((d, sign), 0) + (1 if mean[n] > mean[s] else -1)
    return {k for k, v in score.items() if v <= 0}


def propose(observed: Sequence[Observed], current: Setting, free: Sequence[str]) -> tuple[Setting, str]:
    """The setting to run with next, and why. ``current`` is the spec's (pinned or default) values;
    ``free`` the dimensions the spec leaves open. Observations with another value of a pinned
    dimension do not count."""
    free = [d for d in DIMENSIONS if d in free]
    if not free:
        return current, "nothing to tune: the spec sets " + " and ".join(DIMENSIONS)
    fixed = [i for i, d in enumerate(DIMENSIONS) if d not in free]
    seen = [o for o in observed if all(o.setting[i] == current[i] for i in fixed)]
    if not seen:
        return current, f"no similar experience yet: {_said(current, free)}, the baseline"
    stats: dict[Setting, list[float]] = {}  # setting -> [weight, weighted sum of log rows/s, runs]
    for o in seen:
        w = max(o.similarity, 0.05)
        st = stats.setdefault(o.setting, [0.0, 0.0, 0])
        st[0] += w
        st[1] += w * math.log(max(o.rows_per_second, FAILED))
        st[2] += 1
    mean = {s: st[1] / st[0] for s, st in stats.items()}
    # the best mean; on a tie the setting with more runs, then the spec's values
    best = max(stats, key=lambda s: (mean[s], stats[s][2], s == current))
    known = f"{_said(best, free)}: ~{rate(math.exp(mean[best]))} rows/s over {_n(stats[best][2], 'similar run')}"
    tried = f"{_n(len(stats), 'setting')} tried in {_n(len(seen), 'run')}"
    untried = [(n, how) for n, how in neighbours(best, free) if n not in stats]
    losing = _losing(mean)
    promising = [n for n, how in untried if how not in losing]
    if promising:
        return promising[0], f"exploring next to the best known setting ({known}; {tried})"
    if not untried:
        return best, f"the best known setting ({known}); its neighbours ran slower ({tried})"
    return best, (f"the best known setting ({known}); the steps left to try from it made runs slower "
                  f"elsewhere ({tried})")


# -- a pipeline's branches --------------------------------------------------------------------------

def free_dimensions(pipeline: Any, extract: Any, config_class: Any) -> list[str]:
    """What the spec leaves open for the branch of ``extract``."""
    free = []
    if "batch_size" not in pipeline.spec.defaults.model_fields_set:
        free.append("batch_size")
    fields = getattr(config_class, "model_fields", {})
    if "partitions" in fields and "partitions" not in extract.options:
        blocks = bool(getattr(config_class, "block_partitions", False)) and bool(extract.options.get("table"))
        if extract.options.get("partition_on") or blocks:
            free.append("partitions")
    return free


def current(pipeline: Any, extract: Any) -> Setting:
    return int(pipeline.spec.defaults.batch_size), int(extract.options.get("partitions") or 1)


def observed_runs(memory: Any, document: str, kind: tuple, tool: str) -> list[Observed]:
    """Blocking: the similar past runs of a branch, from ``memory`` (a ``VectorMemory``)."""
    from agent_etl.agents.memory_selector import kind_of
    from agent_etl.memory.experience import Experience

    hits = [h for h in memory.query(document, RECALL, {"kind": "extract"}) if h.distance < NEAR]
    near: dict[str, tuple[Experience, float]] = {}
    for h in hits:
        e = Experience.from_record(h.record)
        if e.descriptor.tool == tool and kind_of(e.descriptor) == kind and e.run_id not in near:
            near[e.run_id] = (e, 1.0 - h.distance)
    if not near:
        return []
    slowest: dict[str, float] = {}
    for r in memory.get(where={"run_id": {"$in": sorted(near)}}):
        e = Experience.from_record(r)
        if kind_of(e.descriptor) != kind:
            continue
        if e.status != "succeeded" or e.rows_per_second <= 0:
            slowest[e.run_id] = 0.0
        else:
            slowest[e.run_id] = min(slowest.get(e.run_id, math.inf), e.rows_per_second)
    out = []
    for run, (e, sim) in near.items():
        speed = slowest.get(run, e.rows_per_second if e.status == "succeeded" else 0.0)
        if "batch_size" in e.params:
            out.append(Observed((e.params["batch_size"], e.params.get("partitions", 1)), speed, sim))
    return out


async def tune(pipeline: Any, registry: Any, read: Callable[[Callable[[Any], Any]], Any]) -> dict[str, dict[str, Any]]:
    """Per task name, what tuning applies: ``{"batch_size": .., "partitions": .., "reason": ..,
    "experience": similar runs it drew on}`` (only the values the spec leaves open). ``read(fn)`` runs ``fn(memory)`` where memory may be
    used (``Recorder.read``). A branch with more or fewer than one extract is not tuned."""
    from agent_etl.agents.memory_selector import kind_of
    from agent_etl.memory.descriptor import describe

    out: dict[str, dict[str, Any]] = {}
    for branch in pipeline.branches():
        extracts = [t for t in branch if t.kind == "extract"]
        if len(extracts) != 1:
            continue
        extract = extracts[0]
        try:
            config_class = registry.get("extractor", extract.tool).Config
        except Exception:
            continue
        free = free_dimensions(pipeline, extract, config_class)
        now = current(pipeline, extract)
        if not free:
            continue
        d = describe(extract, pipeline)
        seen = await read(lambda memory: observed_runs(memory, d.to_json(), kind_of(d), d.tool))
        setting, why = propose(seen, now, free)
        params: dict[str, Any] = {}
        if "batch_size" in free:
            params["batch_size"] = setting[0]
        pinned = [f"{k} set by the spec" for k, set_ in (("batch_size", "batch_size" not in free),
                                                          ("partitions", "partitions" in extract.options)) if set_]
        reason = why + (f"; {', '.join(pinned)}" if pinned else "")
        for t in branch:
            mine = dict(params)
            if t is extract and "partitions" in free:
                mine["partitions"] = setting[1]
            out[t.name] = {**mine, "reason": reason, "experience": len(seen)}
    return out
