package ratelimit_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatq/chatq/internal/ratelimit"
	"github.com/chatq/chatq/internal/redistest"
)

// BenchmarkLimiter measures the limiter calls a worker makes before every
// send, each one round trip to a real Redis on loopback, from 16
// goroutines as a worker's sends make them. The rate is far above what the
// benchmark reaches, so that no call waits: the figures are the cost of
// asking. "reserve_no_limits" is Reserve with every limit off.
func BenchmarkLimiter(b *testing.B) {
	srv := redistest.Start(b)
	if !srv.Real() {
		b.Skip("needs a real Redis: miniredis says nothing of Redis's speed")
	}
	rdb := srv.Client(b)
	ctx := context.Background()
	req := func(i int) ratelimit.Request {
		return ratelimit.Request{Recipient: fmt.Sprintf("49151%08d", i), MaxWait: time.Second, MaxHold: time.Second}
	}
	cases := []struct {
		name string
		cfg  ratelimit.Config
		call func(l *ratelimit.Limiter, i int) error
	}{
		{"reserve", ratelimit.Config{Sender: "15550001234", Rate: 1e6, Burst: 1e6}, func(l *ratelimit.Limiter, i int) error {
			d, err := l.Reserve(ctx, req(i))
			if err == nil && !d.Reserved {
				err = fmt.Errorf("not reserved: %+v", d)
			}
			return err
		}},
		{"reserve_daily_cap", ratelimit.Config{Sender: "15550001235", Rate: 1e6, Burst: 1e6, DailyRecipients: 1e7}, func(l *ratelimit.Limiter, i int) error {
			_, err := l.Reserve(ctx, req(i))
			return err
		}},
		{"reserve_no_limits", ratelimit.Config{Sender: "15550001236"}, func(l *ratelimit.Limiter, i int) error {
			_, err := l.Reserve(ctx, req(i))
			return err
		}},
		{"reserve_pair", ratelimit.Config{Sender: "15550001237", PairInterval: 6 * time.Second, PairBurst: 3}, func(l *ratelimit.Limiter, i int) error {
			_, err := l.ReservePair(ctx, req(i).Recipient)
			return err
		}},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			l := ratelimit.New(rdb, tc.cfg, nil)
			b.ReportAllocs()
			var next atomic.Int64
			b.SetParallelism(16 / max(1, runtime.GOMAXPROCS(0)))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := tc.call(l, int(next.Add(1))); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
