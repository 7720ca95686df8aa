package wire

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/subtle"
	"errors"

	"github.com/go-mysql-org/go-mysql/mysql"
)

// Stage1 is SHA1(password), the secret a mysql_native_password reply proves
// knowledge of. Stage2 is SHA1(stage1), the hash MariaDB stores as "*HEX"
// (mysql.NativePasswordHash computes it from the cleartext, and
// mysql.EncodePasswordHex formats it).

// ParseNativeHash decodes MariaDB's stored form "*<40 hex>" into stage2.
// The shape check is ours: mysql.DecodePasswordHex accepts any length and
// indexes an empty string.
func ParseNativeHash(s string) ([]byte, error) {
	if len(s) != 41 || s[0] != '*' {
		return nil, errors.New("not a mysql_native_password hash")
	}
	b, err := mysql.DecodePasswordHex(s)
	if err != nil {
		return nil, errors.New("not a mysql_native_password hash")
	}
	return b, nil
}

// Stage1 returns SHA1(password). Ours: go-mysql only hashes all the way to
// stage2 (NativePasswordHash) or to a scramble (CalcNativePassword).
func Stage1(password []byte) []byte {
	h := sha1.Sum(password)
	return h[:]
}

// NativeScramble computes the mysql_native_password reply for nonce from
// stage1: SHA1(nonce || SHA1(stage1)) XOR stage1, which is what
// mysql.CalcNativePassword computes from the cleartext. Ours: the proxy logs
// in to a backend without ever knowing the cleartext. stage1 must not be
// empty.
func NativeScramble(nonce, stage1 []byte) []byte {
	stage2 := sha1.Sum(stage1)
	h := sha1.New()
	h.Write(nonce)
	h.Write(stage2[:])
	return mysql.Xor(h.Sum(nil), stage1)
}

// RecoverStage1 undoes a native reply: reply XOR SHA1(nonce || stage2).
// The result is stage1 only if the reply was made with the right password;
// VerifyStage1 says whether it was. Ours: mysql.CompareNativePassword
// checks a reply but does not return stage1, which the backend login needs.
func RecoverStage1(nonce, reply, stage2 []byte) []byte {
	h := sha1.New()
	h.Write(nonce)
	h.Write(stage2)
	mask := h.Sum(nil)
	if len(reply) != len(mask) {
		// Do the same work as a well-formed reply, then fail the check.
		reply = make([]byte, len(mask))
	}
	return mysql.Xor(reply, mask)
}

// VerifyStage1 reports, in constant time, whether SHA1(stage1) == stage2.
// Ours: go-mysql has no check that starts from stage1.
func VerifyStage1(stage1, stage2 []byte) bool {
	h := sha1.Sum(stage1)
	return subtle.ConstantTimeCompare(h[:], stage2) == 1
}

// NewNonce returns a random nonce of printable ASCII without NUL or '$', as
// MySQL generates it: some clients treat the nonce as a C string. Ours:
// mysql.RandomBuf draws from math/rand and may yield '$'.
func NewNonce() []byte {
	b := make([]byte, NonceLen)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	for i := range b {
		c := 33 + b[i]%94 // '!'..'~'
		if c == '$' {
			c = '#'
		}
		b[i] = c
	}
	return b
}

// DecryptSha2Password recovers the cleartext from a caching_sha2_password
// RSA exchange, the inverse of mysql.EncryptPassword: the client sends
// RSA-OAEP(SHA1)((password || NUL) XOR nonce). Ours: go-mysql decrypts only
// inside its server.Conn. nonce must not be empty.
func DecryptSha2Password(key *rsa.PrivateKey, nonce, cipher []byte) ([]byte, error) {
	plain, err := rsa.DecryptOAEP(sha1.New(), nil, key, cipher, nil)
	if err != nil {
		return nil, err
	}
	return TrimNUL(mysql.Xor(plain, nonce)), nil
}

// TrimNUL drops one trailing NUL, as clients terminate cleartext passwords.
// Ours: go-mysql trims inline in its server.Conn.
func TrimNUL(b []byte) []byte {
	if len(b) > 0 && b[len(b)-1] == 0 {
		return b[:len(b)-1]
	}
	return b
}
