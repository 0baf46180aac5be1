package node

import (
	"encoding/json"
	"sync"

	"github.com/tandem-cowork/tandem/node/apiv1"
)

// events fans node events out to SSE subscribers. A subscriber that falls
// behind loses events rather than slowing the node down; the UI refetches
// state on every event, so a lost one only delays an update.
type events struct {
	mu   sync.Mutex
	subs map[chan apiv1.Event]struct{}
}

func newEvents() *events { return &events{subs: map[chan apiv1.Event]struct{}{}} }

func (e *events) publish(typ string, data any) {
	raw, err := json.Marshal(data)
	if err != nil {
		return
	}
	ev := apiv1.Event{Type: typ, Data: raw}
	e.mu.Lock()
	defer e.mu.Unlock()
	for ch := range e.subs {
		select {
		case ch <- ev:
		default:
		}
	}
}

func (e *events) subscribe() (<-chan apiv1.Event, func()) { return e.subscribeN(64) }

// subscribeN subscribes with a buffer of n events.
func (e *events) subscribeN(n int) (<-chan apiv1.Event, func()) {
	ch := make(chan apiv1.Event, n)
	e.mu.Lock()
	e.subs[ch] = struct{}{}
	e.mu.Unlock()
	return ch, func() {
		e.mu.Lock()
		delete(e.subs, ch)
		e.mu.Unlock()
	}
}
