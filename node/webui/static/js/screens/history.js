// History and stats: past sessions with partner, goals and outcomes, and a
// small chart of minutes focused per week, the done ratio and the streak.
import { get, on, clock, debounce } from "../api.js";
import { h, showError, fmtWhen, fmtDay, nameOf, weekStart, addDays, MINUTE } from "../dom.js";

export const title = "History";

const OUTCOMES = { done: "Done", partly: "Partly", not: "Not this time" };
const WEEKS = 8;

export function mount(el) {
  const err = h("p", { class: "error", role: "alert", hidden: true });
  const tiles = h("div", { class: "tiles", id: "stats" });
  const chart = h("figure", { class: "chart", id: "weekly-chart" });
  const ratio = h("figure", { class: "ratio", id: "done-ratio" });
  const list = h("div", { class: "records", id: "history-list" });
  el.append(
    h("h1", {}, "History and stats"),
    err,
    tiles,
    h("div", { class: "charts" }, chart, ratio),
    h("h2", {}, "Past sessions"),
    list);

  async function load() {
    try {
      const [recs, stats] = await Promise.all([get("/history"), get("/stats")]);
      showError(err, null);
      renderTiles(stats);
      renderChart(recs);
      renderRatio(recs);
      renderList(recs);
    } catch (e) {
      showError(err, e);
    }
  }

  function renderTiles(s) {
    const tile = (value, label, id) => h("div", { class: "tile", id }, h("div", { class: "value" }, value), h("div", { class: "label" }, label));
    const hours = Math.floor(s.minutes_focused / 60);
    tiles.replaceChildren(
      tile(String(s.sessions), s.sessions === 1 ? "session" : "sessions", "stat-sessions"),
      tile(String(s.this_week), "this week", "stat-week"),
      tile(hours ? `${hours} h ${s.minutes_focused % 60} min` : `${s.minutes_focused} min`, "focused with a partner", "stat-minutes"),
      tile(s.check_ins ? `${Math.round(s.done_ratio * 100)}%` : "–", `done (${s.done} of ${s.check_ins} check-ins)`, "stat-done"),
      tile(String(s.streak_weeks), s.streak_weeks === 1 ? "week streak" : "weeks streak", "stat-streak"),
      tile(String(s.no_shows), "partners did not come", "stat-noshows"));
  }

  // minutesOf counts the time spent with the partner, as the node's stats do.
  function minutesOf(r) {
    if (!r.met) return 0;
    const start = Date.parse(r.start);
    let from = start;
    let to = start + r.duration_min * MINUTE;
    if (r.joined_at && Date.parse(r.joined_at) > from) from = Date.parse(r.joined_at);
    if (r.left_at && Date.parse(r.left_at) < to) to = Date.parse(r.left_at);
    return to > from ? Math.floor((to - from) / MINUTE) : 0;
  }

  function renderChart(recs) {
    const first = addDays(weekStart(clock.now()), -7 * (WEEKS - 1));
    const weeks = Array.from({ length: WEEKS }, (_, i) => ({ start: addDays(first, 7 * i), minutes: 0 }));
    for (const r of recs) {
      const i = Math.floor((weekStart(new Date(r.start)) - first) / (7 * 24 * 60 * MINUTE) + 0.01);
      if (i >= 0 && i < WEEKS) weeks[i].minutes += minutesOf(r);
    }
    const max = Math.max(60, ...weeks.map((w) => w.minutes));
    const W = 400, H = 150, pad = 22, bw = (W - 10) / WEEKS;
    const svg = h("svg:svg", { viewBox: `0 0 ${W} ${H}`, role: "img", class: "bars" });
    const desc = weeks.map((w) => `week of ${fmtDay(w.start)}: ${w.minutes} minutes`).join("; ");
    svg.append(h("svg:title", {}, `Minutes focused per week. ${desc}`));
    svg.append(h("svg:line", { x1: 0, x2: W, y1: H - pad, y2: H - pad, class: "axis" }));
    weeks.forEach((w, i) => {
      const bh = ((H - 2 * pad) * w.minutes) / max;
      const x = 5 + i * bw + bw * 0.15;
      svg.append(h("svg:rect", { x, y: H - pad - bh, width: bw * 0.7, height: Math.max(bh, 0.5), rx: 3, class: i === WEEKS - 1 ? "bar current" : "bar" }));
      if (w.minutes) svg.append(h("svg:text", { x: x + bw * 0.35, y: H - pad - bh - 4, class: "value", "text-anchor": "middle" }, String(w.minutes)));
      svg.append(h("svg:text", { x: x + bw * 0.35, y: H - 6, class: "label", "text-anchor": "middle" }, i === WEEKS - 1 ? "this wk" : fmtDay(w.start).replace(/^\S+ /, "")));
    });
    chart.replaceChildren(svg, h("figcaption", {}, "Minutes focused per week"));
  }

  function renderRatio(recs) {
    const counts = { done: 0, partly: 0, not: 0 };
    for (const r of recs) if (r.check_in && counts[r.check_in.outcome] !== undefined) counts[r.check_in.outcome]++;
    const total = counts.done + counts.partly + counts.not;
    const W = 300, H = 28;
    const svg = h("svg:svg", { viewBox: `0 0 ${W} ${H}`, role: "img", class: "stack" });
    svg.append(h("svg:title", {}, `Check-ins: ${counts.done} done, ${counts.partly} partly, ${counts.not} not`));
    let x = 0;
    for (const k of ["done", "partly", "not"]) {
      const w = total ? (W * counts[k]) / total : 0;
      if (w) svg.append(h("svg:rect", { x, y: 0, width: w, height: H, class: `seg ${k}` }));
      x += w;
    }
    if (!total) svg.append(h("svg:rect", { x: 0, y: 0, width: W, height: H, class: "seg empty" }));
    ratio.replaceChildren(svg, h("figcaption", {},
      h("span", { class: "key done" }), ` done ${counts.done} `,
      h("span", { class: "key partly" }), ` partly ${counts.partly} `,
      h("span", { class: "key not" }), ` not ${counts.not}`));
  }

  function renderList(recs) {
    if (!recs.length) {
      list.replaceChildren(h("p", { class: "muted" }, "No sessions yet. ", h("a", { href: "#/calendar" }, "Book one, or press Focus now"), "."));
      return;
    }
    const outcome = (c) => (c ? h("span", { class: ["outcome", c.outcome] }, OUTCOMES[c.outcome] || c.outcome) : h("span", { class: "outcome none" }, "no check-in"));
    list.replaceChildren(...recs.map((r) => {
      const name = nameOf(r.partner_name, r.partner);
      const flags = [];
      if (r.no_show) flags.push(`${name} did not come`);
      if (r.left_early) flags.push(`you left early${r.leave_reason ? `: ${r.leave_reason}` : ""}`);
      if (r.partner_left_early) flags.push(`${name} left early${r.partner_leave_reason ? `: ${r.partner_leave_reason}` : ""}`);
      if (r.receipt && r.partner_receipt) flags.push("signed attendance receipts from both of you");
      return h("article", { class: "record", dataset: { id: r.booking_id } },
        h("header", {},
          h("strong", {}, fmtWhen(r.start)),
          h("span", { class: "muted" }, ` · ${r.duration_min} min · ${r.kind === "now" ? "focus now" : "booked"} · `),
          h("span", {}, r.met ? `with ${name}` : `${name} (never met)`),
          r.met ? h("span", { class: "muted small" }, ` · ${minutesOf(r)} min together`) : null),
        r.met ? h("div", { class: "record-goals" },
          h("div", {}, h("div", { class: "who" }, "You"), h("p", {}, r.goal || h("span", { class: "muted" }, "no goal")), outcome(r.check_in),
            r.check_in && r.check_in.note ? h("p", { class: "small muted" }, r.check_in.note) : null),
          h("div", {}, h("div", { class: "who" }, name), h("p", {}, r.partner_goal || h("span", { class: "muted" }, "no goal")), outcome(r.partner_check_in),
            r.partner_check_in && r.partner_check_in.note ? h("p", { class: "small muted" }, r.partner_check_in.note) : null)) : null,
        flags.length ? h("p", { class: "small flags" }, flags.join(" · ")) : null);
    }));
  }

  const reload = debounce(load, 200);
  const off = on("session", (e) => { if (e.type === "ended") reload(); });
  load();
  return off;
}
