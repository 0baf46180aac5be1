package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/tandem-cowork/tandem/matchmaking"
)

// SwarmConfig configures RunSwarm. Zero values take the defaults.
type SwarmConfig struct {
	// Nodes is the swarm size (at least 2).
	Nodes int
	// Duration is how long the workload runs (default 60 s); settling and
	// checking come after it.
	Duration time.Duration
	// Seed makes the workload and topology reproducible (default 1).
	Seed uint64
	// Degree is how many random peers each node dials at start (default 4;
	// others dial it too, so about twice that many connections).
	Degree int
	// Sybils is how many attacker identities join the swarm for the
	// workload (sybils.go); 0: none.
	Sybils int
	// Transport is "tcp" (TCP, Noise, yamux: the default) or "quic". A TCP
	// connection between two nodes of the swarm costs the process two file
	// descriptors, a QUIC one none (a node's connections share its one UDP
	// socket), so large swarms fit the open-file limit only with QUIC.
	Transport string
	// NoLanes keeps public bookings on their day shards, as before slot
	// class topics and lanes (matchmaking.Config.NoLanes): for A/B runs.
	NoLanes bool
	// LaneVolume, if set, overrides matchmaking's lane volume
	// (matchmaking.Config.LaneVolume): for A/B runs.
	LaneVolume int
	// ClimbAlone, if set, overrides matchmaking's climbAlone
	// (matchmaking.Config.ClimbAlone): for A/B runs.
	ClimbAlone time.Duration
	// ClassLinger, if set, overrides matchmaking's classLinger
	// (matchmaking.Config.ClassLinger): for A/B runs.
	ClassLinger time.Duration
	// PartnerKeeps, if set, overrides matchmaking's partnerKeeps
	// (matchmaking.Config.PartnerKeeps): for A/B runs.
	PartnerKeeps int
	// Settle bounds the wait after the workload for matching to finish
	// (default 30 s).
	Settle time.Duration
	// Opportunity is how long two compatible requests must have been open
	// at the same time to count as a pair the swarm should have made
	// (default 1 s). See exactMax.
	Opportunity time.Duration
	// Dir is where the nodes' data dirs go (default os.TempDir()); they are
	// removed at the end.
	Dir string
	// Progress, if set, gets a progress bar (stderr).
	Progress io.Writer
	// Log gets the nodes' logs (default: discarded).
	Log *slog.Logger
	// IdleNode, if set, starts an idle `tandem up` in its own process and
	// returns its PID and a stop function; its RSS is reported.
	IdleNode func(ctx context.Context) (pid int, stop func() error, err error)
}

// SwarmResult is what RunSwarm measured. Latencies are in milliseconds.
type SwarmResult struct {
	Nodes       int     `json:"nodes"`
	Seed        uint64  `json:"seed"`
	CPUs        int     `json:"cpus"`
	LoadAvg     string  `json:"load_average_at_start"`
	LoadAvgEnd  string  `json:"load_average_at_end"`
	DurationS   float64 `json:"workload_s"`
	SettleS     float64 `json:"settle_s"`
	Connections float64 `json:"connections_per_node"`
	// ConnectionsEnd is the connections per node at the end; NewConns the
	// connections opened per node per minute during the run (each counted
	// at both ends).
	ConnectionsEnd float64 `json:"connections_per_node_at_end"`
	NewConns       float64 `json:"connections_opened_per_node_per_min"`

	Requests        int `json:"requests"`
	RequestsNow     int `json:"requests_now"`
	Refused         int `json:"requests_refused"`
	Cancelled       int `json:"requests_cancelled"`
	OfflineEpisodes int `json:"offline_episodes"`

	OffersPublished       int  `json:"offers_published"`
	WithdrawalsPublished  int  `json:"withdrawals_published"`
	Propagation           Dist `json:"offer_propagation"`
	PropagationIncomplete int  `json:"offer_propagation_incomplete"`

	TimeToMatch Dist       `json:"time_to_match"`
	FloorRatio  [3]float64 `json:"time_to_match_floor_ratio"` // p50, p95, p99

	MatchedPairs     int `json:"matched_pairs"`
	MaxPairs         int `json:"max_pairs"`
	MaxPairsUntimed  int `json:"max_pairs_ignoring_time"`
	DoubleBookings   int `json:"double_bookings"`
	OneSidedBookings int `json:"one_sided_bookings"`
	UnconfirmedAtEnd int `json:"unconfirmed_matches"`
	// Silences counts proposals an owner took and left unanswered past
	// the reply timeout (the owner is then left out of plans for a while:
	// matchmaking/reach.go). With no attackers, every one is a starved
	// honest node.
	Silences          int `json:"silences"`
	OpportunityMillis int `json:"opportunity_ms"`

	Traffic Traffic `json:"traffic_per_node_per_min"`

	RSSPerNodeMiB float64 `json:"rss_per_node_mib"`
	RSSMiB        float64 `json:"rss_total_mib"`
	RSSPeakMiB    float64 `json:"rss_peak_mib"`
	Transport     string  `json:"transport"`
	NoLanes       bool    `json:"no_lanes,omitempty"`
	LaneVolume    int     `json:"lane_volume,omitempty"`
	ClimbAloneS   float64 `json:"climb_alone_s,omitempty"`
	ClassLingerS  float64 `json:"class_linger_s,omitempty"`
	PartnerKeeps  int     `json:"partner_keeps,omitempty"`
	OpenFilesPeak int     `json:"open_files_peak"`
	HeapMiB       float64 `json:"heap_in_use_mib"`
	IdleNodeMiB   float64 `json:"idle_node_rss_mib,omitempty"`
	CPUUserS      float64 `json:"cpu_user_s"`
	CPUSysS       float64 `json:"cpu_sys_s"`
	CPUSetupS     float64 `json:"cpu_setup_s"`
	// MachineBusyPct is how busy the whole machine was during the
	// workload and settling (all processes, percent of all cores);
	// ProcessCPUPct the share of it this process used.
	MachineBusyPct float64 `json:"machine_busy_pct"`
	ProcessCPUPct  float64 `json:"process_cpu_pct"`
	// CPUPerNodeMS is CPU milliseconds per node per minute of workload
	// and settling; HarnessCPUS the part of the process's CPU the
	// benchmark's own bookkeeping used (harnessMeter), not in it.
	CPUPerNodeMS float64 `json:"cpu_ms_per_node_per_min"`
	HarnessCPUS  float64 `json:"harness_cpu_s"`
	// ShardsPerNode is the mean number of offer topics an online node
	// was on at the end of the workload; OffersInPerNode the offer
	// records entering a node's board per minute (gossip and sync).
	ShardsPerNode   float64 `json:"shards_per_node"`
	OffersInPerNode float64 `json:"offers_received_per_node_per_min"`

	// Sybils is how many attackers were present (SwarmConfig.Sybils);
	// SybilOffers the offers they published, SybilProposals and
	// SybilHolds the proposals they made and how many were accepted
	// (and then never confirmed).
	Sybils         int   `json:"sybils,omitempty"`
	SybilOffers    int64 `json:"sybil_offers,omitempty"`
	SybilProposals int64 `json:"sybil_proposals,omitempty"`
	SybilHolds     int64 `json:"sybil_holds,omitempty"`

	Floor    Floor    `json:"floor"`
	Problems []string `json:"problems,omitempty"`
}

