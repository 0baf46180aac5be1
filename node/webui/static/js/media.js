// Camera, microphone and the WebRTC leg to the user's own node.
//
// The browser never talks to the partner directly: it sends its camera and
// microphone to its own node over WebRTC on loopback, and the node relays
// them to the partner's node (and the partner's back). The leg is set up
// WHIP-style: POST the complete SDP offer to /sessions/{id}/media, get the
// complete answer back. No trickle ICE: on loopback, gathering takes
// milliseconds, so we wait for it to finish before posting.
import { postSDP, del } from "./api.js";
import { devices } from "./prefs.js";

/**
 * localMedia asks for the camera and microphone chosen on the device test
 * page (or the defaults). It falls back to just one of them, and returns
 * null when neither is available; the error says why.
 */
export async function localMedia() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    return { stream: null, error: new Error("This browser cannot use a camera here.") };
  }
  const video = devices.camera ? { deviceId: { ideal: devices.camera } } : true;
  const audio = devices.microphone ? { deviceId: { ideal: devices.microphone } } : true;
  let firstError = null;
  for (const c of [{ video, audio }, { audio }, { video }]) {
    try {
      return { stream: await navigator.mediaDevices.getUserMedia(c), error: null };
    } catch (e) {
      firstError = firstError || e;
    }
  }
  return { stream: null, error: firstError };
}

/** stopStream stops every track of stream. */
export function stopStream(stream) {
  if (stream) stream.getTracks().forEach((t) => t.stop());
}

function gatheringComplete(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => pc.iceGatheringState === "complete" && done();
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener("icegatheringstatechange", check);
  });
}

/**
 * MediaLeg is the browser's WebRTC connection to its node for one session.
 * onTrack(track) gets the partner's audio and video tracks; onState(state)
 * the connection state.
 */
export class MediaLeg {
  constructor(bookingID, { onTrack, onState }) {
    this.bookingID = bookingID;
    this.onTrack = onTrack;
    this.onState = onState;
    this.pc = null;
  }

  /** attach sends stream (or nothing, when null) and receives the partner's. */
  async attach(stream) {
    this.close();
    const pc = new RTCPeerConnection();
    this.pc = pc;
    // sendrecv for what we have, recvonly for the rest: the node then
    // tells the partner whether we have a camera.
    for (const kind of ["audio", "video"]) {
      const track = stream && stream.getTracks().find((t) => t.kind === kind);
      if (track) pc.addTransceiver(track, { direction: "sendrecv", streams: [stream] });
      else pc.addTransceiver(kind, { direction: "recvonly" });
    }
    pc.addEventListener("track", (e) => this.onTrack(e.track));
    pc.addEventListener("connectionstatechange", () => {
      if (this.pc === pc) this.onState(pc.connectionState);
    });
    await pc.setLocalDescription(await pc.createOffer());
    await gatheringComplete(pc, 3000);
    if (this.pc !== pc) return; // closed meanwhile
    const answer = await postSDP(`/sessions/${encodeURIComponent(this.bookingID)}/media`, pc.localDescription.sdp);
    if (this.pc !== pc) return;
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
  }

  /** close ends the connection (the node notices and tells the partner). */
  close() {
    if (this.pc) {
      this.pc.close();
      this.pc = null;
    }
  }
}

/** detachBrowser tells the node at once that the browser left (WHIP DELETE). */
export function detachBrowser(bookingID) {
  return del(`/sessions/${encodeURIComponent(bookingID)}/media`);
}
