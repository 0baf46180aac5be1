package sybil

// Sealed private offers (docs/protocol.md section 2.5), from the document
// alone: the record outside, the sealed box inside, and board sync that
// asks for sealed records.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"

	cryptopb "github.com/libp2p/go-libp2p/core/crypto/pb"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/record"
	"golang.org/x/crypto/chacha20poly1305"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"

	"github.com/tandem-cowork/tandem/matchmaking/pb"
)

// Sealed record constants from docs/protocol.md section 2.5.
const (
	sealedDomain  = "tandem-sealed-offer"
	sealedCodec   = "/tandem/sealed-offer/1"
	sealedVersion = 1
	// HandleLen is the length of a sealed record's handle.
	HandleLen = 16
	// BoxPad: a box's plaintext is padded to a multiple of this.
	BoxPad = 256
	// BoxOverhead is what sealing adds: ephemeral key, nonce, tag.
	BoxOverhead = 32 + chacha20poly1305.NonceSizeX + chacha20poly1305.Overhead
	boxSalt     = "tandem sealed box v1"
	pairSalt    = "tandem pair key v1"
	tagPrefix   = "tandem-sealed-tag/1"
	// TagLen is the length of a sealed record's tag.
	TagLen      = 8
	boxADPrefix = "tandem-sealed-offer/1"
)

// sealedRecord is a sealed record envelope's payload: a SealedOffer.
type sealedRecord struct{ so *pb.SealedOffer }

func (r *sealedRecord) Domain() string                 { return sealedDomain }
func (r *sealedRecord) Codec() []byte                  { return []byte(sealedCodec) }
func (r *sealedRecord) MarshalRecord() ([]byte, error) { return proto.Marshal(r.so) }
func (r *sealedRecord) UnmarshalRecord(b []byte) error {
	r.so = &pb.SealedOffer{}
	return proto.Unmarshal(b, r.so)
}

// SealedRecord signs a sealed record of id's on the shard named by its
// version 2 topic (e.g. /tandem/offers/2/2026-12-03/25) around box, which
// may be any bytes: a relay cannot tell a box sealed to someone from
// noise of the right length (RandomBox).
func (id *Identity) SealedRecord(shardTopic string, handle []byte, seq uint64, expiresUnix int64, box []byte) ([]byte, error) {
	return id.TaggedRecord(shardTopic, handle, seq, expiresUnix, box, nil)
}

// TaggedRecord is SealedRecord with a tag (nil: none, as an older owner
// sends; PairTag: the tag of a record for a given peer).
func (id *Identity) TaggedRecord(shardTopic string, handle []byte, seq uint64, expiresUnix int64, box, tag []byte) ([]byte, error) {
	so := &pb.SealedOffer{Version: sealedVersion, Shard: shardTopic, Handle: handle,
		Seq: seq, ExpiresUnix: expiresUnix, Stamp: id.Stamp, Box: box, Tag: tag}
	env, err := record.Seal(&sealedRecord{so}, id.Key)
	if err != nil {
		return nil, err
	}
	return env.Marshal()
}

// SealPrivate is id's sealed record of the private offer o (o.With names
// the invited peer, to whom it is sealed) on the shard named by
// shardTopic: what an honest owner publishes.
func (id *Identity) SealPrivate(o *pb.Offer, shardTopic string, handle []byte) ([]byte, error) {
	to, err := peer.IDFromBytes(o.GetWith())
	if err != nil {
		return nil, fmt.Errorf("with: %w", err)
	}
	inner, err := id.Seal(o)
	if err != nil {
		return nil, err
	}
	plain := make([]byte, (2+len(inner)+BoxPad-1)/BoxPad*BoxPad)
	binary.BigEndian.PutUint16(plain, uint16(len(inner)))
	copy(plain[2:], inner)
	box, err := SealBox(to, plain, BoxAD(shardTopic, id.ID))
	if err != nil {
		return nil, err
	}
	tag, err := id.PairTag(to, shardTopic, handle)
	if err != nil {
		return nil, err
	}
	return id.TaggedRecord(shardTopic, handle, o.GetSeq(), o.GetExpiresUnix(), box, tag)
}

