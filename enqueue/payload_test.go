package enqueue_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/chatq/chatq/enqueue"
)

func ptr[T any](v T) *T { return &v }

// validPayloads holds at least one valid payload of every type, the fullest
// shapes chatq accepts.
func validPayloads() map[string][]enqueue.Payload {
	return map[string][]enqueue.Payload{
		enqueue.TypeText: {
			&enqueue.Text{Message: "Hi John, how are you?"},
			&enqueue.Text{Message: "See https://example.com", PreviewURL: ptr(true)},
			&enqueue.Text{Message: strings.Repeat("é", enqueue.MaxTextLength)},
		},
		enqueue.TypeImage: {
			&enqueue.Image{OriginalURL: "https://example.com/a.jpg"},
			&enqueue.Image{OriginalURL: "http://example.com/a.png", PreviewURL: "https://example.com/a-small.png", Caption: strings.Repeat("c", enqueue.MaxCaptionLength)},
		},
		enqueue.TypeAudio: {
			&enqueue.Audio{URL: "https://example.com/a.mp3"},
		},
		enqueue.TypeVideo: {
			&enqueue.Video{URL: "https://example.com/a.mp4", Caption: "our new shop"},
		},
		enqueue.TypeFile: {
			&enqueue.File{URL: "https://example.com/invoice.pdf", Filename: "invoice.pdf", Caption: "your invoice"},
		},
		enqueue.TypeLocation: {
			&enqueue.Location{Latitude: ptr(28.6139), Longitude: ptr(77.209), Name: "India Gate", Address: "Rajpath, New Delhi"},
			&enqueue.Location{Latitude: ptr(-90.0), Longitude: ptr(180.0)},
			&enqueue.Location{Latitude: ptr(0.0), Longitude: ptr(0.0)},
		},
		enqueue.TypeContact: {
			&enqueue.Contact{Contact: enqueue.ContactCard{
				Name:   enqueue.ContactName{FormattedName: "John Doe"},
				Phones: []enqueue.ContactPhone{{Phone: "+919876543210"}},
			}},
			&enqueue.Contact{Contact: enqueue.ContactCard{
				Name:      enqueue.ContactName{FormattedName: "Dr John Q Doe Jr", FirstName: "John", LastName: "Doe", MiddleName: "Q", Prefix: "Dr", Suffix: "Jr"},
				Phones:    []enqueue.ContactPhone{{Phone: "+919876543210", Type: "HOME", WaID: "919876543210"}, {Phone: "+14155550100", Type: "WORK"}},
				Emails:    []enqueue.ContactEmail{{Email: "john@example.com", Type: "WORK"}},
				Addresses: []enqueue.ContactAddress{{Street: "1 Main St", City: "Springfield", State: "IL", Zip: "62701", Country: "United States", CountryCode: "us", Type: "HOME"}},
				Org:       &enqueue.ContactOrg{Company: "Example Inc", Department: "Sales", Title: "Manager"},
				URLs:      []enqueue.ContactURL{{URL: "https://example.com", Type: "WORK"}},
			}},
		},
		enqueue.TypeList: {
			&enqueue.List{
				Title: "Our menu", Body: "Pick a dish", MsgID: "menu-1",
				GlobalButtons: []enqueue.ListButton{{Type: "text", Title: "Open menu"}},
				Items: []enqueue.ListItem{{Options: []enqueue.ListOption{
					{Type: "text", Title: "Pizza", Description: "Margherita", PostbackText: "pizza"},
				}}},
			},
			&enqueue.List{
				Body: "Pick a dish", MsgID: "menu-2",
				GlobalButtons: []enqueue.ListButton{{Type: "text", Title: strings.Repeat("b", enqueue.MaxButtonTitle)}},
				Items: []enqueue.ListItem{
					{Title: "Mains", Subtitle: "hot", Options: listRows(5)},
					{Title: "Desserts", Options: listRows(5)},
				},
			},
		},
		enqueue.TypeQuickReply: {
			&enqueue.QuickReply{
				MsgID:   "qr-1",
				Content: enqueue.ReplyContent{Type: "text", Header: "Delivery", Text: "Is now a good time?"},
				Options: []enqueue.ReplyOption{{Type: "text", Title: "Yes", PostbackText: "yes"}, {Type: "text", Title: "No"}, {Type: "text", Title: strings.Repeat("t", enqueue.MaxButtonTitle)}},
			},
			&enqueue.QuickReply{
				Content: enqueue.ReplyContent{Type: "file", URL: "https://example.com/a.pdf", Filename: "a.pdf", Caption: "the terms"},
				Options: []enqueue.ReplyOption{{Type: "text", Title: "I agree"}},
			},
		},
		enqueue.TypeTemplate: {
			&enqueue.Template{Template: enqueue.TemplateSpec{ElementName: "order_update", LanguageCode: "en_US", Params: []string{"John", "1234"}}},
			&enqueue.Template{Template: enqueue.TemplateSpec{ElementName: "hello", LanguageCode: "en", Params: []string{}}},
		},
	}
}

