// Package stats counts status changes per minute for the console's
// overview, cheaply: each process counts in memory and adds its counts to
// Redis once a second, one HINCRBY per minute and status, so a message's
// status change costs no Redis command of its own.
package stats

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/chatq/chatq/internal/jsontime"
	"github.com/chatq/chatq/internal/store"
)

// Retention is how long a minute's counts are kept in Redis: the console
// shows the last hour, and the second hour leaves room for clocks that
// disagree.
const Retention = 2 * time.Hour

// flushEvery is how often a Counter adds its counts to Redis.
const flushEvery = time.Second

// minuteKey is the hash of one minute's counts, by status.
func minuteKey(minute int64) string { return "chatq:stats:" + strconv.FormatInt(minute, 10) }

type bucket struct {
	minute int64
	status store.Status
}

// Counter counts status changes in memory and adds them to Redis in the
// background. It implements store.Counter. A nil *Counter counts nothing.
type Counter struct {
	rdb redis.UniversalClient
	log *zap.Logger
	now func() time.Time

	mu     sync.Mutex
	counts map[bucket]int64

	stop chan struct{}
	done chan struct{}
}

// New returns a Counter that adds its counts to rdb once Start is called.
func New(rdb redis.UniversalClient, log *zap.Logger) *Counter {
	return &Counter{rdb: rdb, log: log, now: time.Now, counts: map[bucket]int64{}}
}

// StatusChanged counts n messages that changed to status st now.
func (c *Counter) StatusChanged(st store.Status, n int) {
	if c == nil || n <= 0 {
		return
	}
	b := bucket{minute: c.now().Unix() / 60, status: st}
	c.mu.Lock()
	c.counts[b] += int64(n)
	c.mu.Unlock()
}

// Flush adds the counts so far to Redis in one round trip. Counts that
// could not be written are kept for the next flush.
func (c *Counter) Flush(ctx context.Context) error {
	c.mu.Lock()
	counts := c.counts
	c.counts = map[bucket]int64{}
	c.mu.Unlock()
	if len(counts) == 0 {
		return nil
	}
	pipe := c.rdb.Pipeline()
	minutes := map[int64]bool{}
	for b, n := range counts {
		pipe.HIncrBy(ctx, minuteKey(b.minute), string(b.status), n)
		minutes[b.minute] = true
	}
	for m := range minutes {
		pipe.Expire(ctx, minuteKey(m), Retention)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		// A pipeline may have applied part of itself: counting some twice
		// is better for a chart than dropping an outage's worth.
		c.mu.Lock()
		for b, n := range counts {
			c.counts[b] += n
		}
		c.mu.Unlock()
		return fmt.Errorf("flush status counts: %w", err)
	}
	return nil
}

// Start flushes every second until Stop.
func (c *Counter) Start() {
	c.stop, c.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(c.done)
		t := time.NewTicker(flushEvery)
		defer t.Stop()
		for {
			select {
			case <-c.stop:
				return
			case <-t.C:
				ctx, cancel := context.WithTimeout(context.Background(), flushEvery)
				if err := c.Flush(ctx); err != nil {
					c.log.Warn("status counts not written yet", zap.Error(err))
				}
				cancel()
			}
		}
	}()
}

// Stop ends the flushing and writes what is left, within ctx.
func (c *Counter) Stop(ctx context.Context) {
	if c.stop != nil {
		close(c.stop)
		<-c.done
		c.stop = nil
	}
	if err := c.Flush(ctx); err != nil {
		c.log.Warn("status counts lost at shutdown", zap.Error(err))
	}
}

// Minute is one minute's status changes, counted by status.
type Minute struct {
	At     time.Time              `json:"at"`
	Counts map[store.Status]int64 `json:"counts"`
}

// MarshalJSON writes At as every timestamp of chatq's JSON.
func (m Minute) MarshalJSON() ([]byte, error) {
	type plain Minute
	return json.Marshal(struct {
		plain
		At jsontime.Time `json:"at"`
	}{plain(m), jsontime.Time(m.At)})
}

// Read returns the counts of the last n minutes up to now, oldest first,
// the minute now is in included; minutes with no change have empty counts.
func Read(ctx context.Context, rdb redis.UniversalClient, now time.Time, n int) ([]Minute, error) {
	last := now.Unix() / 60
	pipe := rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, n)
	for i := range n {
		cmds[i] = pipe.HGetAll(ctx, minuteKey(last-int64(n-1-i)))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("read status counts: %w", err)
	}
	out := make([]Minute, n)
	for i, cmd := range cmds {
		m := Minute{At: time.Unix((last-int64(n-1-i))*60, 0).UTC(), Counts: map[store.Status]int64{}}
		for st, v := range cmd.Val() {
			if k, err := strconv.ParseInt(v, 10, 64); err == nil && store.Status(st).Valid() {
				m.Counts[store.Status(st)] = k
			}
		}
		out[i] = m
	}
	return out, nil
}
