package node

import (
	"context"
	"net"
	"slices"
	"strings"
	"time"
)

// netCheckEvery is how often the node looks at its network interfaces.
const netCheckEvery = 5 * time.Second

// watchNetwork restarts ICE on the open sessions when this machine's
// addresses change (Wi-Fi to cable, a new DHCP lease, a VPN coming up):
// the sessions look for a new path on the same connection instead of
// waiting for it to fail. A node whose traffic stays on loopback has
// nothing to watch.
func (n *Node) watchNetwork(ctx context.Context) {
	if n.loopbackOnly() {
		return
	}
	watchAddrs(ctx, net.InterfaceAddrs, time.Tick(netCheckEvery), func(was, now string) {
		n.log.Info("network addresses changed: restarting ICE on open sessions", "was", was, "now", now)
		n.sm.RestartICE()
	})
}

// watchAddrs calls changed whenever the addresses read at a tick differ
// from the ones before, until ctx ends.
func watchAddrs(ctx context.Context, addrs func() ([]net.Addr, error), tick <-chan time.Time, changed func(was, now string)) {
	last := interfaceIPs(addrs)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
		}
		cur := interfaceIPs(addrs)
		if cur == "" || cur == last {
			continue
		}
		changed(last, cur)
		last = cur
	}
}

// interfaceIPs is the sorted list of this machine's non-loopback,
// non-link-local IP addresses, as one string ("" if it cannot be read).
func interfaceIPs(addrs func() ([]net.Addr, error)) string {
	as, err := addrs()
	if err != nil {
		return ""
	}
	var ips []string
	for _, a := range as {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.IsLoopback() || ipn.IP.IsLinkLocalUnicast() {
			continue
		}
		ips = append(ips, ipn.IP.String())
	}
	slices.Sort(ips)
	return strings.Join(ips, " ")
}
