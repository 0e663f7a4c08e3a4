"""The event bus: one protocol (``bus.base.EventBus``), a backend chosen by URL (``open_bus``)."""

from __future__ import annotations

from agent_etl.bus.base import EventBus
from agent_etl.exceptions import AgentETLError

BACKENDS = "memory (in-process, the default), nats://host:port (NATS JetStream, for worker processes)"


class BusError(AgentETLError):
    """The bus named in settings (``AGENT_ETL_BUS``, ``--bus``) cannot be used."""

    exit_code = 2


def open_bus(url: str) -> EventBus:
    """The bus ``url`` names: ``memory``, the in-process bus, or ``nats://host:port[?namespace=NAME]``,
    NATS JetStream (runs spread over ``agent-etl worker`` processes; it connects on first use)."""
    name = url.strip()
    if name == "memory":
        from agent_etl.bus.memory import MemoryBus

        return MemoryBus()
    if name.startswith(("nats://", "tls://")):
        try:
            from agent_etl.bus.nats import NatsBus
        except ImportError:
            raise BusError(f"bus {name!r}: the NATS JetStream bus needs nats-py: "
                           "pip install 'agent-etl[distributed]'") from None
        return NatsBus(name)
    raise BusError(f"unknown bus {name!r}; the bus is one of: {BACKENDS}")
