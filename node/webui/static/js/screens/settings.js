// Settings: display name (the profile partners see), defaults for new
// bookings and "Focus now", sounds, browser notifications (reminder lead
// time, match and cancel, partner joined), auto rematch.
import { get, put } from "../api.js";
import { h, showError } from "../dom.js";
import { loadSettings, saveSettings } from "../prefs.js";
import { playChime } from "../sounds.js";

export const title = "Settings";

export function mount(el) {
  const err = h("p", { class: "error", role: "alert", hidden: true });
  const saved = h("span", { class: "muted", role: "status", id: "settings-saved" });
  const form = h("form", { class: "settings-form", id: "settings-form" }, h("p", { class: "muted" }, "Loading…"));
  el.append(h("h1", {}, "Settings"), err, form);

  let profileName = "";

  async function load() {
    try {
      const [profile, s] = await Promise.all([get("/profile"), loadSettings()]);
      profileName = profile.name;
      render(profile, s);
    } catch (e) {
      showError(err, e);
    }
  }

  const check = (name, checked, label, hint) =>
    h("label", { class: "choice" }, h("input", { type: "checkbox", name, id: "set-" + name, checked }), " ", label,
      hint ? h("span", { class: "muted small block" }, hint) : null);

  function permissionText() {
    if (!("Notification" in window)) return "This browser does not support notifications.";
    return { granted: "Notifications are allowed in this browser.", denied: "This browser blocks notifications from Tandem: allow them in the site settings.", default: "The browser asks for permission when you turn one on." }[Notification.permission];
  }

  function render(profile, s) {
    const notifyNote = h("p", { class: "muted small", id: "notify-note" }, permissionText());
    form.replaceChildren(
      h("fieldset", {}, h("legend", {}, "You"),
        h("label", { class: "field" }, "Display name (partners see it)",
          h("input", { name: "name", id: "display-name", value: profile.name, maxlength: "64", autocomplete: "nickname" }))),
      h("fieldset", {}, h("legend", {}, "New sessions"),
        h("div", { class: "field" }, h("span", {}, "Duration"),
          h("div", { class: "row" }, ...[25, 50, 75].map((m) =>
            h("label", { class: "choice" }, h("input", { type: "radio", name: "duration", value: String(m), checked: m === s.default_duration_min }), ` ${m} min`)))),
        h("label", { class: "field" }, "Activity",
          h("select", { name: "activity", id: "set-activity" },
            ...[["desk", "At my desk"], ["moving", "Moving"], ["anything", "Anything"]].map(([v, l]) =>
              h("option", { value: v, selected: v === s.default_activity }, l)))),
        check("quiet", s.default_quiet, "Quiet mode (no talking)"),
        h("label", { class: "field" }, "Who (for people in a circle)",
          h("select", { name: "scope", id: "set-scope" },
            ...[["anyone", "Anyone"], ["circle", "My circle only"], ["circle-first", "My circle first, then anyone"]].map(([v, l]) =>
              h("option", { value: v, selected: v === s.default_scope }, l)))),
        h("label", { class: "field" }, "“Circle first” opens to anyone after (minutes)",
          h("input", { type: "number", name: "open_after", id: "set-open_after", min: "1", max: "20160", step: "1", value: String(s.default_open_after_min), class: "minutes" }))),
      h("fieldset", {}, h("legend", {}, "Sounds"),
        check("sounds", s.sounds, "Chimes", "A chime when focus starts, a soft one a minute before the end, and one at the end."),
        h("div", { class: "row" },
          h("button", { type: "button", onclick: () => playChime("start", { force: true }) }, "Play start chime"),
          h("button", { type: "button", onclick: () => playChime("warning", { force: true }) }, "One minute left"),
          h("button", { type: "button", onclick: () => playChime("end", { force: true }) }, "Play end chime"))),
      h("fieldset", {}, h("legend", {}, "Notifications"),
        h("label", { class: "choice" }, h("input", { type: "checkbox", name: "notify_reminder", id: "set-notify_reminder", checked: s.notify_reminder }),
          " Remind me ",
          h("input", { type: "number", name: "remind_before_min", id: "set-remind_before_min", min: "1", max: "120", step: "1", value: String(s.remind_before_min), class: "minutes", "aria-label": "minutes before" }),
          " minutes before a session"),
        check("notify_match", s.notify_match, "Tell me when a partner is found for a booking, or cancels"),
        check("notify_partner_joined", s.notify_partner_joined, "Tell me when my partner joins (while I am in another tab)"),
        notifyNote),
      h("fieldset", {}, h("legend", {}, "When a partner does not come"),
        check("auto_rematch", s.auto_rematch, "Find a new partner automatically", "After 2 minutes, your node looks for someone free right now instead of asking you.")),
      h("div", { class: "row" }, h("button", { type: "submit", class: "primary", id: "save-settings" }, "Save"), saved));

    for (const name of ["notify_reminder", "notify_match", "notify_partner_joined"]) {
      form.elements[name].addEventListener("change", async (e) => {
        if (!e.target.checked || !("Notification" in window)) return;
        if (Notification.permission === "default") await Notification.requestPermission();
        if (Notification.permission !== "granted") e.target.checked = false;
        notifyNote.textContent = permissionText();
      });
    }
    form.addEventListener("input", () => { saved.textContent = ""; });
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = form.elements;
    try {
      const name = f.name.value.trim();
      if (name !== profileName) {
        profileName = (await put("/profile", { name })).name;
      }
      await saveSettings({
        default_duration_min: Number(f.duration.value),
        default_activity: f.activity.value,
        default_quiet: f.quiet.checked,
        default_scope: f.scope.value,
        default_open_after_min: Number(f.open_after.value),
        sounds: f.sounds.checked,
        notify_reminder: f.notify_reminder.checked,
        remind_before_min: Number(f.remind_before_min.value),
        notify_match: f.notify_match.checked,
        notify_partner_joined: f.notify_partner_joined.checked,
        auto_rematch: f.auto_rematch.checked,
      });
      showError(err, null);
      saved.textContent = "Saved.";
      document.dispatchEvent(new CustomEvent("tandem:profile", { detail: { name: profileName } }));
    } catch (ex) {
      saved.textContent = "";
      showError(err, ex);
    }
  });

  load();
  return () => {};
}
