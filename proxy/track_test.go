package proxy

import (
	"bytes"
	"testing"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/serverlessd/serverlessd/proxy/wire"
)

// frames builds a packet stream from payloads, sequence ids from 1.
func frames(payloads ...[]byte) []byte {
	var b []byte
	for i, p := range payloads {
		b, _ = wire.AppendPacket(b, byte(i+1), p)
	}
	return b
}

// TestTrackerChunks: a response fed in pieces of every size comes out
// byte for byte, and the tracker finds its end.
func TestTrackerChunks(t *testing.T) {
	eof := []byte{0xfe, 0, 0, 2, 0}
	okEnd := []byte{0xfe, 0, 0, 2, 0, 0, 0}
	for _, tc := range []struct {
		name   string
		caps   uint32
		kind   respKind
		stream []byte
	}{
		{"ok", 0, respResult, frames([]byte{0, 1, 0, 2, 0, 0, 0})},
		{"err", 0, respResult, frames([]byte{0xff, 0x10, 0x04, '#', 'H', 'Y', '0', '0', '0', 'x'})},
		{"result with EOFs", 0, respResult, frames([]byte{1}, []byte("coldef"), eof, []byte{3, 'a', 'b', 'c'}, []byte{1, 'x'}, eof)},
		{"result, deprecate EOF", mysql.CLIENT_DEPRECATE_EOF, respResult, frames([]byte{2}, []byte("c1"), []byte("c2"), []byte{1, 'a', 1, 'b'}, okEnd)},
		{"two results", 0, respResult, frames([]byte{1}, []byte("c"), eof, []byte{1, 'a'}, []byte{0xfe, 0, 0, 0x0a, 0}, []byte{0, 0, 0, 2, 0, 0, 0})},
		{"prepare", 0, respPrepare, frames([]byte{0, 7, 0, 0, 0, 1, 0, 2, 0, 0, 0, 0}, []byte("p1"), []byte("p2"), eof, []byte("c1"), eof)},
		{"ping", 0, respOne, frames([]byte{0, 0, 0, 2, 0, 0, 0})},
	} {
		for _, size := range []int{1, 2, 3, 5, 7, 1 << 20} {
			ss := &session{caps: tc.caps | mysql.CLIENT_SESSION_TRACK, st: newSessionState("")}
			ss.link = &link{ids: map[uint32]uint32{}}
			tr := newTracker(ss, &command{}, tc.kind)
			var out []byte
			data := tc.stream
			for len(data) > 0 && !tr.done {
				chunk := data[:min(size, len(data))]
				segs, used, err := tr.feed(chunk, nil)
				if err != nil {
					t.Fatalf("%s/%d: %v", tc.name, size, err)
				}
				for _, s := range segs {
					out = append(out, s...)
				}
				data = data[used:]
				if used < len(chunk) && !tr.done {
					t.Fatalf("%s/%d: stopped early", tc.name, size)
				}
			}
			if !tr.done || len(data) != 0 {
				t.Fatalf("%s/%d: done=%v with %d bytes left", tc.name, size, tr.done, len(data))
			}
			if !bytes.Equal(out, tc.stream) {
				t.Fatalf("%s/%d: out\n%q\nwant\n%q", tc.name, size, out, tc.stream)
			}
		}
	}
}

// TestTrackerStripsState: an OK packet's session-state block reaches a
// client that asked for it as is, and one that did not without it; the
// proxy reads the state either way.
func TestTrackerStripsState(t *testing.T) {
	state := []byte{wire.TrackSchema, 4, 3, 'a', 'p', 'p'}
	ok := append([]byte{0, 0, 0, 0x02, 0x40, 0, 0, 0, byte(len(state))}, state...)
	stream := frames(ok)
	for _, tracks := range []bool{true, false} {
		caps := uint32(0)
		if tracks {
			caps = mysql.CLIENT_SESSION_TRACK
		}
		ss := &session{caps: caps, st: newSessionState("")}
		tr := newTracker(ss, &command{}, respResult)
		var out []byte
		for i := range stream { // a byte at a time
			segs, _, err := tr.feed(stream[i:i+1], nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range segs {
				out = append(out, s...)
			}
		}
		want := stream
		if !tracks {
			want = frames([]byte{0, 0, 0, 0x02, 0, 0, 0})
		}
		if !bytes.Equal(out, want) || ss.st.schema != "app" || !tr.done {
			t.Fatalf("client tracks=%v: out %q schema %q done %v", tracks, out, ss.st.schema, tr.done)
		}
	}
}

// TestTrackerLongRow: a row of 2^24 bytes or more comes in continuation
// frames, and its leading 0xFE (a length-encoded string that long) is not
// a terminator.
func TestTrackerLongRow(t *testing.T) {
	row := make([]byte, mysql.MaxPayloadLen+10)
	row[0] = 0xfe // a length-encoded string of 8-byte length
	var stream []byte
	stream, _ = wire.AppendPacket(stream, 1, []byte{1})
	stream, _ = wire.AppendPacket(stream, 2, []byte("coldef"))
	stream, _ = wire.AppendPacket(stream, 3, row) // frames of 2^24-1 and 11 bytes
	stream, _ = wire.AppendPacket(stream, 5, []byte{0xfe, 0, 0, 2, 0, 0, 0})
	ss := &session{caps: mysql.CLIENT_SESSION_TRACK | mysql.CLIENT_DEPRECATE_EOF, st: newSessionState("")}
	tr := newTracker(ss, &command{}, respResult)
	n := 0
	for data := stream; len(data) > 0 && !tr.done; {
		chunk := data[:min(64<<10, len(data))]
		segs, used, err := tr.feed(chunk, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range segs {
			n += len(s)
		}
		data = data[used:]
	}
	if !tr.done || n != len(stream) {
		t.Fatalf("done %v, relayed %d of %d bytes", tr.done, n, len(stream))
	}
}

// FuzzTracker feeds arbitrary backend bytes, in chunks of a size the
// input picks, to a tracker of each response shape: it may report a
// protocol error, but never panics and always makes progress.
func FuzzTracker(f *testing.F) {
	eof := []byte{0xfe, 0, 0, 2, 0}
	f.Add(byte(0), byte(3), frames([]byte{1}, []byte("c"), eof, []byte{1, 'x'}, eof))
	f.Add(byte(1), byte(1), frames([]byte{0, 7, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0}, []byte("p"), eof, []byte("c"), eof))
	f.Add(byte(4), byte(7), frames([]byte{0, 0, 0, 2, 0x40, 0, 0, 0, 3, 2, 1, '1'}))
	f.Add(byte(0), byte(2), frames([]byte{0xfb, 'f'}))
	f.Fuzz(func(t *testing.T, kind, size byte, data []byte) {
		ss := &session{caps: mysql.CLIENT_DEPRECATE_EOF * uint32(kind&8>>3), st: newSessionState("")}
		ss.link = &link{ids: map[uint32]uint32{}}
		tr := newTracker(ss, &command{}, respKind(kind%7))
		step := int(size%64) + 1
		for len(data) > 0 && !tr.done && !tr.wantClient {
			chunk := data[:min(step, len(data))]
			_, used, err := tr.feed(chunk, nil)
			if err != nil {
				return
			}
			data = data[used:]
			if used == 0 && len(chunk) > 0 && !tr.done && !tr.wantClient {
				t.Fatalf("no progress on %q", chunk)
			}
		}
	})
}
