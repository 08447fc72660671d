// A neffos.js client driven over stdin/stdout by tests/test_interop_js.py.
//
//   node tests/js/client.mjs ws://127.0.0.1:PORT/echo
//
// stdin:  one JSON command per line, {"id": N, "cmd": "...", ...arguments}
// stdout: one JSON object per line:
//   {"ready": true, ...}                         once, at start-up
//   {"reply": N, "ok": true|false, ...}           the outcome of command N
//   {"event": "<name>", "namespace": ..., ...}    an event handler of the client ran
//   {"probe": url, "method": ..., "status"|"error": ...}  a reconnection probe (fetch)
//   {"adopted": ID, "reconnectTries": N}          commands now act on a new Conn
//   {"unhandled": "<text>"}                       an unhandled promise rejection
//
// Commands act on the current Conn. neffos.js reconnects by making a new Conn
// that it never hands to the application (only event callbacks see it), so the
// first event fired on another Conn makes that one current ({"adopted": ID}).

import { createInterface } from "node:readline";

function out(obj) {
    process.stdout.write(JSON.stringify(obj) + "\n");
}

// neffos.js probes a lost server with the global fetch, which it captures when
// it is loaded: wrap it first, so that every probe and its outcome is reported.
const realFetch = globalThis.fetch;
globalThis.fetch = async (resource, options) => {
    const probe = { probe: String(resource), method: options && options.method };
    try {
        const response = await realFetch(resource, options);
        out({ ...probe, status: response.status });
        return response;
    } catch (err) {
        out({ ...probe, error: String((err && err.cause && err.cause.code) || err) });
        throw err;
    }
};

// the npm 0.1.34 build: a default export plus named exports, and a top-level
// `await import('ws')` inside
const lib = await import("neffos.js");
const neffos = lib.default;
const { dial, Conn, OnAnyEvent } = lib;

const url = process.argv[2];
let conn = null;

function describeBody(body) {
    if (body instanceof ArrayBuffer) {
        return { bodyType: "ArrayBuffer", bytes: Array.from(new Uint8Array(body)) };
    }
    if (typeof body === "string") {
        return { bodyType: "string", body };
    }
    if (body === undefined || body === null) {
        return { bodyType: String(body) };
    }
    return { bodyType: typeof body, body: String(body) };
}

function describeError(err) {
    if (err instanceof Error) {
        return { error: err.message, errorIsError: true };
    }
    if (err && typeof err.message === "string") {
        // a failed connection rejects with ws' ErrorEvent, which is no Error
        return { error: err.message, errorIsError: false };
    }
    return { error: String(err), errorIsError: false };
}

function reporter(name) {
    return (ns, msg) => {
        if (conn !== null && ns.conn !== conn) {
            conn = ns.conn;
            out({ adopted: conn.ID, reconnectTries: conn.reconnectTries });
        }
        out({
            event: name,
            msgEvent: msg.Event,
            namespace: ns.namespace,
            room: msg.Room || "",
            isLocal: Boolean(msg.IsLocal),
            isForced: Boolean(msg.IsForced),
            setBinary: Boolean(msg.SetBinary),
            connId: ns.conn.ID,
            reconnectTries: ns.conn.reconnectTries,
            ...describeBody(msg.Body),
        });
        return undefined;
    };
}

const SYSTEM_EVENTS = [
    neffos.OnNamespaceConnect,
    neffos.OnNamespaceConnected,
    neffos.OnNamespaceDisconnect,
    neffos.OnRoomJoin,
    neffos.OnRoomJoined,
    neffos.OnRoomLeave,
    neffos.OnRoomLeft,
];

// {"v1": ["chat", "bin"]} -> {"v1": {chat: fn, bin: fn, _OnNamespaceConnect: fn, ...}}
function connHandler(namespaces) {
    const handler = {};
    for (const [namespace, events] of Object.entries(namespaces)) {
        const table = {};
        for (const event of [...SYSTEM_EVENTS, ...events, OnAnyEvent]) {
            table[event] = reporter(event);
        }
        handler[namespace] = table;
    }
    return handler;
}

function nsConn(namespace) {
    const ns = conn === null ? undefined : conn.namespace(namespace);
    if (ns === undefined) {
        throw new Error(`driver: namespace ${namespace} is not connected`);
    }
    return ns;
}

