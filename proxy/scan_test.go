package proxy

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/serverlessd/serverlessd/proxy/wire"
)

// scanStream builds a client stream: queries, a KILL to map, LOCAL INFILE
// data that starts with KILL-looking bytes, a packet of more than 16 MiB
// whose second frame looks like a command, and a final command.
func scanStream() (in, want []byte) {
	pk := func(dst []byte, seq byte, payload []byte) []byte {
		out, _ := wire.AppendPacket(dst, seq, payload)
		return out
	}
	q := func(s string) []byte { return append([]byte{mysql.COM_QUERY}, s...) }
	big := bytes.Repeat([]byte{mysql.COM_QUERY}, mysql.MaxPayloadLen+10)
	for _, step := range []struct {
		seq      byte
		in, want []byte
	}{
		{0, q("SELECT 1"), q("SELECT 1")},
		{0, q("KILL QUERY 1000000007"), q("KILL QUERY 77")},
		{0, q("LOAD DATA LOCAL INFILE 'x' INTO TABLE t"), nil},
		{2, q("KILL 1000000007"), nil}, // file data: not a command
		{3, nil, nil},                  // end of file
		{0, []byte{mysql.COM_PROCESS_KILL, 0x07, 0xca, 0x9a, 0x3b}, []byte{mysql.COM_PROCESS_KILL, 77, 0, 0, 0}},
		{0, big, nil},
		{0, q("SELECT 2"), q("SELECT 2")},
	} {
		in = pk(in, step.seq, step.in)
		if step.want != nil {
			want = pk(want, step.seq, step.want)
		} else {
			want = pk(want, step.seq, step.in)
		}
	}
	return in, want
}

// fakeKill maps our id 1000000007 to backend thread 77, as mapKill would.
func fakeKill(p []byte) []byte {
	if p[0] == mysql.COM_PROCESS_KILL {
		if bytes.Equal(p[1:], []byte{0x07, 0xca, 0x9a, 0x3b}) {
			return []byte{mysql.COM_PROCESS_KILL, 77, 0, 0, 0}
		}
		return nil
	}
	words, id, ok := parseKill(p[1:])
	if !ok || id != 1000000007 {
		return nil
	}
	s := "KILL"
	for _, w := range words[1:] {
		s += " " + w
	}
	return append([]byte{mysql.COM_QUERY}, s+" 77"...)
}

// TestClientScannerSplits feeds the stream in random pieces, as sockets
// deliver it, with the held-back rest carried over as the event loop does:
// the output must be the same as for the whole stream, KILLs mapped and
// everything else untouched.
func TestClientScannerSplits(t *testing.T) {
	in, want := scanStream()
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 60 {
		var sc clientScanner
		var got, carry []byte
		for rest := in; len(rest) > 0 || len(carry) > 0; {
			// Mostly small pieces, with large ones to get through the
			// 16 MiB packet.
			n := min(len(rest), 1+rng.IntN(8))
			if rng.IntN(4) == 0 {
				n = min(len(rest), 1+rng.IntN(1<<20))
			}
			if round == 0 {
				n = len(rest)
			}
			data := append(carry, rest[:n]...)
			rest = rest[n:]
			out, used, stop := sc.scan(data, fakeKill)
			if stop != actForward {
				t.Fatalf("round %d: stop %v", round, stop)
			}
			got = append(got, out...)
			carry = append([]byte(nil), data[used:]...)
			if len(carry) > 4+maxInspectQuery {
				t.Fatalf("round %d: %d bytes held back", round, len(carry))
			}
			if n == 0 && len(carry) > 0 {
				t.Fatalf("round %d: %d bytes held back at the end", round, len(carry))
			}
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("round %d: output differs (%d bytes, want %d)", round, len(got), len(want))
		}
	}
}

// TestClientScannerStops: COM_QUIT ends the walk after itself; a
// COM_CHANGE_USER stops before itself, leaving it to the goroutine relay.
func TestClientScannerStops(t *testing.T) {
	sel, _ := wire.AppendPacket(nil, 0, []byte("\x03SELECT 1"))
	quit, _ := wire.AppendPacket(nil, 0, []byte{mysql.COM_QUIT})
	cu, _ := wire.AppendPacket(nil, 0, []byte{mysql.COM_CHANGE_USER, 'u', 0})

	var sc clientScanner
	data := append(append(append([]byte{}, sel...), quit...), sel...)
	out, used, stop := sc.scan(data, fakeKill)
	if stop != actQuit || used != len(sel)+len(quit) || !bytes.Equal(out, data[:used]) {
		t.Fatalf("quit: stop %v used %d", stop, used)
	}

	sc = clientScanner{}
	data = append(append(append([]byte{}, sel...), cu...), sel...)
	out, used, stop = sc.scan(data, fakeKill)
	if stop != actChangeUser || used != len(sel) || !bytes.Equal(out, sel) {
		t.Fatalf("change user: stop %v used %d", stop, used)
	}
	if sc.st != (cmdState{infileOK: true}) || sc.body != 0 {
		t.Fatalf("state after change user: %+v", sc)
	}
}
