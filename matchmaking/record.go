package matchmaking

import (
	"bytes"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	recordpb "github.com/libp2p/go-libp2p/core/record/pb"
	"github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"google.golang.org/protobuf/proto"

	"github.com/tandem-cowork/tandem/matchmaking/pb"
	"github.com/tandem-cowork/tandem/session/usertext"
)

// Offer records travel in go-libp2p signed envelopes: the signature covers
// the domain, the payload type and the payload, so an offer relayed by
// anyone still proves who made it.
const (
	offerDomain = "tandem-offer"
	// MaxOfferSize bounds an offer envelope on the wire.
	MaxOfferSize  = 2048
	maxOfferAddrs = 8
	// offerTTL is how long an announcement stays on boards without a refresh.
	maxOfferTTL  = time.Hour
	protoVersion = 1
)

// MaxClockSkew is how far apart two nodes' clocks may be and still match:
// real machines disagree by seconds to minutes. Every check of a time that
// comes from a peer (an offer's expiry and start, a focus-now start in a
// proposal) allows peerSlack, this plus a minute for transit and rounding
// to whole seconds.
const MaxClockSkew = 5 * time.Minute

const peerSlack = MaxClockSkew + time.Minute

var offerCodec = []byte("/tandem/offer/1")

type offerRecord struct{ offer *pb.Offer }

func (r *offerRecord) Domain() string { return offerDomain }
func (r *offerRecord) Codec() []byte  { return offerCodec }
func (r *offerRecord) MarshalRecord() ([]byte, error) {
	return proto.Marshal(r.offer)
}
func (r *offerRecord) UnmarshalRecord(b []byte) error {
	r.offer = &pb.Offer{}
	return proto.Unmarshal(b, r.offer)
}

func init() { record.RegisterType(&offerRecord{}) }

func sealOffer(o *pb.Offer, key crypto.PrivKey) ([]byte, error) {
	env, err := record.Seal(&offerRecord{offer: o}, key)
	if err != nil {
		return nil, fmt.Errorf("signing offer: %w", err)
	}
	return env.Marshal()
}

// openGossipOffer opens an offer envelope that arrived as a gossipsub
// message by author. Gossipsub's strict signing has verified the author's
// signature over the message, but not the envelope's own signature, which
// is what a board sync re-serves: an envelope stored unverified would be
// passed on to every node that syncs from us, which would refuse it and
// count us as its source. So it is verified here, once, like any other,
// and the offer's owner must be the author (offers travel by gossip from
// their owner only; relays use sync).
func openGossipOffer(data []byte, now time.Time, author peer.ID) (*pb.Offer, error) {
	o, owner, err := openOffer(data, now)
	if err != nil {
		return nil, err
	}
	if owner != author {
		return nil, fmt.Errorf("offer of %s published by %s", owner, author)
	}
	return o, nil
}

// peekOffer reads the owner, booking and seq of an offer envelope without
// checking anything, so a board sync can skip records it already has
// before paying for their signatures. Nothing it returns may be used for
// anything else: a record that could be news is opened with openOffer.
func peekOffer(data []byte) (owner peer.ID, booking string, seq uint64, ok bool) {
	o, ok := peekRecord(data)
	if !ok {
		return "", "", 0, false
	}
	return peer.ID(o.GetOwner()), o.GetBookingId(), o.GetSeq(), true
}

// peekRecord decodes an offer envelope's payload without checking
// anything (see peekOffer: nothing it returns may be trusted).
func peekRecord(data []byte) (*pb.Offer, bool) {
	if len(data) > MaxOfferSize {
		return nil, false
	}
	var env recordpb.Envelope
	if proto.Unmarshal(data, &env) != nil || !bytes.Equal(env.GetPayloadType(), offerCodec) {
		return nil, false
	}
	o := &pb.Offer{}
	if proto.Unmarshal(env.GetPayload(), o) != nil {
		return nil, false
	}
	return o, true
}

