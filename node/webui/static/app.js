"use strict";
// Tandem web UI shell: everything comes from the node's local API.
const $ = (id) => document.getElementById(id);

async function api(path, opts = {}) {
  const res = await fetch("/api/v1" + path, {
    credentials: "same-origin",
    headers: { "Content-Type": "application/json" },
    ...opts,
  });
  if (res.status === 401) {
    showLogin();
    throw new Error("not logged in");
  }
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.error || res.statusText);
  return body;
}

function showLogin() {
  $("login-needed").hidden = false;
  $("app").hidden = true;
}

function fill(list, items, render) {
  list.replaceChildren(...items.map((it) => {
    const li = document.createElement("li");
    render(li, it);
    return li;
  }));
}

const fmt = (iso) => new Date(iso).toLocaleString([], { weekday: "short", hour: "2-digit", minute: "2-digit", day: "numeric", month: "short" });

async function refresh() {
  const st = await api("/status");
  $("login-needed").hidden = true;
  $("app").hidden = false;
  $("whoami").textContent = st.name || "";
  $("peer-id").textContent = st.peer_id;
  fill($("addrs"), st.addrs, (li, a) => { li.textContent = a; });
  const peers = await api("/peers");
  $("peer-count").textContent = peers.length;
  fill($("peers"), peers, (li, p) => { li.textContent = `${p.id} (${p.latency_ms.toFixed(1)} ms)`; });
  const bookings = await api("/bookings");
  fill($("bookings"), bookings.filter((b) => b.state !== "cancelled"), (li, b) => {
    const who = b.state === "matched" ? `with ${b.partner_name || b.partner.slice(-8)}` : "finding a partner";
    li.textContent = `${fmt(b.start)} · ${b.duration_min} min · ${b.kind} · ${who} ${b.note ? "(" + b.note + ")" : ""} `;
    if (b.state === "searching" || b.state === "matched") {
      const btn = document.createElement("button");
      btn.textContent = "Cancel";
      btn.onclick = () => act(api(`/bookings/${b.id}/cancel`, { method: "POST", body: JSON.stringify({ reason: "" }) }));
      li.append(btn);
    }
  });
  const slots = await api("/slots");
  fill($("slots"), slots, (li, s) => {
    li.textContent = `${fmt(s.start)} · ${s.duration_min} min · ${s.activity}${s.quiet ? " · quiet" : ""} · ${s.name || s.owner.slice(-8)}`;
  });
}

async function act(promise) {
  $("error").textContent = "";
  try { await promise; await refresh(); } catch (e) { $("error").textContent = e.message; }
}

function bookRequest(kind) {
  const req = {
    kind,
    duration_min: Number($("book-duration").value),
    activity: $("book-activity").value,
    quiet: $("book-quiet").checked,
    goal: $("book-goal").value,
  };
  if (kind === "scheduled") req.at = new Date($("book-at").value).toISOString();
  return api("/bookings", { method: "POST", body: JSON.stringify(req) });
}

$("book-form").addEventListener("submit", (e) => { e.preventDefault(); act(bookRequest("scheduled")); });
$("focus-now").addEventListener("click", () => act(bookRequest("now")));

refresh().then(() => {
  const es = new EventSource("/api/v1/events");
  let pending = false;
  const again = () => {
    if (pending) return;
    pending = true;
    setTimeout(() => { pending = false; refresh().catch(() => {}); }, 100);
  };
  for (const t of ["peer-connected", "peer-disconnected", "booking", "board"]) es.addEventListener(t, again);
}).catch((e) => { if (e.message !== "not logged in") $("error").textContent = e.message; });
