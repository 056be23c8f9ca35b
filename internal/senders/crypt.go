package senders

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
)

// Cipher seals the secrets of stored senders with AES-256-GCM under
// CHATQ_SECRETS_KEY, so that a copy of Redis (a backup, a replica, a
// dashboard) does not hand out ChatArchitect credentials.
type Cipher struct {
	aead cipher.AEAD
}

// NewCipher returns a Cipher for a 32-byte key.
func NewCipher(key []byte) (*Cipher, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("secrets key: must be 32 bytes, not %d", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("secrets key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("secrets key: %w", err)
	}
	return &Cipher{aead: aead}, nil
}

// seal encrypts plain for the sender number, which is bound to the result
// as additional data: a sealed secret copied onto another sender does not
// open there.
func (c *Cipher) seal(number, plain string) string {
	nonce := make([]byte, c.aead.NonceSize(), c.aead.NonceSize()+len(plain)+c.aead.Overhead())
	_, _ = rand.Read(nonce)
	return base64.StdEncoding.EncodeToString(c.aead.Seal(nonce, nonce, []byte(plain), []byte(number)))
}

// errOpen says a sealed secret does not open: another key sealed it, or it
// was changed.
var errOpen = errors.New("the secret does not open with CHATQ_SECRETS_KEY: is it the key the sender was added with?")

// open decrypts what seal made for number.
func (c *Cipher) open(number, sealed string) (string, error) {
	b, err := base64.StdEncoding.DecodeString(sealed)
	if err != nil || len(b) < c.aead.NonceSize() {
		return "", errOpen
	}
	n := c.aead.NonceSize()
	plain, err := c.aead.Open(nil, b[:n], b[n:], []byte(number))
	if err != nil {
		return "", errOpen
	}
	return string(plain), nil
}
