package bench

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/store"
)

// DeployedResult is chatq measured as users run it: the sandbox, the API
// and the worker each a chatq process, on the private Redis.
type DeployedResult struct {
	// Messages is the size of the enqueue and send phases, LifeMessages of
	// the whole-life phase.
	Messages     int `json:"messages"`
	LifeMessages int `json:"life_messages"`
	// Enqueue is the messages' POST /v1/messages/batch, with no worker
	// running.
	Enqueue      Rate  `json:"enqueue"`
	EnqueueUsage Usage `json:"enqueue_usage"`
	// Send is the worker's rate over the queued messages, from the first
	// "submitted" time in their histories to the last (webhooks off).
	Send      Rate  `json:"send"`
	SendUsage Usage `json:"send_usage"`
	// LimitWaits is the worker's chatq_rate_limit_waits_total after the
	// send: zero when no limit held a send back.
	LimitWaits float64 `json:"limit_waits"`
	// Campaign is the send of as many marketing template messages, queued
	// with the worker stopped, by a worker started again (webhooks off):
	// what a campaign runs, the checks of the message's own (the marketing
	// cap, the template's state) included.
	Campaign      Rate  `json:"campaign"`
	CampaignUsage Usage `json:"campaign_usage"`
	// RedisTime is where Redis's time went in a text send, in a phase of
	// its own (every command logged).
	RedisTime RedisTime `json:"redis_time"`
	// LifeUsage is the whole life of LifeMessages messages with webhooks
	// on: posted to the API, sent by the worker, and each of their four
	// webhooks received and correlated.
	LifeUsage Usage `json:"life_usage"`
	// LifeRecordBytes is MEMORY USAGE of a read message's record (the
	// median of a sample of them) at the end of the whole life: what the
	// records kept for CHATQ_RECORD_TTL each cost. LifeRecordEncoding is
	// its hash's encoding (listpack or hashtable).
	LifeRecordBytes    int64  `json:"life_record_bytes"`
	LifeRecordEncoding string `json:"life_record_encoding"`
	// BullMQ is the minimal BullMQ sender on the same Redis and sandbox,
	// nil when BullMQ is not installed.
	BullMQ *BullMQSend `json:"bullmq,omitempty"`
	// Rounds are the send and the BullMQ sender's measured Rounds times
	// (DeployedOptions.Rounds above one, BullMQ installed), the first
	// round's (Send, BullMQ) first.
	Rounds []Round `json:"rounds,omitempty"`
}

// Round is one measurement of the text send beside the minimal BullMQ
// sender's: their rates, one phase after the other on the same machine,
// and what each phase cost.
type Round struct {
	Send        Rate  `json:"send"`
	SendUsage   Usage `json:"send_usage"`
	BullMQ      Rate  `json:"bullmq"`
	BullMQUsage Usage `json:"bullmq_usage"`
}

// BullMQSend is the minimal BullMQ sender's run (bullmq/send.mjs).
type BullMQSend struct {
	Version string `json:"version"`
	Send    Rate   `json:"send"`
	// Usage counts the send phase alone; its CPU has "bullmq" (the Node.js
	// process's own count), "redis" and "sandbox".
	Usage Usage `json:"usage"`
}

// DeployedOptions shape the Deployed measurement.
type DeployedOptions struct {
	// Chatq is the chatq binary to start.
	Chatq string
	// Messages are enqueued then sent; LifeMessages live a whole life with
	// their webhooks.
	Messages, LifeMessages int
	// BatchSize and BatchCallers shape the POSTs to /v1/messages/batch.
	BatchSize, BatchCallers int
	// Concurrency is the worker's, and the BullMQ sender's.
	Concurrency int
	// WebhookDelay is the sandbox's delay between a message's webhooks.
	WebhookDelay time.Duration
	// BullMQDir holds send.mjs and its packages; when BullMQ is missing
	// there, the peer is left out and BullMQ is nil.
	BullMQDir string
	// WorkerProfile, if set, is where the worker's CPU profile of the send
	// phase is written (from its /debug/pprof/profile, CHATQ_PPROF).
	WorkerProfile string
	// Rounds is how many times the send is measured beside the BullMQ
	// sender's: the two rates' ratio moves with the machine's speed
	// between their phases, and their median over rounds less.
	Rounds int
}

