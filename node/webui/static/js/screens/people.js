// People: private circles (create, join by invite, members seen, leave),
// favourites (tried first when matching), blocked and snoozed peers (never
// matched, offers hidden) with unblock, and recent partners from the
// history. #/people/INVITE (URL-encoded) opens with the invite in the join
// form, ready to join.
import { get, post, del, on, clock } from "../api.js";
import { h, showError, fmtWhen, fmtDay, nameOf, shortID, toast } from "../dom.js";

export const title = "People";

export function mount(el, arg) {
  const err = h("p", { class: "error", role: "alert", hidden: true });
  const sections = h("div", { class: "people" });
  const idInput = h("input", { id: "person-id", placeholder: "12D3KooW…", autocomplete: "off", required: true, "aria-label": "Peer ID" });
  const actionSel = h("select", { id: "person-action", "aria-label": "Action" },
    h("option", { value: "favorite" }, "Favourite"), h("option", { value: "block" }, "Block"));
  const addErr = h("p", { class: "error", role: "alert", hidden: true });
  const addForm = h("form", { class: "row add-person" }, idInput, actionSel, h("button", { type: "submit" }, "Add"));
  addForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await act(idInput.value.trim(), actionSel.value);
      idInput.value = "";
      showError(addErr, null);
    } catch (ex) {
      showError(addErr, ex);
    }
  });
  const circles = h("div", { id: "circles" });
  const circleErr = h("p", { class: "error", role: "alert", hidden: true });
  const newName = h("input", { id: "circle-name", placeholder: "e.g. Thesis writers", autocomplete: "off", required: true, maxlength: "64", "aria-label": "Circle name" });
  const createForm = h("form", { class: "row", id: "circle-create" }, newName, h("button", { type: "submit" }, "Create circle"));
  const invite = h("input", { id: "circle-invite", placeholder: "tc1-… or tandem://circle/join?…", autocomplete: "off", required: true, "aria-label": "Invite code or link" });
  const joinForm = h("form", { class: "row", id: "circle-join" }, invite, h("button", { type: "submit" }, "Join circle"));
  if (arg) invite.value = arg;
  const guard = (fn) => async (e) => {
    e.preventDefault();
    try {
      await fn();
      showError(circleErr, null);
    } catch (ex) {
      showError(circleErr, ex);
    }
  };
  createForm.addEventListener("submit", guard(async () => {
    const c = await post("/circles", { name: newName.value.trim() });
    newName.value = "";
    toast(`Circle “${c.name}” created: share its invite.`);
    await loadCircles();
  }));
  joinForm.addEventListener("submit", guard(async () => {
    const c = await post("/circles/join", { invite: invite.value.trim() });
    invite.value = "";
    toast(`Joined circle “${c.name}”.`);
    await loadCircles();
  }));
  el.append(
    h("h1", {}, "People"),
    h("section", { class: "card", id: "circles-card" },
      h("h2", {}, "Circles"),
      h("p", { class: "muted small" }, "A circle is a group that matches with each other first or only: a team, a class, friends. ",
        "Its open slots travel encrypted; only people with the invite can read them. Choose “My circle” when you book."),
      circles, circleErr,
      h("h3", {}, "Create a circle"), createForm,
      h("h3", {}, "Join a circle"), h("p", { class: "muted small" }, "Paste the invite code or link someone shared with you."), joinForm),
    h("p", { class: "muted" }, "Favourites are matched with you first. Blocked and snoozed people are never matched with you, and you do not see their open slots."),
    err, sections,
    h("section", { class: "card" }, h("h2", {}, "Add someone by peer ID"), addForm, addErr));

  let names = new Map();

  async function act(id, action, extra = {}) {
    await post(`/people/${encodeURIComponent(id)}`, { action, ...extra });
    const verb = { favorite: "Added to favourites", unfavorite: "Removed from favourites", block: "Blocked", unblock: "Unblocked", snooze: "Snoozed for 7 days" }[action];
    toast(`${verb}: ${nameOf(names.get(id), id)}`);
    await load();
  }

  function button(label, id, action, extra) {
    return h("button", {
      type: "button", class: "small-btn", dataset: { peer: id, action },
      onclick: () => act(id, action, extra).catch((e) => showError(err, e)),
    }, label);
  }

  function personRow(p, actions, detail) {
    return h("li", { class: "person", dataset: { peer: p.id } },
      h("div", {}, h("strong", {}, nameOf(names.get(p.id) || p.name, p.id)), " ",
        h("code", { class: "muted small", title: p.id }, shortID(p.id)),
        detail ? h("div", { class: "small muted" }, detail) : null),
      h("div", { class: "row-actions" }, ...actions));
  }

  function section(titleText, id, items, empty) {
    return h("section", { class: "card", id },
      h("h2", {}, titleText, " ", h("span", { class: "count" }, String(items.length))),
      items.length ? h("ul", { class: "person-list" }, ...items) : h("p", { class: "muted small" }, empty));
  }

  async function load() {
    try {
      const [people, history] = await Promise.all([get("/people"), get("/history")]);
      showError(err, null);
      names = new Map();
      const recent = new Map(); // peer -> {last, count}
      for (const r of history) { // newest first
        if (r.partner_name && !names.has(r.partner)) names.set(r.partner, r.partner_name);
        const e = recent.get(r.partner) || { id: r.partner, last: r.start, count: 0, met: 0 };
        e.count++;
        if (r.met) e.met++;
        recent.set(r.partner, e);
      }
      for (const p of people) if (p.name && !names.has(p.id)) names.set(p.id, p.name);
      const now = clock.nowMs();
      const byID = new Map(people.map((p) => [p.id, p]));
      const favs = people.filter((p) => p.favourite);
      const blocked = people.filter((p) => p.blocked);
      const snoozed = people.filter((p) => !p.blocked && p.snoozed_until && Date.parse(p.snoozed_until) > now);
      const recents = [...recent.values()].slice(0, 12);
      sections.replaceChildren(
        section("Favourites", "favourites",
          favs.map((p) => personRow(p, [button("Unfavourite", p.id, "unfavorite"), button("Block", p.id, "block")])),
          "No favourites yet. After a good session, press “Favourite” in the check-in."),
        section("Recent partners", "recent",
          recents.map((r) => {
            const p = byID.get(r.id) || { id: r.id };
            const acts = [];
            if (!p.favourite && !p.blocked) acts.push(button("★ Favourite", r.id, "favorite"));
            if (!p.blocked) acts.push(button("Snooze 7 days", r.id, "snooze", { snooze_for: "7d" }), button("Block", r.id, "block"));
            else acts.push(button("Unblock", r.id, "unblock"));
            return personRow(p, acts, `last session ${fmtWhen(r.last)} · ${r.met} of ${r.count} sessions met`);
          }),
          "Your partners show up here after your first session."),
        section("Snoozed", "snoozed",
          snoozed.map((p) => personRow(p, [button("Unsnooze", p.id, "unblock")], `until ${fmtDay(p.snoozed_until)}`)),
          "Nobody is snoozed."),
        section("Blocked", "blocked",
          blocked.map((p) => personRow(p, [button("Unblock", p.id, "unblock")])),
          "Nobody is blocked."));
    } catch (e) {
      showError(err, e);
    }
  }

  function copyButton(text, label) {
    return h("button", {
      type: "button", class: "small-btn",
      onclick: async () => {
        try {
          await navigator.clipboard.writeText(text);
          toast(`${label} copied.`);
        } catch {
          toast("Could not copy: select the text and copy it by hand.", "warn");
        }
      },
    }, `Copy ${label.toLowerCase()}`);
  }

  function circleCard(c) {
    const members = c.members.map((m) => h("li", { class: "person", dataset: { peer: m.id } },
      h("div", {}, h("strong", {}, nameOf(m.name, m.id)), " ", h("code", { class: "muted small", title: m.id }, shortID(m.id)),
        h("div", { class: "small muted" }, `seen ${fmtWhen(m.last_seen)}`))));
    return h("div", { class: "circle", dataset: { circle: c.id, link: c.link } },
      h("h3", {}, c.name, " ", h("span", { class: "count" }, String(c.members.length))),
      members.length ? h("ul", { class: "person-list" }, ...members)
        : h("p", { class: "muted small" }, "No member seen yet: they show up here when their node is online."),
      h("p", { class: "small" }, "Invite: ", h("code", { class: "invite-code" }, c.code), " ",
        copyButton(c.code, "Code"), " ", copyButton(c.link, "Link")),
      h("button", {
        type: "button", class: "small-btn danger", dataset: { action: "leave" },
        onclick: () => del(`/circles/${encodeURIComponent(c.id)}`)
          .then(() => { toast(`Left circle “${c.name}”.`); return loadCircles(); })
          .catch((e) => showError(circleErr, e)),
      }, "Leave circle"));
  }

  async function loadCircles() {
    try {
      const cs = await get("/circles");
      circles.replaceChildren(...(cs.length ? cs.map(circleCard)
        : [h("p", { class: "muted small" }, "You are in no circle yet.")]));
    } catch (e) {
      showError(circleErr, e);
    }
  }

  load();
  loadCircles();
  // Members appear as their nodes are seen on the circle's topic.
  const offs = [on("circles", loadCircles), on("board", loadCircles)];
  return () => offs.forEach((off) => off());
}
