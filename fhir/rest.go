package fhir

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/fhirgate/fhirgate/caller"
)

// Page sizes of a search: the default, and the cap on _count.
const (
	restDefaultCount = 100
	restMaxCount     = 1000
)

// maxOffset bounds _offset so paging arithmetic cannot overflow.
const maxOffset = 1_000_000_000

// maxExternalIDLength bounds ProjectMembership.externalId (an IdP subject).
const maxExternalIDLength = 1024

// Handler serves the FHIR REST API (read, search, create, update, delete) of
// the profile types and ProjectMembership, scoped to the caller's project.
type Handler struct {
	store      Store
	base       string
	capability []byte
}

// NewHandler returns the REST handler over store. baseURL is the public FHIR
// base ("https://host/fhir/R4"); a trailing slash is removed. It is used for
// Location headers, Bundle links and fullUrls.
func NewHandler(store Store, baseURL string) *Handler {
	base := strings.TrimRight(baseURL, "/")
	return &Handler{store: store, base: base, capability: capabilityJSON(base)}
}

// Register adds the resource routes to r, which the caller mounts at the FHIR
// base (/fhir/R4) behind the authentication middleware:
//
//	GET    /:type/:id   read
//	GET    /:type       search
//	POST   /:type       create
//	PUT    /:type/:id   update
//	DELETE /:type/:id   delete
//
// Anything deeper (vread, history, operations) is answered 404 not-supported
// and PATCH 405. GET /metadata is not registered here: mount Metadata outside
// the authenticated group.
func (h *Handler) Register(r gin.IRoutes) {
	r.GET("/:type/:id", h.read)
	r.GET("/:type", h.search)
	r.POST("/:type", h.create)
	r.PUT("/:type/:id", h.update)
	r.DELETE("/:type/:id", h.delete)
	r.PATCH("/:type/:id", h.patch)
	r.Any("/:type/:id/*rest", h.unsupported)
}

// action is one REST interaction, for the permission rules.
type action int

const (
	actionRead action = iota
	actionSearch
	actionCreate
	actionUpdate
	actionDelete
)

// servedType reports whether the REST API serves typ at all.
func servedType(typ string) bool {
	return IsProfileType(typ) || typ == TypeProjectMembership
}

// allowed applies the role rules of SPEC §6 inside the caller's project
// (project scoping itself is done by passing the caller's project to the
// store): admins may do everything; a member whose profile is a Patient may
// only read that Patient; other members may read and search the profile
// types and update their own profile; ProjectMembership is admin-only. id is
// empty for search and create.
func allowed(cl *caller.Caller, act action, typ, id string) bool {
	if cl.Admin {
		return true
	}
	if !IsProfileType(typ) {
		return false
	}
	own := typ == cl.ProfileType() && id != "" && id == cl.ProfileID()
	if cl.ProfileType() == TypePatient {
		return act == actionRead && own
	}
	switch act {
	case actionRead, actionSearch:
		return true
	case actionUpdate:
		return own
	}
	return false
}

// begin runs the checks every interaction shares, in order: an authenticated
// caller (401), a served type (404), the permission rules (403) and, when
// withID, a valid id (400). It writes the error and returns ok=false when a
// check fails.
func (h *Handler) begin(c *gin.Context, act action, withID bool) (cl *caller.Caller, typ, id string, ok bool) {
	cl = caller.From(c.Request.Context())
	if cl == nil || cl.Project == "" {
		c.Header("WWW-Authenticate", `Bearer realm="fhirgate"`)
		WriteError(c, http.StatusUnauthorized, models.IssueTypeLogin, "authentication required")
		return nil, "", "", false
	}
	typ = c.Param("type")
	if !servedType(typ) {
		WriteError(c, http.StatusNotFound, models.IssueTypeNotSupported,
			fmt.Sprintf("resource type %q is not supported", truncate(typ, 64)))
		return nil, "", "", false
	}
	if withID {
		id = c.Param("id")
	}
	if !allowed(cl, act, typ, id) {
		WriteError(c, http.StatusForbidden, models.IssueTypeForbidden, "not allowed for this user")
		return nil, "", "", false
	}
	if withID && !ValidID(id) {
		WriteError(c, http.StatusBadRequest, models.IssueTypeValue, "id must be 1-64 characters from A-Z a-z 0-9 - .")
		return nil, "", "", false
	}
	return cl, typ, id, true
}

