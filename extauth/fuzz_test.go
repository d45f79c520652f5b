package extauth

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// fuzzSeeds are crafted tokens covering every pre-check, good and bad.
func fuzzSeeds() []string {
	good := claims(issPlain, `"sub":"alice"`)
	return []string{
		craft(rs, good),
		craft(`{"alg":"ES256","typ":"at+jwt"}`, claims(issTyped, `"sub":"a"`)),
		craft(rs, claims(issAudience, `"sub":"a","aud":["x","api://fhir"]`)),
		craft(rs, claims(issPlain, `"fhirUser":"Practitioner/1","ext":{"fhirUser":"Patient/2"}`)),
		craft(rs, claims(issPlain, `"sub":"a","ISS":"https://evil.example"`)),
		craft(rs, claims(issPlain, `"sub":"a","iss":"https://evil.example"`)),
		craft(`{"alg":"none"}`, good),
		craft(`{"alg":"HS256"}`, good),
		craft(`{"alg":"rs256"}`, good),
		craft(`{"alg":"RS256","crit":["b64"],"b64":false}`, good),
		craft(`{"alg":"RS256","jku":"https://evil.example"}`, good),
		craft(rs, fmt.Sprintf(`{"iss":%q,"exp":"%d","sub":"a"}`, issPlain, at(time.Hour))),
		craft(rs, fmt.Sprintf(`{"iss":%q,"exp":%d.999,"nbf":%d,"iat":%d,"sub":"a"}`, issPlain, at(time.Hour), at(59*time.Second), at(59*time.Second))),
		craft(rs, claims(issPlain, `"sub":"a","ext":{"fhirUser":1}`)),
		craft(rs, claims(issPlain, `"s\u0075b":"a"`)),
		b64(rs) + "." + b64(good) + ".c2lnbg==",
		b64(rs) + "." + b64(good),
		"",
		"...",
	}
}

// FuzzParse checks that Parse never panics and that whatever it accepts
// satisfies every rule, re-checked here independently of Parse's own code.
func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	a := parseTestAuthenticator(f)
	f.Fuzz(func(t *testing.T, raw string) {
		tok, err := a.Parse(raw)
		if err != nil {
			e := errorOf(t, err)
			if e.Reason == "" || e.Kind == 0 {
				t.Fatalf("error without kind or reason: %#v", e)
			}
			if len(raw) >= 16 && strings.Contains(e.Error(), raw) {
				t.Fatalf("error text contains the token")
			}
			return
		}
		if len(raw) > MaxTokenSize {
			t.Fatal("accepted a token over the size cap")
		}
		parts := strings.Split(raw, ".")
		if len(parts) != 3 {
			t.Fatalf("accepted %d segments", len(parts))
		}
		var header, payload map[string]any
		for i, dst := range []*map[string]any{&header, &payload} {
			if !isBase64URL(parts[i]) {
				t.Fatalf("segment %d is not strict base64url", i)
			}
			b, err := decodeSegment(parts[i])
			if err != nil {
				t.Fatalf("segment %d: %v", i, err)
			}
			if err := json.Unmarshal(b, dst); err != nil {
				t.Fatalf("segment %d is not a JSON object: %v", i, err)
			}
			// No member may be a case variant of another (duplicates collapse
			// in a map, so compare spellings that fold together).
			for k := range *dst {
				for k2 := range *dst {
					if k != k2 && strings.EqualFold(k, k2) && (isRegistered(k) || isRegistered(k2)) {
						t.Fatalf("accepted case-variant names %q and %q", k, k2)
					}
				}
			}
		}
		p := a.providers[tok.Issuer]
		if p == nil || payload["iss"] != tok.Issuer {
			t.Fatalf("accepted issuer %v", payload["iss"])
		}
		alg, _ := header["alg"].(string)
		if !p.algs[alg] || alg == "none" || strings.HasPrefix(strings.ToUpper(alg), "HS") {
			t.Fatalf("accepted alg %q", alg)
		}
		for _, h := range []string{"crit", "jku", "x5u", "jwk", "x5c"} {
			if _, ok := header[h]; ok {
				t.Fatalf("accepted header %s", h)
			}
		}
		if len(p.types) > 0 {
			typ, _ := header["typ"].(string)
			if !p.acceptsType(typ) {
				t.Fatalf("accepted typ %q", typ)
			}
		}
		exp, ok := payload["exp"].(float64)
		leeway := p.cfg.Leeway.Duration
		if !ok || !testNow.Before(time.Unix(int64(exp), 0).Add(leeway)) {
			t.Fatalf("accepted exp %v", payload["exp"])
		}
		for _, name := range []string{"nbf", "iat"} {
			if v, present := payload[name]; present {
				f, ok := v.(float64)
				if !ok || testNow.Add(leeway).Before(time.Unix(int64(f), 0)) {
					t.Fatalf("accepted %s %v", name, v)
				}
			}
		}
		if sub, present := payload["sub"]; present {
			s, ok := sub.(string)
			if !ok || s == "" || len(s) > MaxSubjectLength || s != tok.Subject {
				t.Fatalf("accepted sub %v (token has %q)", sub, tok.Subject)
			}
		}
		fu, hasFU := payload["fhirUser"].(string)
		if !hasFU {
			if ext, ok := payload["ext"].(map[string]any); ok {
				fu, hasFU = ext["fhirUser"].(string)
			}
		}
		if hasFU != tok.HasFHIRUser || fu != tok.FHIRUser {
			t.Fatalf("fhirUser %q/%v; token has %q/%v", fu, hasFU, tok.FHIRUser, tok.HasFHIRUser)
		}
		if !tok.HasFHIRUser && tok.Subject == "" {
			t.Fatal("accepted a token without fhirUser or sub")
		}
		if len(p.cfg.Audience) > 0 {
			var aud []string
			switch v := payload["aud"].(type) {
			case string:
				aud = []string{v}
			case []any:
				for _, x := range v {
					s, _ := x.(string)
					aud = append(aud, s)
				}
			}
			if !containsAny(aud, p.cfg.Audience) {
				t.Fatalf("accepted aud %v", payload["aud"])
			}
		}
	})
}

func isRegistered(name string) bool {
	for _, list := range [][]string{headerNames, claimNames} {
		for _, n := range list {
			if strings.EqualFold(n, name) {
				return true
			}
		}
	}
	return false
}