// Deployed measures chatq as deployed: "chatq sandbox" and "chatq api"
// start, Messages are posted to the API in batches, then (if installed) the
// minimal BullMQ sender sends as many through the same sandbox, then
// "chatq worker" starts (its default configuration, with a sender rate far
// above the load) and sends the queued messages. Last, with the sandbox's
// webhooks pointed at the API, LifeMessages are posted and followed until
// their four webhooks are in. Each phase counts Redis's commands and each
// process's CPU time.
func Deployed(ctx context.Context, env *Env, o DeployedOptions) (DeployedResult, error) {
	res := DeployedResult{Messages: o.Messages, LifeMessages: o.LifeMessages}
	if err := env.flush(ctx); err != nil {
		return res, err
	}
	d, err := startDeployment(ctx, env, o.Chatq, o.Concurrency, o.WebhookDelay)
	if err != nil {
		return res, err
	}
	defer d.close()
	rdb := env.Redis.Client(4)
	defer rdb.Close()
	rpid, err := redisPID(ctx, rdb)
	if err != nil {
		return res, err
	}
	pids := func() map[string]int {
		p := d.pids()
		p["redis"] = rpid
		return p
	}

	m, err := startMeter(ctx, rdb, pids)
	if err != nil {
		return res, err
	}
	start := time.Now()
	ids, err := d.postBatches(ctx, textMessage, 0, o.Messages, o.BatchSize, o.BatchCallers, plainPrefix, "")
	if err != nil {
		return res, fmt.Errorf("deployed: enqueue: %w", err)
	}
	res.Enqueue = Rate{Count: o.Messages, Elapsed: time.Since(start)}
	if res.EnqueueUsage, err = m.stop(ctx); err != nil {
		return res, err
	}
	env.logf("deployed: %d messages posted to the API in %s: %.0f/s", o.Messages, res.Enqueue.Elapsed.Round(time.Millisecond), res.Enqueue.PerSecond())

	if err := BullMQInstalled(o.BullMQDir); err == nil {
		b, err := bullmqSend(ctx, env, d, rdb, rpid, o)
		if err != nil {
			return res, err
		}
		res.BullMQ = &b
	} else {
		env.logf("deployed: the BullMQ sender is left out: %v", err)
	}

	if m, err = startMeter(ctx, rdb, pids); err != nil {
		return res, err
	}
	if o.WorkerProfile != "" {
		d.base["CHATQ_PPROF"] = "true"
	}
	if err := d.startWorker(ctx); err != nil {
		return res, fmt.Errorf("deployed: %w", err)
	}
	profiled := make(chan error, 1)
	if o.WorkerProfile != "" {
		go func() { profiled <- d.profileWorker(ctx, o.WorkerProfile, sendSeconds(o.Messages)) }()
	} else {
		profiled <- nil
	}
	if err := d.waitSent(ctx, o.Messages); err != nil {
		return res, fmt.Errorf("deployed: send: %w", err)
	}
	if res.SendUsage, err = m.stop(ctx); err != nil {
		return res, err
	}
	if err := <-profiled; err != nil {
		return res, fmt.Errorf("deployed: worker profile: %w", err)
	}
	if res.LimitWaits, err = d.workerMetric(ctx, "chatq_rate_limit_waits_total"); err != nil {
		return res, err
	}
	first, last, err := submittedSpan(ctx, store.New(rdb, store.Config{}), ids)
	if err != nil {
		return res, fmt.Errorf("deployed: send: %w", err)
	}
	res.Send = Rate{Count: o.Messages - 1, Elapsed: last.Sub(first)}
	env.logf("deployed: the worker sent %d messages in %s: %.0f/s; %.1f Redis commands per message", o.Messages,
		res.Send.Elapsed.Round(time.Millisecond), res.Send.PerSecond(), perMessage(res.SendUsage.Commands, o.Messages))
	if b := res.BullMQ; b != nil && o.Rounds > 1 {
		res.Rounds = append(res.Rounds, Round{Send: res.Send, SendUsage: res.SendUsage, BullMQ: b.Send, BullMQUsage: b.Usage})
		for k := 2; k <= o.Rounds; k++ {
			r, err := sendRound(ctx, env, d, rdb, rpid, pids, o, k)
			if err != nil {
				return res, fmt.Errorf("deployed: round %d: %w", k, err)
			}
			res.Rounds = append(res.Rounds, r)
		}
	}

	if err := campaignPhase(ctx, d, rdb, pids, o, &res); err != nil {
		return res, fmt.Errorf("deployed: campaign: %w", err)
	}
	if res.RedisTime, err = redisTimePhase(ctx, d, rdb, o.Messages+o.LifeMessages, min(o.Messages, 5000), o); err != nil {
		return res, fmt.Errorf("deployed: Redis's time: %w", err)
	}
	if err := lifePhase(ctx, d, rdb, pids, o, &res); err != nil {
		return res, fmt.Errorf("deployed: whole life: %w", err)
	}
	return res, nil
}

