package backup_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"golang.org/x/sync/errgroup"

	"github.com/serverlessd/serverlessd/backup"
	"github.com/serverlessd/serverlessd/backup/s3test"
)

func newS3(t *testing.T, srv *s3test.Server, prefix string) *backup.S3 {
	t.Helper()
	tgt, err := backup.NewS3(context.Background(), srv.Options(prefix))
	if err != nil {
		t.Fatal(err)
	}
	return tgt
}

func put(t *testing.T, tgt backup.Target, key, content string) {
	t.Helper()
	if err := tgt.Put(context.Background(), key, strings.NewReader(content)); err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, tgt backup.Target, key string) string {
	t.Helper()
	r, err := tgt.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func keys(t *testing.T, tgt backup.Target, prefix string) []string {
	t.Helper()
	objs, err := tgt.List(context.Background(), prefix)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, o := range objs {
		out = append(out, o.Key)
	}
	return out
}

func TestS3PutGetExistsDelete(t *testing.T) {
	ctx := context.Background()
	srv := s3test.Start(t)
	tgt := newS3(t, srv, "env/prod")
	if err := tgt.Check(ctx); err != nil {
		t.Fatal(err)
	}

	put(t, tgt, "snapshots/p1/1.json", "first")
	put(t, tgt, "snapshots/p1/1.json", "replaced")
	put(t, tgt, "empty", "")
	if got := get(t, tgt, "snapshots/p1/1.json"); got != "replaced" {
		t.Errorf("Get = %q, want the replacement", got)
	}
	if got := get(t, tgt, "empty"); got != "" {
		t.Errorf("Get(empty) = %q", got)
	}
	if ok, err := tgt.Exists(ctx, "snapshots/p1/1.json"); !ok || err != nil {
		t.Errorf("Exists = %v, %v; want true", ok, err)
	}
	if ok, err := tgt.Exists(ctx, "snapshots/p1/2.json"); ok || err != nil {
		t.Errorf("Exists(missing) = %v, %v; want false", ok, err)
	}
	_, err := tgt.Get(ctx, "snapshots/p1/2.json")
	if !errors.Is(err, backup.ErrNotFound) || !strings.Contains(err.Error(), "env/prod/snapshots/p1/2.json") {
		t.Errorf("Get(missing) = %v, want ErrNotFound naming the key", err)
	}

	if err := tgt.Delete(ctx, "snapshots/p1/1.json"); err != nil {
		t.Fatal(err)
	}
	if err := tgt.Delete(ctx, "snapshots/p1/1.json"); err != nil {
		t.Errorf("deleting a missing object: %v", err)
	}
	if ok, _ := tgt.Exists(ctx, "snapshots/p1/1.json"); ok {
		t.Error("the object is still there after Delete")
	}
	// The bucket holds the object under the prefix, and nothing else.
	out, err := srv.Client().ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(srv.Bucket)})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Contents) != 1 || aws.ToString(out.Contents[0].Key) != "env/prod/empty" {
		t.Errorf("bucket holds %d objects, want only env/prod/empty", len(out.Contents))
	}
	for _, key := range []string{"", "../x", "/abs", "a/../../x", "a//b", "dir/"} {
		if err := tgt.Put(ctx, key, strings.NewReader("x")); err == nil {
			t.Errorf("Put(%q) was accepted", key)
		}
	}
}

// stream yields n pseudo-random bytes and hides any Seek or Len, as a
// pipe from a compressor would.
type stream struct{ r io.Reader }

func (s stream) Read(p []byte) (int, error) { return s.r.Read(p) }

func newStream(seed uint64, n int64) stream {
	return stream{io.LimitReader(rand.NewChaCha8([32]byte{byte(seed)}), n)}
}

func hashOf(t *testing.T, r io.Reader) [sha256.Size]byte {
	t.Helper()
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		t.Fatal(err)
	}
	return [sha256.Size]byte(h.Sum(nil))
}

// TestS3LargeStreamedPut sends, from readers of unknown length, exactly
// one part's worth (8 MiB) and more than two parts' worth, so that the
// multipart path runs with parts in flight at once.
func TestS3LargeStreamedPut(t *testing.T) {
	ctx := context.Background()
	srv := s3test.Start(t)
	tgt := newS3(t, srv, "")
	for i, size := range []int64{8 << 20, 20<<20 + 12345} {
		key := fmt.Sprintf("big/%d", i)
		if err := tgt.Put(ctx, key, newStream(uint64(i), size)); err != nil {
			t.Fatal(err)
		}
		r, err := tgt.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if hashOf(t, r) != hashOf(t, newStream(uint64(i), size)) {
			t.Fatalf("%d bytes: the object read back differs from what was put", size)
		}
		r.Close()
		objs, err := tgt.List(ctx, key)
		if err != nil || len(objs) != 1 || objs[0].Size != size || objs[0].ModTime.IsZero() {
			t.Fatalf("List = %+v, %v; want one object of %d bytes", objs, err, size)
		}
	}
	noUploadsLeft(t, srv)
}

