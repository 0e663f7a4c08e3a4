"""The memory-driven selector's logic where it is subtle: the capability fallback, trying every
agent, learning the best, drift, load, similar kinds, and branches kept on one agent."""

from __future__ import annotations

import pytest

from agent_etl.agents.memory_selector import MemorySelector, kind_of
from agent_etl.agents.outcomes import Outcomes, rate
from agent_etl.agents.selector import AgentInfo
from agent_etl.memory.descriptor import TaskDescriptor
from agent_etl.memory.experience import Experience
from agent_etl.spec import Task
from agent_etl.testing import SimulatedFleet

ALL = frozenset({"extract", "transform", "load"})
PG = TaskDescriptor("load", "parquet", ("postgres",), ("parquet",))
MYSQL = TaskDescriptor("load", "parquet", ("mysql",), ("parquet",))


def agents(*names: str, **limits: float) -> list[AgentInfo]:
    return [AgentInfo(n, capabilities=ALL, limits=dict(limits)) for n in names]


def experience(run: int, agent: str, ok: bool = True, speed: float = 1000.0, d: TaskDescriptor = PG) -> Experience:
    return Experience(f"r{run}", "p", "t", d, agent, status="succeeded" if ok else "failed",
                      rows=1000 if ok else 0, rows_per_second=speed if ok else 0.0, created_at=float(run))


async def choose(selector: MemorySelector, fleet: list[AgentInfo], d: TaskDescriptor = PG):
    task = Task("t", "load", d.tool, [], {})
    return (await selector.select([task], fleet, {"t": d}))["t"]


def on_two_kinds(seed: int, runs: int, speeds: dict[str, float]) -> MemorySelector:
    """A selector that learnt ``runs`` runs of each agent of ``speeds`` on PG and MYSQL, each at its
    speed, all succeeding."""
    selector = MemorySelector(seed=seed)
    for run in range(runs):
        for i, d in enumerate((PG, MYSQL)):
            for j, (agent, speed) in enumerate(speeds.items()):
                selector.learn_now([experience(2 * len(speeds) * run + len(speeds) * i + j, agent, speed=speed, d=d)])
    return selector


async def test_without_experience_capabilities_decide():
    fleet = [AgentInfo("a", capabilities=ALL, load=2), AgentInfo("b", capabilities=ALL),
             AgentInfo("c", capabilities=frozenset({"extract"}))]
    choice = await choose(MemorySelector(seed=1), fleet)
    assert choice.agent == "b"  # c cannot load; a is busier
    assert "no experience" in choice.reason and "least busy of 2 capable agents" in choice.reason


async def test_every_agent_is_tried_then_the_best_is_learnt():
    selector, fleet = MemorySelector(seed=3), agents("a", "b", "c")
    speeds = {"a": 1000.0, "b": 3000.0, "c": 1500.0}
    picks = []
    for run in range(200):
        c = await choose(selector, fleet)
        picks.append(c.agent)
        selector.learn_now([experience(run, c.agent, speed=speeds[c.agent])])
    assert set(picks[:6]) == {"a", "b", "c"}  # each tried before sampling starts
    assert picks[-50:].count("b") >= 48
    reason = (await choose(selector, fleet)).reason
    assert "b (est. success" in reason and "postgres -> parquet" in reason


async def test_an_agent_that_starts_failing_is_dropped_within_a_few_runs():
    selector, fleet = MemorySelector(seed=5), agents("a", "b")
    for run in range(300):  # a is faster, b slower; both always succeed
        c = await choose(selector, fleet)
        selector.learn_now([experience(run, c.agent, speed=2000.0 if c.agent == "a" else 1000.0)])
    assert (await choose(selector, fleet)).agent == "a"
    picked_a = 0
    for run in range(300, 330):  # now a fails every run
        c = await choose(selector, fleet)
        picked_a += c.agent == "a"
        selector.learn_now([experience(run, c.agent, ok=c.agent != "a", speed=1000.0)])
    assert picked_a <= 8
    # the agent's drift (seen across its runs) is applied to its estimates on every kind, this one too
    assert selector.stats[kind_of(PG)]["a"].drift.startswith("failed 3 of its last 3 runs")


def test_outcomes_drop_the_past_on_a_throughput_drift_only_when_it_is_clear():
    o = Outcomes()
    for i in range(100):
        assert o.add(True, 10.0 + (0.1 if i % 2 else -0.1)) == ""
    assert o.add(True, 10.25) == ""  # within the spread: no drift
    notes = [o.add(True, 8.0) for _ in range(4)]
    assert any(n.startswith("throughput fell") for n in notes)
    assert o.n < 12 and o.mean < 9.5


