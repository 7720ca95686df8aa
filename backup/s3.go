package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"golang.org/x/sync/errgroup"
)

// S3Options configure an S3 (or S3-compatible) backup target.
type S3Options struct {
	// Endpoint is the server's URL, such as http://127.0.0.1:7070; empty
	// means AWS. With an endpoint, buckets are addressed by path, which
	// every S3-compatible server supports.
	Endpoint string
	// Bucket must exist; the target does not create it.
	Bucket string
	// Prefix is put before every key, joined with "/", so that several
	// daemons or environments can share a bucket.
	Prefix string
	// Region defaults to the AWS config chain's, else "us-east-1".
	Region string
	// AccessKeyID and SecretAccessKey are used when both are set; when
	// both are empty, the standard AWS chain (environment, shared config,
	// instance role) provides the credentials.
	AccessKeyID, SecretAccessKey string
}

// Validate reports what in o is missing or malformed, without any request.
func (o S3Options) Validate() error {
	if o.Bucket == "" {
		return errors.New("backup S3 target: no bucket is set; name an existing bucket")
	}
	if (o.AccessKeyID == "") != (o.SecretAccessKey == "") {
		return errors.New("backup S3 target: set both the access key ID and the secret access key, or neither to use the AWS credential chain")
	}
	if p := strings.Trim(o.Prefix, "/"); p != "" && checkS3Key(p) != nil {
		return fmt.Errorf("backup S3 target: prefix %q must be a plain relative path like \"backups/prod\"", o.Prefix)
	}
	if o.Endpoint != "" {
		u, err := url.Parse(o.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("backup S3 target: endpoint %q is not a URL like https://s3.example.com", o.Endpoint)
		}
	}
	return nil
}

// String leaves the secret out, so that printing the options is safe.
func (o S3Options) String() string {
	secret := ""
	if o.SecretAccessKey != "" {
		secret = "(set)"
	}
	return fmt.Sprintf("{Endpoint:%s Bucket:%s Prefix:%s Region:%s AccessKeyID:%s SecretAccessKey:%s}",
		o.Endpoint, o.Bucket, o.Prefix, o.Region, o.AccessKeyID, secret)
}

// GoString is String, so that %#v does not print the secret either.
func (o S3Options) GoString() string { return "backup.S3Options" + o.String() }

// S3 is a Target in an S3 bucket.
type S3 struct {
	client   *s3.Client
	bucket   string
	prefix   string // without slashes at either end; "" for none
	endpoint string // for error messages
	listPage int32  // keys per ListObjectsV2 page; 0 is the server's default (1,000). Tests lower it.
}

var _ Target = (*S3)(nil)

// Multipart limits. S3 needs every part but the last to be at least 5 MiB
// and allows 10,000 parts. Parts start at 8 MiB and double every 2,000
// parts up to 64 MiB, so objects up to ~359 GiB fit while an object under
// 15 GiB never holds more than s3PutConcurrency*8 MiB in memory.
const (
	s3BasePartSize   = 8 << 20
	s3MaxPartShift   = 3
	s3PartsPerSize   = 2000
	s3MaxParts       = 10000
	s3PutConcurrency = 3 // parts in memory at once: uploading, plus the one being read
)

func s3PartSize(num int32) int {
	return s3BasePartSize << min((num-1)/s3PartsPerSize, s3MaxPartShift)
}

// Client limits. The daemon retries failed backups with its own backoff,
// so the SDK retries only briefly and never refuses for lack of retry
// tokens (its default token bucket turns an outage into minutes of
// "retry quota exceeded" after it recovers).
const (
	s3MaxAttempts   = 3
	s3MaxBackoff    = 2 * time.Second
	s3DialTimeout   = 10 * time.Second
	s3HeaderTimeout = 2 * time.Minute // after a request's body is sent; bounds a hung server
	s3AbortTimeout  = time.Minute
	s3DefaultRegion = "us-east-1"
)

