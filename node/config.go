package node

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// DefaultAPIAddr is where the local API and web UI listen unless told
// otherwise. When the port is taken (a second node on this machine) the node
// falls back to any free port and prints the URL it got.
const DefaultAPIAddr = "127.0.0.1:7480"

// BootstrapNone is the bootstrap list entry that turns off the default
// public bootstrap peers (offline / local-only mode).
const BootstrapNone = "none"

// Config is everything a node needs to start. The zero value is not useful;
// start from Default and override.
type Config struct {
	// DataDir holds the identity, the store and the API file.
	DataDir string `toml:"data_dir"`
	// Listen are libp2p listen multiaddrs.
	Listen []string `toml:"listen"`
	// API is the HOST:PORT of the local HTTP API; it must be a loopback address.
	API string `toml:"api"`
	// Bootstrap replaces the default public (Amino DHT) bootstrap peers.
	// nil means the defaults; ["none"] means no bootstrap at all.
	Bootstrap []string `toml:"bootstrap"`
	// Peers are dialled directly at start and redialled when they drop.
	Peers []string `toml:"peers"`
	// MDNS turns on LAN discovery by multicast DNS.
	MDNS bool `toml:"mdns"`
	// NATPortMap asks the router for a port mapping (UPnP/NAT-PMP). It is
	// used only when the node talks to the internet (see wantsPortMap),
	// because the search multicasts on the LAN.
	NATPortMap bool `toml:"nat_port_map"`
	// Name is the display name shown to partners (can be changed at run time).
	Name string `toml:"name"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `toml:"log_level"`
	// InMemory keeps the store in memory (tests and benchmarks only).
	InMemory bool `toml:"-"`
	// LowResources swaps the auto-scaled libp2p resource manager for a null
	// one; many hosts in one process (tests, benchmarks) need it.
	LowResources bool `toml:"-"`
	// Matchmaking tunes the matcher (tests shorten its timers).
	Matchmaking MatchmakingConfig `toml:"matchmaking"`
	// AutoRematch finds a new partner by itself when the partner is 2
	// minutes late.
	AutoRematch bool `toml:"auto_rematch"`
	// ICEServers are STUN/TURN URLs for the media path between nodes.
	// nil means DefaultICEServers, except in local-only mode (none).
	ICEServers []string `toml:"ice_servers"`
	// Now is the clock bookings and sessions follow (tests and the demo
	// inject one); nil means time.Now.
	Now func() time.Time `toml:"-"`
	// ClockRate says how fast Now runs against real time (the demo's
	// --short runs 12.5 times faster); the UI shows it. 0 means 1.
	ClockRate float64 `toml:"-"`
	// Demo marks the node of `tandem demo` (shown in the UI).
	Demo bool `toml:"-"`
}

// MatchmakingConfig holds the matcher's knobs that a config file may set.
type MatchmakingConfig struct {
	// FavouritesOnly: only favourites may be matched with this node.
	FavouritesOnly bool `toml:"favourites_only"`
	// AnnounceInterval and OfferTTL override the matcher's defaults
	// (30 s, 90 s); the demo's compressed clock needs them scaled.
	AnnounceInterval time.Duration `toml:"-"`
	OfferTTL         time.Duration `toml:"-"`
}

// Default returns the configuration of a node for a real user on the
// internet: public DHT bootstrap, mDNS, UPnP.
func Default() Config {
	return Config{
		DataDir: DefaultDataDir(os.Getenv),
		Listen: []string{
			"/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1",
			"/ip6/::/tcp/0", "/ip6/::/udp/0/quic-v1",
		},
		API:        DefaultAPIAddr,
		MDNS:       true,
		NATPortMap: true,
		LogLevel:   "info",
	}
}

// LoadConfigFile overlays the TOML file at path onto cfg. A missing file is
// not an error: most users never write one.
func LoadConfigFile(path string, cfg *Config) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading config: %w", err)
	}
	md, err := toml.Decode(string(data), cfg)
	if err != nil {
		return fmt.Errorf("parsing config %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return fmt.Errorf("config %s: unknown key %q (see docs/config.md)", path, und[0].String())
	}
	return nil
}

// LocalOnly reports whether the node must not talk to anything beyond the
// peers it is given: no public bootstrap list and no multicast.
func (c Config) LocalOnly() bool { return c.bootstrapNone() && !c.MDNS }

func (c Config) bootstrapNone() bool {
	for _, b := range c.Bootstrap {
		if strings.EqualFold(b, BootstrapNone) {
			return true
		}
	}
	return false
}

// wantsPortMap reports whether to search the LAN for a UPnP/NAT-PMP router:
// only when enabled and some bootstrap peer is beyond this machine (the
// public defaults, or a private swarm's own). With --bootstrap none or
// loopback-only bootstrap peers (tests, a swarm on one machine) nothing is
// sent to the LAN.
func (c Config) wantsPortMap() bool {
	if !c.NATPortMap || c.bootstrapNone() {
		return false
	}
	if c.usesPublicDHT() {
		return true
	}
	for _, a := range c.Bootstrap {
		if m, err := multiaddr.NewMultiaddr(a); err == nil && !manet.IsIPLoopback(m) {
			return true
		}
	}
	return false
}

// usesPublicDHT reports whether the node joins the public Amino DHT.
func (c Config) usesPublicDHT() bool { return c.Bootstrap == nil }

// Validate checks what can be checked before anything starts.
func (c Config) Validate() error {
	if c.DataDir == "" && !c.InMemory {
		return errors.New("no data dir")
	}
	if !isLoopbackHostPort(c.API) {
		return fmt.Errorf("api address %q: must be a loopback HOST:PORT (127.0.0.1, ::1 or localhost)", c.API)
	}
	for _, a := range c.Listen {
		if _, err := multiaddr.NewMultiaddr(a); err != nil {
			return fmt.Errorf("bad multiaddr %q: %w", a, err)
		}
	}
	// Peers and bootstrap peers need their /p2p/ part. Checked here, not
	// when discovery starts: by then the host exists and may already have
	// multicast a UPnP search on the LAN.
	if _, err := parseAddrInfos(c.Peers); err != nil {
		return fmt.Errorf("bad peer: %w", err)
	}
	if c.bootstrapNone() && len(c.Bootstrap) > 1 {
		return fmt.Errorf(`bootstrap "none" cannot be combined with bootstrap addresses`)
	}
	if !c.bootstrapNone() {
		if _, err := parseAddrInfos(c.Bootstrap); err != nil {
			return fmt.Errorf("bad bootstrap peer: %w", err)
		}
	}
	return nil
}

// ParseLogLevel maps a level name to slog.
func ParseLogLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log level %q: want debug, info, warn or error", s)
	}
	return l, nil
}
