package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// ErrBullMQMissing means BullMQ cannot run here: Node.js is not on PATH or
// the BullMQ script's packages are not installed (make bench installs them).
var ErrBullMQMissing = errors.New("bullmq is not installed")

// BullMQResult is what BullMQ did on the same Redis, from its own script.
type BullMQResult struct {
	// Version is BullMQ's, as installed.
	Version string `json:"version"`
	// AddBulk is addBulk's rate: jobs carrying a 26-character id, in batches
	// of the size SendBatch is measured with, as many at a time.
	AddBulk Rate `json:"add_bulk"`
	// Process is a no-op worker's rate over those jobs, with the
	// concurrency asynq's no-op server has.
	Process Rate `json:"process"`
}

// BullMQInstalled reports whether the BullMQ script in dir can run: Node.js
// on PATH and dir's packages installed (npm ci --prefix dir). The error
// says what is missing.
func BullMQInstalled(dir string) error {
	if _, err := exec.LookPath("node"); err != nil {
		return fmt.Errorf("%w: node is not on PATH", ErrBullMQMissing)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "bullmq", "package.json")); err != nil {
		return fmt.Errorf("%w in %s: run npm ci --prefix %s", ErrBullMQMissing, dir, dir)
	}
	return nil
}

// BullMQ runs the BullMQ script of dir (bench.mjs) against the private
// Redis: n jobs added in batches of size, callers batches at a time, then
// taken by a no-op worker of concurrency jobs at once.
func BullMQ(ctx context.Context, env *Env, dir string, n, size, callers, concurrency int) (BullMQResult, error) {
	if err := BullMQInstalled(dir); err != nil {
		return BullMQResult{}, err
	}
	if err := env.flush(ctx); err != nil {
		return BullMQResult{}, err
	}
	host, port, err := net.SplitHostPort(env.Redis.Addr())
	if err != nil {
		return BullMQResult{}, fmt.Errorf("bullmq: redis address: %w", err)
	}
	// Adding and taking 100,000 jobs takes seconds; a minute per 10,000
	// leaves room for a busy machine.
	ctx, cancel := context.WithTimeout(ctx, time.Minute+time.Duration(n/10_000)*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", filepath.Join(dir, "bench.mjs"),
		"--host", host, "--port", port, "--jobs", strconv.Itoa(n), "--batch", strconv.Itoa(size),
		"--callers", strconv.Itoa(callers), "--concurrency", strconv.Itoa(concurrency))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return BullMQResult{}, fmt.Errorf("bullmq: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	var out struct {
		Version        string  `json:"version"`
		Jobs           int     `json:"jobs"`
		AddBulkSeconds float64 `json:"add_bulk_seconds"`
		ProcessSeconds float64 `json:"process_seconds"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		return BullMQResult{}, fmt.Errorf("bullmq: read its answer %q: %w", bytes.TrimSpace(stdout.Bytes()), err)
	}
	if out.Jobs != n || out.AddBulkSeconds <= 0 || out.ProcessSeconds <= 0 {
		return BullMQResult{}, fmt.Errorf("bullmq: answer %s does not cover %d jobs", bytes.TrimSpace(stdout.Bytes()), n)
	}
	res := BullMQResult{
		Version: out.Version,
		AddBulk: Rate{Count: n, Elapsed: seconds64(out.AddBulkSeconds)},
		Process: Rate{Count: n, Elapsed: seconds64(out.ProcessSeconds)},
	}
	env.logf("bullmq %s: addBulk of %d jobs in batches of %d, %d at a time, in %s: %.0f/s; no-op processing, concurrency %d, in %s: %.0f/s",
		res.Version, n, size, callers, res.AddBulk.Elapsed.Round(time.Millisecond), res.AddBulk.PerSecond(),
		concurrency, res.Process.Elapsed.Round(time.Millisecond), res.Process.PerSecond())
	return res, nil
}

func seconds64(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
