package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// Names of the two baseline figures every rate is compared with: what bare
// asynq does on the same Redis in the same run.
const (
	BaselineEnqueue = "asynq_enqueue"
	BaselineProcess = "asynq_process"
)

// Target is a figure's goal: an upper or lower bound on its value, or on
// its ratio to its baseline.
type Target struct {
	// Max makes Bound an upper bound; otherwise it is a lower bound.
	Max bool `json:"max,omitempty"`
	// Bound is the limit, in the figure's unit or, with OfBaseline, as a
	// ratio.
	Bound float64 `json:"bound"`
	// OfBaseline compares the figure's ratio to its baseline, not its value.
	OfBaseline bool `json:"of_baseline,omitempty"`
}

func (t Target) met(value, ratio float64) bool {
	v := value
	if t.OfBaseline {
		v = ratio
	}
	if t.Max {
		return v <= t.Bound
	}
	return v >= t.Bound
}

func (t Target) describe(unit, baseline string) string {
	op := ">="
	if t.Max {
		op = "<="
	}
	if t.OfBaseline {
		return fmt.Sprintf("%s %s x %s", op, trimFloat(t.Bound), baseline)
	}
	return fmt.Sprintf("%s %s %s", op, formatValue(t.Bound, unit), unit)
}

// Figure is one number of the report.
type Figure struct {
	// Name is the figure's stable key in the JSON output.
	Name string `json:"name"`
	// Label says what was measured, for the table.
	Label string  `json:"label"`
	Value float64 `json:"value"`
	// Unit is "msg/s", "ms", "B/msg", "MiB", "%", "x" (a ratio), "cmd/msg"
	// (Redis commands per message) or "µs/msg" (CPU time per message).
	Unit string `json:"unit"`
	// Baseline names the baseline figure the value is divided by for Ratio;
	// empty for figures that are not rates.
	Baseline string `json:"baseline,omitempty"`
	// Ratio is Value divided by the baseline's value, once Finish ran.
	Ratio float64 `json:"ratio,omitempty"`
	// Target is the goal, if the figure has one.
	Target *Target `json:"target,omitempty"`
	// TargetText is the goal as the table shows it.
	TargetText string `json:"target_text,omitempty"`
	// Met tells whether the target is met, once Finish ran; nil without a
	// target or when the baseline is missing.
	Met *bool `json:"met,omitempty"`
	// Note is a remark shown under the table (how it was measured, why a
	// run did not count).
	Note string `json:"note,omitempty"`
}

// Machine describes where the figures were taken.
type Machine struct {
	GOOS         string `json:"goos"`
	GOARCH       string `json:"goarch"`
	CPUs         int    `json:"cpus"`
	GoVersion    string `json:"go_version"`
	RedisVersion string `json:"redis_version"`
	Hostname     string `json:"hostname,omitempty"`
	// LoadBefore and LoadAfter are the 1-minute load average when the run
	// began and ended (Linux only): other work on the machine skews every
	// figure.
	LoadBefore string `json:"load_before,omitempty"`
	LoadAfter  string `json:"load_after,omitempty"`
}

// Report is the outcome of a run: every figure, and the raw results they
// come from.
type Report struct {
	Started  time.Time     `json:"started"`
	Elapsed  time.Duration `json:"elapsed_ns"`
	Machine  Machine       `json:"machine"`
	Options  Options       `json:"options"`
	Figures  []Figure      `json:"figures"`
	Results  Results       `json:"results"`
	Failures []string      `json:"failures,omitempty"`
	// Skipped names measurements that could not run here, and why.
	Skipped []string `json:"skipped,omitempty"`
}

// Results holds each measurement's raw result; a measurement that did not
// run is nil.
type Results struct {
	AsynqEnqueue *Rate `json:"asynq_enqueue,omitempty"`
	// AsynqEnqueueAutopipelined is bare asynq through go-redis's
	// autopipeliner, as chatq's enqueue client runs it.
	AsynqEnqueueAutopipelined *Rate         `json:"asynq_enqueue_autopipelined,omitempty"`
	BullMQ                    *BullMQResult `json:"bullmq,omitempty"`
	AsynqProcess              *Rate         `json:"asynq_process,omitempty"`
	EnqueueSend               *Rate         `json:"enqueue_send,omitempty"`
	EnqueueBatch              *Rate         `json:"enqueue_batch,omitempty"`
	EnqueueHTTP               *Rate         `json:"enqueue_http,omitempty"`
	EnqueueHTTPBatch          *Rate         `json:"enqueue_http_batch,omitempty"`
	// AsynqProcessCommands is the Redis commands of the no-op processing.
	AsynqProcessCommands int64           `json:"asynq_process_commands,omitempty"`
	Deployed             *DeployedResult `json:"deployed,omitempty"`
	SendRate             *Rate           `json:"send_rate,omitempty"`
	Stream               *StreamResult   `json:"stream,omitempty"`
	Latency              *LatencyResult  `json:"latency,omitempty"`
	RedisMemory          *RedisMemory    `json:"redis_memory,omitempty"`
	WorkerMemory         *WorkerMemory   `json:"worker_memory,omitempty"`
}

