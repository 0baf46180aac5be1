// Network: this node's peer ID and addresses, the peers it is connected
// to, and whether other peers can reach it, so a user can tell why nobody
// shows up.
import { get, on, debounce } from "../api.js";
import { h, showError, shortID, toast } from "../dom.js";

export const title = "Network";

export function mount(el) {
  const err = h("p", { class: "error", role: "alert", hidden: true });
  const identity = h("section", { class: "card", id: "identity" });
  const reach = h("section", { class: "card", id: "reachability" });
  const peers = h("section", { class: "card", id: "peers" });
  el.append(h("h1", {}, "Network"), err, h("div", { class: "net-grid" }, reach, identity), peers);

  async function load() {
    try {
      const [status, list, r] = await Promise.all([get("/status"), get("/peers"), get("/reachability")]);
      showError(err, null);
      renderIdentity(status);
      renderReach(r);
      renderPeers(list);
    } catch (e) {
      showError(err, e);
    }
  }

  function renderIdentity(s) {
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
      h("p", {}, "Peer ID ", copy),
      h("p", {}, h("code", { id: "peer-id", class: "wrap" }, s.peer_id)),
      h("p", { class: "muted small" }, `Tandem ${s.version} · data in ${s.data_dir || "memory"}`),
      h("h3", {}, "Addresses"),
      s.addrs.length
        ? h("ul", { class: "addr-list", id: "addrs" }, ...s.addrs.map((a) => h("li", {}, h("code", { class: "wrap" }, a))))
        : h("p", { class: "muted" }, "No listen addresses."),
      h("p", { class: "muted small" }, "Give an address to a friend: they can add it with ", h("code", {}, "tandem up --peer ADDRESS"), "."));
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
