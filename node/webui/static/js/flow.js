// The path from "Focus now" (or a rematch) to the session room: the UI
// remembers which searching bookings the user is waiting on, and opens the
// room as soon as one is matched and the partner has acknowledged it (until
// then the answer can still be "no such match", and the booking searches on).
import { get, on } from "./api.js";
import { toast } from "./dom.js";

const key = "tandem.awaiting";
const awaiting = new Set(JSON.parse(sessionStorage.getItem(key) || "[]"));
const save = () => sessionStorage.setItem(key, JSON.stringify([...awaiting]));

/** navigate shows another screen. */
export function navigate(hash) {
  if (location.hash !== hash) location.hash = hash;
}

/** roomURL is the address of a booking's session room. */
export const roomURL = (bookingID) => "#/session/" + encodeURIComponent(bookingID);

function settle(b) {
  if (!awaiting.has(b.id)) return;
  if (b.state === "matched" && b.confirmed) {
    awaiting.delete(b.id);
    save();
    navigate(roomURL(b.id));
  } else if (b.state === "cancelled" || b.state === "done") {
    awaiting.delete(b.id);
    save();
    toast(b.note ? `No partner found: ${b.note}` : "The search for a partner ended.", "warn");
  }
}

on("booking", settle);

/**
 * awaitMatch opens the room of booking b once it is matched and
 * confirmed. It checks again after registering: the match may have come
 * before the answer.
 */
export async function awaitMatch(b) {
  awaiting.add(b.id);
  save();
  settle(b);
  await recheck();
}

/** isAwaiting reports whether the UI waits on booking id. */
export const isAwaiting = (id) => awaiting.has(id);

/** recheck settles the awaited bookings from the node's current list. */
export async function recheck() {
  if (awaiting.size === 0) return;
  const bookings = await get("/bookings");
  const known = new Set(bookings.map((b) => b.id));
  for (const id of [...awaiting]) {
    if (!known.has(id)) awaiting.delete(id);
  }
  save();
  bookings.forEach(settle);
}
