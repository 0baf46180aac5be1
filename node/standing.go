package node

import (
	"github.com/tandem-cowork/tandem/session"
)

// Sessions feed the matcher's view of peers (matchmaking/standing.go): a
// partner that signed its attendance receipt has a track record with us,
// and one that never came is backed off. Receipts used to be stored and
// never read.

// seedTrackRecords gives the matcher a track record for every partner
// whose signed receipt is in the history.
func (n *Node) seedTrackRecords() {
	recs, err := n.sm.History()
	if err != nil {
		n.log.Warn("reading the session history for partners' track records", "err", err)
		return
	}
	for _, r := range recs {
		// No-shows are stored by the matcher when they happen; only
		// track records are kept in memory and rebuilt here.
		if !r.NoShow {
			n.noteSession(&r)
		}
	}
}

// noteSession tells the matcher what a finished session says about its
// partner.
func (n *Node) noteSession(r *session.Record) {
	switch {
	case r == nil || r.Partner == "":
	case r.NoShow:
		n.mm.RecordNoShow(r.Partner)
	case len(r.PartnerReceipt) > 0:
		if _, err := session.VerifyReceipt(r.PartnerReceipt, r.Partner); err == nil {
			n.mm.AddTrackRecord(r.Partner)
		}
	}
}
