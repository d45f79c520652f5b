package oauth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/MicahParks/jwkset"
)

// LoadOrCreateKey reads the EC P-256 signing key (PKCS#8 PEM) at path, or
// generates one with mode 0600 when the file does not exist. Instances that
// start at once agree on one key: a new key is written completely to a
// temporary file and then hard-linked into place, which fails if another
// process linked its key first; that key is then read instead. Nobody ever
// reads a half-written file.
func LoadOrCreateKey(path string) (*ecdsa.PrivateKey, error) {
	key, err := readKey(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("signingKeyFile: %w", err)
	}
	key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(dir, ".signing-key-*")
	if err != nil {
		return nil, fmt.Errorf("signingKeyFile: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("signingKeyFile: %w", err)
	}
	if err := pem.Encode(tmp, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("signingKeyFile: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("signingKeyFile: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("signingKeyFile: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return readKey(path) // another process won the race
		}
		return nil, fmt.Errorf("signingKeyFile: %w", err)
	}
	return key, nil
}

func readKey(path string) (*ecdsa.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("signingKeyFile: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("signingKeyFile: %s holds no PKCS#8 PEM private key", path)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("signingKeyFile: %s: %w", path, err)
	}
	key, ok := parsed.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("signingKeyFile: %s is not an EC P-256 key", path)
	}
	return key, nil
}

// publicJWK returns the public JWK of key with its RFC 7638 thumbprint as kid.
func publicJWK(key *ecdsa.PrivateKey) (jwkset.JWKMarshal, error) {
	plain, err := jwkset.NewJWKFromKey(&key.PublicKey, jwkset.JWKOptions{})
	if err != nil {
		return jwkset.JWKMarshal{}, err
	}
	m := plain.Marshal()
	// RFC 7638 §3.2: the required members, lexicographic order, no spaces.
	canonical, err := json.Marshal(struct {
		Crv string `json:"crv"`
		Kty string `json:"kty"`
		X   string `json:"x"`
		Y   string `json:"y"`
	}{string(m.CRV), string(m.KTY), m.X, m.Y})
	if err != nil {
		return jwkset.JWKMarshal{}, err
	}
	sum := sha256.Sum256(canonical)
	kid := base64.RawURLEncoding.EncodeToString(sum[:])
	withMeta, err := jwkset.NewJWKFromKey(&key.PublicKey, jwkset.JWKOptions{
		Metadata: jwkset.JWKMetadataOptions{ALG: jwkset.AlgES256, KID: kid, USE: jwkset.UseSig},
	})
	if err != nil {
		return jwkset.JWKMarshal{}, err
	}
	return withMeta.Marshal(), nil
}
