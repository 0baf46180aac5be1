package circle

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestInviteRoundTrip(t *testing.T) {
	s, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	code := Code(s)
	for _, text := range []string{
		code, strings.ToUpper(code), strings.ReplaceAll(code, "-", ""), "  " + code + "\n",
		Link("Team Rocket & co", s),
	} {
		name, got, err := ParseInvite(text)
		if err != nil {
			t.Fatalf("ParseInvite(%q): %v", text, err)
		}
		if got != s {
			t.Fatalf("ParseInvite(%q) gave another secret", text)
		}
		if strings.HasPrefix(text, "tandem:") && name != "Team Rocket & co" {
			t.Errorf("name from link = %q", name)
		}
	}
	// One mistyped letter is caught by the checksum.
	typo := []byte(code)
	i := len(typo) - 3
	if typo[i] == 'a' {
		typo[i] = 'b'
	} else {
		typo[i] = 'a'
	}
	if _, _, err := ParseInvite(string(typo)); !errors.Is(err, ErrInvite) {
		t.Errorf("a mistyped code parsed: %v", err)
	}
	for _, bad := range []string{"", "hello", "tandem://circle/join?code=", "tandem://other/join?code=" + code, "tc1-" + strings.Repeat("a", 2000)} {
		if _, _, err := ParseInvite(bad); !errors.Is(err, ErrInvite) {
			t.Errorf("ParseInvite(%.40q) = %v, want ErrInvite", bad, err)
		}
	}
}

func TestKeysAreDistinctAndStable(t *testing.T) {
	s1, _ := NewSecret()
	s2, _ := NewSecret()
	k1, _ := Derive(s1)
	k1b, _ := Derive(s1)
	k2, _ := Derive(s2)
	if k1.Topic != k1b.Topic || k1.Rendezvous != k1b.Rendezvous || k1.key != k1b.key {
		t.Fatal("the same secret derived different keys")
	}
	if k1.Topic == k2.Topic || k1.Rendezvous == k2.Rendezvous || k1.key == k2.key {
		t.Fatal("two secrets derived a common key")
	}
	if strings.Contains(k1.Topic, k1.Rendezvous[len("tandem/circle/1/"):]) {
		t.Fatal("the topic gives away the rendezvous key")
	}
}

func TestSealOpen(t *testing.T) {
	s, _ := NewSecret()
	other, _ := NewSecret()
	k, _ := Derive(s)
	ko, _ := Derive(other)
	msg := []byte("an offer for 09:00, 25 minutes, from Alice")
	sealed, err := k.Seal([]byte("alice"), msg)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("Alice")) || bytes.Contains(sealed, []byte("09:00")) {
		t.Fatal("the sealed message shows its plaintext")
	}
	if got, err := k.Open([]byte("alice"), sealed); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("Open = %q, %v", got, err)
	}
	if _, err := ko.Open([]byte("alice"), sealed); !errors.Is(err, ErrOpen) {
		t.Errorf("another circle's key opened it: %v", err)
	}
	if _, err := k.Open([]byte("mallory"), sealed); !errors.Is(err, ErrOpen) {
		t.Errorf("opened as another author's: %v", err)
	}
	flipped := bytes.Clone(sealed)
	flipped[len(flipped)-1] ^= 1
	if _, err := k.Open([]byte("alice"), flipped); !errors.Is(err, ErrOpen) {
		t.Errorf("an altered message opened: %v", err)
	}
	again, _ := k.Seal([]byte("alice"), msg)
	if bytes.Equal(again, sealed) {
		t.Error("two seals of one message are equal (nonce reused)")
	}
}

func FuzzParseInvite(f *testing.F) {
	s, _ := NewSecret()
	f.Add(Code(s))
	f.Add(Link("name", s))
	f.Add("tandem://circle/join?code=tc1-&name=%zz")
	f.Fuzz(func(t *testing.T, text string) {
		name, got, err := ParseInvite(text)
		if err != nil {
			return
		}
		// Whatever parses, round-trips.
		_, again, err := ParseInvite(Link(name, got))
		if err != nil || again != got {
			t.Fatalf("round trip of %q: %v", text, err)
		}
	})
}

func FuzzOpen(f *testing.F) {
	s, _ := NewSecret()
	k, _ := Derive(s)
	sealed, _ := k.Seal([]byte("a"), []byte("hello"))
	f.Add([]byte("a"), sealed)
	f.Add([]byte(""), []byte{1})
	f.Fuzz(func(t *testing.T, author, data []byte) {
		k.Open(author, data) // must not panic
	})
}
