// The node's local API: JSON requests, the server-sent event stream and the
// node's clock. Every screen talks to the node through this module only.

/** An API call that failed, with a message a person can read. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
}

const unauthorizedHandlers = new Set();

/** onUnauthorized registers fn to run when the node answers 401. */
export function onUnauthorized(fn) {
  unauthorizedHandlers.add(fn);
}

const unreachable = "Cannot reach your Tandem node. Is `tandem up` still running?";

// ---- is the node there? ----
// A request that cannot reach the node (connection refused: the node
// stopped) marks it down; a probe then asks for /status until it answers,
// and the page carries on without a reload. The token survives a node
// restart, so the login cookie still works when it is back.

const nodeListeners = new Set();
let nodeUp = true;
let probing = false;

/** onNodeStatus subscribes fn(up) to the node going away and coming back. */
export function onNodeStatus(fn) {
  nodeListeners.add(fn);
  return () => nodeListeners.delete(fn);
}

/** isNodeUp reports whether the last request reached the node. */
export const isNodeUp = () => nodeUp;

function setNodeUp(up) {
  if (up === nodeUp) return;
  nodeUp = up;
  for (const fn of nodeListeners) {
    try {
      fn(up);
    } catch (e) {
      reportError(e);
    }
  }
}

const pause = (ms) => new Promise((r) => setTimeout(r, ms));

function unauthorized() {
  for (const fn of unauthorizedHandlers) fn();
}

// nodeLost marks the node down and probes until it is back.
async function nodeLost() {
  setNodeUp(false);
  if (probing) return;
  probing = true;
  try {
    for (let delay = 400; ; delay = Math.min(delay * 1.5, 3000)) {
      await pause(delay);
      let res;
      try {
        res = await fetch("/api/v1/status", { credentials: "same-origin" });
      } catch {
        continue;
      }
      if (res.status === 401) return unauthorized(); // the token was rotated
      if (res.ok) break;
    }
  } finally {
    probing = false;
  }
  if (wantEvents) connectEvents();
  setNodeUp(true);
}

async function send(path, { method = "GET", json, sdp } = {}) {
  const init = { method, credentials: "same-origin", headers: {} };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (sdp !== undefined) {
    init.headers["Content-Type"] = "application/sdp";
    init.body = sdp;
  }
  let res;
  try {
    res = await fetch("/api/v1" + path, init);
  } catch {
    nodeLost();
    throw new ApiError(0, unreachable);
  }
  if (res.status === 401) {
    unauthorized();
    throw new ApiError(401, "You are not logged in: open the link printed by tandem up.");
  }
  if (!res.ok) {
    let msg = res.statusText || `error ${res.status}`;
    try {
      const body = await res.json();
      if (body && typeof body.error === "string") msg = body.error;
    } catch {
      // Not JSON (e.g. a proxy's page): keep the status text.
    }
    throw new ApiError(res.status, readable(msg));
  }
  return res;
}

// readable turns the node's Go-style errors into a sentence.
function readable(msg) {
  msg = msg.replace(/^(invalid request|conflict|not found): /, "");
  return msg.charAt(0).toUpperCase() + msg.slice(1);
}

/** api calls GET (or another method with a JSON body) and returns the decoded JSON. */
export async function api(path, opts = {}) {
  const res = await send(path, opts);
  if (res.status === 204) return null;
  return res.json();
}

/** get, post, put are shorthands for api. */
export const get = (path) => api(path);
export const post = (path, json = {}) => api(path, { method: "POST", json });
export const put = (path, json) => api(path, { method: "PUT", json });

/** postSDP posts an SDP offer and returns the SDP answer (WHIP-style). */
export async function postSDP(path, sdp) {
  const res = await send(path, { method: "POST", sdp });
  return res.text();
}

/** del sends DELETE. */
export async function del(path) {
  await send(path, { method: "DELETE" });
}

// ---- server-sent events ----

const listeners = new Map(); // event type -> Set of fns
const statusListeners = new Set();
let source = null;

const eventTypes = ["peer-connected", "peer-disconnected", "booking", "board", "session", "clock", "circles", "identity"];

/**
 * on subscribes fn(data) to one event type of the node's stream ("booking",
 * "board", "session", "clock", "identity", "peer-connected", "peer-disconnected"). It returns the
 * function that unsubscribes.
 */
export function on(type, fn) {
  if (!listeners.has(type)) listeners.set(type, new Set());
  listeners.get(type).add(fn);
  return () => listeners.get(type).delete(fn);
}

/** onStreamStatus subscribes fn(connected) to the event stream's state. */
export function onStreamStatus(fn) {
  statusListeners.add(fn);
  return () => statusListeners.delete(fn);
}

let wantEvents = false;

/** openEvents connects to the node's event stream (once logged in). */
export function openEvents() {
  wantEvents = true;
  if (!source) connectEvents();
}

function connectEvents() {
  if (source) source.close();
  const es = new EventSource("/api/v1/events");
  source = es;
  es.onopen = () => statusListeners.forEach((fn) => fn(true));
  es.onerror = () => {
    if (source !== es) return;
    statusListeners.forEach((fn) => fn(false));
    // The browser's own retry gives up on some answers (a 401, a 5xx) and
    // waits its own time on others: the page reconnects by itself instead.
    es.close();
    source = null;
    streamLost();
  };
  for (const type of eventTypes) {
    es.addEventListener(type, (ev) => {
      let data = null;
      try {
        data = JSON.parse(ev.data);
      } catch {
        return;
      }
      for (const fn of listeners.get(type) || []) {
        try {
          fn(data);
        } catch (e) {
          reportError(e);
        }
      }
    });
  }
}

// streamLost finds out why the event stream dropped: the node is gone
// (probe until it is back), the token changed (log in), or a hiccup
// (reconnect).
async function streamLost() {
  let res;
  try {
    res = await fetch("/api/v1/status", { credentials: "same-origin" });
  } catch {
    return nodeLost();
  }
  if (res.status === 401) return unauthorized();
  if (!res.ok) return nodeLost();
  await pause(500);
  if (wantEvents && !source && nodeUp) connectEvents();
}

// ---- the node's clock ----

// Countdowns follow the node's clock, which a test or `tandem demo --short`
// may run ahead of (and faster than) the browser's: the node reports its
// time and rate in /status, and the UI extrapolates from the last report.
let base = { local: Date.now(), node: Date.now(), rate: 1 };

export const clock = {
  /** nowMs is the node's time in milliseconds since the epoch. */
  nowMs: () => base.node + (Date.now() - base.local) * base.rate,
  /** now is the node's time, as a Date. */
  now: () => new Date(clock.nowMs()),
  /** rate is how fast the node's clock runs against real time. */
  rate: () => base.rate,
  /** set takes the node's time from a /status answer fetched between t0 and t1. */
  set(status, t0, t1) {
    base = { local: (t0 + t1) / 2, node: Date.parse(status.now), rate: status.clock_rate || 1 };
  },
  /** sync asks the node for its time; it returns the status. */
  async sync() {
    const t0 = Date.now();
    const st = await get("/status");
    clock.set(st, t0, Date.now());
    return st;
  },
};

/** debounce runs fn at most once per ms, after the last call. */
export function debounce(fn, ms = 120) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}
