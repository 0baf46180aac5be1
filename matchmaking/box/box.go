// Package box is the authenticated encryption of Tandem's wire protocol:
// XChaCha20-Poly1305 with a random 24-byte nonce under a key both sides
// hold (circles, package circle), sealing a message to one peer known
// only by its peer ID (private offers), and the key two peers share
// without a message (PairKey), with which an invited peer recognises the
// boxes sealed to it without trying to open every box.
//
// Sealing to a peer is a sealed box: the sender makes an ephemeral X25519
// key, agrees a secret with the recipient's X25519 key, which is its
// Ed25519 peer key converted to the Montgomery form (RFC 7748 section
// 4.1, the map libsodium and age use), derives the AEAD key with
// HKDF-SHA256 (RFC 5869) and seals the message with it. Only the
// holder of the recipient's private key can open it; the box names
// neither the sender nor the recipient, and every box of one message
// looks different.
package box

import (
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"math/big"
	"sync"

	"github.com/libp2p/go-libp2p/core/crypto"
	cryptopb "github.com/libp2p/go-libp2p/core/crypto/pb"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/crypto/chacha20poly1305"
)

// KeySize is the length of a symmetric key.
const KeySize = chacha20poly1305.KeySize

// Overhead is what Seal adds to a message: the nonce and the tag.
const Overhead = chacha20poly1305.NonceSizeX + chacha20poly1305.Overhead

// SealToOverhead is what SealTo adds: the ephemeral public key, and Seal's.
const SealToOverhead = 32 + Overhead

// ErrOpen: the data does not open with the key (another key, another
// recipient, other additional data, or altered).
var ErrOpen = errors.New("does not open")

// Seal encrypts msg under key, bound to the additional data ad, with a
// fresh random nonce: nonce || ciphertext.
func Seal(key *[KeySize]byte, msg, ad []byte) ([]byte, error) {
	aead, err := chacha20poly1305.NewX(key[:])
	if err != nil {
		return nil, fmt.Errorf("sealing: %w", err)
	}
	out := make([]byte, aead.NonceSize(), aead.NonceSize()+len(msg)+aead.Overhead())
	if _, err := rand.Read(out); err != nil {
		return nil, fmt.Errorf("sealing: %w", err)
	}
	return aead.Seal(out, out, msg, ad), nil
}

// Open decrypts what Seal made under key with the same additional data.
func Open(key *[KeySize]byte, data, ad []byte) ([]byte, error) {
	if len(data) < Overhead {
		return nil, fmt.Errorf("%w: %d bytes", ErrOpen, len(data))
	}
	aead, err := chacha20poly1305.NewX(key[:])
	if err != nil {
		return nil, fmt.Errorf("opening: %w", err)
	}
	n := aead.NonceSize()
	msg, err := aead.Open(nil, data[:n], data[n:], ad)
	if err != nil {
		return nil, ErrOpen
	}
	return msg, nil
}

// boxSalt separates this use of HKDF from every other.
const boxSalt = "tandem sealed box v1"

// boxKey derives the AEAD key of a sealed box from the X25519 secret and
// both public keys (so a key belongs to one ephemeral key and one
// recipient).
func boxKey(shared, ephemeral, recipient []byte) (*[KeySize]byte, error) {
	info := append(append([]byte{}, ephemeral...), recipient...)
	k, err := hkdf.Key(sha256.New, shared, []byte(boxSalt), string(info), KeySize)
	if err != nil {
		return nil, fmt.Errorf("deriving the box key: %w", err)
	}
	return (*[KeySize]byte)(k), nil
}

// SealTo encrypts msg for recipient, bound to ad: ephemeral X25519 public
// key (32 bytes) || Seal's output. recipient must be an Ed25519 peer ID.
func SealTo(recipient peer.ID, msg, ad []byte) ([]byte, error) {
	rpub, err := X25519Public(recipient)
	if err != nil {
		return nil, err
	}
	rkey, err := ecdh.X25519().NewPublicKey(rpub)
	if err != nil {
		return nil, fmt.Errorf("sealing to %s: %w", recipient, err)
	}
	eph, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("sealing: %w", err)
	}
	shared, err := eph.ECDH(rkey)
	if err != nil {
		return nil, fmt.Errorf("sealing to %s: %w", recipient, err)
	}
	epub := eph.PublicKey().Bytes()
	key, err := boxKey(shared, epub, rpub)
	if err != nil {
		return nil, err
	}
	sealed, err := Seal(key, msg, ad)
	if err != nil {
		return nil, err
	}
	return append(epub, sealed...), nil
}

