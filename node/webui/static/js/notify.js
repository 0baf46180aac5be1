// Browser notifications: a reminder a chosen number of minutes before a
// session, one when a partner is found for a booking or cancels, and
// "your partner joined" while the user looks at another tab. All are
// opt-in in Settings; the browser asks for permission when one is turned on.
import { get, on, clock } from "./api.js";
import { fmtTimeZ, nameOf, MINUTE } from "./dom.js";
import { settings } from "./prefs.js";

const key = "tandem.reminded";
const reminded = new Set(JSON.parse(sessionStorage.getItem(key) || "[]"));
// The last state seen of each booking: a match or a partner's cancel is
// told once, when the state changes, not at every update of the booking.
const states = new Map();

const allowed = () => "Notification" in window && Notification.permission === "granted";

function notify(title, body, tag) {
  try {
    const n = new Notification(title, { body, tag, icon: "/icon.svg" });
    n.onclick = () => {
      window.focus();
      n.close();
    };
  } catch {
    // Some browsers only notify from a service worker: skip quietly.
  }
}

async function remind() {
  if (!settings().notify_reminder || !allowed()) return;
  const lead = (settings().remind_before_min || 5) * MINUTE;
  const now = clock.nowMs();
  let bookings;
  try {
    bookings = await get("/bookings");
  } catch {
    return;
  }
  for (const b of bookings) {
    const start = Date.parse(b.start);
    if (b.state !== "matched" && !(b.state === "searching" && b.kind === "scheduled")) continue;
    if (reminded.has(b.id) || start - now > lead + 15000 || start < now) continue;
    reminded.add(b.id);
    sessionStorage.setItem(key, JSON.stringify([...reminded]));
    const who = b.state === "matched" ? `with ${nameOf(b.partner_name, b.partner)}` : "(still finding a partner)";
    const mins = Math.max(1, Math.round((start - now) / MINUTE));
    notify("Tandem: your session starts soon", `In ${mins} min, ${fmtTimeZ(start)}: ${b.duration_min} min ${who}.`, "remind-" + b.id);
  }
}

// noticeState is a booking's state as the notices follow it: a match the
// partner has not acknowledged yet is "matching". The node that proposed
// counts itself matched until the partner answers its Confirm, and that
// answer can be "no such match" (the partner took another's first): a
// "partner found" then would be taken back a moment later.
function noticeState(b) {
  return b.state === "matched" && !b.confirmed ? "matching" : b.state;
}

// booking tells of a new match, and of a partner who cancelled (the node
// then searches again, or cancels a booking whose start has passed).
function booking(b) {
  const prev = states.get(b.id);
  const state = noticeState(b);
  states.set(b.id, state);
  if (!settings().notify_match || !allowed() || prev === state) return;
  const when = `${fmtTimeZ(Date.parse(b.start))}, ${b.duration_min} min`;
  if (state === "matched") {
    notify("Tandem: partner found", `${nameOf(b.partner_name, b.partner)} for ${when}.`, "match-" + b.id);
  } else if (prev === "matched" && (b.note || "").startsWith("partner cancelled")) {
    const next = state === "searching" ? " Looking for someone else." : "";
    notify("Tandem: your partner cancelled", `${when}: ${b.note}.${next}`, "cancel-" + b.id);
  }
}

/** startNotifications watches for what the user asked to be told about. */
export function startNotifications() {
  on("session", (e) => {
    if (e.type !== "partner-joined" || !settings().notify_partner_joined || !allowed() || !document.hidden) return;
    notify("Tandem: your partner is here", "Your session partner joined. Say hi!", "joined-" + e.booking);
  });
  get("/bookings")
    .then((bs) => bs.forEach((b) => states.has(b.id) || states.set(b.id, noticeState(b))))
    .catch(() => {});
  on("booking", booking);
  // A node clock that jumps (a test, the demo) may bring a session near.
  on("clock", () => clock.sync().then(remind, () => {}));
  setInterval(remind, 20 * 1000);
  remind();
}
