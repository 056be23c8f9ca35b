// Package metrics defines chatq's Prometheus metrics. One *Metrics is built
// per process and handed to the components that count; a nil *Metrics
// counts nothing, so tests and library users need not build one.
package metrics

import (
	"context"
	"net/http"
	"time"

	"github.com/hibiken/asynq"
	asynqmetrics "github.com/hibiken/asynq/x/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds every chatq metric.
type Metrics struct {
	reg *prometheus.Registry

	enqueued        *prometheus.CounterVec
	submitted       *prometheus.CounterVec
	dead            *prometheus.CounterVec
	deliveryFailed  *prometheus.CounterVec
	retries         *prometheus.CounterVec
	possibleDupes   *prometheus.CounterVec
	sendSeconds     *prometheus.HistogramVec
	enqueueToSubmit *prometheus.HistogramVec
	limitWaits      *prometheus.CounterVec
	limitWaitSecs   *prometheus.HistogramVec
	webhookEvents   *prometheus.CounterVec
	circuitOpen     prometheus.Gauge
	callbacks       *prometheus.CounterVec
	billable        *prometheus.CounterVec
	// The per-sender series: one per configured sender, never per
	// recipient.
	senderSent    *prometheus.CounterVec
	senderRetries *prometheus.CounterVec
	senderDead    *prometheus.CounterVec
	senderCircuit *prometheus.GaugeVec
	handlerRuns   prometheus.Counter
}

// New returns the metrics registered on a new registry, with Go runtime and
// process collectors. With an inspector, asynq's own queue collector
// (queue sizes by state, latency, pause state) is registered too.
func New(inspector *asynq.Inspector) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		reg: reg,
		enqueued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatq_messages_enqueued_total", Help: "Messages accepted for sending, by priority.",
		}, []string{"priority"}),
		submitted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatq_messages_sent_total", Help: "Messages accepted by ChatArchitect (status submitted), by priority.",
		}, []string{"priority"}),
		dead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatq_messages_dead_total", Help: "Messages chatq gave up on (dead letters), by error class and code.",
		}, []string{"class", "code"}),
		deliveryFailed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatq_messages_failed_total", Help: "Messages whose delivery failed after acceptance (failed webhooks), by class and code.",
		}, []string{"class", "code"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatq_send_retries_total", Help: "Send attempts that will be retried, by error class.",
		}, []string{"class"}),
		possibleDupes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatq_possible_duplicates_total", Help: "Sends that may duplicate the message, by cause: timeout (a send timed out after its request was written, or a 2xx answer came without a messageId, and is retried), lost (a send whose earlier attempt's outcome was never recorded: its worker was lost, or Redis was away).",
		}, []string{"cause"}),
		sendSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "chatq_send_duration_seconds", Help: "Duration of the upstream send call, by outcome.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"outcome"}),
		enqueueToSubmit: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "chatq_enqueue_to_submit_seconds", Help: "Time from enqueue to acceptance by ChatArchitect, by priority.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 1800},
		}, []string{"priority"}),
		limitWaits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatq_rate_limit_waits_total", Help: "Waits of sends for a limit, by limit (rate, pair, recipient, blocked, daily, circuit, paused); a send may wait more than once.",
		}, []string{"limit"}),
		limitWaitSecs: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "chatq_rate_limit_wait_seconds", Help: "Time sends waited for a limit, by limit.",
			Buckets: []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 60, 600, 3600},
		}, []string{"limit"}),
		webhookEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatq_webhook_events_total", Help: "ChatArchitect webhooks received, by type and correlation outcome (matched, parked, unknown, duplicate, ignored).",
		}, []string{"type", "correlation"}),
		circuitOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "chatq_circuit_open", Help: "1 while sending is paused by the circuit breaker or an operator, else 0.",
		}),
		callbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatq_callbacks_total", Help: "Status callback and inbound forwarding attempts, by outcome.",
		}, []string{"outcome"}),
		billable: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatq_billable_messages_total", Help: "Messages a status webhook reported billable, each counted once, by pricing category.",
		}, []string{"category"}),
		senderSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatq_sender_messages_sent_total", Help: "Messages accepted by ChatArchitect, by sender (business number).",
		}, []string{"sender"}),
		senderRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatq_sender_retries_total", Help: "Send attempts that will be retried, by sender and error class.",
		}, []string{"sender", "class"}),
		senderDead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chatq_sender_messages_dead_total", Help: "Dead letters, by sender and error class.",
		}, []string{"sender", "class"}),
		senderCircuit: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "chatq_sender_circuit_open", Help: "1 while a sender's messages are held by its own circuit breaker (open or half-open), else 0, by sender.",
		}, []string{"sender"}),
		handlerRuns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chatq_send_handler_runs_total", Help: "Runs of the send handler: one per send attempt, plus one per wait that a message could not spend in its worker.",
		}),
	}
	reg.MustRegister(m.handlerRuns, m.billable, m.enqueued, m.submitted, m.dead, m.deliveryFailed, m.retries, m.possibleDupes,
		m.sendSeconds, m.enqueueToSubmit, m.limitWaits, m.limitWaitSecs, m.webhookEvents, m.circuitOpen, m.callbacks,
		m.senderSent, m.senderRetries, m.senderDead, m.senderCircuit,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if inspector != nil {
		reg.MustRegister(asynqmetrics.NewQueueMetricsCollector(inspector))
	}
	return m
}