// waitSent waits until the running worker counts n messages sent: its own
// count, read from its /metrics, touches no Redis.
func (d *deployment) waitSent(ctx context.Context, n int) error {
	return waitUntilErr(ctx, time.Duration(n)*5*time.Millisecond+time.Minute, func() (bool, error) {
		sent, err := d.workerMetric(ctx, "chatq_messages_sent_total")
		return sent >= float64(n), err
	})
}

// sendRound measures round k of the text send beside the BullMQ sender's
// as the first round does: the worker stopped, Messages posted (each to a
// recipient of its own, none of another phase's), the BullMQ sender's
// phase, then the worker started again until it sent them.
func sendRound(ctx context.Context, env *Env, d *deployment, rdb *redis.Client, rpid int, pids func() map[string]int, o DeployedOptions, k int) (Round, error) {
	var r Round
	if err := d.stop("worker"); err != nil {
		return r, err
	}
	ids, err := d.postBatches(ctx, textMessage, (k-2)*o.Messages, o.Messages, o.BatchSize, o.BatchCallers, roundPrefix, "")
	if err != nil {
		return r, err
	}
	b, err := bullmqSend(ctx, env, d, rdb, rpid, o)
	if err != nil {
		return r, err
	}
	r.BullMQ, r.BullMQUsage = b.Send, b.Usage
	if r.Send, r.SendUsage, err = sendQueued(ctx, d, rdb, pids, ids); err != nil {
		return r, err
	}
	env.logf("deployed: round %d: the worker sent %d messages at %.0f/s, the BullMQ sender %.0f/s: %.2f x", k, o.Messages,
		r.Send.PerSecond(), r.BullMQ.PerSecond(), r.Send.PerSecond()/r.BullMQ.PerSecond())
	return r, nil
}

// sendQueued starts the stopped worker and measures its send of the
// queued messages ids: from the first one submitted to the last, and what
// the processes spent from the worker's start until it counted them sent.
func sendQueued(ctx context.Context, d *deployment, rdb *redis.Client, pids func() map[string]int, ids []string) (Rate, Usage, error) {
	m, err := startMeter(ctx, rdb, pids)
	if err != nil {
		return Rate{}, Usage{}, err
	}
	if err := d.startWorker(ctx); err != nil {
		return Rate{}, Usage{}, err
	}
	if err := d.waitSent(ctx, len(ids)); err != nil {
		return Rate{}, Usage{}, err
	}
	u, err := m.stop(ctx)
	if err != nil {
		return Rate{}, Usage{}, err
	}
	first, last, err := submittedSpan(ctx, store.New(rdb, store.Config{}), ids)
	if err != nil {
		return Rate{}, Usage{}, err
	}
	return Rate{Count: len(ids) - 1, Elapsed: last.Sub(first)}, u, nil
}

// campaignPhase stops the worker, posts Messages marketing template
// messages (to recipients of their own), and measures their send by a
// worker started again, as the send phase measures text messages.
func campaignPhase(ctx context.Context, d *deployment, rdb *redis.Client, pids func() map[string]int, o DeployedOptions, res *DeployedResult) error {
	if err := d.stop("worker"); err != nil {
		return err
	}
	ids, err := d.postBatches(ctx, campaignMessage, 0, o.Messages, o.BatchSize, o.BatchCallers, campaignPrefix, enqueue.Bulk)
	if err != nil {
		return err
	}
	if res.Campaign, res.CampaignUsage, err = sendQueued(ctx, d, rdb, pids, ids); err != nil {
		return err
	}
	d.env.logf("deployed: the worker sent %d marketing template messages in %s: %.0f/s; %.1f Redis commands per message", o.Messages,
		res.Campaign.Elapsed.Round(time.Millisecond), res.Campaign.PerSecond(), perMessage(res.CampaignUsage.Commands, o.Messages))
	return nil
}

