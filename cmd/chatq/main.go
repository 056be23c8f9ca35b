// Command chatq is the outbound WhatsApp queue for the ChatArchitect API:
// one binary for the HTTP API, the workers, the sandbox and the operator's
// commands. Run "chatq help" for the list.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// Release builds set these: go build -ldflags "-X main.version=v1.2.0
// -X main.commit=$(git rev-parse HEAD)". Without them, --version reports
// what Go recorded of the build.
var version, commit string

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	p := &program{stdout: os.Stdout, stderr: os.Stderr, stdin: os.Stdin, version: version, commit: commit}
	cmd, err := p.execute(ctx, os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "chatq:", err)
		var u usageError
		if errors.As(err, &u) {
			fmt.Fprintf(os.Stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
		}
		os.Exit(exitCode(err))
	}
}

func exitCode(err error) int {
	if err == nil {
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
	// version and commit override what Go recorded of the build, for
	// --version.
	version, commit string
}

// run runs the command of args.
func (p *program) run(ctx context.Context, args []string) error {
	_, err := p.execute(ctx, args)
	return err
}

// execute runs the command of args and returns it, for the hint that
// follows a usage error.
func (p *program) execute(ctx context.Context, args []string) (*cobra.Command, error) {
	root := p.root()
	// cobra reads os.Args when given nil.
	root.SetArgs(append([]string{}, args...))
	return root.ExecuteContextC(ctx)
}

const usageTemplate = `Usage: {{.UseLine}}
{{with .Long}}
{{.}}
{{end}}{{if .HasAvailableSubCommands}}
Commands:
{{range .Commands}}{{if .IsAvailableCommand}}  {{rpad .Name .NamePadding}} {{.Short}}
{{end}}{{end}}{{end}}{{if .HasAvailableLocalFlags}}
Flags:
{{.LocalFlags.FlagUsagesWrapped 100}}{{end}}{{if not .HasParent}}
Every command has --help. Configuration comes from CHATQ_* environment variables (see README).
{{end}}`

// root is chatq's tree of commands, writing to p's output.
func (p *program) root() *cobra.Command {
	root := &cobra.Command{
		Use:     "chatq <command> [flags]",
		Short:   "the outbound WhatsApp queue for ChatArchitect",
		Long:    "The outbound WhatsApp queue for ChatArchitect.",
		Version: buildVersion(p.version, p.commit),
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError(fmt.Sprintf("unknown command %q", args[0]))
			}
			return nil
		},
		RunE: func(*cobra.Command, []string) error {
			return usageError("a command is required")
		},
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetOut(p.stdout)
	root.SetErr(p.stderr)
	root.SetIn(p.stdin)
	root.Flags().Bool("version", false, "print chatq's version and commit")
	root.SetVersionTemplate("chatq {{.Version}}\n")
	root.SetUsageTemplate(usageTemplate)
	root.SetHelpTemplate("{{.UsageString}}")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError(prefixed(c, err.Error()))
	})
	root.AddCommand(
		p.devCommand(),
		p.apiCommand(),
		p.workerCommand(),
		p.sandboxCommand(),
		p.sendCommand(),
		p.statusCommand(),
		p.pauseCommand(),
		p.resumeCommand(),
		p.benchCommand(),
		p.dlqCommand(),
		// Conversation policy (policy.go).
		p.suppressionsCommand(),
		p.templatesCommand(),
		p.webhookCommand(),
		p.campaignCommand(),
		// Senders and tenants (senders.go, keys.go).
		p.sendersCommand(),
		p.keysCommand(),
	)
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		if c.Name() == "completion" {
			c.Short = "print a shell completion script: bash, zsh, fish or powershell"
		}
	}
	walk(root, func(c *cobra.Command) { c.DisableFlagsInUseLine = true })
	return root
}

func walk(c *cobra.Command, f func(*cobra.Command)) {
	f(c)
	for _, sub := range c.Commands() {
		walk(sub, f)
	}
}

// command returns a command of the tree. use is its usage line, its name
// first; short its line in its parent's list of commands; long what its
// --help says of it.
func command(use, short, long string, args cobra.PositionalArgs, run func(cmd *cobra.Command, args []string) error) *cobra.Command {
	return &cobra.Command{Use: use, Short: short, Long: long, Args: args, RunE: run}
}

// group returns a command that only holds subcommands.
func group(use, short, long string, subs ...*cobra.Command) *cobra.Command {
	g := &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long,
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError(prefixed(cmd, "a subcommand is required"))
			}
			return usageError(prefixed(cmd, fmt.Sprintf("unknown subcommand %q", args[0])))
		},
	}
	g.AddCommand(subs...)
	return g
}

// prefixed is msg after the command's path without "chatq", as in
// "dlq show: the message id is required".
func prefixed(cmd *cobra.Command, msg string) string {
	if !cmd.HasParent() {
		return msg
	}
	return strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()+" ") + ": " + msg
}

// noArgs refuses positional arguments.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageError(prefixed(cmd, fmt.Sprintf("unexpected argument %q", args[0])))
	}
	return nil
}

// oneArg wants exactly one positional argument, what.
func oneArg(what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) == 0:
			return usageError(prefixed(cmd, what+" is required"))
		case len(args) > 1:
			return usageError(prefixed(cmd, fmt.Sprintf("unexpected argument %q", args[1])))
		}
		return nil
	}
}

// choices completes a flag's value from a fixed list.
func choices(values ...string) cobra.CompletionFunc {
	return cobra.FixedCompletions(values, cobra.ShellCompDirectiveNoFileComp)
}
