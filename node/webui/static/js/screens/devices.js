// The device test page: check the camera, the microphone and the chimes
// before the first session, and choose which camera and microphone the
// session room uses (kept in this browser).
import { h, showError, messageOf } from "../dom.js";
import { devices } from "../prefs.js";
import { stopStream } from "../media.js";
import { audioContext, playChime } from "../sounds.js";

export const title = "Camera & mic";

export function mount(el) {
  const err = h("p", { class: "error", role: "alert", hidden: true });
  const video = h("video", { id: "device-video", autoplay: true, playsInline: true, muted: true });
  const camSel = h("select", { id: "camera-select" });
  const micSel = h("select", { id: "mic-select" });
  const level = h("div", { class: "level", id: "mic-level" });
  const meter = h("div", { class: "meter", role: "meter", "aria-label": "Microphone level", "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": "0" }, level);
  const meterBtn = h("button", { type: "button", hidden: true }, "Show the microphone level");
  const camStatus = h("p", { class: "small", id: "camera-status", role: "status" });
  el.append(
    h("h1", {}, "Camera and microphone"),
    h("p", { class: "muted" }, "Check that your partner will see and hear you. Nothing leaves this computer on this page."),
    err,
    h("div", { class: "device-grid" },
      h("div", { class: "video self big" }, video),
      h("div", { class: "card" },
        h("label", { class: "field" }, "Camera", camSel),
        camStatus,
        h("label", { class: "field" }, "Microphone", micSel),
        h("p", { class: "small muted" }, "Speak: the bar should move."),
        meter, meterBtn,
        h("h2", {}, "Sound"),
        h("p", { class: "small muted" }, "The chimes you hear at the start, a minute before the end, and at the end:"),
        h("div", { class: "row" },
          h("button", { type: "button", onclick: () => playChime("start", { force: true }) }, "Start"),
          h("button", { type: "button", onclick: () => playChime("warning", { force: true }) }, "One minute left"),
          h("button", { type: "button", onclick: () => playChime("end", { force: true }) }, "End")))));

  let stream = null;
  let raf = 0;
  let source = null;
  let stopped = false;

  async function start() {
    stopStream(stream);
    stream = null;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        video: devices.camera ? { deviceId: { exact: devices.camera } } : true,
        audio: devices.microphone ? { deviceId: { exact: devices.microphone } } : true,
      });
      if (stopped) return stopStream(stream);
      video.srcObject = stream;
      video.play().catch(() => {});
      showError(err, null);
      const v = stream.getVideoTracks()[0];
      camStatus.textContent = v ? `Camera on: ${v.label || "camera"}` : "No camera";
      await fillDevices();
      startMeter();
    } catch (e) {
      showError(err, `${messageOf(e)} Check that no other app uses the camera, and that this site may use it.`);
      camStatus.textContent = "";
    }
  }

  async function fillDevices() {
    const list = await navigator.mediaDevices.enumerateDevices();
    const fill = (sel, kind, chosen) => {
      const items = list.filter((d) => d.kind === kind);
      const active = stream && stream.getTracks().find((t) => t.kind === (kind === "videoinput" ? "video" : "audio"));
      const current = chosen || (active && active.getSettings().deviceId) || "";
      sel.replaceChildren(...items.map((d, i) => h("option", { value: d.deviceId, selected: d.deviceId === current }, d.label || `${kind === "videoinput" ? "Camera" : "Microphone"} ${i + 1}`)));
      if (!items.length) sel.append(h("option", { value: "" }, "none found"));
    };
    fill(camSel, "videoinput", devices.camera);
    fill(micSel, "audioinput", devices.microphone);
  }

  camSel.addEventListener("change", () => { devices.camera = camSel.value; start(); });
  micSel.addEventListener("change", () => { devices.microphone = micSel.value; start(); });

  function startMeter() {
    cancelAnimationFrame(raf);
    if (source) source.disconnect();
    source = null;
    const track = stream && stream.getAudioTracks()[0];
    if (!track) return;
    const ac = audioContext();
    if (!ac) {
      // Browsers make sound (and analyse it) only after a click.
      meterBtn.hidden = false;
      return;
    }
    meterBtn.hidden = true;
    source = ac.createMediaStreamSource(stream);
    const an = ac.createAnalyser();
    an.fftSize = 512;
    source.connect(an);
    const buf = new Uint8Array(an.fftSize);
    const draw = () => {
      an.getByteTimeDomainData(buf);
      let peak = 0;
      for (const b of buf) peak = Math.max(peak, Math.abs(b - 128));
      const pct = Math.min(100, Math.round((peak / 128) * 140));
      level.style.width = `${pct}%`;
      meter.setAttribute("aria-valuenow", String(pct));
      raf = requestAnimationFrame(draw);
    };
    draw();
  }
  meterBtn.addEventListener("click", startMeter);

  if (!navigator.mediaDevices) {
    showError(err, "This browser cannot use a camera here.");
  } else {
    start();
  }
  return () => {
    stopped = true;
    cancelAnimationFrame(raf);
    if (source) source.disconnect();
    stopStream(stream);
  };
}