// Traffic is per node per minute of workload and settling.
type Traffic struct {
	GossipRPCs  float64 `json:"gossip_rpcs_sent"`
	GossipMsgs  float64 `json:"gossip_msgs_sent"`
	GossipCtrl  float64 `json:"gossip_control_sent"`
	GossipBytes float64 `json:"gossip_rpc_bytes"`
	// GossipBytesByPart splits GossipBytes by what carried them:
	// published messages, subscription changes and each control kind.
	GossipBytesByPart map[string]float64 `json:"gossip_rpc_bytes_by_part"`
	Streams           float64            `json:"streams_opened"`
	ByProtocol        map[string]float64 `json:"streams_by_protocol"`
	BytesOut          float64            `json:"bytes_out"`
	BytesByProt       map[string]float64 `json:"bytes_out_by_protocol"`
	// RecvByKind: gossip messages received (duplicates too) by the kind
	// of topic: day, class, lane, now, sealed, v1.
	RecvByKind map[string]float64 `json:"gossip_msgs_recv_by_topic_kind"`
	// DupsByKind: the duplicates among them (a copy already seen from
	// another mesh peer), by the kind of topic.
	DupsByKind map[string]float64 `json:"gossip_dups_recv_by_topic_kind"`
	// BusiestTopics: the topics that delivered the most messages
	// during the run, over all nodes, most first.
	BusiestTopics []TopicLoad `json:"busiest_topics"`
}

// TopicLoad is what one topic delivered during a run: messages received
// (duplicates too) by all nodes, and how many nodes received any.
type TopicLoad struct {
	Topic     string `json:"topic"`
	MsgsIn    int64  `json:"msgs_in"`
	Receivers int    `json:"receivers"`
	// Announcers: bookings that announced an open offer on the topic.
	Announcers int `json:"announcers"`
	// Stays: how long nodes were on the topic with a peer there, each
	// stay a sample (a node that passed it on the way to a lane, waited
	// on it, or lingered after matching).
	Stays Dist `json:"stays"`
	// Placements: bookings' level decisions on the topic (a slot class
	// or lane): settled there once a board pull told its volume, settled
	// when the wait for a pull ran out, or gone a lane deeper; how many
	// of those settled had climbed up from a lane; the volume each saw
	// and how long after joining each decided.
	SettledByPull  int  `json:"settled_by_pull"`
	SettledByBound int  `json:"settled_by_bound"`
	Deeper         int  `json:"deeper"`
	Climbers       int  `json:"settled_climbers"` // of those settled, how many had come up from a lane
	VolumeP50      int  `json:"volume_seen_p50"`
	ClaimedP50     int  `json:"volume_claimed_p50"` // withdrawals known by expiry only (matchmaking's gone.go)
	VolumeMax      int  `json:"volume_seen_max"`
	DecidedAfter   Dist `json:"decided_after"`
}

// addPlacement counts one level decision made on l's topic.
func (l *TopicLoad) addPlacement(e matchmaking.PlaceEvent) {
	switch {
	case e.Deeper:
		l.Deeper++
	case e.Pulled:
		l.SettledByPull++
	default:
		l.SettledByBound++
	}
	if e.Climbed && !e.Deeper {
		l.Climbers++
	}
}

// describeTopicUse adds to each of loads how the topic was used between
// from and end: by how many bookings announced on it, and nodes' stays.
func describeTopicUse(loads []TopicLoad, nodes []nodeState, logs []*nodeLog, from, end time.Time) {
	for i := range loads {
		l := &loads[i]
		announced := map[string]bool{}
		var stays, after []time.Duration
		var vols, claimed []int
		for _, lg := range logs {
			for _, p := range lg.placeLog() {
				if p.e.Topic == l.Topic && !p.at.Before(from) {
					l.addPlacement(p.e)
					vols, after = append(vols, p.e.Volume), append(after, p.e.After)
					claimed = append(claimed, p.e.Claimed)
				}
			}
		}
		if len(vols) > 0 {
			slices.Sort(vols)
			slices.Sort(claimed)
			l.VolumeP50, l.VolumeMax, l.ClaimedP50 = vols[(len(vols)-1)/2], vols[len(vols)-1], claimed[(len(claimed)-1)/2]
		}
		l.DecidedAfter = distOf(after)
		for _, n := range nodes {
			for _, e := range n.offers {
				if e.e.Source == matchmaking.OfferPublished && !e.e.Withdrawn && e.e.Topic == l.Topic && !e.at.Before(from) {
					announced[string(n.id)+"/"+e.e.BookingID] = true
				}
			}
			for _, sp := range n.shards[l.Topic] {
				to := sp.to
				if to.IsZero() || to.After(end) {
					to = end
				}
				if to.After(from) {
					stays = append(stays, to.Sub(later(sp.from, from)))
				}
			}
		}
		l.Announcers, l.Stays = len(announced), distOf(stays)
	}
}

