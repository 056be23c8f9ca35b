// Command chatq is the outbound WhatsApp queue for the ChatArchitect API:
// one binary for the HTTP API, the workers, the sandbox and the operator's
// commands. Run "chatq help" for the list.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	p := &program{stdout: os.Stdout, stderr: os.Stderr, stdin: os.Stdin}
	if err := p.run(ctx, os.Args[1:]); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "chatq:", err)
		}
		os.Exit(exitCode(err))
	}
}

func exitCode(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var u usageError
	if errors.As(err, &u) {
		return 2
	}
	return 1
}

// usageError is a mistake in the command line.
type usageError string

func (e usageError) Error() string { return string(e) }

// program is one run of chatq; tests run it in-process.
type program struct {
	stdout, stderr io.Writer
	stdin          io.Reader
	// ready, if set, is told the addresses a long-running command serves
	// on once it serves them (tests listen on port 0).
	ready func(addrs map[string]string)
}

type command struct {
	summary string
	run     func(p *program, ctx context.Context, args []string) error
}

func commands() map[string]command {
	return map[string]command{
		"dev":     {"everything in one process: API, worker, dashboard, sandbox, embedded Redis", (*program).dev},
		"api":     {"HTTP API, webhook receiver", (*program).api},
		"worker":  {"send queued messages to ChatArchitect", (*program).worker},
		"sandbox": {"a standalone ChatArchitect sandbox for integration tests", (*program).sandbox},
		"send":    {"enqueue one message", (*program).send},
		"status":  {"show a message's job record", (*program).status},
		"pause":   {"stop sending for every worker (the circuit breaker, by hand)", (*program).pause},
		"resume":  {"start sending again after a pause or an account failure", (*program).resume},
		"bench":   {"measure chatq against bare asynq on this machine", (*program).bench},
		"dlq":     {"list, show, retry or delete dead letters", (*program).dlq},

		// Conversation policy (policy.go).
		"suppressions": {"list, add or remove suppressed recipients", (*program).suppressions},
		"templates":    {"list, submit or sync message templates", (*program).templates},
		"webhook":      {"register chatq's webhook with ChatArchitect", (*program).webhook},
	}
}

func (p *program) run(ctx context.Context, args []string) error {
	cmds := commands()
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		p.usage(cmds)
		if len(args) == 0 {
			return usageError("a command is required")
		}
		return nil
	}
	c, ok := cmds[args[0]]
	if !ok {
		p.usage(cmds)
		return usageError(fmt.Sprintf("unknown command %q", args[0]))
	}
	return c.run(p, ctx, args[1:])
}

func (p *program) usage(cmds map[string]command) {
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("chatq: the outbound WhatsApp queue for ChatArchitect\n\nUsage: chatq <command> [flags]\n\nCommands:\n")
	for _, n := range names {
		fmt.Fprintf(&b, "  %-9s %s\n", n, cmds[n].summary)
	}
	b.WriteString("\nEvery command has --help. Configuration comes from CHATQ_* environment variables (see README).\n")
	fmt.Fprint(p.stderr, b.String())
}

// flags returns a flag set for a command whose --help prints its usage.
func (p *program) flags(name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet("chatq "+name, flag.ContinueOnError)
	fs.SetOutput(p.stderr)
	fs.Usage = func() {
		fmt.Fprintf(p.stderr, "Usage: chatq %s\n\n", usage)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args and refuses positional arguments beyond want.
func parse(fs *flag.FlagSet, args []string, want int) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > want {
		return usageError(fmt.Sprintf("%s: unexpected argument %q", fs.Name(), fs.Arg(want)))
	}
	return nil
}
