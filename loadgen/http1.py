"""A lean HTTP/1.1 client for the REST driver: one keep-alive connection per in-flight request.

Why not Locust's FastHttpSession: per request it runs a user agent, a "safe mode" wrapper, a
response context manager, a request event and Locust's statistics, and every new connection
builds a cookie jar, a pool and a resolver round trip through a thread; on one core that
capped the driver below the service it was measuring. What the driver needs is narrow: POST a
prebuilt body to one known host, read the status, the length, ``X-Served-By`` and the body, and
tell "no complete answer" apart from "an answer". That is this module, on gevent sockets, so the
driver's greenlets and deadlines (a :class:`gevent.Timeout` around each attempt) work unchanged.

The host is resolved once; every connection connects to the numeric address (no resolver per
connection). A pooled connection that the server closed while idle is noticed before reuse (a
non-blocking peek), so a keep-alive timeout never shows up as a failed request.

:class:`Wire` counts every exchange where it happens, independently of the driver's rows: the
driver cross-checks its table against it at the end (as it did against Locust's statistics).
"""

from __future__ import annotations

import socket
import time
from array import array
from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlsplit

import gevent.socket as gsocket
from gevent import GreenletExit

from loadgen import workers

SERVED_BY = workers.REST_HEADER.lower().encode()
LOOPBACK = ("127.0.0.1", "localhost", "::1")
_MAX_HEAD = 64 * 1024
_RECV = 65536
#: A pooled connection idle longer than this is checked before reuse (servers close idle
#: keep-alive connections after seconds: nginx 65 s here, 75 s by default).
IDLE_CHECK_S = 1.0


def check_loopback(url: str, allow_remote: bool) -> None:
    host = urlsplit(url).hostname or ""
    if not allow_remote and host not in LOOPBACK:
        raise SystemExit(f"refusing to drive {url}: only loopback targets unless --allow-remote")


class ProtocolError(Exception):
    """The peer sent something that is not an HTTP/1.x response."""


class Closed(ConnectionError):
    """The peer closed the connection before a complete response."""


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    served_by: str | None     # X-Served-By (values of a repeated header joined by ",")
    keep_alive: bool          # the connection may carry another request


@dataclass(frozen=True)
class Target:
    """Where requests go and the bytes every request starts with."""

    host: str
    port: int
    addrs: tuple[tuple[int, tuple], ...]   # (family, sockaddr) of each address, in order
    path: str
    head: bytes               # request line and headers up to "Content-Length: "

    @classmethod
    def of(cls, url: str, path: str, headers: dict[str, str]) -> Target:
        u = urlsplit(url)
        if u.scheme != "http":
            raise ValueError(f"only http:// targets are supported, got {url!r}")
        host = u.hostname or "127.0.0.1"
        port = u.port or 80
        addrs = tuple(dict.fromkeys(   # "localhost" may list ::1 first and 127.0.0.1 next
            (fam, tuple(sa)) for fam, _, _, _, sa in
            socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)))
        host_hdr = host if u.port is None else f"{host}:{port}"
        if ":" in host and not host.startswith("["):
            host_hdr = f"[{host}]" if u.port is None else f"[{host}]:{port}"
        lines = [f"POST {path} HTTP/1.1", f"Host: {host_hdr}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")
        return cls(host, port, addrs, path, head)

    def request(self, body: bytes) -> bytes:
        return b"%s%d\r\n\r\n%s" % (self.head, len(body), body)


