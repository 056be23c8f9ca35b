package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/zap"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/metrics"
	"github.com/chatq/chatq/internal/poll"
	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/sandbox"
)

// scrape reads a /metrics endpoint and parses it as Prometheus's text
// format, failing the test if it is not.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("%s is not Prometheus text format: %v", url, err)
	}
	return families
}

// sum adds up a counter, gauge or histogram (its count) over the series
// whose labels include want.
func sum(families map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	f := families[name]
	if f == nil {
		return 0
	}
	total := 0.0
	for _, m := range f.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			match = match && labels[k] == v
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			total += m.Counter.GetValue()
		case m.Gauge != nil:
			total += m.Gauge.GetValue()
		case m.Histogram != nil:
			total += float64(m.Histogram.GetSampleCount())
		}
	}
	return total
}

// After an end-to-end run, /metrics adds up: every message enqueued was
// sent, dead-lettered or is still pending.
func TestMetricsAddUp(t *testing.T) {
	srv := redistest.Start(t)
	d := startDev(t, map[string]string{"CHATQ_REDIS_URL": srv.URL()})

	var ids []string
	post := func(body string) {
		code, rec := d.do(t, "POST", "/v1/messages", body)
		if code != http.StatusAccepted {
			t.Fatalf("POST: %d %v", code, rec)
		}
		ids = append(ids, rec["id"].(string))
	}
	for i := range 4 {
		post(fmt.Sprintf(`{"destination":"4420744%04d","payload":{"type":"text","message":"hi"}}`, 100+i))
	}
	post(`{"destination":"44207440100","payload":{"type":"text","message":"hi"},"priority":"bulk"}`)
	post(`{"destination":"44207440003","payload":{"type":"text","message":"hi"}}`) // a 500, then accepted
	post(`{"destination":"44207440002","payload":{"type":"text","message":"hi"}}`) // refused: dead
	post(`{"destination":"44207450002","payload":{"type":"text","message":"hi"},"priority":"bulk"}`)
	scheduled := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	post(`{"destination":"44207440200","payload":{"type":"text","message":"later"},"send_at":"` + scheduled + `"}`)

	final := map[string]bool{"read": true, "dead": true, "scheduled": true}
	for _, id := range ids {
		poll.Until(t, 30*time.Second, id+" settled", func() (bool, string) {
			_, rec := d.do(t, "GET", "/v1/messages/"+id, "")
			s, _ := rec["status"].(string)
			return final[s], s
		})
	}

	// A status is stored a moment before it is counted: scrape until the
	// last counts are in.
	var m map[string]*dto.MetricFamily
	poll.Until(t, 5*time.Second, "enqueued = sent + dead + pending", func() (bool, string) {
		m = scrape(t, d.api+"/metrics")
		enqueued := sum(m, "chatq_messages_enqueued_total", nil)
		sent := sum(m, "chatq_messages_sent_total", nil)
		dead := sum(m, "chatq_messages_dead_total", nil)
		const pending = 1 // the scheduled message
		reads := sum(m, "chatq_webhook_events_total", map[string]string{"type": "message-event.read"})
		return enqueued == 9 && sent == 6 && dead == 2 && enqueued == sent+dead+pending && reads == 6,
			fmt.Sprintf("enqueued %v, sent %v, dead %v, pending %d, read webhooks %v: want 9 = 6 + 2 + 1 and 6", enqueued, sent, dead, pending, reads)
	})
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"chatq_messages_enqueued_total", map[string]string{"priority": "bulk"}, 2},
		{"chatq_messages_sent_total", map[string]string{"priority": "bulk"}, 1},
		{"chatq_messages_dead_total", map[string]string{"class": "permanent", "code": "http_400"}, 2},
		{"chatq_send_retries_total", map[string]string{"class": "retryable"}, 1},
		// Every attempt: six accepted, one 500, two refusals.
		{"chatq_send_duration_seconds", nil, 9},
		{"chatq_send_duration_seconds", map[string]string{"outcome": "submitted"}, 6},
		{"chatq_enqueue_to_submit_seconds", map[string]string{"priority": "transactional"}, 5},
		{"chatq_circuit_open", nil, 0},
	} {
		if got := sum(m, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// Each read message had enqueued, sent, delivered and read webhooks.
	if got := sum(m, "chatq_webhook_events_total", map[string]string{"type": "message-event.read", "correlation": "matched"}); got != 6 {
		t.Errorf("matched read webhooks: %v, want 6", got)
	}
	if srv.Real() {
		// asynq's own collector: the queues, by state.
		if got := sum(m, "asynq_tasks_enqueued_total", map[string]string{"queue": "transactional", "state": "scheduled"}); got != 1 {
			t.Errorf("asynq_tasks_enqueued_total{transactional,scheduled} = %v, want 1", got)
		}
	}
}

// chatq worker, a process of its own, serves its own /metrics on
// CHATQ_METRICS_ADDR.
func TestWorkerServesItsMetrics(t *testing.T) {
	srv := redistest.Start(t)
	sb, err := sandbox.New(sandbox.Config{AppID: "app", AppSecret: "secret"}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	upstream := httptest.NewServer(sb)
	t.Cleanup(func() { upstream.Close(); sb.Close() })
	for k, v := range map[string]string{
		"CHATQ_REDIS_URL": srv.URL(), "CHATQ_CA_BASE_URL": upstream.URL, "CHATQ_CA_APP_ID": "app", "CHATQ_CA_APP_SECRET": "secret",
		"CHATQ_CA_SOURCE": "15550001234", "CHATQ_METRICS_ADDR": "127.0.0.1:0", "CHATQ_LOG_LEVEL": "warn", "CHATQ_CALLBACK_SECRET": "",
	} {
		t.Setenv(k, v)
	}
	ready := make(chan map[string]string, 1)
	var out syncBuffer
	p := &program{stdout: &out, stderr: &out, ready: func(a map[string]string) { ready <- a }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.run(ctx, []string{"worker"}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("chatq worker ended with %v", err)
		}
	})
	var addrs map[string]string
	select {
	case addrs = <-ready:
	case err := <-done:
		t.Fatalf("chatq worker stopped: %v\n%s", err, out.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("chatq worker not ready:\n%s", out.String())
	}
	if addrs["metrics"] == "" {
		t.Fatalf("no metrics address announced: %v", addrs)
	}

	client := enqueue.NewClient(srv.Client(t), enqueue.Config{})
	defer client.Close()
	rec, err := client.Send(context.Background(), &enqueue.Message{Destination: "4420755000", Payload: &enqueue.Text{Message: "hi"}})
	if err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 20*time.Second, "the message submitted", func() (bool, string) {
		r, err := client.Get(context.Background(), rec.ID)
		return err == nil && r.Status == "submitted", fmt.Sprint(r, err)
	})
	poll.Until(t, 5*time.Second, "the send counted", func() (bool, string) {
		m := scrape(t, addrs["metrics"]+"/metrics")
		return sum(m, "chatq_messages_sent_total", nil) == 1, fmt.Sprint(sum(m, "chatq_messages_sent_total", nil))
	})
	m := scrape(t, addrs["metrics"]+"/metrics")
	for name := range m {
		if strings.HasPrefix(name, "asynq_") {
			t.Errorf("a worker reports %s: the queue sizes are the API's to report", name)
		}
	}
	resp, err := http.Get(addrs["metrics"] + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz: %d", resp.StatusCode)
	}
	// Go's profiles only when CHATQ_PPROF asks for them.
	resp, err = http.Get(addrs["metrics"] + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("/debug/pprof/ without CHATQ_PPROF: %d, want 404", resp.StatusCode)
	}
}

func TestWorkerServesItsProfilesWhenAsked(t *testing.T) {
	srv := httptest.NewServer(metricsHandler(metrics.New(nil), true))
	defer srv.Close()
	for path, want := range map[string]string{"/debug/pprof/": "goroutine", "/debug/pprof/cmdline": "chatq", "/debug/pprof/profile?seconds=1": ""} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || len(b) == 0 || !strings.Contains(string(b), want) {
			t.Errorf("%s: %d, %d bytes, want 200 and %q", path, resp.StatusCode, len(b), want)
		}
	}
}

