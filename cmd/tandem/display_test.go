package main

import (
	"bytes"
	"context"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tandem-cowork/tandem/node/apiv1"
	"github.com/tandem-cowork/tandem/session/usertext"
)

// fill sets every exported string in v (nested structs, pointers to
// structs, slices) to s, so that a new field in an API type is covered by
// the fuzz test below without anyone remembering to add it.
func fill(v reflect.Value, s string) {
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Pointer:
		if v.Type().Elem().Kind() == reflect.Struct {
			if v.IsNil() {
				v.Set(reflect.New(v.Type().Elem()))
			}
			fill(v.Elem(), s)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), s)
			}
		}
	case reflect.Slice:
		switch v.Type().Elem().Kind() {
		case reflect.String, reflect.Struct:
			v.Set(reflect.MakeSlice(v.Type(), 2, 2))
			for i := range 2 {
				fill(v.Index(i), s)
			}
		}
	}
}

func filled[T any](s string) T {
	var v T
	fill(reflect.ValueOf(&v).Elem(), s)
	return v
}

// printAll runs every human-readable printing path of peer-supplied text
// with every string field set to s: status, peers, slots, bookings,
// history, and join's header and every kind of session event.
func printAll(s string) string {
	var out bytes.Buffer
	printStatus(&out, filled[apiv1.Status](s), s)
	printPeers(&out, []apiv1.Peer{filled[apiv1.Peer](s)})
	printSlots(&out, []apiv1.Offer{filled[apiv1.Offer](s)})
	printBookings(&out, []apiv1.Booking{filled[apiv1.Booking](s)})
	var recs []apiv1.Record
	for i := range 3 {
		r := filled[apiv1.Record](s)
		r.NoShow, r.LeftEarly, r.PartnerLeftEarly = i == 0, i == 1, i == 2
		recs = append(recs, r)
	}
	printHistory(&out, recs)

	v := &joinView{out: &out}
	for _, cs := range []string{"", apiv1.ConnectCouldNotConnect} {
		snap := filled[apiv1.Session](s)
		snap.Connect.State = cs
		for i := range snap.Chat {
			snap.Chat[i].From = apiv1.FromPartner
		}
		v.header(context.Background(), snap)
	}
	for _, typ := range []string{apiv1.SessionPhase, apiv1.SessionPartnerJoined, apiv1.SessionPartnerDisconnected,
		apiv1.SessionPartnerReconnected, apiv1.SessionPathChanged, apiv1.SessionCapacity, apiv1.SessionCouldNotConnect, apiv1.SessionRematchOffered, apiv1.SessionNoShow,
		apiv1.SessionGoal, apiv1.SessionChat, apiv1.SessionPresence, apiv1.SessionMedia, apiv1.SessionCheckIn,
		apiv1.SessionPartnerLeft, apiv1.SessionEnded} {
		for _, from := range []string{apiv1.FromSelf, apiv1.FromPartner} {
			for _, ph := range []apiv1.Phase{apiv1.PhaseLobby, apiv1.PhaseFocus, apiv1.PhaseWarning, apiv1.PhaseCheckin} {
				e := filled[apiv1.SessionEvent](s)
				e.Type, e.From, e.Phase = typ, from, ph
				v.event(e)
			}
		}
	}
	v.sayErr(errorString("node said: " + s))
	return out.String()
}

type errorString string

func (e errorString) Error() string { return string(e) }

// FuzzPrintPeerText: whatever a partner or peer puts in a name, goal, chat
// line, note, reason or address, the CLI prints it without a character a
// terminal acts on (escape sequences, bell, backspace, carriage return,
// C1 controls) or that reorders the line (bidi controls), and it cannot
// add lines or cells of its own: the output has the same line breaks and
// bells as with a plain "x" in every field.
func FuzzPrintPeerText(f *testing.F) {
	for _, s := range []string{"Ada", "", "\x1b[2J\x1b[H", "\x1b]0;pwned\a", "evil\u202egnp.exe", "a\nb\r\tc",
		"\u009b31m", "bad\xff", "\u2066x\u2069", "\x7f\b", "Zoë 🚀"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := printAll(s)
		ref := "x"
		if s == "" {
			ref = ""
		}
		want := printAll(ref)
		if !utf8.ValidString(out) {
			t.Fatalf("output is not UTF-8 for %q", s)
		}
		for _, r := range out {
			if usertext.Forbidden(r) && r != '\n' && r != '\a' {
				t.Fatalf("U+%04X reached the terminal for %q", r, s)
			}
		}
		for _, c := range []string{"\n", "\a"} {
			if got, w := strings.Count(out, c), strings.Count(want, c); got != w {
				t.Fatalf("%q: %d × %q in the output, want %d (as with plain text)", s, got, c, w)
			}
		}
	})
}

// The fuzz test's own premise: without escaping, the printing paths do pass
// a partner's escape sequence through (so the test can fail).
func TestPrintAllReachesEveryField(t *testing.T) {
	const marker = "MARKER"
	out := printAll(marker)
	for _, want := range []string{"Name:      " + marker, "<partner> " + marker, "goal: " + marker,
		"partner left early: " + marker, "Partner is " + marker, "Your partner left: " + marker, "!! " + marker} {
		if !strings.Contains(out, want) {
			t.Errorf("printAll output lacks %q:\n%s", want, out)
		}
	}
}
