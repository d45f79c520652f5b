package fhir

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"
)

// MaxBodyBytes is the largest request body the REST API reads (1 MiB); a
// larger one is answered 413.
const MaxBodyBytes = 1 << 20

// ValidID reports whether s is a FHIR id: 1 to 64 characters from
// [A-Za-z0-9\-\.]. "." and ".." are refused too: they are path segments,
// never resource ids.
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > 64 || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// RequestError is a refused request: the HTTP status to answer and the
// problems to list in the OperationOutcome.
type RequestError struct {
	Status int
	Issues []Issue
}

// Error joins the diagnostics of the issues.
func (e *RequestError) Error() string {
	parts := make([]string, 0, len(e.Issues))
	for _, is := range e.Issues {
		parts = append(parts, is.Diagnostics)
	}
	return fmt.Sprintf("fhir: request refused (%d): %s", e.Status, strings.Join(parts, "; "))
}

// badRequest returns a 400 RequestError with one issue.
func badRequest(code models.IssueType, expression, format string, args ...any) *RequestError {
	return &RequestError{Status: http.StatusBadRequest, Issues: []Issue{{
		Code: code, Diagnostics: fmt.Sprintf(format, args...), Expression: expression,
	}}}
}

// ReadBody checks the Content-Type of a create or update request and reads
// its body, at most MaxBodyBytes. Errors are *RequestError: 415 for a media
// type other than application/fhir+json or application/json (a charset, when
// given, must be UTF-8), 413 for a larger body, 400 for an empty or unreadable one.
func ReadBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if err := checkContentType(r.Header.Get("Content-Type")); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, &RequestError{Status: http.StatusRequestEntityTooLarge, Issues: []Issue{{
				Code: models.IssueTypeTooLong, Diagnostics: fmt.Sprintf("request body larger than %d bytes", MaxBodyBytes),
			}}}
		}
		return nil, badRequest(models.IssueTypeStructure, "", "request body could not be read")
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, badRequest(models.IssueTypeRequired, "", "request body is empty")
	}
	return data, nil
}

// checkContentType accepts application/fhir+json and application/json with
// an optional UTF-8 charset; other parameters (e.g. fhirVersion) are ignored.
func checkContentType(header string) error {
	unsupported := func(d string) error {
		return &RequestError{Status: http.StatusUnsupportedMediaType, Issues: []Issue{{
			Code: models.IssueTypeNotSupported, Diagnostics: d,
		}}}
	}
	if header == "" {
		return unsupported("Content-Type missing; send application/fhir+json")
	}
	mediaType, params, err := mime.ParseMediaType(header)
	if err != nil {
		return unsupported("Content-Type is malformed")
	}
	if mediaType != "application/fhir+json" && mediaType != "application/json" {
		return unsupported("Content-Type " + mediaType + " not supported; send application/fhir+json")
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") && !strings.EqualFold(cs, "utf8") {
		return unsupported("charset " + cs + " not supported; send UTF-8")
	}
	return nil
}

// DecodedResource is a request body that passed DecodeResource.
type DecodedResource struct {
	// Body is the resource re-encoded from the typed model: canonical keys,
	// resourceType set, nothing the model does not know.
	Body json.RawMessage
	// ID is the id the body carries ("" when absent).
	ID string
	// Membership is the decoded body when the type is ProjectMembership.
	Membership *ProjectMembership
}

