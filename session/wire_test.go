package session

import (
	"bufio"
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"

	"github.com/tandem-cowork/tandem/session/pb"
	"github.com/tandem-cowork/tandem/session/usertext"
)

func sampleMessages() []*pb.Message {
	return []*pb.Message{
		{Body: &pb.Message_Hello{Hello: &pb.Hello{Name: "Ada", BookingId: "a-1", PartnerBookingId: "b-1", Goal: "write",
			Presence: pb.PresenceState_PRESENCE_HERE, Media: &pb.Media{Video: true},
			CheckIn: &pb.CheckIn{Outcome: pb.Outcome_OUTCOME_DONE, Note: "yes"}}}},
		{Body: &pb.Message_Goal{Goal: &pb.Goal{Text: "finish chapter 3"}}},
		{Body: &pb.Message_Chat{Chat: &pb.Chat{Text: "hi", SentAtUnixMs: 1}}},
		{Body: &pb.Message_Presence{Presence: &pb.Presence{State: pb.PresenceState_PRESENCE_CAMERA_OFF}}},
		{Body: &pb.Message_Media{Media: &pb.Media{Video: true, Audio: true}}},
		{Body: &pb.Message_CheckIn{CheckIn: &pb.CheckIn{Outcome: pb.Outcome_OUTCOME_PARTLY, Note: "half"}}},
		{Body: &pb.Message_Leave{Leave: &pb.Leave{Reason: "phone"}}},
		{Body: &pb.Message_Receipt{Receipt: &pb.Receipt{Envelope: []byte{1, 2, 3}}}},
		{Body: &pb.Message_ReceiptAck{ReceiptAck: &pb.ReceiptAck{}}},
		{Body: &pb.Message_Clock{Clock: &pb.Clock{SentUnixMs: 1772445480000}}},
		{Body: &pb.Message_Clock{Clock: &pb.Clock{SentUnixMs: 1772445480300, EchoUnixMs: 1772445480000}}},
	}
}

