"""The event bus: one protocol (``bus.base.EventBus``), a backend chosen by URL (``open_bus``)."""

from __future__ import annotations

from agent_etl.bus.base import EventBus
from agent_etl.exceptions import AgentETLError

BACKENDS = "memory (in-process, the default)"


class BusError(AgentETLError):
    """The bus named in settings (``AGENT_ETL_BUS``, ``--bus``) cannot be used."""

    exit_code = 2


def open_bus(url: str) -> EventBus:
    """The bus ``url`` names: ``memory``, the in-process bus. ``nats://host:port`` (NATS JetStream,
    for runs spread over worker processes) is named but not supported yet."""
    name = url.strip()
    if name == "memory":
        from agent_etl.bus.memory import MemoryBus

        return MemoryBus()
    if name.startswith(("nats://", "tls://")):
        raise BusError(f"bus {name!r}: the NATS JetStream bus is not supported yet; use --bus memory "
                       "(AGENT_ETL_BUS=memory), the in-process bus")
    raise BusError(f"unknown bus {name!r}; the bus is one of: {BACKENDS}")