// lifePhase posts LifeMessages with the webhooks on and waits until every
// one of their webhooks was answered, then checks that each record ended
// "read".
func lifePhase(ctx context.Context, d *deployment, rdb *redis.Client, pids func() map[string]int, o DeployedOptions, res *DeployedResult) error {
	if err := d.registerWebhook(ctx, d.apiURL); err != nil {
		return err
	}
	before, err := d.sandboxStats(ctx)
	if err != nil {
		return err
	}
	m, err := startMeter(ctx, rdb, pids)
	if err != nil {
		return err
	}
	ids, err := d.postBatches(ctx, textMessage, o.Messages, o.LifeMessages, o.BatchSize, o.BatchCallers, plainPrefix, "")
	if err != nil {
		return err
	}
	want := before.WebhooksSent + 4*int64(o.LifeMessages)
	if err := waitUntilErr(ctx, time.Duration(o.LifeMessages)*10*time.Millisecond+time.Minute, func() (bool, error) {
		st, err := d.sandboxStats(ctx)
		if st.WebhooksFailed+st.WebhooksDropped > before.WebhooksFailed+before.WebhooksDropped {
			return false, fmt.Errorf("the sandbox lost webhooks: %+v", st)
		}
		return st.WebhooksSent >= want && st.WebhooksPending == 0, err
	}); err != nil {
		return err
	}
	if res.LifeUsage, err = m.stop(ctx); err != nil {
		return err
	}
	recs, err := waitRecords(ctx, store.New(rdb, store.Config{}), ids, 30*time.Second, complete)
	if err != nil {
		return err
	}
	for _, r := range recs {
		if !correlated(r) {
			return fmt.Errorf("record %s: not every webhook applied once: %+v", r.ID, r.History)
		}
	}
	if res.LifeRecordBytes, res.LifeRecordEncoding, err = recordMemory(ctx, rdb, ids); err != nil {
		return err
	}
	d.env.logf("deployed: %d messages through their whole life, four webhooks each: %.1f Redis commands per message, %d bytes a record (%s)",
		o.LifeMessages, perMessage(res.LifeUsage.Commands, o.LifeMessages), res.LifeRecordBytes, res.LifeRecordEncoding)
	return nil
}

// recordMemory returns the median MEMORY USAGE of the records of up to 101
// of ids, spread over them, and the encoding of that record's hash.
func recordMemory(ctx context.Context, rdb *redis.Client, ids []string) (int64, string, error) {
	step := max(len(ids)/101, 1)
	type sample struct {
		id    string
		bytes int64
	}
	var samples []sample
	for i := 0; i < len(ids) && len(samples) < 101; i += step {
		key := "chatq:m:{" + ids[i] + "}"
		n, err := rdb.MemoryUsage(ctx, key).Result()
		if err != nil {
			return 0, "", fmt.Errorf("memory of record %s: %w", ids[i], err)
		}
		samples = append(samples, sample{key, n})
	}
	if len(samples) == 0 {
		return 0, "", nil
	}
	slices.SortFunc(samples, func(a, b sample) int { return cmp.Compare(a.bytes, b.bytes) })
	mid := samples[len(samples)/2]
	enc, err := rdb.ObjectEncoding(ctx, mid.id).Result()
	if err != nil {
		return 0, "", fmt.Errorf("encoding of record %s: %w", mid.id, err)
	}
	return mid.bytes, enc, nil
}