func listRows(n int) []enqueue.ListOption {
	rows := make([]enqueue.ListOption, n)
	for i := range rows {
		rows[i] = enqueue.ListOption{Type: "text", Title: fmt.Sprintf("Row %d", i+1)}
	}
	return rows
}

func TestValidPayloadsRoundTrip(t *testing.T) {
	t.Parallel()
	all := validPayloads()
	for _, typ := range enqueue.PayloadTypes {
		if len(all[typ]) == 0 {
			t.Errorf("no valid example of %q", typ)
		}
	}
	for typ, examples := range all {
		for i, p := range examples {
			t.Run(fmt.Sprintf("%s/%d", typ, i), func(t *testing.T) {
				t.Parallel()
				if got := p.Type(); got != typ {
					t.Fatalf("Type() = %q, want %q", got, typ)
				}
				if err := enqueue.ValidatePayload(p); err != nil {
					t.Fatalf("ValidatePayload: %v", err)
				}
				b, err := json.Marshal(p)
				if err != nil {
					t.Fatalf("Marshal: %v", err)
				}
				var head struct{ Type string }
				if err := json.Unmarshal(b, &head); err != nil || head.Type != typ {
					t.Fatalf("wire form %s: type %q, want %q (%v)", b, head.Type, typ, err)
				}
				got, err := enqueue.ParsePayload(b)
				if err != nil {
					t.Fatalf("ParsePayload(%s): %v", b, err)
				}
				if diff := cmp.Diff(p, got); diff != "" {
					t.Errorf("round trip through %s (-want +got):\n%s", b, diff)
				}
			})
		}
	}
}

// TestPayloadWireNames pins ChatArchitect's own field names, which differ
// from chatq's snake_case.
func TestPayloadWireNames(t *testing.T) {
	t.Parallel()
	tests := []struct {
		p    enqueue.Payload
		want string
	}{
		{&enqueue.Text{Message: "hi"}, `{"type":"text","message":"hi"}`},
		{&enqueue.Image{OriginalURL: "https://e.com/a.jpg", PreviewURL: "https://e.com/b.jpg"}, `{"type":"image","originalUrl":"https://e.com/a.jpg","previewUrl":"https://e.com/b.jpg"}`},
		{&enqueue.Location{Latitude: ptr(1.5), Longitude: ptr(-2.0)}, `{"type":"location","latitude":1.5,"longitude":-2}`},
		{&enqueue.Template{Template: enqueue.TemplateSpec{ElementName: "a", LanguageCode: "en", Params: []string{"x"}}}, `{"type":"template","template":{"elementName":"a","languageCode":"en","params":["x"]}}`},
	}
	for _, tt := range tests {
		b, err := json.Marshal(tt.p)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != tt.want {
			t.Errorf("Marshal(%T) = %s, want %s", tt.p, b, tt.want)
		}
	}
}

