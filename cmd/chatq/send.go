package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/chatq/chatq/enqueue"
)

// sendFlags are chatq send's flags.
type sendFlags struct {
	to, text, payload, whole, priority, idem, sendAt, batch string
}

func (p *program) sendCommand() *cobra.Command {
	var f sendFlags
	cmd := command("send [flags]", "enqueue one message",
		"Enqueues one message and prints its job record. Give --text for a text message, or\n"+
			"--payload with a ChatArchitect payload object, or --json with a whole message (\"-\" reads stdin).\nNeeds CHATQ_REDIS_URL.",
		noArgs, func(cmd *cobra.Command, _ []string) error { return p.send(cmd.Context(), f) })
	fs := cmd.Flags()
	fs.StringVar(&f.to, "to", "", "recipient number (8 to 15 digits, optional +)")
	fs.StringVar(&f.text, "text", "", "text of a text message")
	fs.StringVar(&f.payload, "payload", "", `payload JSON, e.g. '{"type":"image","originalUrl":"https://..."}'`)
	fs.StringVar(&f.whole, "json", "", `a whole message as POST /v1/messages takes it, or "-" for stdin`)
	fs.StringVar(&f.priority, "priority", "", "transactional (default) or bulk")
	fs.StringVar(&f.idem, "idempotency-key", "", "makes a repeated send return the first record")
	fs.StringVar(&f.sendAt, "send-at", "", "RFC 3339 time to send at")
	fs.StringVar(&f.batch, "batch-id", "", "campaign the message belongs to")
	_ = cmd.RegisterFlagCompletionFunc("priority", choices(string(enqueue.Transactional), string(enqueue.Bulk)))
	return cmd
}

func (p *program) send(ctx context.Context, f sendFlags) error {
	m, err := p.buildMessage(f.to, f.text, f.payload, f.whole)
	if err != nil {
		return err
	}
	if f.priority != "" {
		m.Priority = enqueue.Priority(f.priority)
	}
	if f.idem != "" {
		m.IdempotencyKey = f.idem
	}
	if f.batch != "" {
		m.BatchID = f.batch
	}
	if f.sendAt != "" {
		t, err := time.Parse(time.RFC3339, f.sendAt)
		if err != nil {
			return usageError(fmt.Sprintf("--send-at: not an RFC 3339 time: %q", f.sendAt))
		}
		m.SendAt = t
	}
	cfg, rdb, err := connect(ctx)
	if err != nil {
		return err
	}
	defer rdb.Close()
	client := enqueueClient(rdb, cfg)
	defer client.Close()
	rec, err := client.Send(ctx, m)
	if err != nil {
		return err
	}
	return p.printJSON(rec)
}

func (p *program) buildMessage(to, text, payload, whole string) (*enqueue.Message, error) {
	if whole != "" {
		if to != "" || text != "" || payload != "" {
			return nil, usageError("--json carries the whole message: do not combine it with --to, --text or --payload")
		}
		var data []byte
		var err error
		if whole == "-" {
			data, err = io.ReadAll(io.LimitReader(p.stdin, 1<<20))
		} else {
			data = []byte(whole)
		}
		if err != nil {
			return nil, fmt.Errorf("read message: %w", err)
		}
		return enqueue.DecodeMessage(data)
	}
	if to == "" {
		return nil, usageError("--to is required (or --json)")
	}
	m := &enqueue.Message{Destination: to}
	switch {
	case text != "" && payload != "":
		return nil, usageError("give --text or --payload, not both")
	case text != "":
		m.Payload = &enqueue.Text{Message: text}
	case payload != "":
		pl, err := enqueue.ParsePayload([]byte(payload))
		if err != nil {
			return nil, err
		}
		m.Payload = pl
	default:
		return nil, usageError("--text or --payload is required")
	}
	return m, nil
}

func (p *program) statusCommand() *cobra.Command {
	return command("status ID", "show a message's job record", "Prints a message's job record. Needs CHATQ_REDIS_URL.",
		oneArg("the message id"), func(cmd *cobra.Command, args []string) error { return p.status(cmd.Context(), args[0]) })
}

func (p *program) status(ctx context.Context, id string) error {
	cfg, rdb, err := connect(ctx)
	if err != nil {
		return err
	}
	defer rdb.Close()
	client := enqueueClient(rdb, cfg)
	defer client.Close()
	rec, err := client.Get(ctx, id)
	if errors.Is(err, enqueue.ErrNotFound) {
		return fmt.Errorf("no message with id %q", id)
	}
	if err != nil {
		return err
	}
	return p.printJSON(rec)
}

func (p *program) printJSON(v any) error {
	enc := json.NewEncoder(p.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
