"""``MemorySelector``: chooses, among the agents able to run a branch, the one with the best expected
outcome on that kind of task, learnt from experience.

A branch's **kind** is its shape: the kinds of its sources, its transforms and the kinds of its
destinations (``postgres -> filter -> parquet``). Per kind and agent the selector keeps
``Outcomes`` in process (success and throughput, recency-weighted, with drift detection), fed by
``learn`` after every run and, once per kind and process, by the experiences memory recalls for it
(``warm``). A decision: the capable agents are narrowed by the branch's tags and the agents'
memory (``selector.placement``); each of them runs a kind ``TRIES`` times first, and while the kind
is young the agents close to the runner-up ``CONTEND`` times (the backup is known when the best
degrades); then it is Thompson sampling on those numbers: each agent's success probability (its own
success on every kind as the prior) and throughput are drawn from their posteriors (half their
spread), the expected rows/s delivered (success x throughput) is divided by the agent's load, and
the best draw wins. An agent with little or stale experience draws widely, so it is tried now and
then (exploration); one known to be worse almost never is, and one that drifted is not explored
for ``SETTLE`` branches of the kind.

A kind never seen borrows from the nearest kinds seen (a vector query over the kinds, once per new
kind, not per decision), weakly; with no experience at all the choice falls back to capabilities
(the least busy capable agent). Every choice carries its reasons; a sampled decision's is written
when first read (``Reason``: a decision is on the hot path, its text is not).
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from typing import Any, Awaitable, Callable, Mapping, Sequence

from agent_etl.agents.outcomes import DISCOUNT, STALE, TRIES, WINDOW, AgentDrift, Outcomes, rate
from agent_etl.agents.selector import TASK_KINDS, AgentInfo, CapabilitySelector, Choice, branches, placement
from agent_etl.memory.descriptor import TaskDescriptor
from agent_etl.spec import Task

log = logging.getLogger("agent_etl.selector")

Kind = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]
Recall = Callable[[str, int], Awaitable[list[Any]]]  # (descriptor JSON, k) -> experiences, nearest first
RECALL = 200  # experiences recalled per new kind
NEAR = 0.35  # cosine distance under which another kind counts as similar
PRIOR = 3.0  # most runs a similar kind's experience weighs as, for a kind never seen
# draws deviate from the estimate by this share of the posterior's spread: plain Thompson sampling (1.0)
# keeps trying agents known to be worse on a few runs often enough to cost a few % of the choices
EXPLORE = 0.5
SETTLE = 100  # branches of a kind after an agent's drift during which it is not explored there
CONTEND = 12  # runs of an agent close to the runner-up on a kind (within 1 - CLOSE), so that it can be ranked
CLOSE = 0.65
YOUNG = 100  # branches of a kind during which its runner-up is learnt
SEEN = 100_000  # branches remembered as learnt, so that one recalled from memory again is not counted twice
PRIOR_RUNS = 2.0  # runs a success prior weighs as
AGENT_DISCOUNT = 0.99  # an agent's success on every kind: about its last 100 runs
_NOTHING: dict = {}
CONCURRENCY = 4  # slots of an agent that declares no concurrency limit
NO_KIND: Kind = ((), (), ())  # the kind of a branch without a descriptor


def kind_of(d: TaskDescriptor) -> Kind:
    return (d.sources, d.transforms, d.destinations)


def kind_text(kind: Kind) -> str:
    return " -> ".join([",".join(kind[0]) or "?", *kind[1], ",".join(kind[2]) or "?"])


class Normals:
    """Standard normal draws for decisions, made by numpy in blocks of ``BLOCK`` and handed out one
    by one (``pop``): a decision takes two per agent. A draw costs about a twentieth of a
    ``random.gauss`` call; the block (0.1-0.2 ms) falls in one decision of about 400 of 5 agents, past
    the 99th percentile. Seeded, so that a seeded selector decides the same way every time."""

    BLOCK = 4096

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._generator: Any = None  # made at the first decision by sampling: numpy is imported then
        self.block: list[float] = []
        self.pop = self.block.pop

    def ensure(self, count: int) -> None:
        """At least ``count`` draws left."""
        if len(self.block) < count:
            if self._generator is None:
                import numpy

                self._generator = numpy.random.default_rng(self.seed)
            self.block[:0] = self._generator.standard_normal(self.BLOCK).tolist()


class MemorySelector:
    """Learns which agent does best on which kind of task; see the module docstring."""

    def __init__(self, seed: int | None = None):
        self.stats: dict[Kind, dict[str, Outcomes]] = {}
        self.clock: Counter[Kind] = Counter()  # branches learnt per kind
        self._random = random.Random(seed)
        self._normals = Normals(self._random.getrandbits(64))
        self._seen: dict[tuple[str, Kind, str], None] = {}  # (run, kind, agent) learnt already, the last SEEN
        self._recalled: set[Kind] = set()
        self._kinds: Any = None  # a NumpyMemory of one descriptor per kind seen
        self._keys: dict[str, Kind] = {}  # its record ids -> kinds
        self._near: dict[Kind, tuple[int, list[tuple[Kind, float]]]] = {}
        self._fallback = CapabilitySelector()
        self._drift: dict[str, AgentDrift] = {}
        self.typical: dict[Kind, tuple[float, float]] = {}  # kind -> discounted (successes, runs), all agents
        self._agent_runs: dict[str, tuple[float, float]] = {}  # agent -> discounted (successes, runs), all kinds
        self.reliable: dict[str, float] = {}  # agent -> its success prior's a0 (PRIOR_RUNS x its success lately)

    # -- learning ---------------------------------------------------------------------------------

    async def learn(self, experiences: Sequence[Any]) -> None:
        self.learn_now(experiences)

    def learn_now(self, experiences: Sequence[Any]) -> None:
        """Count finished branches: the tasks of one run, kind and agent are one branch; it succeeded
        if they all did, and its throughput is its slowest task's rows/s."""
        groups: dict[tuple[str, Kind, str], list[Any]] = {}
        for e in experiences:
            key = (e.run_id, kind_of(e.descriptor), e.agent)
            if key not in self._seen:
                groups.setdefault(key, []).append(e)
        for (run, kind, agent), items in sorted(groups.items(), key=lambda g: min(e.created_at for e in g[1])):
            self._seen[(run, kind, agent)] = None
            if len(self._seen) > SEEN:  # a long-lived coordinator: the oldest go (a recall of one counts it again)
                del self._seen[next(iter(self._seen))]
            ok = all(e.status == "succeeded" for e in items)
            speeds = [e.rows_per_second for e in items if e.status == "succeeded" and e.rows_per_second > 0]
            table = self.stats.get(kind)
            if table is None:
                table = self.stats[kind] = {}
                self._index(kind, items[0].descriptor)
            outcomes = table.get(agent)
            if outcomes is None:
                outcomes = table[agent] = Outcomes()
            self.clock[kind] += 1
            ok_all, n_all = self.typical.get(kind, (0.0, 0.0))
            self.typical[kind] = (ok_all * DISCOUNT + ok, n_all * DISCOUNT + 1.0)
            ok_a, n_a = self._agent_runs.get(agent, (0.0, 0.0))
            ok_a, n_a = ok_a * AGENT_DISCOUNT + ok, n_a * AGENT_DISCOUNT + 1.0
            self._agent_runs[agent] = (ok_a, n_a)
            self.reliable[agent] = PRIOR_RUNS * (ok_a + 1.0) / (n_a + 2.0)
            speed = math.log(min(speeds)) if ok and speeds else None
            watch = self._drift.get(agent)
            if watch is None:
                watch = self._drift[agent] = AgentDrift()
            pooled = outcomes.base is not None  # the agent drifted everywhere lately: this run tells by how much
            if pooled:
                watch.since(ok, outcomes.base, speed)
            everywhere = "" if outcomes.pooling else watch.add(ok, outcomes, speed)
            if everywhere:  # before this run is counted here: it is one of the runs since the change
                log.info("selector: %s %s; its estimates on every kind follow that change now", agent, everywhere)
                for other_kind, other in self.stats.items():
                    o = other.get(agent)
                    if o is not None:
                        o.suspect(everywhere, self.clock[other_kind])
            drift = outcomes.add(ok, speed, self.clock[kind])
            if drift:
                log.info("selector: %s on %s: %s; older runs dropped", agent, kind_text(kind), drift)
            if pooled or everywhere:
                self._pool(agent, watch)

    def _pool(self, agent: str, watch: AgentDrift) -> None:
        """Apply the change pooled over ``agent``'s runs since its drift to its estimates that follow
        it; once none does, the pool ends."""
        ratio, shift, mine = watch.ratio, watch.shift, []
        for kind, table in self.stats.items():
            o = table.get(agent)
            if o is not None and o.base is not None:
                o.pool(ratio, watch.count, shift, watch.speeds, self._prior(kind, agent))
                mine.append(o)
        if not any(o.pooling for o in mine):
            for o in mine:
                o.base = None

    async def warm(self, descriptors: Mapping[str, TaskDescriptor], agents: Sequence[AgentInfo],
                   recall: Recall) -> None:
        """Before choosing: recall from memory the experiences near each kind not recalled yet in
        this process (only when there is a choice to make). A memory failure is a warning."""
        if sum(1 for a in agents if any(c.partition(":")[0] in TASK_KINDS for c in a.capabilities)) < 2:
            return
        for d in descriptors.values():
            kind = kind_of(d)
            if kind in self._recalled:
                continue
            self._recalled.add(kind)
            try:
                self.learn_now(await recall(d.to_json(), RECALL))
            except Exception as e:
                log.warning("selector: no experience recalled for %s: %s: %s", kind_text(kind), type(e).__name__, e)

    def _index(self, kind: Kind, descriptor: TaskDescriptor) -> None:
        from agent_etl.memory.base import Record

        if self._kinds is None:
            from agent_etl.memory.ndarray import NumpyMemory

            self._kinds = NumpyMemory()
        self._kinds.add([Record(repr(kind), descriptor.to_json(), {})])
        self._keys[repr(kind)] = kind

    def _similar(self, kind: Kind, descriptor: TaskDescriptor | None) -> list[tuple[Kind, float]]:
        """Kinds seen that are near this one, with their similarity (computed once per kind and per
        count of kinds seen)."""
        if self._kinds is None or descriptor is None:
            return []
        size = self._kinds.count()
        cached = self._near.get(kind)
        if cached is not None and cached[0] == size:
            return cached[1]
        near = [(self._keys[h.record.id], 1.0 - h.distance) for h in self._kinds.query(descriptor.to_json(), k=6)
                if h.distance < NEAR and self._keys[h.record.id] != kind]
        self._near[kind] = (size, near)
        return near

    def _borrowed(self, kind: Kind, descriptor: TaskDescriptor | None) -> tuple[dict[str, Outcomes], str]:
        """Outcomes of each agent on the kinds similar to ``kind``, pooled by similarity and weighing
        at most ``PRIOR`` runs; and a note of where they come from."""
        pooled: dict[str, Outcomes] = {}
        near = self._similar(kind, descriptor)
        for other, sim in near:
            for agent, o in self.stats.get(other, {}).items():
                p = pooled.get(agent)
                if p is None:
                    p = pooled[agent] = Outcomes()
                p.n += sim * o.n
                p.ok += sim * o.ok
                if o.w:
                    p.mean = (p.mean * p.w + sim * o.w * o.mean) / (p.w + sim * o.w)
                    p.sq = (p.sq * p.w + sim * o.w * o.sq) / (p.w + sim * o.w)
                    p.w += sim * o.w
        for p in pooled.values():
            scale = min(1.0, PRIOR / p.n) if p.n else 1.0
            p.n, p.ok, p.w = p.n * scale, p.ok * scale, p.w * scale
            p.sd = p.spread
        note = ", ".join(f"{kind_text(k)} {s:.2f}" for k, s in near[:2])
        return pooled, note

    # -- choosing ---------------------------------------------------------------------------------

    async def select(self, tasks: Sequence[Task], agents: Sequence[AgentInfo],
                     descriptors: Mapping[str, TaskDescriptor] | None = None) -> dict[str, Choice]:
        descriptors = descriptors or {}
        load: dict[str, int] = {a.id: a.load for a in agents}
        chosen: dict[str, Choice] = {}
        for branch in branches(tasks):
            capable = agents
            for t in branch:  # narrowed task by task: one pass over the agents for a one-task branch
                capable = [a for a in capable if a.can_run(t.kind, t.tool)]
            if not capable:  # no one agent runs it all: each task on its own, as capabilities say
                chosen.update(await self._fallback.select(branch, agents, descriptors))
                continue
            capable, left = placement(branch, capable, descriptors, agents)  # tags and the memory rule
            descriptor = descriptors.get(branch[0].name)
            if len(capable) == 1:
                agent = capable[0]
                reason = None
            else:
                agent, reason = self.decide(descriptor, capable, load)
            for t in branch:
                said = reason or (f"only agent able to {t.kind}" if len(branch) == 1 else
                                  "only agent able to run the whole branch")
                chosen[t.name] = Choice(agent.id, _noted(said, left))
            load[agent.id] = load.get(agent.id, 0) + 1
        return chosen

    def decide(self, descriptor: TaskDescriptor | None, capable: Sequence[AgentInfo],
               load: Mapping[str, int]) -> tuple[AgentInfo, str | Callable[[], str]]:
        """One agent among ``capable`` (two or more) for a branch described by ``descriptor``, and
        the reason, or once sampling decides, what writes it when read (``Choice``)."""
        kind = kind_of(descriptor) if descriptor is not None else NO_KIND
        table = self.stats.get(kind) or _NOTHING
        # (agent, its outcomes here, tasks it runs, slots): one pass, a decision is on the hot path
        rows = [(a, table.get(a.id), load.get(a.id, 0), a.limits.get("concurrency") or CONCURRENCY) for a in capable]
        free = [r for r in rows if r[2] < r[3]] or rows
        runs = [r[1].runs for r in free if r[1] is not None]  # of the agents that ran the kind
        note = ""
        if not runs:
            borrowed, note = self._borrowed(kind, descriptor)
            free = [(a, borrowed.get(a.id), busy, slots) for a, _, busy, slots in free]
            if not any(r[1] is not None for r in free):
                agent = min(free, key=lambda r: (r[2] / r[3], r[0].id))[0]
                return agent, (f"no experience of {kind_text(kind)} or similar tasks yet: least busy of "
                               f"{len(free)} capable agents")
        elif len(runs) < len(free) or min(runs) < TRIES:  # each capable agent runs a kind a few times first
            a = min(free, key=lambda r: (r[1] is not None and r[1].runs, r[2] / r[3], r[0].id))[0]
            return a, (f"trying {a.id}: fewer than {TRIES} runs of it on {kind_text(kind)} yet "
                       f"({len(runs)} of {len(free)} capable agents tried)")
        clock = self.clock[kind]
        self._normals.ensure(2 * len(free))
        normal, exp, sqrt = self._normals.pop, math.exp, math.sqrt
        k0, _ = self._prior(kind)
        reliable = self.reliable
        speeds = [r[1].mean for r in free if r[1] is not None and r[1].w]
        base = sum(speeds) / len(speeds) if speeds else 0.0
        best = best_mean = second = free[0]
        top = top_mean = second_mean = -1.0
        # agents with fewer than CONTEND runs here, by expected outcome: they matter while the kind is young
        young = clock < YOUNG and len(free) > 2
        learning: list[tuple[float, tuple]] = []
        for r in free:
            a, o, busy, slots = r
            crowd = 1.0 + busy / slots
            if o is None:  # never ran this kind, nor a similar one: a wide guess around the others
                draw = self._random.random() * exp(base + normal()) / crowd
                mean = 0.5 * exp(base) / crowd
            else:
                last = o.last
                f = STALE ** (clock - last) if last and clock > last else 1.0
                n, ok, w = o.n * f, o.ok * f, o.w * f
                # an agent that drifted lately is not explored: it runs where its estimate is the best
                explore = EXPLORE if not o.drift or clock - o.since >= SETTLE else 0.0
                if w > 0:
                    mean_speed = o.mean
                    speed = mean_speed + explore * o.sd / sqrt(w) * normal()
                else:
                    speed, mean_speed = base + normal(), base
                a0, weight = reliable.get(a.id, k0), n + PRIOR_RUNS
                success = (ok + a0) / weight
                # the Beta posterior of success, through its normal approximation (a tenth of the cost)
                drawn = success + explore * sqrt(success * (1.0 - success) / (weight + 1.0)) * normal()
                draw = (0.0 if drawn < 0.0 else 1.0 if drawn > 1.0 else drawn) * exp(speed) / crowd
                mean = success * exp(mean_speed) / crowd
                if young and o.runs < CONTEND:
                    learning.append((mean, r))
            if draw > top:
                best, top = r, draw
            if mean > top_mean:
                second, second_mean = best_mean, top_mean
                best_mean, top_mean = r, mean
            elif mean > second_mean:
                second, second_mean = r, mean
        # the runner-up matters once the best fails: agents close to the best are run until their
        # estimate is good enough to rank them, while the kind is young (in the benchmark: warm-up)
        if learning:
            contenders = [r for m, r in learning if m >= CLOSE * second_mean and r is not best_mean]
            if contenders:
                best = min(contenders, key=lambda r: (r[1].runs, r[0].id))
                return best[0], self._reason("learning", kind, note, len(free), table, best, best_mean)
        if best is not best_mean:
            return best[0], self._reason("exploring", kind, note, len(free), table, best, best_mean)
        return best[0], self._reason("best", kind, note, len(free), table, best, None if second is best else second)

    def _prior(self, kind: Kind, agent: str | None = None) -> tuple[float, float]:
        """Beta prior of an agent's success on ``kind``, weighing ``PRIOR_RUNS`` runs: the agent's
        success on every kind lately (an agent's reliability is much the same from kind to kind),
        else the success of all agents on this kind."""
        if agent is not None and agent in self.reliable:
            a0 = self.reliable[agent]
            return a0, PRIOR_RUNS - a0
        ok, n = self.typical.get(kind, (0.0, 0.0))
        p = (ok + 1.0) / (n + 2.0)
        return PRIOR_RUNS * p, PRIOR_RUNS * (1.0 - p)

    def _reason(self, how: str, kind: Kind, note: str, capable: int, table: Mapping[str, Outcomes],
                chosen: tuple, other: tuple | None) -> Reason:
        """A sampled decision's reason, written when read: what it says of the agents it names (the
        ``chosen`` decision row, and the best estimate or the next one) and the kind's recent drifts
        are taken now, the text is written later."""
        drifts = "; ".join([f"{a}: {o.drift}" for a, o in table.items() if o.drift and o.n < 2 * WINDOW + 1])
        return Reason(how, kind, note, capable, drifts, self._estimate(kind, chosen),
                      None if other is None else self._estimate(kind, other))

    def _estimate(self, kind: Kind, row: tuple) -> tuple:
        """What a reason says of an agent: (id, estimated success on ``kind`` or None if untried,
        runs, rows/s or None, tasks it runs, slots)."""
        a, o, busy, slots = row
        if o is None:
            return a.id, None, 0.0, None, busy, slots
        a0, b0 = self._prior(kind, a.id)
        return a.id, (o.ok + a0) / (o.n + a0 + b0), o.n, o.speed if o.w else None, busy, slots


