"""Exceptions and the known-error registry.

Every error raised by neffos derives from :class:`NeffosError`::

    NeffosError
    ├── BadNamespace            "bad namespace"   (known, travels on the wire)
    ├── BadRoom                 "bad room"        (known)
    ├── WriteClosed             "write closed"    (known)
    │   └── ConnectionClosed    the connection closed while waiting
    ├── InvalidPayload          "invalid payload" (known)
    ├── RemoteError             any other error text received from the peer
    ├── AskTimeout              also a TimeoutError
    ├── TooManyPendingAsks      the per-connection limit was reached
    ├── LimitExceeded           "limit exceeded: ..." (known): a join past max_rooms…
    ├── CloseError              "[code] message", as Go renders it
    └── DialError               the WebSocket could not be opened
        └── HandshakeRefused    the server answered ``H<text>`` (on_connect refused)

:class:`Reply` is not an error: a handler returns or raises it to answer an
``ask`` with a body (docs/topics/protocol.md#answers).

Known errors (docs/topics/protocol.md#error-texts): an error text received from the peer is mapped
back to a registered exception, so ``except MyError`` works across the wire.
The registry is process-wide on purpose (it mirrors Go's ``RegisterKnownError``);
it is the only module-level mutable state of the package.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

__all__ = [
    "AskTimeout",
    "BadNamespace",
    "BadRoom",
    "CloseError",
    "ConnectionClosed",
    "DialError",
    "HandshakeRefused",
    "InvalidPayload",
    "LimitExceeded",
    "NeffosError",
    "RemoteError",
    "Reply",
    "TooManyPendingAsks",
    "WriteClosed",
    "register_known_error",
    "resolve_error",
]


class NeffosError(Exception):
    """Root of every exception raised by neffos."""


class _FixedTextError(NeffosError):
    text = ""

    def __init__(self, text: str | None = None) -> None:
        super().__init__(self.text if text is None else text)


class BadNamespace(_FixedTextError):
    """The namespace is not declared locally or not connected (``bad namespace``)."""

    text = "bad namespace"


class BadRoom(_FixedTextError):
    """The room is not joined (``bad room``)."""

    text = "bad room"


class WriteClosed(_FixedTextError):
    """A write was refused: the connection is closed or the target is not connected."""

    text = "write closed"


class ConnectionClosed(WriteClosed):
    """The connection closed while an operation was waiting for the peer."""

    text = "connection closed"


class InvalidPayload(_FixedTextError):
    """A frame could not be decoded (``invalid payload``)."""

    text = "invalid payload"


class RemoteError(NeffosError):
    """An error text received from the peer that matches no known error.

    ``str(exc)`` and :attr:`text` are the text exactly as received.
    """

    @property
    def text(self) -> str:
        return str(self.args[0]) if self.args else ""


class AskTimeout(NeffosError, TimeoutError):
    """No answer arrived before the ``timeout=`` of an ``ask``."""


class TooManyPendingAsks(NeffosError):
    """The connection already has ``max_pending_asks`` unanswered asks."""


class LimitExceeded(NeffosError):
    """A request went past a limit of the side that refused it (``max_rooms``,
    ``max_room_name_length``). Travels on the wire as ``limit exceeded: <what>``."""

    PREFIX = "limit exceeded: "

    def __init__(self, text: str) -> None:
        super().__init__(text if text.startswith(self.PREFIX) else self.PREFIX + text)

    @classmethod
    def resolve_error(cls, text: str) -> bool:
        return text.startswith(cls.PREFIX)


class CloseError(NeffosError):
    """A close error with a code, rendered ``[code] message`` like Go's ``CloseError``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"[{code}] {message}")
        self.code = code
        self.message = message


class DialError(NeffosError):
    """The client could not open the connection (network, HTTP or WebSocket failure)."""


class HandshakeRefused(DialError):
    """The server refused the connection with ``H<text>`` (its ``on_connect`` failed).

    ``str(exc)`` is the server's text.
    """


class Reply(Exception):
    """Answer an ``ask`` with ``body``: return or raise it from an event handler.

    Returning ``bytes``/``str`` from a handler is a shortcut for ``Reply(body)``.
    """

    def __init__(self, body: bytes | str = b"") -> None:
        super().__init__()
        self.body = body.encode() if isinstance(body, str) else bytes(body)

    def __repr__(self) -> str:
        return f"Reply({self.body!r})"


# -- known-error registry -----------------------------------------------------

_known: list[BaseException | type[BaseException]] = [
    BadNamespace(), BadRoom(), WriteClosed(), InvalidPayload(), LimitExceeded
]


def register_known_error(error: BaseException | type[BaseException]) -> None:
    """Map an error text received from a peer back to ``error``.

    ``error`` may be

    * an exception instance: a received text equal to ``str(error)`` raises a copy
      of it; if the instance has a ``resolve_error(text) -> bool`` method, that
      method decides instead and a new ``type(error)(text)`` is raised;
    * an exception class with a ``resolve_error(text) -> bool`` class or static
      method: when it returns true, ``cls(text)`` is raised (dynamic errors such
      as ``"user 42 not found"``).

    Registering the same object twice has no effect. Entries are tried in
    registration order after the built-ins (the four texts of Go and
    :class:`LimitExceeded`).

    Raises:
        TypeError: ``error`` is neither an exception nor an exception class with
            a ``resolve_error`` hook.
    """
    if isinstance(error, type):
        hook = getattr(error, "resolve_error", None)
        if not (issubclass(error, BaseException) and callable(hook)):
            raise TypeError("an exception class needs a resolve_error(text) -> bool hook")
    elif not isinstance(error, BaseException):
        raise TypeError(f"expected an exception, got {type(error).__name__}")
    if not any(e is error for e in _known):
        _known.append(error)


def is_known_error(err: BaseException) -> bool:
    """Whether ``err`` is (an instance of the type of) a registered known error."""
    return any(
        isinstance(err, k if isinstance(k, type) else type(k)) for k in _known
    )


def _instantiate(template: Any, text: str) -> BaseException:
    cls = template if isinstance(template, type) else type(template)
    try:
        made = cls(text)
    except Exception:  # the class does not take one text argument
        made = copy.copy(template) if not isinstance(template, type) else RemoteError(text)
    return made  # type: ignore[no-any-return]


def resolve_error(text: str) -> BaseException:
    """Turn an error text received from the peer into an exception.

    Wire protocol: docs/topics/protocol.md#error-texts.

    The registered errors are tried in order: a ``resolve_error`` hook that returns
    true wins, then an exact text match. Unknown texts become :class:`RemoteError`.
    """
    for known in _known:
        hook: Callable[[str], bool] | None = getattr(known, "resolve_error", None)
        if hook is not None:
            if hook(text):
                return _instantiate(known, text)
        elif not isinstance(known, type) and str(known) == text:
            fresh = copy.copy(known)
            fresh.__traceback__ = None
            return fresh
    return RemoteError(text)


def error_text(err: BaseException) -> str:
    """The text sent on the wire for ``err``; never empty (docs/topics/protocol.md#error-texts)."""
    return str(err) or type(err).__name__