func TestMessageRoundTrip(t *testing.T) {
	for _, m := range sampleMessages() {
		data, err := encodeMessage(m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeMessage(data)
		if err != nil {
			t.Fatalf("decoding %v: %v", m, err)
		}
		if !proto.Equal(got, m) {
			t.Fatalf("round trip: %v != %v", got, m)
		}
	}
}

func TestMessageRejects(t *testing.T) {
	long := strings.Repeat("x", MaxChatLen+1)
	for name, m := range map[string]*pb.Message{
		"version":    {Version: 2, Body: &pb.Message_Goal{Goal: &pb.Goal{Text: "x"}}},
		"long chat":  {Version: 1, Body: &pb.Message_Chat{Chat: &pb.Chat{Text: long}}},
		"empty chat": {Version: 1, Body: &pb.Message_Chat{Chat: &pb.Chat{}}},
		"presence":   {Version: 1, Body: &pb.Message_Presence{Presence: &pb.Presence{State: 9}}},
		"outcome":    {Version: 1, Body: &pb.Message_CheckIn{CheckIn: &pb.CheckIn{}}},
		"receipt":    {Version: 1, Body: &pb.Message_Receipt{Receipt: &pb.Receipt{}}},
		"hello name": {Version: 1, Body: &pb.Message_Hello{Hello: &pb.Hello{Name: strings.Repeat("n", MaxNameLen+1)}}},
		"clock sent": {Version: 1, Body: &pb.Message_Clock{Clock: &pb.Clock{}}},
		"clock echo": {Version: 1, Body: &pb.Message_Clock{Clock: &pb.Clock{SentUnixMs: 1, EchoUnixMs: -1}}},
		// Control and bidi formatting characters, which a terminal would
		// act on, are refused in every text field.
		"hello name escape": {Version: 1, Body: &pb.Message_Hello{Hello: &pb.Hello{Name: "\x1b[2JAda"}}},
		"hello goal bidi":   {Version: 1, Body: &pb.Message_Hello{Hello: &pb.Hello{Name: "Ada", Goal: "\u202egoal"}}},
		"hello note bell":   {Version: 1, Body: &pb.Message_Hello{Hello: &pb.Hello{CheckIn: &pb.CheckIn{Outcome: pb.Outcome_OUTCOME_DONE, Note: "\a"}}}},
		"goal newline":      {Version: 1, Body: &pb.Message_Goal{Goal: &pb.Goal{Text: "a\nb"}}},
		"chat clear screen": {Version: 1, Body: &pb.Message_Chat{Chat: &pb.Chat{Text: "\x1b[2J\x1b[H"}}},
		"chat osc title":    {Version: 1, Body: &pb.Message_Chat{Chat: &pb.Chat{Text: "\x1b]0;pwned\a"}}},
		"chat c1 csi":       {Version: 1, Body: &pb.Message_Chat{Chat: &pb.Chat{Text: "\u009b31m"}}},
		"chat isolate":      {Version: 1, Body: &pb.Message_Chat{Chat: &pb.Chat{Text: "\u2067x"}}},
		"check-in note":     {Version: 1, Body: &pb.Message_CheckIn{CheckIn: &pb.CheckIn{Outcome: pb.Outcome_OUTCOME_DONE, Note: "ok\r"}}},
		"leave reason":      {Version: 1, Body: &pb.Message_Leave{Leave: &pb.Leave{Reason: "bye\x1b[31m"}}},
	} {
		data, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := decodeMessage(data); !errors.Is(err, ErrInvalidMessage) {
			t.Errorf("%s: %v, want ErrInvalidMessage", name, err)
		}
	}
	// version 1, goal { text: "\xff" }: proto.Marshal refuses to write it.
	if _, err := decodeMessage([]byte{0x08, 0x01, 0x1a, 0x03, 0x0a, 0x01, 0xff}); !errors.Is(err, ErrInvalidMessage) {
		t.Errorf("bad UTF-8: %v", err)
	}
	if _, err := decodeMessage(make([]byte, MaxDataMessage+1)); !errors.Is(err, ErrInvalidMessage) {
		t.Errorf("oversized: %v", err)
	}
}

// FuzzDecodeMessage: the data channel decoder never panics, and what it
// accepts re-encodes within the size limit.
func FuzzDecodeMessage(f *testing.F) {
	for _, m := range sampleMessages() {
		data, err := encodeMessage(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte{})
	f.Add([]byte{0x08, 0x01, 0x12, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := decodeMessage(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidMessage) {
				t.Fatalf("error %v does not wrap ErrInvalidMessage", err)
			}
			return
		}
		if _, err := encodeMessage(m); err != nil {
			t.Fatalf("re-encoding an accepted message: %v", err)
		}
		// What a partner can make us accept prints as is: nothing in it
		// that a terminal would act on.
		for _, s := range []string{m.GetHello().GetName(), m.GetHello().GetGoal(), m.GetHello().GetCheckIn().GetNote(),
			m.GetGoal().GetText(), m.GetChat().GetText(), m.GetCheckIn().GetNote(), m.GetLeave().GetReason()} {
			if usertext.Escape(s) != s {
				t.Fatalf("accepted text %q that needs escaping", s)
			}
		}
	})
}

func sampleSignals() []*pb.Signal {
	mid, idx := "0", uint32(0)
	return []*pb.Signal{
		{Body: &pb.Signal_Join{Join: &pb.Join{FromBooking: "a-1", ToBooking: "b-1"}}},
		{Body: &pb.Signal_Description{Description: &pb.Description{Type: pb.SDPType_SDP_TYPE_OFFER, Sdp: "v=0\r\n"}}},
		{Body: &pb.Signal_Candidate{Candidate: &pb.Candidate{
			Candidate: "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host", SdpMid: &mid, SdpMlineIndex: &idx}}},
	}
}

// FuzzReadSignal: the signalling frame reader never panics and never
// accepts a frame over MaxSignalMessage.
func FuzzReadSignal(f *testing.F) {
	for _, m := range sampleSignals() {
		var buf bytes.Buffer
		if err := writeSignal(&buf, m); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.Bytes())
	}
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{0x02, 0x08, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReader(bytes.NewReader(data))
		for range 4 {
			m, err := readSignal(r)
			if err != nil {
				return
			}
			if proto.Size(m) > MaxSignalMessage || m.GetBody() == nil {
				t.Fatalf("accepted %v", m)
			}
		}
	})
}

