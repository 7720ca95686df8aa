package backup

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/serverlessd/serverlessd/compute"
)

// dumpTimeout bounds one binary log's dump, and dumpIdle a wait for the
// server's next event within it.
const (
	dumpTimeout = time.Hour
	dumpIdle    = time.Minute
)

// errDumped stops a dump once the file after the wanted one begins.
var errDumped = errors.New("dumped")

// DumpBinlog copies the closed binary log name of the running server at
// addr ("host:port") to path over the replication protocol, as a replica
// reads it: the daemon's way to a binary log on a volume it does not
// mount. The copy is the server's file, event for event: every event's
// end position must follow the one before (the server sends its
// Annotate_rows events only when asked, and a hot backup's position is an
// offset into the file), and the file must end with the rotation or the
// shutdown that closed it. Its
// time is set to its last event's, as the server's own file has it.
func DumpBinlog(ctx context.Context, addr string, cred compute.Credentials, name, path string) error {
	cfg := replication.BinlogSyncerConfig{
		// A replica's id, unique among those the server serves now.
		ServerID: 1000 + rand.Uint32N(1<<30), Flavor: mysql.MariaDBFlavor,
		User: cred.User, Password: cred.Password,
		DumpCommandFlag: replication.BINLOG_SEND_ANNOTATE_ROWS_EVENT,
		ReadTimeout:     dumpIdle, Logger: slog.New(slog.DiscardHandler),
	}
	if err := setAddr(&cfg, addr); err != nil {
		return fmt.Errorf("dump binary log %s: %w", name, err)
	}
	syncer := replication.NewBinlogSyncer(cfg)
	defer syncer.Close()
	out := &eventFile{path: path}
	defer out.close()
	handler := func(file string) (io.WriteCloser, error) {
		if file != name {
			return nil, errDumped
		}
		return out, out.open()
	}
	var err error
	done := make(chan error, 1)
	go func() {
		done <- syncer.StartBackupWithHandler(mysql.Position{Name: name, Pos: 4}, dumpTimeout, handler)
	}()
	select {
	case err = <-done:
	case <-ctx.Done():
		syncer.Close()
		<-done
		err = ctx.Err()
	}
	if !errors.Is(err, errDumped) {
		if err == nil {
			err = errors.New("the server sent no next file in time")
		}
		return fmt.Errorf("dump binary log %s: %w", name, err)
	}
	return out.finish()
}

// setAddr points cfg at addr: "host:port", or "unix:/path" (a socket is
// a Host with no Port).
func setAddr(cfg *replication.BinlogSyncerConfig, addr string) error {
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		cfg.Host = p
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: %w", addr, err)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return fmt.Errorf("address %q: %w", addr, err)
	}
	cfg.Host, cfg.Port = host, uint16(n)
	return nil
}

// eventFile writes a dumped binary log: the header, then one event per
// Write, checked to follow the one before.
type eventFile struct {
	path string
	f    *os.File
	off  int64  // bytes written
	last uint32 // the newest event's time
	typ  byte   // the newest event's type
}

// The event header's fields the checks read.
const (
	eventHeaderLen = 19
	eventTypeAt    = 4
	eventEndAt     = 13 // the event's end position in the file
	stopEvent      = 3  // STOP_EVENT: the server shut down
	rotateEvent    = 4  // ROTATE_EVENT
)

func (e *eventFile) open() (err error) {
	if e.f != nil {
		return errors.New("the server sent the file twice")
	}
	e.f, err = os.OpenFile(e.path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	return err
}

func (e *eventFile) Write(p []byte) (int, error) {
	if e.off > 0 { // an event; the first write is the file's magic
		if len(p) < eventHeaderLen {
			return 0, fmt.Errorf("an event of %d bytes at %d", len(p), e.off)
		}
		end := int64(binary.LittleEndian.Uint32(p[eventEndAt:]))
		// The format description's end may be 0 when the server made it
		// for the dump; every other event's is its place in the file.
		if want := e.off + int64(len(p)); end != want && (end != 0 || e.off != 4) {
			return 0, fmt.Errorf("the event at %d ends at %d in the server's file, at %d in the copy: the server left events out", e.off, end, want)
		}
		e.last, e.typ = max(e.last, binary.LittleEndian.Uint32(p)), p[eventTypeAt]
	}
	n, err := e.f.Write(p)
	e.off += int64(n)
	return n, err
}

func (e *eventFile) Close() error { return nil } // finish closes

// close closes the file, if it is open.
func (e *eventFile) close() {
	if e.f != nil {
		_ = e.f.Close()
		e.f = nil
	}
}

// finish closes the file, checks that it is whole, and gives it its last
// event's time.
func (e *eventFile) finish() error {
	if e.f == nil {
		return errors.New("the server sent no event of the file")
	}
	err := e.f.Close()
	e.f = nil
	if err == nil && e.typ != rotateEvent && e.typ != stopEvent {
		err = fmt.Errorf("the copy ends with an event of type %d, not the rotation or shutdown that closed the file", e.typ)
	}
	if err == nil && e.last > 0 {
		t := time.Unix(int64(e.last), 0)
		err = os.Chtimes(e.path, t, t)
	}
	return err
}
