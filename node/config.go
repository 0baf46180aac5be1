package node

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"github.com/pion/stun/v4"
	"github.com/pion/webrtc/v4"

	"github.com/tandem-cowork/tandem/matchmaking"
	"github.com/tandem-cowork/tandem/node/peerturn"
	"github.com/tandem-cowork/tandem/session/usertext"
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
	// LANOnly: find peers by mDNS and talk to nothing beyond the LAN (no
	// bootstrap, DHT, public STUN or UPnP; see lanonly.go).
	LANOnly bool `toml:"lan_only"`
	// CircleScope and CircleOpenAfterMin are the scope of bookings that
	// do not name one: "anyone" (default), "circle" or "circle-first",
	// and the minutes a circle-first booking waits for its circle (10).
	CircleScope        string `toml:"circle_scope"`
	CircleOpenAfterMin int    `toml:"circle_open_after_min"`
	// NATPortMap asks the router for a port mapping (UPnP/NAT-PMP). It is
	// used only when the node talks to the internet (see wantsPortMap),
	// because the search multicasts on the LAN.
	NATPortMap bool `toml:"nat_port_map"`
	// RelayService: when AutoNAT finds the node publicly reachable, it
	// relays small protocol messages (circuit relay v2) for peers behind
	// NATs, so that they can be matched. On by default.
	RelayService bool `toml:"relay_service"`
	// Name is the display name shown to partners (can be changed at run time).
	Name string `toml:"name"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `toml:"log_level"`
	// DesktopNotify: `tandem up` shows the reminders and match notices of
	// the UI settings as desktop notifications (notify-send, osascript).
	// The node itself does not read it.
	DesktopNotify bool `toml:"desktop_notify"`
	// LogFormat is text or json (JSON lines), for our logs and libp2p's.
	LogFormat string `toml:"log_format"`
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
	// ICEServers are the STUN/TURN servers for the media path between
	// nodes. nil means DefaultICEServers, except in local-only mode (none).
	ICEServers []ICEServer `toml:"ice_servers"`
	// TURN is the STUN server and TURN relay this node may run for other
	// Tandem nodes, and whether it uses the ones they run.
	TURN TURNConfig `toml:"turn"`
	// Now is the clock bookings and sessions follow (tests and the demo
	// inject one); nil means time.Now.
	Now func() time.Time `toml:"-"`
	// ClockRate says how fast Now runs against real time (the demo's
	// --short runs 12.5 times faster); the UI shows it. 0 means 1.
	ClockRate float64 `toml:"-"`
	// Rate, if set, says how fast Now runs at this moment (the demo's
	// clock, which a test slows down while a session connects); ClockRate
	// is then the fastest it runs, which sets how often sessions check
	// their schedule. Call Node.ClockChanged when the pace changes.
	Rate func() float64 `toml:"-"`
	// Demo marks the node of `tandem demo` (shown in the UI).
	Demo bool `toml:"-"`
}

// MatchmakingConfig holds the matcher's knobs that a config file may set.
type MatchmakingConfig struct {
	// FavouritesOnly: only favourites may be matched with this node.
	FavouritesOnly bool `toml:"favourites_only"`
	// StampBits lowers the identity stamp's difficulty (0: the protocol's,
	// matchmaking.StampBits). For tests and local-only swarms: peers at
	// the protocol's difficulty refuse offers with a cheaper stamp.
	StampBits int `toml:"stamp_bits"`
	// AnnounceInterval and OfferTTL override the matcher's defaults
	// (30 s, 90 s, both on the node's clock, Now).
	AnnounceInterval time.Duration `toml:"-"`
	OfferTTL         time.Duration `toml:"-"`
	// OffersV1 says when the node also uses version 1's single offer
	// topic: "auto" (default: while a version 1 peer is connected),
	// "always" or "off".
	OffersV1 string `toml:"offers_v1"`
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
		API:          DefaultAPIAddr,
		TURN:         TURNConfig{Port: DefaultTURNPort, TLSPort: DefaultTURNTLSPort},
		MDNS:         true,
		NATPortMap:   true,
		RelayService: true,
		LogLevel:     "info",
		LogFormat:    "text",
	}
}

// LoadConfigFile overlays the TOML file at path onto cfg. A missing file is
// not an error: most users never write one. For a file the user named
// (--config), use ReadConfigFile.
func LoadConfigFile(path string, cfg *Config) error {
	err := ReadConfigFile(path, cfg)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// ReadConfigFile overlays the TOML file at path onto cfg; a missing file is
// an error that wraps os.ErrNotExist.
func ReadConfigFile(path string, cfg *Config) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("config file %s does not exist: %w", path, os.ErrNotExist)
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

// Validate checks every setting before anything starts, with the same rules
// the API and the wire apply later: a setting that would only fail once the
// node runs (a name every peer refuses, a TURN server without credentials)
// stops the start with a clear error instead.
func (c Config) Validate() error {
	if c.DataDir == "" && !c.InMemory {
		return errors.New("no data dir")
	}
	if _, err := usertext.CheckName(c.Name); err != nil {
		return fmt.Errorf("name (config key or --name): %w", err)
	}
	if b := c.Matchmaking.StampBits; b < 0 || b > 32 {
		return fmt.Errorf("matchmaking.stamp_bits %d: want 0 (the protocol's difficulty) to 32", b)
	}
	if c.LogLevel != "" {
		if _, err := ParseLogLevel(c.LogLevel); err != nil {
			return err
		}
	}
	if c.LogFormat != "" {
		if err := CheckLogFormat(c.LogFormat); err != nil {
			return err
		}
	}
	for i, s := range c.ICEServers {
		if err := s.validate(); err != nil {
			return fmt.Errorf("ice_servers[%d]: %w", i, err)
		}
	}
	if err := c.TURN.validate(); err != nil {
		return fmt.Errorf("turn: %w", err)
	}
	if c.Matchmaking.AnnounceInterval < 0 || c.Matchmaking.OfferTTL < 0 {
		return fmt.Errorf("matchmaking intervals must not be negative (announce %v, offer TTL %v)",
			c.Matchmaking.AnnounceInterval, c.Matchmaking.OfferTTL)
	}
	switch c.CircleScope {
	case "", "anyone", "circle", "circle-first":
	default:
		return fmt.Errorf("circle_scope %q: want anyone, circle or circle-first", c.CircleScope)
	}
	if c.CircleOpenAfterMin < 0 || c.CircleOpenAfterMin > 14*24*60 {
		return fmt.Errorf("circle_open_after_min %d: want 1 to %d minutes (0 for the default, 10)", c.CircleOpenAfterMin, 14*24*60)
	}
	if _, err := c.withLANOnly(); err != nil {
		return err
	}
	switch c.Matchmaking.OffersV1 {
	case "", string(matchmaking.V1Auto), string(matchmaking.V1Always), string(matchmaking.V1Off):
	default:
		return fmt.Errorf("matchmaking.offers_v1 %q: want auto, always or off", c.Matchmaking.OffersV1)
	}
	if c.ClockRate < 0 {
		return fmt.Errorf("clock rate %v must not be negative", c.ClockRate)
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

// LogFormats are the log formats `tandem up` writes: slog's text, or
// JSON lines.
var LogFormats = []string{"text", "json"}

// CheckLogFormat refuses a log format other than LogFormats.
func CheckLogFormat(s string) error {
	for _, f := range LogFormats {
		if s == f {
			return nil
		}
	}
	return fmt.Errorf("log format %q: want text or json", s)
}

// ICEServer is one STUN or TURN server for the media path between nodes.
// In the config file an entry is either a URL string
// ("stun:stun.example.org:3478") or a table with urls (a string or a list),
// username and credential, as a TURN server needs.
type ICEServer struct {
	URLs       []string `toml:"urls"`
	Username   string   `toml:"username"`
	Credential string   `toml:"credential"`
}

// UnmarshalTOML reads an ice_servers entry: a string or a table.
func (s *ICEServer) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case string:
		*s = ICEServer{URLs: []string{v}}
		return nil
	case map[string]any:
		var out ICEServer
		for k, val := range v {
			switch k {
			case "urls":
				switch u := val.(type) {
				case string:
					out.URLs = []string{u}
				case []any:
					for _, e := range u {
						str, ok := e.(string)
						if !ok {
							return fmt.Errorf("ice_servers entry: urls must be strings, not %T", e)
						}
						out.URLs = append(out.URLs, str)
					}
				default:
					return fmt.Errorf("ice_servers entry: urls must be a string or a list of strings, not %T", val)
				}
			case "username", "credential":
				str, ok := val.(string)
				if !ok {
					return fmt.Errorf("ice_servers entry: %s must be a string, not %T", k, val)
				}
				if k == "username" {
					out.Username = str
				} else {
					out.Credential = str
				}
			default:
				return fmt.Errorf("ice_servers entry: unknown key %q (want urls, username, credential; see docs/config.md)", k)
			}
		}
		*s = out
		return nil
	}
	return fmt.Errorf("ice_servers entry: want a URL string or a table {urls, username, credential}, not %T", v)
}

// validate parses every URL as WebRTC will, and refuses a TURN URL without
// a username and a credential: pion would refuse it only when the first
// session opens, and video would silently fail to connect.
func (s ICEServer) validate() error {
	if len(s.URLs) == 0 {
		return errors.New("no urls")
	}
	for _, u := range s.URLs {
		uri, err := stun.ParseURI(u)
		if err != nil {
			return fmt.Errorf("%q is not a stun:, stuns:, turn: or turns: URL: %w", u, err)
		}
		isTURN := uri.Scheme == stun.SchemeTypeTURN || uri.Scheme == stun.SchemeTypeTURNS
		if isTURN && (s.Username == "" || s.Credential == "") {
			return fmt.Errorf("TURN server %q needs a username and a credential: write the entry as "+
				"{ urls = %q, username = \"...\", credential = \"...\" } (see docs/config.md)", u, u)
		}
	}
	return nil
}

// webrtc turns the entry into pion's form.
func (s ICEServer) webrtc() webrtc.ICEServer {
	out := webrtc.ICEServer{URLs: s.URLs}
	if s.Username != "" || s.Credential != "" {
		out.Username, out.Credential, out.CredentialType = s.Username, s.Credential, webrtc.ICECredentialTypePassword
	}
	return out
}

// TURN helper modes (TURNConfig.Offer).
const (
	TURNOfferAuto = "auto" // when AutoNAT finds this node publicly reachable
	TURNOfferOn   = "on"   // always (a node the user knows is reachable)
	TURNOfferOff  = "off"  // never
)

// DefaultTURNPort is the STUN/TURN port a node that helps listens on (UDP
// and TCP), the standard one; when it is taken, any free port.
const DefaultTURNPort = 3478

// DefaultTURNTLSPort is the TURN-over-TLS port of a node that helps, the
// standard one; when it is taken, any free port.
const DefaultTURNTLSPort = peerturn.DefaultTLSPort

// TURNConfig is the [turn] table: the STUN server and TURN relay a
// publicly reachable node runs for others (see package peerturn), its
// limits, and whether this node uses the relays other nodes offer.
type TURNConfig struct {
	// Offer is "auto" (the default: while AutoNAT finds this node publicly
	// reachable), "on" or "off".
	Offer string `toml:"offer"`
	// Port is the UDP and TCP port; 0 means any free port. Default()
	// sets DefaultTURNPort.
	Port int `toml:"port"`
	// TLS serves TURN over TLS too (for networks that let only TCP out,
	// or only TLS past a middlebox), with a self-signed certificate the
	// /tandem/turn/1 grant pins; nil means yes. TLSPort is its TCP port;
	// 0 means any free port. Default() sets DefaultTURNTLSPort.
	TLS     *bool `toml:"tls"`
	TLSPort int   `toml:"tls_port"`
	// RelayIP is the public IPv4 address put in relay candidates; empty
	// means the first public IPv4 address libp2p knows for this node.
	RelayIP string `toml:"relay_ip"`
	// MaxAllocationsPerPeer and MaxAllocations bound relay allocations per
	// peer and in total; PeerKbps and TotalKbps bound relayed traffic in
	// kbit/s (both directions together). Zero means the defaults (4, 64,
	// 2000, 10000).
	MaxAllocationsPerPeer int `toml:"max_allocations_per_peer"`
	MaxAllocations        int `toml:"max_allocations"`
	PeerKbps              int `toml:"peer_kbps"`
	TotalKbps             int `toml:"total_kbps"`
	// UsePeers asks the helpers among this node's peers for TURN
	// credentials before each session connects; nil means yes.
	UsePeers *bool `toml:"use_peers"`
	// RelayOnly sends session media only through TURN relays, never
	// directly: the partner does not learn this node's addresses (and
	// tests force the relay path with it).
	RelayOnly bool `toml:"relay_only"`
}

func (t TURNConfig) offer() string {
	if t.Offer == "" {
		return TURNOfferAuto
	}
	return strings.ToLower(t.Offer)
}

func (t TURNConfig) usePeers() bool { return t.UsePeers == nil || *t.UsePeers }

func (t TURNConfig) tls() bool { return t.TLS == nil || *t.TLS }

func (t TURNConfig) validate() error {
	switch t.offer() {
	case TURNOfferAuto, TURNOfferOn, TURNOfferOff:
	default:
		return fmt.Errorf("offer %q: want auto, on or off", t.Offer)
	}
	if t.Port < 0 || t.Port > 65535 {
		return fmt.Errorf("port %d: want 0 to 65535", t.Port)
	}
	if t.TLSPort < 0 || t.TLSPort > 65535 {
		return fmt.Errorf("tls_port %d: want 0 to 65535", t.TLSPort)
	}
	if t.tls() && t.TLSPort != 0 && t.TLSPort == t.Port {
		return fmt.Errorf("tls_port %d is port too: TURN over TCP and over TLS need a TCP port each", t.TLSPort)
	}
	if t.RelayIP != "" {
		if ip := net.ParseIP(t.RelayIP); ip == nil || ip.To4() == nil || ip.IsUnspecified() {
			return fmt.Errorf("relay_ip %q: want an IPv4 address", t.RelayIP)
		}
	}
	if t.MaxAllocationsPerPeer < 0 || t.MaxAllocations < 0 || t.PeerKbps < 0 || t.TotalKbps < 0 {
		return errors.New("limits must not be negative")
	}
	return nil
}
