package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/chatq/chatq/internal/redistest"
)

func TestRedisVersionCheck(t *testing.T) {
	tests := []struct {
		version string
		want    string // "" for accepted
	}{
		{"7.0.0", ""},
		{"7.0.15", ""},
		{"7.2.4", ""},
		{"8.4.0", ""},
		{"10.0.1", ""},
		{"7", ""},
		{"255.255.255", ""},
		{"", ""}, // reports none: let through
		{"6.2.14", "Redis 6.2.14 at 127.0.0.1:6380 is too old: chatq needs Redis 7.0 or later"},
		{"6.0.0", "Redis 6.0.0 at 127.0.0.1:6380 is too old: chatq needs Redis 7.0 or later"},
		{"5.0.7", "Redis 5.0.7 at 127.0.0.1:6380 is too old: chatq needs Redis 7.0 or later"},
		{"v7.0.0", `Redis at 127.0.0.1:6380 reports version "v7.0.0", which chatq cannot read: chatq needs Redis 7.0 or later`},
		{"7.x", `Redis at 127.0.0.1:6380 reports version "7.x", which chatq cannot read: chatq needs Redis 7.0 or later`},
	}
	for _, tt := range tests {
		err := checkRedisVersion(tt.version, "127.0.0.1:6380")
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tt.want {
			t.Errorf("version %q: error %q, want %q", tt.version, got, tt.want)
		}
	}
}

// Commands start on the Redis of the tests (7.0 or later) and on chatq
// dev's embedded miniredis, and they read a version from both.
func TestCommandsStartOnRedisSeven(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	if !srv.Real() {
		t.Skip("no redis-server here")
	}
	mr := miniredis.RunT(t)
	for name, url := range map[string]string{"redis-server": srv.URL(), "miniredis": "redis://" + mr.Addr()} {
		t.Run(name, func(t *testing.T) {
			t.Setenv("CHATQ_REDIS_URL", url)
			cfg, rdb, err := connect(ctx)
			if err != nil {
				t.Fatalf("connect to %s: %v", url, err)
			}
			defer rdb.Close()
			if v := redisVersion(ctx, rdb.(*redis.Client)); v == "" {
				t.Errorf("no version read from %s", cfg.RedisURL)
			}
			var out bytes.Buffer
			p := &program{stdout: &out, stderr: &out}
			if err := p.run(ctx, []string{"status", "01JD0000000000000000000000"}); err == nil || !strings.Contains(err.Error(), "no message with id") {
				t.Errorf("chatq status on %s: %v, want no message with that id", name, err)
			}
		})
	}
}

// oldRedis is a stand-in for a Redis 6.2 server: it answers INFO with that
// version, HELLO as unknown (so that go-redis speaks RESP2), and +OK to
// anything else. It returns the address it listens on.
func oldRedis(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				r := bufio.NewReader(conn)
				for {
					cmd, err := readCommand(r)
					if err != nil {
						return
					}
					var answer string
					switch strings.ToUpper(cmd) {
					case "HELLO":
						answer = "-ERR unknown command 'HELLO'\r\n"
					case "PING":
						answer = "+PONG\r\n"
					case "INFO":
						info := "# Server\r\nredis_version:6.2.14\r\nredis_mode:standalone\r\n"
						answer = fmt.Sprintf("$%d\r\n%s\r\n", len(info), info)
					default:
						answer = "+OK\r\n"
					}
					if _, err := io.WriteString(conn, answer); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// readCommand reads one RESP command and returns its name.
func readCommand(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "*")))
	if err != nil {
		return "", fmt.Errorf("not a RESP array: %q", line)
	}
	var name string
	for i := range n {
		if _, err := r.ReadString('\n'); err != nil { // $<length>
			return "", err
		}
		arg, err := r.ReadString('\n')
		if err != nil {
			return "", err
		}
		if i == 0 {
			name = strings.TrimSpace(arg)
		}
	}
	return name, nil
}

func TestCommandsRefuseAnOldRedis(t *testing.T) {
	addr := oldRedis(t)
	t.Setenv("CHATQ_REDIS_URL", "redis://"+addr)
	var out bytes.Buffer
	p := &program{stdout: &out, stderr: &out}
	err := p.run(context.Background(), []string{"status", "01JD0000000000000000000000"})
	want := "Redis 6.2.14 at " + addr + " is too old: chatq needs Redis 7.0 or later"
	if err == nil || err.Error() != want {
		t.Errorf("chatq status on Redis 6.2: %v, want %q", err, want)
	}
}
