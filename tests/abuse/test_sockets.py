"""Sockets against a real `trimtab serve` (issue 11, items 6 and 9): timeouts, a per-client
cap on open sockets, body and frame sizes enforced while reading, bounded shutdown.

Raw sockets speak to the server as an attacker would: connect and say nothing, send half a
request, send a chunked body without end, declare a 16 MiB WebSocket frame.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from abuse_harness import DEMO, KEY, Server, clean_env
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

LIMITS = {
    "http_request_timeout_s": 1.5,
    "ws_handshake_timeout_s": 1.0,
    "ws_idle_timeout_s": 1.5,
    "ws_max_message_bytes": 64 * 1024,
    "max_connections_per_client": 20,
    "shutdown_timeout_s": 2,
}


def serve(tmp_path: Path, **limits: Any) -> Server:
    data = yaml.safe_load(DEMO.read_text())
    data["site"].update(consent="implied", rate_limit_per_s=1.0e6, rate_burst=1_000_000)
    data["limits"] = {**LIMITS, **limits}
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = tmp_path / "site.yaml"
    config.write_text(yaml.safe_dump(data))
    return Server(config, tmp_path / "data", env=clean_env()).start()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = serve(tmp_path)
    try:
        yield s
    finally:
        s.kill()


def open_fds(server: Server) -> int:
    assert server.process is not None
    return len(os.listdir(f"/proc/{server.process.pid}/fd"))


def read_until_closed(sock: socket.socket, timeout: float = 20.0) -> bytes:
    """Everything the server sends until it closes the socket (or ``timeout`` passes)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def raw(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def test_silent_and_half_sent_requests_are_answered_408_and_closed(server):
    silent = raw(server)
    half_head = raw(server)
    half_head.sendall(b"POST /v1/events?key=" + KEY.encode() + b" HTTP/1.1\r\nHost: x\r\n")
    half_body = raw(server)
    half_body.sendall(
        b"POST /v1/events?key=" + KEY.encode() + b" HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n[{"
    )
    for sock in (silent, half_head, half_body):
        answer = read_until_closed(sock)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"1.5 s" in answer  # the reason names the deadline
    # the server still answers everyone else
    assert server.request("GET", "/health")[0] == 200


def test_one_address_cannot_exhaust_file_descriptors(tmp_path):
    # a long request deadline, so only the cap can bound what the sockets hold
    server = serve(tmp_path, http_request_timeout_s=60, max_connections_per_client=20)
    try:
        baseline = open_fds(server)
        held = []
        for _ in range(300):
            held.append(raw(server))
        refused = 0
        # the sockets beyond the cap are answered 503 and closed by the server
        for sock in held[40:]:
            answer = read_until_closed(sock, timeout=10)
            refused += answer.startswith(b"HTTP/1.1 503") and b"too many open" in answer
        assert refused == 260
        # the server holds at most the cap (plus what it had) whatever the client opens
        assert open_fds(server) <= baseline + 20 + 2
        for sock in held:
            sock.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and open_fds(server) > baseline + 2:
            time.sleep(0.1)
        status, body, _ = server.request("GET", "/health")  # room again once they closed
        assert status == 200, body
    finally:
        server.kill()


def _upgrade(server: Server) -> tuple[socket.socket, bytes]:
    """A raw WebSocket opening handshake; the socket and the head of the answer ("" when the
    server reset the connection)."""
    sock = raw(server)
    key = base64.b64encode(os.urandom(16)).decode()
    head = b""
    try:
        sock.sendall(
            (
                f"GET /v1/live?key={KEY} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    except OSError:  # reset: the request came after the server closed
        pass
    return sock, head


def test_websockets_count_towards_the_cap(tmp_path):
    server = serve(tmp_path, max_connections_per_client=5, ws_handshake_timeout_s=30)
    try:
        attempts = [_upgrade(server) for _ in range(8)]
        opened = [sock for sock, head in attempts if head.startswith(b"HTTP/1.1 101")]
        refused = [head for _, head in attempts if not head.startswith(b"HTTP/1.1 101")]
        assert len(opened) == 5 and len(refused) == 3
        assert all(head == b"" or head.startswith(b"HTTP/1.1 503") for head in refused)
        for sock, _ in attempts:
            sock.close()
        deadline = time.monotonic() + 20  # closed sockets give their place back
        while time.monotonic() < deadline:
            sock, head = _upgrade(server)
            sock.close()
            if head.startswith(b"HTTP/1.1 101"):
                break
            time.sleep(0.2)
        else:
            pytest.fail("no socket admitted after the others closed")
    finally:
        server.kill()


def hello(user: str = "u1") -> str:
    return json.dumps({"type": "hello", "user_id": user, "session_id": "s", "slots": ["rail"]})


def test_a_websocket_that_never_says_hello_is_closed_and_told_why(server):
    with connect(f"ws://127.0.0.1:{server.port}/v1/live?key={KEY}") as ws:
        message = json.loads(ws.recv(timeout=20))
        assert message == {"type": "error", "reason": "no hello within 1 s"}
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=20)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4408


def test_an_idle_websocket_is_closed_after_the_idle_timeout(server):
    with connect(f"ws://127.0.0.1:{server.port}/v1/live?key={KEY}") as ws:
        ws.send(hello())
        assert json.loads(ws.recv(timeout=20))["type"] == "decisions"
        assert json.loads(ws.recv(timeout=20))["type"] == "ack"
        message = json.loads(ws.recv(timeout=20))
        assert message == {"type": "error", "reason": "idle for 1.5 s"}
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=20)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001


def _ws_handshake(server: Server) -> socket.socket:
    sock, head = _upgrade(server)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def test_a_websocket_frame_too_large_is_refused_from_its_header(server):
    sock = _ws_handshake(server)
    # a text frame declaring 16 MiB (masked, as a client must), then only 1 KiB of it
    size = 16 * 1024 * 1024
    sock.sendall(bytes([0x81, 0x80 | 127]) + struct.pack("!Q", size) + os.urandom(4))
    sock.sendall(b"x" * 1024)
    answer = read_until_closed(sock)
    sock.close()
    # the server's close frame: opcode 8, then the code 1009 (message too big)
    at = answer.find(b"\x88")
    assert at != -1, answer
    length = answer[at + 1] & 0x7F
    assert length >= 2 and struct.unpack("!H", answer[at + 2 : at + 4])[0] == 1009


def _rss_kib(server: Server) -> int:
    assert server.process is not None
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_chunked_300_mib_body_gets_413_without_being_buffered(server):
    rss_before = _rss_kib(server)
    sock = raw(server)
    sock.sendall(
        b"POST /v1/events?key=" + KEY.encode() + b" HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"[" + b" " * (1024 * 1024 - 1)
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent = 0
    sock.settimeout(10)
    try:
        while sent < 300 * 1024 * 1024:
            sock.sendall(framed)
            sent += len(chunk)
    except OSError:  # the server answered and closed: the rest is never read
        pass
    answer = read_until_closed(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"site.max_body_bytes" in answer
    assert sent < 64 * 1024 * 1024, f"{sent / 2**20:.0f} MiB were read before the 413"
    assert _rss_kib(server) - rss_before < 64 * 1024  # nothing close to the body was kept


def test_shutdown_is_bounded_while_sockets_hang(server):
    held = raw(server)
    held.sendall(b"POST /v1/events?key=" + KEY.encode() + b" HTTP/1.1\r\nHost: x\r\n")
    with connect(f"ws://127.0.0.1:{server.port}/v1/live?key={KEY}") as ws:
        ws.send(hello())
        ws.recv(timeout=20)
        assert server.process is not None
        server.process.terminate()
        # shutdown_timeout_s is 2: the server exits rather than waiting on its clients
        assert server.process.wait(timeout=60) is not None
    held.close()
