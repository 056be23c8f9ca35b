// Package redisproc runs redis-server as a child of this process on a free
// loopback port: the private servers of chatq's tests (internal/redistest)
// and of its benchmark (internal/bench), which can kill and restart them.
package redisproc

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// readyTimeout bounds how long a starting redis-server may take to answer
// PING, including replaying its append-only file.
const readyTimeout = 15 * time.Second

// Config describes a redis-server to run.
type Config struct {
	// Bin is the redis-server binary.
	Bin string
	// Dir is its working directory, for its append-only file and any
	// cluster or sentinel state.
	Dir string
	// AOF turns on the append-only file, synced on every write, so that a
	// killed server comes back with what it acknowledged; without it
	// nothing is persisted.
	AOF bool
	// Conf, if set, is a configuration file named before every other
	// argument (a sentinel needs one it can rewrite).
	Conf string
	// Extra are arguments after the usual ones.
	Extra []string
	// ClusterBus asks for a port whose cluster bus port (port + 10000) is
	// free too.
	ClusterBus bool
}

// Process is a running (or killed) redis-server. The kernel kills it when
// this process dies without killing it first (Linux only).
type Process struct {
	cfg  Config
	port int
	log  *logBuffer

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// Start picks a free port, starts redis-server on it and waits until it
// answers PING.
func Start(cfg Config) (*Process, error) {
	p := &Process{cfg: cfg, log: &logBuffer{}}
	const attempts = 3
	for i := 1; ; i++ {
		pick := FreePort
		if cfg.ClusterBus {
			pick = freeClusterPort
		}
		port, err := pick()
		if err != nil {
			return nil, err
		}
		p.port = port
		err = p.launch()
		if err == nil {
			return p, nil
		}
		// The port chosen may have been taken between FreePort and the
		// bind; that alone is worth another try.
		if i == attempts || !p.log.contains("Address already in use") {
			return nil, fmt.Errorf("%w\nlog of redis-server:\n%s", err, p.log.tail())
		}
		p.log.reset()
	}
}

// Addr returns the server's host:port.
func (p *Process) Addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port))
}

// Port returns the server's port.
func (p *Process) Port() int { return p.port }

// Log returns the last few kilobytes of the server's output.
func (p *Process) Log() string { return p.log.tail() }

// launch starts redis-server and waits until it answers PING.
func (p *Process) launch() error {
	appendonly := "no"
	if p.cfg.AOF {
		appendonly = "yes"
	}
	var args []string
	if p.cfg.Conf != "" {
		args = append(args, p.cfg.Conf)
	}
	args = append(args,
		"--port", strconv.Itoa(p.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", appendonly,
		"--dir", p.cfg.Dir,
		"--daemonize", "no",
	)
	if p.cfg.AOF {
		args = append(args, "--appendfsync", "always")
	}
	args = append(args, p.cfg.Extra...)
	cmd := exec.Command(p.cfg.Bin, args...)
	cmd.Stdout = p.log
	cmd.Stderr = p.log
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()

	if err := waitReady(p.Addr(), done); err != nil {
		p.Kill()
		return fmt.Errorf("redis-server on %s: %w", p.Addr(), err)
	}
	return nil
}

// Crash kills a running redis-server at once (SIGKILL) and waits for it to
// exit; it fails if the server is not running.
func (p *Process) Crash() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return fmt.Errorf("redis-server on %s is not running", p.Addr())
	}
	p.stopLocked()
	return nil
}

// Kill stops redis-server if it is running.
func (p *Process) Kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		p.stopLocked()
	}
}

func (p *Process) stopLocked() {
	// Kill fails only when the process is already gone, which is the goal.
	_ = p.cmd.Process.Kill()
	<-p.done
	p.cmd, p.done = nil, nil
}

// Restart launches redis-server again with the same port and directory.
func (p *Process) Restart() error {
	p.mu.Lock()
	running := p.cmd != nil
	p.mu.Unlock()
	if running {
		return fmt.Errorf("redis-server on %s is still running; kill it first", p.Addr())
	}
	fmt.Fprintf(p.log, "--- redisproc: restart ---\n")
	return p.launch()
}

// waitReady polls addr with PING until it answers PONG, the process exits
// or readyTimeout passes. A server still loading its data answers -LOADING,
// which counts as not ready.
func waitReady(addr string, exited <-chan struct{}) error {
	deadline := time.NewTimer(readyTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if last = Ping(addr); last == nil {
			return nil
		}
		select {
		case <-exited:
			return errors.New("exited before answering PING")
		case <-deadline.C:
			return fmt.Errorf("no answer to PING within %s: %w", readyTimeout, last)
		case <-tick.C:
		}
	}
}

// Ping sends PING to the Redis at addr on a connection of its own and
// fails unless it answers PONG within a second.
func Ping(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(time.Second)); err != nil {
		return err
	}
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if line = strings.TrimSpace(line); line != "+PONG" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// FreePort asks the kernel for a free loopback port. Another process may
// take it before redis-server binds it; Start retries when that happens.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// freeClusterPort finds a free port whose cluster bus port, 10000 above
// it, is free too: redis-server before 7.0 cannot be given another.
func freeClusterPort() (int, error) {
	for range 100 {
		port, err := FreePort()
		if err != nil {
			return 0, err
		}
		if port+10000 > 65535 {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+10000)))
		if err != nil {
			continue
		}
		_ = l.Close()
		return port, nil
	}
	return 0, fmt.Errorf("find a free port with a free cluster bus port: none in 100 tries")
}

// logBuffer collects redis-server's output for failure messages.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// maxLog bounds the log kept; its start is the least useful part.
const maxLog = 64 << 10

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len()+len(p) > maxLog {
		keep := b.buf.Bytes()[min(b.buf.Len(), len(p)):]
		b.buf = *bytes.NewBuffer(append([]byte(nil), keep...))
	}
	return b.buf.Write(p)
}

func (b *logBuffer) contains(s string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Contains(b.buf.Bytes(), []byte(s))
}

func (b *logBuffer) reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Reset()
}

// tail returns the last few kilobytes of the log.
func (b *logBuffer) tail() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	const n = 4 << 10
	out := b.buf.Bytes()
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return string(out)
}
