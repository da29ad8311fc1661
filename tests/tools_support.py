"""A loopback HTTP tool server for the tool-run tests (the `tool_server` fixture in conftest)."""

from __future__ import annotations

import asyncio
import json
import threading

from tests.livesrv import ThreadedServer
from tests.upstream import read_body, request_headers


class ToolServer:
    """A loopback HTTP tool: answers {"ok": true, "got": <body>}; /fail answers 500; /pair
    answers only once two calls are in flight at the same time (or says it waited alone);
    /nul answers JSON with a NUL escaped in it, /nul-raw a raw NUL byte; /split sends its
    answer in two parts, the second a moment after the first (as a slow server's or a large
    answer's packets arrive); /long answers 20,000 characters, /huge 100,000; /idna answers
    bytes its declared charset (idna) cannot decode; /hold answers once the test sets `release`
    (a tool call in flight for as long as the test needs); /echo answers the request's headers
    and body, /echo-fail a 401 quoting the X-Tool-Secret's credential."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self._lock = threading.Lock()
        self._pair: asyncio.Event | None = None
        self._inflight = 0
        self.release = threading.Event()

        async def app(scope, receive, send):
            if scope["type"] != "http":
                return
            raw = await read_body(receive)
            headers = request_headers(scope)
            body = json.loads(raw) if raw else None
            query = scope.get("query_string", b"").decode()
            with self._lock:
                self.calls.append(
                    {"path": scope["path"], "headers": headers, "body": body, "query": query}
                )
            status, payload = 200, {"ok": True, "got": body}
            extra: list = []
            content_type = b"application/json"
            if scope["path"] == "/redirect":
                status, extra = 302, [(b"location", b"http://169.254.169.254/latest")]
            elif scope["path"] == "/slow":
                await asyncio.sleep(1.5)
            elif scope["path"] == "/hold":
                await asyncio.to_thread(self.release.wait, 20)
            elif scope["path"] == "/fail":
                status, payload = 500, {"error": "boom"}
            elif scope["path"] in ("/echo", "/echo-fail"):
                # What an echo service (httpbin's /anything) or an error page quoting the
                # credential it refused answers.
                payload = {"headers": headers, "json": body}
                if scope["path"] == "/echo-fail":
                    token = headers.get("x-tool-secret", "").rsplit(" ", 1)[-1]
                    status, payload = 401, {"error": f"token {token} is not valid"}
            elif scope["path"] == "/pair":
                payload["together"] = await self._together()
            data = json.dumps(payload).encode()
            if scope["path"] == "/nul":
                data = b'{"v": "a\\u0000b"}'
            elif scope["path"] == "/nul-raw":
                data = b'{"v": "a\x00b"}'
            elif scope["path"] in ("/long", "/huge"):
                data = b"x" * (20_000 if scope["path"] == "/long" else 100_000)
            elif scope["path"] == "/idna":
                content_type, data = b"text/plain; charset=idna", b"caf\xc3\xa9 \xff"
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(b"content-type", content_type), *extra],
                }
            )
            if scope["path"] == "/split":
                head, tail = data[:10], data[10:]
                await send({"type": "http.response.body", "body": head, "more_body": True})
                await asyncio.sleep(0.3)  # the first part is read alone
                data = tail
            await send({"type": "http.response.body", "body": data})

        self.server = ThreadedServer(app)
        self.url = self.server.url

    async def _together(self) -> bool:
        if self._pair is None:
            self._pair = asyncio.Event()
        self._inflight += 1
        if self._inflight >= 2:
            self._pair.set()
        try:
            await asyncio.wait_for(self._pair.wait(), 10)
            return True
        except TimeoutError:
            return False
