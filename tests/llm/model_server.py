"""A real OpenAI-compatible server on 127.0.0.1 for the HTTP backend's tests, scripted per request."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class ModelServer:
    """``script`` says what each request gets, in order; after it runs out, an echo of the last message.

    A step is an HTTP status (int), ``("status", code, headers)``, ``"slow"`` (answers after 1 s),
    ``"garbage"`` (a 200 whose body is not JSON), or a string: the message content of a 200 answer. With
    ``model`` set, requests beyond the script get ``model(messages)`` as the content instead of the echo.
    """

    def __init__(self, model: Callable[[list[dict[str, str]]], str] | None = None) -> None:
        self.script: list[Any] = []
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, **body})
                outer.headers.append(dict(self.headers))
                step = outer.script.pop(0) if outer.script else None
                if step == "slow":
                    time.sleep(1.0)
                    step = None
                if isinstance(step, int):
                    step = ("status", step, {})
                if isinstance(step, tuple):
                    _, code, headers = step
                    self.send_response(code)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(b'{"error": {"message": "scripted failure"}}')
                    return
                if step == "garbage":
                    self._send(b"<html>this is not JSON</html>")
                    return
                if isinstance(step, str):
                    content = step
                elif outer.model is not None:
                    content = outer.model(body["messages"])
                else:
                    content = f"echo {body['messages'][-1]['content']}"
                answer = {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "model": body["model"] + "-served",
                    "system_fingerprint": "fp_test",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": content},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49},
                }
                self._send(json.dumps(answer).encode())

            def _send(self, data: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


class DroppingServer:
    """A server on 127.0.0.1 that accepts each connection and closes it at once (a model server gone bad)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.dropped = 0
        self._closed = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            # Reset, not a polite close: the client sees the connection dropped mid-request.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
            self.dropped += 1

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):  # already shut: nothing to wake
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.sock.close()
        self.thread.join(5)
