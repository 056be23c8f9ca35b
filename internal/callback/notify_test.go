package callback_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

	"github.com/chatq/chatq/internal/callback"
)

// A worker's status change does not wait for its callback's task: Notify
// returns while Redis has not answered the enqueue, and Wait waits for it.
func TestABackgroundNotifyDoesNotWaitForRedis(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// A Redis that reads and never answers until released.
	reached, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 512)
				if _, err := c.Read(buf); err == nil {
					once.Do(func() { close(reached) })
				}
				<-release
			}()
		}
	}()
	rdb := redis.NewClient(&redis.Options{Addr: ln.Addr().String(), MaxRetries: -1, ReadTimeout: time.Minute})
	defer rdb.Close()
	n := callback.NewNotifier(asynq.NewClientFromRedisClient(rdb), zaptest.NewLogger(t)).Background(4)

	returned := make(chan struct{})
	go func() {
		n.Notify(context.Background(), "01KB0000000000000000000000", 1)
		close(returned)
	}()
	select {
	case <-returned:
	case <-time.After(10 * time.Second):
		t.Fatal("Notify waited for Redis's answer")
	}
	select {
	case <-reached:
	case <-time.After(10 * time.Second):
		t.Fatal("the enqueue never reached Redis")
	}
	close(release)
	n.Wait() // the failed enqueue is logged before the test ends
}