// NewS3 returns the target that o describes. It sends no request: a bucket
// that is missing or not allowed fails the first operation (see Check).
func NewS3(ctx context.Context, o S3Options) (*S3, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	cfg, err := config.LoadDefaultConfig(ctx, s3LoadOptions(o)...)
	if err != nil {
		return nil, fmt.Errorf("backup S3 target: load the AWS config: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = s3DefaultRegion
	}
	client := s3.NewFromConfig(cfg, func(so *s3.Options) {
		if o.Endpoint != "" {
			so.BaseEndpoint = aws.String(o.Endpoint)
			so.UsePathStyle = true
		}
	})
	return &S3{client: client, bucket: o.Bucket, prefix: strings.Trim(o.Prefix, "/"), endpoint: o.Endpoint}, nil
}

func s3LoadOptions(o S3Options) []func(*config.LoadOptions) error {
	httpClient := awshttp.NewBuildableClient().
		WithDialerOptions(func(d *net.Dialer) { d.Timeout = s3DialTimeout }).
		WithTransportOptions(func(t *http.Transport) { t.ResponseHeaderTimeout = s3HeaderTimeout })
	opts := []func(*config.LoadOptions) error{
		config.WithHTTPClient(httpClient),
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(so *retry.StandardOptions) {
				so.MaxAttempts = s3MaxAttempts
				so.MaxBackoff = s3MaxBackoff
				so.RateLimiter = ratelimit.None
			})
		}),
		// Optional CRC checksums (the SDK's default since 2025) are refused
		// by many S3-compatible servers, and add nothing here: every
		// restore checks every file's SHA-256.
		config.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
		config.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired),
	}
	if o.Region != "" {
		opts = append(opts, config.WithRegion(o.Region))
	}
	if o.AccessKeyID != "" {
		opts = append(opts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(o.AccessKeyID, o.SecretAccessKey, "")))
	}
	return opts
}

// checkS3Key refuses keys that are not clean relative paths, as Dir does, so
// that a key means the same object on every target.
func checkS3Key(key string) error {
	if key == "" || path.Clean(key) != key || strings.HasPrefix(key, "/") || key == ".." || strings.HasPrefix(key, "../") {
		return fmt.Errorf("backup key %q is not a relative path inside the target", key)
	}
	return nil
}

// key is the S3 key of a target key (or of a List prefix).
func (s *S3) key(k string) string {
	if s.prefix == "" {
		return k
	}
	return s.prefix + "/" + k
}

// where names an object for messages: s3://bucket/key, and the endpoint.
func (s *S3) where(key string) string {
	w := "s3://" + s.bucket + "/" + s.key(key)
	if s.endpoint != "" {
		w += " at " + s.endpoint
	}
	return w
}

// fail says what failed where, and adds what to do when the error tells.
func (s *S3) fail(what, key string, err error) error {
	return fmt.Errorf("%s %s: %w%s", what, s.where(key), err, s3Hint(err))
}

func s3Hint(err error) string {
	var api smithy.APIError
	var netErr net.Error
	switch {
	case errors.As(err, &api):
		switch api.ErrorCode() {
		case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "Forbidden":
			return "; check the backup S3 credentials and that they may read and write the bucket"
		case "NoSuchBucket":
			return "; create the bucket or correct the bucket name"
		case "PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException":
			return "; set the bucket's region"
		}
	case errors.As(err, &netErr):
		return "; check that the S3 endpoint is reachable"
	}
	return ""
}

// isS3NotFound reports a missing object (NoSuchKey, or HeadObject's bare
// 404), but not a missing bucket, which is a setup error.
func isS3NotFound(err error) bool {
	var api smithy.APIError
	if !errors.As(err, &api) {
		return false
	}
	return api.ErrorCode() == "NoSuchKey" || api.ErrorCode() == "NotFound"
}

// Check asks for the bucket, so that a wrong name, region or credential
// shows at startup rather than at the first backup.
func (s *S3) Check(ctx context.Context) error {
	_, err := s.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(s.bucket)})
	if isS3NotFound(err) {
		return fmt.Errorf("backup S3 bucket %s does not exist%s; create it or correct the bucket name", s.bucket, s.at())
	}
	if err != nil {
		return fmt.Errorf("backup S3 bucket %s%s: %w%s", s.bucket, s.at(), err, s3Hint(err))
	}
	return nil
}

func (s *S3) at() string {
	if s.endpoint == "" {
		return ""
	}
	return " at " + s.endpoint
}

