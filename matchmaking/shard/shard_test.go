package shard

import (
	"slices"
	"testing"
	"time"
)

func TestTopicNames(t *testing.T) {
	start := time.Date(2026, 12, 3, 23, 45, 0, 0, time.UTC)
	for _, c := range []struct {
		k    Key
		want string
	}{
		{Scheduled(start, 25), "/tandem/offers/2/2026-12-03/25"},
		// The day is the UTC date, whatever zone the time is in.
		{Scheduled(start.In(time.FixedZone("UTC+2", 2*3600)), 50), "/tandem/offers/2/2026-12-03/50"},
		{ForOffer(true, start.Unix(), 25), "/tandem/offers/2/now"},
		{ForOffer(false, start.Unix(), 75), "/tandem/offers/2/2026-12-03/75"},
		{V1Key, "/tandem/offers/1"},
	} {
		if got := c.k.Topic(); got != c.want {
			t.Errorf("%+v: topic %q, want %q", c.k, got, c.want)
		}
		back, err := Parse(c.want)
		if err != nil || back != c.k {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", c.want, back, err, c.k)
		}
	}
	for _, bad := range []string{"", "/tandem/offers/2/", "/tandem/offers/2/2026-12-03", "/tandem/offers/2/2026-12-03/30",
		"/tandem/offers/2/2026-13-03/25", "/tandem/offers/2/2026-12-03/025", "/tandem/offers/3/now", "/tandem/offers/2/2026-12-03/25/x"} {
		if k, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) = %+v, want an error", bad, k)
		}
		if IsOfferTopic(bad) {
			t.Errorf("IsOfferTopic(%q)", bad)
		}
	}
}

// Each version 2 shard has a sealed topic (private offers, version 3) that
// names the same shard; version 1's topic has none.
func TestSealedTopicNames(t *testing.T) {
	d := Scheduled(time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC), 25)
	for k, want := range map[Key]string{d: "/tandem/sealed/1/2026-12-03/25", NowKey: "/tandem/sealed/1/now"} {
		if got := k.SealedTopic(); got != want {
			t.Errorf("%+v: sealed topic %q, want %q", k, got, want)
		}
		back, err := ParseSealed(want)
		if err != nil || back != k {
			t.Errorf("ParseSealed(%q) = %+v, %v", want, back, err)
		}
		if !IsOfferTopic(want) {
			t.Errorf("IsOfferTopic(%q) = false: peer scoring would leave it out", want)
		}
	}
	if V1Key.SealedTopic() != "" {
		t.Error("version 1's topic has a sealed topic")
	}
	for _, bad := range []string{"/tandem/sealed/1/", "/tandem/sealed/1/2026-12-03/30", "/tandem/sealed/2/now", "/tandem/offers/2/now", "/tandem/sealed/1/../1"} {
		if k, err := ParseSealed(bad); err == nil {
			t.Errorf("ParseSealed(%q) = %+v, want an error", bad, k)
		}
	}
}

func TestContains(t *testing.T) {
	nine := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	d := Scheduled(nine, 25)
	c := Class(nine, 25, false)
	owner := []byte("some owner")
	if !d.Contains(d, owner) || d.Contains(NowKey, owner) || !V1Key.Contains(d, owner) || !V1Key.Contains(NowKey, owner) || !NowKey.Contains(NowKey, owner) {
		t.Fatal("a day shard holds its own offers, version 1's topic holds all")
	}
	if !d.Contains(c, owner) || c.Contains(d, owner) || !c.Contains(c, owner) {
		t.Fatal("a day holds its classes, a class only its own offers")
	}
	if c.Contains(Class(nine, 25, true), owner) || c.Contains(Class(nine.Add(15*time.Minute), 25, false), owner) || c.Contains(Class(nine, 50, false), owner) {
		t.Fatal("a class holds offers of another class")
	}
	lane := c.Child(owner).Child(owner)
	if lane.Level() != 3 || lane.Parent().Parent() != c || c.Level() != 1 || d.Level() != 0 {
		t.Fatalf("levels: %+v", lane)
	}
	if !lane.Contains(c, owner) || !c.Contains(c, owner) {
		t.Fatal("a lane holds its owners' offers")
	}
	// Owners spread over both lanes of a level, and a lane holds only
	// its own.
	in := map[string]int{}
	for i := range 200 {
		o := []byte{byte(i), byte(i >> 8), 7}
		l := c.Child(o)
		in[l.Lane]++
		if !l.Contains(c, o) || c.Child([]byte{1, 2, 3}).Contains(c, o) != (c.Child([]byte{1, 2, 3}) == l) {
			t.Fatalf("owner %d: lane %+v", i, l)
		}
	}
	if in["0"] < 60 || in["1"] < 60 {
		t.Fatalf("lanes are uneven: %v", in)
	}
}

