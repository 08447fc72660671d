"""Reassembly of fragmented WebSocket messages, with the RFC 6455 rules on data frames.

The WebSocket libraries check frame headers (masking, control frame sizes,
opcodes) but leave some rules of data messages to their user, differently per
library. :class:`Assembler` applies them the same way on every transport:

* a text message must be valid UTF-8, checked as fragments arrive (close 1007);
* no RSV bit may be set, since no extension is negotiated (close 1002);
* a continuation frame needs a message to continue, and a new text or binary
  frame may not start inside a fragmented message (close 1002);
* a message may not grow past ``max_size`` bytes, nor be cut into more than
  ``max_size // 64`` fragments (close 1009): fragments are collected in one
  buffer, and each counts as 64 bytes at least, so a flood of tiny fragments
  costs no more memory than one big message.

It is sans-I/O: frames in, complete messages out, :class:`ProtocolViolation`
when the peer broke a rule.
"""

from __future__ import annotations

import codecs

__all__ = [
    "FRAGMENT_COST",
    "Assembler",
    "ProtocolViolation",
    "close_reason",
    "is_valid_close_code",
    "is_valid_utf8",
]


class ProtocolViolation(Exception):
    """The peer broke the WebSocket protocol: close with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


def is_valid_utf8(data: bytes | bytearray | memoryview) -> bool:
    """Whether ``data`` is valid UTF-8 (the text frame rule, RFC 6455 §8.1)."""
    if isinstance(data, bytes) and data.isascii():
        return True
    try:
        codecs.decode(data, "utf-8")
    except UnicodeDecodeError:
        return False
    return True


def is_valid_close_code(code: int) -> bool:
    """Whether a peer may send ``code`` in a close frame (RFC 6455 §7.4)."""
    return code in _DEFINED_CLOSE_CODES or 3000 <= code <= 4999


def close_reason(reason: str) -> bytes:
    """``reason`` as the UTF-8 bytes of a close frame: at most 123, whole characters."""
    data = reason.encode()
    if len(data) <= 123:
        return data
    return data[:123].decode("utf-8", "ignore").encode()


# 1004 is reserved; 1005, 1006 and 1015 must never be sent on the wire.
_DEFINED_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012,
                                  1013, 1014})


class Assembler:
    """Turns the data frames of one connection into complete messages."""

    __slots__ = ("_binary", "_buffer", "_decoder", "_fragments", "max_size")

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buffer: bytearray | None = None  # the message in progress
        self._binary = False
        self._fragments = 0  # of the message in progress
        self._decoder: codecs.IncrementalDecoder | None = None  # text in progress

    def data(self, payload: bytes, binary: bool, fin: bool, rsv: bool) -> bytes | None:
        """A text (``binary`` false) or binary frame; returns the message if ``fin``.

        Raises:
            ProtocolViolation: RSV bits set, a message already in progress, a
                frame past ``max_size``, or invalid UTF-8 in a text message.
        """
        if rsv:
            raise ProtocolViolation(1002, "reserved bits set without an extension")
        if self._buffer is not None:
            raise ProtocolViolation(1002, "a new message inside a fragmented message")
        if len(payload) > self.max_size:
            # the libraries check their frame limit on one side or the other only
            raise ProtocolViolation(1009, "message too big")
        if fin:
            if not binary and not is_valid_utf8(payload):
                raise ProtocolViolation(1007, "invalid UTF-8 in a text message")
            return payload
        self._buffer = bytearray(payload)
        self._binary = binary
        self._fragments = 1
        if not binary:
            self._decoder = codecs.getincrementaldecoder("utf-8")()
            self._check_text(payload, False)
        return None

    def continuation(self, payload: bytes, fin: bool, rsv: bool) -> tuple[bytes, bool] | None:
        """A continuation frame; returns ``(message, binary)`` when it completes one.

        Raises:
            ProtocolViolation: RSV bits set, no message to continue, the message
                grew past ``max_size`` (or into too many fragments), or invalid
                UTF-8 in a text message.
        """
        if rsv:
            raise ProtocolViolation(1002, "reserved bits set without an extension")
        buffer = self._buffer
        if buffer is None:
            raise ProtocolViolation(1002, "a continuation frame without a message")
        self._fragments += 1
        if (
            len(buffer) + len(payload) > self.max_size
            or self._fragments * FRAGMENT_COST > self.max_size
        ):
            self._buffer = None
            raise ProtocolViolation(1009, "message too big")
        buffer += payload
        if not self._binary:
            self._check_text(payload, fin)
        if not fin:
            return None
        self._buffer = None
        self._decoder = None
        return bytes(buffer), self._binary

    def _check_text(self, payload: bytes, final: bool) -> None:
        decoder = self._decoder
        assert decoder is not None
        try:
            decoder.decode(payload, final)
        except UnicodeDecodeError:
            self._buffer = None
            raise ProtocolViolation(1007, "invalid UTF-8 in a text message") from None


#: what a fragment counts as, at least, against ``max_size``
FRAGMENT_COST = 64
