"""Pagination: the request after a page, from the page's number, its body or its headers.

A read's place is a small JSON ``state`` (the next page's request): ``{"page": n}``,
``{"offset": n}``, ``{"cursor": token}`` or ``{"url": next_url}``, with ``"n"``, the pages read so
far. Positions hold it, so a resumed read asks for exactly the page after the last one committed.
Page and offset requests do not depend on a body, so they can be sent ahead (``prefetch``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import orjson

from agent_etl.tools.http.decode import Page, scalar
from agent_etl.tools.http.options import Pagination

_LINK = re.compile(r'<([^>]*)>\s*;\s*([^,]*)')
_VALUE = re.compile(rb'\s*:\s*("(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?|null)')


def raw_value(body: bytes, key: str) -> Any:
    """The string or number after the last ``"key":`` in a raw JSON body (a guess: the key may also
    be a field of the records), or None."""
    at = body.rfind(b'"' + key.encode() + b'"')
    if at < 0:
        return None
    m = _VALUE.match(body, at + len(key) + 2)
    if m is None:
        return None
    try:
        return orjson.loads(m.group(1))
    except orjson.JSONDecodeError:
        return None


@dataclass
class Request:
    url: str
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None  # a POST body (GraphQL)
    state: dict[str, Any] = field(default_factory=dict)  # what position() keeps of this request

    @property
    def number(self) -> int:
        return int(self.state.get("n", 0)) + 1


def next_link(header: str | None) -> str | None:
    """The ``rel="next"`` target of a ``Link`` header."""
    for target, rest in _LINK.findall(header or ""):
        if re.search(r'rel\s*=\s*"?([^";]*\s)?next(\s[^";]*)?"?', rest):
            return target
    return None


class Pager:
    def __init__(self, p: Pagination | None, url: str, params: dict[str, Any]):
        self.p, self.url, self.params = p, url, params

    def ahead(self) -> bool:
        """Whether the next request is known before the page's body (page numbers and offsets)."""
        return self.p is not None and self.p.type in ("page", "offset")

    def request(self, state: dict[str, Any] | None) -> Request:
        """The request of ``state`` (None: the first page)."""
        p, params = self.p, dict(self.params)
        state = dict(state or {"n": 0})
        if p is None:
            return Request(self.url, params, state=state)
        if p.type == "page":
            state.setdefault("page", p.start)
            params[p.request_param()] = state["page"]
            if p.page_size:
                params[p.size_param or "per_page"] = p.page_size
        elif p.type == "offset":
            state.setdefault("offset", 0)
            params[p.request_param()] = state["offset"]
            params[p.limit_param] = p.page_size or 100
        elif p.type == "cursor":
            if p.page_size:
                params[p.size_param or "limit"] = p.page_size
            if state.get("cursor") is not None:
                params[p.request_param()] = state["cursor"]
        elif state.get("url"):  # link, next_url: the server's URL carries the parameters
            return Request(state["url"], {}, state=state)
        return Request(self.url, params, state=state)

    def following(self, req: Request, rows: int, total_rows: int) -> dict[str, Any] | None:
        """For page and offset: the next state without looking at the body (None: stop)."""
        p = self.p
        assert p is not None
        n = req.number
        if rows == 0 or (p.max_pages is not None and n >= p.max_pages):
            return None
        if p.type == "page":
            return {"n": n, "page": req.state["page"] + 1}
        return {"n": n, "offset": req.state["offset"] + rows}

    def speculate(self, req: Request, resp: Any) -> dict[str, Any] | None:
        """A guess at the next state from the response before its body is parsed (None: no guess):
        the Link header, or the value of the path's last key found last in the raw body. ``after``
        has the word: a wrong guess costs one request."""
        p = self.p
        if p is None or p.type not in ("cursor", "link", "next_url") or (
                p.max_pages is not None and req.number >= p.max_pages):
            return None
        n = req.number
        if p.type == "link":
            target = next_link(resp.headers.get("Link"))
            return {"n": n, "url": urljoin(req.url, target)} if target else None
        value = raw_value(resp.body, (p.path or "").rsplit(".", 1)[-1])
        if value in (None, ""):
            return None
        return {"n": n, "cursor": value} if p.type == "cursor" else {"n": n, "url": urljoin(req.url, str(value))}

    def after(self, req: Request, page: Page, headers: Any, read_rows: int) -> dict[str, Any] | None:
        """The state of the page after ``page`` (None: it was the last). ``read_rows``: records read
        so far by this read, this page's included, for ``total_path``."""
        p = self.p
        if p is None:
            return None
        rows = page.records.num_rows
        n = req.number
        if rows == 0 or (p.max_pages is not None and n >= p.max_pages):
            return None
        if p.total_path is not None:
            total = scalar(page.table, p.total_path)
            if total is not None and read_rows >= int(total):
                return None
        if p.total_pages_path is not None:
            pages = scalar(page.table, p.total_pages_path)
            last = (req.state.get("page", n) - p.start + 1) if p.type == "page" else n
            if pages is not None and last >= int(pages):
                return None
        if p.type in ("page", "offset"):
            return self.following(req, rows, read_rows)
        if p.type == "cursor":
            token = scalar(page.table, p.path or "")
            return None if token in (None, "") else {"n": n, "cursor": token}
        target = next_link(headers.get("Link")) if p.type == "link" else scalar(page.table, p.path or "")
        if not target:
            return None
        return {"n": n, "url": urljoin(req.url, str(target))}
