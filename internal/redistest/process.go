package redistest

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

// process is a private redis-server run as a child of the test binary.
type process struct {
	bin  string
	dir  string
	aof  bool
	port int
	log  *logBuffer
	// conf, if set, is a configuration file named before every other
	// argument (a sentinel needs one it can rewrite); extra are arguments
	// after the usual ones.
	conf  string
	extra []string
	// clusterBus asks for a port whose cluster bus port (port + 10000) is
	// free too.
	clusterBus bool

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

func startProcess(bin, dir string, aof bool) (*process, error) {
	return start(&process{bin: bin, dir: dir, aof: aof})
}

// start picks p a free port and launches it.
func start(p *process) (*process, error) {
	p.log = &logBuffer{}
	const attempts = 3
	for i := 1; ; i++ {
		pick := freePort
		if p.clusterBus {
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
		// The port chosen may have been taken between freePort and the
		// bind; that alone is worth another try.
		if i == attempts || !p.log.contains("Address already in use") {
			return nil, fmt.Errorf("%w\nlog of redis-server:\n%s", err, p.log.tail())
		}
		p.log.reset()
	}
}

func (p *process) addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port))
}

// launch starts redis-server and waits until it answers PING.
func (p *process) launch() error {
	appendonly := "no"
	if p.aof {
		appendonly = "yes"
	}
	var args []string
	if p.conf != "" {
		args = append(args, p.conf)
	}
	args = append(args,
		"--port", strconv.Itoa(p.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", appendonly,
		"--dir", p.dir,
		"--daemonize", "no",
	)
	if p.aof {
		args = append(args, "--appendfsync", "always")
	}
	args = append(args, p.extra...)
	cmd := exec.Command(p.bin, args...)
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

	if err := waitReady(p.addr(), done); err != nil {
		p.kill()
		return fmt.Errorf("redis-server on %s: %w", p.addr(), err)
	}
	return nil
}

// crash kills a running redis-server at once and waits for it to exit.
func (p *process) crash() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return fmt.Errorf("redis-server on %s is not running", p.addr())
	}
	p.stopLocked()
	return nil
}

// kill stops redis-server if it is running.
func (p *process) kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		p.stopLocked()
	}
}

func (p *process) stopLocked() {
	// Kill fails only when the process is already gone, which is the goal.
	_ = p.cmd.Process.Kill()
	<-p.done
	p.cmd, p.done = nil, nil
}

// restart launches redis-server again with the same port and directory.
func (p *process) restart() error {
	p.mu.Lock()
	running := p.cmd != nil
	p.mu.Unlock()
	if running {
		return fmt.Errorf("redis-server on %s is still running; Stop it first", p.addr())
	}
	fmt.Fprintf(p.log, "--- redistest: restart ---\n")
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
		if last = ping(addr); last == nil {
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

func ping(addr string) error {
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
