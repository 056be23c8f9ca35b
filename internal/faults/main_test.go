package faults

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// chatqBin is the chatq binary every test of the package runs. TestMain
// builds it once and sets it before any test starts; nothing changes it
// afterwards.
var chatqBin string

func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "chatq-faults-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	chatqBin = filepath.Join(dir, "chatq")
	// go test puts its own toolchain first on PATH, so this is the go that
	// runs the tests.
	build := exec.Command("go", "build", "-o", chatqBin, "github.com/chatq/chatq/cmd/chatq")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "faults: build chatq:", err)
		return 1
	}
	return m.Run()
}
