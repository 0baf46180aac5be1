// The user's UI settings, kept by the node (GET/PUT /api/v1/settings) and
// cached here for the modules that read them often (sounds, booking).
import { get, put } from "./api.js";

const defaults = {
  default_duration_min: 50,
  default_activity: "anything",
  default_quiet: false,
  default_scope: "anyone",
  default_open_after_min: 10,
  sounds: true,
  notify_reminder: false,
  remind_before_min: 5,
  notify_partner_joined: false,
  notify_match: false,
  auto_rematch: false,
};

let current = { ...defaults };

/** loadSettings fetches the settings from the node. */
export async function loadSettings() {
  current = { ...defaults, ...(await get("/settings")) };
  return current;
}

/** settings returns the last loaded settings. */
export const settings = () => current;

/** saveSettings stores s on the node and returns what the node kept. */
export async function saveSettings(s) {
  current = { ...defaults, ...(await put("/settings", s)) };
  return current;
}

// Device choices are per browser, not per node: they live in localStorage.
export const devices = {
  get camera() { return localStorage.getItem("tandem.camera") || ""; },
  set camera(id) { localStorage.setItem("tandem.camera", id); },
  get microphone() { return localStorage.getItem("tandem.microphone") || ""; },
  set microphone(id) { localStorage.setItem("tandem.microphone", id); },
};