func TestInvalidPayloads(t *testing.T) {
	t.Parallel()
	long := func(n int) string { return strings.Repeat("x", n) }
	options := func(n int) string {
		o := make([]string, n)
		for i := range o {
			o[i] = fmt.Sprintf(`{"type":"text","title":"option %d"}`, i)
		}
		return "[" + strings.Join(o, ",") + "]"
	}
	rows := func(n int) string {
		o := make([]string, n)
		for i := range o {
			o[i] = fmt.Sprintf(`{"type":"text","title":"row %d"}`, i)
		}
		return "[" + strings.Join(o, ",") + "]"
	}
	list := func(mutate string) string {
		base := map[string]string{
			"body":          `"Pick one"`,
			"msgid":         `"m1"`,
			"globalButtons": `[{"type":"text","title":"Open"}]`,
			"items":         `[{"options":[{"type":"text","title":"row"}]}]`,
		}
		for kv := range strings.SplitSeq(mutate, ";") {
			if k, v, ok := strings.Cut(kv, "="); ok {
				if v == "" {
					delete(base, k)
				} else {
					base[k] = v
				}
			}
		}
		parts := []string{`"type":"list"`}
		for _, k := range []string{"body", "msgid", "globalButtons", "items"} {
			if v, ok := base[k]; ok {
				parts = append(parts, fmt.Sprintf("%q:%s", k, v))
			}
		}
		return "{" + strings.Join(parts, ",") + "}"
	}
	qr := `{"type":"quick_reply","content":{"type":"text","text":"Now?"},"options":%s}`
	tests := []struct {
		name      string
		json      string
		wantField string
	}{
		// Shape: what ParsePayload refuses.
		{"not JSON", `{"type":"text",`, "payload"},
		{"not an object", `"hello"`, "payload"},
		{"array", `[{"type":"text","message":"hi"}]`, "payload"},
		{"missing type", `{"message":"hi"}`, "payload.type"},
		{"empty type", `{"type":"","message":"hi"}`, "payload.type"},
		{"unknown type", `{"type":"sticker","url":"https://e.com/a.webp"}`, "payload.type"},
		{"type of wrong JSON type", `{"type":1,"message":"hi"}`, "payload.type"},
		{"unknown field mesage", `{"type":"text","mesage":"hi"}`, "payload.mesage"},
		{"text message of wrong JSON type", `{"type":"text","message":42}`, "payload.message"},
		{"text previewUrl of wrong JSON type", `{"type":"text","message":"hi","previewUrl":"yes"}`, "payload.previewUrl"},
		{"trailing data", `{"type":"text","message":"hi"} {}`, "payload"},
		{"latitude as string", `{"type":"location","latitude":"12.5","longitude":1}`, "payload.latitude"},
		{"latitude out of float range", `{"type":"location","latitude":1e999,"longitude":1}`, "payload.latitude"},
		{"contact phones not an array", `{"type":"contact","contact":{"name":{"formattedName":"J"},"phones":"+911234567890"}}`, "payload.contact.phones"},
		{"template params not strings", `{"type":"template","template":{"elementName":"a","languageCode":"en","params":[1]}}`, "payload.template.params"},
		{"unknown nested field", `{"type":"template","template":{"elementName":"a","languageCode":"en","params":[],"namespace":"x"}}`, "payload.template.namespace"},
		{"unknown field in a list row", `{"type":"list","body":"b","msgid":"m","globalButtons":[{"type":"text","title":"t"}],"items":[{"options":[{"type":"text","title":"a"},{"type":"text","title":"b","descripton":"x"}]}]}`, "payload.items[0].options[1].descripton"},
		{"unknown field in a contact name", `{"type":"contact","contact":{"name":{"formatedName":"J"},"phones":[{"phone":"1"}]}}`, "payload.contact.name.formatedName"},

		// Content: what ValidatePayload refuses.
		{"text missing message", `{"type":"text"}`, "payload.message"},
		{"text empty message", `{"type":"text","message":""}`, "payload.message"},
		{"text 4097 characters", `{"type":"text","message":"` + long(4097) + `"}`, "payload.message"},

		{"image missing originalUrl", `{"type":"image"}`, "payload.originalUrl"},
		{"image ftp URL", `{"type":"image","originalUrl":"ftp://e.com/a.jpg"}`, "payload.originalUrl"},
		{"image javascript URL", `{"type":"image","originalUrl":"javascript:alert(1)"}`, "payload.originalUrl"},
		{"image URL without host", `{"type":"image","originalUrl":"https:///a.jpg"}`, "payload.originalUrl"},
		{"image relative URL", `{"type":"image","originalUrl":"/a.jpg"}`, "payload.originalUrl"},
		{"image bad previewUrl", `{"type":"image","originalUrl":"https://e.com/a.jpg","previewUrl":"file:///etc/passwd"}`, "payload.previewUrl"},
		{"image caption 1025", `{"type":"image","originalUrl":"https://e.com/a.jpg","caption":"` + long(1025) + `"}`, "payload.caption"},

		{"audio missing url", `{"type":"audio"}`, "payload.url"},
		{"audio ftp URL", `{"type":"audio","url":"ftp://e.com/a.mp3"}`, "payload.url"},
		{"audio URL over 2048", `{"type":"audio","url":"https://e.com/` + long(2048) + `"}`, "payload.url"},

		{"video missing url", `{"type":"video","caption":"hi"}`, "payload.url"},
		{"video javascript URL", `{"type":"video","url":"javascript:void(0)"}`, "payload.url"},
		{"video caption 1025", `{"type":"video","url":"https://e.com/a.mp4","caption":"` + long(1025) + `"}`, "payload.caption"},

		{"file missing url", `{"type":"file","filename":"a.pdf"}`, "payload.url"},
		{"file missing filename", `{"type":"file","url":"https://e.com/a.pdf"}`, "payload.filename"},
		{"file ftp URL", `{"type":"file","url":"ftp://e.com/a.pdf","filename":"a.pdf"}`, "payload.url"},
		{"file caption 1025", `{"type":"file","url":"https://e.com/a.pdf","filename":"a.pdf","caption":"` + long(1025) + `"}`, "payload.caption"},

		{"location missing latitude", `{"type":"location","longitude":1}`, "payload.latitude"},
		{"location missing longitude", `{"type":"location","latitude":1}`, "payload.longitude"},
		{"location latitude 91", `{"type":"location","latitude":91,"longitude":0}`, "payload.latitude"},
		{"location latitude -90.5", `{"type":"location","latitude":-90.5,"longitude":0}`, "payload.latitude"},
		{"location longitude -181", `{"type":"location","latitude":0,"longitude":-181}`, "payload.longitude"},
		{"location longitude 180.01", `{"type":"location","latitude":0,"longitude":180.01}`, "payload.longitude"},

		{"contact missing card", `{"type":"contact"}`, "payload.contact.name.formattedName"},
		{"contact missing formattedName", `{"type":"contact","contact":{"name":{"firstName":"J"},"phones":[{"phone":"+911234567890"}]}}`, "payload.contact.name.formattedName"},
		{"contact without phones", `{"type":"contact","contact":{"name":{"formattedName":"J"},"phones":[]}}`, "payload.contact.phones"},
		{"contact empty phone", `{"type":"contact","contact":{"name":{"formattedName":"J"},"phones":[{"phone":"+911234567890"},{"type":"HOME"}]}}`, "payload.contact.phones[1].phone"},
		{"contact empty email", `{"type":"contact","contact":{"name":{"formattedName":"J"},"phones":[{"phone":"1"}],"emails":[{"type":"WORK"}]}}`, "payload.contact.emails[0].email"},
		{"contact ftp URL", `{"type":"contact","contact":{"name":{"formattedName":"J"},"phones":[{"phone":"1"}],"urls":[{"url":"ftp://e.com"}]}}`, "payload.contact.urls[0].url"},

		{"quick_reply no options", fmt.Sprintf(qr, `[]`), "payload.options"},
		{"quick_reply options missing", `{"type":"quick_reply","content":{"type":"text","text":"Now?"}}`, "payload.options"},
		{"quick_reply 4 options", fmt.Sprintf(qr, options(4)), "payload.options"},
		{"quick_reply 21-character title", fmt.Sprintf(qr, `[{"type":"text","title":"ok"},{"type":"text","title":"`+long(21)+`"}]`), "payload.options[1].title"},
		{"quick_reply empty title", fmt.Sprintf(qr, `[{"type":"text","title":""}]`), "payload.options[0].title"},
		{"quick_reply option type", fmt.Sprintf(qr, `[{"type":"button","title":"ok"}]`), "payload.options[0].type"},
		{"quick_reply missing content type", `{"type":"quick_reply","content":{"text":"Now?"},"options":[{"type":"text","title":"ok"}]}`, "payload.content.type"},
		{"quick_reply unknown content type", `{"type":"quick_reply","content":{"type":"audio","text":"Now?"},"options":[{"type":"text","title":"ok"}]}`, "payload.content.type"},
		{"quick_reply missing text", `{"type":"quick_reply","content":{"type":"text"},"options":[{"type":"text","title":"ok"}]}`, "payload.content.text"},
		{"quick_reply header 61", `{"type":"quick_reply","content":{"type":"text","text":"Now?","header":"` + long(61) + `"},"options":[{"type":"text","title":"ok"}]}`, "payload.content.header"},
		{"quick_reply image without url", `{"type":"quick_reply","content":{"type":"image","text":"Now?"},"options":[{"type":"text","title":"ok"}]}`, "payload.content.url"},
		{"quick_reply image javascript url", `{"type":"quick_reply","content":{"type":"image","url":"javascript:x"},"options":[{"type":"text","title":"ok"}]}`, "payload.content.url"},

		{"list missing body", list("body="), "payload.body"},
		{"list missing msgid", list("msgid="), "payload.msgid"},
		{"list no global button", list("globalButtons=[]"), "payload.globalButtons"},
		{"list 2 global buttons", list(`globalButtons=[{"type":"text","title":"A"},{"type":"text","title":"B"}]`), "payload.globalButtons"},
		{"list button title 21", list(`globalButtons=[{"type":"text","title":"` + long(21) + `"}]`), "payload.globalButtons[0].title"},
		{"list no items", list("items=[]"), "payload.items"},
		{"list 11 rows in one section", list(`items=[{"options":` + rows(11) + `}]`), "payload.items"},
		{"list 11 rows in two sections", list(`items=[{"title":"A","options":` + rows(6) + `},{"title":"B","options":` + rows(5) + `}]`), "payload.items"},
		{"list 11 sections", list(`items=[` + strings.TrimSuffix(strings.Repeat(`{"title":"S","options":[{"type":"text","title":"r"}]},`, 11), ",") + `]`), "payload.items"},
		{"list 25-character row title", list(`items=[{"options":[{"type":"text","title":"ok"},{"type":"text","title":"` + long(25) + `"}]}]`), "payload.items[0].options[1].title"},
		{"list row description 73", list(`items=[{"options":[{"type":"text","title":"ok","description":"` + long(73) + `"}]}]`), "payload.items[0].options[0].description"},
		{"list section without rows", list(`items=[{"title":"A","options":[]}]`), "payload.items[0].options"},
		{"list untitled section among several", list(`items=[{"title":"A","options":[{"type":"text","title":"r"}]},{"options":[{"type":"text","title":"r"}]}]`), "payload.items[1].title"},

		{"template missing elementName", `{"type":"template","template":{"languageCode":"en","params":[]}}`, "payload.template.elementName"},
		{"template bad elementName", `{"type":"template","template":{"elementName":"Order-Update","languageCode":"en","params":[]}}`, "payload.template.elementName"},
		{"template elementName with space", `{"type":"template","template":{"elementName":"order update","languageCode":"en","params":[]}}`, "payload.template.elementName"},
		{"template missing languageCode", `{"type":"template","template":{"elementName":"a","params":[]}}`, "payload.template.languageCode"},
		{"template bad languageCode", `{"type":"template","template":{"elementName":"a","languageCode":"english","params":[]}}`, "payload.template.languageCode"},
		{"template empty param", `{"type":"template","template":{"elementName":"a","languageCode":"en","params":["John",""]}}`, "payload.template.params[1]"},
		{"template param 1025", `{"type":"template","template":{"elementName":"a","languageCode":"en","params":["` + long(1025) + `"]}}`, "payload.template.params[0]"},
	}
	covered := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := parseAndValidate([]byte(tt.json))
			var ve *enqueue.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error = %v (%T), want a *ValidationError for %s", err, err, tt.wantField)
			}
			if ve.Field != tt.wantField {
				t.Errorf("Field = %q, want %q (error: %v)", ve.Field, tt.wantField, err)
			}
			if ve.Reason == "" || !strings.HasPrefix(err.Error(), ve.Field+" ") {
				t.Errorf("Error() = %q: want the field, then a reason", err)
			}
		})
		var head struct{ Type string }
		_ = json.Unmarshal([]byte(tt.json), &head)
		covered[head.Type] = true
	}
	for _, typ := range enqueue.PayloadTypes {
		if !covered[typ] {
			t.Errorf("no invalid example of %q", typ)
		}
	}
}

