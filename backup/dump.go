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

// dumpTimeout bounds one binary log's dump.
const dumpTimeout = 5 * time.Minute

// errDumped stops a dump once the file after the wanted one begins.
var errDumped = errors.New("dumped")

// DumpBinlog copies the closed binary log name of the running server at
// addr ("host:port") to path over the replication protocol, as a replica
// reads it: the daemon's way to a binary log on a volume it does not
// mount. The copy is a binary log file that mariadb-binlog reads; its time
// is set to its last event's, as the server's own file has it.
func DumpBinlog(ctx context.Context, addr string, cred compute.Credentials, name, path string) error {
	cfg := replication.BinlogSyncerConfig{
		// A replica's id, unique among those the server serves now.
		ServerID: 1000 + rand.Uint32N(1<<30), Flavor: mysql.MariaDBFlavor,
		User: cred.User, Password: cred.Password,
		ReadTimeout: dumpTimeout, Logger: slog.New(slog.DiscardHandler),
	}
	if err := setAddr(&cfg, addr); err != nil {
		return fmt.Errorf("dump binary log %s: %w", name, err)
	}
	syncer := replication.NewBinlogSyncer(cfg)
	defer syncer.Close()
	out := &eventFile{path: path}
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
// Write, whose first 4 bytes are its time.
type eventFile struct {
	path string
	f    *os.File
	last uint32 // the newest event's time
}

func (e *eventFile) open() (err error) {
	if e.f != nil {
		return errors.New("the server sent the file twice")
	}
	e.f, err = os.OpenFile(e.path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	return err
}

func (e *eventFile) Write(p []byte) (int, error) {
	if len(p) >= 19 { // an event's header; the file header is 4 bytes
		e.last = max(e.last, binary.LittleEndian.Uint32(p))
	}
	return e.f.Write(p)
}

func (e *eventFile) Close() error { return nil } // finish closes

// finish closes the file and gives it its last event's time.
func (e *eventFile) finish() error {
	if e.f == nil {
		return errors.New("the server sent no event of the file")
	}
	err := e.f.Close()
	if err == nil && e.last > 0 {
		t := time.Unix(int64(e.last), 0)
		err = os.Chtimes(e.path, t, t)
	}
	return err
}
