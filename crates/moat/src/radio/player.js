// The radio's player page. Everyone who reaches it can listen (/radio/live) and see what
// plays (/radio/now). Opened from this machine with the control token in the URL's
// fragment (`moat radio open` prints it), it trades the token for a session cookie and
// offers skip, pause and queueing; from anywhere else the control calls are refused and
// no controls are shown.
"use strict";

const $ = (id) => document.getElementById(id);
const audio = $("audio");
let controls = false;
let paused = false;

function text(el, value) { el.textContent = value || ""; }

function fmtTime(ms) {
  const d = new Date(ms);
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function show(station) {
  paused = station.state === "paused";
  text($("state"), station.problem ? station.state + " · " + station.problem : station.state);
  text($("listeners"), station.listeners + (station.listeners === 1 ? " listener" : " listeners"));
  const now = station.now;
  text($("now-title"), now ? now.title : "");
  text($("now-artist"), now ? now.artist : "");
  text($("now-album"), now ? now.album : "");
  document.body.dataset.nowId = now ? now.id : "";
  const cover = $("cover");
  if (now && now.has_cover) {
    const src = "/radio/cover/" + encodeURIComponent(now.id);
    if (cover.getAttribute("src") !== src) cover.src = src;
    cover.hidden = false;
  } else {
    cover.hidden = true;
  }
  if (now && now.duration_ms > 0) {
    $("progress").value = Math.min(1, Math.max(0, (Date.now() - now.start_ms) / now.duration_ms));
  }
  const list = $("next");
  list.replaceChildren(...station.next.map((e) => {
    const li = document.createElement("li");
    li.append(e.title + " — " + e.artist + " ");
    const when = document.createElement("small");
    when.textContent = fmtTime(e.start_ms) + (e.origin === "queued" ? " · queued" : "");
    li.append(when);
    return li;
  }));
  text($("pause"), paused ? "Resume ▶" : "Pause ⏸");
  text($("talk"), station.last_talk ? (station.speaking ? "🎙 " : "") + "“" + station.last_talk + "”" : "");
}

async function poll() {
  try {
    const r = await fetch("/radio/now", { cache: "no-store" });
    if (r.ok) show(await r.json());
    else text($("state"), "the radio is not playing (" + r.status + ")");
  } catch (e) {
    text($("state"), "cannot reach moat");
  }
}

async function control(path, body) {
  const r = await fetch("/radio/api/" + path, {
    method: body === undefined ? "POST" : "POST",
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  const answer = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error((answer.error && answer.error.message) || r.status);
  return answer;
}

async function enableControls() {
  // A token in the fragment (never sent to a server) is traded once for a cookie.
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    history.replaceState(null, "", location.pathname);
    await fetch("/radio/api/session", {
      method: "POST",
      headers: { "x-moat-control-token": decodeURIComponent(m[1]) },
      credentials: "same-origin",
    }).catch(() => null);
  }
  const r = await fetch("/radio/api/plan", { credentials: "same-origin" }).catch(() => null);
  controls = !!(r && r.ok);
  document.body.dataset.controls = controls ? "yes" : "no";
  $("controls").hidden = !controls;
  if (!controls) return;
  const say = (msg) => text($("said"), msg);
  $("skip").onclick = () => control("skip").then(() => say("skipping…"), (e) => say(e.message));
  $("pause").onclick = () => control(paused ? "resume" : "pause").then(poll, (e) => say(e.message));
  $("note-form").onsubmit = (ev) => {
    ev.preventDefault();
    const text = $("note").value.trim();
    if (!text) return;
    control("message", { text }).then(() => { $("note").value = ""; say("the DJ has your message"); }, (e) => say(e.message));
  };
  $("search").onsubmit = async (ev) => {
    ev.preventDefault();
    const q = $("q").value.trim();
    if (!q) return;
    const r = await fetch("/radio/api/search?q=" + encodeURIComponent(q), { credentials: "same-origin" });
    const answer = await r.json().catch(() => ({}));
    if (!r.ok) { say((answer.error && answer.error.message) || "search failed"); return; }
    $("results").replaceChildren(...answer.songs.map((s) => {
      const li = document.createElement("li");
      li.append(s.title + " — " + s.artist);
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = "Queue";
      b.onclick = () => control("queue", { id: s.id }).then(() => { say("queued " + s.title); poll(); }, (e) => say(e.message));
      li.append(b);
      return li;
    }));
  };
  $("cast-find").onclick = () => findSpeakers(say);
}

// The speakers on the LAN listener's network; each plays the station or stops.
async function findSpeakers(say) {
  say("looking for speakers…");
  const r = await fetch("/radio/api/cast", { credentials: "same-origin" }).catch(() => null);
  const answer = r ? await r.json().catch(() => ({})) : {};
  if (!r || !r.ok) { say((answer.error && answer.error.message) || "cannot look for speakers"); return; }
  say(answer.speakers.length ? "" : "no speaker answered");
  $("speakers").replaceChildren(...answer.speakers.map((s) => {
    const li = document.createElement("li");
    li.append(s.name + " — " + (s.casting ? "playing the radio" : (s.state || "?").toLowerCase()));
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = s.casting ? "Stop" : "Play here";
    b.onclick = () => control(s.casting ? "cast/stop" : "cast/play", { speaker: s.udn })
      .then(() => findSpeakers(say), (e) => say(e.message));
    li.append(b);
    return li;
  }));
}

function listen() {
  audio.src = "/radio/live";
  audio.play().then(() => text($("play"), "■ Stop"), () => text($("play"), "▶ Listen"));
}

$("play").onclick = () => {
  if (audio.paused || !audio.src) {
    listen();
  } else {
    audio.pause();
    audio.removeAttribute("src");
    audio.load();
    text($("play"), "▶ Listen");
  }
};

enableControls();
poll();
setInterval(poll, 2000);
// Where the browser allows it (autoplay), the station starts at once.
listen();
