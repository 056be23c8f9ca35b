package enqueue

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Payload is the content of one WhatsApp message, in ChatArchitect's own
// wire shape. It is one of *Text, *Image, *Audio, *Video, *File, *Location,
// *Contact, *List, *QuickReply or *Template; the set is closed.
//
// A Payload marshals to JSON with its "type" field, exactly as
// ChatArchitect's POST /whatsappmessage expects it.
type Payload interface {
	// Type is the wire name of the payload: "text", "image", ...
	Type() string
	validate(v *validator)
}

// Payload types, by their wire names.
const (
	TypeText       = "text"
	TypeImage      = "image"
	TypeAudio      = "audio"
	TypeVideo      = "video"
	TypeFile       = "file"
	TypeLocation   = "location"
	TypeContact    = "contact"
	TypeList       = "list"
	TypeQuickReply = "quick_reply"
	TypeTemplate   = "template"
)

// PayloadTypes lists every payload type chatq sends, in documentation order.
var PayloadTypes = []string{
	TypeText, TypeImage, TypeAudio, TypeVideo, TypeFile, TypeLocation,
	TypeContact, TypeList, TypeQuickReply, TypeTemplate,
}

// Text is a plain text message. Message holds at most 4096 characters.
type Text struct {
	Message    string `json:"message"`
	PreviewURL *bool  `json:"previewUrl,omitempty"`
	// EncodeText is Gupshup's optional flag for the text's encoding; it is
	// passed through as given.
	EncodeText *bool `json:"encodeText,omitempty"`
}

// Image is a JPEG or PNG picture fetched by WhatsApp from OriginalURL.
type Image struct {
	OriginalURL string `json:"originalUrl"`
	PreviewURL  string `json:"previewUrl,omitempty"`
	Caption     string `json:"caption,omitempty"`
}

// Audio is an MP3, OGG or AAC file fetched by WhatsApp from URL.
type Audio struct {
	URL string `json:"url"`
}

// Video is an MP4 file fetched by WhatsApp from URL.
type Video struct {
	URL     string `json:"url"`
	Caption string `json:"caption,omitempty"`
}

// File is a document fetched by WhatsApp from URL and shown as Filename.
type File struct {
	URL      string `json:"url"`
	Filename string `json:"filename"`
	Caption  string `json:"caption,omitempty"`
}

// Location is a pin on a map.
type Location struct {
	Latitude  *float64 `json:"latitude"`
	Longitude *float64 `json:"longitude"`
	Name      string   `json:"name,omitempty"`
	Address   string   `json:"address,omitempty"`
}

// Contact is a contact card.
type Contact struct {
	Contact ContactCard `json:"contact"`
}

// ContactCard is the card inside a Contact message.
type ContactCard struct {
	Name      ContactName      `json:"name"`
	Phones    []ContactPhone   `json:"phones"`
	Emails    []ContactEmail   `json:"emails,omitempty"`
	Addresses []ContactAddress `json:"addresses,omitempty"`
	Org       *ContactOrg      `json:"org,omitempty"`
	URLs      []ContactURL     `json:"urls,omitempty"`
}

// ContactName is the name on a contact card; FormattedName is required.
type ContactName struct {
	FormattedName string `json:"formattedName"`
	FirstName     string `json:"firstName,omitempty"`
	LastName      string `json:"lastName,omitempty"`
	MiddleName    string `json:"middleName,omitempty"`
	Prefix        string `json:"prefix,omitempty"`
	Suffix        string `json:"suffix,omitempty"`
}

// ContactPhone is one phone number on a contact card.
type ContactPhone struct {
	Phone string `json:"phone"`
	Type  string `json:"type,omitempty"`
	WaID  string `json:"wa_id,omitempty"`
}

// ContactEmail is one e-mail address on a contact card.
type ContactEmail struct {
	Email string `json:"email"`
	Type  string `json:"type,omitempty"`
}

// ContactAddress is one postal address on a contact card.
type ContactAddress struct {
	Street      string `json:"street,omitempty"`
	City        string `json:"city,omitempty"`
	State       string `json:"state,omitempty"`
	Zip         string `json:"zip,omitempty"`
	Country     string `json:"country,omitempty"`
	CountryCode string `json:"countryCode,omitempty"`
	Type        string `json:"type,omitempty"`
}

// ContactOrg is the organisation on a contact card.
type ContactOrg struct {
	Company    string `json:"company,omitempty"`
	Department string `json:"department,omitempty"`
	Title      string `json:"title,omitempty"`
}

// ContactURL is one web address on a contact card.
type ContactURL struct {
	URL  string `json:"url"`
	Type string `json:"type,omitempty"`
}

// QuickReply is an interactive message with one to three reply buttons.
type QuickReply struct {
	MsgID   string        `json:"msgid,omitempty"`
	Content ReplyContent  `json:"content"`
	Options []ReplyOption `json:"options"`
}

