package session

import (
	"bufio"
	"fmt"
	"io"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"

	"github.com/tandem-cowork/tandem/session/pb"
	"github.com/tandem-cowork/tandem/session/usertext"
)

// Wire constants. See pb/session.proto for the messages.
const (
	// SignalProtocol is the libp2p protocol of the signalling stream.
	SignalProtocol = "/tandem/signal/1.0.0"
	// MaxSignalMessage bounds one signalling frame (an SDP with its
	// candidates is a few KiB).
	MaxSignalMessage = 64 << 10
	// MaxDataMessage bounds one data channel message.
	MaxDataMessage = 16 << 10
	// DataChannelLabel names the negotiated session data channel (id 0).
	DataChannelLabel = "tandem-session"

	// Text limits: the usertext rules, which every node applies alike.
	MaxNameLen   = usertext.MaxName
	MaxGoalLen   = usertext.MaxGoal
	MaxChatLen   = usertext.MaxChat
	MaxNoteLen   = usertext.MaxNote
	MaxReasonLen = usertext.MaxReason

	maxIDLen      = 64
	maxCandidate  = 1024
	maxReceipt    = 4 << 10
	wireVersion   = 1
	dataChannelID = 0
)

func writeSignal(w io.Writer, m *pb.Signal) error {
	m.Version = wireVersion
	_, err := protodelim.MarshalTo(w, m)
	return err
}

// readSignal reads and validates one signalling frame.
func readSignal(r *bufio.Reader) (*pb.Signal, error) {
	m := &pb.Signal{}
	if err := (protodelim.UnmarshalOptions{MaxSize: MaxSignalMessage}).UnmarshalFrom(r, m); err != nil {
		return nil, fmt.Errorf("reading signal: %w", err)
	}
	if err := checkSignal(m); err != nil {
		return nil, err
	}
	return m, nil
}

func checkSignal(m *pb.Signal) error {
	if m.GetVersion() != wireVersion {
		return fmt.Errorf("%w: signal version %d", ErrInvalidMessage, m.GetVersion())
	}
	switch b := m.GetBody().(type) {
	case *pb.Signal_Join:
		if len(b.Join.GetFromBooking()) > maxIDLen || len(b.Join.GetToBooking()) > maxIDLen {
			return fmt.Errorf("%w: join booking id too long", ErrInvalidMessage)
		}
	case *pb.Signal_Description:
		t := b.Description.GetType()
		if t != pb.SDPType_SDP_TYPE_OFFER && t != pb.SDPType_SDP_TYPE_ANSWER {
			return fmt.Errorf("%w: description type %v", ErrInvalidMessage, t)
		}
		if b.Description.GetSdp() == "" || !utf8.ValidString(b.Description.GetSdp()) {
			return fmt.Errorf("%w: empty or non-UTF-8 SDP", ErrInvalidMessage)
		}
	case *pb.Signal_Candidate:
		c := b.Candidate
		if len(c.GetCandidate()) > maxCandidate || len(c.GetSdpMid()) > maxIDLen || len(c.GetUsernameFragment()) > 256 ||
			c.GetSdpMlineIndex() > 0xffff {
			return fmt.Errorf("%w: candidate fields too long", ErrInvalidMessage)
		}
	default:
		return fmt.Errorf("%w: signal without a body", ErrInvalidMessage)
	}
	return nil
}

func encodeMessage(m *pb.Message) ([]byte, error) {
	m.Version = wireVersion
	data, err := proto.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encoding session message: %w", err)
	}
	if len(data) > MaxDataMessage {
		return nil, fmt.Errorf("%w: message of %d bytes", ErrInvalid, len(data))
	}
	return data, nil
}

// decodeMessage decodes and validates one data channel message. Messages
// with an unknown body (from a newer version) come back with a nil body.
func decodeMessage(data []byte) (*pb.Message, error) {
	if len(data) > MaxDataMessage {
		return nil, fmt.Errorf("%w: message of %d bytes", ErrInvalidMessage, len(data))
	}
	m := &pb.Message{}
	if err := proto.Unmarshal(data, m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidMessage, err)
	}
	if m.GetVersion() != wireVersion {
		return nil, fmt.Errorf("%w: version %d", ErrInvalidMessage, m.GetVersion())
	}
	if err := checkMessage(m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidMessage, err)
	}
	return m, nil
}

