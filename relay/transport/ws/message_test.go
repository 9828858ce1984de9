package ws

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

func TestDecodeMessage(t *testing.T) {
	tests := []struct {
		in   string
		want clientMessage
		err  string // "" when it decodes
	}{
		{in: `{"type":"ping","id":7}`, want: clientMessage{Type: "ping", ID: json.RawMessage("7")}},
		{in: " \t\r\n{\"type\":\"subscribe\",\"entities\":[]}\n", want: clientMessage{Type: "subscribe", Entities: []string{}}},
		{in: `{"type":"resume","since":"p2.x","extra":{"a":[1]}}`, want: clientMessage{Type: "resume", Since: "p2.x"}},
		{in: `{"TYPE":"auth","Token":"t"}`, want: clientMessage{Type: "auth", Token: "t"}},
		{in: `{"id":null}`, want: clientMessage{ID: json.RawMessage("null")}},
		{in: `{}`},
		{in: `[]`, err: "message is not a JSON object"},
		{in: `null`, err: "message is not a JSON object"},
		{in: `"{}"`, err: "message is not a JSON object"},
		{in: `{"type":"ping"`, err: "message is not a JSON object"},
		{in: `{} {}`, err: "message is not a JSON object"},
		{in: "\x00", err: "message is not a JSON object"},
		{in: "\v{}", err: "message is not a JSON object"},
		{in: ``, err: "message is not a JSON object"},
		{in: `{"type":7}`, err: `field "type" must be a string, not number`},
		{in: `{"type":"resume","since":5}`, err: `field "since" must be a string, not number`},
		{in: `{"token":{}}`, err: `field "token" must be a string, not object`},
		{in: `{"type":"subscribe","entities":"x"}`, err: `field "entities" must be a list of strings, not string`},
		{in: `{"type":"subscribe","entities":[1]}`, err: `field "entities" must be a list of strings, not number`},
		{in: `{"type":"subscribe","entities":["a",{}]}`, err: `field "entities" must be a list of strings, not object`},
	}
	for _, tt := range tests {
		m, err := decodeMessage([]byte(tt.in))
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("decodeMessage(%q): %v", tt.in, err)
		case tt.err != "" && (err == nil || err.Error() != tt.err):
			t.Errorf("decodeMessage(%q) = %+v, %v, want error %q", tt.in, m, err, tt.err)
		case tt.err == "" && !reflect.DeepEqual(m, tt.want):
			t.Errorf("decodeMessage(%q) = %+v, want %+v", tt.in, m, tt.want)
		}
	}
}

// fieldTypeAnswer is every bad_request answer decodeMessage gives to an
// object with a field of the wrong type: the field, what it must be and the
// JSON kind it was.
var fieldTypeAnswer = regexp.MustCompile(`^(a field has the wrong type|field "(type|token|since)" must be a string, not (string|number|bool|array|object)|field "entities" must be a list of strings, not (string|number|bool|array|object))$`)