// Messages is what a node sends per minute: gossip RPCs plus the
// request/response streams (one request and one answer each).
func (t Traffic) Messages() float64 { return t.GossipRPCs + 2*t.Streams }

type swarm struct {
	cfg   SwarmConfig
	log   *slog.Logger
	nodes []*swarmNode
	logs  []*nodeLog
	work  *workload
	pr    *progress
	// topics stands in for the DHT's offer topic records.
	topics *directory
	// harness measures the benchmark's own CPU.
	harness *harnessMeter

	reqMu sync.Mutex // guards work.requests' run-time fields

	booked, cancelled, refused atomic.Int64
	// attackers are the Sybil identities' peer IDs (debug output).
	attackers map[peer.ID]bool
	// clockShift sets the nodes' clocks (and the attackers') to read
	// workloadEpoch when the swarm starts.
	clockShift time.Duration
}

// now is the nodes' clock: the wall clock shifted to workloadEpoch.
func (s *swarm) now() time.Time { return time.Now().Add(s.clockShift) }

// workloadEpoch is what the nodes' clocks read when a swarm starts, and
// the time the workload's slots are planned from (the hot slot is 09:00
// the next day). On the wall clock the run's slots, and the class topics
// and lanes they hash to, depended on the date and the hour the command
// ran: one command gave two different workloads on two days (661-691
// possible pairs at N = 1000 after midnight UTC, 696-733 the evening
// before). On this clock it is the same run whenever it runs. A Monday,
// 06:00 UTC.
var workloadEpoch = time.Date(2030, time.January, 7, 6, 0, 0, 0, time.UTC)