class Reason:
    """The reason of a decision made by sampling, written when first read (by ``Choice``), once
    for all the tasks of its branch, from what the decision took of the estimates then (a run
    learnt since changes the estimates, not what the decision said): ``how`` it was made (the best
    estimate, exploring, or learning the runner-up), the kind, the note of the similar kinds it
    borrowed from, how many agents were capable, the kind's recent drifts, and the
    ``MemorySelector._estimate`` of the chosen agent and of the ``other`` one it names, if any."""

    __slots__ = ("how", "kind", "note", "capable", "drifts", "chosen", "other", "_text")

    def __init__(self, how: str, kind: Kind, note: str, capable: int, drifts: str, chosen: tuple,
                 other: tuple | None) -> None:
        self.how, self.kind, self.note, self.capable = how, kind, note, capable
        self.drifts, self.chosen, self.other = drifts, chosen, other
        self._text: str | None = None

    def __call__(self) -> str:
        if self._text is None:
            self._text = self._write()
        return self._text

    def _write(self) -> str:
        where = f"experience of similar tasks ({self.note})" if self.note else f"experience of {kind_text(self.kind)}"
        chosen = _said(*self.chosen)
        other = _said(*self.other) if self.other is not None else ""
        if self.how == "learning":
            head = (f"learning the runner-up, from {where}: {chosen} is within {1 - CLOSE:.0%} of the next best "
                    f"after {other}; each such agent runs a new kind {CONTEND} times")
        elif self.how == "best":
            head = f"best expected outcome of {self.capable} capable agents, from {where}: {chosen}"
            if other:
                head += "; next " + other
        else:
            head = f"exploring, from {where}: {chosen} drew above the best estimate {other}"
        return head + ("; drift " + self.drifts if self.drifts else "")


def _said(agent: str, success: float | None, runs: float, speed: float | None, busy: int, slots: float) -> str:
    if success is None:
        return f"{agent} untried"
    rows = f", ~{rate(speed)} rows/s" if speed is not None else ""
    return f"{agent} (est. success {success:.0%} over {runs:.0f} runs{rows}, load {busy}/{slots:g})"


def _noted(reason: str | Callable[[], str], note: str) -> str | Callable[[], str]:
    """A task's reason: its branch's, then the placement's note (whom tags and memory left out), if any."""
    if not note:
        return reason
    if isinstance(reason, str):
        return f"{reason}; {note}"
    return lambda: f"{reason()}; {note}"