// Put stores r under key. An object smaller than one part is sent in one
// PutObject; a larger one, of any length, in a multipart upload whose
// parts are read into bounded buffers and sent a few at a time. Either way
// S3 shows the object only once it is whole: a failed Put leaves the
// previous object, if any, in place.
//
// This is a small loop of our own rather than feature/s3/manager (which
// its makers deprecated) or feature/s3/transfermanager (not yet v1, its
// API still changes): it keeps memory bounded to s3PutConcurrency parts,
// aborts the upload even when ctx is cancelled, and is the one code path
// the tests run against a real server.
func (s *S3) Put(ctx context.Context, key string, r io.Reader) error {
	if err := checkS3Key(key); err != nil {
		return err
	}
	first, err := readUpTo(r, s3PartSize(1))
	if err != nil {
		return fmt.Errorf("read backup object %s: %w", key, err)
	}
	if len(first) < s3PartSize(1) {
		return s.putOne(ctx, key, first)
	}
	return s.putMultipart(ctx, key, first, r)
}

// readUpTo reads r until EOF or size bytes, growing its buffer as data
// comes, so that a small object (most are) does not cost a whole part.
func readUpTo(r io.Reader, size int) ([]byte, error) {
	b := make([]byte, 0, min(size, 64<<10))
	for len(b) < size {
		if len(b) == cap(b) {
			b = append(make([]byte, 0, min(2*cap(b), size)), b...)
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	return b, nil
}

func (s *S3) putOne(ctx context.Context, key string, b []byte) error {
	_, err := s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(s.bucket), Key: aws.String(s.key(key)),
		Body: bytes.NewReader(b), ContentLength: aws.Int64(int64(len(b))),
	})
	if err != nil {
		return s.fail("store backup object", key, err)
	}
	return nil
}

func (s *S3) putMultipart(ctx context.Context, key string, first []byte, r io.Reader) error {
	up, err := s.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{
		Bucket: aws.String(s.bucket), Key: aws.String(s.key(key)),
	})
	if err != nil {
		return s.fail("start the upload of backup object", key, err)
	}
	parts, err := s.uploadParts(ctx, key, up.UploadId, first, r)
	if err == nil {
		_, err = s.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
			Bucket: aws.String(s.bucket), Key: aws.String(s.key(key)), UploadId: up.UploadId,
			MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
		})
		if err != nil {
			err = s.fail("finish the upload of backup object", key, err)
		}
	}
	if err != nil {
		return s.abort(key, up.UploadId, err)
	}
	return nil
}

// abort drops a failed upload's parts, even when ctx was cancelled: they
// would otherwise be stored (and billed) until a lifecycle rule removes
// them.
func (s *S3) abort(key string, id *string, cause error) error {
	ctx, cancel := context.WithTimeout(context.Background(), s3AbortTimeout)
	defer cancel()
	_, err := s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
		Bucket: aws.String(s.bucket), Key: aws.String(s.key(key)), UploadId: id,
	})
	if err != nil && !isS3NoSuchUpload(err) {
		return fmt.Errorf("%w; aborting the upload failed too, so its parts stay in the bucket until removed (an AbortIncompleteMultipartUpload lifecycle rule does that): %v", cause, err)
	}
	return cause
}

func isS3NoSuchUpload(err error) bool {
	var api smithy.APIError
	return errors.As(err, &api) && api.ErrorCode() == "NoSuchUpload"
}

