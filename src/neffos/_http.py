"""The HTTP side of a neffos endpoint, independent of WebSocket libraries.

Wire protocol: docs/topics/protocol.md#http.

:class:`HttpFront` is the asyncio protocol that owns a freshly accepted TCP
connection: it reads the request head, answers everything that is not a
WebSocket upgrade itself (``HEAD`` -> 302, other methods -> 405, closed server ->
500, wrong path -> 404), applies the ``X-Websocket-Header-*`` rule, and then
hands the connection to the WebSocket library of the listener.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import ipaddress
import logging
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from http import HTTPStatus
from typing import Any, Protocol, TypeAlias, TypeVar

__all__ = [
    "Headers",
    "HttpAnswer",
    "HttpFront",
    "Request",
    "Router",
    "SlowRouter",
    "Upgrade",
    "apply_url_headers",
    "canonical_header_key",
    "canonical_upgrade_head",
    "forwarded_client",
    "handshake_problem",
    "has_forbidden_characters",
    "header_text",
    "serve_front",
    "trusted_networks",
]

log = logging.getLogger("neffos.server")

URL_HEADER_PREFIX = "X-Websocket-Header-"
RECONNECT_HEADER = "X-Websocket-Reconnect"
#: the largest request head (431 past it), and the longest line in it
MAX_HEAD_SIZE = 16 * 1024
MAX_LINE_SIZE = 8 * 1024


class Headers:
    """A case-insensitive multi-map of HTTP headers that keeps order and spelling.

    Headers read from the network are kept as the raw request-head lines and
    parsed on access: a connection holds a few hundred bytes instead of a few
    hundred objects (headers are read at handshake time, rarely afterwards).
    """

    __slots__ = ("_extra", "_raw")

    def __init__(
        self,
        items: Iterable[tuple[str, str]] | dict[str, str] | None = None,
        *,
        raw: str | None = None,
    ) -> None:
        self._raw = raw  # "Name: value\r\n..." lines, already validated
        if items is None:
            self._extra: list[tuple[str, str]] | None = None
        elif isinstance(items, dict):
            self._extra = list(items.items())
        else:
            self._extra = list(items)

    def _items(self) -> Iterator[tuple[str, str]]:
        if self._raw:
            for line in self._raw.split("\r\n"):
                name, _, value = line.partition(":")
                # Header values are bytes on the wire; keep non-ASCII as UTF-8 text.
                yield name, _header_text(value.strip())
        if self._extra:
            yield from self._extra

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``, or ``default``."""
        lower = name.lower()
        for key, value in self._items():
            if key.lower() == lower:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` in order."""
        lower = name.lower()
        return [value for key, value in self._items() if key.lower() == lower]

    def add(self, name: str, value: str) -> None:
        """Append a value (never replaces)."""
        if self._extra is None:
            self._extra = []
        self._extra.append((name, value))

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[str]:
        return (key for key, _ in self._items())

    def __len__(self) -> int:
        return sum(1 for _ in self._items())

    def items(self) -> list[tuple[str, str]]:
        """All (name, value) pairs in order."""
        return list(self._items())

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"


def header_text(raw: bytes) -> str:
    """A header name or value from the network as text (non-ASCII read as UTF-8)."""
    return raw.decode("ascii") if raw.isascii() else raw.decode("utf-8", "replace")


def _header_text(value: str) -> str:
    if value.isascii():
        return value
    return value.encode("latin-1").decode("utf-8", "replace")


class Request:
    """The HTTP request that opened a connection (``conn.request``)."""

    __slots__ = (
        "_query", "_state", "headers", "method", "native", "path", "query_string",
        "remote_address", "scope", "version",
    )

    def __init__(
        self,
        method: str,
        target: str,
        headers: Headers,
        remote_address: tuple[str, int] | None = None,
        version: str = "HTTP/1.1",
    ) -> None:
        self.method = method
        #: the HTTP version of the request line, e.g. ``"HTTP/1.1"``
        self.version = version
        path, _, query = target.partition("?")
        self.path = path
        self.query_string = query
        self.headers = headers
        self.remote_address = remote_address
        self._query: dict[str, list[str]] | None = None
        #: the ASGI scope, when an ASGI server carried the request
        self.scope: MutableMapping[str, Any] | None = None
        #: the HTTP framework's own object for the request, where there is one:
        #: the aiohttp ``web.Request``, the Starlette/FastAPI ``WebSocket`` (with
        #: ``ASGIApp.serve``) or the ASGI scope; ``None`` on neffos' listener
        self.native: Any = None
        self._state: dict[str, Any] | None = None

    @property
    def state(self) -> dict[str, Any]:
        """Free room for the application, e.g. claims that ``before_upgrade`` checked."""
        if self._state is None:
            self._state = {}
        return self._state

    @property
    def query(self) -> dict[str, list[str]]:
        """The decoded query parameters (name -> values)."""
        if self._query is None:
            self._query = urllib.parse.parse_qs(self.query_string, keep_blank_values=True)
        return self._query

    @property
    def target(self) -> str:
        return f"{self.path}?{self.query_string}" if self.query_string else self.path

    def __repr__(self) -> str:
        return f"Request({self.method} {self.target!r})"


# -- headers in the URL (docs/topics/protocol.md#url-headers) -----------------------

_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def canonical_header_key(key: str) -> str:
    """Go's ``CanonicalMIMEHeaderKey``: ``x-my-key`` -> ``X-My-Key``.

    Keys with a byte that is not an RFC 7230 token character are left unchanged.
    """
    if not key or any(c not in _TOKEN_CHARS for c in key):
        return key
    out = []
    upper = True
    for c in key:
        out.append(c.upper() if upper else c.lower())
        upper = c == "-"
    return "".join(out)


def _go_parse_query(query: str) -> list[tuple[str, str]]:
    # Go's url.ParseQuery: "&"-separated; a pair containing a raw ";" is dropped.
    pairs = []
    for part in query.split("&"):
        if not part or ";" in part:
            continue
        key, _, value = part.partition("=")
        try:
            pairs.append(
                (urllib.parse.unquote_plus(key, errors="strict"),
                 urllib.parse.unquote_plus(value, errors="strict"))
            )
        except UnicodeDecodeError:
            continue
    return pairs


#: characters that never appear in a header value taken from a URL, nor in a
#: connection ID: controls would let a peer forge lines in logs (CR, LF) or cut
#: C strings (NUL), and ";" would cut neffos frames
_FORBIDDEN_IN_VALUES = frozenset(chr(c) for c in range(32)) | {"\x7f", ";"}


def apply_url_headers(request: Request) -> None:
    """Add ``X-Websocket-Header-<name>=<value>`` query parameters as request headers.

    Raises:
        ValueError: a name or value has a control character or ``;`` in it (the
            request is refused with 400).
    """
    if "X-" not in request.query_string and "x-" not in request.query_string:
        return
    prefix_len = len(URL_HEADER_PREFIX)
    for raw_key, value in _go_parse_query(request.query_string):
        if len(raw_key) <= prefix_len:
            continue
        key = canonical_header_key(raw_key)
        if key.startswith(URL_HEADER_PREFIX):
            if not _FORBIDDEN_IN_VALUES.isdisjoint(key + value):
                raise ValueError(f"forbidden character in the URL header {key!r}")
            request.headers.add(canonical_header_key(key[prefix_len:]), value)


def has_forbidden_characters(text: str) -> bool:
    """Whether ``text`` (a header value, a connection ID) has a control character or ``;``."""
    return not _FORBIDDEN_IN_VALUES.isdisjoint(text)


def reconnect_tries(request: Request) -> int:
    """``X-Websocket-Reconnect`` as an int (missing or not a number: 0)."""
    value = request.headers.get(RECONNECT_HEADER)
    try:
        return max(int(value), 0) if value is not None else 0
    except ValueError:
        return 0


# -- the front protocol -------------------------------------------------------


#: an HTTP answer instead of an upgrade: status, headers, body
HttpAnswer: TypeAlias = tuple[int, list[tuple[str, str]], bytes]
#: hands a TCP connection whose request head was read over to a WebSocket library
Upgrade: TypeAlias = Callable[[asyncio.Transport, bytes, Request], None]


class Router(Protocol):
    """What :class:`HttpFront` needs from an endpoint."""
    @property
    def path(self) -> str | None:
        """The URL path of the endpoint (``None``: every path)."""
        ...

    @property
    def handshake_timeout(self) -> float:
        """Seconds a client has to send its request head (``0``: no limit)."""
        ...

    def route(self, request: Request) -> HttpAnswer | None:
        """The answer to a request that is not to be upgraded, or ``None`` to upgrade it."""
        ...


class SlowRouter(Protocol):
    """A :class:`Router` whose answers may take I/O to make (:class:`HttpFront` only)."""
    @property
    def path(self) -> str | None: ...

    @property
    def handshake_timeout(self) -> float:
        """Seconds to send the request head and to make an awaited answer."""
        ...

    def route(self, request: Request) -> HttpAnswer | Awaitable[HttpAnswer] | None:
        """As :meth:`Router.route`; an answer may come as an awaitable (a coroutine),
        awaited in a task of its own."""
        ...


def http_response(status: int, headers: list[tuple[str, str]], body: bytes) -> bytes:
    phrase = HTTPStatus(status).phrase
    lines = [f"HTTP/1.1 {status} {phrase}"]
    lines += [f"{k}: {v}" for k, v in headers]
    lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


_E = TypeVar("_E", bound=SlowRouter)


class HttpFront(asyncio.Protocol):
    """Reads one HTTP request head, answers it or hands the connection over."""

    __slots__ = ("_answering", "_buffer", "_endpoint", "_timer", "_transport", "_upgrade")

    def __init__(self, endpoint: SlowRouter, upgrade: Upgrade) -> None:
        self._endpoint = endpoint
        self._upgrade = upgrade
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._answering: asyncio.Future[HttpAnswer] | None = None  # an answer being made

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop transports are not asyncio.Transport subclasses: no isinstance check
        tcp: asyncio.Transport = transport  # type: ignore[assignment]
        self._transport = tcp
        timeout = self._endpoint.handshake_timeout
        if timeout:
            self._timer = asyncio.get_running_loop().call_later(timeout, self._expired)

    def _expired(self) -> None:
        self._timer = None
        self._reply(*plain_text(408, "Request Timeout"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self._transport = None
        if self._answering is not None:
            self._answering.cancel()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or self._answering is not None:
            return  # gone, or answered (what follows a request head is not read)
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0 or end > MAX_HEAD_SIZE:
            if len(self._buffer) > MAX_HEAD_SIZE:
                self._reply(*plain_text(431, "Request Header Fields Too Large"))
            return
        head = bytes(self._buffer)
        try:
            request = _parse_head(head[:end], transport)
        except ValueError as exc:
            status = 431 if "too long" in str(exc) else 400
            self._reply(*plain_text(status, f"{HTTPStatus(status).phrase}: {exc}"))
            return
        try:
            answer = self._endpoint.route(request)
        except Exception:
            log.exception("routing %r failed", request)
            answer = (500, [], b"Internal Server Error\n")
        if inspect.isawaitable(answer):
            self._answer_later(request, answer)
            return
        if answer is None:
            answer = handshake_problem(request)
        if answer is not None:
            self._reply(*answer)
            return
        self._cancel_timer()
        self._transport = None
        self._buffer = bytearray()
        try:
            self._upgrade(transport, head, request)
        except Exception:
            log.exception("WebSocket upgrade of %r failed", request)
            transport.abort()

    def _answer_later(self, request: Request, making: Awaitable[HttpAnswer]) -> None:
        task = self._answering = asyncio.ensure_future(making)

        def made(task: asyncio.Future[HttpAnswer]) -> None:
            self._answering = None
            if task.cancelled():
                return
            try:
                status, headers, body = task.result()
            except Exception as exc:  # it raised, or made no (status, headers, body)
                log.error("answering %r failed", request, exc_info=exc)
                self._reply(500, [], b"Internal Server Error\n")
            else:
                self._reply(status, headers, body)

        task.add_done_callback(made)

    def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        transport = self._transport
        self._transport = None
        self._cancel_timer()
        if transport is not None:
            transport.write(http_response(status, headers, body))
            transport.close()


async def serve_front(
    endpoint: _E,
    upgrade: Callable[[_E, asyncio.Transport, bytes, Request], None],
    host: str,
    port: int,
    **options: Any,
) -> asyncio.Server:
    """Listen on ``host:port``: each connection gets an :class:`HttpFront` for ``endpoint``,
    which hands upgrades to ``upgrade(endpoint, transport, head, request)``."""

    def front() -> HttpFront:
        return HttpFront(endpoint, lambda tcp, head, request: upgrade(endpoint, tcp, head, request))

    return await asyncio.get_running_loop().create_server(front, host, port, **options)


def _parse_head(head: bytes, transport: asyncio.BaseTransport) -> Request:
    """The request of a head (without its final empty line); strict, as RFC 9112 allows.

    Raises:
        ValueError: anything malformed: the request line, a header line or name,
            a control character (a lone CR or LF included), a line over
            ``MAX_LINE_SIZE`` (its text says so: 431), a missing or doubled Host.
    """
    text = head.decode("latin-1")  # decodes any byte
    lines = text.split("\r\n")
    if any(len(line) > MAX_LINE_SIZE for line in lines):
        raise ValueError("line too long")
    if any(not _CONTROL.isdisjoint(line) for line in lines):
        raise ValueError("control character in the request head")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/") or not parts[1]:
        raise ValueError("malformed request line")
    method, target, version = parts
    hosts = 0
    for line in lines[1:]:
        name, sep, _ = line.partition(":")
        if not sep or not name or not _TOKEN_CHARS.issuperset(name):
            raise ValueError("malformed header line")
        hosts += name.lower() == "host"
    if hosts != 1:
        raise ValueError("a request needs one Host header")
    headers = Headers(raw="\r\n".join(lines[1:]))
    peer = transport.get_extra_info("peername")
    remote = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) and len(peer) >= 2 else None
    return Request(method, target, headers, remote, version)


#: C0 controls (CR and LF too: inside a line they are lone ones) and DEL; tab is
#: allowed in header values (RFC 9110 §5.5)
_CONTROL = frozenset(chr(c) for c in range(32) if c != 9) | {"\x7f"}


def handshake_problem(request: Request) -> HttpAnswer | None:
    """What is wrong with a WebSocket opening handshake (RFC 6455 §4.2.1), if anything.

    The answer is a 4xx to send instead of upgrading: the same on every
    transport, and before the WebSocket library sees the request.
    """
    if request.version != "HTTP/1.1":
        return plain_text(400, "Bad Request: a WebSocket handshake needs HTTP/1.1")
    headers = request.headers
    if not _has_token(headers.get_all("Upgrade"), "websocket") or not _has_token(
        headers.get_all("Connection"), "upgrade"
    ):
        return plain_text(400, "Bad Request: not a WebSocket handshake")
    versions = headers.get_all("Sec-WebSocket-Version")
    if versions != ["13"]:
        return plain_text(
            426, "Upgrade Required: WebSocket version 13", [("Sec-WebSocket-Version", "13")]
        )
    keys = headers.get_all("Sec-WebSocket-Key")
    if len(keys) != 1 or not _is_key(keys[0]):
        return plain_text(400, "Bad Request: one valid Sec-WebSocket-Key is needed")
    length = headers.get_all("Content-Length")
    if headers.get("Transfer-Encoding") is not None or (length and length != ["0"]):
        return plain_text(400, "Bad Request: a WebSocket handshake has no body")
    return None


def canonical_upgrade_head(head: bytes) -> bytes:
    """``head`` with ``Connection: Upgrade`` and ``Upgrade: websocket`` spelled plainly.

    For a library that wants them exactly so (picows refuses Firefox's
    ``Connection: keep-alive, Upgrade``), after :func:`handshake_problem` found
    the tokens. The bytes after the head (early frames) are kept.
    """
    end = head.find(b"\r\n\r\n")
    lines = head[:end].split(b"\r\n")
    for i, line in enumerate(lines):
        name = line.partition(b":")[0].lower()
        if name == b"connection":
            lines[i] = b"Connection: Upgrade"
        elif name == b"upgrade":
            lines[i] = b"Upgrade: websocket"
    return b"\r\n".join(lines) + head[end:]


def _has_token(values: list[str], token: str) -> bool:
    return any(part.strip().lower() == token for value in values for part in value.split(","))


def _is_key(key: str) -> bool:
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except ValueError:
        return False


def plain_text(status: int, text: str, extra: list[tuple[str, str]] | None = None) -> HttpAnswer:
    """A Go-like ``http.Error`` answer."""
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("X-Content-Type-Options", "nosniff"),
        *(extra or []),
    ]
    return status, headers, (text + "\n").encode()



# -- behind a reverse proxy ------------------------------------------------------------

Network: TypeAlias = "ipaddress.IPv4Network | ipaddress.IPv6Network"


def trusted_networks(entries: str | Iterable[str]) -> tuple[Network, ...]:
    """The networks of a ``trusted_proxies`` option (an address is a /32 or /128).

    Raises:
        ValueError: an entry is not an address or network (or has host bits set,
            e.g. ``10.0.0.1/8``).
    """
    if isinstance(entries, str):
        entries = [entries]
    return tuple(ipaddress.ip_network(entry) for entry in entries)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack socket's view of an IPv4 peer
    return address


def _forwarded_entry(text: str) -> tuple[str, int] | None:
    """``1.2.3.4``, ``1.2.3.4:5678``, ``::1``, ``[::1]`` or ``[::1]:5678`` as (host, port)."""
    text = text.strip()
    port = 0
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return None
        text, rest = host, rest[1:]
        if rest:
            if not rest.isdigit() or int(rest) > 65535:
                return None
            port = int(rest)
    elif text.count(":") == 1:
        text, _, rest = text.partition(":")
        if not rest.isdigit() or int(rest) > 65535:
            return None
        port = int(rest)
    address = _address(text)
    return None if address is None else (str(address), port)


def _is_trusted(host: str, networks: tuple[Network, ...]) -> bool:
    address = _address(host)
    return address is not None and any(address in network for network in networks)


def forwarded_client(request: Request, networks: tuple[Network, ...]) -> tuple[str, int] | None:
    """The client's (host, port) behind a trusted proxy, or ``None`` to keep the peer's.

    Only when the TCP peer (``request.remote_address``) is in ``networks``:
    the right-most ``X-Forwarded-For`` address that is not itself a trusted
    proxy (the left-most when all are: every one was written by a trusted hop),
    else ``X-Real-IP``. Each proxy appends the address it was connected from,
    so entries left of the first untrusted one may be made up by the client and
    are never read. The port is 0 unless the entry carries one.
    """
    peer = request.remote_address
    if peer is None or not _is_trusted(peer[0], networks):
        return None
    headers = request.headers
    chain = [part for value in headers.get_all("X-Forwarded-For") for part in value.split(",")]
    found: tuple[str, int] | None = None
    for part in reversed(chain):
        entry = _forwarded_entry(part)
        if entry is None:  # a hop we trust wrote something unreadable: no answer here
            found = None
            break
        found = entry
        if not _is_trusted(entry[0], networks):
            break
    if found is not None:
        return found
    real = headers.get_all("X-Real-IP")
    if len(real) == 1:
        address = _address(real[0].strip())
        if address is not None:
            return (str(address), 0)
    return None