func checkMessage(m *pb.Message) error {
	switch b := m.GetBody().(type) {
	case *pb.Message_Hello:
		h := b.Hello
		if len(h.GetBookingId()) > maxIDLen || len(h.GetPartnerBookingId()) > maxIDLen {
			return fmt.Errorf("hello booking id too long")
		}
		if err := checkText(usertext.Name, h.GetName()); err != nil {
			return err
		}
		if err := checkText(usertext.Goal, h.GetGoal()); err != nil {
			return err
		}
		if _, err := presenceFromPB(h.GetPresence(), true); err != nil {
			return err
		}
		if h.GetCheckIn() != nil {
			return checkCheckIn(h.GetCheckIn())
		}
	case *pb.Message_Goal:
		return checkText(usertext.Goal, b.Goal.GetText())
	case *pb.Message_Chat:
		if b.Chat.GetText() == "" {
			return fmt.Errorf("empty chat")
		}
		return checkText(usertext.Chat, b.Chat.GetText())
	case *pb.Message_Presence:
		_, err := presenceFromPB(b.Presence.GetState(), false)
		return err
	case *pb.Message_CheckIn:
		return checkCheckIn(b.CheckIn)
	case *pb.Message_Leave:
		return checkText(usertext.Reason, b.Leave.GetReason())
	case *pb.Message_Receipt:
		if n := len(b.Receipt.GetEnvelope()); n == 0 || n > maxReceipt {
			return fmt.Errorf("receipt of %d bytes", n)
		}
	case *pb.Message_Clock:
		if b.Clock.GetSentUnixMs() <= 0 || b.Clock.GetEchoUnixMs() < 0 {
			return fmt.Errorf("clock times %d, %d", b.Clock.GetSentUnixMs(), b.Clock.GetEchoUnixMs())
		}
	}
	return nil
}

func checkCheckIn(c *pb.CheckIn) error {
	if _, err := outcomeFromPB(c.GetOutcome()); err != nil {
		return err
	}
	return checkText(usertext.Note, c.GetNote())
}

func presenceToPB(p Presence) pb.PresenceState {
	switch p {
	case PresenceAway:
		return pb.PresenceState_PRESENCE_AWAY
	case PresenceCameraOff:
		return pb.PresenceState_PRESENCE_CAMERA_OFF
	}
	return pb.PresenceState_PRESENCE_HERE
}

// presenceFromPB maps a wire presence; unspecified is "here" when allowed.
func presenceFromPB(p pb.PresenceState, allowUnspecified bool) (Presence, error) {
	switch p {
	case pb.PresenceState_PRESENCE_HERE:
		return PresenceHere, nil
	case pb.PresenceState_PRESENCE_AWAY:
		return PresenceAway, nil
	case pb.PresenceState_PRESENCE_CAMERA_OFF:
		return PresenceCameraOff, nil
	case pb.PresenceState_PRESENCE_UNSPECIFIED:
		if allowUnspecified {
			return PresenceHere, nil
		}
	}
	return "", fmt.Errorf("presence %d", p)
}

func outcomeToPB(o Outcome) pb.Outcome {
	switch o {
	case OutcomeDone:
		return pb.Outcome_OUTCOME_DONE
	case OutcomePartly:
		return pb.Outcome_OUTCOME_PARTLY
	case OutcomeNot:
		return pb.Outcome_OUTCOME_NOT
	}
	return pb.Outcome_OUTCOME_UNSPECIFIED
}

func outcomeFromPB(o pb.Outcome) (Outcome, error) {
	switch o {
	case pb.Outcome_OUTCOME_DONE:
		return OutcomeDone, nil
	case pb.Outcome_OUTCOME_PARTLY:
		return OutcomePartly, nil
	case pb.Outcome_OUTCOME_NOT:
		return OutcomeNot, nil
	}
	return "", fmt.Errorf("check-in outcome %d", o)
}

func checkInToPB(c *CheckIn) *pb.CheckIn {
	if c == nil {
		return nil
	}
	return &pb.CheckIn{Outcome: outcomeToPB(c.Outcome), Note: c.Note}
}

// checkInFromPB maps a validated check-in.
func checkInFromPB(c *pb.CheckIn) *CheckIn {
	if c == nil {
		return nil
	}
	o, err := outcomeFromPB(c.GetOutcome())
	if err != nil {
		return nil
	}
	return &CheckIn{Outcome: o, Note: c.GetNote()}
}

func validOutcome(o Outcome) bool {
	return o == OutcomeDone || o == OutcomePartly || o == OutcomeNot
}