// parseAndValidate is what every entry point does with a payload.
func parseAndValidate(data []byte) error {
	p, err := enqueue.ParsePayload(data)
	if err != nil {
		return err
	}
	return enqueue.ValidatePayload(p)
}

func TestValidatePayloadNil(t *testing.T) {
	t.Parallel()
	var ve *enqueue.ValidationError
	if err := enqueue.ValidatePayload(nil); !errors.As(err, &ve) || ve.Field != "payload" {
		t.Errorf("ValidatePayload(nil) = %v, want a payload error", err)
	}
}

func TestMessageValidate(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	valid := func() *enqueue.Message {
		return &enqueue.Message{
			Channel:     enqueue.ChannelWhatsApp,
			Destination: "96996999699",
			Payload:     &enqueue.Text{Message: "Your code is 123456"},
		}
	}
	metadata := func(n int) map[string]string {
		m := make(map[string]string, n)
		for i := range n {
			m[fmt.Sprintf("k%d", i)] = "v"
		}
		return m
	}
	tests := []struct {
		name      string
		mutate    func(m *enqueue.Message)
		wantField string // "" means valid
	}{
		{"minimal", func(m *enqueue.Message) { m.Channel = "" }, ""},
		{"every field", func(m *enqueue.Message) {
			m.Destination = "+96996999699"
			m.IdempotencyKey = strings.Repeat("k", enqueue.MaxIdempotencyKey)
			m.Priority = enqueue.Bulk
			m.SendAt = now.Add(time.Hour)
			m.ExpiresAt = now.Add(2 * time.Hour)
			m.CallbackURL = "https://app.example.com/chatq-events"
			m.FallbackTemplate = &enqueue.TemplateSpec{ElementName: "we_miss_you", LanguageCode: "en_US", Params: []string{"John"}}
			m.BatchID = "black-friday-2026"
			m.Metadata = metadata(enqueue.MaxMetadataKeys)
		}, ""},
		{"8 digits", func(m *enqueue.Message) { m.Destination = "12345678" }, ""},
		{"15 digits", func(m *enqueue.Message) { m.Destination = "123456789012345" }, ""},
		{"send_at in the past sends now", func(m *enqueue.Message) { m.SendAt = now.Add(-time.Hour) }, ""},

		{"channel sms", func(m *enqueue.Message) { m.Channel = "sms" }, "channel"},
		{"channel WhatsApp", func(m *enqueue.Message) { m.Channel = "WhatsApp" }, "channel"},
		{"destination missing", func(m *enqueue.Message) { m.Destination = "" }, "destination"},
		{"destination 7 digits", func(m *enqueue.Message) { m.Destination = "1234567" }, "destination"},
		{"destination letters", func(m *enqueue.Message) { m.Destination = "96996abc699" }, "destination"},
		{"destination 16 digits", func(m *enqueue.Message) { m.Destination = "1234567890123456" }, "destination"},
		{"destination with spaces", func(m *enqueue.Message) { m.Destination = "+91 98765 43210" }, "destination"},
		{"destination two plus signs", func(m *enqueue.Message) { m.Destination = "++919876543210" }, "destination"},
		{"payload missing", func(m *enqueue.Message) { m.Payload = nil }, "payload"},
		{"payload invalid", func(m *enqueue.Message) { m.Payload = &enqueue.Text{} }, "payload.message"},
		{"priority urgent", func(m *enqueue.Message) { m.Priority = "urgent" }, "priority"},
		{"idempotency key too long", func(m *enqueue.Message) { m.IdempotencyKey = strings.Repeat("k", enqueue.MaxIdempotencyKey+1) }, "idempotency_key"},
		{"batch id too long", func(m *enqueue.Message) { m.BatchID = strings.Repeat("b", enqueue.MaxBatchID+1) }, "batch_id"},
		{"expires_at in the past", func(m *enqueue.Message) { m.ExpiresAt = now.Add(-time.Second) }, "expires_at"},
		{"expires_at now", func(m *enqueue.Message) { m.ExpiresAt = now }, "expires_at"},
		{"expires_at before send_at", func(m *enqueue.Message) {
			m.SendAt = now.Add(2 * time.Hour)
			m.ExpiresAt = now.Add(time.Hour)
		}, "expires_at"},
		{"send_at beyond a year", func(m *enqueue.Message) { m.SendAt = now.AddDate(1, 0, 1) }, "send_at"},
		{"ordered and scheduled for later", func(m *enqueue.Message) {
			yes := true
			m.SendAt, m.Ordered = now.Add(time.Hour), &yes
		}, "ordered"},
		{"callback_url ftp", func(m *enqueue.Message) { m.CallbackURL = "ftp://app.example.com/x" }, "callback_url"},
		{"callback_url not a URL", func(m *enqueue.Message) { m.CallbackURL = "app.example.com/x" }, "callback_url"},
		{"fallback template bad name", func(m *enqueue.Message) {
			m.FallbackTemplate = &enqueue.TemplateSpec{ElementName: "We Miss You", LanguageCode: "en"}
		}, "fallback_template.elementName"},
		{"metadata too many keys", func(m *enqueue.Message) { m.Metadata = metadata(enqueue.MaxMetadataKeys + 1) }, "metadata"},
		{"metadata empty key", func(m *enqueue.Message) { m.Metadata = map[string]string{"": "v"} }, "metadata"},
		{"metadata long key", func(m *enqueue.Message) {
			m.Metadata = map[string]string{strings.Repeat("k", enqueue.MaxMetadataKey+1): "v"}
		}, "metadata"},
		{"metadata long value", func(m *enqueue.Message) {
			m.Metadata = map[string]string{"order": strings.Repeat("v", enqueue.MaxMetadataValue+1)}
		}, "metadata.order"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := valid()
			tt.mutate(m)
			err := m.Validate(now)
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			var ve *enqueue.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Validate = %v (%T), want a *ValidationError for %s", err, err, tt.wantField)
			}
			if ve.Field != tt.wantField {
				t.Errorf("Field = %q, want %q (error: %v)", ve.Field, tt.wantField, err)
			}
		})
	}
}