func TestReadSignalRejects(t *testing.T) {
	for name, m := range map[string]*pb.Signal{
		"no body":   {Version: 1},
		"version":   {Version: 7, Body: &pb.Signal_Join{Join: &pb.Join{}}},
		"sdp type":  {Version: 1, Body: &pb.Signal_Description{Description: &pb.Description{Sdp: "v=0"}}},
		"empty sdp": {Version: 1, Body: &pb.Signal_Description{Description: &pb.Description{Type: pb.SDPType_SDP_TYPE_ANSWER}}},
		"long cand": {Version: 1, Body: &pb.Signal_Candidate{Candidate: &pb.Candidate{Candidate: strings.Repeat("c", maxCandidate+1)}}},
	} {
		var buf bytes.Buffer
		if _, err := protodelim.MarshalTo(&buf, m); err != nil {
			t.Fatal(err)
		}
		if _, err := readSignal(bufio.NewReader(&buf)); !errors.Is(err, ErrInvalidMessage) {
			t.Errorf("%s: %v, want ErrInvalidMessage", name, err)
		}
	}
	huge := &pb.Signal{Version: 1, Body: &pb.Signal_Description{Description: &pb.Description{
		Type: pb.SDPType_SDP_TYPE_OFFER, Sdp: strings.Repeat("a", MaxSignalMessage)}}}
	var buf bytes.Buffer
	protodelim.MarshalTo(&buf, huge)
	if _, err := readSignal(bufio.NewReader(&buf)); err == nil {
		t.Error("oversized signal accepted")
	}
}

func testKey(t testing.TB) (crypto.PrivKey, peer.ID) {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return k, id
}

func sampleAttendance(signer, partner peer.ID) Attendance {
	return Attendance{Signer: signer, Partner: partner, BookingID: "a-1", PartnerBookingID: "b-1",
		Start: time.Unix(1_800_000_000, 0).UTC(), Duration: 50 * time.Minute,
		JoinedAt: time.UnixMilli(1_800_000_000_123).UTC(), LeftAt: time.UnixMilli(1_800_003_000_000).UTC(),
		CheckIn: &CheckIn{Outcome: OutcomePartly, Note: "most"}}
}

func TestReceipt(t *testing.T) {
	key, id := testKey(t)
	other, otherID := testKey(t)
	a := sampleAttendance(id, otherID)
	env, err := signReceipt(key, a)
	if err != nil {
		t.Fatal(err)
	}
	got, err := VerifyReceipt(env, id)
	if err != nil {
		t.Fatal(err)
	}
	if got.BookingID != a.BookingID || !got.JoinedAt.Equal(a.JoinedAt) || !got.LeftAt.Equal(a.LeftAt) ||
		*got.CheckIn != *a.CheckIn || got.Partner != otherID || got.Duration != a.Duration {
		t.Fatalf("receipt round trip: %+v != %+v", got, a)
	}
	if _, err := VerifyReceipt(env, otherID); !errors.Is(err, ErrBadReceipt) {
		t.Fatalf("verified against the wrong peer: %v", err)
	}
	// Signed by one key while claiming to be another.
	forged, err := signReceipt(other, a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyReceipt(forged, id); !errors.Is(err, ErrBadReceipt) {
		t.Fatalf("forged receipt: %v", err)
	}
	tampered := bytes.Clone(env)
	tampered[len(tampered)/2] ^= 1
	if _, err := VerifyReceipt(tampered, id); !errors.Is(err, ErrBadReceipt) {
		t.Fatalf("tampered receipt: %v", err)
	}
}

// FuzzVerifyReceipt: receipt verification never panics, and only accepts
// receipts that name the expected signer.
func FuzzVerifyReceipt(f *testing.F) {
	key, id := testKey(f)
	_, partner := testKey(f)
	env, err := signReceipt(key, sampleAttendance(id, partner))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(env)
	f.Add(env[:len(env)/2])
	f.Add([]byte{0x0a, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := VerifyReceipt(data, id)
		if err != nil {
			if !errors.Is(err, ErrBadReceipt) {
				t.Fatalf("error %v does not wrap ErrBadReceipt", err)
			}
			return
		}
		if a.Signer != id {
			t.Fatalf("accepted a receipt signed by %s", a.Signer)
		}
	})
}