func (h *Handler) read(c *gin.Context) {
	cl, typ, id, ok := h.begin(c, actionRead, true)
	if !ok {
		return
	}
	rec, err := h.store.Read(c.Request.Context(), cl.Project, typ, id)
	if err != nil {
		h.fail(c, err, typ, id)
		return
	}
	writeRecord(c, http.StatusOK, rec)
}

func (h *Handler) search(c *gin.Context) {
	cl, typ, _, ok := h.begin(c, actionSearch, false)
	if !ok {
		return
	}
	values, err := url.ParseQuery(c.Request.URL.RawQuery)
	if err != nil {
		WriteError(c, http.StatusBadRequest, models.IssueTypeInvalid, "malformed query string")
		return
	}
	sr, err := parseSearch(typ, values)
	if err != nil {
		h.fail(c, err, typ, "")
		return
	}
	q := Query{Type: typ, Projects: []string{cl.Project}, Params: sr.Params, Count: sr.Count, Offset: sr.Offset}
	if sr.Count == 0 {
		q.Count = 1 // _count=0 asks for the total only
	}
	recs, total, err := h.store.Search(c.Request.Context(), q)
	if err != nil {
		h.fail(c, err, typ, "")
		return
	}
	if sr.Count == 0 {
		recs = nil
	}
	links := SearchLinks{Self: h.searchURL(typ, sr, sr.Offset)}
	if sr.Count > 0 && sr.Offset+len(recs) < total {
		links.Next = h.searchURL(typ, sr, sr.Offset+sr.Count)
	}
	if sr.Offset > 0 && sr.Count > 0 {
		links.Previous = h.searchURL(typ, sr, max(0, sr.Offset-sr.Count))
	}
	body, err := NewSearchset(h.base, recs, total, links).MarshalJSON()
	if err != nil {
		h.fail(c, err, typ, "")
		return
	}
	c.Data(http.StatusOK, ContentType, body)
}

func (h *Handler) create(c *gin.Context) {
	cl, typ, _, ok := h.begin(c, actionCreate, false)
	if !ok {
		return
	}
	if typ == TypeProjectMembership {
		WriteError(c, http.StatusMethodNotAllowed, models.IssueTypeNotSupported,
			"ProjectMembership is created by inviting a user to the project")
		return
	}
	dec, err := readResource(c, typ)
	if err != nil {
		h.fail(c, err, typ, "")
		return
	}
	// The server assigns the id of a new resource; an id in the body is ignored.
	rec := &Record{Type: typ, Project: cl.Project, Body: dec.Body}
	if err := h.store.Create(c.Request.Context(), rec); err != nil {
		h.fail(c, err, typ, "")
		return
	}
	c.Header("Location", h.versionURL(rec))
	writeRecord(c, http.StatusCreated, rec)
}

func (h *Handler) update(c *gin.Context) {
	cl, typ, id, ok := h.begin(c, actionUpdate, true)
	if !ok {
		return
	}
	version, err := parseIfMatch(c.GetHeader("If-Match"))
	if err != nil {
		h.fail(c, err, typ, id)
		return
	}
	dec, err := readResource(c, typ)
	if err != nil {
		h.fail(c, err, typ, id)
		return
	}
	if dec.ID != id {
		h.fail(c, badRequest(models.IssueTypeInvalid, typ+".id",
			"the id in the body must equal the id in the URL"), typ, id)
		return
	}
	ctx := c.Request.Context()
	var rec *Record
	err = h.store.WithTx(ctx, func(tx Ops) error {
		// Read first, inside the transaction: an update never creates, and
		// never reaches outside the caller's project.
		cur, err := tx.Read(ctx, cl.Project, typ, id)
		if err != nil {
			return err
		}
		if version != 0 && cur.Version != version {
			return ErrVersionConflict
		}
		body := dec.Body
		if typ == TypeProjectMembership {
			if body, err = membershipUpdate(cur.Body, dec.Membership); err != nil {
				return err
			}
		}
		rec = &Record{Type: typ, ID: id, Project: cl.Project, Version: cur.Version, Body: body}
		return tx.Update(ctx, rec)
	})
	if err != nil {
		h.fail(c, err, typ, id)
		return
	}
	c.Header("Content-Location", h.versionURL(rec))
	writeRecord(c, http.StatusOK, rec)
}

