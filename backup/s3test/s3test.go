// Package s3test runs a real S3 server for tests: versitygw, an
// S3-compatible gateway, serving a folder of the test's.
//
// The gateway is built from source once per version with `go install`
// (about three minutes on two cores with a cold Go build cache, seconds
// with a warm one) into the user's cache folder (os.UserCacheDir):
// ${XDG_CACHE_HOME:-$HOME/.cache}/serverlessd-s3/<version>/versitygw on
// Linux. Every later test run reuses it; a lock file keeps test packages
// that start at the same time from building it twice. To pre-build it:
//
//	GOBIN=${XDG_CACHE_HOME:-$HOME/.cache}/serverlessd-s3/v1.8.0 CGO_ENABLED=0 \
//		go install github.com/versity/versitygw/cmd/versitygw@v1.8.0
//
// SERVERLESSD_VERSITYGW, when set, names a versitygw binary to use instead.
package s3test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/serverlessd/serverlessd/backup"
)

// Version is the versitygw release the tests run.
const Version = "v1.8.0"

const (
	module       = "github.com/versity/versitygw/cmd/versitygw"
	region       = "us-east-1"
	buildTimeout = 20 * time.Minute
	readyTimeout = 30 * time.Second
)

// Server is a running versitygw with one bucket.
type Server struct {
	Endpoint             string // http://127.0.0.1:<port>
	Bucket               string
	AccessKey, SecretKey string // the gateway's root user

	t          testing.TB
	bin        string
	addr       string
	data, meta string // the posix backend's folder, and its metadata's
	log        string // the gateway's output, over every start

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// Start builds versitygw if needed, starts it on a free loopback port with
// a posix backend in a temporary folder, and creates the bucket. The
// server is killed when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	dir := t.TempDir()
	s := &Server{
		Bucket: "serverlessd-test", AccessKey: "test-" + randomHex(t, 6), SecretKey: randomHex(t, 20),
		t: t, bin: Binary(t), data: filepath.Join(dir, "data"), meta: filepath.Join(dir, "meta"),
		log: filepath.Join(dir, "versitygw.log"),
	}
	for _, d := range []string{s.data, s.meta} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(s.Stop)
	// A free port can be taken between asking and listening: try a few.
	var err error
	for range 3 {
		if s.addr, err = freeAddr(); err == nil {
			if err = s.start(); err == nil {
				break
			}
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	s.Endpoint = "http://" + s.addr
	if _, err := s.Client().CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(s.Bucket)}); err != nil {
		t.Fatalf("versitygw: create bucket %s: %v", s.Bucket, err)
	}
	return s
}

// Options are a backup target's options for the bucket, under prefix.
func (s *Server) Options(prefix string) backup.S3Options {
	return backup.S3Options{Endpoint: s.Endpoint, Bucket: s.Bucket, Prefix: prefix, Region: region,
		AccessKeyID: s.AccessKey, SecretAccessKey: s.SecretKey}
}

// Client is a plain S3 client of the server, to look at the bucket
// without a backup target in between.
func (s *Server) Client() *s3.Client {
	return s3.New(s3.Options{
		Region: region, BaseEndpoint: aws.String(s.Endpoint), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
	})
}

// Stop kills the server, as a crash would; the data stays for Restart.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Restart starts a stopped server again, on the same port and folder.
func (s *Server) Restart() {
	s.t.Helper()
	if err := s.start(); err != nil {
		s.t.Fatal(err)
	}
}

// start runs the gateway and waits until it answers HTTP.
func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("versitygw: already running")
	}
	logf, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own copy
	// Flags as versitygw v1.8.0's cmd/versitygw/main.go and
	// cmd/internal/gwcli/posix.go define them. Metadata goes to a sidecar
	// folder (outside the root, which versitygw requires) rather than to
	// extended attributes, which tmpfs and some other /tmp filesystems
	// lack. The root keys go by environment, out of the process list.
	cmd := exec.Command(s.bin, "--port", s.addr, "--region", region, "--quiet",
		"posix", "--sidecar", s.meta, s.data)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY_ID="+s.AccessKey, "ROOT_SECRET_ACCESS_KEY="+s.SecretKey)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("versitygw: start %s: %w", s.bin, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	if err := waitReady(s.addr, done); err != nil {
		_ = cmd.Process.Kill()
		<-done
		out, _ := os.ReadFile(s.log)
		return fmt.Errorf("versitygw on %s: %w; its output:\n%s", s.addr, err, out)
	}
	s.cmd, s.done = cmd, done
	return nil
}

// waitReady polls until the server answers any HTTP request (an anonymous
// one gets 403), it exits, or readyTimeout passes.
func waitReady(addr string, done <-chan struct{}) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(readyTimeout)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return errors.New("it exited while starting")
		default:
		}
		if resp, err := client.Get("http://" + addr + "/"); err == nil {
			resp.Body.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("it did not answer within %v", readyTimeout)
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// Binary returns the path of the versitygw binary, building it first if
// it is not in the cache.
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("SERVERLESSD_VERSITYGW"); p != "" {
		return p
	}
	p, err := build(t)
	if err != nil {
		t.Fatalf("versitygw %s: %v", Version, err)
	}
	return p
}

// CacheDir is where Binary keeps the build of Version.
func CacheDir() (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "serverlessd-s3", Version), nil
}

// build installs versitygw into a fresh folder and renames it into the
// cache, so that the cached path only ever holds a whole binary; the
// lock makes a second test package wait for the first one's build
// rather than repeat it.
func build(t testing.TB) (string, error) {
	dir, err := CacheDir()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "versitygw")
	if exists(bin) {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	unlock, err := lock(filepath.Join(dir, ".lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	if exists(bin) {
		return bin, nil // built while we waited
	}
	// Whoever holds the lock is the only builder: older build folders are
	// left from an interrupted build.
	old, _ := filepath.Glob(filepath.Join(dir, "build-*"))
	for _, o := range old {
		_ = os.RemoveAll(o)
	}
	tmp, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	if err := goInstall(t, tmp); err != nil {
		return "", err
	}
	if err := os.Rename(filepath.Join(tmp, "versitygw"), bin); err != nil {
		return "", err
	}
	return bin, nil
}

func goInstall(t testing.TB, gobin string) error {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("building it needs the go command: %w (or set SERVERLESSD_VERSITYGW to a versitygw binary)", err)
	}
	t.Logf("building versitygw %s into %s once; this takes a few minutes", Version, filepath.Dir(gobin))
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, goCmd, "install", module+"@"+Version)
	// Pure Go (no C compiler needed); outside any module or workspace, and
	// without the caller's GOFLAGS, which may not apply to another module.
	cmd.Env = append(os.Environ(), "GOBIN="+gobin, "CGO_ENABLED=0", "GOFLAGS=", "GOWORK=off")
	cmd.Dir = gobin
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go install %s@%s: %w\n%s", module, Version, err, out)
	}
	t.Logf("built versitygw %s in %v", Version, time.Since(start).Round(time.Second))
	return nil
}

func exists(p string) bool {
	info, err := os.Stat(p)
	return err == nil && info.Mode().IsRegular()
}
