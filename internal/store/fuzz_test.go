package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/store"
)

var deliveryRank = map[store.Status]int{store.Submitted: 1, store.Enqueued: 2, store.Sent: 3, store.Delivered: 4, store.Read: 5}

// FuzzDeliveryStateMachine applies arbitrary sequences of delivery events,
// duplicates included, and checks that delivery never moves backwards:
// the rank never drops, failed only follows a status below delivered, and
// only delivered or read move a failed message on.
func FuzzDeliveryStateMachine(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4})
	f.Add([]byte{4, 2, 0, 5, 5})
	f.Add([]byte{5, 1, 3, 3, 2})
	f.Add([]byte{0, 3, 0, 4})
	srv := redistest.Start(f, redistest.Options{ForceMiniredis: true})
	st := store.New(srv.Client(f), store.Config{})
	events := []store.Status{store.Failed, store.Enqueued, store.Sent, store.Delivered, store.Read, store.Read}
	n := 0
	f.Fuzz(func(t *testing.T, seq []byte) {
		if len(seq) > 20 {
			seq = seq[:20]
		}
		ctx := context.Background()
		n++
		id := fmt.Sprintf("fz%d", n)
		r := &store.Record{ID: id, Destination: "96996999699", Type: "text", Priority: "bulk", Status: store.Queued,
			CreatedAt: t0, UpdatedAt: t0, Queue: "bulk"}
		if _, err := st.Create(ctx, []*store.Record{r}); err != nil {
			t.Fatal(err)
		}
		st.Begin(ctx, id, t0, store.Owner{})
		if _, err := st.Submit(ctx, id, "p"+id, t0); err != nil {
			t.Fatal(err)
		}
		prev := store.Submitted
		for i, b := range seq {
			ev := events[int(b)%len(events)]
			// Duplicates share a key: the same byte at the same position
			// modulo 3 replays the same event.
			key := fmt.Sprintf("%s:%d", ev, int(b)%3)
			res, err := st.ApplyEvent(ctx, store.Event{ID: "p" + id, Status: ev, At: t0.Add(time.Duration(i) * time.Second), Key: key})
			if err != nil {
				t.Fatal(err)
			}
			cur := res.Status
			switch {
			case cur == store.Failed && prev != store.Failed && deliveryRank[prev] >= deliveryRank[store.Delivered]:
				t.Fatalf("failed after %s (sequence %v)", prev, seq)
			case prev == store.Failed && cur != store.Failed && deliveryRank[cur] < deliveryRank[store.Delivered]:
				t.Fatalf("failed moved to %s (sequence %v)", cur, seq)
			case prev != store.Failed && cur != store.Failed && deliveryRank[cur] < deliveryRank[prev]:
				t.Fatalf("%s moved back to %s (sequence %v)", prev, cur, seq)
			}
			prev = cur
		}
	})
}