func (h *Handler) delete(c *gin.Context) {
	cl, typ, id, ok := h.begin(c, actionDelete, true)
	if !ok {
		return
	}
	err := h.store.Delete(c.Request.Context(), cl.Project, typ, id)
	if err != nil && !errors.Is(err, ErrGone) { // deleting twice is not an error
		h.fail(c, err, typ, id)
		return
	}
	c.Status(http.StatusNoContent)
}

func (h *Handler) patch(c *gin.Context) {
	if _, _, _, ok := h.begin(c, actionUpdate, true); !ok {
		return
	}
	WriteError(c, http.StatusMethodNotAllowed, models.IssueTypeNotSupported, "PATCH is not supported; use PUT")
}

func (h *Handler) unsupported(c *gin.Context) {
	if caller.From(c.Request.Context()) == nil {
		c.Header("WWW-Authenticate", `Bearer realm="fhirgate"`)
		WriteError(c, http.StatusUnauthorized, models.IssueTypeLogin, "authentication required")
		return
	}
	WriteError(c, http.StatusNotFound, models.IssueTypeNotSupported, "interaction not supported")
}

// readResource reads and decodes the request body as a resource of typ.
func readResource(c *gin.Context, typ string) (*DecodedResource, error) {
	data, err := ReadBody(c.Writer, c.Request)
	if err != nil {
		return nil, err
	}
	return DecodeResource(typ, data)
}

// membershipUpdate checks an update of a ProjectMembership against the
// stored one and returns the body to store: the stored body with active,
// admin and externalId taken from the request. Any other change (project,
// profile) is refused with 400; meta is ignored.
func membershipUpdate(stored json.RawMessage, upd *ProjectMembership) (json.RawMessage, error) {
	var cur ProjectMembership
	if err := json.Unmarshal(stored, &cur); err != nil {
		return nil, fmt.Errorf("fhir: stored membership: %w", err)
	}
	var issues []Issue
	if !sameReference(cur.Project, upd.Project) {
		issues = append(issues, Issue{Code: models.IssueTypeBusinessRule, Expression: "ProjectMembership.project",
			Diagnostics: "project cannot be changed"})
	}
	if !sameReference(cur.Profile, upd.Profile) {
		issues = append(issues, Issue{Code: models.IssueTypeBusinessRule, Expression: "ProjectMembership.profile",
			Diagnostics: "profile cannot be changed"})
	}
	if len(upd.ExternalID) > maxExternalIDLength || !utf8.ValidString(upd.ExternalID) || hasControl(upd.ExternalID) {
		issues = append(issues, Issue{Code: models.IssueTypeValue, Expression: "ProjectMembership.externalId",
			Diagnostics: fmt.Sprintf("externalId must be printable UTF-8 of at most %d bytes", maxExternalIDLength)})
	}
	if len(issues) > 0 {
		return nil, &RequestError{Status: http.StatusBadRequest, Issues: issues}
	}

	obj := map[string]json.RawMessage{}
	if err := json.Unmarshal(stored, &obj); err != nil {
		return nil, fmt.Errorf("fhir: stored membership: %w", err)
	}
	obj["active"] = json.RawMessage(strconv.FormatBool(upd.IsActive()))
	obj["admin"] = json.RawMessage(strconv.FormatBool(upd.Admin))
	delete(obj, "externalId")
	if upd.ExternalID != "" {
		ext, err := json.Marshal(upd.ExternalID)
		if err != nil {
			return nil, err
		}
		obj["externalId"] = ext
	}
	return json.Marshal(obj)
}

