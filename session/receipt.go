package session

import (
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	"google.golang.org/protobuf/proto"

	"github.com/tandem-cowork/tandem/session/pb"
	"github.com/tandem-cowork/tandem/session/usertext"
)

// Attendance receipts travel in go-libp2p signed envelopes: the signature
// covers the domain, the payload type and the payload, so a receipt kept in
// someone's history still proves who signed what.
const attendanceDomain = "tandem-attendance"

var attendanceCodec = []byte("/tandem/attendance/1")

type attendanceRecord struct{ a *pb.Attendance }

func (r *attendanceRecord) Domain() string { return attendanceDomain }
func (r *attendanceRecord) Codec() []byte  { return attendanceCodec }
func (r *attendanceRecord) MarshalRecord() ([]byte, error) {
	return proto.Marshal(r.a)
}
func (r *attendanceRecord) UnmarshalRecord(b []byte) error {
	r.a = &pb.Attendance{}
	return proto.Unmarshal(b, r.a)
}

func init() { record.RegisterType(&attendanceRecord{}) }

// Attendance is what one side of a session signed it saw.
type Attendance struct {
	Signer           peer.ID       `json:"signer"`
	Partner          peer.ID       `json:"partner"`
	BookingID        string        `json:"booking_id"`
	PartnerBookingID string        `json:"partner_booking_id,omitempty"`
	Start            time.Time     `json:"start"`
	Duration         time.Duration `json:"duration"`
	// JoinedAt is zero when the signer never met the partner.
	JoinedAt  time.Time `json:"joined_at,omitzero"`
	LeftAt    time.Time `json:"left_at"`
	CheckIn   *CheckIn  `json:"check_in,omitempty"`
	LeftEarly bool      `json:"left_early,omitempty"`
}

func unixMilli(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromUnixMilli(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// signReceipt seals a into an envelope signed with key.
func signReceipt(key crypto.PrivKey, a Attendance) ([]byte, error) {
	p := &pb.Attendance{
		Version: wireVersion, BookingId: a.BookingID, PartnerBookingId: a.PartnerBookingID,
		Signer: []byte(a.Signer), Partner: []byte(a.Partner),
		StartUnix: a.Start.Unix(), DurationMin: uint32(a.Duration / time.Minute),
		JoinedAtUnixMs: unixMilli(a.JoinedAt), LeftAtUnixMs: unixMilli(a.LeftAt),
		LeftEarly: a.LeftEarly,
	}
	if a.CheckIn != nil {
		p.CheckIn, p.Note = outcomeToPB(a.CheckIn.Outcome), a.CheckIn.Note
	}
	env, err := record.Seal(&attendanceRecord{a: p}, key)
	if err != nil {
		return nil, fmt.Errorf("signing receipt: %w", err)
	}
	data, err := env.Marshal()
	if err != nil {
		return nil, fmt.Errorf("encoding receipt: %w", err)
	}
	return data, nil
}

// VerifyReceipt opens a signed attendance receipt and checks that signer
// signed it and that it names signer. Errors wrap ErrBadReceipt.
func VerifyReceipt(envelope []byte, signer peer.ID) (Attendance, error) {
	if len(envelope) == 0 || len(envelope) > maxReceipt {
		return Attendance{}, fmt.Errorf("%w: %d bytes", ErrBadReceipt, len(envelope))
	}
	rec := &attendanceRecord{}
	env, err := record.ConsumeTypedEnvelope(envelope, rec)
	if err != nil {
		return Attendance{}, fmt.Errorf("%w: opening envelope: %v", ErrBadReceipt, err)
	}
	p := rec.a
	if p.GetVersion() != wireVersion {
		return Attendance{}, fmt.Errorf("%w: version %d", ErrBadReceipt, p.GetVersion())
	}
	from, err := peer.IDFromBytes(p.GetSigner())
	if err != nil {
		return Attendance{}, fmt.Errorf("%w: signer: %v", ErrBadReceipt, err)
	}
	if from != signer || !signer.MatchesPublicKey(env.PublicKey) {
		return Attendance{}, fmt.Errorf("%w: not signed by %s", ErrBadReceipt, signer)
	}
	partner, err := peer.IDFromBytes(p.GetPartner())
	if err != nil {
		return Attendance{}, fmt.Errorf("%w: partner: %v", ErrBadReceipt, err)
	}
	if len(p.GetBookingId()) > maxIDLen || len(p.GetPartnerBookingId()) > maxIDLen {
		return Attendance{}, fmt.Errorf("%w: booking id too long", ErrBadReceipt)
	}
	a := Attendance{
		Signer: from, Partner: partner, BookingID: p.GetBookingId(), PartnerBookingID: p.GetPartnerBookingId(),
		Start: time.Unix(p.GetStartUnix(), 0).UTC(), Duration: time.Duration(p.GetDurationMin()) * time.Minute,
		JoinedAt: fromUnixMilli(p.GetJoinedAtUnixMs()), LeftAt: fromUnixMilli(p.GetLeftAtUnixMs()),
		LeftEarly: p.GetLeftEarly(),
	}
	if p.GetCheckIn() != pb.Outcome_OUTCOME_UNSPECIFIED {
		o, err := outcomeFromPB(p.GetCheckIn())
		if err != nil {
			return Attendance{}, fmt.Errorf("%w: %v", ErrBadReceipt, err)
		}
		if err := checkText(usertext.Note, p.GetNote()); err != nil {
			return Attendance{}, fmt.Errorf("%w: %v", ErrBadReceipt, err)
		}
		a.CheckIn = &CheckIn{Outcome: o, Note: p.GetNote()}
	}
	return a, nil
}
