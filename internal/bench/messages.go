package bench

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/chatq/chatq/enqueue"
)

// Destinations are 13 digits ending in 9, so that none is one of the
// sandbox's magic numbers (last four digits 0001 to 0008). A prefix sets
// apart the messages a measurement watches closely.
const (
	plainPrefix    = "49"
	sampledPrefix  = "44"
	campaignPrefix = "46"
	roundPrefix    = "47"
)

func destination(prefix string, i int) string {
	return fmt.Sprintf("%s%010d9", prefix, i%10_000_000_000)
}

// messageText returns the text of message i: about 100 characters, a
// typical notification.
func messageText(i int) string {
	return fmt.Sprintf("Hi Maria, your order %07d has shipped and arrives on Thursday. Track it at https://ex.am/t/%07d", i%10_000_000, i%10_000_000)
}

// textMessage returns message i of a run.
func textMessage(prefix string, i int, prio enqueue.Priority) *enqueue.Message {
	return &enqueue.Message{
		Destination: destination(prefix, i),
		Payload:     &enqueue.Text{Message: messageText(i)},
		Priority:    prio,
	}
}

func textMessages(from, n int, prio enqueue.Priority) []*enqueue.Message {
	msgs := make([]*enqueue.Message, n)
	for i := range msgs {
		msgs[i] = textMessage(plainPrefix, from+i, prio)
	}
	return msgs
}

// messageBody returns the JSON body of POST /v1/messages for message i.
func messageBody(i int, prio enqueue.Priority) ([]byte, error) {
	b, err := json.Marshal(textMessage(plainPrefix, i, prio))
	if err != nil {
		return nil, fmt.Errorf("encode message %d: %w", i, err)
	}
	return b, nil
}

// batchBody returns the JSON body of POST /v1/messages/batch for messages
// from, from+1, ... from+n-1.
func batchBody(from, n int, prio enqueue.Priority) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(`{"messages":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		m, err := messageBody(from+i, prio)
		if err != nil {
			return nil, err
		}
		b.Write(m)
	}
	b.WriteString(`]}`)
	return b.Bytes(), nil
}

// messageFunc makes message i of a run, its destination starting with
// prefix: textMessage, campaignMessage.
type messageFunc func(prefix string, i int, prio enqueue.Priority) *enqueue.Message

// campaignMessage returns message i of a marketing campaign: the
// sandbox's marketing template, its two parameters filled.
func campaignMessage(prefix string, i int, prio enqueue.Priority) *enqueue.Message {
	return &enqueue.Message{
		Destination: destination(prefix, i),
		Payload: &enqueue.Template{Template: enqueue.TemplateSpec{ElementName: "welcome_offer", LanguageCode: "en_US",
			Params: []string{"Maria", fmt.Sprintf("SPRING%07d", i%10_000_000)}}},
		Priority: prio,
	}
}

// batchOf returns the JSON body of POST /v1/messages/batch for messages
// from, from+1, ... from+n-1 that message makes, their destinations
// starting with prefix.
func batchOf(message messageFunc, prefix string, from, n int, prio enqueue.Priority) ([]byte, error) {
	msgs := make([]*enqueue.Message, n)
	for i := range msgs {
		msgs[i] = message(prefix, from+i, prio)
	}
	b, err := json.Marshal(struct {
		Messages []*enqueue.Message `json:"messages"`
	}{msgs})
	if err != nil {
		return nil, fmt.Errorf("encode batch: %w", err)
	}
	return b, nil
}