async def test_load_and_concurrency_limits_spread_a_pipeline_over_agents():
    selector = MemorySelector(seed=2)
    fleet = agents("a", "b", concurrency=1)
    for run in range(40):
        for agent in ("a", "b"):
            selector.learn_now([experience(run * 2 + (agent == "b"), agent, speed=1000.0 if agent == "a" else 900.0)])
    tasks = [Task("x", "load", "parquet", [], {}), Task("y", "load", "parquet", [], {})]
    chosen = await selector.select(tasks, fleet, {"x": PG, "y": PG})
    assert {chosen["x"].agent, chosen["y"].agent} == {"a", "b"}  # a full agent is passed over


async def test_a_branch_goes_to_one_agent_able_to_run_all_of_it():
    fleet = [AgentInfo("reader", capabilities=frozenset({"extract:csv"})),
             AgentInfo("whole", capabilities=frozenset({"extract:csv", "load:parquet"}))]
    tasks = [Task("e", "extract", "csv", [], {}), Task("l", "load", "parquet", ["e"], {})]
    chosen = await MemorySelector().select(tasks, fleet, {})
    assert chosen["e"].agent == chosen["l"].agent == "whole"
    assert chosen["l"].reason == "only agent able to run the whole branch"


async def test_a_new_kind_borrows_from_similar_kinds():
    selector, fleet = MemorySelector(seed=4), agents("a", "b")
    for run in range(60):
        for agent, speed in (("a", 500.0), ("b", 5000.0)):
            selector.learn_now([experience(2 * run + (agent == "b"), agent, speed=speed)])
    similar = TaskDescriptor("load", "parquet", ("postgres",), ("parquet",), ("filter",))
    c = await choose(selector, fleet, similar)
    assert c.agent == "b" and "experience of similar tasks (postgres -> parquet" in c.reason


async def test_the_simulated_fleet_is_learnt():
    fleet = SimulatedFleet.generate(agents=3, kinds=3, seed=7)
    selector = MemorySelector(seed=7)
    right = []
    for i in range(600):
        task, d = fleet.task(i % 3)
        c = (await selector.select([task], fleet.agents, {task.name: d}))[task.name]
        right.append(c.agent == fleet.oracle(d))
        await selector.learn(fleet.run(c.agent, d))
    assert sum(right[-150:]) >= 140


async def test_the_runner_up_is_learnt_while_a_kind_is_young():
    from agent_etl.agents.memory_selector import CONTEND

    selector, fleet = MemorySelector(seed=6), agents("best", "next", "third", "slow")
    speeds = {"best": 3000.0, "next": 2600.0, "third": 2200.0, "slow": 600.0}
    reasons = []
    for run in range(90):
        c = await choose(selector, fleet)
        reasons.append(c.reason)
        selector.learn_now([experience(run, c.agent, speed=speeds[c.agent])])
    runs = {a: o.runs for a, o in selector.stats[kind_of(PG)].items()}
    # the two close behind the best are known from CONTEND runs each; the slow one from its 3 tries
    assert runs["next"] >= CONTEND and runs["third"] >= CONTEND and runs["slow"] == 3, runs
    assert any(r.startswith("learning the runner-up") for r in reasons)
    assert runs["best"] > runs["next"]


def test_a_suspect_estimate_keeps_the_success_ratio_seen():
    o = Outcomes()
    for _ in range(100):
        o.add(True, 7.0)
    a0, b0 = 1.96, 0.04  # a prior of 98% success, weighing 2 runs
    before = (o.ok + a0) / (o.n + a0 + b0)
    o.suspect("failed 3 of its last 5 runs")
    o.pool(0.4, 3, 0.0, 2, prior=(a0, b0))
    after = (o.ok + a0) / (o.n + a0 + b0)  # what a decision sees, the prior included
    assert abs(after - 0.4 * before) < 0.01 and o.n < 3.001 and abs(o.speed - 1096.6) < 1
    o = Outcomes()
    for _ in range(100):
        o.add(True, 7.0)
    o.suspect("failed 5 of its last 5 runs")
    o.pool(0.1, 5, 0.0, 0, prior=(a0, b0))  # below what the prior alone gives
    assert abs((o.ok + a0) / (o.n + a0 + b0) - 0.1 * before) < 0.01 and o.ok == 0.0


