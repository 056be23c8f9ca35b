package main

import (
	"bytes"
	"context"
	"runtime/debug"
	"strings"
	"testing"
)

// cli runs chatq in-process with args and returns what it wrote to
// stdout and to stderr.
func cli(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	p := &program{stdout: &out, stderr: &errOut, stdin: strings.NewReader(""), version: "v1.4.2", commit: "0123456789abcdef"}
	err = p.run(context.Background(), args)
	return out.String(), errOut.String(), err
}

func TestVersion(t *testing.T) {
	out, _, err := cli(t, "--version")
	if err != nil || out != "chatq v1.4.2 (commit 0123456789abcdef)\n" {
		t.Errorf("chatq --version: %v %q", err, out)
	}
}

func TestDescribeBuild(t *testing.T) {
	built := &debug.BuildInfo{
		Main: debug.Module{Path: "github.com/chatq/chatq", Version: "v0.0.0-20261206204231-6ae4230fa1b2+dirty"},
		Settings: []debug.BuildSetting{
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: "6ae4230fa1b2c3d4"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	tests := []struct {
		name              string
		release, revision string
		info              *debug.BuildInfo
		want              string
	}{
		{"go build in a checkout", "", "", built, "v0.0.0-20261206204231-6ae4230fa1b2+dirty (commit 6ae4230fa1b2c3d4, modified)"},
		{"release build", "v1.2.0", "ffff", built, "v1.2.0 (commit ffff, modified)"},
		{"no build information", "", "", nil, "(devel)"},
		{"go run", "", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "(devel)"},
		{"release build without .git", "v1.2.0", "abc", &debug.BuildInfo{}, "v1.2.0 (commit abc)"},
	}
	for _, tt := range tests {
		if got := describeBuild(tt.release, tt.revision, tt.info); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestCompletionScripts(t *testing.T) {
	for shell, marker := range map[string]string{
		"bash": "complete -o default -F __start_chatq chatq",
		"zsh":  "#compdef chatq",
		"fish": "complete -c chatq",
	} {
		out, _, err := cli(t, "completion", shell)
		if err != nil || !strings.Contains(out, marker) {
			t.Errorf("chatq completion %s: %v, output lacks %q:\n%.300s", shell, err, marker, out)
		}
	}
	// The script asks chatq itself: subcommands and flag values complete.
	out, _, err := cli(t, "__complete", "dlq", "")
	if err != nil || !strings.Contains(out, "retry\t") {
		t.Errorf("completing chatq dlq: %v %q", err, out)
	}
	out, _, err = cli(t, "__complete", "send", "--priority", "")
	if err != nil || !strings.Contains(out, "bulk\n") || !strings.Contains(out, "transactional\n") {
		t.Errorf("completing chatq send --priority: %v %q", err, out)
	}
}

func TestHelpShowsFlagsWithTwoDashes(t *testing.T) {
	out, _, err := cli(t, "send", "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Usage: chatq send", "--to string", "--idempotency-key string", "--send-at string"} {
		if !strings.Contains(out, want) {
			t.Errorf("chatq send --help lacks %q:\n%s", want, out)
		}
	}
	out, _, _ = cli(t, "help")
	for _, want := range []string{"Usage: chatq <command>", "completion", "dlq", "--version"} {
		if !strings.Contains(out, want) {
			t.Errorf("chatq help lacks %q:\n%s", want, out)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{nil, "a command is required"},
		{[]string{"nope"}, `unknown command "nope"`},
		{[]string{"send", "--bogus"}, "send: unknown flag: --bogus"},
		{[]string{"send", "-to", "96996999699"}, "send: unknown shorthand flag"},
		{[]string{"status"}, "status: the message id is required"},
		{[]string{"status", "a", "b"}, `status: unexpected argument "b"`},
		{[]string{"worker", "now"}, `worker: unexpected argument "now"`},
		{[]string{"dlq"}, "dlq: a subcommand is required"},
		{[]string{"dlq", "purge"}, `dlq: unknown subcommand "purge"`},
		{[]string{"dlq", "list", "--limit", "many"}, `dlq list: invalid argument "many" for "--limit"`},
		{[]string{"dlq", "retry"}, "dlq retry: give ids, filters, or --all"},
		{[]string{"suppressions", "add", "12ab"}, "suppressions add: number"},
		{[]string{"templates", "submit", "--language", "en"}, "templates submit: --name is required"},
	}
	for _, tt := range tests {
		_, _, err := cli(t, tt.args...)
		if exitCode(err) != 2 || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("chatq %s: exit %d, %v; want 2 and %q", strings.Join(tt.args, " "), exitCode(err), err, tt.want)
		}
	}
	for _, args := range [][]string{{"--help"}, {"help"}, {"help", "dlq"}, {"dlq", "retry", "--help"}, {"completion", "--help"}} {
		if _, _, err := cli(t, args...); exitCode(err) != 0 {
			t.Errorf("chatq %s: %v, want exit 0", strings.Join(args, " "), err)
		}
	}
}