// sameReference reports whether two references have the same content.
func sameReference(a, b models.Reference) bool {
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA == nil && errB == nil && string(ja) == string(jb)
}

func hasControl(s string) bool {
	for _, r := range s {
		if r < ' ' || r == 0x7f {
			return true
		}
	}
	return false
}

// parseIfMatch reads an If-Match header: W/"n" (or "n"). An empty header
// yields 0 (no precondition).
func parseIfMatch(h string) (int64, error) {
	if h == "" {
		return 0, nil
	}
	v := strings.TrimPrefix(strings.TrimSpace(h), "W/")
	if len(v) < 3 || v[0] != '"' || v[len(v)-1] != '"' {
		return 0, badRequest(models.IssueTypeInvalid, "If-Match", `If-Match must look like W/"1"`)
	}
	n, err := strconv.ParseInt(v[1:len(v)-1], 10, 64)
	if err != nil || n < 1 {
		return 0, badRequest(models.IssueTypeInvalid, "If-Match", `If-Match must look like W/"1"`)
	}
	return n, nil
}

// searchRequest is a validated search: store parameters plus paging.
type searchRequest struct {
	Params []Param
	Count  int // 0..restMaxCount; 0 asks for the total only
	Offset int
	// Format is the _format given, kept for the links.
	Format string
}

// searchParams lists the parameters each type supports besides _count,
// _offset and _format.
var searchParams = map[string][]string{
	TypePatient:           {"_id", "identifier", "name"},
	TypePractitioner:      {"_id", "identifier", "name"},
	TypeRelatedPerson:     {"_id", "identifier", "name"},
	TypeProjectMembership: {"_id", "profile", "external-id", "active"},
}

// parseSearch validates a search query string for typ. Unknown parameters
// (including modifiers such as name:exact), empty values, repeated paging
// parameters and malformed values are refused with a 400 RequestError.
// _count above 1000 is capped to it.
func parseSearch(typ string, values url.Values) (searchRequest, error) {
	sr := searchRequest{Count: restDefaultCount}
	var issues []Issue
	bad := func(name, format string, args ...any) {
		issues = append(issues, Issue{Code: models.IssueTypeValue, Expression: name, Diagnostics: fmt.Sprintf(format, args...)})
	}
	names := make([]string, 0, len(values))
	for name := range values {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		vals := values[name]
		switch name {
		case "_count", "_offset", "_format":
			if len(vals) != 1 {
				bad(name, "%s may be given once", name)
				continue
			}
		}
		switch name {
		case "_count":
			n, err := strconv.Atoi(vals[0])
			if err != nil || n < 0 {
				bad(name, "_count must be a non-negative integer")
				continue
			}
			sr.Count = min(n, restMaxCount)
			continue
		case "_offset":
			n, err := strconv.Atoi(vals[0])
			if err != nil || n < 0 || n > maxOffset {
				bad(name, "_offset must be an integer from 0 to %d", maxOffset)
				continue
			}
			sr.Offset = n
			continue
		case "_format":
			// An unencoded "+" arrives as a space.
			switch f := strings.ToLower(strings.ReplaceAll(vals[0], " ", "+")); f {
			case "json", "application/json", "application/fhir+json":
				sr.Format = f
			default:
				bad(name, "only JSON is supported")
			}
			continue
		}
		if !slices.Contains(searchParams[typ], name) {
			issues = append(issues, Issue{Code: models.IssueTypeNotSupported, Expression: truncate(name, 64),
				Diagnostics: fmt.Sprintf("search parameter %q is not supported for %s", truncate(name, 64), typ)})
			continue
		}
		for _, v := range vals {
			if msg := checkParamValue(name, v); msg != "" {
				bad(name, "%s", msg)
				continue
			}
			sr.Params = append(sr.Params, Param{Name: name, Value: v})
		}
	}
	if len(issues) > 0 {
		return searchRequest{}, &RequestError{Status: http.StatusBadRequest, Issues: issues}
	}
	return sr, nil
}