// DecodeResource checks that data is one JSON object describing a resource of
// type typ and returns it re-encoded. The checks: the JSON decodes; its
// resourceType equals typ (the R4 models ignore resourceType, so it is
// checked here); it decodes into the typed model with unknown fields refused
// at every level (so typos are not silently dropped); its id, when present,
// is a valid id. Supported types are the profile types and ProjectMembership.
// Errors are *RequestError with status 400.
func DecodeResource(typ string, data []byte) (*DecodedResource, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil || top == nil {
		return nil, badRequest(models.IssueTypeStructure, "", "body is not a JSON object: %s", jsonProblem(err))
	}
	rawType, ok := top["resourceType"]
	if !ok {
		return nil, badRequest(models.IssueTypeRequired, "resourceType", "resourceType is missing")
	}
	var rt string
	if err := json.Unmarshal(rawType, &rt); err != nil || rt != typ {
		return nil, badRequest(models.IssueTypeInvalid, "resourceType",
			"resourceType %s does not match the type %s of the URL", truncate(string(rawType), 64), typ)
	}
	for k := range top {
		// The models match keys case-insensitively; a second spelling of
		// resourceType must not slip through.
		if k != "resourceType" && strings.EqualFold(k, "resourceType") {
			return nil, badRequest(models.IssueTypeStructure, k, "unknown element %q", truncate(k, 64))
		}
	}
	delete(top, "resourceType")
	// Re-encoding the map is the decode-only wrapper for the models: they
	// have no resourceType field, so strict decoding would refuse it.
	rest, err := json.Marshal(top)
	if err != nil {
		return nil, badRequest(models.IssueTypeStructure, "", "body could not be decoded")
	}

	var out DecodedResource
	switch typ {
	case TypePatient:
		v, err := decodeStrict[models.Patient](rest)
		if err != nil {
			return nil, err
		}
		out.ID = deref(v.Id)
		out.Body, err = v.MarshalJSON()
		if err != nil {
			return nil, err
		}
	case TypePractitioner:
		v, err := decodeStrict[models.Practitioner](rest)
		if err != nil {
			return nil, err
		}
		out.ID = deref(v.Id)
		out.Body, err = v.MarshalJSON()
		if err != nil {
			return nil, err
		}
	case TypeRelatedPerson:
		v, err := decodeStrict[models.RelatedPerson](rest)
		if err != nil {
			return nil, err
		}
		if v.Patient.Reference == nil && v.Patient.Identifier == nil && v.Patient.Display == nil {
			return nil, badRequest(models.IssueTypeRequired, "RelatedPerson.patient", "RelatedPerson.patient is required")
		}
		out.ID = deref(v.Id)
		out.Body, err = v.MarshalJSON()
		if err != nil {
			return nil, err
		}
	case TypeProjectMembership:
		v, err := decodeStrict[ProjectMembership](rest)
		if err != nil {
			return nil, err
		}
		v.ResourceType = TypeProjectMembership
		out.ID = v.ID
		out.Membership = &v
		out.Body, err = json.Marshal(v)
		if err != nil {
			return nil, err
		}
	default:
		return nil, badRequest(models.IssueTypeNotSupported, "resourceType", "resource type %s not supported", typ)
	}
	if out.ID != "" && !ValidID(out.ID) {
		return nil, badRequest(models.IssueTypeValue, typ+".id", "id must be 1-64 characters from A-Z a-z 0-9 - .")
	}
	return &out, nil
}

// decodeStrict decodes data into a T, refusing unknown fields and trailing data.
func decodeStrict[T any](data []byte) (T, error) {
	var v T
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return v, badRequest(models.IssueTypeStructure, "", "body does not match the resource: %s", jsonProblem(err))
	}
	return v, nil
}

// jsonProblem describes a JSON decoding error without echoing large inputs.
func jsonProblem(err error) string {
	if err == nil {
		return "not an object"
	}
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("invalid JSON at byte %d", syn.Offset)
	case errors.As(err, &typ):
		if typ.Field != "" {
			return fmt.Sprintf("element %s has the wrong JSON type (%s)", truncate(typ.Field, 128), typ.Value)
		}
		return fmt.Sprintf("wrong JSON type (%s)", typ.Value)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "unexpected end of JSON"
	}
	msg := err.Error()
	if strings.HasPrefix(msg, "json: unknown field ") {
		return "unknown element " + truncate(strings.TrimPrefix(msg, "json: unknown field "), 128)
	}
	return truncate(msg, 200)
}

// truncate shortens s to at most n bytes for diagnostics.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