func newMachine() Machine {
	host, _ := os.Hostname()
	return Machine{GOOS: runtime.GOOS, GOARCH: runtime.GOARCH, CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), Hostname: host, LoadBefore: loadAverage()}
}

// loadAverage returns the 1-minute load average, "" where the system does
// not tell it.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return ""
}

// Add appends figures.
func (r *Report) Add(figs ...Figure) { r.Figures = append(r.Figures, figs...) }

// Figure returns the figure of that name, or nil.
func (r *Report) Figure(name string) *Figure {
	for i := range r.Figures {
		if r.Figures[i].Name == name {
			return &r.Figures[i]
		}
	}
	return nil
}

// Finish computes every ratio to its baseline and checks the targets.
func (r *Report) Finish() {
	for i := range r.Figures {
		f := &r.Figures[i]
		f.Ratio, f.Met = 0, nil
		if f.Baseline != "" {
			if b := r.Figure(f.Baseline); b != nil && b.Value > 0 {
				f.Ratio = f.Value / b.Value
			}
		}
		if f.Target == nil {
			continue
		}
		f.TargetText = f.Target.describe(f.Unit, f.Baseline)
		if f.Target.OfBaseline && f.Ratio == 0 {
			continue // no baseline in this run: nothing to judge
		}
		met := f.Target.met(f.Value, f.Ratio)
		f.Met = &met
	}
}

// WriteTable prints the figures as an aligned table, then the notes.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tvalue\tvs asynq\ttarget\tmet")
	var notes []string
	for _, f := range r.Figures {
		ratio := ""
		if f.Ratio > 0 {
			ratio = fmt.Sprintf("%.2f x", f.Ratio)
		}
		met := ""
		if f.Met != nil {
			met = "no"
			if *f.Met {
				met = "yes"
			}
		}
		label := f.Label
		if f.Note != "" {
			notes = append(notes, fmt.Sprintf("[%d] %s", len(notes)+1, f.Note))
			label += fmt.Sprintf(" [%d]", len(notes))
		}
		fmt.Fprintf(tw, "%s\t%s %s\t%s\t%s\t%s\n", label, formatValue(f.Value, f.Unit), f.Unit, ratio, f.TargetText, met)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	if len(notes) > 0 {
		fmt.Fprintf(w, "\n%s\n", strings.Join(notes, "\n"))
	}
	m := r.Machine
	fmt.Fprintf(w, "\n%d CPUs, %s/%s, %s, Redis %s; run took %s", m.CPUs, m.GOOS, m.GOARCH, m.GoVersion, m.RedisVersion, r.Elapsed.Round(time.Second))
	if m.LoadBefore != "" {
		fmt.Fprintf(w, "; load average %s before, %s after", m.LoadBefore, m.LoadAfter)
	}
	fmt.Fprintln(w)
	for _, s := range r.Skipped {
		fmt.Fprintf(w, "not measured: %s\n", s)
	}
	for _, f := range r.Failures {
		fmt.Fprintf(w, "FAILED: %s\n", f)
	}
	return nil
}

// WriteJSON writes the whole report as indented JSON to path.
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// formatValue prints a figure with thousands separators for large numbers
// and a sensible number of decimals for small ones.
func formatValue(v float64, unit string) string {
	switch {
	case unit == "ms" && v < 100, unit == "MiB", unit == "%", unit == "cmd/msg":
		return trimFloat1(v)
	case math.Abs(v) >= 1000:
		return thousands(int64(math.Round(v)))
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.0f", v)
	default:
		return trimFloat(v)
	}
}

func thousands(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// trimFloat1 prints v with one decimal, none for a whole number.
func trimFloat1(v float64) string {
	s := fmt.Sprintf("%.1f", v)
	return strings.TrimSuffix(s, ".0")
}

func trimFloat(v float64) string {
	s := fmt.Sprintf("%.2f", v)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}