// ReplyContent is what a QuickReply shows above its buttons. Type is "text",
// "image", "video" or "file"; the media types need URL (and "file" a Filename).
type ReplyContent struct {
	Type     string `json:"type"`
	Text     string `json:"text"`
	Header   string `json:"header,omitempty"`
	Caption  string `json:"caption,omitempty"`
	URL      string `json:"url,omitempty"`
	Filename string `json:"filename,omitempty"`
}

// ReplyOption is one reply button.
type ReplyOption struct {
	Type         string `json:"type"`
	Title        string `json:"title"`
	PostbackText string `json:"postbackText,omitempty"`
}

// List is an interactive message whose single button opens a menu of up to
// ten rows, grouped in sections (Items).
type List struct {
	Title         string       `json:"title,omitempty"`
	Body          string       `json:"body"`
	MsgID         string       `json:"msgid"`
	Footer        string       `json:"footer,omitempty"`
	GlobalButtons []ListButton `json:"globalButtons"`
	Items         []ListItem   `json:"items"`
}

// ListButton is the button that opens a List.
type ListButton struct {
	Type  string `json:"type"`
	Title string `json:"title"`
}

// ListItem is one section of a List.
type ListItem struct {
	Title    string       `json:"title"`
	Subtitle string       `json:"subtitle,omitempty"`
	Options  []ListOption `json:"options"`
}

// ListOption is one row of a List.
type ListOption struct {
	Type         string `json:"type"`
	Title        string `json:"title"`
	Description  string `json:"description,omitempty"`
	PostbackText string `json:"postbackText,omitempty"`
}

// Template is a pre-approved message template (HSM), the only kind of
// message WhatsApp lets a business send outside a user's 24h window.
type Template struct {
	Template TemplateSpec `json:"template"`
}

// TemplateSpec names an approved template and fills its {{1}}..{{n}}
// placeholders with Params, in order.
type TemplateSpec struct {
	ElementName  string   `json:"elementName"`
	LanguageCode string   `json:"languageCode"`
	Params       []string `json:"params"`
}

// Type implements Payload.
func (*Text) Type() string { return TypeText }

// MarshalJSON encodes the payload with its "type" field.
func (p *Text) MarshalJSON() ([]byte, error) {
	type plain Text
	return json.Marshal(struct {
		Type string `json:"type"`
		*plain
	}{TypeText, (*plain)(p)})
}

// UnmarshalJSON decodes the payload strictly: unknown fields are errors.
func (p *Text) UnmarshalJSON(data []byte) error {
	type plain Text
	return decodeStrict(data, &struct {
		Type string `json:"type"`
		*plain
	}{plain: (*plain)(p)})
}

// Type implements Payload.
func (*Image) Type() string { return TypeImage }

// MarshalJSON encodes the payload with its "type" field.
func (p *Image) MarshalJSON() ([]byte, error) {
	type plain Image
	return json.Marshal(struct {
		Type string `json:"type"`
		*plain
	}{TypeImage, (*plain)(p)})
}

// UnmarshalJSON decodes the payload strictly: unknown fields are errors.
func (p *Image) UnmarshalJSON(data []byte) error {
	type plain Image
	return decodeStrict(data, &struct {
		Type string `json:"type"`
		*plain
	}{plain: (*plain)(p)})
}

// Type implements Payload.
func (*Audio) Type() string { return TypeAudio }

// MarshalJSON encodes the payload with its "type" field.
func (p *Audio) MarshalJSON() ([]byte, error) {
	type plain Audio
	return json.Marshal(struct {
		Type string `json:"type"`
		*plain
	}{TypeAudio, (*plain)(p)})
}

// UnmarshalJSON decodes the payload strictly: unknown fields are errors.
func (p *Audio) UnmarshalJSON(data []byte) error {
	type plain Audio
	return decodeStrict(data, &struct {
		Type string `json:"type"`
		*plain
	}{plain: (*plain)(p)})
}

// Type implements Payload.
func (*Video) Type() string { return TypeVideo }

// MarshalJSON encodes the payload with its "type" field.
func (p *Video) MarshalJSON() ([]byte, error) {
	type plain Video
	return json.Marshal(struct {
		Type string `json:"type"`
		*plain
	}{TypeVideo, (*plain)(p)})
}

// UnmarshalJSON decodes the payload strictly: unknown fields are errors.
func (p *Video) UnmarshalJSON(data []byte) error {
	type plain Video
	return decodeStrict(data, &struct {
		Type string `json:"type"`
		*plain
	}{plain: (*plain)(p)})
}

// Type implements Payload.
func (*File) Type() string { return TypeFile }

// MarshalJSON encodes the payload with its "type" field.
func (p *File) MarshalJSON() ([]byte, error) {
	type plain File
	return json.Marshal(struct {
		Type string `json:"type"`
		*plain
	}{TypeFile, (*plain)(p)})
}