class Connection:
    """One TCP connection; :meth:`exchange` writes a request and reads its whole response."""

    __slots__ = ("sock", "rest", "used")

    def __init__(self, family: int, sockaddr: tuple):
        s = gsocket.socket(family, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.connect(sockaddr)
        except BaseException:
            s.close()
            raise
        self.sock = s
        self.rest = b""          # bytes received past the last response (none, normally)
        self.used = 0.0          # monotonic time its last exchange ended

    def alive(self) -> bool:
        """An idle keep-alive connection is usable: nothing to read and not closed by the peer."""
        if self.rest:
            return False
        try:
            self.sock._sock.recv(1, socket.MSG_PEEK)  # the raw, non-blocking socket
        except BlockingIOError:
            return True
        except OSError:
            return False
        return False    # b"" = closed by the peer; data = an answer nobody asked for

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def exchange(self, request: bytes) -> Response:
        sock = self.sock
        try:    # a request fits the socket buffer: one plain send, no gevent layers
            sent = sock._sock.send(request)
        except BlockingIOError:
            sent = 0
        if sent < len(request):
            sock.sendall(memoryview(request)[sent:])
        buf = self.rest
        while True:
            i = buf.find(b"\r\n\r\n")
            if i >= 0:
                status, length, chunked, keep, served = _parse_head(buf[:i])
                buf = buf[i + 4:]
                if 100 <= status < 200:      # an interim answer: the real one follows
                    continue
                break
            if len(buf) > _MAX_HEAD:
                raise ProtocolError("response header too long")
            data = sock.recv(_RECV)
            if not data:
                raise Closed("closed before a complete response header")
            buf += data
        if status in (204, 304):
            length, chunked = 0, False
        if chunked:
            body, buf = self._read_chunked(buf)
        elif length is not None:
            while len(buf) < length:
                data = sock.recv(_RECV)
                if not data:
                    raise Closed(f"closed after {len(buf)} of {length} body bytes")
                buf += data
            body, buf = buf[:length], buf[length:]
        else:                                 # no length: the body runs to the close
            parts = [buf]
            while True:
                data = sock.recv(_RECV)
                if not data:
                    break
                parts.append(data)
            body, buf, keep = b"".join(parts), b"", False
        self.rest = buf
        return Response(status, body, served, keep and not buf)

    def _read_chunked(self, buf: bytes) -> tuple[bytes, bytes]:
        out = []
        while True:
            while (i := buf.find(b"\r\n")) < 0:
                buf = self._more(buf)
            try:
                size = int(buf[:i].split(b";", 1)[0], 16)
            except ValueError:
                raise ProtocolError("bad chunk size") from None
            buf = buf[i + 2:]
            if size == 0:                     # trailers end with an empty line
                while (j := buf.find(b"\r\n")) != 0:
                    if j < 0:
                        buf = self._more(buf)
                    else:
                        buf = buf[j + 2:]
                return b"".join(out), buf[2:]
            while len(buf) < size + 2:
                buf = self._more(buf)
            out.append(buf[:size])
            buf = buf[size + 2:]

    def _more(self, buf: bytes) -> bytes:
        data = self.sock.recv(_RECV)
        if not data:
            raise Closed("closed inside a chunked body")
        return buf + data


def _parse_head(head: bytes) -> tuple[int, int | None, bool, bool, str | None]:
    """Status line and the few headers the driver needs: (status, content length, chunked,
    keep-alive, X-Served-By)."""
    lines = head.split(b"\r\n")
    first = lines[0].split(b" ", 2)
    if len(first) < 2 or not first[0].startswith(b"HTTP/1."):
        raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:60]!r}")
    try:
        status = int(first[1])
    except ValueError:
        raise ProtocolError(f"bad status {first[1][:20]!r}") from None
    keep = first[0] != b"HTTP/1.0"
    length: int | None = None
    chunked = False
    served: str | None = None
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise ProtocolError(f"bad header line {line[:60]!r}")
        name = name.strip().lower()
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                raise ProtocolError("bad Content-Length") from None
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            v = value.strip().lower()
            if v == b"close":
                keep = False
            elif v == b"keep-alive":
                keep = True
        elif name == SERVED_BY:
            v = value.strip().decode("latin-1")
            served = v if served is None else f"{served},{v}"
    return status, length, chunked, keep, served


class Wire:
    """Connections to one target and the independent count of every exchange on them.

    ``request`` takes an idle connection (or opens one), exchanges, and keeps the connection for
    the next request only after a complete answer that allows it; a connection that failed in
    any way (the caller's deadline included) is closed, never reused.
    """

    def __init__(self, target: Target):
        self.target = target
        self.addrs = list(target.addrs)
        self.free: list[Connection] = []
        self.created = 0
        self.discarded = 0
        self.stale = 0                        # idle connections the peer had closed
        self.answered: Counter = Counter()    # complete responses by status class ("2xx", ...)
        self.no_answer: Counter = Counter()   # exchanges that ended without one, by exception
        self.abandoned = 0                    # exchanges killed when the driver stopped
        self.times_s = array("d")             # exchange times (connection to answer)

    def _take(self, now: float) -> Connection:
        free = self.free
        while free:
            c = free.pop()
            if now - c.used < IDLE_CHECK_S or c.alive():
                return c
            self.stale += 1
            self._drop(c)
        self.created += 1
        return self._connect()

    def _connect(self) -> Connection:
        """To the address that worked last; the others in turn if it refuses."""
        addrs = self.addrs
        for i, addr in enumerate(addrs):
            try:
                c = Connection(*addr)
            except OSError:
                if i == len(addrs) - 1:
                    raise
                continue
            if i:
                addrs.insert(0, addrs.pop(i))
            return c
        raise OSError("no address to connect to")

    def _drop(self, c: Connection) -> None:
        self.discarded += 1
        c.close()

    def request(self, body: bytes) -> Response:
        t = time.monotonic()
        c = None
        try:
            c = self._take(t)
            r = c.exchange(self.target.request(body))
        except BaseException as e:
            if isinstance(e, GreenletExit):   # the driver stopped: the row stays in_flight
                self.abandoned += 1
            else:
                self.no_answer[type(e).__name__] += 1
                self.times_s.append(time.monotonic() - t)
            if c is not None:
                self._drop(c)
            raise
        c.used = now = time.monotonic()
        self.times_s.append(now - t)
        self.answered[f"{r.status // 100}xx"] += 1
        if r.keep_alive:
            self.free.append(c)
        else:
            self._drop(c)
        return r

    def close(self) -> None:
        while self.free:
            self._drop(self.free.pop())

    def counts(self) -> dict:
        return {"exchanges": sum(self.answered.values()) + sum(self.no_answer.values()),
                "answered": dict(sorted(self.answered.items())),
                "no_answer": sum(self.no_answer.values()), "abandoned": self.abandoned}