// uploadParts sends first and then the rest of r as parts, returning them
// in order. At most s3PutConcurrency buffers exist: one is read while the
// others upload, and reading waits for a buffer to come back.
func (s *S3) uploadParts(ctx context.Context, key string, id *string, first []byte, r io.Reader) ([]types.CompletedPart, error) {
	free := make(chan []byte, s3PutConcurrency)
	for range s3PutConcurrency - 1 {
		free <- nil // allocated when first needed
	}
	g, gctx := errgroup.WithContext(ctx)
	var mu sync.Mutex
	var parts []types.CompletedPart
	buf, readErr := first, error(nil)
	for num := int32(1); buf != nil; num++ {
		b, n := buf, num
		g.Go(func() error {
			defer func() { free <- b }()
			part, err := s.uploadPart(gctx, key, id, n, b)
			if err != nil {
				return err
			}
			mu.Lock()
			parts = append(parts, part)
			mu.Unlock()
			return nil
		})
		buf, readErr = s.nextPart(gctx, key, free, r, num+1)
		if readErr != nil {
			break
		}
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if readErr != nil {
		return nil, readErr
	}
	sort.Slice(parts, func(i, j int) bool { return *parts[i].PartNumber < *parts[j].PartNumber })
	return parts, nil
}

// nextPart reads part num into a free buffer; nil at the end of r.
func (s *S3) nextPart(ctx context.Context, key string, free chan []byte, r io.Reader, num int32) ([]byte, error) {
	var buf []byte
	select {
	case buf = <-free:
	case <-ctx.Done():
		// An upload failed (g.Wait reports it) or the caller gave up.
		return nil, fmt.Errorf("store backup object %s: %w", s.where(key), ctx.Err())
	}
	size := s3PartSize(num)
	if cap(buf) < size {
		buf = make([]byte, size)
	}
	n, err := io.ReadFull(r, buf[:size])
	switch {
	case err == io.EOF:
		return nil, nil
	case err != nil && err != io.ErrUnexpectedEOF:
		return nil, fmt.Errorf("read backup object %s: %w", key, err)
	case num > s3MaxParts:
		return nil, fmt.Errorf("store backup object %s: larger than S3's %d parts allow (about 359 GiB)", s.where(key), s3MaxParts)
	}
	return buf[:n], nil
}

func (s *S3) uploadPart(ctx context.Context, key string, id *string, num int32, b []byte) (types.CompletedPart, error) {
	out, err := s.client.UploadPart(ctx, &s3.UploadPartInput{
		Bucket: aws.String(s.bucket), Key: aws.String(s.key(key)), UploadId: id,
		PartNumber: aws.Int32(num), Body: bytes.NewReader(b), ContentLength: aws.Int64(int64(len(b))),
	})
	if err != nil {
		return types.CompletedPart{}, s.fail(fmt.Sprintf("upload part %d of backup object", num), key, err)
	}
	return types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(num)}, nil
}

// Get opens the object; the caller reads it as it downloads.
func (s *S3) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := checkS3Key(key); err != nil {
		return nil, err
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.key(key))})
	if isS3NotFound(err) {
		return nil, fmt.Errorf("backup object %s: %w", s.where(key), ErrNotFound)
	}
	if err != nil {
		return nil, s.fail("read backup object", key, err)
	}
	return out.Body, nil
}

// Exists asks for the object's metadata. A missing bucket reads as a
// missing object too (HeadObject's 404 has no body to tell them apart);
// the Put that follows names it.
func (s *S3) Exists(ctx context.Context, key string) (bool, error) {
	if err := checkS3Key(key); err != nil {
		return false, err
	}
	_, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.key(key))})
	if isS3NotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, s.fail("look up backup object", key, err)
	}
	return true, nil
}

// List pages through the bucket under the target's prefix and prefix, and
// returns the keys without the target's prefix.
func (s *S3) List(ctx context.Context, prefix string) ([]Object, error) {
	full := s.key(prefix)
	strip := len(s.key(""))
	var out []Object
	var token string
	pages := s3.NewListObjectsV2Paginator(s.client,
		&s3.ListObjectsV2Input{Bucket: aws.String(s.bucket), Prefix: aws.String(full)},
		func(o *s3.ListObjectsV2PaginatorOptions) { o.Limit = s.listPage })
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, s.fail("list backup objects under", prefix, err)
		}
		// A server that hands back the token it was given would page forever;
		// stopping there would return a partial list as if it were whole.
		next := aws.ToString(page.NextContinuationToken)
		if next != "" && next == token {
			return nil, fmt.Errorf("list backup objects under %s: the server repeated continuation token %q", s.where(prefix), next)
		}
		token = next
		for _, o := range page.Contents {
			k := aws.ToString(o.Key)
			if !strings.HasPrefix(k, full) || strings.HasSuffix(k, "/") {
				continue // folder markers are no target's objects
			}
			out = append(out, Object{Key: k[strip:], Size: aws.ToInt64(o.Size), ModTime: aws.ToTime(o.LastModified)})
		}
	}
	// S3 lists in key order; some compatible servers do not.
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Delete removes the object; S3 answers a missing one like a deleted one.
func (s *S3) Delete(ctx context.Context, key string) error {
	if err := checkS3Key(key); err != nil {
		return err
	}
	_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.key(key))})
	if err != nil && !isS3NotFound(err) {
		return s.fail("delete backup object", key, err)
	}
	return nil
}