// RunSwarm starts cfg.Nodes nodes on 127.0.0.1 in this process, wires them
// into a sparse random topology, measures the floor, runs the seeded
// workload, waits for matching to settle and checks every node's
// bookings. Nothing leaves the machine: no mDNS, no DHT, loopback only.
func RunSwarm(ctx context.Context, cfg SwarmConfig) (*SwarmResult, error) {
	if cfg.Nodes < 2 {
		return nil, errors.New("bench swarm needs at least 2 nodes")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.Duration, 60*time.Second)
	def(&cfg.Settle, 30*time.Second)
	def(&cfg.Opportunity, time.Second)
	if cfg.Seed == 0 {
		cfg.Seed = 1
	}
	if cfg.Degree <= 0 {
		cfg.Degree = 4
	}
	switch cfg.Transport {
	case "":
		cfg.Transport = "tcp"
	case "tcp", "quic":
	default:
		return nil, fmt.Errorf("transport %q: want tcp or quic", cfg.Transport)
	}
	if err := checkOpenFiles(cfg.Nodes, cfg.Transport); err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	dir, err := os.MkdirTemp(cfg.Dir, "tandem-bench-")
	if err != nil {
		return nil, fmt.Errorf("creating bench dir: %w", err)
	}
	defer os.RemoveAll(dir)

	s := &swarm{cfg: cfg, log: cfg.Log, pr: newProgress(cfg.Progress), topics: newDirectory(), harness: &harnessMeter{},
		clockShift: workloadEpoch.Sub(time.Now())}
	defer s.pr.finish()
	res := &SwarmResult{Nodes: cfg.Nodes, Seed: cfg.Seed, Transport: cfg.Transport, NoLanes: cfg.NoLanes, LaneVolume: cfg.LaneVolume, ClimbAloneS: cfg.ClimbAlone.Seconds(), ClassLingerS: cfg.ClassLinger.Seconds(), PartnerKeeps: cfg.PartnerKeeps, CPUs: runtime.NumCPU(), DurationS: cfg.Duration.Seconds(),
		OpportunityMillis: int(cfg.Opportunity.Milliseconds())}
	res.LoadAvg = loadAvg()
	cpu0 := cpuNow()
	defer s.stopAll()
	if err := s.startAll(ctx, dir); err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x746f706f)) // "topo"
	if err := s.connect(ctx, rng); err != nil {
		return nil, err
	}
	conns := 0
	for _, n := range s.nodes {
		conns += len(n.h.Network().Peers())
	}
	res.Connections = float64(conns) / float64(len(s.nodes))
	if res.Floor, err = measureFloor(ctx, s.nodes, dir, rng, s.pr); err != nil {
		return nil, fmt.Errorf("measuring the floor: %w", err)
	}
	runtime.GC()

	if cfg.Sybils > 0 {
		atk, err := startSybils(ctx, s, cfg.Sybils, rand.New(rand.NewPCG(cfg.Seed, 0x737962)))
		if err != nil {
			return nil, fmt.Errorf("starting the attackers: %w", err)
		}
		s.attackers = map[peer.ID]bool{}
		for _, id := range atk.ids {
			s.attackers[id.ID] = true
		}
		defer func() {
			atk.stop()
			res.Sybils, res.SybilOffers = cfg.Sybils, atk.published.Load()
			res.SybilProposals, res.SybilHolds = atk.proposals.Load(), atk.held.Load()
		}()
	}

	// The workload.
	start := time.Now()
	// Planned from the epoch, not from the nodes' clocks now: those read
	// the epoch plus the setup time, which varies from run to run (the
	// slots start two hours ahead; the setup takes seconds to minutes).
	s.work = genWorkload(cfg.Seed, cfg.Nodes, cfg.Duration, workloadEpoch)
	res.OfflineEpisodes = s.work.offline
	cpu1, m1 := cpuNow(), machineNow()
	res.CPUSetupS = cpu1.sub(cpu0).total().Seconds()
	s.quiesceMeters(ctx)
	g0, b0, st0 := s.counters()
	c0 := s.conns()
	bp0, rc0 := s.bytesByProtocol(), s.recvCounts()
	var peakRSS, peakFiles atomic.Int64
	sample := func() {
		s.harness.run(func() {
			if rss, _, err := rssOf(0); err == nil && rss > peakRSS.Load() {
				peakRSS.Store(rss)
			}
			if n := openFiles(); n > peakFiles.Load() {
				peakFiles.Store(n)
			}
		})
	}
	s.pr.setStatus(func() (line string) {
		s.harness.run(func() { line = s.status() })
		return line
	})
	if err := s.runWorkload(ctx, start, sample); err != nil {
		return nil, err
	}
	rss, _, err := rssOf(0)
	if err != nil {
		return nil, err
	}
	res.ShardsPerNode = s.shardsPerNode()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	res.RSSMiB, res.RSSPerNodeMiB = mib(rss), mib(rss)/float64(cfg.Nodes)
	res.HeapMiB = mib(int64(ms.HeapInuse))

	// Settling: until every possible pair is made and confirmed, or the
	// settle time is up.
	settleStart := time.Now()
	for {
		var done bool
		s.harness.run(func() {
			st := s.snapshot(time.Now(), false)
			chk := checkBookings(st, time.Now())
			exact, _ := exactMax(s.requests(), st, chk.pairs, time.Now(), cfg.Opportunity)
			done = len(chk.pairs)/2 == exact && chk.unconfirmed == 0 && chk.oneSided == 0
		})
		s.pr.set("settling", time.Since(settleStart).Seconds(), cfg.Settle.Seconds())
		if done || time.Since(settleStart) > cfg.Settle {
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond): // poll interval
		}
	}
	end := time.Now()
	res.SettleS = end.Sub(settleStart).Seconds()
	cpu2 := cpuNow().sub(cpu1)
	res.MachineBusyPct = busyPct(m1, machineNow())
	res.CPUUserS, res.CPUSysS = cpu2.User.Seconds(), cpu2.Sys.Seconds()
	wall := end.Sub(start)
	res.HarnessCPUS = s.harness.total().Seconds()
	res.ProcessCPUPct = 100 * cpu2.total().Seconds() / wall.Seconds() / float64(runtime.NumCPU())
	res.CPUPerNodeMS = 1000 * (cpu2.total().Seconds() - res.HarnessCPUS) / float64(cfg.Nodes) / wall.Minutes()
	g1, b1, st1 := s.counters()
	res.NewConns = float64(s.conns()-c0) / float64(cfg.Nodes) / time.Since(start).Minutes()
	for _, n := range s.nodes {
		n.mu.Lock()
		if n.online {
			res.ConnectionsEnd += float64(len(n.h.Network().Peers())) / float64(cfg.Nodes)
		}
		n.mu.Unlock()
	}
	bp1, rc1 := s.bytesByProtocol(), s.recvCounts()
	sample()
	res.RSSPeakMiB = mib(peakRSS.Load())
	res.OpenFilesPeak = int(peakFiles.Load())

	// Checking, on a snapshot of every node. The nodes are stopped
	// before the analysis, which needs nothing but the snapshot: at large
	// N, still running, they would compete with it for the CPU.
	s.pr.set("checking", 0, 0)
	st := s.snapshot(end, true)
	reqs := s.requests()
	s.pr.set("stopping", 0, 0)
	s.stopAll()
	res.LoadAvgEnd = loadAvg()
	s.pr.set("checking", 0, 0)
	chk := checkBookings(st, end)
	res.MatchedPairs = len(chk.pairs) / 2
	res.DoubleBookings, res.OneSidedBookings, res.UnconfirmedAtEnd = chk.double, chk.oneSided, chk.unconfirmed
	res.Problems = append(res.Problems, chk.problems...)
	// Stopping added each run's count to the node's (swarmNode.stop).
	for _, n := range s.nodes {
		res.Silences += int(n.silenceCount())
	}
	res.MaxPairs, res.MaxPairsUntimed = exactMax(reqs, st, chk.pairs, end, cfg.Opportunity)
	for _, r := range reqs {
		switch {
		case r.err != nil:
			res.Refused++
		case r.bookingID != "":
			res.Requests++
			if r.req.Kind == matchmaking.KindNow {
				res.RequestsNow++
			}
		}
	}
	res.Cancelled = int(s.cancelled.Load())
	ttm := matchTimes(st, chk.pairs, end)
	res.TimeToMatch = distOf(ttm)
	if f := res.Floor.MatchMS; f > 0 {
		res.FloorRatio = [3]float64{res.TimeToMatch.P50 / f, res.TimeToMatch.P95 / f, res.TimeToMatch.P99 / f}
	}
	prop, incomplete, open, withdrawn := propagation(st, start, end)
	if w := debugOut(); w != nil {
		debugPropagation(w, st, start, end)
		debugMatches(w, st, chk.pairs, start, end)
		debugProposals(w, s.nodes, st, chk.pairs, s.attackers, start, end)
		debugGossip(w, s.nodes)
		debugMissed(w, reqs, st, chk.pairs, end, cfg.Opportunity, start)
	}
	res.Propagation, res.PropagationIncomplete = distOf(prop), incomplete
	res.OffersInPerNode = offersIn(st, start, end) / float64(cfg.Nodes) / end.Sub(start).Minutes()
	res.OffersPublished, res.WithdrawalsPublished = open, withdrawn
	for p, v := range bp0 {
		bp1[p] -= v
	}
	res.Traffic = traffic(g1.sub(g0), b1-b0, st0, st1, bp1, cfg.Nodes, end.Sub(start))
	res.Traffic.RecvByKind, res.Traffic.DupsByKind, res.Traffic.BusiestTopics = rc1.since(rc0, cfg.Nodes, end.Sub(start))
	describeTopicUse(res.Traffic.BusiestTopics, st, s.logs, start, end)

	if cfg.IdleNode != nil {
		s.pr.set("idle node", 0, 0)
		v, err := idleRSS(ctx, cfg.IdleNode)
		if err != nil {
			res.Problems = append(res.Problems, "idle node: "+err.Error())
		}
		res.IdleNodeMiB = v
	}
	return res, nil
}

