package wire

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"strings"
)

// Stage1 is SHA1(password), the secret a mysql_native_password reply proves
// knowledge of. Stage2 is SHA1(stage1), the hash MariaDB stores as "*HEX".

// ParseNativeHash decodes MariaDB's stored form "*<40 hex>" into stage2.
func ParseNativeHash(s string) ([]byte, error) {
	if len(s) != 41 || s[0] != '*' {
		return nil, errors.New("not a mysql_native_password hash")
	}
	b, err := hex.DecodeString(s[1:])
	if err != nil {
		return nil, errors.New("not a mysql_native_password hash")
	}
	return b, nil
}

// FormatNativeHash encodes stage2 as MariaDB stores it.
func FormatNativeHash(stage2 []byte) string {
	return "*" + strings.ToUpper(hex.EncodeToString(stage2))
}

// Stage1 returns SHA1(password).
func Stage1(password []byte) []byte {
	h := sha1.Sum(password)
	return h[:]
}

// Stage2 returns SHA1(stage1).
func Stage2(stage1 []byte) []byte {
	h := sha1.Sum(stage1)
	return h[:]
}

// NativeHash returns the stored form of password's hash.
func NativeHash(password string) string {
	return FormatNativeHash(Stage2(Stage1([]byte(password))))
}

// NativeScramble computes the mysql_native_password reply for nonce from
// stage1: SHA1(nonce || SHA1(stage1)) XOR stage1. The proxy uses it to log in
// to a backend without ever knowing the cleartext.
func NativeScramble(nonce, stage1 []byte) []byte {
	h := sha1.New()
	h.Write(nonce)
	h.Write(Stage2(stage1))
	return xor(h.Sum(nil), stage1)
}

// RecoverStage1 undoes a native reply: reply XOR SHA1(nonce || stage2).
// The result is stage1 only if the reply was made with the right password;
// VerifyStage1 says whether it was.
func RecoverStage1(nonce, reply, stage2 []byte) []byte {
	h := sha1.New()
	h.Write(nonce)
	h.Write(stage2)
	mask := h.Sum(nil)
	if len(reply) != len(mask) {
		// Do the same work as a well-formed reply, then fail the check.
		reply = make([]byte, len(mask))
	}
	return xor(reply, mask)
}

// VerifyStage1 reports, in constant time, whether SHA1(stage1) == stage2.
func VerifyStage1(stage1, stage2 []byte) bool {
	return subtle.ConstantTimeCompare(Stage2(stage1), stage2) == 1
}

func xor(a, b []byte) []byte {
	out := make([]byte, len(a))
	if len(b) == 0 {
		copy(out, a)
		return out
	}
	for i := range a {
		out[i] = a[i] ^ b[i%len(b)]
	}
	return out
}

// NewNonce returns a random nonce of printable ASCII without NUL or '$', as
// MySQL generates it: some clients treat the nonce as a C string.
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
// RSA exchange: the client sends RSA-OAEP(SHA1)((password || NUL) XOR nonce).
func DecryptSha2Password(key *rsa.PrivateKey, nonce, cipher []byte) ([]byte, error) {
	plain, err := rsa.DecryptOAEP(sha1.New(), nil, key, cipher, nil)
	if err != nil {
		return nil, err
	}
	plain = xor(plain, nonce)
	return TrimNUL(plain), nil
}

// EncryptSha2Password is the client side of DecryptSha2Password, used by
// tests that play a MySQL 8 client.
func EncryptSha2Password(pub *rsa.PublicKey, nonce, password []byte) ([]byte, error) {
	plain := xor(append(append([]byte(nil), password...), 0), nonce)
	return rsa.EncryptOAEP(sha1.New(), rand.Reader, pub, plain, nil)
}

// TrimNUL drops one trailing NUL, as clients terminate cleartext passwords.
func TrimNUL(b []byte) []byte {
	if len(b) > 0 && b[len(b)-1] == 0 {
		return b[:len(b)-1]
	}
	return b
}
