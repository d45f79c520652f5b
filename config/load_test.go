package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const minimal = `{"externalAuthProviders":[{"issuer":"https://idp.example.com","userInfoUrl":"https://idp.example.com/userinfo"}]}`

func TestParseDefaults(t *testing.T) {
	cfg, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.BaseURL != DefaultBaseURL || cfg.Listen != DefaultListen || cfg.Database != DefaultDatabase ||
		cfg.SigningKeyFile != DefaultSigningKeyFile || cfg.AccessTokenLifetime.Duration != time.Hour || cfg.RedisURL != "" {
		t.Fatalf("server defaults not applied: %+v", cfg)
	}
	p := cfg.ExternalAuthProviders[0]
	if strings.Join(p.Algorithms, ",") != "RS256,ES256" || p.Leeway.Duration != time.Minute ||
		p.UserInfoTimeout.Duration != 5*time.Second || p.CacheTTL.Duration != time.Hour {
		t.Fatalf("provider defaults not applied: %+v", p)
	}
}

func TestExplicitZeroLeewayIsKept(t *testing.T) {
	cfg, err := Parse([]byte(`{"externalAuthProviders":[{"issuer":"https://a.example","userInfoUrl":"https://a.example/u","leeway":"0s"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.ExternalAuthProviders[0].Leeway.Duration; got != 0 {
		t.Fatalf("leeway = %s, want 0", got)
	}
}

func TestAudienceStringOrList(t *testing.T) {
	for _, in := range []string{`"api"`, `["api"]`} {
		cfg, err := Parse([]byte(`{"externalAuthProviders":[{"issuer":"https://a.example","userInfoUrl":"https://a.example/u","audience":` + in + `}]}`))
		if err != nil {
			t.Fatal(err)
		}
		if a := cfg.ExternalAuthProviders[0].Audience; len(a) != 1 || a[0] != "api" {
			t.Fatalf("audience %s decoded as %v", in, a)
		}
	}
}

func TestInvalidConfigs(t *testing.T) {
	provider := func(extra string) string {
		return `{"externalAuthProviders":[{"issuer":"https://idp.example.com","userInfoUrl":"https://idp.example.com/userinfo"` + extra + `}]}`
	}
	tests := []struct {
		name, json, want string
	}{
		{"unknown top-level key", `{"redisURL":"redis://x:1/0"}`, `unknown key "redisURL"`},
		{"unknown provider key", provider(`,"userinfoUrl":"x"`), `unknown key "userinfoUrl" in externalAuthProviders[0]`},
		{"trailing data", `{} {}`, "invalid JSON"},
		{"duplicate issuer", `{"externalAuthProviders":[{"issuer":"https://a.example","userInfoUrl":"https://a.example/u"},{"issuer":"https://a.example","userInfoUrl":"https://a.example/u"}]}`, "externalAuthProviders[1].issuer: duplicate"},
		{"missing issuer", `{"externalAuthProviders":[{"userInfoUrl":"https://a.example/u"}]}`, "externalAuthProviders[0].issuer: required"},
		{"missing userInfoUrl", `{"externalAuthProviders":[{"issuer":"https://a.example"}]}`, "externalAuthProviders[0].userInfoUrl: required"},
		{"issuer not a URL", `{"externalAuthProviders":[{"issuer":"idp","userInfoUrl":"https://a.example/u"}]}`, "issuer: \"idp\" is not an absolute"},
		{"http issuer off loopback", `{"externalAuthProviders":[{"issuer":"http://idp.example.com","userInfoUrl":"https://a.example/u"}]}`, "issuer: \"http://idp.example.com\" must use https"},
		{"http userinfo off loopback", provider(``)[:0] + `{"externalAuthProviders":[{"issuer":"https://a.example","userInfoUrl":"http://a.example/u"}]}`, "userInfoUrl: \"http://a.example/u\" must use https"},
		{"http jwks off loopback", provider(`,"jwksUri":"http://a.example/jwks"`), "jwksUri: \"http://a.example/jwks\" must use https"},
		{"alg none", provider(`,"algorithms":["none"]`), `algorithms: "none" is not allowed`},
		{"alg HS256", provider(`,"algorithms":["HS256"]`), `algorithms: "HS256" is not allowed`},
		{"alg lower case", provider(`,"algorithms":["rs256"]`), `algorithms: "rs256" is not allowed`},
		{"empty algorithms", provider(`,"algorithms":[]`), "algorithms: must list"},
		{"leeway over 5m", provider(`,"leeway":"6m"`), "leeway: 6m0s is outside"},
		{"leeway not a duration", provider(`,"leeway":"soon"`), `"soon" is not a duration`},
		{"cacheTtl over 1h", provider(`,"cacheTtl":"2h"`), "cacheTtl: 2h0m0s is outside"},
		{"userInfoTimeout zero", provider(`,"userInfoTimeout":"0s"`), "userInfoTimeout: 0s is outside"},
		{"baseUrl without slash", `{"baseUrl":"https://fhir.example.com"}`, "key baseUrl: \"https://fhir.example.com\" must end with a slash"},
		{"baseUrl http off loopback", `{"baseUrl":"http://fhir.example.com/"}`, "baseUrl: \"http://fhir.example.com/\" must use https"},
		{"issuer is our own baseUrl", `{"baseUrl":"https://fhir.example.com/","externalAuthProviders":[{"issuer":"https://fhir.example.com","userInfoUrl":"https://fhir.example.com/u"}]}`, "is this server's own baseUrl"},
		{"bad database", `{"database":"mysql://x"}`, "key database: must start with sqlite: or postgres://"},
		{"bad redis", `{"redisUrl":"localhost:6379"}`, "key redisUrl"},
		{"listen not host:port", `{"listen":"8080"}`, "key listen"},
		{"wrong type", `{"listen":8080}`, `key "listen": expected string`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.json")
			if err := os.WriteFile(path, []byte(tt.json), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Load(path, nil)
			if err == nil {
				t.Fatalf("Load accepted %s", tt.json)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
		})
	}
}

func TestEnvOverrides(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.json")
	if err := os.WriteFile(path, []byte(`{"listen":":9000","database":"sqlite:a.db"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{EnvListen: "127.0.0.1:9999", EnvDatabase: "postgres://u@h/db", EnvRedisURL: "redis://127.0.0.1:6380/1"}
	cfg, err := Load(path, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != env[EnvListen] || cfg.Database != env[EnvDatabase] || cfg.RedisURL != env[EnvRedisURL] {
		t.Fatalf("overrides not applied: %+v", cfg)
	}
}

func TestExampleConfigIsValid(t *testing.T) {
	cfg, err := Load("../config.example.json", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.ExternalAuthProviders) != 1 {
		t.Fatalf("example config lists %d providers", len(cfg.ExternalAuthProviders))
	}
}
