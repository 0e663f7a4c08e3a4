"""When the runtime acknowledges a source (agents.acks): only what every load below has committed, the
smallest position first, never for a quarantining gate's unit commits, never two at once."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from agent_etl.agents.acks import Acks

SPEC = """
version: 1
name: acks
extract:
  src: {tool: numbers, rows: 10}
load:
  a: {input: src, tool: collect, key: a}
  b: {input: src, tool: collect, key: b}
"""


class Source:
    """A source that records what it was told it may acknowledge."""

    def __init__(self):
        self.acked: list[int] = []
        self.busy = False

    async def acknowledge(self, position):
        assert not self.busy  # never two at once
        self.busy = True
        await asyncio.sleep(0.01)
        self.acked.append(position["rows"])
        self.busy = False


def run(pipeline, done=()):
    return SimpleNamespace(pipeline=pipeline, resume=SimpleNamespace(done=list(done)) if done else None)


async def test_acknowledged_up_to_the_smallest_commit_of_the_loads_below(make_pipeline):
    acks, src = Acks(), Source()
    acks.register(run(make_pipeline(SPEC)), "src", src)
    await acks.committed("a", {"src": {"rows": 4}})
    assert src.acked == []  # load b has committed nothing yet
    await acks.committed("b", {"src": {"rows": 2}})
    assert src.acked == [2]
    await acks.committed("b", {"src": {"rows": 6}})
    assert src.acked == [2, 4]  # a is behind now
    await asyncio.gather(acks.committed("a", {"src": {"rows": 8}}), acks.committed("b", {"src": {"rows": 8}}))
    assert src.acked == [2, 4, 6, 8] or src.acked == [2, 4, 8]


async def test_a_load_done_before_a_resume_does_not_hold_acks_back(make_pipeline):
    acks, src = Acks(), Source()
    acks.register(run(make_pipeline(SPEC), done=["a"]), "src", src)
    await acks.committed("b", {"src": {"rows": 3}})
    assert src.acked == [3]


async def test_a_gate_between_source_and_load_acks_only_the_final_commit(make_pipeline):
    gated = SPEC.replace("  src: {tool: numbers, rows: 10}", "  src: {tool: numbers, rows: 10}\nquality:\n  - input: src\n"
                         "    on_failure: quarantine\n    checks: [{not_null: [id]}]")
    acks, src = Acks(), Source()
    acks.register(run(make_pipeline(gated)), "src", src)
    for load in ("a", "b"):
        await acks.committed(load, {"src": {"rows": 5}})
    assert src.acked == []
    for load in ("a", "b"):
        await acks.committed(load, {"src": {"rows": 10, "end": True}})
    assert src.acked == [10]
