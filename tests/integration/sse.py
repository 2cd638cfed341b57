"""A small Server-Sent Events client for tests: raw socket, so a test can also stall it."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass
class Message:
    id: int | None
    event: str
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


class SseClient:
    """``GET /events`` on ``(host, port)``; iterate :meth:`messages`. ``rcvbuf`` shrinks the
    socket's receive buffer (a client that stops reading then fills up quickly)."""

    def __init__(self, address: tuple[str, int], last_event_id: int | None = None,
                 rcvbuf: int | None = None, timeout: float = 30.0, path: str = "/events") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(address)
        extra = f"Last-Event-ID: {last_event_id}\r\n" if last_event_id is not None else ""
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n{extra}\r\n".encode())
        self._file = self.sock.makefile("rb")
        status = self._file.readline()
        assert b" 200 " in status, status
        while self._file.readline() not in (b"\r\n", b"\n", b""):
            pass

    def messages(self) -> Iterator[Message]:
        """Messages until the stream ends (an ``end`` message is yielded, then it stops)."""
        mid: int | None = None
        event = "message"
        data: list[str] = []
        for raw in self._file:
            line = raw.decode().rstrip("\n").rstrip("\r")
            if not line:
                if data:
                    msg = Message(mid, event, "\n".join(data))
                    yield msg
                    if event == "end":
                        return
                mid, event, data = None, "message", []
                continue
            if line.startswith(":"):
                continue
            key, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if key == "id":
                mid = int(value)
            elif key == "event":
                event = value
            elif key == "data":
                data.append(value)

    def close(self) -> None:
        self._file.close()
        self.sock.close()