// checkParamValue validates each comma-separated value of one search
// parameter and returns a problem description, or "".
func checkParamValue(name, v string) string {
	if v == "" {
		return name + " has an empty value"
	}
	if !utf8.ValidString(v) || hasControl(v) {
		return name + " contains control characters"
	}
	for _, part := range splitSearchValues(v) {
		if part == "" {
			return name + " has an empty value"
		}
		switch name {
		case "_id":
			if !ValidID(unescapeSearch(part)) {
				return "_id values must be valid ids"
			}
		case "active":
			if part != "true" && part != "false" {
				return "active must be true or false"
			}
		case "profile":
			typ, id, ok := strings.Cut(unescapeSearch(part), "/")
			if !ok || !(IsProfileType(typ) || typ == TypeClientApplication) || !ValidID(id) {
				return "profile must be a reference like Practitioner/123"
			}
		case "identifier":
			if t := ParseToken(part); t.System == "" && t.Value == "" {
				return "identifier needs a system or a value"
			}
		}
	}
	return ""
}

// searchURL is the link to one page of a search.
func (h *Handler) searchURL(typ string, sr searchRequest, offset int) string {
	v := url.Values{}
	for _, p := range sr.Params {
		v.Add(p.Name, p.Value)
	}
	v.Set("_count", strconv.Itoa(sr.Count))
	if offset > 0 {
		v.Set("_offset", strconv.Itoa(offset))
	}
	if sr.Format != "" {
		v.Set("_format", sr.Format)
	}
	return h.base + "/" + typ + "?" + v.Encode()
}

// versionURL is {base}/{Type}/{id}/_history/{version}.
func (h *Handler) versionURL(rec *Record) string {
	return h.base + "/" + rec.Type + "/" + rec.ID + "/_history/" + strconv.FormatInt(rec.Version, 10)
}

// writeRecord answers with a stored resource, its ETag and Last-Modified.
func writeRecord(c *gin.Context, status int, rec *Record) {
	c.Header("ETag", `W/"`+strconv.FormatInt(rec.Version, 10)+`"`)
	if !rec.LastUpdated.IsZero() {
		c.Header("Last-Modified", rec.LastUpdated.UTC().Format(http.TimeFormat))
	}
	c.Data(status, ContentType, rec.Body)
}

// fail maps an error to its FHIR answer. Store errors become 404, 410, 409,
// 412 and 503; a *RequestError is written as it is; anything else is logged
// and answered 500 without details.
func (h *Handler) fail(c *gin.Context, err error, typ, id string) {
	what := typ
	if id != "" {
		what = typ + "/" + id
	}
	var re *RequestError
	switch {
	case errors.As(err, &re):
		WriteOutcome(c, re.Status, re.Issues...)
	case errors.Is(err, ErrNotFound):
		WriteError(c, http.StatusNotFound, models.IssueTypeNotFound, what+" not found")
	case errors.Is(err, ErrGone):
		WriteError(c, http.StatusGone, models.IssueTypeDeleted, what+" has been deleted")
	case errors.Is(err, ErrVersionConflict):
		WriteError(c, http.StatusPreconditionFailed, models.IssueTypeConflict, what+" has a newer version than If-Match names")
	case errors.Is(err, ErrConflict):
		WriteError(c, http.StatusConflict, models.IssueTypeConflict, "the change conflicts with an existing resource (e.g. a duplicate externalId)")
	case errors.Is(err, ErrUnsupportedParam):
		WriteError(c, http.StatusBadRequest, models.IssueTypeNotSupported, strings.TrimPrefix(err.Error(), "fhir: "))
	case errors.Is(err, ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		c.Header("Retry-After", "5")
		WriteError(c, http.StatusServiceUnavailable, models.IssueTypeTransient, "the database is unavailable; retry later")
	case errors.Is(err, context.Canceled):
		// The client went away; nobody reads this answer.
		c.Header("Retry-After", "5")
		WriteError(c, http.StatusServiceUnavailable, models.IssueTypeTransient, "request cancelled")
	default:
		slog.ErrorContext(c.Request.Context(), "fhir request failed",
			"method", c.Request.Method, "route", c.FullPath(), "type", typ, "err", err)
		WriteError(c, http.StatusInternalServerError, models.IssueTypeException, "internal error")
	}
}
