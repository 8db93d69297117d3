// moat's web chat. The control token comes in the URL's fragment (printed by
// `moat chat --web`), which no server sees; it is kept in this tab's session storage and
// offered as the WebSocket subprotocol `moat.token.TOKEN`. Everything shown is set as
// text, never as HTML: a reply or a tool's output cannot inject markup.
"use strict";

(function () {
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("token")) {
    sessionStorage.setItem("moat-token", fragment.get("token"));
    history.replaceState(null, "", location.pathname);
  }
  const token = sessionStorage.getItem("moat-token");
  const log = document.getElementById("log");
  const status = document.getElementById("status");
  const input = document.getElementById("input");
  const send = document.getElementById("send");
  const stop = document.getElementById("stop");
  let socket = null;
  let reply = null; // the reply being streamed
  let busy = false;

  function line(cls, text) {
    const div = document.createElement("div");
    div.className = "msg " + cls;
    div.textContent = text;
    log.appendChild(div);
    log.scrollTop = log.scrollHeight;
    return div;
  }

  function setBusy(b) {
    busy = b;
    send.disabled = b || !socket || socket.readyState !== WebSocket.OPEN;
    stop.disabled = !b;
  }

  function approval(frame) {
    const box = document.createElement("div");
    box.className = "approval";
    box.dataset.id = frame.id;
    const what = document.createElement("div");
    what.textContent = frame.tool + " wants to run (risk " + frame.risk + "): " + frame.reason;
    const args = document.createElement("pre");
    args.textContent = frame.arguments;
    const yes = document.createElement("button");
    yes.textContent = "Approve";
    yes.className = "approve";
    const no = document.createElement("button");
    no.textContent = "Deny";
    no.className = "deny";
    const answer = (approve) => {
      socket.send(JSON.stringify({ type: "approve", id: frame.id, approve }));
      yes.disabled = no.disabled = true;
      box.appendChild(document.createTextNode(approve ? " approved" : " denied"));
    };
    yes.addEventListener("click", () => answer(true));
    no.addEventListener("click", () => answer(false));
    box.append(what, args, yes, no);
    log.appendChild(box);
    log.scrollTop = log.scrollHeight;
  }

  function onFrame(frame) {
    switch (frame.type) {
      case "delta":
        if (!reply) reply = line("assistant", "");
        reply.textContent += frame.text;
        log.scrollTop = log.scrollHeight;
        break;
      case "text":
        if (!reply) line("assistant", frame.text);
        reply = null;
        break;
      case "tool_call":
        reply = null;
        line("tool", "· " + frame.tool + " " + JSON.stringify(frame.arguments));
        break;
      case "tool_result":
        line("tool", (frame.ok ? "✓ " : "✗ ") + frame.tool + ": " + frame.output.split("\n").slice(0, 6).join("\n  "));
        break;
      case "notice":
        line("notice", "! " + frame.text);
        break;
      case "approval":
        approval(frame);
        break;
      case "error":
        line("error", frame.text);
        break;
      case "done":
        reply = null;
        setBusy(false);
        break;
    }
  }

  function connect() {
    if (!token) {
      status.textContent = "no control token: open the address `moat chat --web` prints";
      return;
    }
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(scheme + "//" + location.host + "/chat/ws", ["moat.chat.v1", "moat.token." + token]);
    socket.addEventListener("open", () => {
      status.textContent = "connected";
      setBusy(false);
    });
    socket.addEventListener("message", (e) => {
      try {
        onFrame(JSON.parse(e.data));
      } catch (err) {
        line("error", "a message from moat could not be read: " + err);
      }
    });
    socket.addEventListener("close", () => {
      status.textContent = "disconnected (is `moat serve` running? reopen the address `moat chat --web` prints)";
      send.disabled = true;
      stop.disabled = true;
    });
  }

  document.getElementById("compose").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (!text || busy || !socket || socket.readyState !== WebSocket.OPEN) return;
    line("you", text);
    socket.send(JSON.stringify({ type: "message", text }));
    input.value = "";
    setBusy(true);
  });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      document.getElementById("compose").requestSubmit();
    }
  });
  stop.addEventListener("click", () => socket && socket.send(JSON.stringify({ type: "stop" })));
  setBusy(false);
  connect();
})();
