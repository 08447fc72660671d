"""Body encoding helpers: :func:`marshal` and :func:`unmarshal` (JSON by default).

neffos.js encodes with ``JSON.stringify`` and decodes with ``JSON.parse``; Go with
``encoding/json``. These helpers produce the same compact JSON, and let objects
bring their own format (``marshal()``/``unmarshal()`` methods, e.g. protobuf).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

__all__ = ["marshal", "unmarshal"]


def _default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, bytes | bytearray | memoryview):
        return bytes(obj).decode("utf-8")
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    to_dict = getattr(obj, "model_dump", None)  # pydantic v2 models
    if callable(to_dict):
        return to_dict(mode="json")
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _fields_of(cls: Any, data: Any, *, partial: bool = False) -> dict[str, Any]:
    """The dataclass fields found in a JSON object; unknown keys are ignored, as in Go."""
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object for {cls.__name__}")
    fields = dataclasses.fields(cls)
    known = {f.name for f in fields if f.init}
    values = {k: v for k, v in data.items() if k in known}
    if not partial:
        missing = [
            f.name
            for f in fields
            if f.init
            and f.name not in values
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise ValueError(f"{cls.__name__}: missing field(s) {', '.join(missing)}")
    return values


def marshal(obj: Any) -> bytes:
    """Encode ``obj`` for a message body.

    * ``bytes`` are returned as they are, ``str`` encoded as UTF-8;
    * an object with a ``marshal()`` method is encoded by that method;
    * anything else becomes compact JSON (dataclasses and pydantic models included).

    Raises:
        TypeError: ``obj`` cannot be encoded (unlike Go, the error is not sent as
            the body).
    """
    if isinstance(obj, bytes):
        return obj
    if isinstance(obj, str):
        return obj.encode()
    method = getattr(obj, "marshal", None)
    if callable(method) and not isinstance(obj, type):
        out = method()
        return out.encode() if isinstance(out, str) else bytes(out)
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=_default).encode()


def unmarshal(body: bytes, into: Any = None) -> Any:
    """Decode a message body.

    ``into`` may be

    * ``None``: the parsed JSON value;
    * a dataclass type: ``into(**json_object)``;
    * a type with an ``unmarshal(body)`` classmethod/staticmethod, or an instance
      with an ``unmarshal(body)`` method (protobuf-style): that method is used and
      its instance returned;
    * a pydantic model class (``model_validate_json``);
    * a dataclass instance: its fields are updated from the JSON object;
    * any other type: ``into(parsed)`` (``dict``, ``list``, ``str``, ...).

    Raises:
        ValueError: the body is not valid JSON or does not fit ``into`` (the
            sender's mistake).
        TypeError: ``into`` is nothing a body can be decoded into (the
            caller's mistake).
    """
    if into is None:
        return json.loads(body)
    hook = getattr(into, "unmarshal", None)
    if callable(hook):
        result = hook(body)
        return into if result is None else result
    if isinstance(into, type):
        validate = getattr(into, "model_validate_json", None)
        if callable(validate):
            return validate(body)
        data = json.loads(body)
        try:
            if dataclasses.is_dataclass(into):
                return into(**_fields_of(into, data))
            if isinstance(data, into):
                return data
            return into(data)
        except TypeError as exc:  # the body's value does not fit: the peer's mistake
            raise ValueError(f"cannot make a {into.__name__} of {type(data).__name__}") from exc
    if not (dataclasses.is_dataclass(into) or isinstance(into, dict)):
        raise TypeError(f"cannot unmarshal into {type(into).__name__}")
    data = json.loads(body)
    if dataclasses.is_dataclass(into):
        for key, value in _fields_of(type(into), data, partial=True).items():
            setattr(into, key, value)
        return into
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, not {type(data).__name__}")
    into.update(data)
    return into
