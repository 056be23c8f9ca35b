package enqueue_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/chatq/chatq/enqueue"
)

// A status callback receiver: it reads the raw body, verifies the
// signature before it trusts anything in it, and only then decodes the
// record. Any 2xx answer tells chatq the callback arrived; anything else
// makes chatq try again.
func ExampleVerifySignature() {
	const secret = "cb_secret" // CHATQ_CALLBACK_SECRET

	receiver := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, "unreadable body", http.StatusBadRequest)
			return
		}
		if err := enqueue.VerifySignature(secret, r.Header.Get(enqueue.SignatureHeader), body, 5*time.Minute); err != nil {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		var rec enqueue.Record
		if err := json.Unmarshal(body, &rec); err != nil {
			http.Error(w, "not a record", http.StatusBadRequest)
			return
		}
		fmt.Printf("message %s is %s\n", rec.ID, rec.Status)
	})

	// What chatq sends, and the same with its body changed on the way.
	body := `{"id":"01JD3XGZ0000000000000000","destination":"96996999699","status":"delivered"}`
	for _, sent := range []string{body, strings.Replace(body, "delivered", "read", 1)} {
		req := httptest.NewRequest(http.MethodPost, "/chatq-events", strings.NewReader(sent))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(enqueue.SignatureHeader, enqueue.SignCallback(secret, time.Now(), []byte(body)))
		rr := httptest.NewRecorder()
		receiver.ServeHTTP(rr, req)
		fmt.Println(rr.Code)
	}

	err := enqueue.VerifySignature(secret, "t=1,v1=00", []byte(body), 0)
	fmt.Println(errors.Is(err, enqueue.ErrBadSignature))
	// Output:
	// message 01JD3XGZ0000000000000000 is delivered
	// 200
	// 401
	// true
}
