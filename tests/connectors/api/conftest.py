from __future__ import annotations

import pytest

from tests.connectors.api.server import Api, Server


@pytest.fixture
def api():
    server = Server(Api()).start()
    try:
        yield server
    finally:
        server.stop()
