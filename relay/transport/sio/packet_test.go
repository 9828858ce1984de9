package sio

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

func TestDecodePacket(t *testing.T) {
	cases := []struct {
		in   string
		want Packet
	}{
		{`0`, Packet{Type: Connect, Namespace: "/", ID: -1}},
		{`0{"token":"abc"}`, Packet{Type: Connect, Namespace: "/", ID: -1, Data: json.RawMessage(`{"token":"abc"}`)}},
		{`0/admin,{"token":"abc"}`, Packet{Type: Connect, Namespace: "/admin", ID: -1, Data: json.RawMessage(`{"token":"abc"}`)}},
		{`0/admin,`, Packet{Type: Connect, Namespace: "/admin", ID: -1}},
		{`0/admin`, Packet{Type: Connect, Namespace: "/admin", ID: -1}},
		{`1`, Packet{Type: Disconnect, Namespace: "/", ID: -1}},
		{`1/admin,`, Packet{Type: Disconnect, Namespace: "/admin", ID: -1}},
		{`2["hello",1]`, Packet{Type: Event, Namespace: "/", ID: -1, Data: json.RawMessage(`["hello",1]`)}},
		{`212["hello"]`, Packet{Type: Event, Namespace: "/", ID: 12, Data: json.RawMessage(`["hello"]`)}},
		{`2/chat,7["hi",{"a":[1]}]`, Packet{Type: Event, Namespace: "/chat", ID: 7, Data: json.RawMessage(`["hi",{"a":[1]}]`)}},
		{`2[42]`, Packet{Type: Event, Namespace: "/", ID: -1, Data: json.RawMessage(`[42]`)}},
		{`30[]`, Packet{Type: Ack, Namespace: "/", ID: 0, Data: json.RawMessage(`[]`)}},
		{`4{"message":"x"}`, Packet{Type: ConnectError, Namespace: "/", ID: -1, Data: json.RawMessage(`{"message":"x"}`)}},
		{`4"x"`, Packet{Type: ConnectError, Namespace: "/", ID: -1, Data: json.RawMessage(`"x"`)}},
		{`51-["up",{"_placeholder":true,"num":0}]`, Packet{Type: BinaryEvent, Namespace: "/", ID: -1, Attachments: 1,
			Data: json.RawMessage(`["up",{"_placeholder":true,"num":0}]`)}},
		{`52-/a,3["up",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`, Packet{Type: BinaryEvent,
			Namespace: "/a", ID: 3, Attachments: 2, Data: json.RawMessage(`["up",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`)}},
		{`610-4[{"_placeholder":true,"num":9}]`, Packet{Type: BinaryAck, Namespace: "/", ID: 4, Attachments: 10,
			Data: json.RawMessage(`[{"_placeholder":true,"num":9}]`)}},
	}
	for _, tc := range cases {
		got, err := DecodePacket([]byte(tc.in))
		if err != nil {
			t.Errorf("DecodePacket(%q): %v", tc.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("DecodePacket(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestDecodePacketMalformed(t *testing.T) {
	for _, in := range []string{
		``,
		`7`,
		`x`,
		`0"token"`,        // CONNECT needs an object
		`0[1]`,            // CONNECT needs an object
		`0{`,              // not JSON
		`1{}`,             // DISCONNECT carries nothing
		`2{"a":1}`,        // EVENT needs an array
		`2[]`,             // EVENT needs a name
		`2[null]`,         // the name is a string or number
		`2[{"a":1}]`,      // the name is a string or number
		`2["connect"]`,    // reserved
		`2["disconnect"]`, // reserved
		`2["newListener",1]`,
		`3{}`,       // ACK needs an array
		`4[]`,       // CONNECT_ERROR needs a string or an object
		`5["x"]`,    // binary without attachments
		`5-["x"]`,   // binary without a count
		`511-["x"]`, // too many attachments
		`51["x"]`,   // no dash
		`51234-["x"]`,
		`21234567890123456["x"]`, // ack id too long
		`2["x"`,
	} {
		if p, err := DecodePacket([]byte(in)); err == nil {
			t.Errorf("DecodePacket(%q) = %+v, want an error", in, p)
		}
	}
}

func TestEncodeFrames(t *testing.T) {
	cases := map[string]struct{ got, want string }{
		"open": {string(openFrame("abc", nil, 25000, 20000, 4096)),
			`0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":4096}`},
		"open on polling": {string(openFrame("abc", []string{"websocket"}, 25000, 20000, 4096)),
			`0{"sid":"abc","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":4096}`},
		"connect":           {string(connectFrame("s1", "p1")), `40{"sid":"s1","pid":"p1"}`},
		"unauthorized":      {string(connectErrorFrame("/", "unauthorized")), `44{"message":"unauthorized"}`},
		"invalid namespace": {string(connectErrorFrame("/admin", "Invalid namespace")), `44/admin,{"message":"Invalid namespace"}`},
		"event": {string(eventFrame("escrow:updated", []byte(`{"entityId":"4"}`), "p1.AAA")),
			`42["escrow:updated",{"entityId":"4"},"p1.AAA"]`},
		"event name quoted": {string(eventFrame(`a"b`, []byte(`{}`), "o")), `42["a\"b",{},"o"]`},
		"ack error":         {string(ackErrorFrame(17, "client events are not supported")), `4317[{"message":"client events are not supported"}]`},
		"ack id 0":          {string(ackErrorFrame(0, "x")), `430[{"message":"x"}]`},
		"resync truncate": {string(resyncData([]byte(`{"type":"resync","reason":"truncate","entityType":"note"}`))),
			`{"reason":"truncate","entityType":"note"}`},
		"resync bare":  {string(resyncData([]byte(`{"type":"resync"}`))), `{}`},
		"resync other": {string(resyncData([]byte(`{"reason":"x"}`))), `{"reason":"x"}`},
		"binary packet": {string(AppendPacket(nil, Packet{Type: BinaryEvent, Namespace: "/x", ID: 2, Attachments: 1, Data: []byte(`["a"]`)})),
			`51-/x,2["a"]`},
	}
	for name, tc := range cases {
		if tc.got != tc.want {
			t.Errorf("%s: got %s, want %s", name, tc.got, tc.want)
		}
	}
}

func TestReservedNames(t *testing.T) {
	for _, name := range []string{"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"} {
		if !reserved(name) {
			t.Errorf("%s is reserved by Socket.IO", name)
		}
	}
	for _, name := range []string{"escrow:updated", "resync", "ai:task:progress", "Connect", "message"} {
		if reserved(name) {
			t.Errorf("%s is not reserved", name)
		}
	}
}

// FuzzDecodePacket checks that the parser never panics and that what it
// accepts encodes back to a packet it decodes identically.
func FuzzDecodePacket(f *testing.F) {
	for _, s := range []string{`0`, `0{"token":"x"}`, `0/admin,{}`, `1`, `212["a",{"b":[1,2]}]`, `30[]`, `4{"message":"m"}`,
		`51-["a",{"_placeholder":true,"num":0}]`, `6/x,2-9[]`, `2["connect"]`, `2 ["a"]`, `0/a`, `5-[]`, `2[1e5]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := DecodePacket(b)
		if err != nil {
			return
		}
		if p.Attachments < 0 || p.Attachments > MaxAttachments || p.ID < -1 {
			t.Fatalf("DecodePacket(%q) = %+v: out of range", b, p)
		}
		if p.Data != nil && !json.Valid(p.Data) {
			t.Fatalf("DecodePacket(%q) accepted invalid JSON %q", b, p.Data)
		}
		enc := AppendPacket(nil, p)
		q, err := DecodePacket(enc)
		if err != nil {
			t.Fatalf("DecodePacket(%q) = %+v, re-encoded as %q, which fails: %v", b, p, enc, err)
		}
		if q.Type != p.Type || q.Namespace != p.Namespace || q.ID != p.ID || q.Attachments != p.Attachments || !bytes.Equal(q.Data, p.Data) {
			t.Fatalf("round trip of %q: %+v, then %q → %+v", b, p, enc, q)
		}
	})
}