const commands = {
    async dial(cmd) {
        const options = {};
        if (cmd.headers) options.headers = cmd.headers;
        if (cmd.reconnect) options.reconnect = cmd.reconnect;
        conn = await dial(url, connHandler(cmd.namespaces || {}), options);
        return { connId: conn.ID, reconnectTries: conn.reconnectTries, isConn: conn instanceof Conn };
    },
    async connect(cmd) {
        const ns = await conn.connect(cmd.namespace);
        return { namespace: ns.namespace };
    },
    async waitServerConnect(cmd) {
        // Resolves only on a later server-initiated connect: report that as an
        // event and answer the command as soon as the waiter is registered.
        conn.waitServerConnect(cmd.namespace).then((ns) => {
            out({ event: "waitServerConnect", namespace: ns === undefined ? null : ns.namespace });
        });
        return { registered: true };
    },
    async dialAndWaitServerConnect(cmd) {
        // The pattern of the neffos.js docs, `times` times on fresh connections:
        //   const conn = await dial(url, handler); await conn.waitServerConnect(ns)
        // A server that connects the client inside its on_connect must let both
        // resolve; `hung` counts the waits that did not within timeoutMs.
        let hung = 0;
        for (let i = 0; i < cmd.times; i++) {
            const c = await dial(url, connHandler({ [cmd.namespace]: [] }));
            let timer;
            const gaveUp = new Promise((resolve) => { timer = setTimeout(() => resolve("hung"), cmd.timeoutMs); });
            const result = await Promise.race([c.waitServerConnect(cmd.namespace), gaveUp]);
            clearTimeout(timer);
            if (result === "hung") hung++;
            c.close();
        }
        return { times: cmd.times, hung };
    },
    async ask(cmd) {
        const msg = await nsConn(cmd.namespace).ask(cmd.event, cmd.body);
        return { event: msg.Event, namespace: msg.Namespace, room: msg.Room || "", ...describeBody(msg.Body) };
    },
    async emit(cmd) {
        const ns = nsConn(cmd.namespace);
        if (cmd.room) {
            const room = ns.room(cmd.room);
            if (room === undefined) throw new Error(`driver: room ${cmd.room} is not joined`);
            return { written: room.emit(cmd.event, cmd.body) };
        }
        return { written: ns.emit(cmd.event, cmd.body) };
    },
    async askBinary(cmd) {
        // nsConn.ask() has no binary form; Conn.ask() sends any Message as it is
        const msg = new neffos.Message();
        msg.Namespace = nsConn(cmd.namespace).namespace;
        msg.Event = cmd.event;
        msg.Body = new Uint8Array(cmd.bytes);
        msg.SetBinary = true;
        const answer = await conn.ask(msg);
        return { event: answer.Event, setBinary: Boolean(answer.SetBinary), ...describeBody(answer.Body) };
    },
    async emitBinary(cmd) {
        return { written: nsConn(cmd.namespace).emitBinary(cmd.event, new Uint8Array(cmd.bytes)) };
    },
    async joinRoom(cmd) {
        const room = await nsConn(cmd.namespace).joinRoom(cmd.room);
        return { room: room.name };
    },
    async leaveAll(cmd) {
        const result = await nsConn(cmd.namespace).leaveAll();
        return { result: result === null ? null : String(result) };
    },
    async state() {
        const namespaces = {};
        if (conn !== null) {
            conn.connectedNamespaces.forEach((ns, name) => {
                namespaces[name] = Array.from(ns.rooms.keys());
            });
        }
        return {
            connId: conn === null ? null : conn.ID,
            closed: conn === null ? null : conn.isClosed(),
            namespaces,
        };
    },
    async close() {
        conn.close();
        return {};
    },
    async exit() {
        setImmediate(() => process.exit(0));
        return {};
    },
};

process.on("unhandledRejection", (reason) => {
    out({ unhandled: reason instanceof Error ? reason.message : String(reason) });
});

const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => {
    let cmd;
    try {
        cmd = JSON.parse(line);
    } catch (err) {
        out({ bad: line });
        return;
    }
    const run = commands[cmd.cmd];
    if (run === undefined) {
        out({ reply: cmd.id, ok: false, error: `driver: unknown command ${cmd.cmd}`, errorIsError: true });
        return;
    }
    // Commands run concurrently: an ask may wait while others go on.
    run(cmd).then(
        (result) => out({ reply: cmd.id, ok: true, ...result }),
        (err) => out({ reply: cmd.id, ok: false, ...describeError(err) }),
    );
});
lines.on("close", () => process.exit(0));

out({
    ready: true,
    node: process.version,
    defaultExportIsNamespace: neffos.dial === dial,
});
