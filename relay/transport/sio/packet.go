package sio

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/rowcast/rowcast/relay/internal/jsonstr"
)

// Engine.IO 4 packet types: the first byte of a WebSocket text frame.
const (
	engineOpen    = '0'
	engineClose   = '1'
	enginePing    = '2'
	enginePong    = '3'
	engineMessage = '4'
	engineUpgrade = '5'
	engineNoop    = '6'
	// engineBinary starts a text frame carrying a base64 binary message.
	engineBinary = 'b'
)

// PacketType is a Socket.IO 5 packet type.
type PacketType uint8

// Socket.IO packet types, numbered as on the wire.
const (
	Connect PacketType = iota
	Disconnect
	Event
	Ack
	ConnectError
	BinaryEvent
	BinaryAck
)

// MaxAttachments is the most binary attachments a client packet may
// announce (socket.io-parser's default); more is a malformed packet.
const MaxAttachments = 10

// maxIDDigits bounds an ack id so it stays an exact JavaScript number.
const maxIDDigits = 15

// Packet is one Socket.IO packet, as carried by an Engine.IO message.
type Packet struct {
	Type PacketType
	// Namespace is "/" for the default namespace.
	Namespace string
	// ID is the ack id, or -1 when the packet asks for no ack.
	ID int64
	// Attachments is the number of binary frames that follow a BinaryEvent
	// or BinaryAck.
	Attachments int
	// Data is the packet's JSON payload as received (nil when absent): an
	// object for Connect, a string or object for ConnectError, an array for
	// the others; Disconnect has none.
	Data json.RawMessage
}

// reserved lists the event names Socket.IO gives a meaning of its own; they
// are never sent and a client packet using one is malformed.
func reserved(name string) bool {
	switch name {
	case "connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener":
		return true
	}
	return false
}

// packetError says why a client packet is malformed.
type packetError string

func (e packetError) Error() string { return "socket.io packet: " + string(e) }