func traffic(g gossipCounts, bytesOut int64, st0, st1 map[protocol.ID]int64, byProt map[protocol.ID]int64, n int, d time.Duration) Traffic {
	per := func(v float64) float64 { return v / float64(n) / d.Minutes() }
	t := Traffic{
		GossipRPCs: per(float64(g.RPCsSent)), GossipMsgs: per(float64(g.MsgsSent)), GossipCtrl: per(float64(g.CtrlSent)),
		GossipBytes: per(float64(g.BytesSent)),
		BytesOut:    per(float64(bytesOut)), ByProtocol: map[string]float64{}, BytesByProt: map[string]float64{},
		GossipBytesByPart: map[string]float64{},
	}
	for i, v := range g.PartBytes {
		if v > 0 {
			t.GossipBytesByPart[gossipPartNames[i]] = per(float64(v))
		}
	}
	for p, v := range st1 {
		// Each stream is counted at both of its ends.
		c := float64(v-st0[p]) / 2
		if c <= 0 {
			continue
		}
		t.ByProtocol[string(p)] = per(c)
		t.Streams += per(c)
	}
	for p, v := range byProt {
		if v > 0 {
			t.BytesByProt[string(p)] = per(float64(v))
		}
	}
	return t
}

// conns sums the connections the nodes opened.
func (s *swarm) conns() int64 {
	var c int64
	for _, n := range s.nodes {
		c += n.dials.Load()
	}
	return c
}

// counters sums the nodes' gossip, bandwidth and stream counters.
func (s *swarm) counters() (gossipCounts, int64, map[protocol.ID]int64) {
	var g gossipCounts
	var out int64
	streams := map[protocol.ID]int64{}
	for _, n := range s.nodes {
		g = g.add(n.gossip.snapshot())
		out += n.bw.GetBandwidthTotals().TotalOut
		for p, v := range n.rm.snapshot() {
			streams[p] += v
		}
	}
	return g, out, streams
}

// quiesceMeters waits until the bandwidth meters have caught up: they add
// what was sent to their totals once a second, so a snapshot taken at once
// would put the bytes of the phase before into the phase after. It polls
// until the total has not moved for 1.5 s (at most 5 s).
func (s *swarm) quiesceMeters(ctx context.Context) {
	_, last, _ := s.counters()
	since := time.Now()
	pollUntil(ctx, 5*time.Second, func() bool {
		if _, b, _ := s.counters(); b != last {
			last, since = b, time.Now()
		}
		return time.Since(since) > 1500*time.Millisecond
	})
}

// breakdown lists a per-node-per-minute map, largest first, as
// "  (name v, ...)" in units of unit ("" when the map is empty).
func breakdown(m map[string]float64, unit float64, suffix string) string {
	type kv struct {
		k string
		v float64
	}
	var all []kv
	for k, v := range m {
		if k == "" {
			k = "unnamed"
		}
		all = append(all, kv{k, v / unit})
	}
	if len(all) == 0 {
		return ""
	}
	sort.Slice(all, func(i, j int) bool { return all[i].v > all[j].v })
	var parts []string
	for _, e := range all {
		parts = append(parts, fmt.Sprintf("%s %.1f", e.k, e.v))
	}
	if suffix != "" {
		suffix = " " + suffix
	}
	return "  (" + strings.Join(parts, ", ") + suffix + ")"
}

// recvCounts is every node's count of the gossip messages received so
// far: by topic kind, the duplicates by kind, and by topic.
type recvCounts struct {
	byKind, dupsByKind []map[string]int64
	byTopic            []map[string]int64
}

func (s *swarm) recvCounts() recvCounts {
	var rc recvCounts
	for _, n := range s.nodes {
		k, d, t := n.gossip.recvCounts()
		rc.byKind, rc.dupsByKind, rc.byTopic = append(rc.byKind, k), append(rc.dupsByKind, d), append(rc.byTopic, t)
	}
	return rc
}

// busiestShown is how many topics the report lists as the busiest.
const busiestShown = 5

// since is what was received between before and rc: per node per minute
// of d by topic kind, the duplicates by kind, and the busiest topics.
func (rc recvCounts) since(before recvCounts, nodes int, d time.Duration) (byKind, dupsByKind map[string]float64, busiest []TopicLoad) {
	perNodeMinute := func(now, then []map[string]int64) map[string]float64 {
		out := map[string]float64{}
		for i := range now {
			for k, v := range now[i] {
				if v -= then[i][k]; v > 0 {
					out[k] += float64(v) / float64(nodes) / d.Minutes()
				}
			}
		}
		return out
	}
	loads := map[string]*TopicLoad{}
	for i := range rc.byTopic {
		for t, v := range rc.byTopic[i] {
			if v -= before.byTopic[i][t]; v > 0 {
				if loads[t] == nil {
					loads[t] = &TopicLoad{Topic: t}
				}
				loads[t].MsgsIn += v
				loads[t].Receivers++
			}
		}
	}
	for _, l := range loads {
		busiest = append(busiest, *l)
	}
	slices.SortFunc(busiest, func(a, b TopicLoad) int { return cmp.Compare(b.MsgsIn, a.MsgsIn) })
	return perNodeMinute(rc.byKind, before.byKind), perNodeMinute(rc.dupsByKind, before.dupsByKind), busiest[:min(busiestShown, len(busiest))]
}

