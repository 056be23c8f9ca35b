package api_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
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
// alone; "receive" is the whole handler (secret check, parse, correlation
// with the record by provider id, status change, answer) against a real
// Redis on loopback, without the network in front.
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

	b.Run("receive", func(b *testing.B) {
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
		ids, bodies := submittedRecords(b, client, st, b.N)
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			req := httptest.NewRequest(http.MethodPost, "/webhooks/chatarchitect/"+webhookSecret, bytes.NewReader(bodies[i]))
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				b.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
		}
		b.StopTimer()
		// Each webhook must have found its record.
		r, err := st.Get(context.Background(), ids[len(ids)-1])
		if err != nil || r.Status != store.Sent {
			b.Fatalf("last record: %v %+v", err, r)
		}
	})
}

// submittedRecords enqueues n messages, marks each submitted with provider
// id "pid-<n>", and returns their ids and the body of a webhook for each.
func submittedRecords(b *testing.B, client *enqueue.Client, st *store.Store, n int) (ids []string, bodies [][]byte) {
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
			pid := fmt.Sprintf("pid-%d", from+j)
			if _, _, err := st.Begin(ctx, r.Record.ID, time.Now()); err != nil {
				b.Fatal(err)
			}
			if _, err := st.Submit(ctx, r.Record.ID, pid, time.Now()); err != nil {
				b.Fatal(err)
			}
			ids = append(ids, r.Record.ID)
			bodies = append(bodies, benchWebhook(pid))
		}
	}
	return ids, bodies
}
