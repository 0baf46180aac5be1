package matchmaking

// Private offers (offer protocol version 3, docs/protocol.md section 2.5).
//
// A booking that names a peer in `with` may match that peer only, so its
// offer is of use to that peer only: yet in the clear it told every node
// on the shard who books privately with whom, the owner's name, the exact
// slot and preferences. A version 3 node seals it: the signed offer
// envelope (as on the offer topics) is encrypted to the invited peer's key
// (package box), and the sealed box travels in a record of its own,
// signed by the owner, on the shard's sealed topic and in board sync.
// Outside, the record shows its owner (gossipsub signs every message
// anyway), its shard (day x duration: where it must travel), and what a
// relay needs to store and expire it (an opaque handle per booking, seq,
// expiry, the owner's stamp) and a tag. The tag is a keyed hash of the
// record's shard, owner and handle under a key only the owner and the
// invited peer can derive (box.PairKey: their static X25519 agreement),
// so the invited peer recognises the records sealed to it with one
// agreement per owner, cached, and opens only those (one more agreement
// each); to anyone else the tag is noise that changes with the day and
// the booking. Any other node stores and forwards a record unread, under
// the board's quotas, so that the invited peer gets it from a board sync
// when it comes online later. Records of older owners carry no tag: the
// invited peer tries to open those only if their owner is a peer it waits
// for or has standing with (a flood of untagged records would otherwise
// cost it an agreement per record again).

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	recordpb "github.com/libp2p/go-libp2p/core/record/pb"
	"google.golang.org/protobuf/proto"

	"github.com/tandem-cowork/tandem/matchmaking/box"
	"github.com/tandem-cowork/tandem/matchmaking/pb"
	"github.com/tandem-cowork/tandem/matchmaking/shard"
)

const (
	sealedDomain = "tandem-sealed-offer"
	// MaxSealedOfferSize bounds a sealed record on the wire: an offer
	// envelope (at most MaxOfferSize) padded, boxed, and signed again.
	MaxSealedOfferSize = 3072
	sealedVersion      = 1
	sealedHandleLen    = 16
	// sealedPad: the boxed plaintext is padded to a multiple of this, so
	// the record's size says little about the name and addresses inside.
	sealedPad = 256
	// sealedTagLen: a tag of 64 bits; a record not sealed to a node
	// carries its tag by chance once in 2^64.
	sealedTagLen = 8
)

var sealedCodec = []byte("/tandem/sealed-offer/1")

type sealedRecord struct{ so *pb.SealedOffer }

func (r *sealedRecord) Domain() string { return sealedDomain }
func (r *sealedRecord) Codec() []byte  { return sealedCodec }
func (r *sealedRecord) MarshalRecord() ([]byte, error) {
	return proto.Marshal(r.so)
}
func (r *sealedRecord) UnmarshalRecord(b []byte) error {
	r.so = &pb.SealedOffer{}
	return proto.Unmarshal(b, r.so)
}

func init() { record.RegisterType(&sealedRecord{}) }

// errNotForUs: a sealed record that does not open with our key. That is
// every sealed record but the ones sealed to us, so it is no fault.
var errNotForUs = errors.New("sealed offer is not for us")

// sealedAD is the box's additional data: a box opens only as its owner's,
// on its shard.
func sealedAD(owner peer.ID, shardTopic string) []byte {
	ad := append([]byte("tandem-sealed-offer/1\x00"), shardTopic...)
	return append(append(ad, 0), owner...)
}

// sealedTag is the tag of a sealed record of owner with handle on
// shardTopic, under the pair key of the owner and the invited peer:
// HMAC-SHA256(pair, "tandem-sealed-tag/1" 0x00 shard 0x00 owner handle),
// cut to 8 bytes. It is the same in every record of one booking (as its
// handle is), and unrelated between bookings, days and pairs for anyone
// without the pair key.
func sealedTag(pair *[box.KeySize]byte, shardTopic string, owner peer.ID, handle []byte) []byte {
	m := hmac.New(sha256.New, pair[:])
	m.Write([]byte("tandem-sealed-tag/1\x00"))
	m.Write([]byte(shardTopic))
	m.Write([]byte{0})
	m.Write([]byte(owner))
	m.Write(handle)
	return m.Sum(nil)[:sealedTagLen]
}

// padOffer frames an offer envelope for the box: its length (2 bytes, big
// endian), the envelope, zeros up to a multiple of sealedPad.
func padOffer(env []byte) []byte {
	n := 2 + len(env)
	out := make([]byte, (n+sealedPad-1)/sealedPad*sealedPad)
	binary.BigEndian.PutUint16(out, uint16(len(env)))
	copy(out[2:], env)
	return out
}