// bytesByProtocol sums the bytes sent per protocol so far.
func (s *swarm) bytesByProtocol() map[protocol.ID]int64 {
	out := map[protocol.ID]int64{}
	for _, n := range s.nodes {
		for p, st := range n.bw.GetBandwidthByProtocol() {
			out[p] += st.TotalOut
		}
	}
	return out
}

func (s *swarm) startAll(ctx context.Context, dir string) error {
	s.nodes = make([]*swarmNode, s.cfg.Nodes)
	s.logs = make([]*nodeLog, s.cfg.Nodes)
	for i := range s.nodes {
		s.logs[i] = &nodeLog{}
		n, err := newSwarmNode(i, s.cfg, fmt.Sprintf("%s/node-%d", dir, i), s.logs[i], s.log.With("node", i), s.topics)
		if err != nil {
			return err
		}
		n.clockShift = s.clockShift
		s.nodes[i] = n
	}
	var started atomic.Int64
	sem := make(chan struct{}, 4)
	errs := make(chan error, len(s.nodes))
	var wg sync.WaitGroup
	for _, n := range s.nodes {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			n.mu.Lock()
			err := n.start()
			if err == nil {
				n.rec.up(n.upSince)
				n.rec.meshed(n.upSince) // the workload starts once every mesh is formed
			}
			n.mu.Unlock()
			if err != nil {
				errs <- err
			}
			s.pr.set("starting", float64(started.Add(1)), float64(len(s.nodes)))
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return fmt.Errorf("starting a node: %w", err)
	}
	return ctx.Err()
}

func (s *swarm) stopAll() {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, n := range s.nodes {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			n.mu.Lock()
			if n.online {
				n.rec.down(time.Now())
			}
			n.stop()
			n.mu.Unlock()
		})
	}
	wg.Wait()
}

// connect gives each node Degree random bootstrap peers and dials them,
// then joins any islands so the swarm is one connected graph.
func (s *swarm) connect(ctx context.Context, rng *rand.Rand) error {
	n := len(s.nodes)
	for i, nd := range s.nodes {
		k := min(s.cfg.Degree, n-1)
		for _, j := range rng.Perm(n - 1)[:k] {
			if j >= i {
				j++
			}
			nd.bootstrap = append(nd.bootstrap, s.nodes[j])
		}
	}
	var done atomic.Int64
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for _, nd := range s.nodes {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			nd.mu.Lock()
			nd.dialBootstrap(ctx)
			nd.mu.Unlock()
			s.pr.set("connecting", float64(done.Add(1)), float64(n))
		})
	}
	wg.Wait()
	// Join islands, if any (rare with four random peers each).
	for {
		comp := s.components()
		if len(comp) <= 1 {
			break
		}
		a, b := s.nodes[comp[0][0]], s.nodes[comp[1][0]]
		a.bootstrap = append(a.bootstrap, b)
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := a.h.Connect(cctx, peer.AddrInfo{ID: b.id, Addrs: b.h.Addrs()})
		cancel()
		if err != nil {
			return fmt.Errorf("joining islands: %w", err)
		}
	}
	return ctx.Err()
}

// components lists the connected components of the current connections.
func (s *swarm) components() [][]int {
	idx := map[peer.ID]int{}
	for i, n := range s.nodes {
		idx[n.id] = i
	}
	seen := make([]bool, len(s.nodes))
	var out [][]int
	for i := range s.nodes {
		if seen[i] {
			continue
		}
		comp := []int{i}
		seen[i] = true
		for q := 0; q < len(comp); q++ {
			for _, p := range s.nodes[comp[q]].h.Network().Peers() {
				if j, ok := idx[p]; ok && !seen[j] && s.nodes[comp[q]].h.Network().Connectedness(p) == network.Connected {
					seen[j] = true
					comp = append(comp, j)
				}
			}
		}
		out = append(out, comp)
	}
	return out
}

