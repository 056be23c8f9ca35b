package sandbox_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatq/chatq/internal/sandbox"
	"go.uber.org/zap"
)

// BenchmarkAccept measures the success path of POST /whatsappmessage:
// "handler" calls ServeHTTP directly (the sandbox's own cost), "http" goes
// through a real loopback connection with keep-alive, as a load test does.
// No webhook is registered, so the webhooks are counted, not sent.
func BenchmarkAccept(b *testing.B) {
	srv, err := sandbox.New(sandbox.Config{AppID: testAppID, AppSecret: testAppSecret}, zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	var n atomic.Int64
	body := func() []byte {
		// Numbers ending in 9 are never magic.
		return fmt.Appendf(nil, `{"channel":"whatsapp","destination":"49%010d9","payload":{"type":"text","message":"Your code is 123456."}}`, n.Add(1))
	}

	b.Run("handler", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				req := httptest.NewRequest(http.MethodPost, "/whatsappmessage", bytes.NewReader(body()))
				req.SetBasicAuth(testAppID, testAppSecret)
				rec := httptest.NewRecorder()
				srv.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("status %d: %s", rec.Code, rec.Body)
				}
			}
		})
	})

	b.Run("http", func(b *testing.B) {
		api := httptest.NewServer(srv)
		defer api.Close()
		tr := &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256}
		defer tr.CloseIdleConnections()
		client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				req, err := http.NewRequest(http.MethodPost, api.URL+"/whatsappmessage", bytes.NewReader(body()))
				if err != nil {
					b.Error(err)
					return
				}
				req.SetBasicAuth(testAppID, testAppSecret)
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		})
	})
}