func TestClassTopicNames(t *testing.T) {
	nine := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	c := Class(nine, 50, false)
	for k, want := range map[Key]string{
		c: "/tandem/offers/2/2026-12-03/50/0900",
		Class(nine.Add(105*time.Minute), 25, true):                      "/tandem/offers/2/2026-12-03/25/1045q",
		{Day: "2026-12-03", DurationMin: 50, Slot: "0900", Lane: "011"}: "/tandem/offers/2/2026-12-03/50/0900/l011",
	} {
		if got := k.Topic(); got != want {
			t.Errorf("%+v: topic %q, want %q", k, got, want)
		}
		back, err := Parse(want)
		if err != nil || back != k {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", want, back, err, k)
		}
		if !IsOfferTopic(want) || k.SealedTopic() != "" || k.DayKey() != Scheduled(nine, k.DurationMin) {
			t.Errorf("%q: offer topic %v, sealed %q, day %+v", want, IsOfferTopic(want), k.SealedTopic(), k.DayKey())
		}
	}
	for _, bad := range []string{"/tandem/offers/2/2026-12-03/50/0910", "/tandem/offers/2/2026-12-03/50/900", "/tandem/offers/2/2026-12-03/50/0900qq",
		"/tandem/offers/2/2026-12-03/50/2400", "/tandem/offers/2/2026-12-03/50/0900/", "/tandem/offers/2/2026-12-03/50/0900/l",
		"/tandem/offers/2/2026-12-03/50/0900/l012", "/tandem/offers/2/2026-12-03/50/0900/0", "/tandem/offers/2/2026-12-03/50/0900/l0/x",
		"/tandem/offers/2/2026-12-03/50/0900/l0101010101010", "/tandem/sealed/1/2026-12-03/50/0900"} {
		if k, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) = %+v, want an error", bad, k)
		}
		if IsOfferTopic(bad) {
			t.Errorf("IsOfferTopic(%q)", bad)
		}
	}
}

func TestDaysAndAll(t *testing.T) {
	from := time.Date(2026, 12, 3, 22, 0, 0, 0, time.UTC)
	ks := Days(from, from.Add(3*time.Hour), 15) // touches the 3rd and the 4th
	if len(ks) != 6 || ks[0].Day != "2026-12-03" || ks[5].Day != "2026-12-04" {
		t.Fatalf("Days = %+v", ks)
	}
	if got := len(Days(from, from.Add(100*24*time.Hour), 15)); got != 45 {
		t.Fatalf("Days is bounded to 15 days: got %d shards", got)
	}
	all := All(from, 14*24*time.Hour)
	if all[0] != NowKey || len(all) != 1+3*16 {
		t.Fatalf("All: %d shards starting %+v", len(all), all[0])
	}
}

func TestInterestRefcountsViewsAndLinger(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	a := Scheduled(t0, 25)
	b := Scheduled(t0.Add(24*time.Hour), 50)
	in := NewInterest(30 * time.Second)
	in.Hold(a, "booking1")
	in.Hold(a, "booking2")
	in.View([]Key{b, NowKey}, t0.Add(time.Minute))
	if got := in.Wanted(t0); !slices.Equal(got, []Key{a, b, NowKey}) {
		t.Fatalf("wanted %v", got)
	}
	if in.Refs(a) != 2 {
		t.Fatalf("refs %d", in.Refs(a))
	}
	in.Release(a, "booking1", t0)
	in.Release(a, "booking1", t0) // twice changes nothing
	if in.Refs(a) != 1 || !slices.Contains(in.Wanted(t0), a) {
		t.Fatal("one booking still holds a")
	}
	in.Release(a, "booking2", t0)
	if !slices.Contains(in.Wanted(t0.Add(29*time.Second)), a) {
		t.Fatal("a lingers for 30 s")
	}
	if slices.Contains(in.Wanted(t0.Add(30*time.Second)), a) {
		t.Fatal("a is left after lingering")
	}
	// The view ends at +1 min, then its shards linger too.
	if got := in.Wanted(t0.Add(time.Minute + 10*time.Second)); !slices.Equal(got, []Key{b, NowKey}) {
		t.Fatalf("after the view: %v", got)
	}
	if got := in.Wanted(t0.Add(2 * time.Minute)); len(got) != 0 {
		t.Fatalf("after the linger: %v", got)
	}
	// A hold during the linger cancels it.
	in.Hold(a, "booking3")
	in.Release(a, "booking3", t0.Add(3*time.Minute))
	in.Hold(a, "booking4")
	if !slices.Contains(in.Wanted(t0.Add(10*time.Minute)), a) {
		t.Fatal("a held again")
	}
}

