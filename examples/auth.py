"""Authentication: who may connect, checked before the WebSocket exists and after.

Three checks, the patterns of the Go original:

1. Before the upgrade, at the HTTP level: ``before_upgrade`` reads a JSON Web
   Token (PyJWT, HS256) from the ``token`` query parameter or from the
   ``Sec-WebSocket-Protocol`` header (``jwt, <token>``: what a browser can
   send, ``new WebSocket(url, ["jwt", token])``), verifies its signature and
   expiry, and answers ``401 Unauthorized`` when it is missing, forged or
   expired. No WebSocket, no connection, no handler ever runs for it.
2. ``on_connect``: a valid token of a banned user is refused after the
   upgrade; the refusal's text reaches ``dial`` on the client (Python and
   neffos.js alike).
3. In handlers, the token's claims are at ``conn.request.state["claims"]``
   and the connection ID is the token's subject.

Run a server, make a token, and connect (the secret comes from
``NEFFOS_JWT_SECRET``; the default is for trying it out only)::

    python examples/auth.py server                    # ws://127.0.0.1:8080/echo
    python examples/auth.py server --stack asgi       # the same, served by uvicorn
    python examples/auth.py server --stack aiohttp    # ... by an aiohttp application
    python examples/auth.py token --user alice        # prints a token valid for 1 hour
    python examples/auth.py client --token TOKEN      # prints "you are alice (role: user)"
    python examples/auth.py client --token TOKEN --subprotocol   # the token in the header

``token --expires -60`` makes an expired token and ``token --secret other`` a
forged one: the client then fails with the server's 401.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import socket
import sys
import time
from typing import Any

import jwt

import neffos

SECRET = os.environ.get("NEFFOS_JWT_SECRET", "change-me: a secret of at least 32 bytes")
BANNED = {"mallory"}
#: the subprotocol a browser offers next to its token
JWT_PROTOCOL = "jwt"


def make_token(user: str, role: str, expires_in: int, secret: str = SECRET) -> str:
    now = int(time.time())
    claims = {"sub": user, "role": role, "iat": now, "exp": now + expires_in}
    return jwt.encode(claims, secret, algorithm="HS256")


def token_of(request: neffos.Request) -> str | None:
    """The token in the query (``?token=``) or in ``Sec-WebSocket-Protocol: jwt, <token>``."""
    values = request.query.get("token")
    if values:
        return values[0]
    offered = [
        part.strip()
        for value in request.headers.get_all("Sec-WebSocket-Protocol")
        for part in value.split(",")
    ]
    if JWT_PROTOCOL in offered:
        others = [p for p in offered if p != JWT_PROTOCOL]
        return others[0] if others else None
    return None


def check_token(request: neffos.Request) -> None:
    """``before_upgrade``: a valid token, or 401 before the WebSocket exists."""
    token = token_of(request)
    if token is None:
        raise neffos.UpgradeError(
            401, "Unauthorized: no token", headers=[("WWW-Authenticate", "Bearer")]
        )
    try:
        claims = jwt.decode(
            token, SECRET, algorithms=["HS256"], options={"require": ["exp", "sub"]}
        )
    except jwt.ExpiredSignatureError:
        raise neffos.UpgradeError(401, "Unauthorized: token expired") from None
    except jwt.InvalidTokenError:
        raise neffos.UpgradeError(401, "Unauthorized: invalid token") from None
    request.state["claims"] = claims


def user_id(request: neffos.Request) -> str:
    return str(request.state["claims"]["sub"])


def refuse_banned(conn: neffos.Conn) -> None:
    """``on_connect``: the token is good, but this user may not come in."""
    if conn.id in BANNED:
        raise PermissionError(f"{conn.id} is banned")


def whoami(ns: neffos.NSConn, msg: neffos.Message) -> str | None:
    if ns.conn.is_client:
        print(msg.text, flush=True)
        return None
    assert ns.conn.request is not None
    claims = ns.conn.request.state["claims"]
    return f"you are {claims['sub']} (role: {claims['role']})"


events = {"v1": {"whoami": whoami}}


def make_server() -> neffos.Server:
    return neffos.Server(
        events,
        before_upgrade=check_token,
        id_generator=user_id,
        on_connect=refuse_banned,
        subprotocols=[JWT_PROTOCOL],  # browsers need the offered protocol answered
    )


# -- serving, on neffos' listener or inside another web stack --------------------------


async def run_server(host: str, port: int, stack: str) -> None:
    server = make_server()
    if stack == "neffos":
        async with server:
            listener = await server.listen(host, port, path="/echo")
            print(f"listening on {listener.url}", flush=True)
            await asyncio.Event().wait()
    elif stack == "asgi":
        import uvicorn

        sock = socket.create_server((host, port))
        # uvicorn's default WebSocket implementation (websockets-sansio) logs a
        # false ERROR for every refused handshake (uvicorn PR #3138); wsproto
        # answers refusals quietly.
        ws = "wsproto" if importlib.util.find_spec("wsproto") else "auto"
        app = neffos.ASGIApp(server, path="/echo")
        config = uvicorn.Config(app, log_level="warning", ws=ws)
        print(f"listening on ws://{host}:{sock.getsockname()[1]}/echo", flush=True)
        await uvicorn.Server(config).serve(sockets=[sock])
    else:
        from aiohttp import web

        app = web.Application()
        neffos.attach_aiohttp(app, server, "/echo")
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
            print(f"listening on ws://{host}:{runner.addresses[0][1]}/echo", flush=True)
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()


async def run_client(url: str, token: str, subprotocol: bool) -> None:
    options: dict[str, Any] = {}
    if subprotocol:
        options["headers"] = {"Sec-WebSocket-Protocol": f"{JWT_PROTOCOL}, {token}"}
    else:
        url = f"{url}?token={token}"
    async with neffos.dial(url, events, **options) as client:
        ns = await client.connect("v1")
        ns.emit("whoami")
        await ns.disconnect()  # answered after the reply to whoami


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    server = modes.add_parser("server", help="run the server")
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    server.add_argument("--stack", choices=["neffos", "asgi", "aiohttp"], default="neffos")
    token = modes.add_parser("token", help="print a token")
    token.add_argument("--user", required=True)
    token.add_argument("--role", default="user")
    token.add_argument("--expires", type=int, default=3600, help="seconds (negative: expired)")
    token.add_argument("--secret", default=SECRET, help="another secret makes a forged token")
    client = modes.add_parser("client", help="connect with a token and ask who we are")
    client.add_argument("--url", default="ws://127.0.0.1:8080/echo")
    client.add_argument("--token", required=True)
    client.add_argument("--subprotocol", action="store_true", help="send it in the header")
    args = parser.parse_args()

    try:
        if args.mode == "server":
            asyncio.run(run_server(args.host, args.port, args.stack))
        elif args.mode == "token":
            print(make_token(args.user, args.role, args.expires, args.secret))
        else:
            asyncio.run(run_client(args.url, args.token, args.subprotocol))
    except KeyboardInterrupt:
        pass
    except neffos.NeffosError as exc:  # refused, cannot connect, connection lost, ...
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