// errStale marks offers that are well-formed but no longer (or not yet)
// useful; gossip ignores them instead of penalising the forwarder.
type errStale struct{ msg string }

func (e errStale) Error() string { return e.msg }

// openOffer verifies an offer envelope and checks every field. It never
// trusts the relay: the signer must be the offer's owner.
func openOffer(data []byte, now time.Time) (*pb.Offer, peer.ID, error) {
	if len(data) > MaxOfferSize {
		return nil, "", fmt.Errorf("offer of %d bytes exceeds %d", len(data), MaxOfferSize)
	}
	rec := &offerRecord{}
	env, err := record.ConsumeTypedEnvelope(data, rec)
	if err != nil {
		return nil, "", fmt.Errorf("opening offer envelope: %w", err)
	}
	o := rec.offer
	owner, err := peer.IDFromBytes(o.GetOwner())
	if err != nil {
		return nil, "", fmt.Errorf("offer owner: %w", err)
	}
	if !owner.MatchesPublicKey(env.PublicKey) {
		return nil, "", fmt.Errorf("offer for %s signed by another key", owner)
	}
	if err := checkOffer(o, now); err != nil {
		return nil, "", err
	}
	return o, owner, nil
}

// openGossipOffer opens a gossip offer as the package function does, and
// checks its owner's identity stamp.
func (s *Service) openGossipOffer(data []byte, now time.Time, author peer.ID) (*pb.Offer, error) {
	o, err := openGossipOffer(data, now, author)
	if err != nil {
		return nil, err
	}
	if err := checkStamp(author, o.GetStamp(), s.cfg.StampBits); err != nil {
		return nil, err
	}
	return o, nil
}

// openOffer verifies an offer envelope as the package function does, and
// its owner's identity stamp.
func (s *Service) openOffer(data []byte, now time.Time) (*pb.Offer, peer.ID, error) {
	o, owner, err := openOffer(data, now)
	if err != nil {
		return nil, "", err
	}
	if err := checkStamp(owner, o.GetStamp(), s.cfg.StampBits); err != nil {
		return nil, "", err
	}
	return o, owner, nil
}

func checkOffer(o *pb.Offer, now time.Time) error {
	if o.GetVersion() != protoVersion {
		return fmt.Errorf("offer version %d not supported", o.GetVersion())
	}
	if id := o.GetBookingId(); id == "" || len(id) > maxIDLen {
		return fmt.Errorf("offer booking id length %d", len(id))
	}
	if err := usertext.Name.Check(o.GetName()); err != nil {
		return fmt.Errorf("offer name: %w", err)
	}
	if len(o.GetWith()) > 0 {
		if _, err := peer.IDFromBytes(o.GetWith()); err != nil {
			return fmt.Errorf("offer with: %w", err)
		}
	}
	if len(o.GetAddrs()) > maxOfferAddrs {
		return fmt.Errorf("offer carries %d addresses, at most %d", len(o.GetAddrs()), maxOfferAddrs)
	}
	for _, a := range o.GetAddrs() {
		if _, err := multiaddr.NewMultiaddrBytes(a); err != nil {
			return fmt.Errorf("offer address: %w", err)
		}
	}
	expires := time.Unix(o.GetExpiresUnix(), 0)
	if expires.After(now.Add(maxOfferTTL + peerSlack)) {
		return fmt.Errorf("offer expiry too far ahead")
	}
	if o.GetWithdrawn() {
		return nil
	}
	if err := CheckDuration(int(o.GetDurationMin())); err != nil {
		return err
	}
	if _, err := CheckActivity(activityFromPB(o.GetActivity())); err != nil || o.GetActivity() == pb.Activity_ACTIVITY_UNSPECIFIED {
		return fmt.Errorf("offer activity %v", o.GetActivity())
	}
	start := time.Unix(o.GetStartUnix(), 0)
	switch o.GetKind() {
	case pb.Kind_KIND_SCHEDULED:
		if o.GetStartUnix()%int64(Grid/time.Second) != 0 {
			return fmt.Errorf("offer start not on the quarter-hour grid")
		}
		if start.After(now.Add(MaxAhead + peerSlack)) {
			return fmt.Errorf("offer start more than 14 days ahead")
		}
		if start.Before(now.Add(-peerSlack)) {
			return errStale{"offer start in the past"}
		}
	case pb.Kind_KIND_NOW:
		// start is when the owner announced it, on the owner's clock.
		if start.After(now.Add(peerSlack)) || start.Before(now.Add(-nowSearchTTL-peerSlack)) {
			return errStale{"focus-now offer out of its window"}
		}
	default:
		return fmt.Errorf("offer kind %v", o.GetKind())
	}
	if expiredAt(o.GetExpiresUnix(), now) {
		return errStale{"offer expired"}
	}
	return nil
}

