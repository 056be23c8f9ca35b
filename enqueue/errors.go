package enqueue

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"reflect"
	"slices"
	"strings"
)

// ValidationError is a message that chatq refuses as it stands. Field is the
// JSON path of the offending value ("payload.message", "destination",
// "payload.items[0].options[2].title"), Reason says what is wrong with it.
type ValidationError struct {
	Field  string
	Reason string
}

func (e *ValidationError) Error() string {
	if e.Field == "" {
		return e.Reason
	}
	return e.Field + " " + e.Reason
}

// decodeStrict decodes one JSON value into dst, refusing unknown fields and
// trailing data.
func decodeStrict(data []byte, dst any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			name = strings.Trim(name, `"`)
			if path := unknownFieldPath(data, reflect.TypeOf(dst), name); path != "" {
				name = path
			}
			return &unknownFieldError{path: name}
		}
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("unexpected data after the JSON value")
	}
	return nil
}

// jsonError turns an encoding/json error into a *ValidationError whose
// field is rooted at prefix.
func jsonError(prefix string, err error) error {
	var ve *ValidationError
	if errors.As(err, &ve) {
		return ve
	}
	join := func(field string) string {
		if field == "" {
			if prefix == "" {
				return "body"
			}
			return prefix
		}
		if prefix == "" {
			return field
		}
		return prefix + "." + field
	}
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		// The strict decoders wrap the payload structs in a field named
		// "plain"; users never see that name.
		field := strings.ReplaceAll("."+typeErr.Field, ".plain", "")
		return &ValidationError{Field: join(strings.TrimPrefix(field, ".")), Reason: "must be " + jsonKind(typeErr.Type.Kind().String()) + ", not " + typeErr.Value}
	}
	var syntaxErr *json.SyntaxError
	if errors.As(err, &syntaxErr) {
		return &ValidationError{Field: join(""), Reason: fmt.Sprintf("is not valid JSON (offset %d: %s)", syntaxErr.Offset, syntaxErr.Error())}
	}
	var unknown *unknownFieldError
	if errors.As(err, &unknown) {
		return &ValidationError{Field: join(unknown.path), Reason: "is not a known field"}
	}
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		return &ValidationError{Field: join(strings.Trim(name, `"`)), Reason: "is not a known field"}
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return &ValidationError{Field: join(""), Reason: "is not valid JSON (unexpected end)"}
	}
	return &ValidationError{Field: join(""), Reason: "is not valid: " + strings.TrimPrefix(msg, "json: ")}
}

func jsonKind(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "float64", "float32", "int", "int64", "int32", "uint", "uint64":
		return "a number"
	case "bool":
		return "true or false"
	case "slice", "array":
		return "an array"
	case "map", "struct", "ptr", "interface":
		return "an object"
	}
	return "a " + kind
}

// unknownFieldError is decodeStrict's error for an unknown field, with the
// field's path: encoding/json names only the key, which for a nested field
// would point the user at the wrong place.
type unknownFieldError struct{ path string }

func (e *unknownFieldError) Error() string { return "unknown field " + e.path }

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// unknownFieldPath finds where in data the key name is not a field of the
// Go type t ("template.namespace", "items[0].options[1].foo"), or "".
func unknownFieldPath(data []byte, t reflect.Type, name string) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		return "" // decodes itself, and reports its own errors
	}
	switch t.Kind() {
	case reflect.Struct:
		var obj map[string]json.RawMessage
		if json.Unmarshal(data, &obj) != nil {
			return ""
		}
		fields := map[string]reflect.Type{}
		jsonFields(t, fields)
		for _, key := range slices.Sorted(maps.Keys(obj)) {
			ft, ok := fields[strings.ToLower(key)]
			if !ok {
				if key == name {
					return key
				}
				continue
			}
			if p := unknownFieldPath(obj[key], ft, name); p != "" {
				return joinPath(key, p)
			}
		}
	case reflect.Slice, reflect.Array:
		var arr []json.RawMessage
		if json.Unmarshal(data, &arr) != nil {
			return ""
		}
		for i, raw := range arr {
			if p := unknownFieldPath(raw, t.Elem(), name); p != "" {
				return joinPath(fmt.Sprintf("[%d]", i), p)
			}
		}
	case reflect.Map:
		var obj map[string]json.RawMessage
		if json.Unmarshal(data, &obj) != nil {
			return ""
		}
		for _, key := range slices.Sorted(maps.Keys(obj)) {
			if p := unknownFieldPath(obj[key], t.Elem(), name); p != "" {
				return joinPath(key, p)
			}
		}
	}
	return ""
}

func joinPath(parent, child string) string {
	if strings.HasPrefix(child, "[") {
		return parent + child
	}
	return parent + "." + child
}

// jsonFields adds the JSON names (lowercased, as encoding/json matches them
// case-insensitively) and types of t's fields to into; fields of embedded
// structs come after, and lose to, the outer ones, as in encoding/json.
func jsonFields(t reflect.Type, into map[string]reflect.Type) {
	var embedded []reflect.Type
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			et := f.Type
			for et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if et.Kind() == reflect.Struct {
				embedded = append(embedded, et)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		if _, ok := into[strings.ToLower(name)]; !ok {
			into[strings.ToLower(name)] = f.Type
		}
	}
	for _, et := range embedded {
		jsonFields(et, into)
	}
}