func TestDecodeMessage(t *testing.T) {
	t.Parallel()
	body := `{
		"channel": "whatsapp",
		"destination": "96996999699",
		"payload": {"type": "text", "message": "Hi John, how are you?"},
		"idempotency_key": "order-1234-confirmation",
		"priority": "transactional",
		"send_at": "2026-11-25T10:00:00Z",
		"expires_at": "2026-11-25T10:05:00Z",
		"callback_url": "https://app.example.com/chatq-events",
		"fallback_template": {"elementName": "we_miss_you", "languageCode": "en_US", "params": ["John"]},
		"batch_id": "black-friday-2026",
		"metadata": {"order_id": "1234"}
	}`
	want := &enqueue.Message{
		Channel:          "whatsapp",
		Destination:      "96996999699",
		Payload:          &enqueue.Text{Message: "Hi John, how are you?"},
		IdempotencyKey:   "order-1234-confirmation",
		Priority:         enqueue.Transactional,
		SendAt:           time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC),
		ExpiresAt:        time.Date(2026, 11, 25, 10, 5, 0, 0, time.UTC),
		CallbackURL:      "https://app.example.com/chatq-events",
		FallbackTemplate: &enqueue.TemplateSpec{ElementName: "we_miss_you", LanguageCode: "en_US", Params: []string{"John"}},
		BatchID:          "black-friday-2026",
		Metadata:         map[string]string{"order_id": "1234"},
	}
	got, err := enqueue.DecodeMessage([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("DecodeMessage (-want +got):\n%s", diff)
	}
	// The JSON form decodes back to the same message.
	b, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	again, err := enqueue.DecodeMessage(b)
	if err != nil {
		t.Fatalf("DecodeMessage(%s): %v", b, err)
	}
	if diff := cmp.Diff(want, again); diff != "" {
		t.Errorf("DecodeMessage(Marshal) (-want +got):\n%s", diff)
	}
}

