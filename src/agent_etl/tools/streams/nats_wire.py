"""A minimal core-NATS connection that pulls JetStream messages fast: one subscription, messages parsed in
bulk from the socket buffer (no Msg object, queue hop or coroutine per message, which cap nats-py's
subscription at about 60k messages/s on these machines). Used by the nats source for plain ``nats://``
URLs (with ``user:password@`` or ``token@`` in them, if any); for ``tls://`` and other set-ups the source
uses nats-py's subscription instead. The protocol: https://docs.nats.io/reference/reference-protocols/nats-protocol
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any
from urllib.parse import unquote, urlsplit

_CRLF = b"\r\n"
# a JetStream message in the usual ack-subject form: reply $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>...
_MSG = re.compile(rb"MSG \S+ \d+ (\$JS\.ACK\.[^.\s]+\.[^.\s]+\.\d+\.(\d+)\.\S*) (\d+)\r\n")
_HMSG = re.compile(rb"HMSG \S+ \d+ (\$JS\.ACK\.[^.\s]+\.[^.\s]+\.\d+\.(\d+)\.\S*) (\d+) (\d+)\r\n")


def supported(url: str) -> bool:
    first = url.split(",")[0].strip()
    return "://" not in first or first.startswith("nats://")


class Wire:
    def __init__(self) -> None:
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.buf = b""
        self.pos = 0

    async def open(self, url: str, inbox: str, timeout: float = 5.0) -> None:
        first = url.split(",")[0].strip()
        parts = urlsplit(first if "://" in first else f"nats://{first}")
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(parts.hostname or "127.0.0.1", parts.port or 4222, limit=1 << 22), timeout)
        info = await asyncio.wait_for(self.reader.readuntil(_CRLF), timeout)  # INFO {...}
        if not info.startswith(b"INFO"):
            raise OSError(f"not a NATS server (it said {info[:40]!r})")
        connect: dict[str, Any] = {"verbose": False, "pedantic": False, "headers": True, "no_responders": True,
                                   "lang": "python-agent-etl", "version": "1", "protocol": 1}
        if parts.username and parts.password is not None:
            connect |= {"user": unquote(parts.username), "pass": unquote(parts.password)}
        elif parts.username:
            connect["auth_token"] = unquote(parts.username)
        self.writer.write(b"CONNECT " + json.dumps(connect).encode() + _CRLF + f"SUB {inbox} 1\r\n".encode()
                          + b"PING\r\n")
        await self.writer.drain()
        while True:  # until the PONG that answers our PING: the CONNECT and SUB were accepted
            line = await asyncio.wait_for(self.reader.readuntil(_CRLF), timeout)
            if line.startswith(b"-ERR"):
                raise OSError(f"NATS refused the connection: {line[5:].strip().decode(errors='replace')}")
            if line.startswith(b"PONG"):
                break

    def publish(self, subject: str, payload: bytes, reply: str) -> None:
        self.writer.write(f"PUB {subject} {reply} {len(payload)}\r\n".encode() + payload + _CRLF)

    async def receive(self, timeout: float) -> bool:
        """Read what the socket has (waiting at most ``timeout`` for something); False if nothing came."""
        try:
            data = await asyncio.wait_for(self.reader.read(1 << 22), timeout)
        except TimeoutError:
            return False
        if not data:
            raise ConnectionError("the NATS server closed the connection")
        self.buf = self.buf[self.pos:] + data if self.pos < len(self.buf) else data
        self.pos = 0
        return True

    def messages(self, out: list[tuple[bytes | None, bytes, bytes | None, int]]) -> None:
        """Append every whole message in the buffer to ``out`` as (reply, payload, headers, stream sequence;
        0 where the reply is not a JetStream ack subject of the usual form)."""
        buf, pos = self.buf, self.pos
        n = len(buf)
        msg, hmsg = _MSG.match, _HMSG.match
        append = out.append
        while pos < n:
            m = msg(buf, pos)
            if m is not None:  # the common case: MSG subject sid $JS.ACK.<stream>.<consumer>.<n>.<sseq>... size
                start = m.end()
                stop = start + int(m[3])
                if stop + 2 > n:
                    break
                append((m[1], buf[start:stop], None, int(m[2])))
                pos = stop + 2
                continue
            m = hmsg(buf, pos)
            if m is not None:  # the same with headers (a message published with Nats-Msg-Id)
                start = m.end()
                stop = start + int(m[4])
                if stop + 2 > n:
                    break
                append((m[1], buf[start + int(m[3]):stop], None, int(m[2])))
                pos = stop + 2
                continue
            end = buf.find(_CRLF, pos)
            if end < 0:
                break
            head = buf[pos:end]
            kind = head[:1]
            if kind == b"M" or kind == b"H":  # another form: status messages, a reply in the domain form
                fields = head.split()  # whitespace: a status HMSG has two spaces where the reply would be
                size = int(fields[-1])
                start = end + 2
                if start + size + 2 > n:
                    break  # the rest of this message is still on its way
                if kind == b"M":  # MSG subject sid [reply] size
                    reply = fields[3] if len(fields) == 5 else None
                    append((reply, buf[start:start + size], None, 0))
                else:  # HMSG subject sid [reply] header-size total-size
                    hsize = int(fields[-2])
                    reply = fields[3] if len(fields) == 6 else None
                    append((reply, buf[start + hsize:start + size], buf[start:start + hsize], 0))
                pos = start + size + 2
            else:
                if head.startswith(b"PING"):
                    self.writer.write(b"PONG\r\n")
                elif head.startswith(b"-ERR"):
                    self.pos = end + 2
                    raise OSError(f"NATS: {head[5:].decode(errors='replace')}")
                pos = end + 2  # +OK, PONG, INFO
        self.pos = pos

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except Exception:  # noqa: BLE001 - closing
                pass