// WaitCounts reads how many messages wait, by sender and reason.
type WaitCounts func(ctx context.Context) (map[string]map[string]int64, error)

// WatchWaiting registers the gauge of waiting messages, by reason and
// sender, read from Redis at each scrape: the process that reports it
// (the API) must be the only one, or the messages count as many times.
func (m *Metrics) WatchWaiting(read WaitCounts) {
	if m != nil {
		m.reg.MustRegister(&waitingCollector{read: read})
	}
}

var waitingDesc = prometheus.NewDesc("chatq_messages_waiting",
	"Messages waiting, their status unchanged, by reason (sender_rate, pair_rate, daily_limit, circuit_open, throttled, paused, conversation_order, marketing_capped, template_paused) and sender.",
	[]string{"reason", "sender"}, nil)

// waitingCollector reads the waiting messages at each scrape.
type waitingCollector struct{ read WaitCounts }

func (c *waitingCollector) Describe(ch chan<- *prometheus.Desc) { ch <- waitingDesc }

func (c *waitingCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	counts, err := c.read(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(waitingDesc, err)
		return
	}
	for sender, byReason := range counts {
		for reason, n := range byReason {
			ch <- prometheus.MustNewConstMetric(waitingDesc, prometheus.GaugeValue, float64(n), reason, sender)
		}
	}
}

// LaneSizes reads how many bulk messages each sender's lane holds.
type LaneSizes func(ctx context.Context) (map[string]int64, error)

// WatchLanes registers the gauge of the senders' lanes, read from Redis at
// each scrape, by the one process that reports it (the API), as
// WatchWaiting.
func (m *Metrics) WatchLanes(read LaneSizes) {
	if m != nil {
		m.reg.MustRegister(&laneCollector{read: read})
	}
}

var laneDesc = prometheus.NewDesc("chatq_lane_messages",
	"Bulk messages in their sender's lane (no asynq task yet: the sender's feeder writes it when the sender may send it), by sender; those that may go now also count in chatq_messages_waiting.",
	[]string{"sender"}, nil)

// laneCollector reads the lanes at each scrape.
type laneCollector struct{ read LaneSizes }

func (c *laneCollector) Describe(ch chan<- *prometheus.Desc) { ch <- laneDesc }

func (c *laneCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	sizes, err := c.read(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(laneDesc, err)
		return
	}
	for sender, n := range sizes {
		ch <- prometheus.MustNewConstMetric(laneDesc, prometheus.GaugeValue, float64(n), sender)
	}
}

// HandlerRun counts a run of the send handler.
func (m *Metrics) HandlerRun() {
	if m != nil {
		m.handlerRuns.Inc()
	}
}