// runWorkload plays the plan: a dispatcher paces the events by the clock
// and hands each to its node's worker, so one node's actions happen in
// order.
func (s *swarm) runWorkload(ctx context.Context, start time.Time, sample func()) error {
	queues := make([]chan planEvent, len(s.nodes))
	var workers sync.WaitGroup
	for i := range queues {
		queues[i] = make(chan planEvent, 64)
		workers.Go(func() {
			for ev := range queues[i] {
				s.do(ctx, ev)
			}
		})
	}
	defer func() {
		for _, q := range queues {
			close(q)
		}
		workers.Wait()
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	timer := time.NewTimer(0)
	defer timer.Stop()
	next := 0
	for {
		now := time.Since(start)
		s.pr.set("workload", now.Seconds(), s.cfg.Duration.Seconds())
		for next < len(s.work.events) && s.work.events[next].at <= now {
			ev := s.work.events[next]
			select {
			case queues[ev.node] <- ev:
			case <-ctx.Done():
				return ctx.Err()
			}
			next++
		}
		if now >= s.cfg.Duration {
			return nil
		}
		wait := s.cfg.Duration - now
		if next < len(s.work.events) {
			wait = min(wait, s.work.events[next].at-now)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			sample()
		case <-timer.C:
		}
	}
}

// do carries out one planned event on its node.
func (s *swarm) do(ctx context.Context, ev planEvent) {
	n := s.nodes[ev.node]
	n.mu.Lock()
	defer n.mu.Unlock()
	switch ev.kind {
	case evOffline:
		if n.online {
			n.rec.down(time.Now())
			n.stop()
		}
	case evOnline:
		if n.online {
			return
		}
		if err := n.start(); err != nil {
			s.log.Error("bench: restarting node", "node", n.idx, "err", err)
			return
		}
		n.rec.up(n.upSince)
		n.dialBootstrap(ctx)
		// For offer propagation the node counts, per shard, from when a
		// peer is on the shard's topic with it (nodeLog.shard): before
		// that nothing can reach it there.
		n.rec.meshed(time.Now())
	case evBook:
		if !n.online {
			return
		}
		s.reqMu.Lock()
		req := s.work.requests[ev.req].req
		s.reqMu.Unlock()
		b, err := n.svc.Book(ctx, req)
		s.reqMu.Lock()
		if err != nil {
			s.work.requests[ev.req].err = err
			s.refused.Add(1)
		} else {
			s.work.requests[ev.req].bookingID = b.ID
			s.booked.Add(1)
		}
		s.reqMu.Unlock()
	case evCancel:
		s.reqMu.Lock()
		id := s.work.requests[ev.req].bookingID
		s.reqMu.Unlock()
		if !n.online || id == "" {
			return
		}
		if _, err := n.svc.Cancel(ctx, id, "benchmark: plans changed"); err == nil {
			s.cancelled.Add(1)
		}
	}
}

// requests copies the requests with their run-time fields.
func (s *swarm) requests() []request {
	s.reqMu.Lock()
	defer s.reqMu.Unlock()
	return append([]request(nil), s.work.requests...)
}

// snapshot reads every node's bookings and logs. Offline nodes are read
// from their last known state in the logs.
func (s *swarm) snapshot(end time.Time, offers bool) []nodeState {
	out := make([]nodeState, len(s.nodes))
	for i, n := range s.nodes {
		st := nodeState{id: n.id, final: map[string]matchmaking.Booking{}, clockShift: n.clockShift}
		if svc := n.service(); svc != nil {
			for _, b := range svc.Bookings() {
				st.final[b.ID] = b
			}
		}
		st.bookings, st.offers, st.online, st.ready, st.shards = n.rec.snapshot(end, offers)
		if len(st.final) == 0 {
			for _, e := range st.bookings {
				st.final[e.b.ID] = e.b
			}
		}
		out[i] = st
	}
	return out
}

// shardsPerNode is the mean number of offer topics the online nodes are on.
func (s *swarm) shardsPerNode() float64 {
	total, online := 0, 0
	for _, n := range s.nodes {
		if svc := n.service(); svc != nil {
			total += len(svc.OfferTopics())
			online++
		}
	}
	if online == 0 {
		return 0
	}
	return float64(total) / float64(online)
}

// offersIn counts the offer records that entered the nodes' boards
// between from and to.
func offersIn(nodes []nodeState, from, to time.Time) float64 {
	c := 0
	for _, n := range nodes {
		for _, e := range n.offers {
			if e.e.Source != matchmaking.OfferPublished && !e.at.Before(from) && !e.at.After(to) {
				c++
			}
		}
	}
	return float64(c)
}

// status is the progress bar's live line.
func (s *swarm) status() string {
	matched, searching, offline, busy := 0, 0, 0, 0
	var silences uint64
	for _, n := range s.nodes {
		silences += n.silences.Load()
		// A node its worker holds (starting, stopping, booking) is
		// skipped rather than waited for: under a saturated CPU that
		// can take seconds.
		if !n.mu.TryLock() {
			busy++
			continue
		}
		svc := n.svc
		n.mu.Unlock()
		if svc == nil {
			offline++
			continue
		}
		silences += svc.Silences()
		for _, b := range svc.Bookings() {
			switch b.State {
			case matchmaking.StateMatched:
				matched++
			case matchmaking.StateSearching:
				searching++
			}
		}
	}
	line := fmt.Sprintf("booked %d, matched %d, searching %d, cancelled %d, offline %d",
		s.booked.Load(), matched, searching, s.cancelled.Load(), offline)
	if silences > 0 {
		line += fmt.Sprintf(", unanswered %d", silences)
	}
	if d := s.topics.dials.Load(); d > 0 {
		line += fmt.Sprintf(", topic dials %d (%d failed, mean %.0f ms)", d, s.topics.dialFails.Load(), float64(s.topics.dialNanos.Load())/float64(d)/1e6)
	}
	if l := s.topics.locates.Load(); l > 0 {
		line += fmt.Sprintf(", partners located %d", l)
	}
	if busy > 0 {
		line += fmt.Sprintf(", busy %d", busy)
	}
	return line
}

// idleRSS starts an idle node in its own process, lets it settle for 10 s
// and reports its RSS then, in MiB.
func idleRSS(ctx context.Context, start func(context.Context) (int, func() error, error)) (float64, error) {
	pid, stop, err := start(ctx)
	if err != nil {
		return 0, err
	}
	defer stop()
	t := time.NewTimer(10 * time.Second) // let it idle: a fixed pace, not a wait for an event
	defer t.Stop()
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-t.C:
	}
	rss, _, err := rssOf(pid)
	if err != nil {
		return 0, err
	}
	return mib(rss), nil
}

