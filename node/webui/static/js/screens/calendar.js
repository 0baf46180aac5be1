// Calendar (home): this week on the quarter-hour grid, from today, in the
// browser's time zone. It shows the user's bookings, how many peers have an
// open offer in each slot, the "Focus now" button, and the booking and
// cancel dialogs. With no peer connected and nobody's offers on the board
// (a first run) it explains why, and what to do, above the grid.
import { get, post, on, onStreamStatus, clock, debounce } from "../api.js";
import {
  h, $, showError, fmtTime, fmtTimeZ, fmtZone, zoneName, fmtHour, fmtWeekday, fmtDate, fmtLongDay, fmtDay, fmtWhen, fmtIn, startOfDay, addDays,
  nameOf, openDialog, MINUTE, toast, keepFocus,
} from "../dom.js";
import { settings } from "../prefs.js";
import { awaitMatch, isAwaiting, roomURL } from "../flow.js";

export const title = "Calendar";

// compatible mirrors the matcher's rule (matchmaking's compatible): same
// length, same quiet choice, and activities that agree ("anything" goes
// with both).
const compatibleActivity = (a, b) => a === "anything" || b === "anything" || a === b;
const compatible = (o, want) => o.duration_min === want.duration && o.quiet === want.quiet && compatibleActivity(o.activity, want.activity);
const describeOffer = (o) => `${o.duration_min} min · ${o.activity}${o.quiet ? " · quiet" : ""}`;
const zoneLabel = () => {
  const abbr = fmtZone(clock.nowMs());
  return abbr && abbr !== zoneName() ? `${zoneName()} (${abbr})` : zoneName();
};
const listNames = (names) => (names.length <= 1 ? names.join("") : `${names.slice(0, -1).join(", ")} and ${names[names.length - 1]}`);

const DAYS = 7;
const SLOTS_PER_DAY = 96;
const LIVE = new Set(["searching", "matched"]);

// partnerText says who a booking is with. A match the partner has not
// acknowledged yet reads "confirming": the node that proposed counts
// itself matched from its own write, and the partner's answer can still
// be "no such match" (it took another's first), as the notices know
// (notify.js noticeState).
const partnerText = (b) => {
  if (b.state === "matched" && !b.confirmed) return `confirming with ${nameOf(b.partner_name, b.partner)}…`;
  if (b.state === "matched" || b.state === "done") return `with ${nameOf(b.partner_name, b.partner)}`;
  return "finding a partner";
};
const ROOM_PHASES = new Set(["lobby", "focus", "warning", "checkin"]);

