package enqueue_test

import (
	"testing"
	"time"

	"github.com/chatq/chatq/enqueue"
)

// benchPayloads are payloads as applications send them: a one-time code, a
// notification, an image, a template and a list menu.
var benchPayloads = []struct{ name, raw string }{
	{"text_otp", `{"type":"text","message":"Your code is 482913. It expires in 5 minutes."}`},
	{"text_notification", `{"type":"text","message":"Hi Maria, your order 0048213 has shipped and arrives on Thursday. Track it at https://ex.am/t/0048213"}`},
	{"image", `{"type":"image","originalUrl":"https://example.com/a.jpg","previewUrl":"https://example.com/a_s.jpg","caption":"Our new shop"}`},
	{"template", `{"type":"template","template":{"elementName":"order_shipped","languageCode":"en_US","params":["Maria","0048213","Thursday"]}}`},
	{"list", `{"type":"list","title":"Menu","body":"Pick one","msgid":"m1","globalButtons":[{"type":"text","title":"Open"}],"items":[{"title":"Drinks","options":[{"type":"text","title":"Tea"},{"type":"text","title":"Coffee"},{"type":"text","title":"Juice"}]}]}`},
}

// BenchmarkValidatePayload measures ValidatePayload alone, which every
// message goes through at enqueue (and again in the sandbox).
func BenchmarkValidatePayload(b *testing.B) {
	for _, tc := range benchPayloads {
		p, err := enqueue.ParsePayload([]byte(tc.raw))
		if err != nil {
			b.Fatalf("%s: %v", tc.name, err)
		}
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := enqueue.ValidatePayload(p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkParsePayload measures the strict decoding of a payload from its
// JSON wire form.
func BenchmarkParsePayload(b *testing.B) {
	for _, tc := range benchPayloads {
		raw := []byte(tc.raw)
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				if _, err := enqueue.ParsePayload(raw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecodeAndValidateMessage is what POST /v1/messages does with a
// body before it touches Redis: decode the message strictly, then validate
// all of it.
func BenchmarkDecodeAndValidateMessage(b *testing.B) {
	now := time.Now()
	for _, tc := range benchPayloads {
		body := []byte(`{"channel":"whatsapp","destination":"4915112345679","priority":"bulk","batch_id":"spring-sale","metadata":{"order_id":"0048213"},"payload":` + tc.raw + `}`)
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				m, err := enqueue.DecodeMessage(body)
				if err != nil {
					b.Fatal(err)
				}
				if err := m.Validate(now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