// Table writes the result as the benchmark's table.
func (r *SwarmResult) Table(w io.Writer) {
	row := func(k, f string, a ...any) { fmt.Fprintf(w, "%-34s %s\n", k, fmt.Sprintf(f, a...)) }
	d := func(x Dist) string { return fmt.Sprintf("%s / %s / %s ms", fmtMS(x.P50), fmtMS(x.P95), fmtMS(x.P99)) }
	fmt.Fprintf(w, "Tandem swarm benchmark: %d nodes, seed %d, %d CPUs (load %s at the start, %s at the end), workload %.0f s + settle %.1f s\n",
		r.Nodes, r.Seed, r.CPUs, r.LoadAvg, r.LoadAvgEnd, r.DurationS, r.SettleS)
	row("nodes", "%d over %s (%.1f connections each at the start, %.1f at the end; %.1f opened per minute); %d open files at the peak",
		r.Nodes, r.Transport, r.Connections, r.ConnectionsEnd, r.NewConns, r.OpenFilesPeak)
	switch {
	case r.NoLanes:
		row("matching topics", "day shards (--no-lanes)")
	case r.LaneVolume > 0 || r.ClimbAloneS > 0 || r.ClassLingerS > 0 || r.PartnerKeeps > 0:
		row("matching topics", "slot classes and lanes; lane volume %d, climb alone after %.1f s, linger %.1f s, a waiting partner keeps newcomers up to %d lane volumes (0: the product's)",
			r.LaneVolume, r.ClimbAloneS, r.ClassLingerS, r.PartnerKeeps)
	}
	row("requests", "%d (%d focus-now), %d cancelled, %d refused; %d offline episodes",
		r.Requests, r.RequestsNow, r.Cancelled, r.Refused, r.OfflineEpisodes)
	row("offers published", "%d (+ %d withdrawals)", r.OffersPublished, r.WithdrawalsPublished)
	row("offer propagation p50/p95/p99", "%s (to every online node; %d incomplete)", d(r.Propagation), r.PropagationIncomplete)
	row("time-to-match p50/p95/p99", "%s over %d pairs", d(r.TimeToMatch), r.TimeToMatch.N)
	row("  as a multiple of the floor", "%.1fx / %.1fx / %.1fx  (floor %s ms)", r.FloorRatio[0], r.FloorRatio[1], r.FloorRatio[2], fmtMS(r.Floor.MatchMS))
	pct := 100.0
	if r.MaxPairs > 0 {
		pct = 100 * float64(r.MatchedPairs) / float64(r.MaxPairs)
	}
	row("matched pairs", "%d of %d possible (%.1f%%); %d ignoring timing", r.MatchedPairs, r.MaxPairs, pct, r.MaxPairsUntimed)
	if r.Sybils > 0 {
		row("attackers", "%d identities: %d offers in honest classes, %d proposals never confirmed (%d accepted), never answer a proposal",
			r.Sybils, r.SybilOffers, r.SybilProposals, r.SybilHolds)
	}
	row("double / one-sided bookings", "%d / %d  (%d unconfirmed)", r.DoubleBookings, r.OneSidedBookings, r.UnconfirmedAtEnd)
	row("proposals left unanswered", "%d  (each owner then out of plans for 30 s or more)", r.Silences)
	t := r.Traffic
	row("messages per node per minute", "%.0f  (gossip RPCs %.0f carrying %.0f msgs + %.0f control; %.1f streams)",
		t.Messages(), t.GossipRPCs, t.GossipMsgs, t.GossipCtrl, t.Streams)
	row("bytes per node per minute", "%.1f KiB sent%s", t.BytesOut/1024, breakdown(t.BytesByProt, 1024, "KiB"))
	row("gossip bytes sent by part", "%s", strings.TrimPrefix(breakdown(t.GossipBytesByPart, 1024, "KiB"), "  "))
	row("gossip msgs in by topic kind", "%s", strings.TrimPrefix(breakdown(t.RecvByKind, 1, ""), "  "))
	row("  of which duplicates", "%s", strings.TrimPrefix(breakdown(t.DupsByKind, 1, ""), "  "))
	for i, l := range t.BusiestTopics {
		name := ""
		if i == 0 {
			name = "busiest topics (msgs in, at nodes)"
		}
		row(name, "%s  %d at %d; announced on by %d bookings; %d stays p50/p95/p99 %s",
			l.Topic, l.MsgsIn, l.Receivers, l.Announcers, l.Stays.N, d(l.Stays))
		if l.DecidedAfter.N > 0 {
			row("", "  placed: %d settled by a pull, %d by the wait's bound (%d of them climbers), %d deeper; volume seen p50 %d (claimed %d), max %d; decided after p50/p95 %s / %s ms",
				l.SettledByPull, l.SettledByBound, l.Climbers, l.Deeper, l.VolumeP50, l.ClaimedP50, l.VolumeMax, fmtMS(l.DecidedAfter.P50), fmtMS(l.DecidedAfter.P95))
		}
	}
	idle := "not measured"
	if r.IdleNodeMiB > 0 {
		idle = fmt.Sprintf("%.1f MiB", r.IdleNodeMiB)
	}
	row("RSS per node", "%.1f MiB (%.0f MiB / %d; peak %.0f MiB); idle `tandem up`: %s", r.RSSPerNodeMiB, r.RSSMiB, r.Nodes, r.RSSPeakMiB, idle)
	row("CPU", "%.1f s (user %.1f + sys %.1f) over %.0f s; setup %.1f s",
		r.CPUUserS+r.CPUSysS, r.CPUUserS, r.CPUSysS, r.DurationS+r.SettleS, r.CPUSetupS)
	row("  per node per minute", "%.0f ms (the harness's own %.1f s left out)", r.CPUPerNodeMS, r.HarnessCPUS)
	row("  machine busy / this process", "%.0f%% / %.0f%% of %d cores", r.MachineBusyPct, r.ProcessCPUPct, r.CPUs)
	row("shards per node", "%.1f offer topics; %.0f offer records received per node per minute", r.ShardsPerNode, r.OffersInPerNode)
	f := r.Floor
	row("floor: gossip publish->deliver", "%s (to every node: %s)", d(f.GossipDeliver), d(f.GossipAll))
	row("floor: stream round trip", "%s (with a dial: %s)", d(f.StreamRTT), d(f.DialRTT))
	if f.StreamRTT.Failed > 0 {
		row("  over the 5 s bound", "%d samples (counted as the time tried)", f.StreamRTT.Failed)
	}
	row("floor: synced badger write", "%s", d(f.SyncedWrite))
	if len(r.Problems) > 0 {
		fmt.Fprintf(w, "problems (%d):\n", len(r.Problems))
		for i, p := range r.Problems {
			if i == 10 {
				fmt.Fprintf(w, "  ... and %d more\n", len(r.Problems)-10)
				break
			}
			fmt.Fprintln(w, "  "+strings.TrimSpace(p))
		}
	}
}
