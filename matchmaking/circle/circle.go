// Package circle is the cryptography of private circles: the invite that
// carries a circle's secret, the names and keys derived from the secret
// (HKDF-SHA256, RFC 5869), and the sealing of messages on the circle's
// gossipsub topic with XChaCha20-Poly1305.
//
// Everything a peer outside the circle can see is derived one way from
// the secret: the topic name and the DHT rendezvous key are opaque hashes,
// and every message on the topic is an AEAD ciphertext bound to the topic
// and to its author, so an outsider learns nothing from it, and a member
// cannot pass off another member's message as its own.
package circle

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/tandem-cowork/tandem/matchmaking/box"
)

// SecretLen is the length of a circle's secret: 128 bits, as much as a
// short code can carry.
const SecretLen = 16

// Secret is a circle's shared secret; whoever has it is a member.
type Secret [SecretLen]byte

// NewSecret makes a random secret.
func NewSecret() (Secret, error) {
	var s Secret
	if _, err := rand.Read(s[:]); err != nil {
		return s, fmt.Errorf("making a circle secret: %w", err)
	}
	return s, nil
}

// ErrInvite: the text is not an invite, or it was mistyped.
var ErrInvite = errors.New("not a circle invite")

// MaxInviteLen bounds the invite text accepted (a link with a long name).
const MaxInviteLen = 1024

const (
	codePrefix = "tc1-"
	linkPrefix = "tandem://circle/join"
	checkLen   = 2 // bytes of SHA-256 appended to the secret in a code
)

var codeEnc = base32.StdEncoding.WithPadding(base32.NoPadding)

// Code is the short code of a secret: "tc1-" and the secret with a
// two-byte checksum in base32, in groups of five.
func Code(s Secret) string {
	sum := sha256.Sum256(s[:])
	raw := codeEnc.EncodeToString(append(s[:], sum[:checkLen]...))
	var b strings.Builder
	b.WriteString(codePrefix)
	for i := 0; i < len(raw); i += 5 {
		if i > 0 {
			b.WriteByte('-')
		}
		b.WriteString(strings.ToLower(raw[i:min(i+5, len(raw))]))
	}
	return b.String()
}

// Link is the invite as a link: tandem://circle/join?name=NAME&code=CODE.
func Link(name string, s Secret) string {
	q := url.Values{"code": {Code(s)}}
	if name != "" {
		q.Set("name", name)
	}
	return linkPrefix + "?" + q.Encode()
}

// ParseInvite reads an invite: a code (any case, dashes and spaces
// optional) or a link. name is "" when a bare code was given.
func ParseInvite(text string) (name string, s Secret, err error) {
	text = strings.TrimSpace(text)
	if len(text) > MaxInviteLen {
		return "", s, fmt.Errorf("%w: longer than %d bytes", ErrInvite, MaxInviteLen)
	}
	code := text
	if strings.HasPrefix(strings.ToLower(text), "tandem:") {
		u, err := url.Parse(text)
		if err != nil || u.Scheme != "tandem" || u.Host != "circle" || u.Path != "/join" {
			return "", s, fmt.Errorf("%w: a link must look like %s?name=...&code=...", ErrInvite, linkPrefix)
		}
		q := u.Query()
		name, code = q.Get("name"), q.Get("code")
	}
	s, err = parseCode(code)
	return name, s, err
}

func parseCode(code string) (Secret, error) {
	var s Secret
	c := strings.ToUpper(strings.NewReplacer("-", "", " ", "").Replace(strings.TrimSpace(code)))
	if !strings.HasPrefix(c, "TC1") {
		return s, fmt.Errorf("%w: a code starts with %q", ErrInvite, codePrefix)
	}
	raw, err := codeEnc.DecodeString(c[3:])
	if err != nil || len(raw) != SecretLen+checkLen {
		return s, fmt.Errorf("%w: the code has the wrong letters or length (mistyped?)", ErrInvite)
	}
	sum := sha256.Sum256(raw[:SecretLen])
	if string(sum[:checkLen]) != string(raw[SecretLen:]) {
		return s, fmt.Errorf("%w: the code's checksum does not match (mistyped?)", ErrInvite)
	}
	copy(s[:], raw)
	return s, nil
}

// Keys are what a secret derives: names the outside may see, and the key
// that only members hold.
type Keys struct {
	// ID names the circle locally (API, CLI); it is the start of Topic's
	// hash, so it tells an outsider nothing Topic does not.
	ID string
	// Topic is the circle's gossipsub topic.
	Topic string
	// Rendezvous is the DHT namespace members advertise under.
	Rendezvous string
	key        [box.KeySize]byte
}

// Derive computes a secret's keys, each from its own HKDF info string.
func Derive(s Secret) (Keys, error) {
	var k Keys
	var err error
	derive := func(info string, n int) []byte {
		out, e := hkdf.Key(sha256.New, s[:], []byte("tandem circle v1"), info, n)
		err = errors.Join(err, e)
		return out
	}
	topic := hex.EncodeToString(derive("topic", 16))
	rendezvous := hex.EncodeToString(derive("rendezvous", 16))
	key := derive("aead key", box.KeySize)
	if err != nil {
		return k, fmt.Errorf("deriving circle keys: %w", err)
	}
	k = Keys{ID: topic[:10], Topic: "/tandem/circle/1/" + topic, Rendezvous: "tandem/circle/1/" + rendezvous}
	copy(k.key[:], key)
	return k, nil
}

// Sealed messages: a version byte, then box.Seal's random 24-byte nonce
// and XChaCha20-Poly1305 ciphertext of the message.
const (
	sealVersion = 1
	// Overhead is what sealing adds to a message.
	Overhead = 1 + box.Overhead
	// MaxMessage bounds a sealed message.
	MaxMessage = 8 << 10
)

// ErrOpen: a message on the circle's topic that does not open with the
// circle's key (from outside the circle, altered, or from another author).
var ErrOpen = errors.New("circle message does not open")

// additional binds a ciphertext to the topic and the author's peer ID.
func (k Keys) additional(author []byte) []byte {
	return append([]byte(k.Topic+"\x00"), author...)
}

// Seal encrypts msg from author (a binary peer ID) for the circle.
func (k Keys) Seal(author, msg []byte) ([]byte, error) {
	sealed, err := box.Seal(&k.key, msg, k.additional(author))
	if err != nil {
		return nil, fmt.Errorf("sealing circle message: %w", err)
	}
	out := append([]byte{sealVersion}, sealed...)
	if len(out) > MaxMessage {
		return nil, fmt.Errorf("sealing circle message: %d bytes, more than %d", len(out), MaxMessage)
	}
	return out, nil
}

// Open decrypts a message on the circle's topic said to be from author.
func (k Keys) Open(author, data []byte) ([]byte, error) {
	if len(data) < Overhead || len(data) > MaxMessage {
		return nil, fmt.Errorf("%w: %d bytes", ErrOpen, len(data))
	}
	if data[0] != sealVersion {
		return nil, fmt.Errorf("%w: version %d", ErrOpen, data[0])
	}
	msg, err := box.Open(&k.key, data[1:], k.additional(author))
	if err != nil {
		return nil, ErrOpen
	}
	return msg, nil
}
