package store_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/store"
)

// benchRecords creates n queued records, in batches as SendBatch writes
// them, and returns their ids.
func benchRecords(b *testing.B, st *store.Store, prefix string, n int) []string {
	b.Helper()
	ids := make([]string, 0, n)
	now := time.Now().UTC().Truncate(time.Millisecond)
	for from := 0; from < n; from += 1000 {
		recs := make([]*store.Record, 0, 1000)
		for i := from; i < min(from+1000, n); i++ {
			recs = append(recs, &store.Record{
				ID: fmt.Sprintf("%s-%08d", prefix, i), Destination: "4915112345679", Type: "text", Priority: "bulk",
				Status: store.Queued, History: []store.HistoryEntry{{Status: store.Queued, At: now}},
				CreatedAt: now, UpdatedAt: now, Queue: "bulk",
				Payload: []byte(`{"type":"text","message":"Hi Maria, your order 0048213 has shipped and arrives on Thursday."}`),
			})
		}
		res, err := st.Create(context.Background(), recs)
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range res {
			if r.Err != nil {
				b.Fatal(r.Err)
			}
			ids = append(ids, r.Record.ID)
		}
	}
	return ids
}

// BenchmarkStatusUpdate measures one status change of a job record, each a
// round trip to a real Redis on loopback running the transition script:
// the two changes every send makes (Begin: queued to sending, with the
// record read back; Submit: sending to submitted, with the provider id
// indexed) and a delivery event correlated by provider id. They run from
// 16 goroutines, as a worker's sends do, so ns/op is the cost at
// throughput, not one round trip's latency.
func BenchmarkStatusUpdate(b *testing.B) {
	srv := redistest.Start(b)
	if !srv.Real() {
		b.Skip("needs a real Redis: miniredis says nothing of Redis's speed")
	}
	st := store.New(srv.Client(b), store.Config{})
	ctx := context.Background()
	run := 0
	prepare := func(b *testing.B, begin, submit bool) []string {
		b.Helper()
		run++
		ids := benchRecords(b, st, fmt.Sprint("r", run), b.N)
		for _, id := range ids {
			if begin {
				if _, o, err := st.Begin(ctx, id, time.Now(), store.Owner{}); err != nil || o != store.Changed {
					b.Fatalf("begin %s: %v %s", id, err, o)
				}
			}
			if submit {
				if _, err := st.Submit(ctx, id, "pid-"+id, time.Now()); err != nil {
					b.Fatal(err)
				}
			}
		}
		return ids
	}

	b.Run("begin", func(b *testing.B) {
		ids := prepare(b, false, false)
		b.ReportAllocs()
		b.ResetTimer()
		parallel(b, func(i int) {
			if _, o, err := st.Begin(ctx, ids[i], time.Now(), store.Owner{}); err != nil || o != store.Changed {
				b.Errorf("begin: %v %s", err, o)
			}
		})
	})
	b.Run("submit", func(b *testing.B) {
		ids := prepare(b, true, false)
		b.ReportAllocs()
		b.ResetTimer()
		parallel(b, func(i int) {
			if o, err := st.Submit(ctx, ids[i], "pid-"+ids[i], time.Now()); err != nil || o != store.Changed {
				b.Errorf("submit: %v %s", err, o)
			}
		})
	})
	b.Run("event", func(b *testing.B) {
		ids := prepare(b, true, true)
		b.ReportAllocs()
		b.ResetTimer()
		parallel(b, func(i int) {
			ev := store.Event{ID: "pid-" + ids[i], Status: store.Enqueued, WhatsAppID: "wamid-" + ids[i], At: time.Now(), Key: "enqueued:1"}
			if res, err := st.ApplyEvent(ctx, ev); err != nil || res.Correlation != store.Matched {
				b.Errorf("event: %v %+v", err, res)
			}
		})
	})
}

// parallel calls op(i) once for every i in [0, b.N) from 16 goroutines.
func parallel(b *testing.B, op func(i int)) {
	b.Helper()
	var next atomic.Int64
	b.SetParallelism(16 / max(1, runtime.GOMAXPROCS(0)))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			op(int(next.Add(1) - 1))
		}
	})
}