// Handler serves the metrics in Prometheus's text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Enqueued counts a message accepted for sending.
func (m *Metrics) Enqueued(priority string) {
	if m != nil {
		m.enqueued.WithLabelValues(priority).Inc()
	}
}

// Submitted counts a message accepted upstream and how long it took since
// it was enqueued.
func (m *Metrics) Submitted(priority string, sinceEnqueue time.Duration) {
	if m != nil {
		m.submitted.WithLabelValues(priority).Inc()
		m.enqueueToSubmit.WithLabelValues(priority).Observe(sinceEnqueue.Seconds())
	}
}

// Dead counts a dead letter.
func (m *Metrics) Dead(class, code string) {
	if m != nil {
		m.dead.WithLabelValues(class, code).Inc()
	}
}

// DeliveryFailed counts a failed delivery reported by webhook.
func (m *Metrics) DeliveryFailed(class, code string) {
	if m != nil {
		m.deliveryFailed.WithLabelValues(class, code).Inc()
	}
}

// Retry counts a send that will be retried.
func (m *Metrics) Retry(class string, ambiguous bool) {
	if m != nil {
		m.retries.WithLabelValues(class).Inc()
		if ambiguous {
			m.possibleDupes.WithLabelValues("timeout").Inc()
		}
	}
}

// PossibleDuplicate counts a send of a message whose earlier attempt's
// outcome was never recorded (its worker was lost, or Redis was away): the
// earlier attempt may have been accepted, so this one may duplicate it.
func (m *Metrics) PossibleDuplicate() {
	if m != nil {
		m.possibleDupes.WithLabelValues("lost").Inc()
	}
}

// SendDuration observes one upstream send call.
func (m *Metrics) SendDuration(outcome string, d time.Duration) {
	if m != nil {
		m.sendSeconds.WithLabelValues(outcome).Observe(d.Seconds())
	}
}

// LimitWait counts a send held back by a limit, and for how long.
func (m *Metrics) LimitWait(limit string, d time.Duration) {
	if m != nil {
		m.limitWaits.WithLabelValues(limit).Inc()
		m.limitWaitSecs.WithLabelValues(limit).Observe(d.Seconds())
	}
}

// WebhookEvent counts a received webhook.
func (m *Metrics) WebhookEvent(typ, correlation string) {
	if m != nil {
		m.webhookEvents.WithLabelValues(typ, correlation).Inc()
	}
}

// CircuitOpen sets the circuit breaker gauge.
func (m *Metrics) CircuitOpen(open bool) {
	if m != nil {
		v := 0.0
		if open {
			v = 1
		}
		m.circuitOpen.Set(v)
	}
}

// Callback counts a callback delivery attempt ("delivered", "failed").
func (m *Metrics) Callback(outcome string) {
	if m != nil {
		m.callbacks.WithLabelValues(outcome).Inc()
	}
}

// Billable counts a message reported billable, under its pricing category.
// Categories other than Meta's known ones count as "other", so that
// whatever a webhook says cannot blow up the label space.
func (m *Metrics) Billable(category string) {
	if m != nil {
		switch category {
		case "marketing", "utility", "authentication", "authentication_international", "service", "marketing_lite":
		default:
			category = "other"
		}
		m.billable.WithLabelValues(category).Inc()
	}
}

// SenderSent counts a message of sender accepted upstream.
func (m *Metrics) SenderSent(sender string) {
	if m != nil {
		m.senderSent.WithLabelValues(sender).Inc()
	}
}

// SenderRetry counts a send of sender that will be retried.
func (m *Metrics) SenderRetry(sender, class string) {
	if m != nil {
		m.senderRetries.WithLabelValues(sender, class).Inc()
	}
}

// SenderDead counts a dead letter of sender.
func (m *Metrics) SenderDead(sender, class string) {
	if m != nil {
		m.senderDead.WithLabelValues(sender, class).Inc()
	}
}

// SenderCircuitOpen sets sender's circuit breaker gauge.
func (m *Metrics) SenderCircuitOpen(sender string, open bool) {
	if m != nil {
		v := 0.0
		if open {
			v = 1
		}
		m.senderCircuit.WithLabelValues(sender).Set(v)
	}
}