// Opener opens boxes sealed to one peer: it holds that peer's X25519 key,
// derived once from its Ed25519 key.
type Opener struct {
	priv *ecdh.PrivateKey
	pub  []byte

	mu    sync.Mutex
	pairs map[peer.ID]pairEntry // PairKey's cache
	// agreements counts the X25519 agreements the opener made (tests).
	agreements uint64
}

type pairEntry struct {
	key *[KeySize]byte
	err error
}

// maxPairs bounds PairKey's cache. A peer that sends records of more
// identities than this makes the node agree keys again, one per identity
// and record at worst, as before the cache: each identity costs its
// sender a stamp.
const maxPairs = 4096

// NewOpener derives the X25519 key of an Ed25519 peer key: the clamped
// first half of SHA-512 of the seed, as Ed25519 itself derives its scalar.
func NewOpener(k crypto.PrivKey) (*Opener, error) {
	if k.Type() != cryptopb.KeyType_Ed25519 {
		return nil, fmt.Errorf("box: a %v key cannot open sealed boxes (Ed25519 only)", k.Type())
	}
	raw, err := k.Raw()
	if err != nil || len(raw) < 32 {
		return nil, fmt.Errorf("box: reading the Ed25519 key: %v", err)
	}
	h := sha512.Sum512(raw[:32])
	priv, err := ecdh.X25519().NewPrivateKey(h[:32]) // X25519 clamps the scalar itself
	if err != nil {
		return nil, fmt.Errorf("box: %w", err)
	}
	return &Opener{priv: priv, pub: priv.PublicKey().Bytes(), pairs: map[peer.ID]pairEntry{}}, nil
}

// pairSalt separates PairKey's use of HKDF from the sealed box's.
const pairSalt = "tandem pair key v1"

// PairKey is the key the opener's peer shares with peer p, which p
// derives alike from its own key and the opener's peer ID: HKDF-SHA256
// of the static X25519 agreement of the two keys, bound to both public
// keys (the lower first, so both sides derive the same key). No one
// else can compute it. Keys are cached (maxPairs), so a node that checks
// many records of one peer agrees once.
func (o *Opener) PairKey(p peer.ID) (*[KeySize]byte, error) {
	o.mu.Lock()
	e, ok := o.pairs[p]
	o.mu.Unlock()
	if ok {
		return e.key, e.err
	}
	key, err := o.pairKey(p)
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.pairs) >= maxPairs {
		// Forget a quarter, at random (map order): what stays is as good
		// a guess of who comes again as what goes.
		n := 0
		for q := range o.pairs {
			delete(o.pairs, q)
			if n++; n >= maxPairs/4 {
				break
			}
		}
	}
	o.pairs[p] = pairEntry{key, err}
	return key, err
}

func (o *Opener) pairKey(p peer.ID) (*[KeySize]byte, error) {
	ppub, err := X25519Public(p)
	if err != nil {
		return nil, err
	}
	pkey, err := ecdh.X25519().NewPublicKey(ppub)
	if err != nil {
		return nil, fmt.Errorf("box: the key of %s: %w", p, err)
	}
	o.mu.Lock()
	o.agreements++
	o.mu.Unlock()
	shared, err := o.priv.ECDH(pkey)
	if err != nil {
		return nil, fmt.Errorf("box: no key shared with %s: %w", p, err) // a low-order key
	}
	lo, hi := o.pub, ppub
	if string(hi) < string(lo) {
		lo, hi = hi, lo
	}
	info := append(append([]byte{}, lo...), hi...)
	k, err := hkdf.Key(sha256.New, shared, []byte(pairSalt), string(info), KeySize)
	if err != nil {
		return nil, fmt.Errorf("deriving a pair key: %w", err)
	}
	return (*[KeySize]byte)(k), nil
}

// Agreements is how many X25519 agreements the opener has made for
// PairKey and Open (tests count the cost of a flood with it).
func (o *Opener) Agreements() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.agreements
}

