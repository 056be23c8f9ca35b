package api_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/chatq/chatq/api"
	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/chatarchitect"
	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/store"
)

// benchWebhook is a "sent" delivery event as ChatArchitect posts it: named
// by WhatsApp's id, with the provider id as gsId.
func benchWebhook(providerID string) []byte {
	return fmt.Appendf(nil, `{"app":"chatq","timestamp":1764064800123,"version":2,"type":"message-event",`+
		`"payload":{"id":"wamid.%s","gsId":"%s","type":"sent","destination":"4915112345679","payload":{"ts":1764064800}}}`,
		providerID, providerID)
}

// BenchmarkWebhook measures the webhook receiver: "parse" decodes a body
// alone; "receive_*" is the whole handler (secret check, parse,
// correlation with the record, status change, answer) against a real Redis
// on loopback, without the network in front, from 16 goroutines.
func BenchmarkWebhook(b *testing.B) {
	b.Run("parse", func(b *testing.B) {
		body := benchWebhook("ee4a68a0-1203-4c85-8dc3-49d0b3226a35")
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			if _, err := chatarchitect.ParseWebhook(body); err != nil {
				b.Fatal(err)
			}
		}
	})

	srv := redistest.Start(b)
	if !srv.Real() {
		b.Skip("needs a real Redis: miniredis says nothing of Redis's speed")
	}
	rdb := srv.Client(b)
	client := enqueue.NewClient(rdb, enqueue.Config{})
	b.Cleanup(func() { _ = client.Close() })
	st := store.New(rdb, store.Config{})
	h, err := api.New(api.Config{APIKeys: []string{apiKey}, WebhookSecret: webhookSecret}, client, st, zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	post := func(b *testing.B, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/webhooks/chatarchitect/"+webhookSecret, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Errorf("status %d: %s", rec.Code, rec.Body)
		}
	}
	run := 0
	receive := func(b *testing.B, warm bool) {
		run++
		ids, pids := submittedRecords(b, client, st, fmt.Sprintf("run%d", run), b.N)
		bodies := make([][]byte, len(pids))
		for i, pid := range pids {
			bodies[i] = benchWebhook(pid)
			if warm {
				// An enqueued webhook first, as ChatArchitect sends it:
				// the receiver learns the message's ids from it.
				post(b, benchEnqueued(pid))
			}
		}
		b.ReportAllocs()
		b.ResetTimer()
		// From 16 goroutines, as webhooks arrive: ns/op is the cost at
		// throughput, not one round trip's latency.
		var next atomic.Int64
		b.SetParallelism(16 / max(1, runtime.GOMAXPROCS(0)))
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				post(b, bodies[next.Add(1)-1])
			}
		})
		b.StopTimer()
		// Each webhook must have found its record.
		r, err := st.Get(context.Background(), ids[len(ids)-1])
		if err != nil || r.Status != store.Sent {
			b.Fatalf("last record: %v %+v", err, r)
		}
	}
	// The first webhook of a message needs a lookup of its id, then the
	// status change: two round trips.
	b.Run("receive_first", func(b *testing.B) { receive(b, false) })
	// Later ones find the id remembered: one round trip.
	b.Run("receive_next", func(b *testing.B) { receive(b, true) })
}

// benchEnqueued is the enqueued webhook of the message with that provider
// id, which tells its WhatsApp id.
func benchEnqueued(providerID string) []byte {
	return fmt.Appendf(nil, `{"app":"chatq","timestamp":1764064800000,"version":2,"type":"message-event",`+
		`"payload":{"id":"%s","type":"enqueued","destination":"4915112345679","payload":{"whatsappMessageId":"wamid.%s"}}}`,
		providerID, providerID)
}

// submittedRecords enqueues n messages, marks each submitted with provider
// id "<prefix>-<n>", and returns their ids and provider ids.
func submittedRecords(b *testing.B, client *enqueue.Client, st *store.Store, prefix string, n int) (ids, pids []string) {
	b.Helper()
	ctx := context.Background()
	for from := 0; from < n; from += 1000 {
		msgs := make([]*enqueue.Message, 0, 1000)
		for i := from; i < min(from+1000, n); i++ {
			msgs = append(msgs, &enqueue.Message{Destination: "4915112345679", Payload: &enqueue.Text{Message: "Your order has shipped."}, Priority: enqueue.Bulk})
		}
		res, err := client.SendBatch(ctx, msgs)
		if err != nil {
			b.Fatal(err)
		}
		for j, r := range res {
			if r.Err != nil {
				b.Fatal(r.Err)
			}
			pid := fmt.Sprintf("%s-%d", prefix, from+j)
			if _, _, err := st.Begin(ctx, r.Record.ID, time.Now(), store.Owner{}); err != nil {
				b.Fatal(err)
			}
			if _, err := st.Submit(ctx, r.Record.ID, pid, time.Now()); err != nil {
				b.Fatal(err)
			}
			ids = append(ids, r.Record.ID)
			pids = append(pids, pid)
		}
	}
	return ids, pids
}
