// Network: this node's peer ID and addresses, the peers it is connected
// to, whether other peers can reach it, and what discovery tried (bootstrap
// and direct peers, the LAN, the DHT search), so a user can tell why nobody
// shows up.
import { get, on, debounce } from "../api.js";
import { h, showError, shortID, toast, fmtTime, keepFocus } from "../dom.js";

export const title = "Network";

export function mount(el) {
  const err = h("p", { class: "error", role: "alert", hidden: true });
  const identity = h("section", { class: "card", id: "identity" });
  const reach = h("section", { class: "card", id: "reachability" });
  const peers = h("section", { class: "card", id: "peers" });
  const tried = h("section", { class: "card", id: "discovery" });
  el.append(h("h1", {}, "Network"), err, h("div", { class: "net-grid" }, reach, identity), tried, peers);

  async function load() {
    try {
      const [status, list, r, d] = await Promise.all([get("/status"), get("/peers"), get("/reachability"), get("/discovery")]);
      showError(err, null);
      // Repainted every 15 s: Copy keeps the keyboard focus.
      keepFocus(identity, () => renderIdentity(status, d.share_addrs));
      renderReach(r);
      renderTried(d);
      renderPeers(list);
    } catch (e) {
      showError(err, e);
    }
  }

  function renderIdentity(s, addrs) {
    const copy = h("button", { type: "button", class: "small-btn" }, "Copy");
    copy.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(s.peer_id);
        toast("Peer ID copied.");
      } catch {
        toast("Could not copy: select the ID and copy it by hand.", "warn");
      }
    });
    identity.replaceChildren(
      h("h2", {}, "This node"),
      h("p", { dataset: { id: "peer-id-copy" } }, "Peer ID ", copy),
      h("p", {}, h("code", { id: "peer-id", class: "wrap" }, s.peer_id)),
      h("p", { class: "muted small" }, `Tandem ${s.version} · data in ${s.data_dir || "memory"}`),
      s.identity && !s.identity.ready ? h("p", { id: "identity-state" }, `Identity: ${s.identity.text}.`) : null,
      h("h3", {}, "Addresses"),
      addrs.length
        ? h("ul", { class: "addr-list", id: "addrs" }, ...addrs.map((a) => h("li", {}, h("code", { class: "wrap" }, a))))
        : h("p", { class: "muted" }, "No listen addresses."),
      h("p", { class: "muted small" }, "Give an address to a friend (the first ones are the most likely to work: public, then your local network): they can add it with ",
        h("code", {}, "tandem up --peer ADDRESS"), "."));
  }

  function renderReach(r) {
    let verdict;
    let hint;
    let kind = "ok";
    if (r.local_only) {
      verdict = "Local only";
      hint = "This node does not use the public network (no bootstrap peers, no mDNS): only the peers you list with --peer can find you.";
      kind = "info";
    } else if (r.connected_peers === 0) {
      verdict = "Not connected";
      hint = "You are not connected to any peer, so nobody sees your open slots and nobody can be matched with you. Check your internet connection, or add a peer you know with --peer.";
      kind = "bad";
    } else if (r.reachability === "public") {
      verdict = "Public";
      hint = "Other peers can dial you directly. If nobody shows up, there may simply be nobody free at that time: try Focus now, or a busier hour.";
    } else if (r.reachability === "private" && r.relay_addrs > 0) {
      verdict = "Private, relayed";
      hint = "You are behind a NAT. Peers reach you through a relay and then try a direct connection (hole punching). Matching works; video needs the direct connection or a TURN server.";
      kind = "info";
    } else if (r.reachability === "private") {
      verdict = "Private";
      hint = "You are behind a NAT and have no relay yet, so peers cannot dial you (you can still dial them). If nobody ever shows up, allow UPnP on your router or wait a minute for a relay.";
      kind = "warn";
    } else {
      verdict = "Checking";
      hint = "Your node is still finding out whether other peers can reach it; this takes a minute or two after the start.";
      kind = "info";
    }
    reach.replaceChildren(
      h("h2", {}, "Reachability"),
      h("p", { class: ["verdict", kind], id: "reach-verdict" }, verdict),
      h("p", {}, hint),
      h("p", { class: "muted small" },
        `${r.connected_peers} connected ${r.connected_peers === 1 ? "peer" : "peers"}${r.relayed_conns ? ` (${r.relayed_conns} through a relay)` : ""} · ${r.public_addrs} public and ${r.relay_addrs} relay addresses`));
  }

  // renderTried says what discovery did and what came of it. Its times are
  // the node's wall clock, on this same computer: compared with Date.now().
  function renderTried(d) {
    const ago = (iso) => {
      const s = Math.round((Date.now() - Date.parse(iso)) / 1000);
      return s < 5 ? "just now" : s < 90 ? `${s} s ago` : s < 90 * 60 ? `${Math.round(s / 60)} min ago` : `at ${fmtTime(iso)}`;
    };
    const seedList = (list, id) => h("ul", { class: "seed-list", id }, ...list.map((b) => {
      const state = b.connected ? "connected" : b.state;
      const text = { connected: "connected", reached: "reached, not connected now", unreachable: "unreachable", trying: "trying…" }[state];
      return h("li", { class: ["seed", state] },
        h("span", { class: "seed-state" }, text), " ",
        h("code", { class: "wrap", title: b.peer }, b.addr || shortID(b.peer)),
        b.error && !b.connected ? h("div", { class: "muted small" }, b.error, b.last_try ? ` (${ago(b.last_try)})` : "") : null);
    }));
    const count = (list) => {
      const ok = list.filter((b) => b.connected || b.state === "reached").length;
      return !d.start_dials_done && ok === 0 ? `trying ${list.length}…` : `${ok} of ${list.length} reached`;
    };
    const r = d.rendezvous || {};
    const rows = [];
    const row = (id, label, result, kind, extra) =>
      rows.push(h("li", { id, class: ["tried", kind] }, h("strong", {}, label), " ", h("span", { class: "tried-result" }, result), extra || null));

    if (d.local_only) {
      row("tried-mode", "Mode:", "local only: no bootstrap peers and no LAN search, so only peers you add (or that add you) connect.", "info");
    }
    if (d.public_dht) {
      row("tried-bootstrap", "Bootstrap peers:", `the public IPFS ones, ${count(d.bootstrap)}.`, d.bootstrap.some((b) => b.connected || b.state === "reached") ? "ok" : d.start_dials_done ? "bad" : "info");
    } else if (d.bootstrap.length) {
      row("tried-bootstrap", "Bootstrap peers:", `${count(d.bootstrap)}.`, d.bootstrap.some((b) => b.connected || b.state === "reached") ? "ok" : d.start_dials_done ? "bad" : "info",
        seedList(d.bootstrap, "bootstrap-list"));
    } else {
      row("tried-bootstrap", "Bootstrap peers:", ["none configured (add one with ", h("code", {}, "--bootstrap MULTIADDR"), ")."], "off");
    }
    if (d.static.length) {
      row("tried-static", "Direct peers (--peer):", `${count(d.static)}; unreachable ones are tried again on every round.`,
        d.static.some((b) => b.connected) ? "ok" : d.start_dials_done ? "bad" : "info", seedList(d.static, "static-list"));
    } else {
      row("tried-static", "Direct peers (--peer):", "none.", "off");
    }
    if (d.mdns_error) {
      row("tried-mdns", "Your network (mDNS):", `could not start: ${d.mdns_error}`, "bad");
    } else if (d.mdns) {
      row("tried-mdns", "Your network (mDNS):", d.lan_peers ? `on; ${d.lan_peers} Tandem ${d.lan_peers === 1 ? "node" : "nodes"} found on your network so far.` : "on; no other Tandem node on your network so far.", d.lan_peers ? "ok" : "info");
    } else {
      row("tried-mdns", "Your network (mDNS):", ["off (", h("code", {}, "--no-mdns"), " or ", h("code", {}, "mdns = false"), ")."], "off");
    }
    if (r.rounds) {
      row("tried-dht", "DHT search:", `${r.rounds} ${r.rounds === 1 ? "search" : "searches"}; the last, ${ago(r.last_search)}, ${r.last_error ? `failed: ${r.last_error}` : `found ${r.last_found} Tandem ${r.last_found === 1 ? "node" : "nodes"}`}.`,
        r.last_error ? "warn" : r.last_found ? "ok" : "info");
    } else if (r.skipped) {
      row("tried-dht", "DHT search:", "waiting: it needs at least one connected peer to ask.", "info");
    } else {
      row("tried-dht", "DHT search:", "not yet.", "info");
    }
    // "failed to find any peer in table": the DHT knows nobody to store it on.
    const advErr = /any peer in table/.test(r.advertise_error || "") ? "nobody to store it on yet" : r.advertise_error;
    row("tried-advertise", "Announced in the DHT:", r.advertised_at ? `yes, ${ago(r.advertised_at)}.` : advErr ? `not yet: ${advErr}.` : "not yet.", r.advertised_at ? "ok" : "info");
    tried.replaceChildren(h("h2", {}, "What your node tried"), h("ul", { class: "tried-list" }, ...rows));
  }

  function renderPeers(list) {
    peers.replaceChildren(
      h("h2", {}, "Connected peers ", h("span", { class: "count", id: "peer-count" }, String(list.length))),
      list.length
        ? h("table", { class: "peers-table" },
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Peer"), h("th", { scope: "col" }, "Address"), h("th", { scope: "col" }, "Latency"), h("th", { scope: "col" }, "Direction"))),
          h("tbody", {}, ...list.map((p) => h("tr", {},
            h("td", {}, h("code", { title: p.id }, shortID(p.id))),
            h("td", {}, h("code", { class: "wrap" }, p.addrs[0] || "")),
            h("td", {}, p.latency_ms ? `${p.latency_ms.toFixed(1)} ms` : "–"),
            h("td", {}, p.direction)))))
        : h("p", { class: "muted" }, "No peers connected."));
  }

  const reload = debounce(load, 200);
  const offs = [on("peer-connected", reload), on("peer-disconnected", reload)];
  const t = setInterval(load, 15000);
  load();
  return () => {
    offs.forEach((f) => f());
    clearInterval(t);
  };
}
