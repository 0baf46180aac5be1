// Small DOM and formatting helpers shared by the screens.

/**
 * h builds an element: h("button", {class: "primary", onclick: fn}, "Save").
 * Attributes starting with "on" become event listeners; "dataset" and
 * "style" take objects; false/null attributes and children are skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const svg = tag.startsWith("svg:");
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith("on") && typeof v === "function") {
      el.addEventListener(k.slice(2), v);
    } else if (k === "dataset") {
      Object.assign(el.dataset, v);
    } else if (k === "style") {
      Object.assign(el.style, v);
    } else if (k === "class") {
      el.setAttribute("class", Array.isArray(v) ? v.filter(Boolean).join(" ") : v);
    } else if (!svg && k in el && typeof v !== "string") {
      el[k] = v; // properties such as checked, value, disabled
    } else {
      el.setAttribute(k, v === true ? "" : String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

/** $ finds one element under root. */
export const $ = (sel, root = document) => root.querySelector(sel);

/** errorBox is a readable error message, announced to screen readers. */
export function errorBox(err) {
  return h("p", { class: "error", role: "alert" }, messageOf(err));
}

/** messageOf turns anything thrown into a sentence. */
export function messageOf(err) {
  if (!err) return "";
  if (typeof err === "string") return err;
  if (err.name === "NotAllowedError") return "The browser was not allowed to use the camera or microphone.";
  if (err.name === "NotFoundError") return "No camera or microphone was found.";
  return err.message || String(err);
}

/** showError puts err into the element (or clears it when err is empty). */
export function showError(el, err) {
  el.replaceChildren(err ? messageOf(err) : "");
  el.hidden = !err;
}

/**
 * keepFocus runs paint, which may rebuild the children of container, and
 * puts the keyboard focus back on the rebuilt copy of the element that had
 * it: the same tag with the same text, inside the element with the same
 * data-id. Without it every repaint (each event, every 30 s) would drop
 * the focus of a keyboard user to the page.
 */
export function keepFocus(container, paint) {
  const f = document.activeElement;
  const item = f && f !== container && container.contains(f) ? f.closest("[data-id]") : null;
  paint();
  if (!item || f.isConnected) return;
  for (const el of container.querySelectorAll(`[data-id="${CSS.escape(item.dataset.id)}"]`)) {
    const match = [el, ...el.querySelectorAll(f.tagName)].find((c) => c.tagName === f.tagName && c.textContent === f.textContent);
    if (match) return match.focus();
  }
}

// ---- time ----

export const MINUTE = 60 * 1000;

const timeFmt = new Intl.DateTimeFormat([], { hour: "2-digit", minute: "2-digit" });
const dayFmt = new Intl.DateTimeFormat([], { weekday: "short", day: "numeric", month: "short" });
const longDayFmt = new Intl.DateTimeFormat([], { weekday: "long", day: "numeric", month: "long" });

const hourFmt = new Intl.DateTimeFormat([], { hour: "numeric" });
const weekdayFmt = new Intl.DateTimeFormat([], { weekday: "short" });
const dateFmt = new Intl.DateTimeFormat([], { day: "numeric", month: "short" });

export const fmtTime = (d) => timeFmt.format(new Date(d));
export const fmtHour = (d) => hourFmt.format(new Date(d));
export const fmtWeekday = (d) => weekdayFmt.format(new Date(d));
export const fmtDate = (d) => dateFmt.format(new Date(d));
export const fmtDay = (d) => dayFmt.format(new Date(d));
export const fmtLongDay = (d) => longDayFmt.format(new Date(d));
// Times carry their zone wherever one stands alone (partners may live in
// another one, and a laptop may travel): "Thu 3 Dec, 14:00 CET".
const zoneFmt = new Intl.DateTimeFormat([], { timeZoneName: "short" });
/** zoneName is the browser's time zone, e.g. "Europe/Berlin". */
export const zoneName = () => Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";
/** fmtZone is the zone's short name at d, e.g. "CET" or "GMT+1". */
export const fmtZone = (d) => (zoneFmt.formatToParts(new Date(d)).find((p) => p.type === "timeZoneName") || {}).value || "";
/** fmtTimeZ is fmtTime with the zone: "14:00 CET". */
export const fmtTimeZ = (d) => `${fmtTime(d)} ${fmtZone(d)}`;
export const fmtWhen = (d) => `${fmtDay(d)}, ${fmtTimeZ(d)}`;

/** fmtCountdown shows ms as m:ss, or h:mm:ss. */
export function fmtCountdown(ms) {
  const s = Math.max(0, Math.ceil(ms / 1000));
  const hh = Math.floor(s / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return hh > 0 ? `${hh}:${String(mm).padStart(2, "0")}:${ss}` : `${mm}:${ss}`;
}

/** fmtIn says how far away a time is: "in 12 min", "in 3 h". */
export function fmtIn(ms) {
  if (ms < MINUTE) return "now";
  if (ms < 90 * MINUTE) return `in ${Math.round(ms / MINUTE)} min`;
  return `in ${Math.round(ms / (60 * MINUTE))} h`;
}

/** startOfDay is local midnight of d. */
export function startOfDay(d) {
  const x = new Date(d);
  x.setHours(0, 0, 0, 0);
  return x;
}

/** addDays adds whole local days. */
export function addDays(d, n) {
  const x = new Date(d);
  x.setDate(x.getDate() + n);
  return x;
}

/** weekStart is local Monday 00:00 of d's week (as the node counts weeks). */
export function weekStart(d) {
  const x = startOfDay(d);
  return addDays(x, -((x.getDay() + 6) % 7));
}

// ---- people ----

/** shortID shows the end of a peer ID, which is what differs. */
export const shortID = (id) => (id ? "…" + id.slice(-6) : "");

/** nameOf is a display name, or the short peer ID when there is none. */
export const nameOf = (name, id) => name || `peer ${shortID(id)}`;

// ---- dialogs ----

/**
 * openDialog shows a modal <dialog> with the given content and returns it.
 * The dialog is removed from the page when it closes; Escape closes it.
 */
export function openDialog({ title, label, content, className }) {
  const heading = h("h2", { id: "dlg-title-" + Math.random().toString(36).slice(2) }, title);
  const dlg = h("dialog", { class: ["dialog", className], "aria-labelledby": heading.id },
    heading, content);
  if (label) dlg.setAttribute("aria-label", label);
  dlg.addEventListener("close", () => dlg.remove());
  document.body.append(dlg);
  dlg.showModal();
  return dlg;
}

/** announce reads a short message to screen readers (and shows it briefly). */
export function toast(text, kind = "info") {
  let box = $("#toasts");
  if (!box) {
    box = h("div", { id: "toasts", class: "toasts", role: "status", "aria-live": "polite" });
    document.body.append(box);
  }
  const t = h("div", { class: ["toast", kind] }, text);
  box.append(t);
  setTimeout(() => t.remove(), 5000);
}