func TestDecodeMessageErrors(t *testing.T) {
	t.Parallel()
	const text = `"payload":{"type":"text","message":"hi"}`
	tests := []struct {
		name      string
		json      string
		wantField string
	}{
		{"empty", ``, "body"},
		{"broken", `{"destination":`, "body"},
		{"array", `[]`, "body"},
		{"trailing garbage", `{"destination":"96996999699",` + text + `} x`, "body"},
		{"unknown field", `{"destination":"96996999699",` + text + `,"mesage":"hi"}`, "mesage"},
		{"unknown field in fallback_template", `{"destination":"96996999699",` + text + `,"fallback_template":{"element_name":"a"}}`, "fallback_template.element_name"},
		{"destination number", `{"destination":96996999699,` + text + `}`, "destination"},
		{"payload string", `{"destination":"96996999699","payload":"hi"}`, "payload"},
		{"payload unknown field", `{"destination":"96996999699","payload":{"type":"text","mesage":"hi"}}`, "payload.mesage"},
		{"priority number", `{"destination":"96996999699",` + text + `,"priority":1}`, "priority"},
		{"ordered string", `{"destination":"96996999699",` + text + `,"ordered":"no"}`, "ordered"},
		{"metadata array", `{"destination":"96996999699",` + text + `,"metadata":[]}`, "metadata"},
		{"send_at not a time", `{"destination":"96996999699",` + text + `,"send_at":"tomorrow"}`, "send_at"},
		{"send_at number", `{"destination":"96996999699",` + text + `,"send_at":1764064800}`, "send_at"},
		{"expires_at not a time", `{"destination":"96996999699",` + text + `,"expires_at":"10:05"}`, "expires_at"},
		{"fallback_template string", `{"destination":"96996999699",` + text + `,"fallback_template":"we_miss_you"}`, "fallback_template"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := enqueue.DecodeMessage([]byte(tt.json))
			var ve *enqueue.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("DecodeMessage = %v (%T), want a *ValidationError for %s", err, err, tt.wantField)
			}
			if ve.Field != tt.wantField {
				t.Errorf("Field = %q, want %q (error: %v)", ve.Field, tt.wantField, err)
			}
		})
	}
}

