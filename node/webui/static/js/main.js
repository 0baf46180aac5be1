// Tandem web UI: boot, login check, the screen router (#/calendar,
// #/session/ID, #/history, #/people, #/settings, #/network, #/devices),
// the connection indicator and the "you have a live session" banner.
import { get, on, onUnauthorized, onStreamStatus, onNodeStatus, openEvents, clock, debounce, ApiError } from "./api.js";
import { h, $, errorBox, fmtCountdown, fmtWhen, nameOf, toast, MINUTE } from "./dom.js";
import { loadSettings } from "./prefs.js";
import { recheck, roomURL } from "./flow.js";
import { startNotifications } from "./notify.js";
import * as calendar from "./screens/calendar.js";
import * as room from "./screens/room.js";
import * as history from "./screens/history.js";
import * as people from "./screens/people.js";
import * as settings from "./screens/settings.js";
import * as network from "./screens/network.js";
import * as devices from "./screens/devices.js";
import { playChime } from "./sounds.js";

const routes = { calendar, session: room, history, people, settings, network, devices };
const ROOM_PHASES = new Set(["lobby", "focus", "warning", "checkin"]);
// The chimes follow the node's phase events, on whichever screen is open.
const CHIMES = { focus: "start", warning: "warning", checkin: "end" };

const screenEl = $("#screen");
let unmount = null;
let loggedIn = false;