// dashboardCall calls the asynq dashboard with the API key as the Basic
// auth password.
func (d *devRun) dashboardCall(t *testing.T, method, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, d.api+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("ops", d.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The dashboard shows the internal callbacks queue too; in read-only mode
// it refuses to run a dead letter, otherwise its "run" retries it, as
// chatq dlq retry does.
func TestDashboard(t *testing.T) {
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	t.Cleanup(receiver.Close)
	for _, readOnly := range []bool{true, false} {
		t.Run(fmt.Sprintf("read-only %v", readOnly), func(t *testing.T) {
			srv := redistest.Start(t)
			if !srv.Real() {
				t.Skip("asynqmon needs a real Redis: no redis-server here")
			}
			d := startDev(t, map[string]string{"CHATQ_REDIS_URL": srv.URL(), "CHATQ_DASHBOARD_READONLY": fmt.Sprint(readOnly)})
			code, rec := d.do(t, "POST", "/v1/messages", `{"destination":"44207660002","payload":{"type":"text","message":"hi"},"callback_url":"`+receiver.URL+`"}`)
			if code != http.StatusAccepted {
				t.Fatalf("POST: %d %v", code, rec)
			}
			id := rec["id"].(string)
			poll.Until(t, 20*time.Second, "dead", func() (bool, string) {
				_, rec := d.do(t, "GET", "/v1/messages/"+id, "")
				return rec["status"] == "dead", fmt.Sprint(rec["status"])
			})
			code, body := d.dashboardCall(t, "GET", "/monitoring/api/queues")
			for _, q := range []string{"transactional", "callbacks"} {
				if code != http.StatusOK || !strings.Contains(body, `"queue":"`+q+`"`) {
					t.Errorf("dashboard queues lack %s: %d %s", q, code, body)
				}
			}
			code, body = d.dashboardCall(t, "POST", "/monitoring/api/queues/transactional/archived_tasks/"+id+":run")
			if readOnly {
				if code != http.StatusMethodNotAllowed {
					t.Errorf("run in read-only mode: %d %s, want 405", code, body)
				}
				if _, rec := d.do(t, "GET", "/v1/messages/"+id, ""); rec["status"] != "dead" || rec["attempts"] != 1.0 {
					t.Errorf("after a refused run: %v", rec)
				}
				return
			}
			if code != http.StatusNoContent {
				t.Fatalf("run: %d %s", code, body)
			}
			// The 0002 number is refused again: the record went back to
			// queued, was sent, and died again, its history saying so.
			poll.Until(t, 20*time.Second, "a second attempt", func() (bool, string) {
				_, rec := d.do(t, "GET", "/v1/messages/"+id, "")
				return rec["status"] == "dead" && rec["attempts"] == 2.0, fmt.Sprint(rec["status"], rec["attempts"])
			})
			_, rec = d.do(t, "GET", "/v1/messages/"+id, "")
			if h := fmt.Sprint(rec["history"]); !strings.Contains(h, "run again from the dead-letter queue") {
				t.Errorf("history %s does not note the run", h)
			}
			poll.Until(t, 5*time.Second, "a dead letter again", func() (bool, string) {
				_, page := d.do(t, "GET", "/v1/dead-letters", "")
				list, _ := page["dead_letters"].([]any)
				return len(list) == 1, fmt.Sprint(page)
			})
		})
	}
}
