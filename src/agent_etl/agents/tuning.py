"""Tuning: the batch size and the partitions of a branch, proposed from the experiences of similar
past runs, for what the spec leaves open.

A branch (extract -> transforms -> loads, streaming together) with one extract is tuned as a unit:
its **setting** is (``batch_size``, ``partitions``); ``batch_size`` applies to every task of the
branch, ``partitions`` to the extract (only when its tool reads in partitions: a ``partition_on``
key, or a table split by its storage blocks). ``partitions`` is the read's concurrency: a postgres
extract reads its N partitions at once, each on its own connection, fetch and decode threads. What
the spec pins is never changed: an explicit ``defaults.batch_size``, an explicit ``partitions``
option.

The past: memory's experiences nearest to the extract's descriptor (same tool and branch shape,
cosine distance < ``NEAR``: this pipeline's runs and those of other pipelines alike), one per run,
each with the setting it ran with, the branch's throughput (its slowest task's rows/s: an extract
can end while its loads still write) and its **group** (pipeline and task: one source). A run
whose branch failed counts as 1 row/s, so a setting that fails is not tried again and again.

The estimate (``estimate``): log(rows/s) = the group's level + the setting's effect, fitted by
similarity-weighted least squares, so a setting tried on a faster table of another pipeline is not
taken for a faster setting; each effect is shrunk towards the average by its runs (empirical
Bayes, the run-to-run noise estimated from settings that ran more than once), so one lucky run does
not outrank a setting measured again and again. The best estimate is the **incumbent**. Then a
noise-aware hill climb on the ladder of settings (batch sizes x2 / /2, partitions x2 / /2):

- no similar experience at all: the spec's values (the first run is the baseline);
- runs of other pipelines but none of this one: their incumbent, as it is;
- every ``EXPLORE + 1``-th run of this pipeline runs the incumbent again (``exploiting``), unless
  its lead over every other setting is clearly more than the noise (then the climb goes on): its
  estimate firms up, and a setting that won on one lucky run is found out. The 5th run is one:
  "within 5 runs" reads as "the 5th run's setting";
- else an untried neighbour of the incumbent (``exploring``): first the step whose opposite ran
  slower (the slope points that way), then partitions up, batch size up, batch size down,
  partitions down; a step that made runs slower more often than faster elsewhere is not tried;
- none left: the incumbent (``converged``). Every run adds to the estimates, so a neighbour that
  later proves better takes over, and its own neighbours are tried.

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
NOISE = 0.25  # run-to-run spread of log(rows/s) assumed until a setting ran twice: 0.19-0.34 measured
# (benchmarks/tuning.py's sweeps on the shared 2-core machine, pooled over settings)
NOISE_MIN = 0.02
EXPLORE = 3  # settings tried in a row before the incumbent runs again
CLEAR = 1.0  # standard deviations of the difference by which a lead is clear (simulated: 0.5-2 trade a
# steep climb against a noisy flat surface; 1 kept >= 0.83 of the peak on average on both at 20% noise)


@dataclass(frozen=True)
class Observed:
    """One past run of a similar branch."""

    setting: Setting
    rows_per_second: float
    similarity: float = 1.0  # 1 - cosine distance
    group: str = ""  # the pipeline and task it ran in: runs of one group read the same source


@dataclass(frozen=True)
class Estimate:
    """What the past runs say of each setting tried (``estimate``)."""

    effect: dict[Setting, float]  # shrunk log(rows/s) relative to the average setting
    raw: dict[Setting, float]  # the same, not shrunk
    runs: dict[Setting, int]  # runs of the setting, all groups
    mine: dict[Setting, int]  # runs of the setting in the group being tuned
    weight: dict[Setting, float]  # the similarity weights of its runs, summed
    level: float  # log(rows/s) of the average setting in the group being tuned (or overall)
    noise: float  # run-to-run spread of log(rows/s)

    def clear(self, s: Setting) -> bool:
        """Whether ``s`` ran faster than every other setting by more than the noise (``CLEAR``
        standard deviations of the difference): a climb worth going on with, not a lead one lucky run
        may give."""
        return all(self.raw[s] - self.raw[o] > CLEAR * self.noise * math.sqrt(1 / self.weight[s] + 1 / self.weight[o])
                   for o in self.raw if o != s)

    def rows_per_second(self, s: Setting) -> float:
        """What ``s`` ran at in the group tuned (its level, the setting's own runs' effect)."""
        return math.exp(self.level + self.raw[s])


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


def estimate(observed: Sequence[Observed], group: str = "") -> Estimate:
    """Fit log(rows/s) = group level + setting effect to ``observed`` (weighted by similarity), and
    shrink each effect towards 0 by how sure it is. ``group``: the group being tuned."""
    ys = [(o.group, o.setting, max(o.similarity, 0.05), math.log(max(o.rows_per_second, FAILED))) for o in observed]
    settings = sorted({s for _, s, _, _ in ys})
    groups = sorted({g for g, _, _, _ in ys})
    effect = dict.fromkeys(settings, 0.0)
    level = dict.fromkeys(groups, 0.0)
    by_group = {g: [(s, w, y) for g2, s, w, y in ys if g2 == g] for g in groups}
    by_setting = {s: [(g, w, y) for g, s2, w, y in ys if s2 == s] for s in settings}
    for _ in range(100):  # alternating least squares, until the effects stop moving
        for g, rows in by_group.items():
            level[g] = sum(w * (y - effect[s]) for s, w, y in rows) / sum(w for _, w, _ in rows)
        moved = 0.0
        for s, rows in by_setting.items():
            e = sum(w * (y - level[g]) for g, w, y in rows) / sum(w for _, w, _ in rows)
            moved, effect[s] = max(moved, abs(e - effect[s])), e
        if len(groups) == 1 or moved < 1e-4:  # one group: one round is the answer
            break
    centre = sum(effect.values()) / len(effect)  # effects relative to the average setting
    effect = {s: e - centre for s, e in effect.items()}
    level = {g: v + centre for g, v in level.items()}
    # the noise: the spread of runs around the fit, from settings that ran more than once in a group
    cells: dict[tuple[str, Setting], list[float]] = {}
    for g, s, _, y in ys:
        cells.setdefault((g, s), []).append(y)
    squares, dof = 0.0, 0
    for logs in cells.values():
        if len(logs) > 1:
            m = sum(logs) / len(logs)
            squares += sum((x - m) ** 2 for x in logs)
            dof += len(logs) - 1
    noise = max(math.sqrt(squares / dof), NOISE_MIN) if dof else NOISE
    runs = {s: sum(1 for _, s2, _, _ in ys if s2 == s) for s in settings}
    weight = {s: sum(w for _, s2, w, _ in ys if s2 == s) for s in settings}
    # how far true effects spread: what the raw effects spread beyond the noise (at least half the noise)
    spread = sum(e * e for e in effect.values()) / len(effect) - noise ** 2 * sum(1 / weight[s] for s in settings) / len(settings)
    prior = max(spread, (noise / 2) ** 2)
    shrunk = {s: effect[s] * (weight[s] / noise ** 2) / (weight[s] / noise ** 2 + 1 / prior) for s in settings}
    mine = {s: sum(1 for g, s2, _, _ in ys if s2 == s and g == group) for s in settings}
    here = level.get(group, sum(level.values()) / len(level))
    return Estimate(shrunk, effect, runs, mine, weight, here, noise)


def _losing(raw: dict[Setting, float]) -> set[tuple[str, int]]:
    """The steps that did not make runs faster more often than slower, among pairs of settings tried
    one step apart: the same step from the incumbent is likely no better, so it is not tried."""
    score: dict[tuple[str, int], int] = {}
    for s in raw:
        for d, sign in STEPS:
            n = step(s, d, sign)
            if n in raw:
                score[(d, sign)] = score.get((d, sign), 0) + (1 if raw[n] > raw[s] else -1)
    return {k for k, v in score.items() if v <= 0}


def propose(observed: Sequence[Observed], current: Setting, free: Sequence[str], group: str = "") -> tuple[Setting, str]:
    """The setting to run with next, and why. ``current`` is the spec's (pinned or default) values;
    ``free`` the dimensions the spec leaves open; ``group`` the pipeline and task tuned (see
    ``Observed.group``). Observations with another value of a pinned dimension do not count."""
    free = [d for d in DIMENSIONS if d in free]
    if not free:
        return current, "nothing to tune: the spec sets " + " and ".join(DIMENSIONS)
    fixed = [i for i, d in enumerate(DIMENSIONS) if d not in free]
    seen = [o for o in observed if all(o.setting[i] == current[i] for i in fixed)]
    if not seen:
        return current, f"no similar experience yet: {_said(current, free)}, the baseline"
    est = estimate(seen, group)
    # the best estimate; on a tie the setting with more runs, then the spec's values
    best = max(est.effect, key=lambda s: (est.effect[s], est.runs[s], s == current))
    mine = sum(est.mine.values())
    others = len(seen) - mine
    known = (f"{_said(best, free)}: ~{rate(round(est.rows_per_second(best)))} rows/s over "
             f"{_n(est.runs[best], 'similar run')}")
    tried = f"{_n(len(est.effect), 'setting')} tried in {_n(len(seen), 'run')}" + (
        f", {others} of other pipelines" if others and mine else "")
    if not mine:
        return best, f"no run of this pipeline yet: the best setting of similar pipelines ({known}; {tried})"
    if est.mine[best] < 1 + mine // (EXPLORE + 1) and not est.clear(best):
        return best, f"exploiting the best known setting ({known}; {tried})"
    untried = [(n, how) for n, how in neighbours(best, free) if n not in est.effect]
    losing = _losing(est.raw)

    def slope(how: tuple[str, int]) -> float:  # how much slower the opposite step ran: the way up
        back = step(best, how[0], -how[1])
        return est.raw[best] - est.raw[back] if back in est.raw else 0.0

    promising = sorted((n_how for n_how in untried if n_how[1] not in losing), key=lambda nh: -max(slope(nh[1]), 0.0))
    if promising:
        return promising[0][0], f"exploring next to the best known setting ({known}; {tried})"
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


def group_of(pipeline: str, task: str) -> str:
    return f"{pipeline}/{task}"


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
            out.append(Observed((e.params["batch_size"], e.params.get("partitions", 1)), speed, sim,
                                group_of(e.pipeline, e.task)))
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
        setting, why = propose(seen, now, free, group_of(pipeline.name, extract.name))
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
