package node

import (
	"net/http"

	"github.com/tandem-cowork/tandem/node/apiv1"
)

// The circle endpoints (docs/user-guide.md, Circles):
//
//	GET    /api/v1/circles        the circles the node is in, with invites
//	                              and the members it has seen
//	POST   /api/v1/circles        create one: {"name"}
//	POST   /api/v1/circles/join   join one: {"invite", "name" (optional)}
//	DELETE /api/v1/circles/{ref}  leave one, by ID or name
func (n *Node) circleRoutes(api *http.ServeMux) {
	api.HandleFunc("GET /api/v1/circles", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, n.mm.Circles()) })
	api.HandleFunc("POST /api/v1/circles", func(w http.ResponseWriter, r *http.Request) {
		var req apiv1.CircleRequest
		if !readJSON(w, r, &req) {
			return
		}
		c, err := n.mm.CreateCircle(req.Name)
		if err != nil {
			writeErr(w, err)
			return
		}
		n.events.publish(apiv1.EventCircles, struct{}{})
		w.WriteHeader(http.StatusCreated)
		writeJSON(w, c)
	})
	api.HandleFunc("POST /api/v1/circles/join", func(w http.ResponseWriter, r *http.Request) {
		var req apiv1.CircleRequest
		if !readJSON(w, r, &req) {
			return
		}
		c, err := n.mm.JoinCircle(req.Invite, req.Name)
		if err != nil {
			writeErr(w, err)
			return
		}
		n.events.publish(apiv1.EventCircles, struct{}{})
		writeJSON(w, c)
	})
	api.HandleFunc("DELETE /api/v1/circles/{ref}", func(w http.ResponseWriter, r *http.Request) {
		if err := n.mm.LeaveCircle(r.PathValue("ref")); err != nil {
			writeErr(w, err)
			return
		}
		n.events.publish(apiv1.EventCircles, struct{}{})
		w.WriteHeader(http.StatusNoContent)
	})
}