export function mount(el) {
  const st = { bookings: [], offers: [], sessions: [], people: [], over: new Map(), days: [], selectedDay: 0, scrolled: false, alone: "" };
  const stop = [];

  // ---- layout ----
  const err = h("p", { class: "error", role: "alert", hidden: true });
  const nowBtn = h("button", { class: "primary big", id: "focus-now", type: "button", onclick: focusNow }, "Focus now");
  const nowInfo = h("p", { class: "muted small", id: "focus-now-info" });
  const searching = h("div", { class: "searching", id: "searching", "aria-live": "polite" });
  const empty = h("section", { class: "empty-state", id: "empty-state", "aria-labelledby": "empty-title", hidden: true });
  const upcoming = h("ul", { class: "upcoming-list", id: "upcoming-list" });
  const dayHeads = h("div", { class: "cal-header" }, h("div", { class: "cal-corner" }));
  const body = h("div", { class: "cal-body", role: "group", "aria-label": "Quarter-hour slots this week. Arrow keys move, Enter books." });
  const scroller = h("div", { class: "cal-scroll", id: "cal-scroll" }, body);

  el.append(
    h("div", { class: "cal-top" },
      h("div", {},
        h("h1", {}, "Your week"),
        h("p", { class: "muted" }, "Pick a quarter-hour to book a session with a partner, or start one right now."),
        h("p", { class: "muted small", id: "time-zone" }, `Times are in your time zone, ${zoneLabel()}.`)),
      h("div", { class: "focus-now-box" }, nowBtn, nowInfo)),
    err,
    searching,
    empty,
    h("div", { class: "cal-layout" },
      h("section", { class: "cal", "aria-label": "Week calendar" }, dayHeads, scroller),
      h("aside", { class: "upcoming" },
        h("h2", {}, "Upcoming"),
        upcoming,
        h("ul", { class: "muted small legend", "aria-label": "Legend" },
          h("li", {}, h("span", { class: "swatch swatch-matched" }), " your session, matched"),
          h("li", {}, h("span", { class: "swatch swatch-searching" }), " your booking, finding a partner"),
          h("li", {}, h("span", { class: "badge" }, "2"), " people with an open slot: book it to join them")))),
  );

  // ---- the grid (built once; data is painted onto it) ----
  const day0 = startOfDay(clock.now());
  for (let d = 0; d < DAYS; d++) st.days.push(addDays(day0, d));

  st.days.forEach((day, d) => {
    dayHeads.append(h("button", {
      type: "button", class: "day-head", dataset: { day: d }, "aria-pressed": d === 0 ? "true" : "false",
      "aria-label": fmtLongDay(day), onclick: () => selectDay(d),
    }, h("span", { class: "day-name" }, d === 0 ? "Today" : d === 1 ? "Tomorrow" : fmtWeekday(day)),
    h("span", { class: "day-date" }, fmtDate(day))));
  });
  const times = h("div", { class: "cal-times", "aria-hidden": "true" });
  for (let hr = 0; hr < 24; hr++) {
    times.append(h("div", { class: "hour-label" }, fmtHour(new Date(2000, 0, 1, hr))));
  }
  body.append(times);
  const slotEls = []; // [day][index] -> button
  st.days.forEach((day, d) => {
    const col = h("div", { class: ["cal-day", d === 0 && "selected"], dataset: { day: d }, role: "group", "aria-label": fmtLongDay(day) });
    const row = [];
    for (let i = 0; i < SLOTS_PER_DAY; i++) {
      const start = new Date(day);
      start.setMinutes(i * 15);
      const slot = h("button", {
        type: "button", class: ["slot", i % 4 === 0 && "hour"], tabindex: "-1",
        dataset: { start: start.toISOString(), day: d, index: i },
      }, h("span", { class: "slot-time" }, fmtTime(start)), h("span", { class: "offers" }));
      row.push(slot);
      col.append(slot);
    }
    slotEls.push(row);
    body.append(col);
  });
  const nowLine = h("div", { class: "now-line", "aria-hidden": "true" });

  body.addEventListener("click", (e) => {
    const b = e.target.closest(".booking-block");
    if (b) return openBookingDetails(b.dataset.id);
    const slot = e.target.closest(".slot");
    if (slot) openBookDialog(slot);
  });
  body.addEventListener("keydown", onGridKey);
  body.addEventListener("focusin", (e) => {
    if (e.target.classList.contains("slot")) rove(e.target);
  });

  function rove(slot) {
    for (const s of body.querySelectorAll(".slot[tabindex='0']")) s.tabIndex = -1;
    slot.tabIndex = 0;
  }

  function onGridKey(e) {
    const slot = e.target.closest(".slot");
    if (!slot) return;
    let d = Number(slot.dataset.day);
    let i = Number(slot.dataset.index);
    switch (e.key) {
      case "ArrowUp": i--; break;
      case "ArrowDown": i++; break;
      case "ArrowLeft": d--; break;
      case "ArrowRight": d++; break;
      case "PageUp": i -= 4; break;
      case "PageDown": i += 4; break;
      case "Home": i = 0; break;
      case "End": i = SLOTS_PER_DAY - 1; break;
      default: return;
    }
    e.preventDefault();
    d = Math.max(0, Math.min(DAYS - 1, d));
    i = Math.max(0, Math.min(SLOTS_PER_DAY - 1, i));
    if (d !== Number(slot.dataset.day)) selectDay(d);
    const next = slotEls[d][i];
    rove(next);
    next.focus();
  }

  function selectDay(d) {
    st.selectedDay = d;
    for (const c of body.querySelectorAll(".cal-day")) c.classList.toggle("selected", Number(c.dataset.day) === d);
    for (const b of dayHeads.querySelectorAll(".day-head")) b.setAttribute("aria-pressed", String(Number(b.dataset.day) === d));
  }

  // ---- data ----
  async function load() {
    try {
      const from = st.days[0];
      const to = addDays(st.days[0], DAYS);
      const q = `?from=${encodeURIComponent(from.toISOString())}&to=${encodeURIComponent(to.toISOString())}`;
      const [bookings, offers, nowOffers, sessions, people, history, status] = await Promise.all([
        get("/bookings"), get("/slots" + q), get("/slots"), get("/sessions"), get("/people"), get("/history"), get("/status"),
      ]);
      // A booking whose session is over (someone left early, or both
      // checked in) stays "matched" until its end: the history knows.
      st.over = new Map(history.map((r) => [r.booking_id, r]));
      st.bookings = bookings;
      st.offers = offers.filter((o) => o.kind === "scheduled");
      st.nowOffers = nowOffers.filter((o) => o.kind === "now");
      st.sessions = sessions;
      st.people = people;
      showError(err, null);
      paint();
      // Alone: no peer and nobody's offers (the demo always has peers).
      const alone = status.connected_peers === 0 && !status.demo && offers.length === 0 && nowOffers.length === 0;
      await paintEmpty(alone);
    } catch (e) {
      showError(err, e);
    }
  }
  const reload = debounce(load, 150);
  for (const t of ["booking", "board", "session", "peer-connected", "peer-disconnected"]) stop.push(on(t, reload));
  // Events sent while the event stream was not connected (it opens after
  // the first load, or reconnects) are lost: catch up when it comes up.
  stop.push(onStreamStatus((up) => up && reload()));
  // Repaint (past slots, the now line) every 30 s of the node's clock.
  const tick = setInterval(paint, Math.max(1000, (30 * 1000) / clock.rate()));
  stop.push(() => clearInterval(tick));
  // Asking for the shown days keeps the node on their offer topics (a
  // view lasts 10 minutes): ask again every 5 minutes of real time.
  const renew = setInterval(load, 5 * 60 * 1000);
  stop.push(() => clearInterval(renew));

  function paint() {
    const now = clock.nowMs();
    if (startOfDay(now).getTime() !== st.days[0].getTime()) {
      // Past midnight: the week starts today again (the router re-mounts).
      window.dispatchEvent(new HashChangeEvent("hashchange"));
      return;
    }
    const s = settings();
    nowInfo.replaceChildren(`${s.default_duration_min} min · ${s.default_activity}${s.default_quiet ? " · quiet" : ""} · `,
      h("a", { href: "#/settings" }, "change"));
    if (st.nowOffers && st.nowOffers.length) {
      nowInfo.append(h("br"), `${st.nowOffers.length} ${st.nowOffers.length === 1 ? "person is" : "people are"} looking for a partner right now`);
    }
    keepFocus(searching, () => paintSearching(now));
    paintSlots(now);
    paintBookings(now);
    keepFocus(upcoming, () => paintUpcoming(now));
    if (!st.scrolled) {
      st.scrolled = true;
      scrollToNow(now);
    }
  }

  // paintEmpty shows (or hides) the first-run explanation: why nothing is
  // here, and the ways to find peers, from what the node's discovery does.
  async function paintEmpty(alone) {
    if (!alone) {
      st.alone = "";
      empty.hidden = true;
      empty.replaceChildren();
      return;
    }
    let d;
    try {
      d = await get("/discovery");
    } catch {
      d = { mdns: false, local_only: false, share_addrs: [], bootstrap: [], static: [], rendezvous: {} };
    }
    // Repaint only when something shown changed (keeps focus on Copy).
    const key = JSON.stringify([d.local_only, d.mdns, d.mdns_error, d.public_dht, d.start_dials_done, d.share_addrs,
      d.bootstrap.map((b) => b.state), d.static.map((b) => b.state)]);
    if (key === st.alone && !empty.hidden) return;
    st.alone = key;
    const code = (text) => h("code", {}, text);
    const why = [
      "Your node is running, but it is not connected to any other Tandem node yet. ",
      "That is why no one's open times show up here, and why Focus now would find nobody.",
    ];
    const tried = d.bootstrap.length + d.static.length;
    const reached = [...d.bootstrap, ...d.static].filter((b) => b.state === "reached").length;
    if (d.local_only) {
      why.push(" It runs local only (no bootstrap peers, no search on your network): only peers you add, or who add you, can connect.");
    } else if (d.public_dht && !d.start_dials_done) {
      why.push(" It is looking for other Tandem users on the internet; give it a minute or two.");
    } else if (tried > 0 && d.start_dials_done && reached === 0) {
      why.push(` It tried ${tried} ${tried === 1 ? "peer" : "peers"} it was given and reached none (see `,
        h("a", { href: "#/network" }, "Network"), ").");
    }

    const lan = d.mdns_error
      ? [h("strong", {}, "Finding people on your network could not start"), `: ${d.mdns_error}.`]
      : d.mdns
        ? [h("strong", {}, "People on the same network"), " (same Wi-Fi or office) appear here by themselves: keep this page open."]
        : [h("strong", {}, "Finding people on your network (LAN) is off"), " (", code("--no-mdns"), " or ", code("mdns = false"),
          "). Start without it and people on the same Wi-Fi or office appear by themselves."];

    const addr = d.share_addrs[0];
    const addrEl = h("code", { id: "my-addr", class: "wrap" }, addr || "");
    const copy = h("button", { type: "button", class: "small-btn", id: "copy-addr" }, "Copy");
    copy.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(addr);
        toast("Address copied.");
      } catch {
        getSelection().selectAllChildren(addrEl);
        toast("Could not copy: the address is selected, copy it by hand.", "warn");
      }
    });
    const local = addr && /^\/(ip4\/127\.|ip6\/::1\/)/.test(addr);
    const share = addr
      ? [h("strong", {}, "Or let a friend add you"), ": send them your address.",
        h("span", { class: "addr-box" }, addrEl, copy),
        h("span", { class: "muted small" }, local
          ? "This address works only on this computer: your node listens on loopback only (see --listen). "
          : "", d.share_addrs.length > 1 ? ["Your other addresses are on the ", h("a", { href: "#/network" }, "Network"), " screen."] : "")]
      : [h("strong", {}, "Your node has no address to share"), " (it listens nowhere: see ", code("--listen"), ")."];

    empty.replaceChildren(
      h("h2", { id: "empty-title" }, "Nobody here yet"),
      h("p", { id: "empty-why" }, ...why),
      h("ul", { class: "empty-steps" },
        h("li", { id: "empty-lan" }, ...lan),
        h("li", { id: "empty-bootstrap" }, h("strong", {}, "Join a group"), " through a bootstrap peer, an always-on node your group shares: ",
          code("tandem up --bootstrap MULTIADDR"), ", or ", code('bootstrap = ["MULTIADDR"]'), " in config.toml."),
        h("li", { id: "empty-peer" }, h("strong", {}, "Add a friend directly"), ": ", code("tandem up --peer MULTIADDR"),
          ", or ", code('peers = ["MULTIADDR"]'), " in config.toml."),
        h("li", { id: "empty-share" }, ...share),
        h("li", { id: "empty-demo" }, h("strong", {}, "Just want to see how it works?"), " Try the demo: ",
          code("tandem demo"), ". Pretend partners on your own computer; nothing leaves it.")),
      h("p", { class: "muted small" }, "This goes away as soon as a peer connects. What your node tried is on the ",
        h("a", { href: "#/network" }, "Network"), " screen."));
    empty.hidden = false;
  }

  function paintSearching(now) {
    const mine = st.bookings.filter((b) => b.kind === "now" && b.state === "searching");
    searching.replaceChildren(...mine.map((b) => {
      if (!isAwaiting(b.id)) awaitMatch(b).catch(() => {});
      const since = Math.max(0, Math.round((now - Date.parse(b.created_at)) / 1000));
      return h("div", { class: "searching-card", dataset: { id: b.id } },
        h("span", { class: "spinner", "aria-hidden": "true" }),
        h("div", {},
          h("strong", {}, "Finding a partner…"),
          h("p", { class: "muted small" }, `${b.duration_min} min · ${b.activity}${b.quiet ? " · quiet" : ""}. `,
            since > 20 ? "Nobody free yet: keep this page open, the session room opens as soon as someone is." : "The room opens by itself when you are matched.")),
        h("button", { type: "button", onclick: () => cancelBooking(b, "no longer needed") }, "Stop searching"));
    }));
    searching.hidden = mine.length === 0;
  }

  function paintSlots(now) {
    const names = new Map(); // slot start -> names of the peers with an open offer
    for (const o of st.offers) {
      const k = new Date(o.start).toISOString();
      names.set(k, [...(names.get(k) || []), nameOf(o.name, o.owner)]);
    }
    for (const row of slotEls) {
      for (const slot of row) {
        const start = Date.parse(slot.dataset.start);
        const past = start < now;
        slot.classList.toggle("past", past);
        slot.setAttribute("aria-disabled", String(past));
        const who = names.get(slot.dataset.start) || [];
        const n = who.length;
        const badge = slot.querySelector(".offers");
        badge.textContent = n ? String(n) : "";
        badge.classList.toggle("badge", n > 0);
        slot.title = n ? `Open: ${who.join(", ")}` : "";
        slot.setAttribute("aria-label", `${fmtWhen(start)}${past ? ", past" : ""}${n ? `, open: ${who.join(", ")}` : ""}`);
      }
    }
    if (!body.querySelector(".slot[tabindex='0']")) {
      const next = slotEls[0].find((s) => Date.parse(s.dataset.start) >= now) || slotEls[1][0];
      next.tabIndex = 0;
    }
    // The now line, in today's column.
    const today = body.querySelector(".cal-day[data-day='0']");
    const frac = (now - st.days[0].getTime()) / (24 * 60 * MINUTE);
    if (frac >= 0 && frac < 1) {
      nowLine.style.top = `${frac * 100}%`;
      if (!nowLine.isConnected) today.append(nowLine);
    } else {
      nowLine.remove();
    }
  }

  // paintBookings updates the booking blocks in place (a block that is
  // removed and rebuilt would take the keyboard focus with it).
  function paintBookings(now) {
    const old = new Map([...body.querySelectorAll(".booking-block")].map((el) => [el.dataset.id, el]));
    const first = st.days[0].getTime();
    for (const b of st.bookings) {
      if (!LIVE.has(b.state) && b.state !== "done") continue;
      if (b.kind === "now" && b.state === "searching") continue;
      const start = Date.parse(b.start);
      const d = st.days.findIndex((day) => start >= day.getTime() && start < addDays(day, 1).getTime());
      if (d < 0 || start < first) continue;
      const col = body.querySelector(`.cal-day[data-day='${d}']`);
      const mins = (start - st.days[d].getTime()) / MINUTE;
      const end = start + b.duration_min * MINUTE;
      const who = partnerText(b);
      const over = st.over.has(b.id);
      let block = old.get(b.id);
      old.delete(b.id);
      if (!block) {
        block = h("button", { type: "button", dataset: { id: b.id } }, h("span", { class: "bk-time" }), " ", h("span", { class: "bk-who" }));
      }
      block.setAttribute("class", ["booking-block", b.state, (end < now || over) && "past"].filter(Boolean).join(" "));
      Object.assign(block.style, { top: `${(mins / 1440) * 100}%`, height: `${(b.duration_min / 1440) * 100}%` });
      block.setAttribute("aria-label", `Your booking ${fmtWhen(start)}, ${b.duration_min} minutes, ${who}`);
      block.title = `${fmtTime(start)}–${fmtTimeZ(end)} ${who}`;
      block.querySelector(".bk-time").textContent = fmtTime(start);
      block.querySelector(".bk-who").textContent = who;
      if (block.parentNode !== col) col.append(block);
    }
    for (const el of old.values()) el.remove();
  }

  function paintUpcoming(now) {
    const items = st.bookings
      .filter((b) => LIVE.has(b.state) && !(b.kind === "now" && b.state === "searching") && !st.over.has(b.id))
      .filter((b) => Date.parse(b.start) + b.duration_min * MINUTE > now)
      .sort((a, b) => Date.parse(a.start) - Date.parse(b.start));
    if (items.length === 0) {
      upcoming.replaceChildren(h("li", { class: "muted" }, "Nothing booked yet. Click a time in the calendar to book one."));
      return;
    }
    upcoming.replaceChildren(...items.map((b) => {
      const start = Date.parse(b.start);
      const sess = st.sessions.find((s) => s.booking.id === b.id);
      const live = sess && ROOM_PHASES.has(sess.phase);
      const who = partnerText(b);
      return h("li", { class: ["upcoming-item", b.state], dataset: { id: b.id } },
        h("div", {},
          h("strong", {}, fmtWhen(start)), " ", h("span", { class: "muted" }, fmtIn(start - now)),
          h("div", { class: "small" }, `${b.duration_min} min · ${who}`),
          b.note ? h("div", { class: "small note" }, b.note) : null),
        h("div", { class: "row-actions" },
          live ? h("a", { class: "button primary", href: roomURL(b.id), id: "join-" + b.id }, "Join") : null,
          h("button", { type: "button", onclick: () => openBookingDetails(b.id) }, "Details")));
    }));
  }

  function scrollToNow(now) {
    const frac = (now - st.days[0].getTime()) / (24 * 60 * MINUTE);
    const y = Math.max(0, frac * body.scrollHeight - scroller.clientHeight / 4);
    scroller.scrollTop = y;
  }

  // ---- actions ----
  async function focusNow() {
    nowBtn.disabled = true;
    showError(err, null);
    try {
      const s = settings();
      const req = { kind: "now", duration_min: s.default_duration_min, activity: s.default_activity, quiet: s.default_quiet };
      if (myCircles.length && s.default_scope && s.default_scope !== "anyone") {
        Object.assign(req, { scope: s.default_scope, open_after_min: s.default_open_after_min });
      }
      const b = await post("/bookings", req);
      st.bookings = [...st.bookings.filter((x) => x.id !== b.id), b];
      paint();
      await awaitMatch(b);
    } catch (e) {
      showError(err, e);
    } finally {
      nowBtn.disabled = false;
    }
  }

  async function cancelBooking(b, reason) {
    try {
      await post(`/bookings/${encodeURIComponent(b.id)}/cancel`, { reason });
      toast("Booking cancelled.");
      load();
    } catch (e) {
      showError(err, e);
    }
  }

  function openBookDialog(slot) {
    const start = Date.parse(slot.dataset.start);
    if (start < clock.nowMs()) {
      toast("That time has passed. Use Focus now for a session right away.", "warn");
      return;
    }
    const s = settings();
    const here = st.offers.filter((o) => new Date(o.start).toISOString() === slot.dataset.start);
    const favs = st.people.filter((p) => p.favourite && !here.some((o) => o.owner === p.id));
    // With people here, start from settings that match one of them (a
    // favourite first; the user's own defaults when they already match):
    // the user's default length alone would book a session nobody here
    // can take, which stays searching.
    const pre = { duration: s.default_duration_min, activity: s.default_activity, quiet: s.default_quiet };
    if (here.length && !here.some((o) => compatible(o, pre))) {
      const o = [...here].sort((a, b) => Number(b.favourite) - Number(a.favourite))[0];
      pre.duration = o.duration_min;
      pre.quiet = o.quiet;
      if (!compatibleActivity(pre.activity, o.activity)) pre.activity = o.activity;
    }
    const names = here.map((o) => nameOf(o.name, o.owner));
    const errBox = h("p", { class: "error", role: "alert", hidden: true });
    const warn = h("p", { class: "warn-box", id: "book-warning", role: "status", hidden: true });
    const radio = (name, value, label, checked, extra = {}) =>
      h("label", { class: "choice" }, h("input", { type: "radio", name, value, checked, ...extra }), " ", label);
    const form = h("form", { class: "book-form", method: "dialog" },
      here.length
        ? h("p", { id: "book-offers", class: "book-offers" },
          h("strong", {}, listNames(names)), ` ${here.length === 1 ? "has" : "have"} this time open. `,
          "The choices below match ", here.length === 1 ? "them" : "someone here", ".")
        : null,
      h("fieldset", {}, h("legend", {}, "Duration"),
        ...[25, 50, 75].map((m) => radio("duration", String(m), `${m} min`, m === pre.duration))),
      h("fieldset", {}, h("legend", {}, "Activity"),
        ...[["desk", "At my desk"], ["moving", "Moving"], ["anything", "Anything"]].map(([v, l]) => radio("activity", v, l, v === pre.activity))),
      h("label", { class: "choice" }, h("input", { type: "checkbox", name: "quiet", checked: pre.quiet }), " Quiet mode (no talking)"),
      scopeFields(s),
      warn,
      h("label", { class: "field" }, "Your goal (optional)",
        h("input", { name: "goal", maxlength: "280", placeholder: "What will you work on?", autocomplete: "off" })),
      here.length || favs.length
        ? h("fieldset", { class: "partners" }, h("legend", {}, "Partner"),
          radio("with", "", "Anyone (favourites first)", true),
          ...here.map((o) => radio("with", o.owner,
            h("span", {}, h("strong", {}, nameOf(o.name, o.owner)), ` has this slot open · ${o.duration_min} min · ${o.activity}${o.quiet ? " · quiet" : ""}${o.favourite ? " · ★" : ""}`),
            false, { dataset: { duration: o.duration_min, activity: o.activity, quiet: String(o.quiet) } })),
          ...favs.map((p) => radio("with", p.id, h("span", {}, h("strong", {}, nameOf(p.name, p.id)), " ★ (only if they book this time too)"), false)))
        : h("p", { class: "muted small" }, "Nobody has this slot open yet: your node will announce it and match you with whoever comes."),
      errBox,
      h("div", { class: "dialog-actions" },
        h("button", { type: "button", value: "cancel", onclick: () => dlg.close() }, "Cancel"),
        h("button", { type: "submit", class: "primary", id: "book-submit" }, "Book")));
    // Picking a person's open slot takes on its duration and activity.
    form.addEventListener("change", (e) => {
      if (e.target.name !== "with" || !e.target.dataset.duration) return;
      form.querySelector(`input[name=duration][value='${e.target.dataset.duration}']`).checked = true;
      const act = form.querySelector(`input[name=activity][value='${e.target.dataset.activity}']`);
      if (act) act.checked = true;
      form.elements.quiet.checked = e.target.dataset.quiet === "true";
    });
    // Say so when the choices match nobody who has this time open.
    const checkMatch = () => {
      const f = form.elements;
      const with_ = f.with ? f.with.value : "";
      const pool = here.filter((o) => !with_ || o.owner === with_);
      const want = { duration: Number(f.duration.value), activity: f.activity.value, quiet: f.quiet.checked };
      const hit = pool.some((o) => compatible(o, want));
      warn.hidden = !pool.length || hit;
      if (!warn.hidden) {
        const offered = pool.map((o) => `${nameOf(o.name, o.owner)}: ${describeOffer(o)}`).join("; ");
        warn.replaceChildren(`Nobody here matches ${describeOffer({ duration_min: want.duration, activity: want.activity, quiet: want.quiet })} (${offered}). `,
          "Your booking will wait for someone else to book this time.");
      }
    };
    form.addEventListener("change", checkMatch);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const f = form.elements;
      const req = {
        kind: "scheduled", at: new Date(start).toISOString(),
        duration_min: Number(f.duration.value), activity: f.activity.value, quiet: f.quiet.checked,
        goal: f.goal.value.trim(),
      };
      if (f.with && f.with.value) req.with = f.with.value;
      Object.assign(req, scopeOf(f));
      const btn = form.querySelector("#book-submit");
      btn.disabled = true;
      try {
        await post("/bookings", req);
        dlg.close();
        toast(`Booked ${fmtWhen(start)}.`);
        load();
      } catch (ex) {
        showError(errBox, ex);
      } finally {
        btn.disabled = false;
      }
    });
    checkMatch();
    const dlg = openDialog({ title: `Book ${fmtLongDay(start)}, ${fmtTimeZ(start)}`, content: form, className: "book-dialog" });
    dlg.id = "book-dialog";
    dlg.addEventListener("close", () => slot.focus());
  }

  function openBookingDetails(id) {
    const b = st.bookings.find((x) => x.id === id);
    if (!b) return;
    const start = Date.parse(b.start);
    const end = start + b.duration_min * MINUTE;
    const sess = st.sessions.find((s) => s.booking.id === b.id);
    const errBox = h("p", { class: "error", role: "alert", hidden: true });
    const reason = h("input", { name: "reason", maxlength: "280", placeholder: "e.g. something came up", autocomplete: "off" });
    const row = (k, v) => (v ? [h("dt", {}, k), h("dd", {}, v)] : []);
    const content = h("div", {},
      h("dl", { class: "facts" },
        row("When", `${fmtDay(start)}, ${fmtTime(start)}–${fmtTimeZ(end)} (${b.duration_min} min)`),
        row("Partner", b.state === "matched" || b.state === "done" ? nameOf(b.partner_name, b.partner) : "Finding a partner…"),
        row("Activity", `${b.activity}${b.quiet ? ", quiet" : ""}`),
        row("Who", scopeText(b)),
        row("Goal", b.goal),
        row("Note", b.note)),
      sess && ROOM_PHASES.has(sess.phase)
        ? h("p", {}, h("a", { class: "button primary", href: roomURL(b.id) }, "Join the session"))
        : null,
      st.over.has(b.id)
        ? h("div", {},
          h("p", {}, "This session is over. ", h("a", { href: "#/history" }, "See it in your history"), "."),
          h("div", { class: "dialog-actions" }, h("button", { type: "button", onclick: () => dlg.close() }, "Close")))
        : LIVE.has(b.state)
        ? h("form", { class: "cancel-form", method: "dialog" },
          h("label", { class: "field" }, b.state === "matched" ? "Reason (your partner sees it)" : "Reason (optional)", reason),
          errBox,
          h("div", { class: "dialog-actions" },
            h("button", { type: "button", onclick: () => dlg.close() }, "Close"),
            h("button", { type: "submit", class: "danger" }, "Cancel booking")))
        : h("div", { class: "dialog-actions" }, h("button", { type: "button", onclick: () => dlg.close() }, "Close")));
    const form = $(".cancel-form", content);
    if (form) {
      form.addEventListener("submit", async (e) => {
        e.preventDefault();
        try {
          await post(`/bookings/${encodeURIComponent(b.id)}/cancel`, { reason: reason.value.trim() });
          dlg.close();
          toast("Booking cancelled.");
          load();
        } catch (ex) {
          showError(errBox, ex);
        }
      });
    }
    const dlg = openDialog({ title: "Your booking", content, className: "details-dialog" });
    dlg.id = "booking-dialog";
  }

  // Circles the user is in, for the booking dialog's "Who" choice.
  let myCircles = [];
  const loadCircles = () => get("/circles").then((cs) => { myCircles = cs; }).catch(() => {});
  stop.push(on("circles", loadCircles));
  loadCircles();

  function scopeFields(s) {
    if (!myCircles.length) return null;
    const scope = s.default_scope || "anyone";
    const radio = (value, label) => h("label", { class: "choice" },
      h("input", { type: "radio", name: "scope", value, checked: value === scope }), " ", label);
    return h("fieldset", { class: "scope", id: "book-scope" }, h("legend", {}, "Who"),
      radio("anyone", "Anyone"),
      radio("circle", "My circle only"),
      h("label", { class: "choice" }, h("input", { type: "radio", name: "scope", value: "circle-first", checked: scope === "circle-first" }),
        " My circle first, then anyone after ",
        h("input", { type: "number", name: "open_after", min: "1", max: "20160", step: "1", value: String(s.default_open_after_min || 10), class: "minutes", "aria-label": "minutes" }),
        " min"),
      myCircles.length > 1
        ? h("label", { class: "field" }, "Circle",
          h("select", { name: "circle" }, h("option", { value: "" }, "All my circles"),
            ...myCircles.map((c) => h("option", { value: c.id }, c.name))))
        : null);
  }

  function scopeOf(f) {
    if (!f.scope) return {};
    const out = { scope: f.scope.value };
    if (f.scope.value !== "anyone" && f.circle && f.circle.value) out.circle = f.circle.value;
    if (f.scope.value === "circle-first") out.open_after_min = Number(f.open_after.value);
    return out;
  }

  function scopeText(b) {
    const c = myCircles.find((x) => x.id === b.circle);
    const which = c ? `“${c.name}”` : "my circles";
    if (b.scope === "circle") return `${which} only`;
    if (b.scope === "circle-first") return `${which} first, anyone after ${b.open_after_min} min`;
    return "";
  }

  load();
  return () => {
    stop.forEach((fn) => fn());
    for (const d of document.querySelectorAll("dialog.book-dialog, dialog.details-dialog")) d.close();
  };
}
