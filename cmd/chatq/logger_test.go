package main

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// go-redis's own lines (here: no Sentinel answers) reach chatq's log as
// structured warnings, not plain text on stderr.
func TestRedisLinesGoToTheLog(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	redis.SetLogger(redisLogger{zap.New(core).Named("redis")})
	t.Cleanup(func() { redis.SetLogger(redisLogger{zap.NewNop()}) })

	// A port nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	rdb := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: "chatq", SentinelAddrs: []string{addr}, MaxRetries: -1})
	defer rdb.Close()
	if err := rdb.Ping(context.Background()).Err(); err == nil {
		t.Fatal("ping through a sentinel that does not exist succeeded")
	}
	for _, e := range logs.All() {
		if e.LoggerName == "redis" && e.Level == zapcore.WarnLevel && strings.Contains(e.Message, "sentinel") {
			return
		}
	}
	t.Fatalf("no sentinel warning from go-redis in the log; got %v", logs.All())
}
