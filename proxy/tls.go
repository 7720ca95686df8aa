package proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Files generated into Config.DataDir.
const (
	selfSignedCertFile = "proxy-tls.crt"
	selfSignedKeyFile  = "proxy-tls.key"
	sha2RSAKeyFile     = "proxy-sha2-rsa.key"
)

// GeneratedFiles are the files New generates into Config.DataDir when they
// are missing, and loads from there otherwise.
var GeneratedFiles = []string{selfSignedCertFile, selfSignedKeyFile, sha2RSAKeyFile}

// loadTLS returns the server TLS config: the configured pair, or a
// self-signed one generated once into DataDir (in memory without DataDir).
func loadTLS(cfg *Config) (*tls.Config, error) {
	var cert tls.Certificate
	var err error
	switch {
	case cfg.TLSCertFile != "":
		cert, err = tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
	case cfg.DataDir != "":
		cert, err = loadOrCreateSelfSigned(cfg.DataDir, cfg.Domain)
	default:
		cert, err = selfSigned(cfg.Domain)
	}
	if err != nil {
		return nil, fmt.Errorf("proxy: tls certificate: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

func loadOrCreateSelfSigned(dir, domain string) (tls.Certificate, error) {
	certPath, keyPath := filepath.Join(dir, selfSignedCertFile), filepath.Join(dir, selfSignedKeyFile)
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return cert, err
	}
	certPEM, keyPEM, err := selfSignedPEM(domain)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return tls.Certificate{}, err
	}
	// The key goes first: a crash between the two writes leaves no cert,
	// so the next start regenerates both.
	if err := writeFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return tls.Certificate{}, err
	}
	if err := writeFileAtomic(certPath, certPEM, 0o644); err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}

func selfSigned(domain string) (tls.Certificate, error) {
	certPEM, keyPEM, err := selfSignedPEM(domain)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}

// selfSignedPEM makes an ECDSA P-256 certificate (fast to make and to
// handshake, and supported by every current MySQL/MariaDB client) valid for
// localhost and, with SNI routing, for *.<domain>.
func selfSignedPEM(domain string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "serverlessd proxy (self-signed)"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	if domain != "" {
		tmpl.DNSNames = append(tmpl.DNSNames, domain, "*."+domain)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

// loadSha2Key returns the RSA key of the caching_sha2_password public-key
// exchange, generated once into dir so clients that pin it
// (--server-public-key-path) keep working across restarts.
func loadSha2Key(dir string) (*rsa.PrivateKey, error) {
	if dir == "" {
		return rsa.GenerateKey(rand.Reader, 2048)
	}
	path := filepath.Join(dir, sha2RSAKeyFile)
	if b, err := os.ReadFile(path); err == nil {
		return parseRSAKey(b)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return key, writeFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

func parseRSAKey(b []byte) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("proxy: sha2 RSA key: no PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("proxy: sha2 RSA key: %w", err)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, errors.New("proxy: sha2 RSA key is not RSA")
	}
	return rk, nil
}

// publicKeyPEM is what a caching_sha2_password client receives when it asks
// for the server's public key.
func publicKeyPEM(k *rsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// writeFileAtomic writes via a temporary file and rename, so a concurrent
// reader (another daemon starting on the same dir) never sees half a key.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
