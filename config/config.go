// Package config loads fhirgate's JSON configuration: strict decoding (an
// unknown key is an error), defaults, environment overrides and validation.
// A configuration that Load returns is complete and safe to use.
package config

import "time"

// Config is the whole server configuration (SPEC §2).
type Config struct {
	BaseURL               string     `json:"baseUrl"`
	Listen                string     `json:"listen"`
	Database              string     `json:"database"`
	RedisURL              string     `json:"redisUrl"`
	SigningKeyFile        string     `json:"signingKeyFile"`
	AccessTokenLifetime   Duration   `json:"accessTokenLifetime,omitzero"`
	ExternalAuthProviders []Provider `json:"externalAuthProviders"`
}

// Provider is one trusted external identity provider.
type Provider struct {
	// Issuer is the exact iss of this IdP's tokens.
	Issuer string `json:"issuer"`
	// UserInfoURL is the IdP endpoint that must accept a token for it to be valid.
	UserInfoURL string `json:"userInfoUrl"`
	// JWKSURI, when set, makes the token signature be verified locally first.
	JWKSURI string `json:"jwksUri,omitempty"`
	// Audience, when set, must contain one of the token's aud values.
	Audience StringList `json:"audience,omitempty"`
	// Algorithms are the allowed JOSE alg values.
	Algorithms []string `json:"algorithms,omitempty"`
	// Leeway is the clock skew allowed on exp, nbf and iat.
	Leeway Duration `json:"leeway,omitzero"`
	// AcceptedTypes, when set, lists the allowed JOSE typ header values.
	AcceptedTypes []string `json:"acceptedTypes,omitempty"`
	// Projects, when set, limits the projects this IdP may log users into.
	Projects []string `json:"projects,omitempty"`
	// UserInfoTimeout bounds one userinfo call.
	UserInfoTimeout Duration `json:"userInfoTimeout,omitzero"`
	// CacheTTL bounds how long a validation is cached (never past the token's exp).
	CacheTTL Duration `json:"cacheTtl,omitzero"`
}

// Duration is a time.Duration written as a Go duration string ("1h", "90s").
type Duration struct {
	time.Duration
	set bool
}

// StringList is a JSON string or list of strings.
type StringList []string