// PairTag is the tag of id's sealed record with handle on shardTopic for
// the peer to: HMAC-SHA256 under the pair key (HKDF-SHA256 of the static
// X25519 agreement of the two peers' keys, salt "tandem pair key v1",
// info the two X25519 public keys, the lower first) of
// "tandem-sealed-tag/1" 0x00 shard 0x00 owner handle, cut to 8 bytes.
func (id *Identity) PairTag(to peer.ID, shardTopic string, handle []byte) ([]byte, error) {
	raw, err := id.Key.Raw()
	if err != nil || len(raw) < 32 {
		return nil, fmt.Errorf("the identity's key: %v", err)
	}
	h := sha512.Sum512(raw[:32])
	priv, err := ecdh.X25519().NewPrivateKey(h[:32])
	if err != nil {
		return nil, err
	}
	tpub, err := montgomery(to)
	if err != nil {
		return nil, err
	}
	tkey, err := ecdh.X25519().NewPublicKey(tpub)
	if err != nil {
		return nil, err
	}
	shared, err := priv.ECDH(tkey)
	if err != nil {
		return nil, err
	}
	lo, hi := priv.PublicKey().Bytes(), tpub
	if bytes.Compare(hi, lo) < 0 {
		lo, hi = hi, lo
	}
	pair, err := hkdf.Key(sha256.New, shared, []byte(pairSalt), string(append(append([]byte{}, lo...), hi...)), 32)
	if err != nil {
		return nil, err
	}
	m := hmac.New(sha256.New, pair)
	m.Write([]byte(tagPrefix))
	m.Write([]byte{0})
	m.Write([]byte(shardTopic))
	m.Write([]byte{0})
	m.Write([]byte(id.ID))
	m.Write(handle)
	return m.Sum(nil)[:TagLen], nil
}

// RandomBox is a box of pads padded blocks that opens for no one.
func RandomBox(pads int) []byte {
	b := make([]byte, BoxOverhead+pads*BoxPad)
	rand.Read(b)
	return b
}

// BoxAD is a sealed record's additional data.
func BoxAD(shardTopic string, owner peer.ID) []byte {
	ad := append([]byte(boxADPrefix), 0)
	ad = append(ad, shardTopic...)
	return append(append(ad, 0), owner...)
}

// SealBox seals plain to the peer to (an Ed25519 peer ID) under ad:
// ephemeral X25519 key || nonce || XChaCha20-Poly1305 ciphertext.
func SealBox(to peer.ID, plain, ad []byte) ([]byte, error) {
	rpub, err := montgomery(to)
	if err != nil {
		return nil, err
	}
	rkey, err := ecdh.X25519().NewPublicKey(rpub)
	if err != nil {
		return nil, err
	}
	eph, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	shared, err := eph.ECDH(rkey)
	if err != nil {
		return nil, err
	}
	epub := eph.PublicKey().Bytes()
	key, err := hkdf.Key(sha256.New, shared, []byte(boxSalt), string(append(append([]byte{}, epub...), rpub...)), chacha20poly1305.KeySize)
	if err != nil {
		return nil, err
	}
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	out := append(epub, nonce...)
	return aead.Seal(out, nonce, plain, ad), nil
}

var fieldP = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 255), big.NewInt(19))

// montgomery is the X25519 public key of an Ed25519 peer ID:
// u = (1 + y) / (1 - y) mod 2^255 - 19 (RFC 7748 section 4.1).
func montgomery(id peer.ID) ([]byte, error) {
	pk, err := id.ExtractPublicKey()
	if err != nil {
		return nil, err
	}
	if pk.Type() != cryptopb.KeyType_Ed25519 {
		return nil, errors.New("not an Ed25519 peer")
	}
	raw, err := pk.Raw()
	if err != nil {
		return nil, err
	}
	be := make([]byte, 32)
	for i := range be {
		be[i] = raw[31-i]
	}
	be[0] &= 0x7f
	y := new(big.Int).SetBytes(be)
	one := big.NewInt(1)
	num := new(big.Int).Add(one, y)
	den := new(big.Int).Sub(one, y)
	den.Mod(den, fieldP)
	if den.Sign() == 0 {
		return nil, errors.New("not a usable Ed25519 key")
	}
	u := num.Mul(num, den.ModInverse(den, fieldP)).Mod(num, fieldP)
	out := make([]byte, 32)
	u.FillBytes(out)
	for i, j := 0, 31; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i] // X25519 keys are little-endian
	}
	return out, nil
}

// OpenSealed returns the SealedOffer in a sealed record and its signer,
// checking the signature only.
func OpenSealed(env []byte) (*pb.SealedOffer, peer.ID, error) {
	rec := &sealedRecord{}
	e, err := record.ConsumeTypedEnvelope(env, rec)
	if err != nil {
		return nil, "", err
	}
	owner, err := peer.IDFromPublicKey(e.PublicKey)
	if err != nil {
		return nil, "", err
	}
	return rec.so, owner, nil
}

// PullSealed asks p for its board of topics (board sync, version 2)
// with sealed records, and returns the whole reply.
func PullSealed(ctx context.Context, h host.Host, p peer.ID, topics []string) (*pb.BoardResponse, error) {
	st, err := h.NewStream(ctx, p, protocol.ID(boardProtoV2))
	if err != nil {
		return nil, err
	}
	defer st.Close()
	if d, ok := ctx.Deadline(); ok {
		st.SetDeadline(d)
	}
	if _, err := protodelim.MarshalTo(st, &pb.BoardRequest{Version: protoVersion, Topics: topics, Sealed: true}); err != nil {
		return nil, err
	}
	st.CloseWrite()
	resp := &pb.BoardResponse{}
	if err := (protodelim.UnmarshalOptions{MaxSize: maxBoardReply}).UnmarshalFrom(bufio.NewReader(st), resp); err != nil {
		return nil, err
	}
	return resp, nil
}
