// Package usertext holds the one set of rules for text that people type and
// peers send: display names, goals, chat lines, check-in notes and
// cancel/leave reasons. The config loader, the local API and every wire
// decoder check text with Field.Check, so a value one node accepts is a
// value every node accepts. Escape makes any string safe to print on a
// terminal, for text stored before these rules or read from elsewhere.
// It sits under session/ because the top level of the repo is fixed by the
// design card; matchmaking and the CLI import it too.
package usertext

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits in bytes of UTF-8. They are the wire limits of the matchmaking and
// session protocols (docs/protocol.md): raising one needs every peer to
// accept the longer text first.
const (
	MaxName   = 64
	MaxGoal   = 280
	MaxChat   = 1000
	MaxNote   = 500
	MaxReason = 280
)

// ErrInvalid marks text that breaks the rules. Errors from Check match it
// with errors.Is; their message is only the reason, so that callers can
// wrap them in their own sentinel ("invalid request: goal is ...").
var ErrInvalid = errors.New("invalid text")

type textError string

func (e textError) Error() string { return string(e) }
func (e textError) Unwrap() error { return ErrInvalid }

func errorf(format string, args ...any) error { return textError(fmt.Sprintf(format, args...)) }

// Field is one kind of user text: what it is called in errors and its limit.
type Field struct {
	Name string
	Max  int
}

// The fields. A cancel reason (matchmaking) and a leave reason (session)
// are both Reason.
var (
	Name   = Field{"display name", MaxName}
	Goal   = Field{"goal", MaxGoal}
	Chat   = Field{"chat message", MaxChat}
	Note   = Field{"check-in note", MaxNote}
	Reason = Field{"reason", MaxReason}
)

// Check reports why s is not acceptable as f, wrapping ErrInvalid: longer
// than f.Max bytes, not UTF-8, or holding a character that Forbidden
// refuses. The error names the field, the limit or the character.
func (f Field) Check(s string) error {
	if len(s) > f.Max {
		return errorf("%s is %d bytes, at most %d are allowed", f.Name, len(s), f.Max)
	}
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				return errorf("%s is not valid UTF-8 (byte %d)", f.Name, i)
			}
		}
		if Forbidden(r) {
			return errorf("%s contains %s at byte %d; control and bidirectional formatting characters are not allowed",
				f.Name, describe(r), i)
		}
	}
	return nil
}

// CheckName trims surrounding white space from a display name and checks
// it. Every place that takes a name (config, API, flags) goes through here.
func CheckName(s string) (string, error) {
	s = strings.TrimSpace(s)
	return s, Name.Check(s)
}

// Clean makes s acceptable as f by dropping what Check refuses: bytes that
// are not UTF-8, forbidden characters, surrounding white space, and what
// lies past f.Max bytes (cut on a character boundary). It is for text
// stored before these rules, which must not make a node invisible or a
// session fail to open; new input is refused with Check instead.
func (f Field) Clean(s string) string {
	var b strings.Builder
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				continue
			}
		}
		if Forbidden(r) {
			continue
		}
		b.WriteRune(r)
	}
	out := strings.TrimSpace(b.String())
	for len(out) > f.Max {
		_, size := utf8.DecodeLastRuneInString(out)
		out = out[:len(out)-size]
	}
	return strings.TrimSpace(out)
}

// Forbidden reports whether r may not appear in user text: a control
// character (C0 including tab and newline, DEL, C1; a terminal acts on
// these), a line or paragraph separator, or a bidirectional formatting
// character (embeddings, overrides, isolates and the marks: they reorder
// the text around them on screen).
func Forbidden(r rune) bool {
	return unicode.IsControl(r) || r == '\u2028' || r == '\u2029' || unicode.Is(unicode.Bidi_Control, r)
}

func describe(r rune) string {
	switch {
	case unicode.Is(unicode.Bidi_Control, r):
		return fmt.Sprintf("the bidirectional formatting character U+%04X", r)
	case r == '\n' || r == '\r' || r == '\u2028' || r == '\u2029' || r == '\u0085':
		return fmt.Sprintf("a line break (U+%04X)", r)
	}
	return fmt.Sprintf("the control character U+%04X", r)
}

// Escape returns s with every forbidden character and every byte that is
// not UTF-8 written as a visible escape (\n, \t, \x1b, \u202e, \xff), so
// that printing it on a terminal cannot move the cursor, change colours,
// ring the bell or reorder the line. Text that passes Check comes back
// unchanged.
func Escape(s string) string {
	if clean(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case !Forbidden(r):
			b.WriteString(s[i : i+size])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < utf8.RuneSelf:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
		i += size
	}
	return b.String()
}

func clean(s string) bool {
	for i, r := range s {
		if Forbidden(r) {
			return false
		}
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				return false
			}
		}
	}
	return true
}