function parseRoute() {
  const [name, arg] = location.hash.replace(/^#\/?/, "").split("/");
  return { name: routes[name] ? name : "calendar", arg: decodeURIComponent(arg || "") };
}

function route() {
  if (!loggedIn) return;
  if (unmount) {
    try {
      unmount();
    } catch (e) {
      reportError(e);
    }
    unmount = null;
  }
  const { name, arg } = parseRoute();
  const screen = routes[name];
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.route === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  document.title = `${screen.title} · Tandem`;
  screenEl.replaceChildren();
  screenEl.className = `screen screen-${name}`;
  document.body.dataset.screen = name;
  try {
    unmount = screen.mount(screenEl, arg) || null;
  } catch (e) {
    screenEl.append(errorBox(e));
    reportError(e);
  }
  paintBanner();
  refreshBanner();
}

function showLogin() {
  loggedIn = false;
  if (unmount) unmount();
  unmount = null;
  $("#boot").hidden = true;
  $("#screen").hidden = true;
  $("#nav").hidden = true;
  $("#live-banner").hidden = true;
  $("#node-down").hidden = true;
  document.body.classList.remove("node-down");
  // The link this node prints has this page's own address and port.
  $("#example-link").textContent = `${location.origin}/login?token=…`;
  $("#login-needed").hidden = false;
  document.body.dataset.screen = "login";
  document.title = "Log in · Tandem";
}

// ---- header: who and how connected ----
let peerCount = 0;
let streamUp = null; // null: not connected yet

let nodeDown = false;

function renderConn() {
  const c = $("#conn");
  c.className = "conn " + (nodeDown || !streamUp ? "down" : peerCount ? "up" : "alone");
  c.textContent = nodeDown ? "node stopped" : streamUp === null ? "connecting…" : !streamUp ? "reconnecting to your node…" : `${peerCount} ${peerCount === 1 ? "peer" : "peers"}`;
  c.title = nodeDown ? "Your Tandem node does not answer; retrying." : !streamUp ? "The live connection to your node dropped; retrying." : "Peers your node is connected to";
}

// onNode shows that the node went away, and brings every screen up to
// date when it is back (the node may have restarted: the room's video
// leg, for one, must be set up again).
function onNode(up) {
  if (!loggedIn) return;
  nodeDown = !up;
  $("#node-down").hidden = up;
  document.body.classList.toggle("node-down", !up);
  renderConn();
  if (up) {
    route();
    refreshStatus();
    toast("Your Tandem node is back.");
  }
}

const refreshStatus = debounce(async () => {
  try {
    const st = await clock.sync();
    peerCount = st.connected_peers;
    $("#whoami").textContent = st.name || "";
    renderConn();
    paintIdentity(st.identity);
  } catch {
    // The indicator keeps its last state; screens show their own errors.
  }
}, 300);

// ---- "preparing your identity" (a new node's first start) ----
// A new identity computes its stamp in the background (seconds, once):
// bookings can be made meanwhile, and go out to other people when it is
// ready. The notice follows its progress until the "identity" event.
let identityPoll = null;

function paintIdentity(id) {
  let notice = document.getElementById("identity-notice");
  if (!id || id.ready) { // an older node says nothing: ready
    notice?.remove();
    clearInterval(identityPoll);
    identityPoll = null;
    return;
  }
  if (!notice) {
    notice = h("div", { class: "notice", id: "identity-notice", role: "status" });
    $("#notices").prepend(notice);
  }
  notice.replaceChildren(h("p", {}, h("strong", {}, "Preparing your identity"),
    ` (one-time, a few seconds): ${Math.round((id.progress || 0) * 100)}%. You can book already: your open times go out to other people once it is ready.`));
  if (!identityPoll) identityPoll = setInterval(() => get("/status").then((st) => paintIdentity(st.identity)).catch(() => {}), 2000);
}

// ---- the live-session banner (on every screen but the room) ----
let sessions = [];

const refreshBanner = debounce(async () => {
  if (!loggedIn) return;
  try {
    sessions = await get("/sessions");
  } catch {
    sessions = [];
  }
  paintBanner();
}, 150);

const bannerText = h("span", { id: "live-text" });
const bannerLink = h("a", { class: "button primary", id: "join-live" });

function paintBanner() {
  const banner = $("#live-banner");
  const { name, arg } = parseRoute();
  const live = sessions.filter((s) => ROOM_PHASES.has(s.phase) && !(name === "session" && arg === s.booking.id));
  if (!live.length) {
    banner.hidden = true;
    return;
  }
  const s = live[0];
  const who = nameOf(s.partner.name || s.booking.partner_name, s.booking.partner);
  // The schedule runs on the session clock (the offerer's); the start
  // happens at booking.start minus its offset on this node's clock.
  const start = Date.parse(s.booking.start) - (s.clock_offset_ms || 0);
  const left = start + s.booking.duration_min * MINUTE - clock.nowMs();
  const what = s.phase === "lobby" ? `starts in ${fmtCountdown(start - clock.nowMs())}` : s.phase === "checkin" ? "is over: check in" : `${fmtCountdown(left)} left`;
  bannerText.textContent = `Your session with ${who} ${what}.`;
  bannerLink.href = roomURL(s.booking.id);
  bannerLink.textContent = s.phase === "lobby" ? "Enter the lobby" : "Go to the session";
  if (!bannerText.isConnected) banner.replaceChildren(bannerText, bannerLink);
  banner.hidden = false;
}

// ---- "your partner cancelled" (on every screen, until dismissed) ----
const known = new Map(); // booking id -> the booking as last seen

async function loadKnown() {
  try {
    for (const b of await get("/bookings")) known.set(b.id, b);
  } catch {
    // Events fill it in.
  }
}

function onBookingChange(b) {
  const prev = known.get(b.id);
  known.set(b.id, b);
  // The node says so in the note when it frees a booking the partner cancelled.
  if (!prev || prev.state !== "matched" || b.state === "matched" || !/^partner cancelled/.test(b.note || "")) return;
  const who = nameOf(prev.partner_name, prev.partner);
  const reason = b.note.replace(/^partner cancelled:?\s*/, "");
  const when = b.kind === "now" ? "your session" : `your session on ${fmtWhen(b.start)}`;
  const next = b.state === "searching" ? " Your node is looking for a new partner for it." : "";
  const id = `partner-cancelled-${b.id}`;
  document.getElementById(id)?.remove();
  const notice = h("div", { class: "notice warn", id, role: "alert" },
    h("p", {}, h("strong", {}, `${who} cancelled ${when}`), reason ? `: “${reason}”.` : ".", next),
    h("button", { type: "button", class: "small-btn", onclick: () => notice.remove() }, "OK"));
  $("#notices").append(notice);
}

async function boot() {
  onUnauthorized(showLogin);
  let status;
  try {
    status = await clock.sync();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return showLogin();
    $("#boot").replaceChildren(errorBox(e), h("p", {}, h("button", { type: "button", onclick: () => location.reload() }, "Try again")));
    return;
  }
  try {
    await loadSettings();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return showLogin();
    // The defaults will do.
  }
  loggedIn = true;
  peerCount = status.connected_peers;
  $("#whoami").textContent = status.name || "";
  paintIdentity(status.identity);
  if (status.demo || status.clock_rate > 1) {
    $("#whoami").after(h("span", { class: "chip demo", title: "The node's clock runs faster than real time" },
      status.demo ? `demo${status.clock_rate > 1 ? `, clock ×${status.clock_rate}` : ""}` : `clock ×${status.clock_rate}`));
  }
  $("#boot").hidden = true;
  $("#nav").hidden = false;
  $("#screen").hidden = false;

  onStreamStatus((up) => {
    streamUp = up;
    renderConn();
    if (up) {
      refreshStatus();
      refreshBanner();
      recheck().catch(() => {});
    }
  });
  onNodeStatus(onNode);
  openEvents();
  on("peer-connected", refreshStatus);
  on("peer-disconnected", refreshStatus);
  // The node's clock changed pace (a demo whose clock a test slows down).
  on("clock", () => clock.sync().catch(() => {}));
  on("booking", refreshBanner);
  on("identity", paintIdentity);
  loadKnown().then(() => on("booking", onBookingChange));
  on("session", (e) => {
    if (e.type === "phase") {
      if (CHIMES[e.phase]) playChime(CHIMES[e.phase]);
      clock.sync().catch(() => {});
    }
    refreshBanner();
  });
  document.addEventListener("tandem:profile", (e) => { $("#whoami").textContent = e.detail.name; });
  setInterval(() => clock.sync().catch(() => {}), 30 * 1000);
  setInterval(paintBanner, 1000);
  startNotifications();
  window.addEventListener("hashchange", route);
  route();
  recheck().catch(() => {});
}

boot();
