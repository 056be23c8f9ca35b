package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/chatq/chatq/internal/poll"
	"github.com/chatq/chatq/internal/redistest"
)

func TestCampaignCSV(t *testing.T) {
	tests := []struct {
		name, csv string
		params    []string
		rows      []campaignRow
		bad       []rowError
		err       string
	}{
		{
			name:   "parameters in the file's order",
			csv:    "\uFEFFname,destination,code\nJohn,+447700900123,X1\n Ann , 447700900124 ,\"Y, 2\"\n",
			params: []string{"name", "code"},
			rows: []campaignRow{
				{line: 2, destination: "+447700900123", params: []string{"John", "X1"}},
				{line: 3, destination: "447700900124", params: []string{"Ann", "Y, 2"}},
			},
		},
		{
			name:   "numbered parameters",
			csv:    "2,Destination,1\nX1,447700900123,John\n",
			params: []string{"1", "2"},
			rows:   []campaignRow{{line: 2, destination: "447700900123", params: []string{"John", "X1"}}},
		},
		{
			name: "no parameters, a quoted line break, a row of the wrong length",
			csv:  "destination\n447700900123\n\"4477009\n00124\"\n447700900125,extra\n",
			rows: []campaignRow{
				{line: 2, destination: "447700900123"},
				{line: 3, destination: "4477009\n00124"},
			},
			bad: []rowError{{line: 5, reason: "has 2 fields, the header 1"}},
		},
		{name: "empty", csv: "", err: "the file is empty"},
		{name: "no destination", csv: "phone,name\n447700900123,John\n", err: `no destination column (it reads "phone,name")`},
		{name: "a number missing", csv: "destination,1,3\n447700900123,a,b\n", err: "parameter column 3: 2 numbered columns must be numbered 1 to 2"},
		{name: "a number twice", csv: "destination,1,1\n447700900123,a,b\n", err: "two parameter columns 1"},
		{name: "a blank name", csv: "destination,name,\n447700900123,a,b\n", err: "column 3 of the header has no name"},
		{name: "broken quoting", csv: "destination,name\n447700900123,\"John\n", err: "line 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cf, err := parseCampaignCSV([]byte(tt.csv))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want one saying %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := struct {
				Params []string
				Rows   []campaignRow
				Bad    []rowError
			}{cf.params, cf.rows, cf.bad}
			want := struct {
				Params []string
				Rows   []campaignRow
				Bad    []rowError
			}{tt.params, tt.rows, tt.bad}
			if diff := cmp.Diff(want, got, cmp.AllowUnexported(campaignRow{}, rowError{})); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
}

// writeCSV writes a campaign file into the test's directory.
func writeCSV(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// queuedKeys counts the keys on Redis: sending anything adds some.
func queuedKeys(t *testing.T, url string) int64 {
	t.Helper()
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	n, err := rdb.DBSize(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestCampaignSendRefusesBadRows(t *testing.T) {
	srv := redistest.Start(t)
	t.Setenv("CHATQ_REDIS_URL", srv.URL())
	t.Setenv("CHATQ_CA_SOURCE", "15550001234")
	path := writeCSV(t, "offer.csv", "destination,name,code\n"+
		"447700900123,John,X1\n"+
		"447700900124,Ann,\n"+ // line 3: no code
		"447700900125,Bob,Z3\n")
	before := queuedKeys(t, srv.URL())
	for _, dry := range []bool{true, false} {
		args := []string{"campaign", "send", "--csv", path, "--template", "welcome_offer", "--language", "en_US"}
		if dry {
			args = append(args, "--dry-run")
		}
		out, _, err := cli(t, args...)
		if exitCode(err) != 1 || !strings.Contains(err.Error(), "1 of 3 rows bad: nothing sent") {
			t.Errorf("dry run %v: %v, want exit 1 with the count of bad rows", dry, err)
		}
		if want := `line 3: column "code" (parameter 2) is required`; !strings.Contains(out, want) || strings.Count(out, "line ") != 1 {
			t.Errorf("dry run %v printed %q, want the one line %q", dry, out, want)
		}
	}
	if after := queuedKeys(t, srv.URL()); after != before {
		t.Errorf("Redis went from %d keys to %d: something was written", before, after)
	}

	// The good rows alone pass, and a dry run still sends nothing.
	good := writeCSV(t, "good.csv", "destination,name,code\n447700900123,John,X1\n447700900125,Bob,Z3\n")
	out, _, err := cli(t, "campaign", "send", "--csv", good, "--template", "welcome_offer", "--language", "en_US", "--dry-run", "--sender", "+15550001234")
	if err != nil || !strings.Contains(out, "2 rows checked, all good: template welcome_offer (en_US) with 2 parameters (name, code)") ||
		!strings.Contains(out, "nothing sent (--dry-run)") {
		t.Errorf("dry run of good rows: %v\n%s", err, out)
	}
	if after := queuedKeys(t, srv.URL()); after != before {
		t.Errorf("Redis went from %d keys to %d after a dry run", before, after)
	}
	var stdout bytes.Buffer
	p := &program{stdout: &stdout, stderr: &stdout, stdin: strings.NewReader("destination,1,2\n447700900123,John,X1\n")}
	if err := p.run(context.Background(), []string{"campaign", "send", "--csv", "-", "--template", "welcome_offer", "--language", "en_US", "--dry-run"}); err != nil ||
		!strings.Contains(stdout.String(), "1 row checked, all good: template welcome_offer (en_US) with 2 parameters (1, 2)") {
		t.Errorf("a dry run of stdin: %v\n%s", err, &stdout)
	}

	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--language", "en_US"}, "campaign send: --template is required"},
		{[]string{"--template", "Welcome Offer", "--language", "en_US"}, "--template must be lowercase letters"},
		{[]string{"--template", "welcome_offer", "--language", "en_US", "--priority", "urgent"}, `--priority must be bulk or transactional, not "urgent"`},
		{[]string{"--template", "welcome_offer", "--language", "en_US", "--send-at", "tomorrow"}, "--send-at: not an RFC 3339 time"},
		{[]string{"--template", "welcome_offer", "--language", "en_US", "--send-at", "2099-01-01T00:00:00Z"}, "--send-at must be within a year"},
		{[]string{"--template", "welcome_offer", "--language", "en_US", "--sender", "15550009999"}, "--sender 15550009999: senders are not configured: chatq sends from CHATQ_CA_SOURCE (15550001234) only"},
	} {
		_, _, err := cli(t, append([]string{"campaign", "send", "--csv", good}, tt.args...)...)
		if exitCode(err) != 2 || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: %v, want exit 2 and %q", tt.args, err, tt.want)
		}
	}
	if _, _, err := cli(t, "campaign", "send", "--csv", filepath.Join(t.TempDir(), "none.csv"), "--template", "a", "--language", "en"); err == nil ||
		!strings.Contains(err.Error(), "--csv: open ") {
		t.Errorf("a missing file: %v", err)
	}
}

// stopAfter is a program's stdout that cancels the program once it has
// printed a line containing marker, the way a crash or a SIGINT would
// stop it in the middle of its work.
type stopAfter struct {
	syncBuffer
	marker string
	cancel context.CancelFunc
	once   sync.Once
}

func (s *stopAfter) Write(p []byte) (int, error) {
	if strings.Contains(string(p), s.marker) {
		s.once.Do(s.cancel)
	}
	return s.syncBuffer.Write(p)
}

// A campaign of 10,000 rows, stopped after its first 3,000 and run again,
// sends every message once; campaign watch follows it until every message
// has been delivered, and every one is then read; a third run sends nothing.
func TestCampaignSendAndWatch(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 messages through chatq dev")
	}
	srv := redistest.Start(t)
	if !srv.Real() {
		t.Skip("no redis-server here: 10,000 messages need a real Redis")
	}
	d := startDev(t, map[string]string{
		"CHATQ_REDIS_URL":       srv.URL(),
		"CHATQ_RATE_PER_SECOND": "100000",
	})

	const n = 10000
	var b strings.Builder
	b.WriteString("destination,name,code\n")
	for i := range n {
		// Numbers ending in 99: none of the sandbox's special endings.
		fmt.Fprintf(&b, "4479%05d99,Customer %d,C%05d\n", i, i, i)
	}
	path := writeCSV(t, "spring.csv", b.String())
	send := []string{"campaign", "send", "--csv", path, "--template", "welcome_offer", "--language", "en_US"}

	// The template is checked against the cache chatq dev keeps, filled
	// from the sandbox once it has started.
	poll.Until(t, 20*time.Second, "chatq dev's template cache", func() (bool, string) {
		_, got := d.do(t, "GET", "/v1/templates", "")
		list, _ := got["templates"].([]any)
		return len(list) > 0, fmt.Sprint(got)
	})
	three := writeCSV(t, "three.csv", "destination,name,code,extra\n447700900123,a,b,c\n")
	if _, _, err := cli(t, "campaign", "send", "--csv", three, "--template", "welcome_offer", "--language", "en_US"); err == nil ||
		!strings.Contains(err.Error(), "template welcome_offer (en_US) must hold 2 parameters, not 3: the file has 3 parameter columns (name, code, extra)") {
		t.Errorf("three parameters for two: %v", err)
	}

	out, _, err := cli(t, append(send, "--dry-run")...)
	if err != nil {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	batch := regexp.MustCompile(`batch (welcome_offer-[0-9a-f]{12})`).FindStringSubmatch(out)
	if batch == nil {
		t.Fatalf("no batch id in the dry run's output:\n%s", out)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	crashed := &stopAfter{marker: "queueing: 3000 of", cancel: cancel}
	p := &program{stdout: crashed, stderr: crashed}
	err = p.run(ctx, send)
	if err == nil || !strings.Contains(err.Error(), "3000 of 10000 messages queued") {
		t.Fatalf("the run stopped after 3000 rows: %v\n%s", err, crashed)
	}

	out, _, err = cli(t, send...)
	if err != nil || !strings.Contains(out, "queued 7000 messages (and 3000 queued before, by an earlier run)") ||
		!strings.Contains(out, "batch "+batch[1]) {
		t.Fatalf("the run again: %v\n%s", err, out)
	}

	out, _, err = cli(t, "campaign", "watch", batch[1], "--timeout", "4m")
	if err != nil {
		t.Fatalf("campaign watch: %v\n%s", err, out)
	}
	// Delivered is an end (a recipient may keep read receipts off), so
	// the watch may end while the last read events are on their way: it
	// ends with every message delivered or read, and the sandbox's read
	// events then reach every message.
	ended := regexp.MustCompile(`campaign ` + batch[1] + `: 10000 messages ended: (delivered \d+, )?read \d+\n$`)
	if !ended.MatchString(out) {
		t.Errorf("campaign watch ended with\n%s\nwant 10000 messages ended, all delivered or read", lastLines(out, 3))
	}
	poll.Until(t, 30*time.Second, "every message of the campaign read", func() (bool, string) {
		_, got := d.do(t, "GET", "/v1/batches/"+batch[1], "")
		counts, _ := got["counts"].(map[string]any)
		return got["total"] == float64(n) && counts["read"] == float64(n), fmt.Sprint(got)
	})

	out, _, err = cli(t, send...)
	if err != nil || !strings.Contains(out, "queued 0 messages (and 10000 queued before, by an earlier run)") {
		t.Errorf("a third run: %v\n%s", err, out)
	}
	var stats struct{ Accepted, Duplicates int }
	resp, err := http.Get(d.sandbox + "/sandbox/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&stats); err != nil {
		t.Fatal(err)
	}
	if stats.Accepted != n || stats.Duplicates != 0 {
		t.Errorf("the sandbox accepted %d messages, %d of them twice; want %d, none twice", stats.Accepted, stats.Duplicates, n)
	}
}

func TestCampaignWatchTimesOut(t *testing.T) {
	srv := redistest.Start(t)
	t.Setenv("CHATQ_REDIS_URL", srv.URL())
	// A message that no worker sends stays queued.
	path := writeCSV(t, "one.csv", "destination,1\n447700900123,John\n")
	out, _, err := cli(t, "campaign", "send", "--csv", path, "--template", "otp_code", "--language", "en", "--batch", "stuck")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	start := time.Now()
	out, _, err = cli(t, "campaign", "watch", "stuck", "--timeout", "1500ms")
	if exitCode(err) != 1 || !strings.Contains(err.Error(), "stuck has not ended after 1.5s: 1 in chatq, 0 awaiting delivery, 0 ended") {
		t.Errorf("watch of a stuck campaign: %v\n%s", err, out)
	}
	if !strings.Contains(out, "0 of 1 ended: queued 1") {
		t.Errorf("watch printed %q", out)
	}
	if elapsed := time.Since(start); elapsed > 30*time.Second {
		t.Errorf("--timeout 1.5s took %s", elapsed)
	}
	if _, _, err := cli(t, "campaign", "watch", "nothing-here"); exitCode(err) != 1 || !strings.Contains(err.Error(), `no messages with batch id "nothing-here"`) {
		t.Errorf("watch of an unknown campaign: %v", err)
	}
}

// Messages that ChatArchitect accepted and that never get a delivery event
// end the watch once the counts have held still for --settle.
func TestCampaignWatchSettles(t *testing.T) {
	srv := redistest.Start(t)
	startDev(t, map[string]string{"CHATQ_REDIS_URL": srv.URL(), "CHATQ_SANDBOX_WEBHOOK_DELAY": "1h"})
	path := writeCSV(t, "two.csv", "destination,1\n447700900123,John\n447700900124,Ann\n")
	out, _, err := cli(t, "campaign", "send", "--csv", path, "--template", "otp_code", "--language", "en", "--batch", "quiet")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	out, _, err = cli(t, "campaign", "watch", "quiet", "--settle", "2s", "--timeout", "1m")
	if err != nil || !strings.HasSuffix(out, "campaign quiet: 2 messages ended (2 of them accepted by ChatArchitect with no delivery event for 2s): submitted 2\n") {
		t.Errorf("watch --settle: %v\n%s", err, out)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
