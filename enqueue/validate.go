package enqueue

import (
	"fmt"
	"net/url"
	"regexp"
	"unicode/utf8"
)

// WhatsApp's limits, in characters (Unicode code points).
const (
	MaxTextLength        = 4096 // text message body
	MaxCaptionLength     = 1024 // media caption
	MaxInteractiveBody   = 1024 // list and quick-reply body text
	MaxHeaderLength      = 60   // list title, quick-reply header
	MaxButtonTitle       = 20   // quick-reply button and list button titles
	MaxQuickReplyOptions = 3
	MaxListRows          = 10 // rows across all sections of a list
	MaxListSections      = 10
	MaxListRowTitle      = 24
	MaxListRowDesc       = 72
	MaxPostbackText      = 1000
	MaxFilenameLength    = 240
	MaxTemplateParam     = 1024
	MaxURLLength         = 2048
	MaxNameLength        = 1000 // location name and address, contact fields
)

var (
	destinationRe  = regexp.MustCompile(`^\+?[0-9]{8,15}$`)
	elementNameRe  = regexp.MustCompile(`^[a-z0-9_]{1,512}$`)
	languageCodeRe = regexp.MustCompile(`^[a-z]{2,3}(_[A-Za-z]{2,4})?$`)
)

// ValidatePayload checks p against WhatsApp's rules for its type and returns
// a *ValidationError naming the first offending field (under "payload."),
// or nil.
func ValidatePayload(p Payload) error {
	if p == nil {
		return &ValidationError{Field: "payload", Reason: "is required"}
	}
	v := &validator{}
	v.at("payload", func() { p.validate(v) })
	return v.err
}

// ValidateDestination checks a recipient number: digits only after an
// optional "+", 8 to 15 of them.
func ValidateDestination(field, number string) error {
	if number == "" {
		return &ValidationError{Field: field, Reason: "is required"}
	}
	if !destinationRe.MatchString(number) {
		return &ValidationError{Field: field, Reason: fmt.Sprintf("must be a phone number of 8 to 15 digits with an optional leading +, not %q", number)}
	}
	return nil
}

// validator records the first error found, with the path that led to it.
type validator struct {
	path []string
	err  error
}

func (v *validator) at(name string, check func()) {
	v.path = append(v.path, name)
	check()
	v.path = v.path[:len(v.path)-1]
}

func (v *validator) atIndex(i int, check func()) {
	last := len(v.path) - 1
	saved := v.path[last]
	v.path[last] = fmt.Sprintf("%s[%d]", saved, i)
	check()
	v.path[last] = saved
}

func (v *validator) field(name string) string {
	f := ""
	for _, p := range v.path {
		if f != "" {
			f += "."
		}
		f += p
	}
	if name != "" {
		if f != "" {
			f += "."
		}
		f += name
	}
	return f
}

func (v *validator) fail(name, reason string) {
	if v.err == nil {
		v.err = &ValidationError{Field: v.field(name), Reason: reason}
	}
}

// required fails when s is empty and checks its length otherwise.
func (v *validator) required(name, s string, max int) {
	if s == "" {
		v.fail(name, "is required")
		return
	}
	v.maxLen(name, s, max)
}

func (v *validator) maxLen(name, s string, max int) {
	if n := utf8.RuneCountInString(s); n > max {
		v.fail(name, fmt.Sprintf("must be at most %d characters, not %d", max, n))
	}
	if !utf8.ValidString(s) {
		v.fail(name, "must be valid UTF-8")
	}
}

func (v *validator) url(name, s string, required bool) {
	if s == "" {
		if required {
			v.fail(name, "is required")
		}
		return
	}
	v.maxLen(name, s, MaxURLLength)
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.fail(name, "must be an http or https URL")
	}
}

func (v *validator) oneOf(name, s string, allowed ...string) {
	for _, a := range allowed {
		if s == a {
			return
		}
	}
	if s == "" {
		v.fail(name, "is required")
		return
	}
	v.fail(name, fmt.Sprintf("must be one of %v, not %q", allowed, s))
}

func (p *Text) validate(v *validator) {
	v.required("message", p.Message, MaxTextLength)
}

func (p *Image) validate(v *validator) {
	v.url("originalUrl", p.OriginalURL, true)
	v.url("previewUrl", p.PreviewURL, false)
	v.maxLen("caption", p.Caption, MaxCaptionLength)
}

func (p *Audio) validate(v *validator) {
	v.url("url", p.URL, true)
}

func (p *Video) validate(v *validator) {
	v.url("url", p.URL, true)
	v.maxLen("caption", p.Caption, MaxCaptionLength)
}

func (p *File) validate(v *validator) {
	v.url("url", p.URL, true)
	v.required("filename", p.Filename, MaxFilenameLength)
	v.maxLen("caption", p.Caption, MaxCaptionLength)
}

func (p *Location) validate(v *validator) {
	switch {
	case p.Latitude == nil:
		v.fail("latitude", "is required")
	case *p.Latitude < -90 || *p.Latitude > 90:
		v.fail("latitude", fmt.Sprintf("must be between -90 and 90, not %g", *p.Latitude))
	}
	switch {
	case p.Longitude == nil:
		v.fail("longitude", "is required")
	case *p.Longitude < -180 || *p.Longitude > 180:
		v.fail("longitude", fmt.Sprintf("must be between -180 and 180, not %g", *p.Longitude))
	}
	v.maxLen("name", p.Name, MaxNameLength)
	v.maxLen("address", p.Address, MaxNameLength)
}

