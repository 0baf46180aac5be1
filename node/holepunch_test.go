package node_test

import (
	"slices"
	"testing"

	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"

	"github.com/tandem-cowork/tandem/node"
	"github.com/tandem-cowork/tandem/node/nodetest"
)

// The hole punching (DCUtR) handler is registered when New returns, before
// Start dials anyone. libp2p's own setup registers it only once the host
// knows a public address of its own; a node that started later was reached
// through its partner's relay before that, the partner's hole punch failed
// with "protocols not supported", and libp2p never tried again (see the
// NAT lab's cone-cone-staggered cell). A node on loopback never learns a
// public address, so there the handler never came at all.
func TestHolePunchHandlerBeforeDialling(t *testing.T) {
	n, err := node.New(nodetest.Config(t), nodetest.Logger(t, "warn"))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop()
	if protos := n.Host().Mux().Protocols(); !slices.Contains(protos, holepunch.Protocol) {
		t.Fatalf("no %s handler after New (handlers: %v)", holepunch.Protocol, protos)
	}
	if peers := n.Host().Network().Peers(); len(peers) != 0 {
		t.Fatalf("connected to %v before Start", peers)
	}
}
