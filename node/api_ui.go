package node

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/tandem-cowork/tandem/matchmaking"
	"github.com/tandem-cowork/tandem/node/apiv1"
)

// The endpoints the web UI needs beyond the CLI's:
//
//	GET /api/v1/settings      the user's UI settings (defaults for a new
//	PUT /api/v1/settings      booking, sounds, notifications, auto rematch)
//	GET /api/v1/reachability  can other peers dial us: public, private,
//	                          relayed, and why nobody may show up
//	GET /api/v1/discovery     what discovery tried and with what result
//	                          (bootstrap and direct peers, mDNS, DHT
//	                          rendezvous) and the addresses to share

// settingsKey is where the UI settings live in the node's store.
const settingsKey = "ui/settings"

// UISettings is GET/PUT /api/v1/settings (apiv1.Settings).
type UISettings = apiv1.Settings

// Reminder lead times the settings accept, in minutes.
const (
	defaultRemindBeforeMin = 5
	maxRemindBeforeMin     = 120
)

// Reachability is GET /api/v1/reachability.
type Reachability struct {
	// Reachability is AutoNAT's verdict: public, private or unknown
	// ("private" before it for a node with no public address that found
	// a relay, see earlyRelay).
	Reachability string `json:"reachability"`
	// PublicAddrs and RelayAddrs count our addresses that the internet can
	// dial directly and those through a circuit relay.
	PublicAddrs int  `json:"public_addrs"`
	RelayAddrs  int  `json:"relay_addrs"`
	LocalOnly   bool `json:"local_only"`
	// ConnectedPeers counts peers we hold a connection to; RelayedConns
	// those connections that go through a relay.
	ConnectedPeers int `json:"connected_peers"`
	RelayedConns   int `json:"relayed_conns"`
}

func (n *Node) defaultUISettings() UISettings {
	return UISettings{
		DefaultDurationMin: 50, DefaultActivity: matchmaking.ActivityAnything,
		Sounds: true, AutoRematch: n.cfg.AutoRematch,
		RemindBeforeMin:     defaultRemindBeforeMin,
		DefaultScope:        cmp.Or(matchmaking.Scope(n.cfg.CircleScope), matchmaking.ScopeAnyone),
		DefaultOpenAfterMin: cmp.Or(n.cfg.CircleOpenAfterMin, matchmaking.DefaultOpenAfterMin),
	}
}

func (n *Node) uiSettings() (UISettings, error) {
	s := n.defaultUISettings()
	err := n.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get([]byte(settingsKey))
		if err != nil {
			return err
		}
		return it.Value(func(v []byte) error { return json.Unmarshal(v, &s) })
	})
	if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
		return s, fmt.Errorf("loading settings: %w", err)
	}
	return s, nil
}

func (n *Node) putUISettings(w http.ResponseWriter, r *http.Request) {
	// A field the request leaves out keeps its value (an older page
	// that does not know a newer setting must not reset it).
	s, err := n.uiSettings()
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if !readJSON(w, r, &s) {
		return
	}
	if s.RemindBeforeMin < 1 || s.RemindBeforeMin > maxRemindBeforeMin {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("remind_before_min %d: want 1 to %d minutes", s.RemindBeforeMin, maxRemindBeforeMin))
		return
	}
	if err := matchmaking.CheckDuration(s.DefaultDurationMin); err != nil {
		writeErr(w, err)
		return
	}
	act, err := matchmaking.CheckActivity(s.DefaultActivity)
	if err != nil {
		writeErr(w, err)
		return
	}
	s.DefaultActivity = act
	s.DefaultScope = cmp.Or(s.DefaultScope, matchmaking.ScopeAnyone)
	s.DefaultOpenAfterMin = cmp.Or(s.DefaultOpenAfterMin, matchmaking.DefaultOpenAfterMin)
	switch s.DefaultScope {
	case matchmaking.ScopeAnyone, matchmaking.ScopeCircle, matchmaking.ScopeCircleFirst:
	default:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("default_scope %q: want anyone, circle or circle-first", s.DefaultScope))
		return
	}
	if s.DefaultOpenAfterMin < 1 || s.DefaultOpenAfterMin > 14*24*60 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("default_open_after_min %d: want 1 to %d minutes", s.DefaultOpenAfterMin, 14*24*60))
		return
	}
	data, err := json.Marshal(s)
	if err == nil {
		err = n.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(settingsKey), data) })
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, "saving settings: "+err.Error())
		return
	}
	writeJSON(w, s)
}

func (n *Node) reachability(ctx context.Context) Reachability {
	out := Reachability{Reachability: "unknown", LocalOnly: n.cfg.LocalOnly()}
	// AutoNAT's emitter is stateful: a new subscriber gets the last
	// verdict at once, if there was one.
	if sub, err := n.host.EventBus().Subscribe(new(event.EvtLocalReachabilityChanged)); err == nil {
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case ev := <-sub.Out():
			switch ev.(event.EvtLocalReachabilityChanged).Reachability {
			case network.ReachabilityPublic:
				out.Reachability = "public"
			case network.ReachabilityPrivate:
				out.Reachability = "private"
			}
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		sub.Close()
	}
	for _, a := range n.host.Addrs() {
		switch {
		case isCircuit(a):
			out.RelayAddrs++
		case manet.IsPublicAddr(a):
			out.PublicAddrs++
		}
	}
	for _, c := range n.host.Network().Conns() {
		if c.Stat().Limited || isCircuit(c.RemoteMultiaddr()) {
			out.RelayedConns++
		}
	}
	out.ConnectedPeers = len(n.host.Network().Peers())
	return out
}

func isCircuit(a ma.Multiaddr) bool {
	_, err := a.ValueForProtocol(ma.P_CIRCUIT)
	return err == nil
}

// uiAPI registers the web UI's endpoints.
func (n *Node) uiAPI(api *http.ServeMux) {
	api.HandleFunc("GET /api/v1/settings", func(w http.ResponseWriter, r *http.Request) {
		s, err := n.uiSettings()
		if err != nil {
			writeError(w, http.StatusInternalServerError, err.Error())
			return
		}
		writeJSON(w, s)
	})
	api.HandleFunc("PUT /api/v1/settings", n.putUISettings)
	api.HandleFunc("GET /api/v1/reachability", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, n.reachability(r.Context()))
	})
	api.HandleFunc("GET /api/v1/discovery", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, n.disc.status())
	})
}