// bullmqSend runs the minimal BullMQ sender: its jobs added, then sent
// through the deployment's sandbox with Redis's commands counted.
func bullmqSend(ctx context.Context, env *Env, d *deployment, rdb *redis.Client, rpid int, o DeployedOptions) (BullMQSend, error) {
	host, port, err := net.SplitHostPort(env.Redis.Addr())
	if err != nil {
		return BullMQSend{}, fmt.Errorf("bullmq sender: redis address: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute+time.Duration(o.Messages)*5*time.Millisecond)
	defer cancel()
	script := filepath.Join(o.BullMQDir, "send.mjs")
	common := []string{script, "--host", host, "--port", port, "--jobs", strconv.Itoa(o.Messages)}
	run := func(args ...string) ([]byte, error) {
		cmd := exec.CommandContext(ctx, "node", append(common, args...)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("bullmq sender: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
		}
		return stdout.Bytes(), nil
	}
	if _, err := run("--phase", "add"); err != nil {
		return BullMQSend{}, err
	}
	sandboxOnly := func() map[string]int { return map[string]int{"sandbox": d.pids()["sandbox"], "redis": rpid} }
	m, err := startMeter(ctx, rdb, sandboxOnly)
	if err != nil {
		return BullMQSend{}, err
	}
	out, err := run("--phase", "send", "--concurrency", strconv.Itoa(o.Concurrency),
		"--upstream", d.sandboxURL, "--app-id", appID, "--app-secret", appSecret)
	if err != nil {
		return BullMQSend{}, err
	}
	u, err := m.stop(ctx)
	if err != nil {
		return BullMQSend{}, err
	}
	var got struct {
		Jobs        int     `json:"jobs"`
		Failed      int     `json:"failed"`
		Stored      int     `json:"stored"`
		SendSeconds float64 `json:"send_seconds"`
		CPUMs       float64 `json:"cpu_ms"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		return BullMQSend{}, fmt.Errorf("bullmq sender: read its answer %q: %w", bytes.TrimSpace(out), err)
	}
	if got.Jobs != o.Messages || got.Failed != 0 || got.Stored != o.Messages || got.SendSeconds <= 0 {
		return BullMQSend{}, fmt.Errorf("bullmq sender: answer %s does not cover %d jobs sent and stored", bytes.TrimSpace(out), o.Messages)
	}
	u.CPU["bullmq"] = time.Duration(got.CPUMs * float64(time.Millisecond))
	version, err := bullmqVersion(o.BullMQDir)
	if err != nil {
		return BullMQSend{}, err
	}
	b := BullMQSend{Version: version, Send: Rate{Count: o.Messages, Elapsed: seconds64(got.SendSeconds)}, Usage: u}
	env.logf("deployed: BullMQ %s sender: %d jobs sent in %s: %.0f/s; %.1f Redis commands per job", version, o.Messages,
		b.Send.Elapsed.Round(time.Millisecond), b.Send.PerSecond(), perMessage(u.Commands, o.Messages))
	return b, nil
}

// submittedSpan waits until every record of ids is "submitted" and returns
// the first and last times one became so.
func submittedSpan(ctx context.Context, st *store.Store, ids []string) (first, last time.Time, err error) {
	recs, err := waitRecords(ctx, st, ids, time.Minute, func(r *store.Record) bool {
		_, ok := historyAt(r, store.Submitted)
		return ok
	})
	if err != nil {
		return first, last, fmt.Errorf("wait for submitted: %w", err)
	}
	for _, r := range recs {
		at, _ := historyAt(r, store.Submitted)
		if first.IsZero() || at.Before(first) {
			first = at
		}
		if at.After(last) {
			last = at
		}
	}
	if !last.After(first) {
		return first, last, errors.New("every message submitted at the same instant")
	}
	return first, last, nil
}

// waitUntilErr polls cond every 100ms until it holds, it fails, or timeout
// passes. Not more often: cond reads a process's /metrics, whose CPU the
// measurement counts.
func waitUntilErr(ctx context.Context, timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not done after %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func perMessage(n int64, messages int) float64 {
	if messages == 0 {
		return 0
	}
	return float64(n) / float64(messages)
}

// bullmqVersion returns the version of BullMQ installed in dir.
func bullmqVersion(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, "node_modules", "bullmq", "package.json"))
	if err != nil {
		return "", fmt.Errorf("bullmq version: %w", err)
	}
	var p struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return "", fmt.Errorf("bullmq version: %w", err)
	}
	return p.Version, nil
}

// sendSeconds is how long the worker's profile of a send of n messages
// lasts: about the send at a thousand messages a second, whole seconds,
// 60 at most. A faster send leaves the rest of it idle, which costs the
// profile no samples.
func sendSeconds(n int) int { return min(max(n/1000, 1), 60) }

// profileWorker writes a CPU profile of the worker of the given length to
// path, from its /debug/pprof/profile.
func (d *deployment) profileWorker(ctx context.Context, path string, seconds int) error {
	url := strings.TrimSuffix(d.metricsURL, "/metrics") + "/debug/pprof/profile?seconds=" + strconv.Itoa(seconds)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Timeout: time.Duration(seconds)*time.Second + time.Minute}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}
