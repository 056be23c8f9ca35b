package enqueue_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/chatq/chatq/enqueue"
)

// exampleRedis stands in for the application's Redis: an embedded
// miniredis, so that the examples run anywhere.
func exampleRedis() (*redis.Client, func()) {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		log.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	return rdb, func() {
		_ = rdb.Close()
		mr.Close()
	}
}

func ExampleClient_Send() {
	rdb, stop := exampleRedis() // your application's *redis.Client
	defer stop()
	ctx := context.Background()

	client := enqueue.NewClient(rdb, enqueue.Config{})
	defer client.Close()

	rec, err := client.Send(ctx, &enqueue.Message{
		Destination:    "96996999699",
		Payload:        &enqueue.Text{Message: "Your code is 123456"},
		IdempotencyKey: "login-code-42",
		ExpiresAt:      time.Now().Add(5 * time.Minute), // a late code is useless
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(rec.Status, rec.Type, rec.Priority)

	// A worker sends it; ask for its record at any time.
	rec, err = client.Get(ctx, rec.ID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(rec.Status)
	// Output:
	// queued text transactional
	// queued
}

func ExampleClient_SendBatch() {
	rdb, stop := exampleRedis()
	defer stop()

	client := enqueue.NewClient(rdb, enqueue.Config{})
	defer client.Close()

	var msgs []*enqueue.Message
	for _, number := range []string{"96996999601", "not-a-number", "96996999603"} {
		msgs = append(msgs, &enqueue.Message{
			Destination: number,
			Payload: &enqueue.Template{Template: enqueue.TemplateSpec{
				ElementName: "black_friday", LanguageCode: "en", Params: []string{"30%"},
			}},
			Priority: enqueue.Bulk,
			BatchID:  "black-friday-2026",
		})
	}
	results, err := client.SendBatch(context.Background(), msgs)
	if err != nil {
		log.Fatal(err) // the whole batch failed: Redis is unreachable
	}
	for i, res := range results {
		var invalid *enqueue.ValidationError
		switch {
		case errors.As(res.Err, &invalid):
			fmt.Printf("%d: refused: %s\n", i, invalid.Field)
		case res.Err != nil:
			fmt.Printf("%d: failed: %v\n", i, res.Err)
		default:
			fmt.Printf("%d: %s\n", i, res.Record.Status)
		}
	}
	// Output:
	// 0: queued
	// 1: refused: destination
	// 2: queued
}

func ExampleMessage() {
	lat, lng := 28.6139, 77.2090
	payloads := []enqueue.Payload{
		&enqueue.Text{Message: "Hi John, how are you?"},
		&enqueue.Image{OriginalURL: "https://example.com/shoe.jpg", Caption: "Back in stock"},
		&enqueue.Audio{URL: "https://example.com/note.mp3"},
		&enqueue.Video{URL: "https://example.com/tour.mp4", Caption: "Our new shop"},
		&enqueue.File{URL: "https://example.com/invoice.pdf", Filename: "invoice-1234.pdf"},
		&enqueue.Location{Latitude: &lat, Longitude: &lng, Name: "India Gate"},
		&enqueue.Contact{Contact: enqueue.ContactCard{
			Name:   enqueue.ContactName{FormattedName: "Support"},
			Phones: []enqueue.ContactPhone{{Phone: "+919876543210", Type: "WORK"}},
		}},
		&enqueue.List{
			Body: "What would you like?", MsgID: "menu-1",
			GlobalButtons: []enqueue.ListButton{{Type: "text", Title: "Menu"}},
			Items: []enqueue.ListItem{{Options: []enqueue.ListOption{
				{Type: "text", Title: "Pizza"}, {Type: "text", Title: "Pasta"},
			}}},
		},
		&enqueue.QuickReply{
			Content: enqueue.ReplyContent{Type: "text", Text: "Is 3pm a good time for delivery?"},
			Options: []enqueue.ReplyOption{{Type: "text", Title: "Yes"}, {Type: "text", Title: "No"}},
		},
		&enqueue.Template{Template: enqueue.TemplateSpec{
			ElementName: "order_update", LanguageCode: "en_US", Params: []string{"John", "1234"},
		}},
	}
	for _, p := range payloads {
		m := &enqueue.Message{Destination: "+96996999699", Payload: p}
		fmt.Println(p.Type(), m.Validate(time.Now()))
	}
	// Output:
	// text <nil>
	// image <nil>
	// audio <nil>
	// video <nil>
	// file <nil>
	// location <nil>
	// contact <nil>
	// list <nil>
	// quick_reply <nil>
	// template <nil>
}

func ExampleDecodeMessage() {
	// The body an application posts to ChatArchitect today.
	body := []byte(`{
		"channel": "whatsapp",
		"destination": "96996999699",
		"payload": {"type": "image", "originalUrl": "ftp://example.com/a.jpg"}
	}`)
	m, err := enqueue.DecodeMessage(body)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(m.Payload.Type())

	var invalid *enqueue.ValidationError
	if errors.As(m.Validate(time.Now()), &invalid) {
		fmt.Println(invalid.Field)
		fmt.Println(invalid)
	}

	// A misspelt field is refused, not ignored.
	_, err = enqueue.DecodeMessage([]byte(`{"destination":"96996999699","payload":{"type":"text","mesage":"Hi"}}`))
	fmt.Println(err)
	// Output:
	// image
	// payload.originalUrl
	// payload.originalUrl must be an http or https URL
	// payload.mesage is not a known field
}
