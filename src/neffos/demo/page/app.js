// The browser side of the neffos demo chat (python -m neffos demo).
//
// It speaks to the endpoint /echo of the page's own host, in the namespace
// "default": it joins the room the user names, sends the event "chat" with the
// JSON body {"from": ..., "text": ...} to that room, and shows the "chat" and
// "notify" events the server sends. The user name travels as the X-Username
// header, which neffos.js puts in the URL (browsers cannot set WebSocket
// headers) and the server turns back into a header and uses as the connection
// ID. Nothing here is specific to the Python server: the Go neffos server of
// the same example serves it as well.
"use strict";

(function () {
  var NAMESPACE = "default";
  var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
  var endpoint = scheme + window.location.host + "/echo";

  var logList = document.getElementById("log");
  var statusLine = document.getElementById("status");
  var form = document.getElementById("send");
  var input = document.getElementById("text");
  var sendButton = document.getElementById("sendBtn");

  var conn = null; // the neffos.js connection
  var nsConn = null; // the namespace connection, once connected
  var room = ""; // the room we are in ("" for none)

  // Every line goes in as text, never as HTML: chat lines come from strangers.
  function show(text, kind) {
    var item = document.createElement("li");
    item.className = kind || "";
    item.textContent = text;
    logList.appendChild(item);
    logList.scrollTop = logList.scrollHeight;
  }

  function showStatus() {
    var who = conn ? "you are " + conn.ID : "not connected";
    statusLine.textContent = room ? who + ", in room " + room : who + ", in no room";
  }

  async function join(name) {
    try {
      await nsConn.joinRoom(name);
      room = name;
    } catch (err) {
      show("could not join " + name + ": " + err, "error");
    }
    showStatus();
  }

  async function leave() {
    if (!room) {
      show("you are in no room", "system");
      return;
    }
    var leaving = nsConn.room(room);
    room = "";
    if (leaving) {
      await leaving.leave();
    }
    showStatus();
  }

  function say(text) {
    var body = neffos.marshal({ from: conn.ID, text: text });
    // Outside a room the line goes to the whole namespace, as in the original.
    var target = room ? nsConn.room(room) : nsConn;
    if (target && target.emit("chat", body)) {
      show((room ? "[" + room + "] " : "") + "me: " + text, "mine");
    } else {
      show("not sent: the connection is closed", "error");
    }
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = input.value.trim();
    input.value = "";
    if (!text || !nsConn) {
      return;
    }
    if (text === "/leave") {
      leave();
    } else if (text.indexOf("/join ") === 0 && text.slice(6).trim()) {
      var next = text.slice(6).trim();
      (room ? leave() : Promise.resolve()).then(function () { return join(next); });
    } else {
      say(text);
    }
  });

  var events = {};
  events[NAMESPACE] = {
    _OnNamespaceConnected: function (ns, msg) {
      show("connected to namespace " + msg.Namespace, "system");
    },
    _OnNamespaceDisconnect: function (ns, msg) {
      show("disconnected from namespace " + msg.Namespace, "system");
      nsConn = null;
      room = "";
      sendButton.disabled = true;
      statusLine.textContent = "disconnected: reload the page to come back";
    },
    _OnRoomJoined: function (ns, msg) {
      show("joined room " + msg.Room, "system");
    },
    _OnRoomLeft: function (ns, msg) {
      show("left room " + msg.Room, "system");
    },
    notify: function (ns, msg) {
      show(String(msg.Body), "notify");
    },
    chat: function (ns, msg) {
      var line;
      try {
        line = msg.unmarshal();
      } catch (err) {
        show("a chat message that is not JSON: " + msg.Body, "error");
        return;
      }
      var where = msg.Room ? "[" + msg.Room + "] " : "";
      show(where + line.from + ": " + line.text, "chat");
    }
  };

  async function start() {
    var name = (window.prompt("Your name (it becomes your connection ID):", "") || "").trim();
    var options = name ? { headers: { "X-Username": name } } : {};
    try {
      conn = await neffos.dial(endpoint, events, options);
      nsConn = await conn.connect(NAMESPACE);
    } catch (err) {
      statusLine.textContent = "cannot connect to " + endpoint + ": " + err;
      show(statusLine.textContent, "error");
      return;
    }
    showStatus();
    sendButton.disabled = false;
    var first = (window.prompt("Room to join, e.g. lobby:", "lobby") || "").trim();
    if (first) {
      await join(first);
    }
    input.focus();
  }

  if (typeof neffos === "undefined") {
    statusLine.textContent = "neffos.js did not load: see the terminal that runs the demo";
  } else {
    start();
  }
})();
