package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/chatq/chatq/enqueue"
)

// EnqueueSend measures enqueue.Client.Send: n text messages, one call
// each, from goroutines goroutines. Each call validates the message,
// writes its record and enqueues its task.
func EnqueueSend(ctx context.Context, env *Env, n, goroutines int) (Rate, error) {
	if err := env.flush(ctx); err != nil {
		return Rate{}, err
	}
	s := newStack(env)
	defer s.close()
	client := s.enqueueClient(goroutines+8, enqueue.Config{})
	msgs := textMessages(0, n, "")
	start := time.Now()
	err := parallel(ctx, n, goroutines, func(ctx context.Context, i int) error {
		if _, err := client.Send(ctx, msgs[i]); err != nil {
			return fmt.Errorf("enqueue send: %w", err)
		}
		return nil
	})
	r := Rate{Count: n, Elapsed: time.Since(start)}
	if err != nil {
		return Rate{}, err
	}
	env.logf("enqueue, library Send: %d messages from %d goroutines in %s: %.0f/s", n, goroutines, r.Elapsed.Round(time.Millisecond), r.PerSecond())
	return r, nil
}

// EnqueueBatch measures enqueue.Client.SendBatch: n text messages in
// batches of size, callers batches at a time.
func EnqueueBatch(ctx context.Context, env *Env, n, size, callers int) (Rate, error) {
	if err := env.flush(ctx); err != nil {
		return Rate{}, err
	}
	s := newStack(env)
	defer s.close()
	client := s.enqueueClient(callers*32+8, enqueue.Config{})
	batches := splitBatches(n, size)
	msgs := make([][]*enqueue.Message, len(batches))
	for i, b := range batches {
		msgs[i] = textMessages(b.from, b.n, "")
	}
	start := time.Now()
	err := parallel(ctx, len(batches), callers, func(ctx context.Context, i int) error {
		res, err := client.SendBatch(ctx, msgs[i])
		if err != nil {
			return fmt.Errorf("enqueue batch: %w", err)
		}
		for _, r := range res {
			if r.Err != nil {
				return fmt.Errorf("enqueue batch: %w", r.Err)
			}
		}
		return nil
	})
	r := Rate{Count: n, Elapsed: time.Since(start)}
	if err != nil {
		return Rate{}, err
	}
	env.logf("enqueue, library SendBatch: %d messages in batches of %d, %d at a time, in %s: %.0f/s", n, size, callers, r.Elapsed.Round(time.Millisecond), r.PerSecond())
	return r, nil
}

// EnqueueHTTP measures POST /v1/messages on a real loopback server: n text
// messages from goroutines clients with keep-alive connections.
func EnqueueHTTP(ctx context.Context, env *Env, n, goroutines int) (Rate, error) {
	bodies := make([][]byte, n)
	for i := range bodies {
		b, err := messageBody(i, "")
		if err != nil {
			return Rate{}, err
		}
		bodies[i] = b
	}
	r, err := postAll(ctx, env, "/v1/messages", bodies, goroutines, http.StatusAccepted)
	if err != nil {
		return Rate{}, fmt.Errorf("enqueue http: %w", err)
	}
	r.Count = n
	env.logf("enqueue, POST /v1/messages: %d messages from %d clients in %s: %.0f/s", n, goroutines, r.Elapsed.Round(time.Millisecond), r.PerSecond())
	return r, nil
}

// EnqueueHTTPBatch measures POST /v1/messages/batch: n text messages in
// batches of size, from callers clients at a time.
func EnqueueHTTPBatch(ctx context.Context, env *Env, n, size, callers int) (Rate, error) {
	batches := splitBatches(n, size)
	bodies := make([][]byte, len(batches))
	for i, b := range batches {
		body, err := batchBody(b.from, b.n, "")
		if err != nil {
			return Rate{}, err
		}
		bodies[i] = body
	}
	r, err := postAll(ctx, env, "/v1/messages/batch", bodies, callers, http.StatusOK)
	if err != nil {
		return Rate{}, fmt.Errorf("enqueue http batch: %w", err)
	}
	r.Count = n
	env.logf("enqueue, POST /v1/messages/batch: %d messages in batches of %d, %d at a time, in %s: %.0f/s", n, size, callers, r.Elapsed.Round(time.Millisecond), r.PerSecond())
	return r, nil
}

// postAll starts the API and posts every body to path from goroutines
// clients, each answer expected to be want; a batch answer must hold no
// error.
func postAll(ctx context.Context, env *Env, path string, bodies [][]byte, goroutines, want int) (Rate, error) {
	if err := env.flush(ctx); err != nil {
		return Rate{}, err
	}
	s := newStack(env)
	defer s.close()
	base, err := s.startAPI(s.enqueueClient(64, enqueue.Config{}), nil)
	if err != nil {
		return Rate{}, err
	}
	tr := &http.Transport{MaxIdleConns: goroutines, MaxIdleConnsPerHost: goroutines, IdleConnTimeout: time.Minute}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: time.Minute}
	errorMark := []byte(`"error"`)
	start := time.Now()
	err = parallel(ctx, len(bodies), goroutines, func(ctx context.Context, i int) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, bytes.NewReader(bodies[i]))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+apiKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		answer, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if resp.StatusCode != want || bytes.Contains(answer, errorMark) {
			return fmt.Errorf("POST %s: status %d: %.300s", path, resp.StatusCode, answer)
		}
		return nil
	})
	if err != nil {
		return Rate{}, err
	}
	return Rate{Elapsed: time.Since(start)}, nil
}

type batchRange struct{ from, n int }

func splitBatches(n, size int) []batchRange {
	size = max(size, 1)
	var out []batchRange
	for from := 0; from < n; from += size {
		out = append(out, batchRange{from, min(size, n-from)})
	}
	return out
}