func noUploadsLeft(t *testing.T, srv *s3test.Server) {
	t.Helper()
	ups, err := srv.Client().ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: aws.String(srv.Bucket)})
	if err != nil {
		t.Fatal(err)
	}
	if len(ups.Uploads) != 0 {
		t.Errorf("%d multipart uploads are left in the bucket", len(ups.Uploads))
	}
}

// failingReader yields n bytes, then fails.
type failingReader struct {
	r io.Reader
}

func (f failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, errors.New("the compressor broke")
	}
	return n, err
}

// TestS3FailedPutLeavesOldObject fails a multipart Put midway, by its
// reader and by a cancelled context: the previous object stays, whole, and
// no upload is left behind.
func TestS3FailedPutLeavesOldObject(t *testing.T) {
	ctx := context.Background()
	srv := s3test.Start(t)
	tgt := newS3(t, srv, "p")
	put(t, tgt, "obj", "old")

	err := tgt.Put(ctx, "obj", failingReader{newStream(2, 18<<20)})
	if err == nil || !strings.Contains(err.Error(), "the compressor broke") {
		t.Fatalf("Put from a failing reader = %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	r := io.MultiReader(newStream(3, 10<<20), readerFunc(func([]byte) (int, error) { cancel(); return 0, io.EOF }), newStream(4, 10<<20))
	if err := tgt.Put(cctx, "obj", stream{r}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put with a cancelled context = %v, want context.Canceled", err)
	}
	if got := get(t, tgt, "obj"); got != "old" {
		t.Errorf("after failed Puts the object holds %d bytes, want the old one", len(got))
	}
	noUploadsLeft(t, srv)
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// TestS3ListPrefixPagesAndIsolation lists through several pages, and
// checks that targets with different prefixes in one bucket, even
// "tenant" and "tenant2", see only their own objects.
func TestS3ListPrefixPagesAndIsolation(t *testing.T) {
	ctx := context.Background()
	srv := s3test.Start(t)
	a, b := newS3(t, srv, "tenant"), newS3(t, srv, "/tenant2/")
	a.SetListPageSize(7)
	const n = 45 // 7 pages, the last one partial
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for i := range n {
		g.Go(func() error { return a.Put(gctx, fmt.Sprintf("objects/%04d", i), strings.NewReader("x")) })
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	put(t, a, "snapshots/1.json", "{}")
	put(t, b, "objects/0001", "other tenant")

	// The server honours the page size, so List above had to follow pages.
	page, err := srv.Client().ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(srv.Bucket), MaxKeys: aws.Int32(7)})
	if err != nil || len(page.Contents) != 7 || !aws.ToBool(page.IsTruncated) {
		t.Fatalf("a page of 7: %v, %v", page, err)
	}
	got := keys(t, a, "objects/")
	if len(got) != n || got[0] != "objects/0000" || got[n-1] != fmt.Sprintf("objects/%04d", n-1) {
		t.Fatalf("List(objects/) = %d keys [%s ... %s], want %d in order", len(got), got[0], got[len(got)-1], n)
	}
	for i := 1; i < len(got); i++ {
		if got[i-1] >= got[i] {
			t.Fatalf("List is not sorted: %s before %s", got[i-1], got[i])
		}
	}
	if got := keys(t, a, "snap"); len(got) != 1 || got[0] != "snapshots/1.json" {
		t.Errorf("List(snap) = %v", got)
	}
	if got := keys(t, a, ""); len(got) != n+1 {
		t.Errorf("List() = %d keys, want %d", len(got), n+1)
	}
	if got := keys(t, b, ""); len(got) != 1 || got[0] != "objects/0001" {
		t.Errorf("the other tenant's List() = %v, want only its own object", got)
	}
	if got := get(t, a, "objects/0001"); got != "x" {
		t.Errorf("tenant reads %q, the other tenant's object", got)
	}
	if ok, _ := b.Exists(ctx, "snapshots/1.json"); ok {
		t.Error("the other tenant sees the tenant's object")
	}
	if got := keys(t, a, "nothing/"); len(got) != 0 {
		t.Errorf("List(nothing/) = %v", got)
	}
}

// TestS3ServerDown stops the server: operations fail soon, naming the
// object and the bucket, and work again once it is back.
func TestS3ServerDown(t *testing.T) {
	ctx := context.Background()
	srv := s3test.Start(t)
	tgt := newS3(t, srv, "")
	put(t, tgt, "before", "kept")

	srv.Stop()
	start := time.Now()
	err := tgt.Put(ctx, "during", strings.NewReader("x"))
	if err == nil {
		t.Fatal("Put succeeded with the server down")
	}
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("Put took %v to fail", took)
	}
	msg := err.Error()
	if !strings.Contains(msg, "s3://"+srv.Bucket+"/during") || !strings.Contains(msg, "reachable") {
		t.Errorf("the error does not say what failed and what to do: %v", err)
	}
	if _, err := tgt.Exists(ctx, "before"); err == nil {
		t.Error("Exists succeeded with the server down")
	}
	if _, err := tgt.Get(ctx, "before"); err == nil || errors.Is(err, backup.ErrNotFound) {
		t.Errorf("Get with the server down = %v, want an error other than ErrNotFound", err)
	}

	srv.Restart()
	put(t, tgt, "after", "ok")
	if got := get(t, tgt, "before"); got != "kept" {
		t.Errorf("after a restart the object holds %q", got)
	}
}

// TestS3SnapshotRestore takes two snapshots into S3 and restores the
// second.
func TestS3SnapshotRestore(t *testing.T) {
	ctx := context.Background()
	srv := s3test.Start(t)
	tgt := newS3(t, srv, "backups")
	src := t.TempDir()
	files := map[string]string{
		"ibdata1":       strings.Repeat("innodb page ", 100000),
		"shop/t.ibd":    "rows",
		"shop/copy.ibd": "rows",
		"empty":         "",
	}
	for p, c := range files {
		writeFile(t, filepath.Join(src, p), c)
	}
	m1, st, err := backup.Snapshot(ctx, tgt, src, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Uploaded != 3 || st.Reused != 1 {
		t.Fatalf("first snapshot: %+v, want 3 contents stored", st)
	}
	files["shop/t.ibd"] = "more rows"
	writeFile(t, filepath.Join(src, "shop/t.ibd"), files["shop/t.ibd"])
	m2, st, err := backup.Snapshot(ctx, tgt, src, m1)
	if err != nil {
		t.Fatal(err)
	}
	if st.Uploaded != 1 {
		t.Fatalf("second snapshot: %+v, want one content stored", st)
	}
	if err := backup.SaveManifest(ctx, tgt, "snapshots/p1/2.json", m2); err != nil {
		t.Fatal(err)
	}
	loaded, err := backup.LoadManifest(ctx, tgt, "snapshots/p1/2.json")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "restored")
	if err := backup.Restore(ctx, tgt, loaded, out); err != nil {
		t.Fatal(err)
	}
	for p, c := range files {
		if b, err := os.ReadFile(filepath.Join(out, p)); err != nil || string(b) != c {
			t.Errorf("restored %s: %d bytes, %v; want %d bytes", p, len(b), err, len(c))
		}
	}
	if objs := keys(t, tgt, "objects/"); len(objs) != 4 {
		t.Errorf("the bucket holds %d contents, want 4", len(objs))
	}
}

func writeFile(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o640); err != nil {
		t.Fatal(err)
	}
}

