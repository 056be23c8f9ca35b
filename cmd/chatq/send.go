package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/chatq/chatq/enqueue"
)

func (p *program) send(ctx context.Context, args []string) error {
	fs := p.flags("send", "send [flags]\n\nEnqueues one message and prints its job record. Give --text for a text message, or\n"+
		"--payload with a ChatArchitect payload object, or --json with a whole message (\"-\" reads stdin).\nNeeds CHATQ_REDIS_URL.")
	to := fs.String("to", "", "recipient number (8 to 15 digits, optional +)")
	text := fs.String("text", "", "text of a text message")
	payload := fs.String("payload", "", `payload JSON, e.g. '{"type":"image","originalUrl":"https://..."}'`)
	whole := fs.String("json", "", `a whole message as POST /v1/messages takes it, or "-" for stdin`)
	priority := fs.String("priority", "", "transactional (default) or bulk")
	idem := fs.String("idempotency-key", "", "makes a repeated send return the first record")
	sendAt := fs.String("send-at", "", "RFC 3339 time to send at")
	batch := fs.String("batch-id", "", "campaign the message belongs to")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	m, err := p.buildMessage(*to, *text, *payload, *whole)
	if err != nil {
		return err
	}
	if *priority != "" {
		m.Priority = enqueue.Priority(*priority)
	}
	if *idem != "" {
		m.IdempotencyKey = *idem
	}
	if *batch != "" {
		m.BatchID = *batch
	}
	if *sendAt != "" {
		t, err := time.Parse(time.RFC3339, *sendAt)
		if err != nil {
			return usageError(fmt.Sprintf("--send-at: not an RFC 3339 time: %q", *sendAt))
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

func (p *program) status(ctx context.Context, args []string) error {
	fs := p.flags("status", "status ID\n\nPrints a message's job record. Needs CHATQ_REDIS_URL.")
	if err := parse(fs, args, 1); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError("status: the message id is required")
	}
	cfg, rdb, err := connect(ctx)
	if err != nil {
		return err
	}
	defer rdb.Close()
	client := enqueueClient(rdb, cfg)
	defer client.Close()
	rec, err := client.Get(ctx, fs.Arg(0))
	if errors.Is(err, enqueue.ErrNotFound) {
		return fmt.Errorf("no message with id %q", fs.Arg(0))
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