// FuzzDecodeMessage feeds arbitrary bytes through the plain protocol's
// client message decoding. It checks that decodeMessage never panics; that
// it refuses exactly what is not a JSON object; that a field of the wrong
// type is answered in the protocol's terms (no Go names, a field the
// message has); that what decodes encodes back to a message that decodes
// identically; and that the frames built from a decoded message (pong, the
// unknown-type error) are valid JSON.
func FuzzDecodeMessage(f *testing.F) {
	for _, s := range []string{
		`{"type":"ping","id":7}`, `{"type":"ping","id":{"a":[1,"x"]}}`, `{"type":"ping"}`,
		`{"type":"subscribe","entities":["deal","contact"]}`, `{"type":"subscribe","entities":null}`,
		`{"type":"resume","since":"p2.ZT"}`, `{"type":"auth","token":"a.b.c"}`, `{"type":"x\u0000\"y"}`,
		`{"Type":"ping","ID":1,"type":"subscribe"}`, `{"type":7}`, `{"entities":[1]}`, `{"since":{}}`,
		` {"token":true} `, `[]`, `null`, `"{}"`, `{`, "\x00", "{\"type\":\"\xff\"}", `{"a":1e999}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		var obj map[string]json.RawMessage
		isObject := json.Unmarshal(msg, &obj) == nil && obj != nil

		m, err := decodeMessage(msg)
		if errors.Is(err, errNotObject) {
			if isObject {
				t.Fatalf("decodeMessage(%q): a JSON object refused as not one", msg)
			}
			return
		}
		if !isObject {
			t.Fatalf("decodeMessage(%q) = %+v, %v: accepted what is not a JSON object", msg, m, err)
		}
		if err != nil {
			answer := err.Error()
			if !fieldTypeAnswer.MatchString(answer) {
				t.Fatalf("decodeMessage(%q): answer %q is not in the protocol's terms", msg, answer)
			}
			if name, _, ok := strings.Cut(strings.TrimPrefix(answer, `field "`), `"`); ok && answer != "a field has the wrong type" {
				if !hasField(obj, name) {
					t.Fatalf("decodeMessage(%q): answer %q names a field the message lacks", msg, answer)
				}
			}
			checkErrorFrame(t, msg, answer)
			return
		}

		if len(m.ID) > 0 && !json.Valid(m.ID) {
			t.Fatalf("decodeMessage(%q): id %q is not JSON", msg, m.ID)
		}
		var pong struct {
			Type string          `json:"type"`
			ID   json.RawMessage `json:"id"`
		}
		if p := pongFrame(m.ID); json.Unmarshal(p, &pong) != nil || pong.Type != "pong" || (len(m.ID) > 0 && !bytes.Equal(pong.ID, m.ID)) {
			t.Fatalf("decodeMessage(%q): pong frame %q", msg, p)
		}
		checkErrorFrame(t, msg, "unknown message type "+strconvQuote(m.Type))

		// What decodes encodes back to a message that decodes identically
		// (a missing id is null, ids compared compact).
		enc, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("decodeMessage(%q) = %+v, which does not encode: %v", msg, m, err)
		}
		back, err := decodeMessage(enc)
		if err != nil {
			t.Fatalf("decodeMessage(%q) = %+v, encoded %q, which fails: %v", msg, m, enc, err)
		}
		m.ID, back.ID = compactID(t, m.ID), compactID(t, back.ID)
		if !reflect.DeepEqual(m, back) {
			t.Fatalf("decodeMessage(%q) = %+v, encoded %q, decodes as %+v", msg, m, enc, back)
		}
	})
}

// hasField reports whether obj has a key that encoding/json matches to the
// clientMessage field name (case-insensitively).
func hasField(obj map[string]json.RawMessage, name string) bool {
	for k := range obj {
		if strings.EqualFold(k, name) {
			return true
		}
	}
	return false
}

// checkErrorFrame checks that the bad_request frame carrying message is a
// JSON error whose message reads back unchanged.
func checkErrorFrame(t *testing.T, msg []byte, message string) {
	t.Helper()
	var e struct{ Type, Code, Message string }
	frame := errorFrame("bad_request", message)
	if err := json.Unmarshal(frame, &e); err != nil || e.Type != "error" || e.Code != "bad_request" {
		t.Fatalf("decodeMessage(%q): error frame %q: %v", msg, frame, err)
	}
	if message != e.Message {
		t.Fatalf("decodeMessage(%q): error frame %q carries %q, not %q", msg, frame, e.Message, message)
	}
}

func compactID(t *testing.T, id json.RawMessage) json.RawMessage {
	t.Helper()
	if len(id) == 0 {
		return json.RawMessage("null")
	}
	var b bytes.Buffer
	if err := json.Compact(&b, id); err != nil {
		t.Fatalf("id %q: %v", id, err)
	}
	return b.Bytes()
}
