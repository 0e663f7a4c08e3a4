"""The HTML report opened in a real headless Chromium (Debian's ``chromium``, installed by
scripts/setup-test-browser.sh): the DOM after rendering holds the run's numbers and the SVG
charts, hostile data stays text, and the page fetches nothing from the network.

Skipped when chromium is missing, unless AGENT_ETL_REQUIRE_BROWSER is set (CI sets it: there a
missing browser is a failure, not a skip)."""

import os
import shutil
import socket
import struct
import subprocess
import threading
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from tests.cli.conftest import cli
from test_report import HOSTILE, N, expected, make_pipeline, orders, profile_of, run

from agent_etl.store.runs import RunStore

CHROMIUM = shutil.which("chromium")
if CHROMIUM is None and not os.environ.get("AGENT_ETL_REQUIRE_BROWSER"):
    pytest.skip("chromium is not installed (run scripts/setup-test-browser.sh; set AGENT_ETL_REQUIRE_BROWSER=1 "
                "to fail instead of skipping)", allow_module_level=True)


def chromium(tmp_path, *args: str, proxy: int | None = None) -> subprocess.CompletedProcess:
    assert CHROMIUM, "AGENT_ETL_REQUIRE_BROWSER is set but chromium is not on PATH: run scripts/setup-test-browser.sh"
    flags = ["--headless", "--disable-gpu", "--no-sandbox", f"--user-data-dir={tmp_path / 'chromium-profile'}",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--disable-default-apps", "--disable-extensions", "--disable-domain-reliability",
             "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,MediaRouter,Translate",
             "--no-pings", "--window-size=1280,2000"]
    if proxy is not None:  # every http(s) request the page makes goes to our counting proxy
        flags += [f"--proxy-server=http://127.0.0.1:{proxy}", "--proxy-bypass-list=<-loopback>"]
    r = subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120,
                       check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


class DOM(HTMLParser):
    """The rendered DOM: elements as (tag, attrs, index), each element's parent, and its text."""

    VOID = frozenset({"meta", "link", "br", "img", "input", "hr", "source", "wbr", "col", "area", "base", "embed"})

    def __init__(self, markup: str):
        super().__init__()
        self.elements: list[tuple[str, dict[str, str], int]] = []
        self.parent: list[int | None] = []
        self.text: dict[int, list[str]] = {}
        self.stack: list[int] = []
        self.feed(markup)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs), len(self.elements)))
        self.parent.append(self.stack[-1] if self.stack else None)
        if tag not in self.VOID:
            self.stack.append(len(self.elements) - 1)

    def handle_endtag(self, tag):
        while self.stack:
            if self.elements[self.stack.pop()][0] == tag:
                break

    def handle_data(self, data):
        for i in self.stack:
            self.text.setdefault(i, []).append(data)

    def find(self, tag=None, **attrs):
        return [(t, a, i) for t, a, i in self.elements
                if (tag is None or t == tag) and all(a.get(k.replace("_", "-")) == v for k, v in attrs.items())]

    def inside(self, element, tag=None):
        """The elements under ``element`` (any depth), optionally only those of one tag."""
        def under(i):
            while i is not None:
                i = self.parent[i]
                if i == element[2]:
                    return True
            return False
        return [e for e in self.elements if (tag is None or e[0] == tag) and under(e[2])]

    def text_of(self, element) -> str:
        return "".join(self.text.get(element[2], [])).strip()


# Chromium's own background services (network time, component updates, sign-in) which it calls on
# start whatever page it opens, despite the flags above; a report's fetch (a font or script CDN, an
# image host) goes anywhere but here
CHATTER = frozenset({
    "clients2.google.com", "clients1.google.com", "clientservices.googleapis.com", "update.googleapis.com",
    "redirector.gvt1.com", "edgedl.me.gvt1.com", "dl.google.com", "accounts.google.com", "android.clients.google.com",
    "safebrowsing.googleapis.com", "optimizationguide-pa.googleapis.com", "content-autofill.googleapis.com"})


class CountingProxy:
    """A loopback TCP listener standing in for the network: the browser's proxy, so it sees every
    http(s) connection the browser opens (the request line: ``GET http://host/...`` or ``CONNECT host:443``)."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    line = conn.recv(4096).split(b"\r\n", 1)[0].decode("latin-1")
                    if line:  # Chromium opens spare connections to its proxy and may close them unused
                        self.requests.append(line)
                    conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                except OSError:
                    pass

    def close(self):
        self.sock.close()

    def page_requests(self) -> list[str]:
        """The requests not made by Chromium's own services."""
        return [r for r in self.requests if _host(r) not in CHATTER]