func (p *Contact) validate(v *validator) {
	v.at("contact", func() {
		c := &p.Contact
		v.at("name", func() {
			v.required("formattedName", c.Name.FormattedName, MaxNameLength)
		})
		if len(c.Phones) == 0 {
			v.fail("phones", "must hold at least one phone")
		}
		v.at("phones", func() {
			for i, ph := range c.Phones {
				v.atIndex(i, func() { v.required("phone", ph.Phone, 64) })
			}
		})
		v.at("emails", func() {
			for i, e := range c.Emails {
				v.atIndex(i, func() { v.required("email", e.Email, 320) })
			}
		})
		v.at("urls", func() {
			for i, u := range c.URLs {
				v.atIndex(i, func() { v.url("url", u.URL, true) })
			}
		})
	})
}

func (p *QuickReply) validate(v *validator) {
	v.maxLen("msgid", p.MsgID, 200)
	v.at("content", func() {
		c := &p.Content
		v.oneOf("type", c.Type, "text", "image", "video", "file")
		switch c.Type {
		case "text":
			v.required("text", c.Text, MaxInteractiveBody)
			v.maxLen("header", c.Header, MaxHeaderLength)
		case "image", "video", "file":
			v.url("url", c.URL, true)
			v.maxLen("text", c.Text, MaxInteractiveBody)
			v.maxLen("caption", c.Caption, MaxCaptionLength)
			if c.Type == "file" {
				v.maxLen("filename", c.Filename, MaxFilenameLength)
			}
		}
	})
	if n := len(p.Options); n < 1 || n > MaxQuickReplyOptions {
		v.fail("options", fmt.Sprintf("must hold 1 to %d options, not %d", MaxQuickReplyOptions, n))
	}
	v.at("options", func() {
		for i, o := range p.Options {
			v.atIndex(i, func() {
				v.oneOf("type", o.Type, "text")
				v.required("title", o.Title, MaxButtonTitle)
				v.maxLen("postbackText", o.PostbackText, MaxPostbackText)
			})
		}
	})
}

func (p *List) validate(v *validator) {
	v.maxLen("title", p.Title, MaxHeaderLength)
	v.required("body", p.Body, MaxInteractiveBody)
	v.required("msgid", p.MsgID, 200)
	v.maxLen("footer", p.Footer, MaxHeaderLength)
	if len(p.GlobalButtons) != 1 {
		v.fail("globalButtons", fmt.Sprintf("must hold exactly one button, not %d", len(p.GlobalButtons)))
	}
	v.at("globalButtons", func() {
		for i, b := range p.GlobalButtons {
			v.atIndex(i, func() {
				v.oneOf("type", b.Type, "text")
				v.required("title", b.Title, MaxButtonTitle)
			})
		}
	})
	if n := len(p.Items); n < 1 || n > MaxListSections {
		v.fail("items", fmt.Sprintf("must hold 1 to %d sections, not %d", MaxListSections, n))
	}
	rows := 0
	v.at("items", func() {
		for i, it := range p.Items {
			rows += len(it.Options)
			v.atIndex(i, func() {
				if len(p.Items) > 1 || it.Title != "" {
					v.required("title", it.Title, MaxListRowTitle)
				}
				v.maxLen("subtitle", it.Subtitle, MaxListRowTitle)
				if len(it.Options) == 0 {
					v.fail("options", "must hold at least one row")
				}
				v.at("options", func() {
					for j, o := range it.Options {
						v.atIndex(j, func() {
							v.oneOf("type", o.Type, "text")
							v.required("title", o.Title, MaxListRowTitle)
							v.maxLen("description", o.Description, MaxListRowDesc)
							v.maxLen("postbackText", o.PostbackText, MaxPostbackText)
						})
					}
				})
			})
		}
	})
	if rows > MaxListRows {
		v.fail("items", fmt.Sprintf("must hold at most %d rows in all, not %d", MaxListRows, rows))
	}
}

func (p *Template) validate(v *validator) {
	v.at("template", func() { p.Template.validate(v) })
}

func (t *TemplateSpec) validate(v *validator) {
	switch {
	case t.ElementName == "":
		v.fail("elementName", "is required")
	case !elementNameRe.MatchString(t.ElementName):
		v.fail("elementName", fmt.Sprintf("must be lowercase letters, digits and underscores, not %q", t.ElementName))
	}
	switch {
	case t.LanguageCode == "":
		v.fail("languageCode", "is required")
	case !languageCodeRe.MatchString(t.LanguageCode):
		v.fail("languageCode", fmt.Sprintf("must be a language code such as en or en_US, not %q", t.LanguageCode))
	}
	v.at("params", func() {
		for i, s := range t.Params {
			v.atIndex(i, func() { v.required("", s, MaxTemplateParam) })
		}
	})
}

// ValidateTemplateSpec checks a template reference such as a message's
// fallback_template; field roots the names in the error.
func ValidateTemplateSpec(field string, t *TemplateSpec) error {
	v := &validator{}
	v.at(field, func() { t.validate(v) })
	return v.err
}
