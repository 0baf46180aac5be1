package box

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

func edKey(t testing.TB) (crypto.PrivKey, peer.ID) {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return k, id
}

// The X25519 key a sender derives from a peer ID is the one the peer
// derives from its private key: otherwise no box would ever open.
func TestConversionAgrees(t *testing.T) {
	for range 50 {
		k, id := edKey(t)
		o, err := NewOpener(k)
		if err != nil {
			t.Fatal(err)
		}
		pub, err := X25519Public(id)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(pub, o.Public()) {
			t.Fatalf("peer ID gives %x, private key %x", pub, o.Public())
		}
	}
}

func TestSealToOpens(t *testing.T) {
	k, id := edKey(t)
	other, _ := edKey(t)
	o, _ := NewOpener(k)
	oo, _ := NewOpener(other)
	msg := []byte("Ada, Tuesday 09:00, 25 minutes, with Bo")
	ad := []byte("topic")
	sealed, err := SealTo(id, msg, ad)
	if err != nil {
		t.Fatal(err)
	}
	if len(sealed) != len(msg)+SealToOverhead {
		t.Fatalf("sealed %d bytes, want %d", len(sealed), len(msg)+SealToOverhead)
	}
	if bytes.Contains(sealed, []byte("Ada")) || bytes.Contains(sealed, []byte(id)) {
		t.Fatal("the box shows its plaintext or its recipient")
	}
	if got, err := o.Open(sealed, ad); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("Open = %q, %v", got, err)
	}
	if _, err := oo.Open(sealed, ad); !errors.Is(err, ErrOpen) {
		t.Fatalf("another peer opened it: %v", err)
	}
	if _, err := o.Open(sealed, []byte("other topic")); !errors.Is(err, ErrOpen) {
		t.Fatalf("opened with other additional data: %v", err)
	}
	for i := range sealed {
		bad := bytes.Clone(sealed)
		bad[i] ^= 0x01
		if _, err := o.Open(bad, ad); !errors.Is(err, ErrOpen) {
			t.Fatalf("a box altered at byte %d opened: %v", i, err)
		}
	}
	if _, err := o.Open(sealed[:SealToOverhead-1], ad); !errors.Is(err, ErrOpen) {
		t.Fatalf("a short box: %v", err)
	}
	again, _ := SealTo(id, msg, ad)
	if bytes.Equal(again[:32], sealed[:32]) || bytes.Equal(again, sealed) {
		t.Fatal("two boxes of one message share an ephemeral key")
	}
}

func TestSealToRefusesOtherKeys(t *testing.T) {
	k, _, err := crypto.GenerateSecp256k1Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := peer.IDFromPrivateKey(k)
	if _, err := SealTo(id, []byte("x"), nil); err == nil {
		t.Fatal("sealed to a secp256k1 peer")
	}
	if _, err := NewOpener(k); err == nil {
		t.Fatal("a secp256k1 key made an opener")
	}
	// Not points of the curve, or the identity (y = 1).
	for _, pub := range [][]byte{bytes.Repeat([]byte{0xff}, 32), append([]byte{1}, make([]byte, 31)...)} {
		if _, err := edwardsToMontgomery(pub); err == nil {
			t.Errorf("converted %x", pub)
		}
	}
}

func TestSealOpen(t *testing.T) {
	var key, other [KeySize]byte
	rand.Read(key[:])
	rand.Read(other[:])
	sealed, err := Seal(&key, []byte("hello"), []byte("ad"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := Open(&key, sealed, []byte("ad")); err != nil || string(got) != "hello" {
		t.Fatalf("Open = %q, %v", got, err)
	}
	if _, err := Open(&other, sealed, []byte("ad")); !errors.Is(err, ErrOpen) {
		t.Fatalf("another key: %v", err)
	}
}

func FuzzOpenerOpen(f *testing.F) {
	k, id := edKey(f)
	o, _ := NewOpener(k)
	good, _ := SealTo(id, []byte("an offer"), []byte("ad"))
	f.Add(good)
	f.Add([]byte{})
	f.Add(make([]byte, SealToOverhead))
	f.Fuzz(func(t *testing.T, data []byte) {
		msg, err := o.Open(data, []byte("ad"))
		if err == nil && !bytes.Equal(data, good) {
			// Only a box sealed to us opens; the fuzzer cannot forge one.
			t.Fatalf("opened %q from a box we did not seal", msg)
		}
	})
}

// What every node on a shard pays per sealed record that is not for it:
// one X25519 agreement, HKDF, and an AEAD check that fails.
// go test -run X -bench Open ./matchmaking/box
func BenchmarkOpenNotForUs(b *testing.B) {
	_, to := edKey(b)
	k, _ := edKey(b)
	o, _ := NewOpener(k)
	sealed, _ := SealTo(to, make([]byte, 512), []byte("ad"))
	b.SetBytes(int64(len(sealed)))
	for b.Loop() {
		if _, err := o.Open(sealed, []byte("ad")); !errors.Is(err, ErrOpen) {
			b.Fatal(err)
		}
	}
}

func BenchmarkSealTo(b *testing.B) {
	_, to := edKey(b)
	msg := make([]byte, 512)
	for b.Loop() {
		if _, err := SealTo(to, msg, []byte("ad")); err != nil {
			b.Fatal(err)
		}
	}
}

// Two peers derive the same pair key, each from its own private key and
// the other's peer ID; a third peer derives another with either of them.
// The key is cached: checking many records of one peer costs one
// agreement.
func TestPairKeyAgrees(t *testing.T) {
	ka, a := edKey(t)
	kb, b := edKey(t)
	kc, _ := edKey(t)
	oa, _ := NewOpener(ka)
	ob, _ := NewOpener(kb)
	oc, _ := NewOpener(kc)
	ab, err := oa.PairKey(b)
	if err != nil {
		t.Fatal(err)
	}
	ba, err := ob.PairKey(a)
	if err != nil {
		t.Fatal(err)
	}
	if *ab != *ba {
		t.Fatal("the two sides of a pair derive different keys")
	}
	ca, _ := oc.PairKey(a)
	cb, _ := oc.PairKey(b)
	if *ca == *ab || *cb == *ab {
		t.Fatal("a third peer derives the pair's key")
	}
	before := oa.Agreements()
	for range 100 {
		if k, _ := oa.PairKey(b); *k != *ab {
			t.Fatal("the cached key changed")
		}
	}
	if n := oa.Agreements() - before; n != 0 {
		t.Fatalf("100 look-ups of one pair made %d agreements", n)
	}
	if _, err := oa.PairKey(peer.ID("not a peer")); err == nil {
		t.Fatal("a pair key with a peer ID that is no key")
	}
}

// The cache stays within its bound whatever number of peers comes.
func TestPairKeyCacheBounded(t *testing.T) {
	k, _ := edKey(t)
	o, _ := NewOpener(k)
	for i := range maxPairs + 100 {
		o.PairKey(peer.ID(fmt.Sprintf("junk-%d", i))) // no keys: cached as errors, no agreement
	}
	if n := len(o.pairs); n > maxPairs {
		t.Fatalf("the pair cache holds %d peers, more than %d", n, maxPairs)
	}
}
