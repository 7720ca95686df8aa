package mariadb

import (
	"crypto/sha1"
	"encoding/hex"
	"strings"
	"testing"
)

// TestBoundCredentials: the bound hash is the native hash of the bound
// stage1, it is not the role's own, and it differs by key, project and role.
func TestBoundCredentials(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	hash := HashPassword("s3cret")
	stage2, _ := hex.DecodeString(hash[1:])
	bound, err := BoundHash(key, "prj_a", "root", hash)
	if err != nil {
		t.Fatal(err)
	}
	s1 := BoundStage1(key, "prj_a", "root", stage2)
	if sum := sha1.Sum(s1); bound != "*"+strings.ToUpper(hex.EncodeToString(sum[:])) {
		t.Errorf("bound hash %s is not SHA1 of the bound stage1", bound)
	}
	if bound == hash || !NativeHash.MatchString(bound) {
		t.Errorf("bound hash %s: want a native hash other than the role's own %s", bound, hash)
	}
	for _, other := range []struct{ key, project, role string }{
		{"another key, long enough......", "prj_a", "root"}, {string(key), "prj_b", "root"}, {string(key), "prj_a", "app"},
	} {
		if h, _ := BoundHash([]byte(other.key), other.project, other.role, hash); h == bound {
			t.Errorf("%+v gives the same bound hash", other)
		}
	}
	if _, err := BoundHash(key, "prj_a", "root", "not-a-hash"); err == nil {
		t.Error("a bad hash was bound")
	}
}