// FuzzParse: topic names come from peers (board sync requests); Parse
// never panics and whatever it accepts names itself back exactly.
func FuzzParse(f *testing.F) {
	for _, s := range []string{V1Topic, NowTopic, "/tandem/offers/2/2026-12-03/25", "/tandem/offers/2/now/50/anyq/l01", "/tandem/offers/2/x/25", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, err := Parse(s)
		if err != nil {
			return
		}
		if k.Topic() != s {
			t.Fatalf("Parse(%q) = %+v, which names %q", s, k, k.Topic())
		}
	})
}

// TestReleaseSooner: a release with a shorter linger is left after that
// linger, not the Interest's; one longer than the Interest's is cut to it.
func TestReleaseSooner(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	k := ClassOf(false, t0.Add(24*time.Hour).Unix(), 50, false)
	in := NewInterest(30 * time.Second)
	in.Hold(k, "b1")
	in.ReleaseSooner(k, "b1", t0, 2*time.Second)
	if !slices.Contains(in.Wanted(t0.Add(time.Second)), k) {
		t.Fatal("left before its 2 s linger")
	}
	if slices.Contains(in.Wanted(t0.Add(2*time.Second)), k) {
		t.Fatal("still wanted after its 2 s linger")
	}
	in.Hold(k, "b2")
	in.ReleaseSooner(k, "b2", t0, time.Hour)
	if got := in.Wanted(t0.Add(30 * time.Second)); slices.Contains(got, k) {
		t.Fatal("a linger longer than the Interest's was not cut to it")
	}
}

// TestNowClassTopics: focus-now offers have a class per duration and
// quiet flag, with lanes, below the now shard, which holds them all.
func TestNowClassTopics(t *testing.T) {
	c := NowClass(25, false)
	owner := []byte("some owner")
	for k, want := range map[Key]string{
		c:                       "/tandem/offers/2/now/25/any",
		NowClass(75, true):      "/tandem/offers/2/now/75/anyq",
		c.Child(owner).Parent(): "/tandem/offers/2/now/25/any",
		{Now: true, DurationMin: 50, Slot: "anyq", Lane: "10"}: "/tandem/offers/2/now/50/anyq/l10",
	} {
		if got := k.Topic(); got != want {
			t.Errorf("%+v: topic %q, want %q", k, got, want)
		}
		back, err := Parse(want)
		if err != nil || back != k {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", want, back, err, k)
		}
		if !k.IsClass() || k.DayKey() != NowKey || k.SealedTopic() != "" || !NowKey.Contains(k, owner) {
			t.Errorf("%q: class %v, day %+v, sealed %q, in the now shard %v", want, k.IsClass(), k.DayKey(), k.SealedTopic(), NowKey.Contains(k, owner))
		}
	}
	if ClassOf(true, 0, 25, false) != c {
		t.Fatalf("ClassOf a 25 minute focus-now offer: %+v", ClassOf(true, 0, 25, false))
	}
	lane := c.Child(owner)
	other := []byte{0}
	for LaneBits(c, other, 1) == lane.Lane {
		other[0]++
	}
	if !lane.Contains(c, owner) || lane.Contains(c, other) || !c.Contains(c, other) {
		t.Fatal("a focus-now lane holds its owners' offers only")
	}
	nine := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	if c.Contains(NowClass(50, false), owner) || c.Contains(NowClass(25, true), owner) || c.Contains(NowKey, owner) ||
		c.Contains(Class(nine, 25, false), owner) || Scheduled(nine, 25).Contains(c, owner) || !V1Key.Contains(c, owner) {
		t.Fatal("a focus-now class holds offers of another class or shard")
	}
	for _, bad := range []string{"/tandem/offers/2/now/25", "/tandem/offers/2/now/30/any", "/tandem/offers/2/now/25/0900",
		"/tandem/offers/2/now/25/anyqq", "/tandem/offers/2/now/25/any/l", "/tandem/offers/2/now/25/any/l2", "/tandem/sealed/1/now/25/any"} {
		if k, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) = %+v, want an error", bad, k)
		}
		if IsOfferTopic(bad) {
			t.Errorf("IsOfferTopic(%q)", bad)
		}
	}
}
