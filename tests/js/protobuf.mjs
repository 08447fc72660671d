// A neffos.js peer of the protobuf chat (examples/protobuf), driven by
// tests/test_examples_protobuf.py.
//
//   node tests/js/protobuf.mjs ws://127.0.0.1:PORT/echo path/to/chat.proto USER
//
// It loads chat.proto with protobufjs at start-up (no generated code, like the
// Python side), dials with X-Username: USER and connects to the namespace "chat".
//
// stdin:  one line of text per post: encoded as a Post, sent with emitBinary("post")
// stdout: one JSON object per line:
//   {"ready": true, "id": ...}                 connected to the namespace
//   {"chat": {...}, "bodyType": ..., "setBinary": ...}
//                                              a "chat" event: the ChatLine decoded by
//                                              protobufjs, every field present (64-bit
//                                              integers as strings, enums by name)
//   {"refused": "<text>"}                      the server answered a post with an error
//   {"failed": "<text>"}                       something went wrong here; then exit 1
// At the end of stdin it disconnects from the namespace, closes and exits 0.

import { createInterface } from "node:readline";

import protobuf from "protobufjs";

const lib = await import("neffos.js");
const neffos = lib.default;

function out(obj) {
    process.stdout.write(JSON.stringify(obj) + "\n");
}

function fail(err) {
    out({ failed: err instanceof Error ? err.message : String(err) });
    process.exit(1);
}

process.on("unhandledRejection", fail);

const [url, protoPath, user] = process.argv.slice(2);

const root = await protobuf.load(protoPath);
const Post = root.lookupType("neffos.examples.chat.Post");
const ChatLine = root.lookupType("neffos.examples.chat.ChatLine");

function onChat(ns, msg) {
    // a binary frame's body is an ArrayBuffer; a text frame's would be a string
    const bodyType = msg.Body instanceof ArrayBuffer ? "ArrayBuffer" : typeof msg.Body;
    const bytes = msg.Body instanceof ArrayBuffer ? new Uint8Array(msg.Body) : new TextEncoder().encode(msg.Body);
    const line = ChatLine.decode(bytes);
    out({
        chat: ChatLine.toObject(line, { longs: String, enums: String, defaults: true, arrays: true }),
        bodyType,
        setBinary: Boolean(msg.SetBinary),
    });
}

function onPost(ns, msg) {
    if (msg.Err) out({ refused: msg.Err.message });
}

const conn = await neffos.dial(url, { chat: { chat: onChat, post: onPost } }, { headers: { "X-Username": user } });
const ns = await conn.connect("chat");
out({ ready: true, id: conn.ID });

const lines = createInterface({ input: process.stdin });
lines.on("line", (text) => {
    const problem = Post.verify({ text });
    if (problem) fail(problem);
    const body = Post.encode(Post.create({ text })).finish();
    if (!ns.emitBinary("post", body)) fail("emitBinary: not written");
});
lines.on("close", async () => {
    try {
        await ns.disconnect();
        conn.close();
        process.exit(0);
    } catch (err) {
        fail(err);
    }
});