def _host(request_line: str) -> str:
    target = request_line.split(" ")[1] if " " in request_line else ""
    return target.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """The HTML report of a quarantining run (with a stored profile and anomaly), rendered by Chromium."""
    tmp_path = tmp_path_factory.mktemp("browser")
    pipeline = make_pipeline(tmp_path, df=orders().iloc[200:])
    first = run(tmp_path, pipeline)
    make_pipeline(tmp_path)
    run_id = run(tmp_path, pipeline)
    store = RunStore(f"sqlite:///{tmp_path / '.agent-etl' / 'runs.db'}")
    try:
        store.save_profile(run_id, "report_orders", "orders", profile_of(orders()), [{
            "input": "orders", "metric": "row_count", "column": None, "quantile": None, "value": N, "expected": 200,
            "low": 190, "high": 210, "score": 12.0, "severity": "warn", "message": "row count doubled"}])
    finally:
        store.close()
    r = cli("report", run_id[:-1], "--out", "report.html", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    page = tmp_path / "report.html"
    proxy = CountingProxy()
    try:
        dom = chromium(tmp_path, "--dump-dom", page.as_uri(), proxy=proxy.port).stdout
    finally:
        proxy.close()
    return tmp_path, page, DOM(dom), proxy.page_requests(), (first, run_id)


def test_chromium_renders_the_numbers_and_charts(rendered):
    _, _, dom, _, (first, run_id) = rendered
    bad = pd.concat(expected(orders()), axis=1).any(axis=1)
    (section,) = dom.find("section", data_input="orders")
    inside = dom.inside(section)

    def metric(name, within=inside):
        return [dom.text_of(e) for e in within if e[1].get("data-metric") == name]

    assert metric("rows_in")[0] == f"{N:,}"
    assert metric("rows_quarantined")[0] == f"{bad.sum():,}"
    assert metric("rows_passed")[0] == f"{N - bad.sum():,}"
    checks = {e[1]["data-check"]: e for e in inside if "data-check" in e[1]}
    assert {k: metric("rows_failed", dom.inside(row)) for k, row in checks.items()} == {
        "not_null(name)": ["7"], "unique(id)": ["5"], "range(amount)": ["14"], "accepted_values(status)": ["9"]}
    (mean,) = metric("mean", dom.inside(dom.find("tr", data_column="amount")[0]))
    assert float(mean.replace(",", "")) == pytest.approx(orders().amount.mean(), rel=1e-3)

    svgs = {e[1]["class"]: e for e in inside if e[0] == "svg"}
    assert {"chart histogram", "chart sparkline", "chart top"} <= set(svgs)
    bars = dom.inside(svgs["chart histogram"], "rect")
    assert len(bars) == 8 and all(float(b[1]["height"]) >= 0 for b in bars)
    tallest = max(bars, key=lambda b: float(b[1]["height"]))
    assert dom.text_of(tallest).endswith(f": {max(np.histogram(orders().amount, 8)[0])}")
    points = dom.inside(svgs["chart sparkline"], "circle")
    assert [p[1]["class"] for p in points] == ["point", "point anomaly current"]
    assert first in dom.text_of(points[0]) and "row-count anomaly" in dom.text_of(points[1])
    assert run_id in dom.text_of(dom.find("code", data_metric="run_id")[0])


def test_hostile_values_stay_text_and_nothing_is_fetched(rendered):
    tmp_path, _, dom, requests, _ = rendered
    assert not dom.find("script") and not dom.find("img") and not dom.find("iframe")
    (body,) = dom.find("body")
    assert "data-pwned" not in body[1]  # the script in the data never ran
    cells = [dom.text_of(e) for e in dom.elements if e[0] == "td"]
    assert HOSTILE in cells  # shown as the text it is, in the failing rows
    for tag, attrs, _ in dom.elements:
        for name, value in attrs.items():
            if name in ("src", "href", "xlink:href", "action", "poster", "srcset", "style"):
                assert "://" not in (value or "") and "url(" not in (value or ""), (tag, name, value)
    assert requests == []  # the browser opened no connection to the (proxy standing in for the) network

    # the same proxy does see a page that fetches something, so the check above can fail
    control = tmp_path / "control.html"
    control.write_text('<!doctype html><img src="http://report-test.invalid/pixel.png">')
    proxy = CountingProxy()
    try:
        chromium(tmp_path, "--dump-dom", control.as_uri(), proxy=proxy.port)
    finally:
        proxy.close()
    assert [_host(r) for r in proxy.page_requests()] == ["report-test.invalid"]


def test_screenshot_is_a_full_page(rendered):
    tmp_path, page, *_ = rendered
    shot = tmp_path / "shot.png"
    chromium(tmp_path, f"--screenshot={shot}", page.as_uri())
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1280, 2000) and len(data) > 20_000  # a blank page compresses to a few KB