// TestS3SetupErrors needs no server: options are checked before any
// request, and a wrong bucket or key is named at Check.
func TestS3SetupErrors(t *testing.T) {
	for _, c := range []struct {
		o    backup.S3Options
		want string
	}{
		{backup.S3Options{}, "bucket"},
		{backup.S3Options{Bucket: "b", AccessKeyID: "AK"}, "secret access key"},
		{backup.S3Options{Bucket: "b", Endpoint: "localhost:9000"}, "endpoint"},
		{backup.S3Options{Bucket: "b", Prefix: "a/../b"}, "prefix"},
	} {
		if _, err := backup.NewS3(context.Background(), c.o); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewS3(%v) = %v, want an error about the %s", c.o, err, c.want)
		}
	}
	o := backup.S3Options{Bucket: "b", AccessKeyID: "AK", SecretAccessKey: "very-secret"}
	for _, s := range []string{fmt.Sprint(o), fmt.Sprintf("%+v", o), fmt.Sprintf("%#v", o), fmt.Sprint(&o)} {
		if strings.Contains(s, "very-secret") || !strings.Contains(s, "AK") {
			t.Errorf("printed options %s show the secret or hide the key ID", s)
		}
	}
}

func TestS3CheckNamesWrongBucketAndKey(t *testing.T) {
	ctx := context.Background()
	srv := s3test.Start(t)
	o := srv.Options("")
	o.Bucket = "no-such-bucket"
	tgt, err := backup.NewS3(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := tgt.Check(ctx); err == nil || !strings.Contains(err.Error(), "no-such-bucket does not exist") {
		t.Errorf("Check of a missing bucket = %v", err)
	}
	if err := tgt.Put(ctx, "k", bytes.NewReader(nil)); err == nil || !strings.Contains(err.Error(), "create the bucket") {
		t.Errorf("Put into a missing bucket = %v", err)
	}
	o = srv.Options("")
	o.SecretAccessKey = "wrong"
	tgt, err = backup.NewS3(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := tgt.Put(ctx, "k", bytes.NewReader(nil)); err == nil || !strings.Contains(err.Error(), "credentials") {
		t.Errorf("Put with a wrong secret = %v", err)
	}
}
