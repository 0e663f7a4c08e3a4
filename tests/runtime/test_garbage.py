import gc

from agent_etl import AgentCoordinator

SPEC = """
version: 1
name: garbage
extract:
  nums: {tool: numbers, rows: 10, batch: 4}
transform:
  - {name: doubled, input: nums, tool: double}
load:
  out: {input: doubled, tool: collect, key: out}
"""


async def test_a_finished_run_leaves_no_reference_cycles(make_pipeline, registry, tmp_path):
    # a run's tasks, tools and channels must be freed when it ends, not left to the cyclic garbage
    # collector: its collections grow with the heap and stall the loop
    async with AgentCoordinator(registry=registry, home=tmp_path) as c:
        pipeline = make_pipeline(SPEC)
        assert (await c.run(pipeline)).ok  # the first run imports and caches what later runs reuse
        gc.collect()
        gc.disable()
        try:
            result = await c.run(pipeline)
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            left = [type(o).__qualname__ for o in gc.garbage]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    assert result.ok
    assert left == []