func unpadOffer(plain []byte) ([]byte, error) {
	if len(plain) < 2 {
		return nil, errors.New("sealed offer: empty box")
	}
	n := int(binary.BigEndian.Uint16(plain))
	if n == 0 || n > len(plain)-2 || n > MaxOfferSize {
		return nil, fmt.Errorf("sealed offer: an envelope of %d bytes in a box of %d", n, len(plain))
	}
	return plain[2 : 2+n], nil
}

// sealPrivateOffer signs o (a private offer: o.With names the invited
// peer) as usual, seals the envelope to the invited peer, and signs the
// sealed record. handle stands for the booking outside the box.
func sealPrivateOffer(o *pb.Offer, key crypto.PrivKey, handle []byte) ([]byte, error) {
	to, err := peer.IDFromBytes(o.GetWith())
	if err != nil {
		return nil, fmt.Errorf("sealing a private offer: with: %w", err)
	}
	inner, err := sealOffer(o, key)
	if err != nil {
		return nil, err
	}
	owner := peer.ID(o.GetOwner())
	sh := shardOfOffer(o).Topic()
	sealed, err := box.SealTo(to, padOffer(inner), sealedAD(owner, sh))
	if err != nil {
		return nil, fmt.Errorf("sealing a private offer: %w", err)
	}
	self, err := box.NewOpener(key)
	if err != nil {
		return nil, fmt.Errorf("sealing a private offer: %w", err)
	}
	pair, err := self.PairKey(to)
	if err != nil {
		return nil, fmt.Errorf("sealing a private offer: %w", err)
	}
	so := &pb.SealedOffer{
		Version: sealedVersion, Shard: sh, Handle: handle,
		Seq: o.GetSeq(), ExpiresUnix: o.GetExpiresUnix(), Stamp: o.GetStamp(), Box: sealed,
		Tag: sealedTag(pair, sh, owner, handle),
	}
	env, err := record.Seal(&sealedRecord{so: so}, key)
	if err != nil {
		return nil, fmt.Errorf("signing a sealed offer: %w", err)
	}
	out, err := env.Marshal()
	if err != nil {
		return nil, err
	}
	if len(out) > MaxSealedOfferSize {
		return nil, fmt.Errorf("a sealed offer of %d bytes exceeds %d", len(out), MaxSealedOfferSize)
	}
	return out, nil
}

// openSealed verifies a sealed record's signature and outer fields (what
// every node checks before storing or forwarding one) and returns it with
// its owner and shard. The box stays closed.
func openSealed(data []byte, now time.Time) (*pb.SealedOffer, peer.ID, shard.Key, error) {
	if len(data) > MaxSealedOfferSize {
		return nil, "", shard.Key{}, fmt.Errorf("sealed offer of %d bytes exceeds %d", len(data), MaxSealedOfferSize)
	}
	rec := &sealedRecord{}
	env, err := record.ConsumeTypedEnvelope(data, rec)
	if err != nil {
		return nil, "", shard.Key{}, fmt.Errorf("opening sealed offer envelope: %w", err)
	}
	owner, err := peer.IDFromPublicKey(env.PublicKey)
	if err != nil {
		return nil, "", shard.Key{}, fmt.Errorf("sealed offer signer: %w", err)
	}
	so := rec.so
	k, err := checkSealed(so, now)
	if err != nil {
		return nil, "", shard.Key{}, err
	}
	return so, owner, k, nil
}

// checkSealed checks a sealed record's outer fields.
func checkSealed(so *pb.SealedOffer, now time.Time) (shard.Key, error) {
	if so.GetVersion() != sealedVersion {
		return shard.Key{}, fmt.Errorf("sealed offer version %d not supported", so.GetVersion())
	}
	k, err := shard.Parse(so.GetShard())
	if err != nil || k.V1 {
		return shard.Key{}, fmt.Errorf("sealed offer shard %q is not a version 2 shard", so.GetShard())
	}
	if len(so.GetHandle()) != sealedHandleLen {
		return shard.Key{}, fmt.Errorf("sealed offer handle of %d bytes, want %d", len(so.GetHandle()), sealedHandleLen)
	}
	if n := len(so.GetBox()); n < box.SealToOverhead+sealedPad || (n-box.SealToOverhead)%sealedPad != 0 {
		return shard.Key{}, fmt.Errorf("sealed offer box of %d bytes is not a padded box", n)
	}
	if n := len(so.GetTag()); n != 0 && n != sealedTagLen {
		return shard.Key{}, fmt.Errorf("sealed offer tag of %d bytes, want %d (or none)", n, sealedTagLen)
	}
	if time.Unix(so.GetExpiresUnix(), 0).After(now.Add(maxOfferTTL + peerSlack)) {
		return shard.Key{}, errors.New("sealed offer expiry too far ahead")
	}
	if expiredAt(so.GetExpiresUnix(), now) {
		return shard.Key{}, errStale{"sealed offer expired"}
	}
	return k, nil
}