// expiredAt reports whether an offer that expires at expiresUnix (on its
// owner's clock) has expired at now (on ours). The owner's clock may be
// behind ours: without the slack, a node whose clock is two minutes fast
// would drop every fresh offer (they live 90 s) as expired. The price is
// that an offer whose owner went offline stays on boards peerSlack longer.
func expiredAt(expiresUnix int64, now time.Time) bool {
	return time.Unix(expiresUnix, 0).Add(peerSlack).Before(now)
}

// offerAddrs returns the owner's dialable addresses from an offer.
func offerAddrs(o *pb.Offer) []multiaddr.Multiaddr {
	var out []multiaddr.Multiaddr
	for _, a := range o.GetAddrs() {
		if m, err := multiaddr.NewMultiaddrBytes(a); err == nil {
			out = append(out, m)
		}
	}
	return out
}

// offerAddrsOf picks the addresses an offer carries, in dial order. An
// offer travels beyond the LAN, so a node that has a public address (or
// a relay address) does not tell the world its private LAN and loopback
// addresses: peers on its LAN find it by mDNS and identify. A node with
// nothing else (a LAN-only or loopback swarm) has to give them.
func offerAddrsOf(addrs []multiaddr.Multiaddr) []multiaddr.Multiaddr {
	var public []multiaddr.Multiaddr
	for _, a := range addrs {
		if manet.IsPublicAddr(a) || isRelayAddr(a) {
			public = append(public, a)
		}
	}
	if len(public) > 0 {
		return dialOrder(public)
	}
	return dialOrder(addrs)
}

func isRelayAddr(a multiaddr.Multiaddr) bool {
	_, err := a.ValueForProtocol(multiaddr.P_CIRCUIT)
	return err == nil
}

// dialOrder puts the addresses most likely to work for a stranger first
// (public, then LAN, then loopback), since an offer carries only a few.
func dialOrder(addrs []multiaddr.Multiaddr) []multiaddr.Multiaddr {
	rank := func(a multiaddr.Multiaddr) int {
		switch {
		case manet.IsPublicAddr(a):
			return 0
		case manet.IsPrivateAddr(a):
			return 1
		}
		return 2
	}
	out := slices.Clone(addrs)
	slices.SortStableFunc(out, func(a, b multiaddr.Multiaddr) int { return rank(a) - rank(b) })
	return out
}

func kindToPB(k Kind) pb.Kind {
	if k == KindNow {
		return pb.Kind_KIND_NOW
	}
	return pb.Kind_KIND_SCHEDULED
}

func kindFromPB(k pb.Kind) Kind {
	if k == pb.Kind_KIND_NOW {
		return KindNow
	}
	return KindScheduled
}

func activityToPB(a Activity) pb.Activity {
	switch a {
	case ActivityDesk:
		return pb.Activity_ACTIVITY_DESK
	case ActivityMoving:
		return pb.Activity_ACTIVITY_MOVING
	}
	return pb.Activity_ACTIVITY_ANYTHING
}

func activityFromPB(a pb.Activity) Activity {
	switch a {
	case pb.Activity_ACTIVITY_DESK:
		return ActivityDesk
	case pb.Activity_ACTIVITY_MOVING:
		return ActivityMoving
	}
	return ActivityAnything
}
