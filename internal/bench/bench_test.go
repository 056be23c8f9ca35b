package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/chatq/chatq/internal/bench"
)

// chatqBin is the chatq binary TestMain builds, which the deployed
// measurements start as processes.
var chatqBin string

func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "chatq-bench-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	chatqBin = filepath.Join(dir, "chatq")
	// go test puts its own toolchain first on PATH.
	build := exec.Command("go", "build", "-o", chatqBin, "github.com/chatq/chatq/cmd/chatq")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench: build chatq:", err)
		return 1
	}
	return m.Run()
}

// startEnv starts a private redis-server for the test, or skips the test
// where none is installed (and fails it with CI=true).
func startEnv(tb testing.TB) *bench.Env {
	tb.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatal("redis-server is not installed")
		}
		tb.Skip("redis-server is not installed")
	}
	r, err := bench.StartRedis("")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := r.Close(); err != nil {
			tb.Error(err)
		}
	})
	return &bench.Env{Redis: r, Log: zaptest.NewLogger(tb, zaptest.Level(zap.WarnLevel)), Progress: testWriter{tb}}
}

type testWriter struct{ tb testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// tiny runs every measurement at a size that proves it works in seconds.
func tiny() bench.Options {
	return bench.Options{
		Chatq:            chatqBin,
		DeployedMessages: 300,
		LifeMessages:     100,
		Rounds:           2,
		Goroutines:       4,
		Concurrency:      8,
		AsynqTasks:       300,
		EnqueueMessages:  300,
		BatchSize:        100,
		BatchCallers:     2,
		SendMessages:     300,
		IdleMessages:     5,
		Backlog:          300,
		RedisMessages:    200,
		WorkerMessages:   400,
		WorkerEvery:      200,
		Stream: bench.StreamOptions{
			Target:        40,
			Duration:      time.Second,
			ProbeDuration: 500 * time.Millisecond,
			MaxProbes:     1,
			WebhookDelay:  5 * time.Millisecond,
			Warmup:        200 * time.Millisecond,
		},
	}
}

// withBullMQ points opts at the BullMQ script, or leaves BullMQ out where
// its packages are not installed (make test installs them; with CI=true
// they must be).
func withBullMQ(tb testing.TB, opts *bench.Options) bool {
	tb.Helper()
	opts.BullMQDir = "bullmq"
	err := bench.BullMQInstalled(opts.BullMQDir)
	if err == nil {
		return true
	}
	if os.Getenv("CI") == "true" {
		tb.Fatal(err)
	}
	tb.Logf("BullMQ left out: %v", err)
	for _, m := range bench.Measurements {
		if m != bench.MeasureBullMQ {
			opts.Only = append(opts.Only, m)
		}
	}
	return false
}

func TestRunMeasuresEverything(t *testing.T) {
	env := startEnv(t)
	opts := tiny()
	bullmq := withBullMQ(t, &opts)
	rep, err := bench.Run(context.Background(), env, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Failures) > 0 || len(rep.Skipped) > 0 {
		t.Fatalf("failures: %v; skipped: %v", rep.Failures, rep.Skipped)
	}
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", table.String())

	rates := []string{
		bench.BaselineEnqueue, "asynq_enqueue_autopipelined", bench.BaselineProcess, "enqueue_send", "enqueue_batch",
		"enqueue_http", "enqueue_http_batch", "send_rate_stripped", "deployed_send_rate", "deployed_enqueue_rate",
		"deployed_campaign_rate",
	}
	if bullmq {
		rates = append(rates, "bullmq_add_bulk", "bullmq_process", "bullmq_send_rate")
		// The ratio to the BullMQ sender is judged on its median over the
		// rounds, each round's rates in its note.
		if f := rep.Figure("deployed_send_vs_bullmq_rounds"); f == nil || f.Value <= 0 || f.Met == nil || strings.Count(f.Note, " x") != 2 {
			t.Errorf("figure deployed_send_vs_bullmq_rounds: %+v, want a judged median of two rounds", f)
		}
		if f := rep.Figure("deployed_send_vs_bullmq"); f == nil || f.Value <= 0 || f.Met != nil {
			t.Errorf("figure deployed_send_vs_bullmq: %+v, want the first round's ratio, not judged", f)
		}
		if d := rep.Results.Deployed; d == nil || len(d.Rounds) != 2 || d.Rounds[1].Send.PerSecond() <= 0 || d.Rounds[1].BullMQ.PerSecond() <= 0 {
			t.Errorf("deployed result: %+v, want two rounds with both rates", d)
		}
		for _, name := range []string{"bullmq_send_commands", "bullmq_send_cpu_bullmq", "deployed_send_cost_vs_bullmq", "deployed_send_cost_vs_bullmq_rounds"} {
			if f := rep.Figure(name); f == nil || f.Value <= 0 {
				t.Errorf("figure %s: %+v, want a positive value", name, f)
			}
		}
		if f := rep.Figure("enqueue_batch_vs_bullmq"); f == nil || f.Value <= 0 || f.Met == nil {
			t.Errorf("figure enqueue_batch_vs_bullmq: %+v, want a judged ratio", f)
		}
	}
	for _, name := range rates {
		f := rep.Figure(name)
		if f == nil || f.Value <= 0 {
			t.Errorf("figure %s: %+v, want a positive rate", name, f)
			continue
		}
		if f.Baseline != "" && f.Ratio <= 0 {
			t.Errorf("figure %s has no ratio to %s", name, f.Baseline)
		}
	}
	// Each phase of the deployment counts Redis's commands and the CPU of
	// the processes that ran it, and judges the bounds users are promised.
	for _, name := range []string{"asynq_process_commands", "deployed_send_commands", "deployed_send_cpu_worker", "deployed_send_cpu_redis",
		"deployed_life_commands", "deployed_life_cpu_worker", "deployed_life_cpu_api", "deployed_life_cpu_sandbox", "deployed_enqueue_commands",
		"deployed_campaign_commands", "deployed_campaign_cpu_worker", "deployed_campaign_cpu_redis"} {
		if f := rep.Figure(name); f == nil || f.Value <= 0 {
			t.Errorf("figure %s: %+v, want a positive value", name, f)
		}
	}
	for _, name := range []string{"deployed_send_rate", "deployed_send_commands", "deployed_life_commands"} {
		if f := rep.Figure(name); f == nil || f.Met == nil {
			t.Errorf("figure %s: %+v, want its target judged", name, f)
		}
	}
	// Where Redis's time goes in a send: the record's changes are chatq's
	// scripts, among asynq's.
	if f := rep.Figure("deployed_send_redis_scripts"); f == nil || f.Value <= 0 || f.Value >= 100 || !strings.Contains(f.Note, "evalsha chatq:m:{…}") {
		t.Errorf("figure deployed_send_redis_scripts: %+v, want a share of chatq's scripts, the record's change named", f)
	}
	if d := rep.Results.Deployed; d == nil || d.LimitWaits != 0 {
		t.Errorf("deployed result %+v: want no send held back by a limit", d)
	}
	// A read message's record stays a small hash's compact encoding.
	if d := rep.Results.Deployed; d == nil || d.LifeRecordEncoding != "listpack" || rep.Figure("deployed_life_record_bytes") == nil {
		t.Errorf("deployed result %+v: want the memory of a read message's record, a listpack", d)
	}
	for _, name := range []string{"stream_rate", "stream_lag_p99", "latency_idle_p50", "latency_idle_p99",
		"latency_backlog_p50", "latency_backlog_p99", "redis_bytes_per_message", "worker_heap_first", "worker_heap_last"} {
		if f := rep.Figure(name); f == nil || f.Value <= 0 {
			t.Errorf("figure %s: %+v, want a positive value", name, f)
		}
	}
	if rep.Figure("worker_heap_growth") == nil {
		t.Error("no worker_heap_growth figure")
	}
	st := rep.Results.Stream
	if st == nil || !st.AtTarget.Sustained {
		t.Fatalf("40 msg/s did not hold: %+v", st)
	}
	if st.AtTarget.Webhooks != 4*int64(st.AtTarget.Total) || st.AtTarget.Incomplete != 0 {
		t.Errorf("stream at 40 msg/s: %d webhooks for %d messages, %d incomplete", st.AtTarget.Webhooks, st.AtTarget.Total, st.AtTarget.Incomplete)
	}

	path := filepath.Join(t.TempDir(), "bench.json")
	if err := rep.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var back bench.Report
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(rep.Figures, back.Figures); diff != "" {
		t.Errorf("figures after a JSON round trip (-wrote +read):\n%s", diff)
	}
}

func TestRunOnlyWhatIsAsked(t *testing.T) {
	env := startEnv(t)
	opts := tiny()
	opts.Only = []string{bench.MeasureRedisMemory}
	rep, err := bench.Run(context.Background(), env, opts)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range rep.Figures {
		names = append(names, f.Name)
	}
	if diff := cmp.Diff([]string{"redis_bytes_per_message"}, names); diff != "" {
		t.Errorf("figures (-want +got):\n%s", diff)
	}
}

// Without BullMQ's packages the run goes on and names what it left out.
func TestRunWithoutBullMQSaysSo(t *testing.T) {
	env := startEnv(t)
	opts := tiny()
	opts.Only = []string{bench.MeasureBullMQ}
	opts.BullMQDir = t.TempDir()
	rep, err := bench.Run(context.Background(), env, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Failures) > 0 || len(rep.Skipped) != 1 || !strings.Contains(rep.Skipped[0], "npm ci --prefix "+opts.BullMQDir) {
		t.Fatalf("failures %v, skipped %v: want bullmq skipped with the command that installs it", rep.Failures, rep.Skipped)
	}
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table.String(), "not measured: bullmq") {
		t.Errorf("table does not say bullmq was not measured:\n%s", table.String())
	}
}

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*bench.Options)
		want   string
	}{
		{"defaults", func(*bench.Options) {}, ""},
		{"unknown measurement", func(o *bench.Options) { o.Only = []string{"speed"} }, `unknown measurement "speed"`},
		{"negative size", func(o *bench.Options) { o.SendMessages = -1 }, "send messages must not be negative"},
		{"step of one", func(o *bench.Options) { o.Stream.Step = 1 }, "step above 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := bench.DefaultOptions()
			tt.change(&o)
			err := o.Validate()
			got := ""
			if err != nil {
				got = err.Error()
			}
			if tt.want == "" && got != "" || !strings.Contains(got, tt.want) {
				t.Errorf("Validate() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestFinishComputesRatiosAndTargets(t *testing.T) {
	yes, no := true, false
	rep := &bench.Report{Figures: []bench.Figure{
		{Name: bench.BaselineEnqueue, Value: 20000, Unit: "msg/s"},
		{Name: "batch", Value: 15000, Unit: "msg/s", Baseline: bench.BaselineEnqueue, Target: &bench.Target{Bound: 0.6, OfBaseline: true}},
		{Name: "slow", Value: 5000, Unit: "msg/s", Baseline: bench.BaselineEnqueue, Target: &bench.Target{Bound: 0.6, OfBaseline: true}},
		{Name: "orphan", Value: 5000, Unit: "msg/s", Baseline: bench.BaselineProcess, Target: &bench.Target{Bound: 0.35, OfBaseline: true}},
		{Name: "p50", Value: 12.5, Unit: "ms", Target: &bench.Target{Max: true, Bound: 20}},
		{Name: "p99", Value: 120, Unit: "ms", Target: &bench.Target{Max: true, Bound: 100}},
	}}
	rep.Finish()
	type got struct {
		Name   string
		Ratio  float64
		Target string
		Met    *bool
	}
	var gots []got
	for _, f := range rep.Figures {
		gots = append(gots, got{f.Name, f.Ratio, f.TargetText, f.Met})
	}
	want := []got{
		{bench.BaselineEnqueue, 0, "", nil},
		{"batch", 0.75, ">= 0.6 x asynq_enqueue", &yes},
		{"slow", 0.25, ">= 0.6 x asynq_enqueue", &no},
		{"orphan", 0, ">= 0.35 x asynq_process", nil},
		{"p50", 0, "<= 20 ms", &yes},
		{"p99", 0, "<= 100 ms", &no},
	}
	if diff := cmp.Diff(want, gots); diff != "" {
		t.Errorf("after Finish (-want +got):\n%s", diff)
	}
}