// peekSealed reads a sealed record's owner, handle, seq and shard without
// checking its signature, so a board sync can skip records it already
// has. Nothing it returns may be used for anything else.
func peekSealed(data []byte) (owner peer.ID, handle string, seq uint64, k shard.Key, ok bool) {
	if len(data) > MaxSealedOfferSize {
		return "", "", 0, shard.Key{}, false
	}
	var env recordpb.Envelope
	if proto.Unmarshal(data, &env) != nil || !bytes.Equal(env.GetPayloadType(), sealedCodec) {
		return "", "", 0, shard.Key{}, false
	}
	pk, err := crypto.PublicKeyFromProto(env.GetPublicKey())
	if err != nil {
		return "", "", 0, shard.Key{}, false
	}
	if owner, err = peer.IDFromPublicKey(pk); err != nil {
		return "", "", 0, shard.Key{}, false
	}
	so := &pb.SealedOffer{}
	if proto.Unmarshal(env.GetPayload(), so) != nil {
		return "", "", 0, shard.Key{}, false
	}
	if k, err = shard.Parse(so.GetShard()); err != nil {
		return "", "", 0, shard.Key{}, false
	}
	return owner, hex.EncodeToString(so.GetHandle()), so.GetSeq(), k, true
}

// openSealed verifies a sealed record as the package function does, and
// its owner's identity stamp.
func (s *Service) openSealed(data []byte, now time.Time) (*pb.SealedOffer, peer.ID, shard.Key, error) {
	so, owner, k, err := openSealed(data, now)
	if err != nil {
		return nil, "", shard.Key{}, err
	}
	if err := checkStamp(owner, so.GetStamp(), s.cfg.StampBits); err != nil {
		return nil, "", shard.Key{}, err
	}
	return so, owner, k, nil
}

// openPrivate opens the box of a verified sealed record of owner:
// errNotForUs unless it was sealed to us; otherwise the offer inside,
// checked as any offer, which must be owner's, name us in `with`, and
// agree with the record's shard, seq and expiry. A tagged record is
// opened only if its tag is ours with owner (one agreement per owner,
// cached by the opener), and then must open; an untagged one (an older
// owner's) is tried, at one agreement per record, only if untagged says
// so.
func openPrivate(opener *box.Opener, self peer.ID, so *pb.SealedOffer, owner peer.ID, now time.Time, stampBits int, untagged bool) (*pb.Offer, []byte, error) {
	if opener == nil {
		return nil, nil, errNotForUs
	}
	tagged := len(so.GetTag()) > 0
	if tagged {
		pair, err := opener.PairKey(owner)
		if err != nil || !hmac.Equal(so.GetTag(), sealedTag(pair, so.GetShard(), owner, so.GetHandle())) {
			return nil, nil, errNotForUs
		}
	} else if !untagged {
		return nil, nil, errNotForUs
	}
	plain, err := opener.Open(so.GetBox(), sealedAD(owner, so.GetShard()))
	switch {
	case err != nil && tagged:
		// Only the owner (or we) could have made this tag: the owner
		// made a record for us that does not open.
		return nil, nil, errors.New("sealed offer tagged for us does not open")
	case err != nil:
		return nil, nil, errNotForUs
	}
	inner, err := unpadOffer(plain)
	if err != nil {
		return nil, nil, err
	}
	o, inOwner, err := openOffer(inner, now)
	if err != nil {
		return nil, nil, fmt.Errorf("sealed offer: %w", err)
	}
	switch {
	case inOwner != owner:
		return nil, nil, fmt.Errorf("sealed offer of %s carries an offer of %s", owner, inOwner)
	case peer.ID(o.GetWith()) != self:
		return nil, nil, errors.New("sealed offer sealed to us names another peer in with")
	case shardOfOffer(o).Topic() != so.GetShard():
		return nil, nil, fmt.Errorf("sealed offer of shard %s carries an offer of shard %s", so.GetShard(), shardOfOffer(o))
	case o.GetSeq() != so.GetSeq() || o.GetExpiresUnix() != so.GetExpiresUnix():
		return nil, nil, errors.New("sealed offer's seq or expiry disagrees with the offer inside")
	}
	if err := checkStamp(owner, o.GetStamp(), stampBits); err != nil {
		return nil, nil, fmt.Errorf("sealed offer: %w", err)
	}
	return o, inner, nil
}

