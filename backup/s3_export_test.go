package backup

import (
	"bytes"
	"strings"
	"testing"
	"testing/iotest"
)

// SetListPageSize makes List page through few keys at a time, so that a
// test sees several pages without storing thousands of objects.
func (s *S3) SetListPageSize(n int32) { s.listPage = n }

// TestS3PartSizes checks the multipart plan against S3's limits: parts of
// at least 5 MiB, at most 10,000 of them, and room for large objects.
func TestS3PartSizes(t *testing.T) {
	var total int64
	for n := int32(1); n <= s3MaxParts; n++ {
		size := s3PartSize(n)
		if size < 5<<20 || size > 64<<20 {
			t.Fatalf("part %d is %d bytes", n, size)
		}
		total += int64(size)
	}
	if total < 350<<30 {
		t.Errorf("%d parts hold only %d GiB", s3MaxParts, total>>30)
	}
}

func TestReadUpTo(t *testing.T) {
	for _, n := range []int{0, 1, 64 << 10, 100000, 1 << 20, 3 << 20} {
		data := bytes.Repeat([]byte("abc"), n/3+1)[:n]
		got, err := readUpTo(iotest.HalfReader(bytes.NewReader(data)), 1<<20)
		want := data[:min(n, 1<<20)]
		if err != nil || !bytes.Equal(got, want) || cap(got) > 1<<20 {
			t.Errorf("readUpTo(%d bytes) = %d bytes (cap %d), %v", n, len(got), cap(got), err)
		}
	}
	if _, err := readUpTo(iotest.ErrReader(iotest.ErrTimeout), 10); err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Errorf("a failing reader: %v", err)
	}
}
