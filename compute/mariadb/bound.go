package mariadb

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// Bound credentials keep a tenant's password from opening its compute
// directly. A role's account in a compute is not given the role's own hash
// but one derived from it with a key only the daemons hold:
//
//	stage1' = HMAC-SHA256(key, project || role || stage2)[:20]
//	hash'   = "*" + HEX(SHA1(stage1'))
//
// The proxy checks a client against the role's stored hash (stage2) as
// always, then logs in to the backend with stage1', which it derives from
// that hash alone. A tenant who reaches a compute's address around the
// daemon (another Pod of the cluster) has the password, not stage1', and is
// refused: only the daemon can log in, whatever the network allows.

// BoundStage1 is stage1' for the role of a project whose stored stage2 (the
// 20 bytes of its hash) is given.
func BoundStage1(key []byte, projectID, role string, stage2 []byte) []byte {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte("serverlessd bound credential v1\x00"))
	mac.Write([]byte(projectID + "\x00" + role + "\x00"))
	mac.Write(stage2)
	return mac.Sum(nil)[:sha1.Size]
}

// BoundHash is the hash' of a role whose stored hash is given, as mysql.user
// stores it.
func BoundHash(key []byte, projectID, role, hash string) (string, error) {
	if !NativeHash.MatchString(strings.ToUpper(hash)) {
		return "", fmt.Errorf("role %q: not a mysql_native_password hash", role)
	}
	stage2, err := hex.DecodeString(hash[1:])
	if err != nil {
		return "", fmt.Errorf("role %q: %w", role, err)
	}
	sum := sha1.Sum(BoundStage1(key, projectID, role, stage2))
	return "*" + strings.ToUpper(hex.EncodeToString(sum[:])), nil
}