// privateHandle is the handle of booking id outside the box: a keyed hash
// of the booking ID, so relays can keep the newest record of a booking
// while the ID (which the proposal names) stays unknown to them.
func (s *Service) privateHandle(id string) []byte {
	m := hmac.New(sha256.New, s.handleKey[:])
	m.Write([]byte(id))
	return m.Sum(nil)[:sealedHandleLen]
}

// handleKeyOf derives the handle key from the node's private key.
func handleKeyOf(k crypto.PrivKey) [32]byte {
	raw, _ := k.Raw()
	return sha256.Sum256(append([]byte("tandem-sealed-handle/1\x00"), raw...))
}

// sealedIn is a sealed record that arrived (gossip or board sync), checked
// outside, and opened if it was sealed to us.
type sealedIn struct {
	so    *pb.SealedOffer
	owner peer.ID
	shard shard.Key
	env   []byte
	// Set if it was sealed to us.
	offer *pb.Offer
	inner []byte
}

// takeSealed stores a verified sealed record (it is served on, sealed),
// and, if it was sealed to us, the offer inside (never served). It
// reports whether either board changed.
func (s *Service) takeSealed(in sealedIn, via peer.ID, src OfferSource) bool {
	if in.owner == s.h.ID() {
		return false
	}
	now := s.now()
	rank, sealedVia := s.admitRank(in.owner, now, true), via
	if rank >= 0 && s.awaitedPeers()[in.owner] {
		// The sealed board admits and evicts as the public board does
		// (boardadmit.go), by the owner's standing with us: a peer a
		// private booking of ours waits for stands as a favourite, and
		// its records are charged to it, not to the relay that brought
		// them, so that fresh identities (a record each) can neither
		// trim its records nor keep them out.
		rank, sealedVia = 2, in.owner
	}
	changed := s.sealedBoard.admitEntry(&boardEntry{
		owner: in.owner, envelope: in.env, seq: in.so.GetSeq(), expires: in.so.GetExpiresUnix(),
		shard: in.shard, opaque: true,
	}, hex.EncodeToString(in.so.GetHandle()), now, rank, sealedVia)
	if in.offer == nil {
		return changed
	}
	return s.takePrivate(in.offer, in.owner, in.inner, via, src) || changed
}

// takePrivate puts a verified private offer of owner's that names us
// (opened from a sealed record, or pushed by its owner) on the board,
// never to be served, and reports whether the board changed.
func (s *Service) takePrivate(o *pb.Offer, owner peer.ID, env []byte, via peer.ID, src OfferSource) bool {
	now := s.now()
	rank := s.admitRank(owner, now, s.booksIn(classKeyOf(o)))
	if s.awaitedPeers()[owner] && rank >= 0 {
		// The offer of the peer a private booking of ours waits for, made
		// for us: it is admitted as a favourite's is, and charged to its
		// owner, not to the relay that brought it, so that neither a
		// flood that filled the board nor the relay's quota (spent on
		// the flood it relays) keeps it out.
		rank, via = 2, owner
	}
	if !s.board.admitEntry(&boardEntry{
		offer: o, owner: owner, envelope: env,
		seq: o.GetSeq(), expires: o.GetExpiresUnix(), withdrawn: o.GetWithdrawn(), class: classOfOffer(o),
		shard: classKeyOf(o), private: true,
	}, o.GetBookingId(), now, rank, via) {
		return false
	}
	s.observe(o, owner, src)
	s.forgetBackoff(owner, o.GetBookingId())
	s.learnAddrs(o, owner)
	s.cfg.OnBoard()
	s.wake()
	return true
}

// openSealedIn checks a sealed record from the network and opens it if it
// is for us. A record that is malformed or forged outside fails with an
// error any node would find; one sealed to us whose inside is bad fails
// with an error only we can see (an insideBad).
func (s *Service) openSealedIn(data []byte, now time.Time) (sealedIn, error) {
	so, owner, k, err := s.openSealed(data, now)
	if err != nil {
		return sealedIn{}, err
	}
	in := sealedIn{so: so, owner: owner, shard: k, env: data}
	if owner == s.h.ID() {
		return in, nil // our own (gossip validates what we publish too)
	}
	o, inner, err := openPrivate(s.opener, s.h.ID(), so, owner, now, s.cfg.StampBits, len(so.GetTag()) == 0 && s.triesUntagged(owner, now))
	var stale errStale
	switch {
	case errors.Is(err, errNotForUs), errors.As(err, &stale):
		return in, nil // stored and served on, sealed; nothing for us to use
	case err != nil:
		return in, insideBad{err}
	}
	in.offer, in.inner = o, inner
	return in, nil
}

