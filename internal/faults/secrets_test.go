package faults

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatq/chatq/enqueue"
	"github.com/chatq/chatq/internal/store"
)

// sensitive is a value that must stay out of logs and task payloads.
type sensitive struct {
	what, value string
}

// TestNoSecretsInLogsOrTasks runs every process at debug level with
// recognisable secrets (API key, webhook secret, ChatArchitect app secret,
// callback secret) and message bodies (the text of each payload type,
// captions, file names, media URLs, places, contacts, list and button
// texts, template and fallback template params, an inbound message's text,
// and metadata values: the application's own data, returned in its
// records and callbacks but no one else's business), through a flow that
// touches every path: the API and its batch route, chatq send, a retry, a
// dead letter, a send that hangs, a closed window and its fallback
// template, status callbacks, inbound forwarding, wrong keys and secrets,
// and the dashboard. None of them may appear in any process's output, in
// any asynq key in Redis (the tasks, their errors, the archive), nor in
// what the dashboard shows; message bodies must not reach status callbacks
// either.
func TestNoSecretsInLogsOrTasks(t *testing.T) {
	nonce := make([]byte, 6)
	_, _ = rand.Read(nonce)
	n := hex.EncodeToString(nonce)
	sec := secrets{
		apiKey:         "ck_live_APIKEY" + n,
		webhookSecret:  "whsec_WEBHOOKSECRET" + n,
		appID:          "chatq-app",
		appSecret:      "ca_APPSECRET" + n,
		callbackSecret: "cb_CALLBACKSECRET" + n,
	}
	secretValues := []sensitive{
		{"API key", sec.apiKey}, {"webhook secret", sec.webhookSecret},
		{"ChatArchitect app secret", sec.appSecret}, {"callback secret", sec.callbackSecret},
	}
	body := func(what string) sensitive {
		return sensitive{what, strings.ToUpper(strings.ReplaceAll(what, " ", "")) + n}
	}
	var (
		text        = body("text body")
		batchText   = body("batch text body")
		cliText     = body("cli text body")
		retryText   = body("retried text body")
		deadText    = body("dead letter body")
		laterText   = body("scheduled text body")
		hangText    = body("hung send body")
		windowText  = body("closed window body")
		caption     = body("image caption")
		mediaURL    = body("media url")
		videoCap    = body("video caption")
		fileName    = body("file name")
		placeName   = body("place name")
		placeAddr   = body("place address")
		contactName = body("contact name")
		listBody    = body("list body")
		listOption  = body("list option")
		buttonText  = body("button text")
		tplParam    = body("template param")
		fbParam     = body("fallback template param")
		inboundText = body("inbound text")
		metaValue   = body("metadata value")
	)
	bodies := []sensitive{text, batchText, cliText, retryText, deadText, laterText, hangText, windowText, caption, mediaURL, videoCap,
		fileName, placeName, placeAddr, contactName, listBody, listOption, buttonText, tplParam, fbParam, inboundText}

	rcv := newReceiver(t, sec.callbackSecret)
	s := newStack(t, stackConfig{direct: true, secrets: &sec, env: map[string]string{
		"CHATQ_LOG_LEVEL":              "debug",
		"CHATQ_CALLBACK_SECRET":        sec.callbackSecret,
		"CHATQ_CALLBACK_ALLOW_PRIVATE": "true",
		"CHATQ_INBOUND_URL":            rcv.srv.URL + "/inbound",
	}})
	s.startWorker("worker-1", 10)
	s.startWorker("worker-2", 10)

	type sent struct {
		id   string
		want store.Status
	}
	var msgs []sent
	post := func(dest, payload string, want store.Status, extra string) string {
		t.Helper()
		code, b, err := s.call(http.MethodPost, "/v1/messages", []byte(`{"destination":"`+dest+`","payload":`+payload+extra+`}`), "")
		if err != nil || code != http.StatusAccepted {
			t.Fatalf("POST /v1/messages to %s: %d %v %s", dest, code, err, b)
		}
		var rec store.Record
		if err := json.Unmarshal(b, &rec); err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, sent{rec.ID, want})
		return rec.ID
	}
	q := func(v sensitive) string { b, _ := json.Marshal(v.value); return string(b) }
	post("447700100019", `{"type":"text","message":`+q(text)+`}`, store.Read,
		`,"callback_url":"`+rcv.srv.URL+`/status","metadata":{"order":`+q(metaValue)+`}`)
	imageID := post("447700100029", `{"type":"image","originalUrl":"https://cdn.example.com/`+mediaURL.value+`.jpg","previewUrl":"https://cdn.example.com/p.jpg","caption":`+q(caption)+`}`, store.Read, "")
	post("447700100039", `{"type":"video","url":"https://cdn.example.com/v.mp4","caption":`+q(videoCap)+`}`, store.Read, "")
	post("447700100049", `{"type":"file","url":"https://cdn.example.com/f.pdf","filename":`+q(fileName)+`}`, store.Read, "")
	post("447700100059", `{"type":"location","latitude":48.8584,"longitude":2.2945,"name":`+q(placeName)+`,"address":`+q(placeAddr)+`}`, store.Read, "")
	post("447700100069", `{"type":"contact","contact":{"name":{"formattedName":`+q(contactName)+`},"phones":[{"phone":"+15551234567","type":"CELL"}]}}`, store.Read, "")
	post("447700100079", `{"type":"list","title":"Menu","body":`+q(listBody)+`,"msgid":"m1","globalButtons":[{"type":"text","title":"Open"}],"items":[{"title":"Drinks","options":[{"type":"text","title":"Tea","description":`+q(listOption)+`}]}]}`, store.Read, "")
	post("447700100089", `{"type":"quick_reply","msgid":"q1","content":{"type":"text","text":`+q(buttonText)+`},"options":[{"type":"text","title":"Yes"},{"type":"text","title":"No"}]}`, store.Read, "")
	post("447700100099", `{"type":"template","template":{"elementName":"otp_code","languageCode":"en","params":[`+q(tplParam)+`]}}`, store.Read, "")
	post("447700110003", `{"type":"text","message":`+q(retryText)+`}`, store.Read, "")
	deadID := post("447700120002", `{"type":"text","message":`+q(deadText)+`}`, store.Dead, "")
	laterID := post("447700100159", `{"type":"text","message":`+q(laterText)+`}`, store.Scheduled,
		`,"send_at":"`+time.Now().Add(time.Hour).UTC().Format(time.RFC3339)+`"`)
	post("447700130007", `{"type":"text","message":`+q(hangText)+`}`, store.Read, "")
	windowID := post("447700140008", `{"type":"text","message":`+q(windowText)+`}`, store.Failed, "")

	batch := `{"messages":[{"destination":"447700100119","payload":{"type":"text","message":` + q(batchText) + `}},` +
		`{"destination":"447700100129","payload":{"type":"text","message":"x"},"metadata":{"order":` + q(metaValue) + `}}]}`
	code, b, err := s.call(http.MethodPost, "/v1/messages/batch", []byte(batch), "")
	if err != nil || code != http.StatusOK {
		t.Fatalf("batch: %d %v %s", code, err, b)
	}
	var br struct{ Results []batchResult }
	if err := json.Unmarshal(b, &br); err != nil {
		t.Fatal(err)
	}
	for _, r := range br.Results {
		if r.ID == "" {
			t.Fatalf("batch item refused: %s", b)
		}
		msgs = append(msgs, sent{r.ID, store.Read})
	}
	out, err := s.run(nil, "send", "--to", "447700100139", "--text", cliText.value)
	if err != nil {
		t.Fatalf("chatq send: %v\n%s", err, out)
	}
	var cli store.Record
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &cli); err != nil {
		t.Fatalf("chatq send printed %q: %v", out, err)
	}
	msgs = append(msgs, sent{cli.ID, store.Read})
	if err := s.sandboxCall(http.MethodPost, "/sandbox/inbound", map[string]string{"from": "447700100149", "text": inboundText.value}, nil); err != nil {
		t.Fatal(err)
	}

	// Wrong credentials, which a careless log would repeat: a near-miss of
	// each secret holds the secret itself.
	for _, auth := range []string{"Bearer " + sec.apiKey + "x", "Basic " + basic("ops", sec.apiKey+"x")} {
		for _, path := range []string{"/v1/messages/" + imageID, "/monitoring/api/queues"} {
			if code, _, err := s.call(http.MethodGet, path, nil, auth); err != nil || code != http.StatusUnauthorized {
				t.Errorf("GET %s with a wrong key: %d %v", path, code, err)
			}
		}
	}
	if code, _, err := s.call(http.MethodPost, "/webhooks/chatarchitect/"+sec.webhookSecret+"x", []byte(`{"type":"message-event","payload":{"id":"x","type":"read"}}`), "-"); err != nil || code != http.StatusNotFound {
		t.Errorf("webhook with a wrong secret: %d %v", code, err)
	}

	// The closed window is learned from the failure; the next free-form
	// message there goes out as its fallback template.
	s.waitFor("the closed window's failure", time.Minute, func() (bool, error) {
		r, err := s.store.Get(s.ctx, windowID)
		return err == nil && r.Status == store.Failed && strings.Contains(s.api.output(), `"learned from a failed delivery"`), nil
	})
	post("447700140008", `{"type":"text","message":`+q(windowText)+`}`, store.Read,
		`,"fallback_template":{"elementName":"otp_code","languageCode":"en","params":[`+q(fbParam)+`]}`)

	s.waitFor("every message to end", 2*time.Minute, func() (bool, error) {
		for _, m := range msgs {
			r, err := s.store.Get(s.ctx, m.id)
			if err != nil || r.Status != m.want {
				return false, nil
			}
		}
		return true, nil
	})
	s.waitFor("the callbacks up to read and the inbound message", time.Minute, func() (bool, error) {
		return rcv.has("/status", `"status":"read"`) && rcv.has("/inbound", inboundText.value), nil
	})
	if out, err := s.run(nil, "status", imageID); err != nil || !strings.Contains(out, imageID) {
		t.Errorf("chatq status: %v\n%s", err, out)
	}
	// The operator's commands print records, dead letters and lists: none
	// of them a body or a secret.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"templates", "list"}, "otp_code"},
		{[]string{"dlq", "list"}, deadID},
		{[]string{"dlq", "show", deadID}, deadID},
		{[]string{"suppressions", "list"}, ""},
	} {
		if out, err := s.run(nil, c.args...); err != nil || !strings.Contains(out, c.want) {
			t.Errorf("chatq %s: %v\n%s", strings.Join(c.args, " "), err, out)
		}
	}
	dashboard := s.dashboard(t, sec.apiKey)

	// Positive controls: the scans below look where the values are. The
	// records hold the bodies; the dead letter and the scheduled message
	// have tasks, which the dashboard shows.
	records := s.keysContent(t, "chatq:*")
	for _, v := range []sensitive{text, caption, tplParam, fbParam, laterText, metaValue} {
		if !strings.Contains(records, v.value) {
			t.Errorf("the %s is not in the records: the scan would miss it", v.what)
		}
	}
	if !rcv.has("/status", metaValue.value) {
		t.Error("the metadata value is missing from the status callbacks")
	}
	for _, id := range []string{deadID, laterID} {
		if !strings.Contains(dashboard, id) {
			t.Errorf("the dashboard does not show the task of %s: the scan would miss what it shows", id)
		}
	}

	for _, p := range s.processes() {
		if !p.exited() {
			s.stop(p)
		}
	}
	tasks := s.keysContent(t, "asynq:*")
	for _, id := range []string{deadID, laterID} {
		if !strings.Contains(tasks, id) {
			t.Errorf("no asynq key holds %s: the scan would miss what tasks hold", id)
		}
	}
	everything := append(append(append([]sensitive{}, secretValues...), bodies...), metaValue)
	for _, v := range everything {
		for _, p := range s.processes() {
			if line := lineWith(p.output(), v.value); line != "" {
				t.Errorf("the %s is in the output of %s: %s", v.what, p.name, line)
			}
		}
		if strings.Contains(tasks, v.value) {
			t.Errorf("the %s is in an asynq key in Redis", v.what)
		}
		if strings.Contains(dashboard, v.value) {
			t.Errorf("the %s is shown by the dashboard", v.what)
		}
	}
	for _, v := range secretValues {
		if rcv.has("", v.value) {
			t.Errorf("the %s is in a status callback or a forwarded inbound event", v.what)
		}
	}
	for _, v := range bodies {
		if rcv.has("/status", v.value) {
			t.Errorf("the %s is in a status callback", v.what)
		}
	}
}

