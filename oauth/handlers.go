package oauth

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strings"

	"github.com/MicahParks/jwkset"
	"github.com/fhirgate/fhirgate/caller"
	"github.com/fhirgate/fhirgate/fhir"
	"github.com/fhirgate/fhirgate/membership"
	"github.com/gin-gonic/gin"
	models "github.com/samply/golang-fhir-models/fhir-models/fhir"
)

// Handler serves the OAuth and OpenID endpoints.
type Handler struct {
	issuer  *Issuer
	members *membership.Service
	log     *slog.Logger
	jwks    []byte // the JWKS document, computed once
}

// NewHandler returns the endpoints of issuer, authenticating clients against members.
func NewHandler(issuer *Issuer, members *membership.Service, log *slog.Logger) (*Handler, error) {
	jwks, err := json.Marshal(jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{issuer.jwk}})
	if err != nil {
		return nil, err
	}
	return &Handler{issuer: issuer, members: members, log: log, jwks: jwks}, nil
}

// RegisterPublic mounts the endpoints that need no bearer token: discovery,
// JWKS and the token endpoint.
func (h *Handler) RegisterPublic(r gin.IRoutes) {
	r.GET("/.well-known/openid-configuration", h.discovery)
	r.GET("/.well-known/oauth-authorization-server", h.discovery)
	r.GET("/.well-known/jwks.json", h.keys)
	r.POST("/oauth2/token", h.token)
}

func (h *Handler) discovery(c *gin.Context) {
	base := h.issuer.IssuerURL()
	c.Header("Cache-Control", "public, max-age=3600")
	c.JSON(http.StatusOK, gin.H{
		"issuer":                                base,
		"jwks_uri":                              base + ".well-known/jwks.json",
		"token_endpoint":                        base + "oauth2/token",
		"userinfo_endpoint":                     base + "oauth2/userinfo",
		"grant_types_supported":                 []string{"client_credentials"},
		"token_endpoint_auth_methods_supported": []string{"client_secret_basic", "client_secret_post"},
		"response_types_supported":              []string{"token"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"ES256"},
		"claims_supported":                      []string{"sub", "profile", "fhirUser", "project", "membership", "name", "given_name", "family_name", "email"},
	})
}

func (h *Handler) keys(c *gin.Context) {
	c.Header("Cache-Control", "public, max-age=3600")
	c.Data(http.StatusOK, "application/jwk-set+json", h.jwks)
}

// tokenError answers per RFC 6749 §5.2.
func tokenError(c *gin.Context, status int, code, description string) {
	if code == "invalid_client" {
		c.Header("WWW-Authenticate", `Basic realm="fhirgate"`)
	}
	c.Header("Cache-Control", "no-store")
	c.AbortWithStatusJSON(status, gin.H{"error": code, "error_description": description})
}

func (h *Handler) token(c *gin.Context) {
	c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, 64<<10)
	if ct := c.ContentType(); ct != "application/x-www-form-urlencoded" {
		tokenError(c, http.StatusBadRequest, "invalid_request", "the body must be application/x-www-form-urlencoded")
		return
	}
	if err := c.Request.ParseForm(); err != nil {
		tokenError(c, http.StatusBadRequest, "invalid_request", "the form body could not be read")
		return
	}
	form := c.Request.PostForm
	for key, values := range form {
		if len(values) > 1 {
			tokenError(c, http.StatusBadRequest, "invalid_request", "parameter "+key+" is repeated")
			return
		}
	}
	switch grant := form.Get("grant_type"); grant {
	case "client_credentials":
	case "":
		tokenError(c, http.StatusBadRequest, "invalid_request", "grant_type is required")
		return
	default:
		tokenError(c, http.StatusBadRequest, "unsupported_grant_type", "supported grant types: client_credentials")
		return
	}
	clientID, secret, ok := clientCredentials(c.Request)
	if !ok {
		tokenError(c, http.StatusBadRequest, "invalid_request", "send client credentials either with HTTP Basic or as client_id and client_secret, not both")
		return
	}
	ctx := c.Request.Context()
	m, err := h.members.AuthenticateClient(ctx, clientID, secret)
	if errors.Is(err, membership.ErrInvalidClient) {
		tokenError(c, http.StatusUnauthorized, "invalid_client", "client authentication failed")
		return
	}
	if err != nil {
		h.serverError(c, err)
		return
	}
	loginID, err := h.members.RecordLogin(ctx, membership.LoginInput{
		Membership:    m,
		AuthMethod:    caller.MethodClientCredentials,
		RemoteAddress: c.ClientIP(),
		UserAgent:     c.Request.UserAgent(),
	})
	if err != nil {
		h.serverError(c, err)
		return
	}
	profile := refString(m.Profile)
	token, expiresIn, err := h.issuer.Sign(Grant{
		Subject: clientID, Profile: profile, ClientID: clientID, LoginID: loginID,
		Project: membership.ProjectOf(m), Membership: m.ID,
	})
	if err != nil {
		h.serverError(c, err)
		return
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, gin.H{
		"access_token": token,
		"token_type":   "Bearer",
		"expires_in":   int(expiresIn.Seconds()),
		"project":      membership.ProjectOf(m),
		"profile":      profile,
	})
}

