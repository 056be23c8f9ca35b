package stats_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/stats"
	"github.com/chatq/chatq/internal/store"
)

// total sums a status over the minutes.
func total(ms []stats.Minute, st store.Status) int64 {
	var n int64
	for _, m := range ms {
		n += m.Counts[st]
	}
	return n
}

// commands is how many commands Redis has processed so far.
func commands(tb testing.TB, rdb *redis.Client) int64 {
	tb.Helper()
	info, err := rdb.Info(context.Background(), "stats").Result()
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "total_commands_processed:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	tb.Fatal("no total_commands_processed in INFO stats")
	return 0
}

func TestCountsReachRedisInOneFlush(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	c := stats.New(rdb, zaptest.NewLogger(t))
	ctx := context.Background()

	if srv.Real() {
		// Counting costs Redis nothing: only a flush writes.
		probe := srv.Client(t)
		before := commands(t, probe)
		for range 5000 {
			c.StatusChanged(store.Delivered, 1)
		}
		if after := commands(t, probe); after-before > 1 { // the INFO itself
			t.Errorf("counting 5000 changes ran %d Redis commands, want none", after-before-1)
		}
	} else {
		for range 5000 {
			c.StatusChanged(store.Delivered, 1)
		}
	}
	c.StatusChanged(store.Queued, 12)
	c.StatusChanged(store.Read, 0) // nothing
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// A second flush has nothing to add.
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	ms, err := stats.Read(ctx, rdb, time.Now(), 60)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 60 {
		t.Fatalf("%d minutes, want 60", len(ms))
	}
	if got := total(ms, store.Delivered); got != 5000 {
		t.Errorf("delivered %d, want 5000", got)
	}
	if got := total(ms, store.Queued); got != 12 {
		t.Errorf("queued %d, want 12", got)
	}
	if got := total(ms, store.Read); got != 0 {
		t.Errorf("read %d, want 0: a change of 0 messages counts nothing", got)
	}
	// Oldest first, one minute apart, the last one now's.
	for i := 1; i < len(ms); i++ {
		if d := ms[i].At.Sub(ms[i-1].At); d != time.Minute {
			t.Fatalf("minutes %d and %d are %v apart", i-1, i, d)
		}
	}
	if now := time.Now().UTC().Truncate(time.Minute); ms[59].At.Before(now.Add(-time.Minute)) {
		t.Errorf("last minute %v, want the current one (%v)", ms[59].At, now)
	}
	// Each minute's hash expires: the chart needs an hour, Redis keeps two.
	for _, m := range ms {
		if len(m.Counts) == 0 {
			continue
		}
		ttl, err := rdb.TTL(ctx, "chatq:stats:"+strconv.FormatInt(m.At.Unix()/60, 10)).Result()
		if err != nil {
			t.Fatal(err)
		}
		if ttl <= 0 || ttl > stats.Retention {
			t.Errorf("the counts of %v expire in %v, want within %v", m.At, ttl, stats.Retention)
		}
	}
}

func TestCountsSurviveAnOutage(t *testing.T) {
	srv := redistest.Start(t)
	if !srv.CanRestart() {
		t.Skip("needs a private redis-server to stop")
	}
	rdb := srv.Client(t)
	c := stats.New(rdb, zaptest.NewLogger(t))
	c.StatusChanged(store.Dead, 3)
	srv.Stop(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	if err := c.Flush(ctx); err == nil {
		t.Fatal("a flush with Redis down succeeded")
	}
	cancel()
	c.StatusChanged(store.Dead, 1)
	srv.Restart(t)
	if err := c.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	ms, err := stats.Read(context.Background(), rdb, time.Now(), 5)
	if err != nil {
		t.Fatal(err)
	}
	if got := total(ms, store.Dead); got != 4 {
		t.Errorf("dead %d after the outage, want 4", got)
	}
}

func TestStopWritesWhatIsLeft(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	c := stats.New(rdb, zaptest.NewLogger(t))
	c.Start()
	c.StatusChanged(store.Failed, 2)
	c.Stop(context.Background())
	ms, err := stats.Read(context.Background(), rdb, time.Now(), 5)
	if err != nil {
		t.Fatal(err)
	}
	if got := total(ms, store.Failed); got != 2 {
		t.Errorf("failed %d after Stop, want 2", got)
	}
}