// triesUntagged says whether an untagged sealed record of owner (an
// older owner's, section 2.5) is worth an agreement to try to open: its
// owner is a peer one of our private bookings waits for, or has standing
// with us. Anyone else's untagged records are stored and served unread.
func (s *Service) triesUntagged(owner peer.ID, now time.Time) bool {
	return s.awaitedPeers()[owner] || s.rank(owner, now) > 0
}

// insideBad: a sealed record sealed to us is fine outside but not inside.
// Relays cannot see that, so it costs them nothing (gossip ignores the
// message rather than rejecting it): only its author is to blame.
type insideBad struct{ err error }

func (e insideBad) Error() string { return e.err.Error() }
func (e insideBad) Unwrap() error { return e.err }

// sealedEnvelopes returns the sealed records of the shards want accepts,
// up to maxBytes.
func (s *Service) sealedEnvelopes(now time.Time, maxBytes int, want boardWant) [][]byte {
	return s.sealedBoard.envelopes(now, time.Time{}, maxBytes, want)
}

// Private offers go straight to their invited peer as well (issue 13):
// the sealed record travels by gossip and board sync, but under a sealed
// flood every node on the shard validates a backlog of the flood's
// records in arrival order (gossipsub checks each message's signature
// before any validator of ours runs), and the invited peer's record
// reached its owner behind that backlog, and the relay's copy came late
// from a relay busy with it. The two peers of a private booking know each
// other's IDs, so neither needs gossip to find the other:
//
//   - when a private booking's offer is new (booked, or loaded at start)
//     the node pushes it to the invited peer over a stream of its own,
//     dialling it first if it has addresses for it (a peer met before);
//   - when the invited peer of a searching private booking connects
//     (identify completes, whoever dialled), the node pushes it the
//     offer at once, so the invited peer's dial brings back the owner's
//     offer in one round trip.
//
// A push is a direct stream, which no one else reads, so it carries the
// offer in the clear: a version 2 invitee reads no sealed records, and a
// version 3 one keeps the offer as private (never served). The receiver
// checks it as any push (its author's rate limit, signature, stamp) and,
// if its owner is a peer one of its private bookings waits for, admits it
// as the opened sealed record would be (takePrivate). Only the two peers
// take part: a flood, from any number of identities, can slow them by the
// CPU it costs them, not by a queue it fills in front of them.

// pushPrivate sends the offer o of private booking b to its invited peer,
// dialling it first if it is not connected and the node knows addresses
// for it (and only for an open offer: a withdrawal is not worth a dial).
func (s *Service) pushPrivate(b Booking, o *pb.Offer) {
	to, err := peer.Decode(b.With)
	if err != nil || s.ctx == nil || to == s.h.ID() {
		return
	}
	if !s.connectedTo(to) && (o.GetWithdrawn() || len(s.h.Peerstore().Addrs(to)) == 0) {
		return
	}
	env, err := sealOffer(o, s.key)
	if err != nil {
		s.log.Error("signing offer", "booking", b.ID, "err", err)
		return
	}
	if s.connectedTo(to) {
		if s.speaksPush(to) {
			s.goRun(func() { s.pushTo(s.ctx, to, env) })
		}
		return
	}
	// Once connected, identify completes and watchIdentified pushes the
	// offer (pushPrivateTo), as it does when the invited peer dials us.
	s.goRun(func() {
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.StreamTimeout)
		defer cancel()
		if err := s.h.Connect(overAnyConn(ctx), peer.AddrInfo{ID: to}); err != nil {
			s.log.Debug("dialling the invited peer of a private booking", "peer", to, "err", err)
		}
	})
}

// speaksPush reports whether p may take an offer push: it does, or
// identify has not said yet (the stream then negotiates it).
func (s *Service) speaksPush(p peer.ID) bool {
	protos, err := s.h.Peerstore().GetProtocols(p)
	return err != nil || len(protos) == 0 || slices.Contains(protos, OfferPushProtocol)
}

// pushPrivateTo sends p, which has just connected, the open offers of our
// searching private bookings that name it.
func (s *Service) pushPrivateTo(ctx context.Context, p peer.ID) {
	if !s.speaksPush(p) {
		return
	}
	s.pushOwnWhere(ctx, p, func(_ string, b *Booking) bool { return b.With == p.String() })
}