func (h *Handler) serverError(c *gin.Context, err error) {
	if errors.Is(err, fhir.ErrUnavailable) {
		c.Header("Retry-After", "5")
		tokenError(c, http.StatusServiceUnavailable, "temporarily_unavailable", "the database is unavailable; retry shortly")
		return
	}
	h.log.ErrorContext(c.Request.Context(), "token endpoint failed", "error", err.Error())
	tokenError(c, http.StatusInternalServerError, "server_error", "internal error")
}

// clientCredentials reads HTTP Basic (RFC 6749 §2.3.1: both parts are
// form-urlencoded) or the client_id/client_secret form fields; using both is
// refused.
func clientCredentials(r *http.Request) (id, secret string, ok bool) {
	formID, formSecret := r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	if user, pass, basic := r.BasicAuth(); basic {
		if formSecret != "" {
			return "", "", false
		}
		id, err1 := url.QueryUnescape(user)
		secret, err2 := url.QueryUnescape(pass)
		if err1 != nil || err2 != nil || (formID != "" && formID != id) {
			return "", "", false
		}
		return id, secret, true
	}
	if strings.HasPrefix(strings.ToLower(r.Header.Get("Authorization")), "basic ") {
		return "", "", false
	}
	return formID, formSecret, formID != "" && formSecret != ""
}

// UserInfo answers GET|POST /oauth2/userinfo for an authenticated caller. An
// external caller also receives local credentials.
func (h *Handler) UserInfo(c *gin.Context) {
	cl := caller.From(c.Request.Context())
	ctx := c.Request.Context()
	m, err := h.members.Membership(ctx, cl.Membership)
	if err != nil {
		h.userinfoError(c, err)
		return
	}
	out := gin.H{
		"sub":        cl.ProfileID(),
		"profile":    cl.Profile,
		"fhirUser":   h.issuer.Audience() + "/" + cl.Profile,
		"project":    cl.Project,
		"membership": cl.Membership,
	}
	profile, err := h.members.Profile(ctx, m)
	if err != nil {
		h.userinfoError(c, err)
		return
	}
	addProfileClaims(out, profile)
	if cl.AuthMethod == caller.MethodExternal {
		token, expiresIn, err := h.issuer.Sign(Grant{
			Subject: cl.ProfileID(), Profile: cl.Profile, LoginID: cl.Login,
			Project: cl.Project, Membership: cl.Membership, NotAfter: cl.Expires,
		})
		if err != nil {
			h.userinfoError(c, err)
			return
		}
		out["access_token"] = token
		out["token_type"] = "Bearer"
		out["expires_in"] = int(expiresIn.Seconds())
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, out)
}

func (h *Handler) userinfoError(c *gin.Context, err error) {
	switch {
	case errors.Is(err, fhir.ErrUnavailable):
		c.Header("Retry-After", "5")
		fhir.WriteError(c, http.StatusServiceUnavailable, models.IssueTypeTransient, "the database is unavailable; retry shortly")
	case errors.Is(err, fhir.ErrNotFound), errors.Is(err, fhir.ErrGone), errors.Is(err, ErrExpired):
		c.Header("WWW-Authenticate", `Bearer realm="fhirgate", error="invalid_token"`)
		fhir.WriteError(c, http.StatusUnauthorized, models.IssueTypeLogin, "authentication failed")
	default:
		h.log.ErrorContext(c.Request.Context(), "userinfo failed", "error", err.Error())
		fhir.WriteError(c, http.StatusInternalServerError, models.IssueTypeException, "internal error")
	}
}

// addProfileClaims copies the OpenID profile claims the profile has.
func addProfileClaims(out gin.H, profile *fhir.Record) {
	var p struct {
		Name    json.RawMessage `json:"name"`
		Telecom []struct {
			System string `json:"system"`
			Value  string `json:"value"`
		} `json:"telecom"`
	}
	if err := json.Unmarshal(profile.Body, &p); err != nil {
		return
	}
	var plain string
	var human []struct {
		Text   string   `json:"text"`
		Family string   `json:"family"`
		Given  []string `json:"given"`
	}
	switch {
	case json.Unmarshal(p.Name, &plain) == nil && plain != "":
		out["name"] = plain
	case json.Unmarshal(p.Name, &human) == nil && len(human) > 0:
		n := human[0]
		given := strings.Join(n.Given, " ")
		if given != "" {
			out["given_name"] = given
		}
		if n.Family != "" {
			out["family_name"] = n.Family
		}
		full := strings.TrimSpace(given + " " + n.Family)
		if n.Text != "" {
			full = n.Text
		}
		if full != "" {
			out["name"] = full
		}
	}
	for _, t := range p.Telecom {
		if t.System == "email" && t.Value != "" {
			out["email"] = t.Value
			break
		}
	}
}

func refString(r models.Reference) string {
	if r.Reference == nil {
		return ""
	}
	return *r.Reference
}
