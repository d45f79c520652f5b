package testidp

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"

	"github.com/golang-jwt/jwt/v5"
)

// SignRaw signs arbitrary header and payload bytes with the published RSA key
// (RS256), so tests can craft tokens no JSON encoder would write (duplicate
// keys, invalid UTF-8) that still carry a valid signature. Both segments are
// base64url encoded without padding.
func (p *IdP) SignRaw(header, payload []byte) string {
	p.mu.RLock()
	k := p.rsaKey
	p.mu.RUnlock()
	input := base64.RawURLEncoding.EncodeToString(header) + "." + base64.RawURLEncoding.EncodeToString(payload)
	sig, err := jwt.SigningMethodRS256.Sign(input, k.priv)
	if err != nil {
		p.errorf("testidp: sign raw token: %v", err)
		return ""
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// RSAPublicKeyPEM returns the published RSA key as PKIX PEM: the bytes an
// attacker uses as an HMAC secret in the RS256→HS256 confusion attack.
func (p *IdP) RSAPublicKeyPEM() []byte {
	p.mu.RLock()
	k := p.rsaKey
	p.mu.RUnlock()
	pub, ok := k.priv.Public().(*rsa.PublicKey)
	if !ok {
		p.errorf("testidp: the RSA key is not RSA")
		return nil
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		p.errorf("%v", fmt.Errorf("testidp: marshal public key: %w", err))
		return nil
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}
