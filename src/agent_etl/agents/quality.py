"""The quality agent: what belongs on the bus about data quality. History, anomaly events, reports.

The gates themselves run where the step runs, in process (``agent_etl.quality.gates``): a batch
never crosses the bus. For each gate that finished, the ETL agent sends a ``GateChecked`` summary
(report, profile, anomalies) as a ``quality.checked`` request; this agent stores the profile (and
anomalies) in the run store, the history later runs' ``anomaly`` checks compare with and
``agent-etl report`` shows, then replies, so the profile is kept before the task completes. It
logs the anomalies of severity ``warn`` and publishes the summary as an event, with an
``AnomalyDetected`` event for each gate that found some. Several quality agents may serve the
subject (each summary goes to one of them).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from agent_etl.agents.base import Agent
from agent_etl.events import AnomalyDetected, GateChecked

log = logging.getLogger("agent_etl.quality")
CHECKED = "quality.checked"  # request subject: a GateChecked summary, replied to once it is kept


class QualityAgent(Agent):
    kind = "quality"
    capabilities = frozenset({"quality"})

    def __init__(self, bus, *, stores: dict[str, Any] | None = None, **kw):
        super().__init__(bus, **kw)
        # url -> RunStore, given by a coordinator in the same process (it shares its own), else opened here
        self.stores: dict[str, Any] = stores if stores is not None else {}
        self._opened: dict[str, Any] = {}  # url -> RunStore opened here (closed at stop)

    async def on_start(self) -> None:
        self._subs.append(await self.bus.serve(CHECKED, self._on_checked))

    async def on_stop(self) -> None:
        for store in self._opened.values():
            store.close()
        self._opened.clear()

    async def _on_checked(self, ev: GateChecked) -> None:
        store = self._store(ev.store_url)
        if store is not None:
            _audit(store, ev)
        if ev.profile is not None and store is not None:  # a failed gate's profile is kept too: its report shows it
            await asyncio.to_thread(store.save_profile, ev.run_id, ev.pipeline, ev.input, ev.profile, ev.anomalies)
        await self.bus.publish(ev)
        if ev.anomalies:
            for a in ev.anomalies:
                if a["severity"] == "warn":  # a failing one is in the gate's error already
                    log.warning("run %s: anomaly: %s", ev.run_id, a["message"])
            await self.bus.publish(AnomalyDetected(run_id=ev.run_id, task=ev.task, input=ev.input,
                                                   anomalies=ev.anomalies))

    def _store(self, url: str | None) -> Any:
        if url is None:
            return None
        store = self.stores.get(url) or self._opened.get(url)
        if store is None:
            from agent_etl.store.runs import RunStore

            store = self._opened[url] = RunStore(url)
        return store


def _audit(store: Any, ev: GateChecked) -> None:
    """The quality decisions of a gate in the run's audit trail: its outcome (rows passed,
    quarantined and where to) and the anomalies it found."""
    r = ev.report
    if r is not None:
        store.audit(ev.run_id, "quality.gate", ev.task, {
            "input": ev.input, "status": r.get("status"), "on_failure": r.get("on_failure"),
            "rows_in": r.get("rows_in"), "rows_passed": r.get("rows_passed"),
            "rows_quarantined": r.get("rows_quarantined"), "quarantine_path": r.get("quarantine_path"),
            "failed_checks": [c.get("label") for c in r.get("checks", []) if c.get("status") != "passed"]})
    if ev.anomalies:
        store.audit(ev.run_id, "anomaly", ev.task, {"input": ev.input, "anomalies": [
            {k: a.get(k) for k in ("metric", "column", "value", "expected", "severity", "message")}
            for a in ev.anomalies]})