func FuzzParsePayload(f *testing.F) {
	seeds := []string{
		`{"type":"text","message":"Hi John, how are you?"}`,
		`{"type":"text","message":"https://example.com","previewUrl":true}`,
		`{"type":"image","originalUrl":"https://e.com/a.jpg","previewUrl":"https://e.com/b.jpg","caption":"hi"}`,
		`{"type":"audio","url":"https://e.com/a.mp3"}`,
		`{"type":"video","url":"https://e.com/a.mp4","caption":"hi"}`,
		`{"type":"file","url":"https://e.com/a.pdf","filename":"a.pdf","caption":"hi"}`,
		`{"type":"location","latitude":28.6139,"longitude":77.209,"name":"India Gate","address":"Rajpath"}`,
		`{"type":"contact","contact":{"name":{"formattedName":"John Doe","firstName":"John"},"phones":[{"phone":"+919876543210","type":"HOME","wa_id":"919876543210"}],"emails":[{"email":"j@e.com"}],"addresses":[{"city":"Delhi"}],"org":{"company":"E"},"urls":[{"url":"https://e.com"}]}}`,
		`{"type":"list","title":"Menu","body":"Pick","msgid":"m1","globalButtons":[{"type":"text","title":"Open"}],"items":[{"title":"Mains","subtitle":"hot","options":[{"type":"text","title":"Pizza","description":"cheese","postbackText":"pizza"}]}]}`,
		`{"type":"quick_reply","msgid":"q1","content":{"type":"text","header":"Hi","text":"Now?"},"options":[{"type":"text","title":"Yes","postbackText":"yes"},{"type":"text","title":"No"}]}`,
		`{"type":"quick_reply","content":{"type":"file","url":"https://e.com/a.pdf","filename":"a.pdf","caption":"terms"},"options":[{"type":"text","title":"OK"}]}`,
		`{"type":"template","template":{"elementName":"order_update","languageCode":"en_US","params":["John","1234"]}}`,
		`{"type":"sticker"}`,
		`{"type":"text","mesage":"hi"}`,
		`[]`,
		`null`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := enqueue.ParsePayload(data)
		if err != nil {
			var ve *enqueue.ValidationError
			if !errors.As(err, &ve) || !strings.HasPrefix(ve.Field, "payload") {
				t.Fatalf("ParsePayload error %v (%T) is not a *ValidationError under payload", err, err)
			}
			return
		}
		if enqueue.ValidatePayload(p) != nil {
			return
		}
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatalf("Marshal of a valid %T: %v", p, err)
		}
		again, err := enqueue.ParsePayload(b)
		if err != nil {
			t.Fatalf("ParsePayload(%s) of a re-marshaled payload: %v", b, err)
		}
		// An empty optional list is dropped by omitempty: it means the same.
		if diff := cmp.Diff(p, again, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("re-parse of %s differs (-first +second):\n%s", b, diff)
		}
		if err := enqueue.ValidatePayload(again); err != nil {
			t.Fatalf("re-parsed payload %s no longer valid: %v", b, err)
		}
	})
}