// DecodePacket parses one Socket.IO packet (an Engine.IO message's payload,
// without the leading "4") the way socket.io-parser does: type, attachment
// count for binary packets, namespace, ack id, then a JSON payload whose
// shape must fit the type. An error means the packet is malformed; the
// reference server closes the connection for it.
func DecodePacket(b []byte) (Packet, error) {
	p := Packet{Namespace: "/", ID: -1}
	if len(b) == 0 {
		return p, packetError("empty")
	}
	if b[0] < '0' || b[0] > '0'+byte(BinaryAck) {
		return p, fmt.Errorf("%w: unknown type %q", packetError("malformed"), b[0])
	}
	p.Type = PacketType(b[0] - '0')
	i := 1
	if p.Type == BinaryEvent || p.Type == BinaryAck {
		j := i
		for j < len(b) && isDigit(b[j]) {
			j++
		}
		if j == i || j >= len(b) || b[j] != '-' || j-i > 3 {
			return p, packetError("illegal attachments")
		}
		n, _ := strconv.Atoi(string(b[i:j]))
		if n > MaxAttachments {
			return p, packetError("too many attachments")
		}
		p.Attachments = n
		i = j + 1
	}
	if i < len(b) && b[i] == '/' {
		end := bytes.IndexByte(b[i:], ',')
		if end < 0 {
			p.Namespace = string(b[i:])
			i = len(b)
		} else {
			p.Namespace = string(b[i : i+end])
			i += end + 1
		}
	}
	if j := i; j < len(b) && isDigit(b[j]) {
		for j < len(b) && isDigit(b[j]) {
			j++
		}
		if j-i > maxIDDigits {
			return p, packetError("ack id too long")
		}
		p.ID, _ = strconv.ParseInt(string(b[i:j]), 10, 64)
		i = j
	}
	if i < len(b) {
		data := b[i:]
		if !payloadValid(p.Type, data) {
			return p, packetError("invalid payload")
		}
		p.Data = json.RawMessage(data)
	}
	return p, nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// payloadValid checks data against what a packet of type t may carry.
func payloadValid(t PacketType, data []byte) bool {
	if t == Disconnect || !json.Valid(data) {
		return false
	}
	first := bytes.TrimLeft(data, " \t\r\n")
	switch t {
	case Connect:
		return first[0] == '{'
	case ConnectError:
		return first[0] == '{' || first[0] == '"'
	case Ack, BinaryAck:
		return first[0] == '['
	case Event, BinaryEvent:
		if first[0] != '[' {
			return false
		}
		dec := json.NewDecoder(bytes.NewReader(first))
		dec.UseNumber()
		if _, err := dec.Token(); err != nil {
			return false
		}
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		switch v := tok.(type) {
		case json.Number:
			return true
		case string:
			return !reserved(v)
		}
		return false
	}
	return false
}

// AppendPacket appends p's Socket.IO encoding (without the Engine.IO "4"):
// type, attachments for binary packets, the namespace unless it is "/", the
// ack id when p.ID >= 0, then the payload as is.
func AppendPacket(dst []byte, p Packet) []byte {
	dst = append(dst, '0'+byte(p.Type))
	if p.Type == BinaryEvent || p.Type == BinaryAck {
		dst = strconv.AppendInt(dst, int64(p.Attachments), 10)
		dst = append(dst, '-')
	}
	if p.Namespace != "" && p.Namespace != "/" {
		dst = append(dst, p.Namespace...)
		dst = append(dst, ',')
	}
	if p.ID >= 0 {
		dst = strconv.AppendInt(dst, p.ID, 10)
	}
	return append(dst, p.Data...)
}

// messageFrame returns the WebSocket text frame of an Engine.IO message
// carrying p.
func messageFrame(p Packet) []byte {
	return AppendPacket([]byte{engineMessage}, p)
}

// eventFrame returns the frame of an EVENT on the default namespace:
// 42["<name>",<data>,"<offset>"]. data must be JSON; name and offset are
// JSON-quoted.
func eventFrame(name string, data []byte, offset string) []byte {
	b := make([]byte, 0, 16+len(name)+len(data)+len(offset))
	b = append(b, engineMessage, '0'+byte(Event), '[')
	b = appendJSONString(b, name)
	b = append(b, ',')
	b = append(b, data...)
	b = append(b, ',')
	b = appendJSONString(b, offset)
	return append(b, ']')
}

// ackErrorFrame answers a client packet that asked for ack id with one
// error argument: 43<id>[{"message":…}].
func ackErrorFrame(id int64, message string) []byte {
	data := append([]byte(`[{"message":`), appendJSONString(nil, message)...)
	data = append(data, '}', ']')
	return messageFrame(Packet{Type: Ack, Namespace: "/", ID: id, Data: data})
}

// connectErrorFrame answers a CONNECT with CONNECT_ERROR {"message":…}.
func connectErrorFrame(namespace, message string) []byte {
	data := append([]byte(`{"message":`), appendJSONString(nil, message)...)
	data = append(data, '}')
	return messageFrame(Packet{Type: ConnectError, Namespace: namespace, ID: -1, Data: data})
}

// connectFrame accepts the default namespace: 40{"sid":…,"pid":…}.
func connectFrame(sid, pid string) []byte {
	data, _ := json.Marshal(struct {
		SID string `json:"sid"`
		PID string `json:"pid"`
	}{sid, pid})
	return messageFrame(Packet{Type: Connect, Namespace: "/", ID: -1, Data: data})
}

// openFrame is the Engine.IO open packet, its fields in the reference
// server's order.
// upgrades lists the transports the session may upgrade to (none: []).
func openFrame(sid string, upgrades []string, pingInterval, pingTimeout, maxPayload int64) []byte {
	if upgrades == nil {
		upgrades = []string{}
	}
	data, _ := json.Marshal(struct {
		SID          string   `json:"sid"`
		Upgrades     []string `json:"upgrades"`
		PingInterval int64    `json:"pingInterval"`
		PingTimeout  int64    `json:"pingTimeout"`
		MaxPayload   int64    `json:"maxPayload"`
	}{sid, upgrades, pingInterval, pingTimeout, maxPayload})
	return append([]byte{engineOpen}, data...)
}

// resyncData turns the plain protocol's resync frame
// ({"type":"resync","reason":…,…}) into the resync event's argument
// ({"reason":…,…}).
func resyncData(frame []byte) []byte {
	const head = `{"type":"resync"`
	rest, ok := bytes.CutPrefix(frame, []byte(head))
	if !ok {
		return frame
	}
	if r, ok := bytes.CutPrefix(rest, []byte(",")); ok {
		return append([]byte{'{'}, r...)
	}
	return append([]byte{'{'}, rest...)
}

// appendJSONString appends s as a JSON string.
func appendJSONString(dst []byte, s string) []byte { return jsonstr.Append(dst, s) }