// Public is the opener's X25519 public key (tests compare it with
// X25519Public of the peer ID).
func (o *Opener) Public() []byte { return o.pub }

// Open decrypts a box that SealTo sealed to this opener's peer with the
// same ad. Any other box fails with ErrOpen: trying costs one X25519
// agreement and one AEAD check.
func (o *Opener) Open(data, ad []byte) ([]byte, error) {
	if len(data) < SealToOverhead {
		return nil, fmt.Errorf("%w: %d bytes", ErrOpen, len(data))
	}
	epub := data[:32]
	ekey, err := ecdh.X25519().NewPublicKey(epub)
	if err != nil {
		return nil, ErrOpen
	}
	o.mu.Lock()
	o.agreements++
	o.mu.Unlock()
	shared, err := o.priv.ECDH(ekey)
	if err != nil {
		return nil, ErrOpen // a low-order ephemeral key: the secret would be zero
	}
	key, err := boxKey(shared, epub, o.pub)
	if err != nil {
		return nil, err
	}
	return Open(key, data[32:], ad)
}

// The curve25519 field and Edwards constant d, for the conversion below.
var (
	fieldP = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 255), big.NewInt(19))
	edD    = func() *big.Int { // -121665 / 121666 mod p
		n := new(big.Int).Mod(big.NewInt(-121665), fieldP)
		return n.Mul(n, new(big.Int).ModInverse(big.NewInt(121666), fieldP)).Mod(n, fieldP)
	}()
)

// X25519Public is the X25519 public key of an Ed25519 peer ID: the
// Montgomery u = (1 + y) / (1 - y) of its Edwards point (RFC 7748 section
// 4.1). It refuses peer IDs of other key types and keys that are not
// points of the curve.
func X25519Public(id peer.ID) ([]byte, error) {
	pk, err := id.ExtractPublicKey()
	if err != nil {
		return nil, fmt.Errorf("box: the key of %s: %w", id, err)
	}
	if pk.Type() != cryptopb.KeyType_Ed25519 {
		return nil, fmt.Errorf("box: %s has a %v key; boxes are sealed to Ed25519 peers only", id, pk.Type())
	}
	raw, err := pk.Raw()
	if err != nil {
		return nil, fmt.Errorf("box: the key of %s: %w", id, err)
	}
	return edwardsToMontgomery(raw)
}

func edwardsToMontgomery(pub []byte) ([]byte, error) {
	if len(pub) != 32 {
		return nil, fmt.Errorf("box: an Ed25519 key of %d bytes", len(pub))
	}
	le := make([]byte, 32)
	for i := range le {
		le[i] = pub[31-i] // big.Int reads big-endian
	}
	le[0] &= 0x7f // the sign of x
	y := new(big.Int).SetBytes(le)
	one := big.NewInt(1)
	if y.Cmp(fieldP) >= 0 || y.Cmp(one) == 0 {
		return nil, errors.New("box: not a usable Ed25519 key")
	}
	// On the curve: x^2 = (y^2 - 1) / (d y^2 + 1) must be a square.
	y2 := new(big.Int).Mul(y, y)
	y2.Mod(y2, fieldP)
	num := new(big.Int).Sub(y2, one)
	den := new(big.Int).Mul(edD, y2)
	den.Add(den, one).Mod(den, fieldP)
	inv := new(big.Int).ModInverse(den, fieldP)
	if inv == nil {
		return nil, errors.New("box: not a usable Ed25519 key")
	}
	x2 := num.Mul(num.Mod(num, fieldP), inv)
	x2.Mod(x2, fieldP)
	if x2.Sign() != 0 && big.Jacobi(x2, fieldP) != 1 {
		return nil, errors.New("box: not a point of the Ed25519 curve")
	}
	// u = (1 + y) / (1 - y)
	d := new(big.Int).Sub(one, y)
	d.Mod(d, fieldP)
	u := new(big.Int).Add(one, y)
	u.Mul(u, new(big.Int).ModInverse(d, fieldP)).Mod(u, fieldP)
	out := make([]byte, 32)
	u.FillBytes(out)
	for i, j := 0, 31; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i] // back to little-endian
	}
	return out, nil
}
