"""The message classes of chat.proto, built when the program starts.

``Post`` and ``ChatLine`` below are ordinary protobuf message classes
(``Post(text="hi").SerializeToString()``, ``ChatLine.FromString(data)``), but no
``chat_pb2.py`` is generated ahead of time or committed. At import, this module:

1. runs protoc on chat.proto — the real compiler, shipped as a Python wheel by
   ``grpcio-tools`` (``grpc_tools.protoc``, in-process, no binary on PATH) —
   asking for a *descriptor set* (``--descriptor_set_out``) instead of Python
   code, into a temporary directory that is removed right after;
2. hands the descriptors to the protobuf runtime (``message_factory.GetMessages``),
   which builds the classes, in a descriptor pool of their own.

Why this way, and not the alternatives:

* Committed ``*_pb2.py`` files go stale when the .proto changes, and recent
  protoc output refuses to load under an older protobuf runtime ("gencode
  version is newer than runtime version"). A descriptor set is the stable
  format protoc and every runtime have spoken for years, so any protobuf
  version that pip picks works with it.
* Generating ``*_pb2.py`` into a cache directory at run time would work too,
  but needs an import-path trick and a rule for when the cache is stale; a
  descriptor set needs neither, and compiling takes a few milliseconds.
* A pure-Python .proto parser would need code of ours to turn its syntax tree
  into descriptors: a second, partial implementation of the language. protoc
  accepts every valid .proto (imports, nested types, enums, maps, options) and
  reports mistakes with file, line and column. ``grpcio-tools`` has binary
  wheels for CPython on Linux, macOS and Windows, so a fresh machine needs
  nothing but ``pip install protobuf grpcio-tools``.

The module is imported by server.py and client.py; it has no command of its own.
"""

from __future__ import annotations

import tempfile
from importlib import resources
from pathlib import Path

try:
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from google.protobuf.message import DecodeError, Message
    from grpc_tools import protoc
except ImportError as exc:  # say what to install, not a traceback
    raise SystemExit(
        f"this example needs protobuf and grpcio-tools ({exc}): pip install protobuf grpcio-tools"
    ) from None

__all__ = ["PROTO", "ChatLine", "DecodeError", "Message", "Post", "load"]

#: the schema shared with every peer, whatever its language
PROTO = Path(__file__).resolve().with_name("chat.proto")
PACKAGE = "neffos.examples.chat"


def compile_proto(proto: Path) -> descriptor_pb2.FileDescriptorSet:
    """Run protoc on ``proto``; return the descriptors of it and of its imports.

    Raises:
        ValueError: protoc rejected the file (its messages are on stderr).
    """
    # google/protobuf/*.proto (timestamp.proto...) ship inside grpc_tools
    well_known = resources.files("grpc_tools") / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "descriptors.pb"
        status = protoc.main(
            [
                "protoc",
                f"--proto_path={proto.parent}",
                f"--proto_path={well_known}",
                "--include_imports",
                f"--descriptor_set_out={out}",
                proto.name,
            ]
        )
        if status != 0:
            raise ValueError(f"protoc could not compile {proto} (exit status {status})")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def load(proto: Path = PROTO) -> dict[str, type[Message]]:
    """The message classes of ``proto`` and its imports, by full name."""
    files = compile_proto(proto)
    # a pool of their own: no clash with classes that other code registered
    return message_factory.GetMessages(list(files.file), pool=descriptor_pool.DescriptorPool())


_classes = load()
Post = _classes[f"{PACKAGE}.Post"]
ChatLine = _classes[f"{PACKAGE}.ChatLine"]