// UnmarshalJSON decodes the payload strictly: unknown fields are errors.
func (p *File) UnmarshalJSON(data []byte) error {
	type plain File
	return decodeStrict(data, &struct {
		Type string `json:"type"`
		*plain
	}{plain: (*plain)(p)})
}

// Type implements Payload.
func (*Location) Type() string { return TypeLocation }

// MarshalJSON encodes the payload with its "type" field.
func (p *Location) MarshalJSON() ([]byte, error) {
	type plain Location
	return json.Marshal(struct {
		Type string `json:"type"`
		*plain
	}{TypeLocation, (*plain)(p)})
}

// UnmarshalJSON decodes the payload strictly: unknown fields are errors.
func (p *Location) UnmarshalJSON(data []byte) error {
	type plain Location
	return decodeStrict(data, &struct {
		Type string `json:"type"`
		*plain
	}{plain: (*plain)(p)})
}

// Type implements Payload.
func (*Contact) Type() string { return TypeContact }

// MarshalJSON encodes the payload with its "type" field.
func (p *Contact) MarshalJSON() ([]byte, error) {
	type plain Contact
	return json.Marshal(struct {
		Type string `json:"type"`
		*plain
	}{TypeContact, (*plain)(p)})
}

// UnmarshalJSON decodes the payload strictly: unknown fields are errors.
func (p *Contact) UnmarshalJSON(data []byte) error {
	type plain Contact
	return decodeStrict(data, &struct {
		Type string `json:"type"`
		*plain
	}{plain: (*plain)(p)})
}

// Type implements Payload.
func (*List) Type() string { return TypeList }

// MarshalJSON encodes the payload with its "type" field.
func (p *List) MarshalJSON() ([]byte, error) {
	type plain List
	return json.Marshal(struct {
		Type string `json:"type"`
		*plain
	}{TypeList, (*plain)(p)})
}

// UnmarshalJSON decodes the payload strictly: unknown fields are errors.
func (p *List) UnmarshalJSON(data []byte) error {
	type plain List
	return decodeStrict(data, &struct {
		Type string `json:"type"`
		*plain
	}{plain: (*plain)(p)})
}

// Type implements Payload.
func (*QuickReply) Type() string { return TypeQuickReply }

// MarshalJSON encodes the payload with its "type" field.
func (p *QuickReply) MarshalJSON() ([]byte, error) {
	type plain QuickReply
	return json.Marshal(struct {
		Type string `json:"type"`
		*plain
	}{TypeQuickReply, (*plain)(p)})
}

// UnmarshalJSON decodes the payload strictly: unknown fields are errors.
func (p *QuickReply) UnmarshalJSON(data []byte) error {
	type plain QuickReply
	return decodeStrict(data, &struct {
		Type string `json:"type"`
		*plain
	}{plain: (*plain)(p)})
}

// Type implements Payload.
func (*Template) Type() string { return TypeTemplate }

// MarshalJSON encodes the payload with its "type" field.
func (p *Template) MarshalJSON() ([]byte, error) {
	type plain Template
	return json.Marshal(struct {
		Type string `json:"type"`
		*plain
	}{TypeTemplate, (*plain)(p)})
}

// UnmarshalJSON decodes the payload strictly: unknown fields are errors.
func (p *Template) UnmarshalJSON(data []byte) error {
	type plain Template
	return decodeStrict(data, &struct {
		Type string `json:"type"`
		*plain
	}{plain: (*plain)(p)})
}

// newPayload returns an empty payload of the named type, or nil.
func newPayload(typ string) Payload {
	switch typ {
	case TypeText:
		return new(Text)
	case TypeImage:
		return new(Image)
	case TypeAudio:
		return new(Audio)
	case TypeVideo:
		return new(Video)
	case TypeFile:
		return new(File)
	case TypeLocation:
		return new(Location)
	case TypeContact:
		return new(Contact)
	case TypeList:
		return new(List)
	case TypeQuickReply:
		return new(QuickReply)
	case TypeTemplate:
		return new(Template)
	}
	return nil
}

// ParsePayload decodes a payload in ChatArchitect's wire shape strictly:
// a missing or unknown type, an unknown field or a value of the wrong JSON
// type is a *ValidationError naming the field (under "payload."). It checks
// the shape only; ValidatePayload checks the content.
func ParsePayload(data []byte) (Payload, error) {
	var head struct {
		Type *string `json:"type"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, jsonError("payload", err)
	}
	if head.Type == nil || *head.Type == "" {
		return nil, &ValidationError{Field: "payload.type", Reason: "is required (one of " + strings.Join(PayloadTypes, ", ") + ")"}
	}
	p := newPayload(*head.Type)
	if p == nil {
		return nil, &ValidationError{Field: "payload.type", Reason: fmt.Sprintf("%q is not a message type (one of %s)", *head.Type, strings.Join(PayloadTypes, ", "))}
	}
	if err := json.Unmarshal(data, p); err != nil {
		return nil, jsonError("payload", err)
	}
	return p, nil
}
