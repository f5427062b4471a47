// Package benchjwt is the JWT check bench/gateway.ts gives Traefik: Traefik OSS has no JWT
// middleware, so, as its users do, it runs one as a local (Yaegi-interpreted) plugin. HS256
// only: the signature, exp, and the tenant claim forwarded as X-Tenant-ID; the credential is
// not passed upstream.
package benchjwt

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"time"
)

// Config is the middleware's configuration (secret: the HS256 key).
type Config struct {
	Secret string `json:"secret,omitempty"`
}

// CreateConfig returns the default configuration.
func CreateConfig() *Config { return &Config{} }

// JWT checks the bearer token of every request.
type JWT struct {
	next http.Handler
	key  []byte
}

// New builds the middleware.
func New(_ context.Context, next http.Handler, config *Config, _ string) (http.Handler, error) {
	return &JWT{next: next, key: []byte(config.Secret)}, nil
}

type claims struct {
	Exp    int64  `json:"exp"`
	Tenant string `json:"tenant"`
}

func refuse(rw http.ResponseWriter) {
	rw.Header().Set("Content-Type", "application/json")
	rw.WriteHeader(http.StatusUnauthorized)
	_, _ = rw.Write([]byte(`{"error":"unauthorized"}`))
}

func (j *JWT) ServeHTTP(rw http.ResponseWriter, req *http.Request) {
	auth := req.Header.Get("Authorization")
	if !strings.HasPrefix(auth, "Bearer ") {
		refuse(rw)
		return
	}
	parts := strings.Split(auth[7:], ".")
	if len(parts) != 3 {
		refuse(rw)
		return
	}
	head, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil || !strings.Contains(string(head), `"HS256"`) {
		refuse(rw)
		return
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		refuse(rw)
		return
	}
	mac := hmac.New(sha256.New, j.key)
	mac.Write([]byte(parts[0] + "." + parts[1]))
	if !hmac.Equal(sig, mac.Sum(nil)) {
		refuse(rw)
		return
	}
	body, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		refuse(rw)
		return
	}
	var c claims
	if json.Unmarshal(body, &c) != nil || c.Exp < time.Now().Unix() || c.Tenant == "" {
		refuse(rw)
		return
	}
	req.Header.Del("Authorization")
	req.Header.Set("X-Tenant-ID", c.Tenant)
	j.next.ServeHTTP(rw, req)
}
