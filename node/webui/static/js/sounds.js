// Chimes through Web Audio, synthesised (no audio files): a rising chime
// when focus starts, a soft double tap one minute before the end, and a
// falling chime at the end. Browsers only let a page make sound after the
// user has interacted with it, so the AudioContext is made on the first
// click or key press.
import { settings } from "./prefs.js";

let ctx = null;

function unlock() {
  if (!ctx) ctx = new AudioContext();
  if (ctx.state === "suspended") ctx.resume().catch(() => {});
}

for (const type of ["pointerdown", "keydown"]) {
  document.addEventListener(type, unlock, { capture: true, passive: true });
}

/** audioContext returns the page's AudioContext once the user has interacted. */
export function audioContext() {
  if (!ctx && navigator.userActivation && navigator.userActivation.hasBeenActive) unlock();
  return ctx;
}

// bell plays one bell-like note: a sine with a quieter octave partial.
function bell(ac, freq, at, dur, gain) {
  for (const [mult, g] of [[1, gain], [2, gain * 0.25], [3, gain * 0.08]]) {
    const osc = ac.createOscillator();
    const env = ac.createGain();
    osc.type = "sine";
    osc.frequency.value = freq * mult;
    env.gain.setValueAtTime(0.0001, at);
    env.gain.exponentialRampToValueAtTime(g, at + 0.015);
    env.gain.exponentialRampToValueAtTime(0.0001, at + dur);
    osc.connect(env).connect(ac.destination);
    osc.start(at);
    osc.stop(at + dur + 0.05);
  }
}

const C5 = 523.25, E5 = 659.25, G5 = 783.99, A4 = 440;

const patterns = {
  start: [[C5, 0], [E5, 0.16], [G5, 0.32]],
  warning: [[A4, 0], [A4, 0.22]],
  end: [[G5, 0], [E5, 0.16], [C5, 0.32]],
};

/**
 * playChime plays "start", "warning" or "end", unless sounds are off in
 * the settings (force plays anyway: the test buttons).
 */
export function playChime(kind, { force = false } = {}) {
  if (!force && !settings().sounds) return false;
  const ac = audioContext();
  if (!ac || !patterns[kind]) return false;
  const t = ac.currentTime + 0.02;
  const soft = kind === "warning";
  for (const [freq, dt] of patterns[kind]) bell(ac, freq, t + dt, soft ? 0.5 : 1.4, soft ? 0.06 : 0.18);
  // What played, for the browser tests (and a curious user in DevTools).
  const root = document.documentElement.dataset;
  root.lastChime = kind;
  root.chimes = root.chimes ? `${root.chimes} ${kind}` : kind;
  return true;
}