def test_a_pooled_estimate_gives_way_to_its_own_runs():
    """After its agent's drift, a kind's estimate is the change pooled everywhere applied to what it
    was, then its own runs since; after ``POOLED`` of them, those alone, as a plain estimate again."""
    import math

    from agent_etl.agents.outcomes import POOLED

    o = Outcomes()
    for i in range(200):
        o.add(True, 8.0 + (0.1 if i % 2 else -0.1))
    o.suspect("ran 0.5x as fast as expected on its last 3 runs")
    o.pool(1.0, 3, math.log(0.5), 3)
    assert abs(o.mean - (8.0 + math.log(0.5))) < 1e-3 and o.w == 3 and abs(o.sd - 0.1) < 0.01
    for i in range(POOLED - 1):  # this kind runs at 0.25x, the pool still says 0.5x
        o.add(True, 8.0 + math.log(0.25))
        o.pool(1.0, 3 + i + 1, math.log(0.5), 3 + i + 1)
        assert o.base is not None
    assert math.log(0.25) < o.mean - 8.0 < math.log(0.5)
    o.add(True, 8.0 + math.log(0.25))
    o.pool(1.0, 3 + POOLED, math.log(0.5), 3 + POOLED)
    assert not o.pooling and o.drift  # plain again; the drift is still said in reasons
    assert abs(o.mean - 8.0 - math.log(0.25)) < 0.05  # its own runs only, not the pooled change
    mean = o.mean
    o.add(True, mean + 1.0)
    assert abs(o.mean - mean - 1.0 / (POOLED * 0.998 + 1.0)) < 1e-9  # its runs count as usual, discounted


async def test_an_agent_slowed_everywhere_is_shifted_once():
    other = MYSQL
    selector = on_two_kinds(8, 200, {"a": 4000.0, "b": 1000.0})  # a runs both kinds at 4000 rows/s, b at 1000
    run = 10_000
    for _ in range(6):  # now a runs at 0.4x, on the first kind only (for now)
        run += 1
        selector.learn_now([experience(run, "a", speed=1600.0)])
    shifted = selector.stats[kind_of(other)]["a"]
    assert "as fast as expected" in shifted.drift
    assert 0.3 < shifted.speed / 4000.0 < 0.55, shifted.speed  # once: ~0.4x, not 0.4 x 0.4


async def test_a_change_seen_where_an_agent_still_runs_moves_its_other_kinds():
    """An agent slows everywhere; it keeps running the kind where it is still the best, and its
    estimate on a kind it no longer runs follows what those runs tell of the change."""
    import math

    other = MYSQL
    selector = on_two_kinds(12, 200, {"a": 4000.0, "b": 1000.0})  # a runs both kinds at 4000 rows/s, b at 1000
    run = 10_000
    # now a runs at 0.5x, then 0.3x: the first runs show a drift at about 0.5x, the next ones more
    for speed in [2000.0] * 3 + [1200.0] * 15:
        run += 1
        selector.learn_now([experience(run, "a", speed=speed)])
    moved = selector.stats[kind_of(other)]["a"]
    assert moved.base is not None and moved.w >= 15  # weighs as the runs pooled, not a couple
    assert 0.3 < moved.speed / 4000.0 < 0.4, moved.speed / 4000.0
    assert math.isclose(moved.speed, selector.stats[kind_of(PG)]["a"].speed, rel_tol=0.15)


async def test_a_second_drift_is_measured_from_where_the_first_left_the_estimates():
    other = MYSQL
    selector = on_two_kinds(14, 200, {"a": 4000.0})
    run = 10_000
    for speed in [2000.0] * 30 + [1000.0] * 10:  # 0.5x, long enough for PG's own runs to decide; then 0.25x
        run += 1
        selector.learn_now([experience(run, "a", speed=speed)])
    moved = selector.stats[kind_of(other)]["a"]
    assert selector.stats[kind_of(PG)]["a"].drift.startswith("ran 0.5")  # the second drift, against 2000
    assert 0.2 < moved.speed / 4000.0 < 0.3, moved.speed / 4000.0


async def test_a_false_alarm_heals_as_the_agent_runs_as_before():
    """Three failures in a row of a reliable agent look like a drift; its estimates everywhere drop,
    then its next runs on one kind, as good as ever, restore them on every kind."""
    other = MYSQL
    selector = on_two_kinds(13, 300, {"a": 3000.0})
    before = selector.stats[kind_of(other)]["a"].success
    run = 10_000
    for _ in range(3):
        run += 1
        selector.learn_now([experience(run, "a", ok=False)])
    suspect = selector.stats[kind_of(other)]["a"]
    assert "failed 3 of its last 3 runs" in suspect.drift and suspect.success < 0.5
    for _ in range(40):
        run += 1
        selector.learn_now([experience(run, "a", speed=3000.0)])
    healed = selector.stats[kind_of(other)]["a"]
    a0, b0 = selector._prior(kind_of(other), "a")
    seen = (healed.ok + a0) / (healed.n + a0 + b0)  # what a decision sees: 3 failures in 43 runs are real
    assert 0.88 * before < seen < before and abs(healed.speed / 3000.0 - 1.0) < 0.05, (seen, before)


