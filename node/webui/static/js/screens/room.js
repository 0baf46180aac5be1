// The session room: the lobby, then focus time with the partner on video.
// Both goals side by side, chat, mute / camera / away, picture-in-picture,
// a big timer that follows the node's clock, chimes on phase changes, the
// rematch offer when the partner is late, leaving early, and the check-in
// at the end.
import { get, post, on, clock, debounce, ApiError } from "../api.js";
import {
  h, showError, messageOf, fmtTime, fmtTimeZ, fmtWhen, fmtCountdown, fmtIn, nameOf, openDialog, toast, MINUTE, shortID,
} from "../dom.js";
import { localMedia, stopStream, MediaLeg, detachBrowser } from "../media.js";
import { awaitMatch, navigate } from "../flow.js";
import { settings } from "../prefs.js";

export const title = "Session";

const MEDIA_PHASES = new Set(["lobby", "focus", "warning", "checkin"]);
const PHASE_NAMES = {
  upcoming: "Coming up", lobby: "Lobby", focus: "Focus", warning: "Last minute", checkin: "Check-in", done: "Done",
};
const OUTCOMES = { done: "Done", partly: "Partly", not: "Not this time" };

export function mount(el, bookingID) {
  const st = {
    snap: null, booking: null, ended: false, built: false, bannerKey: "",
    stream: null, mediaError: null, leg: null, attaching: false, attachTries: 0, retryAt: 0, wasConnected: false,
    micOn: true, camOn: true, away: false, chatShown: 0,
    checkinDismissed: false, rematchOffered: false, rematchDismissed: false, favourite: false,
    phaseTimer: null, unmounted: false,
  };
  const stop = [];
  const partnerStream = new MediaStream();

  const err = h("p", { class: "error", role: "alert", hidden: true });
  const status = h("div", { class: "room-status" }, h("p", {}, "Opening the session…"));
  el.append(status, err);

  // ---- elements of the room, built when the session is first seen ----
  const phaseEl = h("div", { class: "phase", id: "phase", role: "status", "aria-live": "polite" });
  const timerEl = h("div", { class: "timer", id: "timer", role: "timer", "aria-live": "off" });
  const withEl = h("div", { class: "with", id: "with" });
  // How the session is connected (direct, or through whose relay), from
  // the ICE pair the node selected; the full pair is in the tooltip.
  const pathEl = h("div", { class: "path small", id: "conn-path" });
  const chipsEl = h("div", { class: "chips" });
  const banners = h("div", { class: "room-banners", "aria-live": "polite" });

  const partnerVideo = h("video", { id: "partner-video", autoplay: true, playsInline: true });
  const partnerLabel = h("div", { class: "video-label", id: "partner-label" });
  const partnerAvatar = h("div", { class: "avatar", "aria-hidden": "true" });
  const pipBtn = h("button", { type: "button", class: "pip-btn", id: "pip-btn", title: "Picture in picture", onclick: togglePiP }, "Picture in picture");
  const unmuteBtn = h("button", { type: "button", class: "unmute-btn", hidden: true, onclick: unmutePartner }, "Click to hear your partner");
  const partnerBox = h("div", { class: "video partner" }, partnerVideo, partnerAvatar, partnerLabel, pipBtn, unmuteBtn);

  const selfVideo = h("video", { id: "self-video", autoplay: true, playsInline: true, muted: true });
  const selfLabel = h("div", { class: "video-label", id: "self-label" });
  const selfBox = h("div", { class: "video self" }, selfVideo, selfLabel);

  const micBtn = h("button", { type: "button", id: "mic-btn", "aria-pressed": "false", onclick: toggleMic }, "Mute");
  const camBtn = h("button", { type: "button", id: "camera-btn", "aria-pressed": "false", onclick: toggleCam }, "Camera off");
  const awayBtn = h("button", { type: "button", id: "away-btn", "aria-pressed": "false", onclick: toggleAway }, "I'm away");
  const checkinBtn = h("button", { type: "button", id: "checkin-btn", class: "primary", hidden: true, onclick: () => openCheckin(true) }, "Check in");
  const leaveBtn = h("button", { type: "button", id: "leave-btn", class: "danger", onclick: openLeave }, "Leave early");
  const mediaNote = h("p", { class: "muted small", id: "media-note", hidden: true });

  const myGoal = h("textarea", { id: "my-goal", rows: "2", maxlength: "280", placeholder: "What will you get done?" });
  const goalSaved = h("span", { class: "muted small", role: "status" });
  const goalForm = h("form", { class: "goal-form" },
    h("label", { for: "my-goal" }, "Your goal"), myGoal,
    h("div", { class: "row" }, h("button", { type: "submit", id: "save-goal" }, "Save goal"), goalSaved));
  const partnerGoalTitle = h("h3", {}, "Partner's goal");
  const partnerGoal = h("p", { id: "partner-goal", class: "partner-goal" });

  const chatLog = h("ol", { id: "chat-log", class: "chat-log", "aria-live": "polite", "aria-label": "Chat" });
  const chatInput = h("input", { id: "chat-input", maxlength: "1000", autocomplete: "off", placeholder: "Say hi, or share progress", "aria-label": "Chat message" });
  const chatSend = h("button", { type: "submit", id: "chat-send" }, "Send");
  const chatHint = h("p", { class: "muted small", hidden: true });
  const chatErr = h("p", { class: "error small", role: "alert", hidden: true });
  const chatForm = h("form", { class: "chat-form" }, chatInput, chatSend);

  const room = h("section", { class: "room", id: "room", "aria-label": "Session room" },
    h("header", { class: "room-head" }, h("div", {}, phaseEl, withEl, pathEl, chipsEl), timerEl),
    banners,
    h("div", { class: "room-main" },
      h("div", { class: "stage" },
        h("div", { class: "videos" }, partnerBox, selfBox),
        h("div", { class: "controls", role: "toolbar", "aria-label": "Session controls" }, micBtn, camBtn, awayBtn, checkinBtn, leaveBtn),
        mediaNote),
      h("aside", { class: "side" },
        h("div", { class: "goals" },
          h("div", { class: "goal-card self" }, goalForm),
          h("div", { class: "goal-card partner" }, partnerGoalTitle, partnerGoal)),
        h("div", { class: "chat" }, h("h3", {}, "Chat"), chatLog, chatHint, chatErr, chatForm))));

  goalForm.addEventListener("submit", (e) => { e.preventDefault(); saveGoal(); });
  myGoal.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); saveGoal(); }
  });
  myGoal.addEventListener("input", () => { myGoal.dataset.dirty = "1"; goalSaved.textContent = ""; });
  chatForm.addEventListener("submit", (e) => { e.preventDefault(); sendChat(); });

  // ---- loading ----
  async function load() {
    if (st.unmounted || st.ended) return;
    try {
      const sessions = await get("/sessions");
      if (st.unmounted || st.ended) return;
      const snap = sessions.find((s) => s.booking.id === bookingID);
      showError(err, null);
      if (snap) {
        st.snap = snap;
        if (!st.booking) {
          const bookings = await get("/bookings");
          st.booking = bookings.find((b) => b.id === bookingID) || null;
        }
        render();
      } else {
        await notOpen();
      }
    } catch (e) {
      showError(err, e);
    }
  }
  const reload = debounce(load, 60);

  // notOpen: the session is not (or no longer) open on the node.
  async function notOpen() {
    const [bookings, history] = await Promise.all([get("/bookings"), get("/history")]);
    const rec = history.find((r) => r.booking_id === bookingID);
    if (rec) return showEnded(rec);
    const b = bookings.find((x) => x.id === bookingID);
    if (b && b.state === "matched" && Date.parse(b.start) + b.duration_min * MINUTE > clock.nowMs()) {
      status.replaceChildren(h("p", {}, h("span", { class: "spinner", "aria-hidden": "true" }), ` Opening your session with ${nameOf(b.partner_name, b.partner)}…`));
      return;
    }
    if (b && b.state === "searching") {
      status.replaceChildren(h("p", {}, h("span", { class: "spinner", "aria-hidden": "true" }), " Finding a partner… this page opens the session as soon as one is found."));
      awaitMatch(b).catch(() => {});
      return;
    }
    status.replaceChildren(
      h("h1", {}, "No session here"),
      h("p", {}, b && b.state === "cancelled" ? `This booking was cancelled${b.note ? ": " + b.note : ""}.` : "There is no live session for this booking."),
      h("p", {}, h("a", { href: "#/calendar" }, "Back to the calendar")));
  }

  stop.push(on("session", (e) => {
    if (e.booking !== bookingID) return;
    switch (e.type) {
      case "rematch-offered":
        st.rematchOffered = true;
        break;
      case "ended":
        st.ended = true;
        showEnded(e.record);
        return;
    }
    reload();
  }));

  // relayName shortens the peer IDs in "Tandem peer PEER_ID" to their end.
  const relayName = (r) => (r || "").replace(/\b12D3Koo[1-9A-HJ-NP-Za-km-z]+/g, (id) => shortID(id));

  // ---- rendering ----
  function build() {
    st.built = true;
    status.remove();
    el.prepend(room);
    const quiet = st.booking && st.booking.quiet;
    if (quiet) st.micOn = false;
    chipsEl.replaceChildren(...[
      h("span", { class: "chip" }, `${st.snap.booking.duration_min} min`),
      st.booking ? h("span", { class: "chip" }, st.booking.activity) : null,
      quiet ? h("span", { class: "chip quiet" }, "Quiet session: no talking") : null,
    ].filter(Boolean));
    myGoal.value = st.snap.self.goal || "";
    pipBtn.hidden = !document.pictureInPictureEnabled;
  }

  function render() {
    // Answers to requests made before the end may arrive after it.
    if (st.ended || st.unmounted) return;
    const s = st.snap;
    if (!st.built) build();
    const name = nameOf(s.partner.name || s.booking.partner_name, s.booking.partner);
    phaseEl.textContent = PHASE_NAMES[s.phase] || s.phase;
    phaseEl.dataset.phase = s.phase;
    room.dataset.phase = s.phase;
    withEl.textContent = `with ${name}${s.connected ? "" : s.met ? " (reconnecting…)" : ""}`;
    const path = s.connected && s.connect && s.connect.path;
    pathEl.hidden = !path;
    pathEl.dataset.kind = path ? path.kind : "";
    let pathText = !path ? "" : path.kind === "relay" ? `Connected via relay (${relayName(path.relay)})` : "Connected directly";
    if (path && s.connect.audio_only) pathText += " · video paused: too slow for it, audio and chat go on";
    else if (path && s.connect.video_limit_kbps) pathText += ` · your video up to ${s.connect.video_limit_kbps} kbit/s`;
    pathEl.textContent = pathText;
    pathEl.title = path ? `here: ${path.local}; ${name}: ${path.remote}` : "";
    partnerGoalTitle.textContent = `${name}'s goal`;
    partnerGoal.textContent = s.partner.goal || (s.connected ? `${name} has not set a goal yet.` : "");
    partnerGoal.classList.toggle("empty", !s.partner.goal);
    partnerAvatar.textContent = (name.replace(/^peer …/, "").trim()[0] || "?").toUpperCase();
    if (!myGoal.dataset.dirty && document.activeElement !== myGoal) myGoal.value = s.self.goal || "";

    // Partner's presence over their video.
    const label = partnerText(s, name);
    partnerLabel.textContent = label;
    partnerLabel.hidden = !label;
    const showVideo = s.connected && s.partner.media.video && s.partner.presence !== "camera-off" && !s.partner.left;
    partnerBox.classList.toggle("no-video", !showVideo);
    partnerBox.dataset.presence = s.connected ? s.partner.presence : "disconnected";

    renderSelf();
    renderChat(s);
    renderBanners(s, name);
    checkinBtn.hidden = !(s.phase === "checkin" || s.phase === "warning") || !!s.self.check_in;
    leaveBtn.textContent = s.phase === "checkin" ? "Leave" : "Leave early";

    if (MEDIA_PHASES.has(s.phase) && !st.leg && !st.attaching && Date.now() >= st.retryAt) startMedia();
    if (s.phase === "checkin" && !s.self.check_in && !st.checkinDismissed) openCheckin(false);
    schedulePhaseReload(s);
    tickTimer();
  }

  function partnerText(s, name) {
    if (s.partner.left) return `${name} left${s.partner.reason ? ": " + s.partner.reason : ""}`;
    if (!s.connected) {
      if (s.met) return "Partner disconnected: reconnecting…";
      return s.phase === "lobby" || s.phase === "upcoming" ? `Waiting for ${name}…` : `${name} has not arrived yet`;
    }
    if (s.partner.presence === "away") return "Partner away";
    if (s.partner.presence === "camera-off" || !s.partner.media.video) return "No camera";
    return "";
  }

  function renderSelf() {
    const v = st.stream && st.stream.getVideoTracks()[0];
    const a = st.stream && st.stream.getAudioTracks()[0];
    if (a) a.enabled = st.micOn;
    if (v) v.enabled = st.camOn;
    micBtn.disabled = !a;
    camBtn.disabled = !v;
    micBtn.textContent = st.micOn ? "Mute" : "Unmute";
    micBtn.setAttribute("aria-pressed", String(!st.micOn));
    camBtn.textContent = st.camOn ? "Camera off" : "Camera on";
    camBtn.setAttribute("aria-pressed", String(!st.camOn));
    awayBtn.textContent = st.away ? "I'm back" : "I'm away";
    awayBtn.setAttribute("aria-pressed", String(st.away));
    const text = st.away ? "You are away" : !v ? "No camera" : !st.camOn ? "Camera off" : !st.micOn ? "Muted" : "";
    selfLabel.textContent = text;
    selfLabel.hidden = !text;
    selfBox.classList.toggle("no-video", !v || !st.camOn);
  }

  function renderChat(s) {
    const lines = s.chat || [];
    if (lines.length < st.chatShown) {
      chatLog.replaceChildren();
      st.chatShown = 0;
    }
    const name = nameOf(s.partner.name || s.booking.partner_name, s.booking.partner);
    for (const l of lines.slice(st.chatShown)) {
      chatLog.append(h("li", { class: ["chat-line", l.from] },
        h("span", { class: "who" }, l.from === "self" ? "You" : name),
        h("time", { datetime: l.at }, fmtTime(l.at)),
        h("span", { class: "text" }, l.text)));
    }
    if (lines.length > st.chatShown) chatLog.scrollTop = chatLog.scrollHeight;
    st.chatShown = lines.length;
    const can = s.connected && !st.ended;
    chatInput.disabled = !can;
    chatSend.disabled = !can;
    chatHint.hidden = can;
    chatHint.textContent = s.met ? "Chat comes back when your partner reconnects." : "Chat opens when your partner arrives.";
  }

  function renderBanners(s, name) {
    const late = !s.met && !s.connected && !st.rematchDismissed && (st.rematchOffered ||
      ((s.phase === "focus" || s.phase === "warning") && clock.nowMs() - sessionStart(s) >= 2 * MINUTE));
    // Rebuild only when something changed: a rebuilt button loses the
    // keyboard focus.
    const cnc = s.connect && s.connect.state === "could-not-connect" ? s.connect : null;
    const key = `${late}|${s.phase === "upcoming"}|${name}|${!!cnc}`;
    // The could-not-connect report changes as the node tries (its message
    // counts the seconds): it is filled in place, so an opened disclosure
    // stays open.
    if (cnc) fillConnect(cnc, name);
    if (key === st.bannerKey) return;
    st.bannerKey = key;
    banners.replaceChildren();
    if (cnc) banners.append(connectBanner);
    if (late) {
      banners.append(h("div", { class: "banner warn", id: "rematch-banner" },
        h("p", {}, `${name} is late. You can keep waiting, or find someone who is free right now.`),
        h("div", { class: "row" },
          h("button", { type: "button", class: "primary", id: "rematch-btn", onclick: rematch }, "Find a new partner"),
          h("button", { type: "button", onclick: () => { st.rematchDismissed = true; render(); } }, "Keep waiting"))));
    }
    if (s.phase === "upcoming") {
      const opens = sessionStart(s) - 5 * MINUTE;
      banners.append(h("div", { class: "banner" },
        h("p", {}, `The lobby opens at ${fmtTimeZ(opens)}, 5 minutes before the start. `,
          h("a", { href: "#/devices" }, "Test your camera and microphone"), " meanwhile.")));
    }
  }

  // connectBanner says that the node could not reach the partner, in the
  // node's words, with what it tried folded away below (fillConnect).
  const connectMsg = h("p", {});
  const connectFacts = h("dl", { class: "facts small" });
  const connectBanner = h("div", { class: "banner bad", id: "connect-banner", role: "alert" },
    h("div", {}, connectMsg, h("details", {}, h("summary", {}, "What your node tried"), connectFacts)));

  function fillConnect(c, name) {
    const list = (xs) => (xs && xs.length ? xs.join(", ") : "none");
    const fact = (k, v) => [h("dt", {}, k), h("dd", {}, v)];
    connectMsg.replaceChildren(h("strong", {}, `Could not connect to ${name}.`), " ", c.message || "Your node keeps trying.");
    connectFacts.replaceChildren(
      ...fact(`${name}'s node answered`, c.partner_reachable ? "yes (so the video path fails)" : "no"),
      ...fact("Connected to their node now", c.libp2p_connected ? "yes" : "no"),
      ...fact("Video connections tried", String(c.attempts || 0)),
      ...fact("STUN/TURN servers", list(c.ice_servers)),
      ...fact("Addresses here", list(c.local_candidates)),
      ...fact(`Addresses from ${name}`, list(c.remote_candidates)),
      ...(c.ice_state ? fact("Last connection state", c.ice_state) : []),
      ...(c.last_error ? fact("Last error", c.last_error) : []));
  }

  // ---- the timer ----
  // The schedule runs on the session clock (the offerer's); the booked
  // start happens at booking.start minus its offset on this node's clock.
  function sessionStart(s) {
    return Date.parse(s.booking.start) - (s.clock_offset_ms || 0);
  }

  function tickTimer() {
    const s = st.snap;
    if (!s || st.ended) return;
    const now = clock.nowMs();
    const start = sessionStart(s);
    const end = start + s.booking.duration_min * MINUTE;
    let text;
    switch (s.phase) {
      case "upcoming": text = fmtIn(start - 5 * MINUTE - now).replace(/^in /, "opens in "); break;
      case "lobby": text = fmtCountdown(start - now); break;
      case "focus":
      case "warning": text = fmtCountdown(end - now); break;
      case "checkin": text = "0:00"; break;
      default: text = "";
    }
    timerEl.textContent = text;
    timerEl.setAttribute("aria-label", s.phase === "lobby" ? `starts in ${text}` : `${text} left`);
    // The tab's title shows the time too, for a user in another tab.
    if (text) document.title = `${text} · ${PHASE_NAMES[s.phase]} · Tandem`;
  }
  const timerInterval = setInterval(tickTimer, 250);
  stop.push(() => clearInterval(timerInterval));

  // Reload when the schedule says the phase changes, in case an event is
  // missed (the stream drops events for slow readers).
  function schedulePhaseReload(s) {
    clearTimeout(st.phaseTimer);
    if (!s.next_phase_at) return;
    const ms = Date.parse(s.next_phase_at) - clock.nowMs();
    // ms is node time; the node's clock may run faster than the wall's.
    if (ms > 0 && ms < 24 * 60 * MINUTE) st.phaseTimer = setTimeout(reload, ms / clock.rate() + 500);
  }
  stop.push(() => clearTimeout(st.phaseTimer));

  // ---- media ----
  async function startMedia() {
    if (st.ended || st.unmounted) return;
    st.attaching = true;
    try {
      if (!st.stream && !st.mediaError) {
        const { stream, error } = await localMedia();
        if (st.unmounted) return stopStream(stream);
        st.stream = stream;
        st.mediaError = error;
        if (error && !stream) {
          mediaNote.hidden = false;
          mediaNote.textContent = `${messageOf(error)} Your partner sees "no camera"; you can still see and chat with them.`;
        }
        selfVideo.srcObject = stream;
        if (stream) selfVideo.play().catch(() => {});
        renderSelf();
      }
      st.leg = new MediaLeg(bookingID, { onTrack, onState });
      await st.leg.attach(st.stream);
      if (st.unmounted) st.leg.close();
    } catch (e) {
      if (st.leg) st.leg.close();
      st.leg = null;
      if (!st.ended && !st.unmounted) {
        if (!(e instanceof ApiError && e.status === 404)) showError(err, `Could not connect the video: ${messageOf(e)}`);
        retryMedia();
      }
    } finally {
      st.attaching = false;
    }
  }

  // retryMedia tries again after a pause, through a reload: the session
  // may have ended meanwhile (the node closes the browser leg first).
  function retryMedia() {
    st.attachTries++;
    const wait = Math.min(10, st.attachTries) * 1000;
    st.retryAt = Date.now() + wait;
    setTimeout(reload, wait + 50);
  }

  function onTrack(track) {
    for (const t of partnerStream.getTracks()) {
      if (t.kind === track.kind) partnerStream.removeTrack(t);
    }
    partnerStream.addTrack(track);
    if (partnerVideo.srcObject !== partnerStream) partnerVideo.srcObject = partnerStream;
    playPartner();
  }

  function playPartner() {
    partnerVideo.play().catch((e) => {
      if (e.name !== "NotAllowedError") return;
      // No user gesture yet (the page was opened directly): play muted and
      // let the user turn the sound on.
      partnerVideo.muted = true;
      unmuteBtn.hidden = false;
      partnerVideo.play().catch(() => {});
    });
  }

  function unmutePartner() {
    partnerVideo.muted = false;
    unmuteBtn.hidden = true;
    playPartner();
  }

  function onState(state) {
    room.dataset.media = state;
    if (state === "connected") {
      st.attachTries = 0;
      st.wasConnected = true;
      showError(err, null);
    }
    if (state === "failed" && !st.ended && !st.unmounted) {
      if (st.leg) st.leg.close();
      st.leg = null;
      if (!st.wasConnected) return retryMedia();
      // It worked, then broke: most likely the session was opened in
      // another tab, which took the video over. Do not take it back
      // without asking, or two tabs would take turns.
      st.wasConnected = false;
      st.retryAt = Infinity;
      mediaNote.hidden = false;
      mediaNote.replaceChildren("The video connection dropped (is this session open in another tab?). ",
        h("button", { type: "button", id: "reconnect-media", onclick: reconnectMedia }, "Reconnect video"));
    }
  }

  function reconnectMedia() {
    st.retryAt = 0;
    st.attachTries = 0;
    mediaNote.hidden = true;
    reload();
  }

  async function togglePiP() {
    try {
      if (document.pictureInPictureElement) await document.exitPictureInPicture();
      else await partnerVideo.requestPictureInPicture();
    } catch (e) {
      toast(`Picture in picture: ${messageOf(e)}`, "warn");
    }
  }

  // ---- actions ----
  async function act(path, body) {
    return post(`/sessions/${encodeURIComponent(bookingID)}/${path}`, body);
  }

  function presence() {
    return st.away ? "away" : !st.camOn || !(st.stream && st.stream.getVideoTracks()[0]) ? "camera-off" : "here";
  }

  async function sendPresence() {
    try {
      st.snap = await act("presence", { presence: presence() });
      render();
    } catch (e) {
      showError(err, e);
    }
  }

  function toggleMic() {
    st.micOn = !st.micOn;
    renderSelf();
  }

  function toggleCam() {
    st.camOn = !st.camOn;
    renderSelf();
    sendPresence();
  }

  function toggleAway() {
    st.away = !st.away;
    renderSelf();
    sendPresence();
  }

  async function saveGoal() {
    try {
      st.snap = await act("goal", { text: myGoal.value.trim() });
      delete myGoal.dataset.dirty;
      goalSaved.textContent = "Saved: your partner sees it.";
      render();
    } catch (e) {
      goalSaved.textContent = "";
      showError(err, e);
    }
  }

  async function sendChat() {
    const text = chatInput.value.trim();
    if (!text) return;
    chatSend.disabled = true;
    try {
      st.snap = await act("chat", { text });
      chatInput.value = "";
      showError(chatErr, null);
      render();
    } catch (e) {
      showError(chatErr, e);
    } finally {
      chatSend.disabled = !(st.snap && st.snap.connected);
      chatInput.focus();
    }
  }

  async function rematch() {
    try {
      const b = await post(`/sessions/${encodeURIComponent(bookingID)}/rematch`);
      st.ended = true;
      toast("Looking for a new partner…");
      await awaitMatch(b);
      navigate("#/calendar");
    } catch (e) {
      showError(err, e);
    }
  }

  function openLeave() {
    const reason = h("input", { id: "leave-reason", maxlength: "200", autocomplete: "off", placeholder: "e.g. something urgent came up" });
    const errBox = h("p", { class: "error", role: "alert", hidden: true });
    const form = h("form", { method: "dialog" },
      h("p", {}, "Your partner sees that you left, and why."),
      h("label", { class: "field" }, "Reason", reason),
      errBox,
      h("div", { class: "dialog-actions" },
        h("button", { type: "button", onclick: () => dlg.close() }, "Stay"),
        h("button", { type: "submit", class: "danger", id: "leave-confirm" }, "Leave the session")));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      try {
        await act("leave", { reason: reason.value.trim() });
        dlg.close();
        reload();
      } catch (ex) {
        showError(errBox, ex);
      }
    });
    const dlg = openDialog({ title: "Leave this session?", content: form, className: "leave-dialog" });
    dlg.id = "leave-dialog";
  }

  function openCheckin(byUser) {
    if (document.getElementById("checkin-dialog")) return;
    const s = st.snap;
    const name = nameOf(s.partner.name || s.booking.partner_name, s.booking.partner);
    const errBox = h("p", { class: "error", role: "alert", hidden: true });
    const note = h("input", { id: "checkin-note", maxlength: "280", autocomplete: "off", placeholder: "How did it go? (optional)" });
    const favBtn = favouriteButton(s.booking.partner, name);
    const form = h("form", { method: "dialog" },
      s.self.goal ? h("p", {}, "Your goal: ", h("strong", {}, s.self.goal)) : null,
      h("fieldset", { class: "outcomes" }, h("legend", {}, "Did you finish?"),
        ...Object.entries(OUTCOMES).map(([v, l], i) =>
          h("label", { class: "choice big" }, h("input", { type: "radio", name: "outcome", value: v, required: true, checked: i === 0 }), " ", l))),
      h("label", { class: "field" }, "Note", note),
      h("p", {}, favBtn),
      errBox,
      h("div", { class: "dialog-actions" },
        h("button", { type: "button", onclick: () => { st.checkinDismissed = true; dlg.close(); } }, "Later"),
        h("button", { type: "submit", class: "primary", id: "checkin-submit" }, "Check in")));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      try {
        st.snap = await act("checkin", { outcome: form.elements.outcome.value, note: note.value.trim() });
        dlg.close();
        render();
      } catch (ex) {
        if (ex instanceof ApiError && ex.status === 404) { dlg.close(); return reload(); }
        showError(errBox, ex);
      }
    });
    const dlg = openDialog({
      title: s.phase === "checkin" ? "Time's up! How did it go?" : "Check in",
      content: form, className: "checkin-dialog",
    });
    dlg.id = "checkin-dialog";
    if (!byUser) dlg.addEventListener("cancel", () => { st.checkinDismissed = true; });
  }

  function favouriteButton(peerID, name) {
    const btn = h("button", { type: "button", class: "favourite-btn", id: "favourite-partner", "aria-pressed": String(st.favourite) },
      st.favourite ? `★ ${name} is a favourite` : `☆ Favourite ${name}`);
    btn.addEventListener("click", async () => {
      try {
        await post(`/people/${encodeURIComponent(peerID)}`, { action: st.favourite ? "unfavorite" : "favorite" });
        st.favourite = !st.favourite;
        btn.textContent = st.favourite ? `★ ${name} is a favourite` : `☆ Favourite ${name}`;
        btn.setAttribute("aria-pressed", String(st.favourite));
      } catch (e) {
        toast(messageOf(e), "error");
      }
    });
    return btn;
  }

  // ---- the end ----
  async function showEnded(rec) {
    st.ended = true;
    clearTimeout(st.phaseTimer);
    if (st.leg) st.leg.close();
    st.leg = null;
    stopStream(st.stream);
    st.stream = null;
    for (const d of document.querySelectorAll("dialog.checkin-dialog, dialog.leave-dialog")) d.close();
    if (!rec) {
      try {
        rec = (await get("/history")).find((r) => r.booking_id === bookingID);
      } catch {
        rec = null;
      }
    }
    if (st.unmounted) return;
    try {
      const people = await get("/people");
      st.favourite = !!(rec && people.find((p) => p.id === rec.partner && p.favourite));
    } catch {
      // The button still works; it just starts as "Favourite".
    }
    room.remove();
    status.remove();
    document.title = "Session over · Tandem";
    el.prepend(endedView(rec));
  }

  function endedView(rec) {
    if (!rec) {
      return h("section", { class: "ended", id: "ended" },
        h("h1", {}, "The session is over"),
        h("p", {}, "It ended before you and your partner met, so there is nothing to record."),
        h("p", {}, h("a", { class: "button primary", href: "#/calendar" }, "Back to the calendar")));
    }
    const name = nameOf(rec.partner_name, rec.partner);
    const outcome = (c) => (c ? h("span", { class: ["outcome", c.outcome] }, OUTCOMES[c.outcome] || c.outcome, c.note ? ` · ${c.note}` : "") : h("span", { class: "muted" }, "no check-in"));
    let headline = "Session complete";
    if (rec.no_show) headline = `${name} did not come`;
    else if (rec.left_early) headline = "You left early";
    else if (rec.partner_left_early) headline = `${name} left early`;
    return h("section", { class: "ended", id: "ended" },
      h("h1", {}, headline),
      h("p", { class: "muted" }, `${fmtWhen(rec.start)} · ${rec.duration_min} min${rec.met ? ` · with ${name}` : ""}`),
      rec.no_show ? h("p", {}, "They are recorded as a no-show. Sorry about that: try Focus now to find someone who is free.") : null,
      rec.partner_left_early && rec.partner_leave_reason ? h("p", {}, `Their reason: “${rec.partner_leave_reason}”`) : null,
      rec.met ? h("div", { class: "ended-goals" },
        h("div", { class: "goal-card self" }, h("h3", {}, "You"), h("p", {}, rec.goal || h("span", { class: "muted" }, "no goal")), outcome(rec.check_in)),
        h("div", { class: "goal-card partner" }, h("h3", {}, name), h("p", {}, rec.partner_goal || h("span", { class: "muted" }, "no goal")), outcome(rec.partner_check_in))) : null,
      h("div", { class: "row" },
        rec.met ? favouriteButton(rec.partner, name) : null,
        h("a", { class: "button", href: "#/history" }, "History"),
        h("button", { type: "button", id: "focus-again", onclick: focusAgain },
          rec.no_show || rec.partner_left_early ? "Find a new partner now" : "Focus now again"),
        h("a", { class: "button primary", href: "#/calendar" }, "Back to the calendar")));
  }

  // focusAgain books another instant session with the usual settings.
  async function focusAgain(e) {
    e.target.disabled = true;
    try {
      const s = settings();
      const b = await post("/bookings", { kind: "now", duration_min: s.default_duration_min, activity: s.default_activity, quiet: s.default_quiet });
      navigate("#/calendar");
      await awaitMatch(b);
    } catch (ex) {
      toast(messageOf(ex), "error");
      e.target.disabled = false;
    }
  }

  load();
  const poll = setInterval(() => { if (!st.snap && !st.ended) load(); }, 2000);
  stop.push(() => clearInterval(poll));

  return () => {
    st.unmounted = true;
    stop.forEach((fn) => fn());
    if (st.leg) {
      st.leg.close();
      st.leg = null;
      // Tell the node at once (WHIP DELETE), so the partner sees "no
      // camera" now rather than when the connection times out.
      if (!st.ended) {
        get("/sessions")
          .then((list) => list.some((x) => x.booking.id === bookingID) && detachBrowser(bookingID))
          .catch(() => {});
      }
    }
    stopStream(st.stream);
    if (document.pictureInPictureElement === partnerVideo) document.exitPictureInPicture().catch(() => {});
    for (const d of document.querySelectorAll("dialog.checkin-dialog, dialog.leave-dialog")) d.close();
  };
}