// basic is the credential of HTTP Basic auth.
func basic(user, password string) string {
	r := &http.Request{Header: http.Header{}}
	r.SetBasicAuth(user, password)
	return strings.TrimPrefix(r.Header.Get("Authorization"), "Basic ")
}

// lineWith returns the first line of out that holds v, or "".
func lineWith(out, v string) string {
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, v) {
			return line
		}
	}
	return ""
}

// keysContent returns everything Redis holds under the keys matching
// pattern, whatever their type, as one string to search.
func (s *stack) keysContent(t *testing.T, pattern string) string {
	t.Helper()
	var b strings.Builder
	iter := s.rdb.Scan(s.ctx, 0, pattern, 500).Iterator()
	for iter.Next(s.ctx) {
		key := iter.Val()
		typ, err := s.rdb.Type(s.ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(key + "\n")
		switch typ {
		case "string":
			b.WriteString(s.rdb.Get(s.ctx, key).Val())
		case "hash":
			for k, v := range s.rdb.HGetAll(s.ctx, key).Val() {
				b.WriteString(k + "=" + v + "\n")
			}
		case "list":
			b.WriteString(strings.Join(s.rdb.LRange(s.ctx, key, 0, -1).Val(), "\n"))
		case "set":
			b.WriteString(strings.Join(s.rdb.SMembers(s.ctx, key).Val(), "\n"))
		case "zset":
			b.WriteString(strings.Join(s.rdb.ZRange(s.ctx, key, 0, -1).Val(), "\n"))
		case "stream":
			for _, m := range s.rdb.XRange(s.ctx, key, "-", "+").Val() {
				fmt.Fprintf(&b, "%v\n", m.Values)
			}
		default:
			t.Errorf("key %s of type %s is not scanned", key, typ)
		}
		b.WriteString("\n")
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// dashboard returns what the dashboard's API shows of every queue and
// every task state.
func (s *stack) dashboard(t *testing.T, key string) string {
	t.Helper()
	auth := "Basic " + basic("ops", key)
	get := func(path string) string {
		code, b, err := s.call(http.MethodGet, "/monitoring/api"+path, nil, auth)
		if err != nil || code != http.StatusOK {
			t.Fatalf("dashboard %s: %d %v %s", path, code, err, b)
		}
		return string(b)
	}
	var b strings.Builder
	list := get("/queues")
	b.WriteString(list)
	var queues struct {
		Queues []struct {
			Queue string `json:"queue"`
		} `json:"queues"`
	}
	if err := json.Unmarshal([]byte(list), &queues); err != nil || len(queues.Queues) == 0 {
		t.Fatalf("dashboard /queues: %v %s", err, list)
	}
	for _, q := range queues.Queues {
		for _, state := range []string{"pending", "active", "scheduled", "retry", "archived", "completed"} {
			b.WriteString(get("/queues/" + q.Queue + "/" + state + "_tasks"))
		}
	}
	return b.String()
}

// receiver takes status callbacks (/status) and inbound events (/inbound),
// checking their signatures.
type receiver struct {
	srv    *httptest.Server
	secret string
	mu     sync.Mutex
	got    map[string][]string // path: bodies
	bad    int
}

func newReceiver(t *testing.T, secret string) *receiver {
	r := &receiver{secret: secret, got: map[string][]string{}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if err := enqueue.VerifySignature(r.secret, req.Header.Get(enqueue.SignatureHeader), body, 5*time.Minute); err != nil {
			r.bad++
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		r.got[req.URL.Path] = append(r.got[req.URL.Path], string(body))
	}))
	t.Cleanup(func() {
		r.srv.Close()
		if r.bad > 0 {
			t.Errorf("%d callbacks with a bad signature", r.bad)
		}
	})
	return r
}

// has reports whether a body received on path ("" for any) holds s.
func (r *receiver) has(path, s string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for p, bodies := range r.got {
		if path != "" && p != path {
			continue
		}
		for _, b := range bodies {
			if strings.Contains(b, s) {
				return true
			}
		}
	}
	return false
}
