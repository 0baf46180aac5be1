// Browser notifications: a reminder 5 minutes before a session, and "your
// partner joined" while the user looks at another tab. Both are opt-in in
// Settings; the browser asks for permission when one is turned on.
import { get, on, clock } from "./api.js";
import { fmtTimeZ, nameOf, MINUTE } from "./dom.js";
import { settings } from "./prefs.js";

const key = "tandem.reminded";
const reminded = new Set(JSON.parse(sessionStorage.getItem(key) || "[]"));

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
    if (reminded.has(b.id) || start - now > 5 * MINUTE + 15000 || start < now) continue;
    reminded.add(b.id);
    sessionStorage.setItem(key, JSON.stringify([...reminded]));
    const who = b.state === "matched" ? `with ${nameOf(b.partner_name, b.partner)}` : "(still finding a partner)";
    notify("Tandem: your session starts soon", `${fmtTimeZ(start)}, ${b.duration_min} min ${who}. The lobby is open.`, "remind-" + b.id);
  }
}

/** startNotifications watches for what the user asked to be told about. */
export function startNotifications() {
  on("session", (e) => {
    if (e.type !== "partner-joined" || !settings().notify_partner_joined || !allowed() || !document.hidden) return;
    notify("Tandem: your partner is here", "Your session partner joined. Say hi!", "joined-" + e.booking);
  });
  setInterval(remind, 20 * 1000);
  remind();
}
