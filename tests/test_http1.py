"""The REST driver's HTTP/1.1 client on canned byte streams (no server): what it parses, when it
keeps a connection, and what it refuses."""

from __future__ import annotations

import pytest

from loadgen import http1


class _Raw:
    def __init__(self):
        self.sent = b""

    def send(self, data):
        self.sent += bytes(data)
        return len(data)


class _Sock:
    """Hands out the answer in the given pieces; b"" once they are used up (peer closed)."""

    def __init__(self, pieces):
        self._sock = _Raw()
        self.pieces = list(pieces)

    def recv(self, _n):
        return self.pieces.pop(0) if self.pieces else b""

    def sendall(self, data):
        self._sock.send(data)

    def close(self):
        self.closed = True


def _conn(*pieces) -> http1.Connection:
    c = http1.Connection.__new__(http1.Connection)
    c.sock, c.rest, c.used = _Sock(pieces), b"", 0.0
    return c


def test_request_bytes_carry_path_host_headers_and_length():
    t = http1.Target.of("http://127.0.0.1:8080", "/predict", {"Content-Type": "application/json"})
    assert t.addrs[0][1] == ("127.0.0.1", 8080)
    req = t.request(b'{"id":"a"}')
    assert req.startswith(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n")
    assert b"Content-Type: application/json\r\nContent-Length: 10\r\n\r\n{\"id\":\"a\"}" in req
    with pytest.raises(ValueError):
        http1.Target.of("https://127.0.0.1", "/", {})


def test_content_length_body_split_over_reads():
    c = _conn(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Len",
              b"gth: 11\r\nX-Served-By: h/1\r\n\r\n{\"a\":", b"[1,2]}")
    r = c.exchange(b"req")
    assert (r.status, r.body, r.served_by, r.keep_alive) == (200, b'{"a":[1,2]}', "h/1", True)
    assert c.sock._sock.sent == b"req"


def test_chunked_body_with_trailers():
    c = _conn(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n",
              b"3;ext=1\r\nefg\r\n0\r\nX-T: 1\r\n\r\n")
    r = c.exchange(b"req")
    assert r.body == b"abcdefg" and r.keep_alive and c.rest == b""


def test_connection_close_http10_and_no_length_end_the_connection():
    assert not _conn(b"HTTP/1.1 503 X\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
                     ).exchange(b"r").keep_alive
    assert not _conn(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok").exchange(b"r").keep_alive
    r = _conn(b"HTTP/1.1 200 OK\r\n\r\nto the", b" end").exchange(b"r")
    assert r.body == b"to the end" and not r.keep_alive


def test_interim_answer_repeated_header_and_bytes_past_the_answer():
    c = _conn(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-Served-By: a\r\n"
              b"x-served-by: b\r\nContent-Length: 2\r\n\r\nokEXTRA")
    r = c.exchange(b"r")
    assert r.status == 200 and r.body == b"ok" and r.served_by == "a,b"
    assert not r.keep_alive                       # unasked-for bytes: not reused


@pytest.mark.parametrize("answer, error", [
    ((b"SMTP ready\r\n\r\n",), http1.ProtocolError),
    ((b"HTTP/1.1 abc OK\r\n\r\n",), http1.ProtocolError),
    ((b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",), http1.ProtocolError),
    ((b"HTTP/1.1 200 OK\r\nbroken header\r\n\r\n",), http1.ProtocolError),
    ((b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",), http1.Closed),
    ((b"HTTP/1.1 200 OK\r\nContent-",), http1.Closed),
    ((), http1.Closed),
])
def test_what_is_not_a_complete_answer(answer, error):
    with pytest.raises(error):
        _conn(*answer).exchange(b"r")
    assert issubclass(http1.Closed, OSError)      # the driver files both as "refused"


def test_wire_counts_answers_and_failures_and_drops_broken_connections():
    w = http1.Wire(http1.Target.of("http://127.0.0.1:9", "/p", {}))
    ok = _conn(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    w._take = lambda now: ok
    w.request(b"x")
    assert w.free == [ok] and w.counts()["answered"] == {"2xx": 1}
    broken = _conn()
    w._take = lambda now: broken
    with pytest.raises(http1.Closed):
        w.request(b"x")
    assert w.counts() == {"exchanges": 2, "answered": {"2xx": 1}, "no_answer": 1,
                          "abandoned": 0}
    assert w.discarded == 1 and broken not in w.free and len(w.times_s) == 2


def test_a_refused_address_is_skipped_for_the_next_one(monkeypatch):
    w = http1.Wire(http1.Target.of("http://127.0.0.1:9", "/p", {}))
    w.addrs = [(10, ("::1", 9, 0, 0)), (2, ("127.0.0.1", 9))]
    tried = []

    def fake(family, sockaddr):
        tried.append(sockaddr[0])
        if family == 10:
            raise ConnectionRefusedError
        return "conn"
    monkeypatch.setattr(http1, "Connection", fake)
    assert w._take(0.0) == "conn" and tried == ["::1", "127.0.0.1"]
    assert w.addrs[0][1][0] == "127.0.0.1"                 # the one that worked goes first
    monkeypatch.setattr(http1, "Connection", lambda f, sa: (_ for _ in ()).throw(
        ConnectionRefusedError()))
    with pytest.raises(ConnectionRefusedError):
        w._take(0.0)