@pytest.mark.parametrize("value, text", [(0.5, "0.5"), (999.9995, "1k"), (1234, "1.23k"), (123_456, "123k"),
                                         (999_999.99, "1M"), (5e6, "5M")])
def test_rates_in_reasons_stay_three_digits_in_the_right_unit(value, text):
    assert rate(value) == text


def test_normal_draws_are_standard_and_follow_the_seed():
    """Decisions draw from ``Normals`` (numpy's, in blocks): the same numbers for the same seed, in
    the same order however they are asked for, and standard normal ones."""
    import statistics

    from agent_etl.agents.memory_selector import Normals

    one, two = Normals(11), Normals(11)
    drawn, again = [], []
    for _ in range(3000):  # one decision's worth (2 per agent) at a time, across block ends
        one.ensure(10)
        drawn += [one.pop() for _ in range(10)]
        two.ensure(4)
        again += [two.pop() for _ in range(4)]
    assert drawn[:len(again)] == again
    assert abs(statistics.fmean(drawn)) < 0.03 and abs(statistics.pstdev(drawn) - 1.0) < 0.02
    other = Normals(12)
    other.ensure(10)
    assert [other.pop() for _ in range(10)] != drawn[:10]


async def test_a_reason_read_later_is_the_one_of_its_decision():
    """A sampled decision's reason is written when first read, from the estimates taken when it was
    made: runs learnt in between change the estimates, not what the decision said."""
    def trained() -> MemorySelector:
        selector = MemorySelector(seed=9)
        for run in range(40):
            for agent, speed in (("a", 3000.0), ("b", 1000.0), ("c", 1500.0)):
                selector.learn_now([experience(3 * run + "abc".index(agent), agent, speed=speed)])
        return selector

    fleet = agents("a", "b", "c")
    now, later = trained(), trained()
    read_now = await choose(now, fleet)
    said = read_now.reason
    assert said.startswith("best expected outcome of 3 capable agents") and "a (est. success 100% over 38 runs, ~3k rows/s" in said, said
    unread = await choose(later, fleet)
    for run in range(1000, 1010):  # a now fails: its estimate falls
        later.learn_now([experience(run, "a", ok=False)])
    assert unread.agent == read_now.agent == "a" and unread.reason == said
    assert (await choose(later, fleet)).reason != said


async def test_a_branch_shares_its_decision_reason_with_the_placement_note():
    fleet = [AgentInfo(n, capabilities=ALL, limits={"memory_mb": mb}) for n, mb in (("a", 4096), ("b", 4096),
                                                                                      ("small", 100))]
    big = TaskDescriptor("extract", "postgres", ("postgres",), ("parquet",), rows=1_000_000)
    tasks = [Task("e", "extract", "postgres", [], {}), Task("l", "load", "parquet", ["e"], {})]
    descriptors = {"e": big, "l": TaskDescriptor("load", "parquet", ("postgres",), ("parquet",), rows=1_000_000)}
    selector = MemorySelector(seed=2)
    for run in range(30):
        for agent, speed in (("a", 2000.0), ("b", 1000.0)):
            selector.learn_now([experience(2 * run + (agent == "b"), agent, speed=speed, d=big)])
    chosen = await selector.select(tasks, fleet, descriptors)
    assert chosen["e"].agent == chosen["l"].agent == "a"
    assert chosen["e"].reason == chosen["l"].reason
    assert chosen["e"].reason.startswith("best expected outcome of 2 capable agents, from experience of postgres "
                                         "-> parquet: a (est. success")
    assert chosen["e"].reason.endswith("; left out: small (memory_mb 100) short of the ~159 MB the branch needs")
    assert chosen["e"] == chosen["l"] and repr(chosen["e"]).startswith("Choice(agent='a', reason='best expected")


def test_a_branch_learnt_twice_counts_once_and_the_record_of_them_is_bounded(monkeypatch):
    from agent_etl.agents import memory_selector

    monkeypatch.setattr(memory_selector, "SEEN", 3)
    selector = MemorySelector(seed=1)
    first = [experience(run, "a") for run in range(3)]
    selector.learn_now(first)
    selector.learn_now(first)  # recalled again (memory warm-up after live learning): not counted again
    assert sum(selector.clock.values()) == 3
    selector.learn_now([experience(run, "a") for run in range(3, 10)])
    assert sum(selector.clock.values()) == 10 and len(selector._seen) == 3
