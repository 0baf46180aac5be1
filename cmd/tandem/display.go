package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/tandem-cowork/tandem/node/apiv1"
	"github.com/tandem-cowork/tandem/session/usertext"
)

// esc makes text from the node safe to print on a terminal: names, goals,
// chat, notes and reasons that a partner typed, addresses a peer
// announced, and anything older nodes stored before the usertext rules.
// Control and bidi formatting characters come out as visible escapes
// (\x1b, \u202e), so a partner cannot clear the screen, recolour it, set
// its title or reorder a line. Every human-readable printing path of the
// CLI passes text through it; --json output is escaped by encoding/json.
func esc(s string) string { return usertext.Escape(s) }

func printStatus(w io.Writer, st apiv1.Status, loginURL string) {
	fmt.Fprintf(w, "Peer ID:   %s\n", esc(st.PeerID))
	if st.Name != "" {
		fmt.Fprintf(w, "Name:      %s\n", esc(st.Name))
	}
	for _, a := range st.Addrs {
		fmt.Fprintf(w, "Address:   %s\n", esc(a))
	}
	fmt.Fprintf(w, "Peers:     %d connected\n", st.ConnectedPeers)
	if st.Identity.Text != "" {
		fmt.Fprintf(w, "Identity:  %s\n", esc(st.Identity.Text))
	}
	if st.TURNHelper != "" {
		fmt.Fprintf(w, "Relay:     %s\n", esc(st.TURNHelper))
	}
	fmt.Fprintf(w, "API:       %s\n", esc(st.APIURL))
	fmt.Fprintf(w, "Data dir:  %s\n", esc(st.DataDir))
	fmt.Fprintf(w, "Web UI:    %s\n", esc(loginURL))
}

func printPeers(w io.Writer, ps []apiv1.Peer) {
	if len(ps) == 0 {
		fmt.Fprintln(w, "No peers connected yet.")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tLATENCY\tADDRESS")
	for _, p := range ps {
		fmt.Fprintf(tw, "%s\t%.1f ms\t%s\n", esc(p.ID), p.LatencyMS, esc(strings.Join(p.Addrs, " ")))
	}
	tw.Flush()
}

func printBookings(w io.Writer, bs []apiv1.Booking) {
	if len(bs) == 0 {
		fmt.Fprintln(w, "No bookings yet. Try `tandem now` or `tandem book --at ...`.")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTART\tMIN\tKIND\tSTATE\tPARTNER\tNOTE")
	for _, b := range bs {
		partner := b.PartnerName
		if partner == "" && b.Partner != "" {
			partner = shortID(b.Partner)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", esc(b.ID), describeStart(b), b.DurationMin,
			esc(string(b.Kind)), esc(string(b.State)), esc(partner), esc(b.Note))
	}
	tw.Flush()
}

func printSlots(w io.Writer, offers []apiv1.Offer) {
	if len(offers) == 0 {
		fmt.Fprintln(w, "No open offers seen yet.")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "START\tMIN\tKIND\tACTIVITY\tQUIET\tNAME\tPEER")
	for _, o := range offers {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%v\t%s\t%s\n", o.Start.Local().Format(whenLayout), o.DurationMin,
			esc(string(o.Kind)), esc(string(o.Activity)), o.Quiet, esc(o.Name), esc(o.Owner))
	}
	tw.Flush()
}

func printHistory(w io.Writer, recs []apiv1.Record) {
	if len(recs) == 0 {
		fmt.Fprintln(w, "No sessions yet.")
		return
	}
	for _, r := range recs {
		partner := r.PartnerName
		if partner == "" {
			partner = shortID(r.Partner.String())
		}
		outcome := "-"
		if r.CheckIn != nil {
			outcome = string(r.CheckIn.Outcome)
		}
		flags := ""
		switch {
		case r.NoShow:
			flags = " (no-show)"
		case r.LeftEarly:
			flags = " (you left early: " + r.LeaveReason + ")"
		case r.PartnerLeftEarly:
			flags = " (partner left early: " + r.PartnerLeaveReason + ")"
		}
		fmt.Fprintf(w, "%s  %2d min  with %-16s  %-6s  goal: %s%s\n",
			r.Start.Local().Format(whenLayout), r.DurationMin, esc(partner), esc(outcome), esc(r.Goal), esc(flags))
	}
}
