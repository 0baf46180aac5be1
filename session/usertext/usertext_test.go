package usertext

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		f    Field
		s    string
		want string // "" = accepted, else a part of the error
	}{
		{Name, "Ada", ""},
		{Name, "Zoë 🚀 李", ""},
		{Name, "مريم", ""},
		{Name, "👩\u200d💻 dev", ""}, // a zero-width joiner builds an emoji, it does not reorder
		{Name, strings.Repeat("a", 64), ""},
		{Name, strings.Repeat("a", 65), "name is 65 bytes, at most 64"},
		{Name, strings.Repeat("é", 33), "66 bytes, at most 64"},
		{Goal, strings.Repeat("g", 280), ""},
		{Goal, strings.Repeat("g", 281), "goal is 281 bytes, at most 280"},
		{Chat, strings.Repeat("c", 1001), "at most 1000"},
		{Note, strings.Repeat("n", 501), "at most 500"},
		{Reason, strings.Repeat("r", 281), "at most 280"},
		{Name, "\x1b[2J", "control character U+001B at byte 0"},
		{Goal, "ding\a", "control character U+0007"},
		{Chat, "two\nlines", "line break (U+000A)"},
		{Chat, "tab\there", "U+0009"},
		{Chat, "del\x7f", "U+007F"},
		{Chat, "csi\u009b31m", "U+009B"},
		{Chat, "nel\u0085", "line break (U+0085)"},
		{Chat, "ls\u2028", "line break (U+2028)"},
		{Name, "evil\u202egnp.exe", "bidirectional formatting character U+202E"},
		{Name, "\u2066isolate\u2069", "U+2066"},
		{Name, "mark\u200f", "U+200F"},
		{Name, "bad\xff", "not valid UTF-8 (byte 3)"},
		{Name, "", ""},
	} {
		err := tc.f.Check(tc.s)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s %q: %v, want accepted", tc.f.Name, tc.s, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s %q: %v, want an error with %q", tc.f.Name, tc.s, err, tc.want)
		case err != nil && !errors.Is(err, ErrInvalid):
			t.Errorf("%s %q: %v does not wrap ErrInvalid", tc.f.Name, tc.s, err)
		}
	}
}

func TestCheckNameTrims(t *testing.T) {
	if n, err := CheckName("  Ada \t"); err != nil || n != "Ada" {
		t.Errorf(`CheckName("  Ada \t") = %q, %v`, n, err)
	}
	if _, err := CheckName(strings.Repeat("x", 80)); err == nil || !strings.Contains(err.Error(), "80 bytes, at most 64") {
		t.Errorf("80-byte name: %v", err)
	}
}

func TestEscape(t *testing.T) {
	for in, want := range map[string]string{
		"Ada":                    "Ada",
		"Zoë 🚀":                  "Zoë 🚀",
		"\x1b[2J\x1b[31mred":     `\x1b[2J\x1b[31mred`,
		"bell\a":                 `bell\x07`,
		"a\nb\r\tc":              `a\nb\r\tc`,
		"csi\u009b":              `csi\u009b`,
		"rlo\u202etxt.exe":       `rlo\u202etxt.exe`,
		"bad\xff\xfe":            `bad\xff\xfe`,
		"\u2028\u2029\u061c\x7f": `\u2028\u2029\u061c\x7f`,
	} {
		if got := Escape(in); got != want {
			t.Errorf("Escape(%q) = %q, want %q", in, got, want)
		}
	}
}

// safeForTerminal is what Escape promises: valid UTF-8 with no character a
// terminal acts on or reorders by.
func safeForTerminal(t *testing.T, out string) {
	t.Helper()
	if !utf8.ValidString(out) {
		t.Fatalf("output is not UTF-8: %q", out)
	}
	for _, r := range out {
		if Forbidden(r) {
			t.Fatalf("output holds U+%04X: %q", r, out)
		}
	}
}

func FuzzEscape(f *testing.F) {
	for _, s := range []string{"", "Ada", "\x1b]0;pwned\a", "\u202e", "a\xffb", "\u009b2J", "x\r\ny"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := Escape(s)
		safeForTerminal(t, out)
		acceptable := Field{"any", len(s)}.Check(s) == nil
		if acceptable != (out == s) {
			t.Fatalf("Check accepts %q: %v, but Escape changes it: %v (%q)", s, acceptable, out != s, out)
		}
		if Escape(out) != out {
			t.Fatalf("Escape is not idempotent on %q", s)
		}
	})
}

func TestClean(t *testing.T) {
	for in, want := range map[string]string{
		"Ada":                         "Ada",
		" \x1b[31mAda\a ":             "[31mAda",
		"Ada\u202e\xff":               "Ada",
		strings.Repeat("é", 40):       strings.Repeat("é", 32),
		"\n":                          "",
		strings.Repeat("a", 63) + "🚀": strings.Repeat("a", 63),
	} {
		if got := Name.Clean(in); got != want {
			t.Errorf("Clean(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzClean(f *testing.F) {
	f.Add("Ada\x1b[2J")
	f.Add(strings.Repeat("é", 40))
	f.Fuzz(func(t *testing.T, s string) {
		for _, fl := range []Field{Name, Goal, {"tiny", 3}} {
			out := fl.Clean(s)
			if err := fl.Check(out); err != nil {
				t.Fatalf("Clean(%q) = %q, which Check refuses: %v", s, out, err)
			}
			if fl.Check(s) == nil && out != strings.TrimSpace(s) {
				t.Fatalf("Clean changed acceptable text %q to %q", s, out)
			}
		}
	})
}
