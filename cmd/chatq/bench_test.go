package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chatq/chatq/internal/bench"
)

// chatq bench starts the chatq binary as sandbox, api and worker, and
// prints the deployed figures with their targets judged.
func TestBenchDeployed(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("redis-server is not installed")
		}
		t.Skip("redis-server is not installed")
	}
	bullmqDir := filepath.Join("..", "..", "internal", "bench", "bullmq")
	if err := bench.BullMQInstalled(bullmqDir); err != nil && os.Getenv("CI") == "true" {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "chatq")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, errOut, err := cli(t, "bench", "--only", "deployed", "--chatq", bin, "--bullmq-dir", bullmqDir,
		"--deployed-messages", "200", "--life-messages", "50", "--asynq-tasks", "300", "--concurrency", "8", "--goroutines", "4")
	if err != nil {
		t.Fatalf("chatq bench: %v\n%s\n%s", err, out, errOut)
	}
	for _, want := range []string{
		"chatq as deployed: send, 200 queued to submitted, webhooks off",
		"chatq as deployed: send: Redis commands per message",
		"<= 24 cmd/msg",
		"chatq as deployed: whole life with 4 webhooks (50 messages): Redis commands per message",
		"<= 50 cmd/msg",
		"chatq as deployed: send: worker CPU per message",
		"bare asynq: Redis commands per no-op task",
		"load average",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("chatq bench printed no %q:\n%s", want, out)
		}
	}
	if bench.BullMQInstalled(bullmqDir) == nil && !strings.Contains(out, "chatq as deployed: send rate over the minimal BullMQ sender's") {
		t.Errorf("chatq bench printed no ratio to the BullMQ sender:\n%s", out)
	}
}

func TestBenchWithoutChatqBinary(t *testing.T) {
	_, _, err := cli(t, "bench", "--only", "deployed", "--chatq", filepath.Join(t.TempDir(), "missing"))
	if err == nil || !strings.Contains(err.Error(), "--chatq") {
		t.Errorf("chatq bench --chatq missing: %v, want an error naming --chatq", err)
	}
}
