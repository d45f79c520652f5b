package fhir

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	models "github.com/samply/golang-fhir-models/fhir-models/fhir"
)

// ErrUnsupportedParam is returned (wrapped, with the parameter named) by
// Search for a parameter the store does not support for the queried type, or
// a value it cannot interpret (e.g. active=maybe, an empty value, too many
// values). Handlers answer 400.
var ErrUnsupportedParam = errors.New("fhir: unsupported search parameter")

// Search limits.
const (
	// searchDefaultCount is the page size when Query.Count is 0.
	searchDefaultCount = 100
	// searchMaxCount is the largest page size; larger counts are capped to it.
	searchMaxCount = 1000
	// maxParamValues bounds the comma-separated values of one parameter and
	// maxParams the parameters of one query, so a query cannot grow into an
	// unbounded SQL statement.
	maxParamValues = 100
	maxParams      = 32
)

// identifierToken is one identifier of a resource. A nil System means the
// identifier has no system; a nil Value means it has no value.
type identifierToken struct {
	System *string
	Value  *string
}

// membershipIndex holds the search columns of a ProjectMembership.
// loginIndex holds the search columns of a Login.
type loginIndex struct {
	Membership string
	TokenHash  *string // nil for logins without an external token
	Revoked    bool
}

type membershipIndex struct {
	Profile    string
	ExternalID *string // nil when absent or empty
	Active     bool
	Admin      bool
}

// indexValues are the search values extracted from one resource body.
type indexValues struct {
	Identifiers []identifierToken
	NameParts   []string // lower-cased, deduplicated
	Membership  *membershipIndex
	// Login holds the search columns of a Login (nil for other types).
	Login *loginIndex
}

// extractIndex decodes body as a resource of type typ and returns the values
// the search tables hold for it. Types without search columns yield an empty
// result. Profile types are decoded with the FHIR R4 models, ProjectMembership
// and Login with the shapes of admin_types.go.
func extractIndex(typ string, body []byte) (indexValues, error) {
	var iv indexValues
	var (
		idents []models.Identifier
		names  []models.HumanName
	)
	switch typ {
	case TypePatient:
		r, err := models.UnmarshalPatient(body)
		if err != nil {
			return iv, fmt.Errorf("fhir: decode Patient: %w", err)
		}
		idents, names = r.Identifier, r.Name
	case TypePractitioner:
		r, err := models.UnmarshalPractitioner(body)
		if err != nil {
			return iv, fmt.Errorf("fhir: decode Practitioner: %w", err)
		}
		idents, names = r.Identifier, r.Name
	case TypeRelatedPerson:
		r, err := models.UnmarshalRelatedPerson(body)
		if err != nil {
			return iv, fmt.Errorf("fhir: decode RelatedPerson: %w", err)
		}
		idents, names = r.Identifier, r.Name
	case TypeProjectMembership:
		var m ProjectMembership
		if err := json.Unmarshal(body, &m); err != nil {
			return iv, fmt.Errorf("fhir: decode ProjectMembership: %w", err)
		}
		mi := &membershipIndex{Active: m.IsActive(), Admin: m.Admin}
		if m.Profile.Reference != nil {
			mi.Profile = *m.Profile.Reference
		}
		if m.ExternalID != "" {
			ext := m.ExternalID
			mi.ExternalID = &ext
		}
		iv.Membership = mi
		return iv, nil
	case TypeLogin:
		var l Login
		if err := json.Unmarshal(body, &l); err != nil {
			return iv, fmt.Errorf("fhir: decode Login: %w", err)
		}
		li := &loginIndex{Membership: l.Membership, Revoked: l.Revoked}
		if l.TokenHash != "" {
			h := l.TokenHash
			li.TokenHash = &h
		}
		iv.Login = li
		return iv, nil
	default:
		return iv, nil
	}

	for _, id := range idents {
		if id.System == nil && id.Value == nil {
			continue
		}
		iv.Identifiers = append(iv.Identifiers, identifierToken{System: id.System, Value: id.Value})
	}
	seen := map[string]bool{}
	add := func(s string) {
		s = strings.ToLower(strings.TrimSpace(s))
		if s != "" && !seen[s] {
			seen[s] = true
			iv.NameParts = append(iv.NameParts, s)
		}
	}
	for _, n := range names {
		if n.Family != nil {
			add(*n.Family)
		}
		for _, g := range n.Given {
			add(g)
		}
		if n.Text != nil {
			add(*n.Text)
		}
	}
	return iv, nil
}

// searchFilter is the WHERE clause of a search over "resources r", written
// with "?" placeholders, and its arguments.
type searchFilter struct {
	where string
	args  []any
}

// buildSearchFilter validates q and turns it into SQL. Every value is a bound
// argument; only fixed SQL text is concatenated.
func buildSearchFilter(q Query) (searchFilter, error) {
	if q.Type == "" {
		return searchFilter{}, errors.New("fhir: search without a resource type")
	}
	if len(q.Projects) == 0 && !q.AllProjects {
		return searchFilter{}, errors.New("fhir: search without projects refused")
	}
	if len(q.Params) > maxParams {
		return searchFilter{}, fmt.Errorf("%w: more than %d parameters", ErrUnsupportedParam, maxParams)
	}
	conds := []string{"r.type = ?", "r.deleted = ?"}
	args := []any{q.Type, false}
	if !q.AllProjects {
		conds = append(conds, "r.project IN ("+placeholders(len(q.Projects))+")")
		for _, p := range q.Projects {
			args = append(args, p)
		}
	}
	for _, p := range q.Params {
		values, err := splitParamValues(p)
		if err != nil {
			return searchFilter{}, err
		}
		cond, cargs, err := paramCondition(q.Type, p.Name, values)
		if err != nil {
			return searchFilter{}, err
		}
		conds = append(conds, cond)
		args = append(args, cargs...)
	}
	return searchFilter{where: strings.Join(conds, " AND "), args: args}, nil
}

// paramCondition returns the SQL condition for one parameter whose values are OR'ed.
//
// Selective parameters (identifier, name, profile, external-id, token-hash,
// membership) become uncorrelated "r.id IN (SELECT ...)" subqueries, which the
// planners answer from the index of the search table, so a look-up costs the
// same with ten rows or ten million. The boolean filters (active, revoked)
// match most rows; they stay correlated EXISTS probes by primary key on the
// rows the other conditions selected.
func paramCondition(typ, name string, values []string) (string, []any, error) {
	var args []any
	var ors []string
	switch {
	case name == "_id":
		for _, v := range values {
			args = append(args, unescapeSearch(v))
		}
		return "r.id IN (" + placeholders(len(values)) + ")", args, nil

	case name == "identifier" && IsProfileType(typ):
		for _, v := range values {
			sys, val, hasBar := splitToken(v)
			switch {
			case !hasBar: // value: any system
				ors = append(ors, "i.value = ?")
				args = append(args, val)
			case sys == "" && val == "": // "|"
				return "", nil, fmt.Errorf("%w: identifier=%q has neither system nor value", ErrUnsupportedParam, v)
			case sys == "": // |value: no system
				ors = append(ors, "(i.system IS NULL AND i.value = ?)")
				args = append(args, val)
			case val == "": // system|: any value in the system
				ors = append(ors, "i.system = ?")
				args = append(args, sys)
			default:
				ors = append(ors, "(i.system = ? AND i.value = ?)")
				args = append(args, sys, val)
			}
		}
		return "r.id IN (SELECT i.id FROM identifier_index i WHERE i.type = ? AND (" +
			strings.Join(ors, " OR ") + "))", append([]any{typ}, args...), nil

	case name == "name" && IsProfileType(typ):
		for _, v := range values {
			ors = append(ors, `n.part LIKE ? ESCAPE '\'`)
			args = append(args, escapeLike(strings.ToLower(unescapeSearch(v)))+"%")
		}
		return "r.id IN (SELECT n.id FROM name_index n WHERE n.type = ? AND (" +
			strings.Join(ors, " OR ") + "))", append([]any{typ}, args...), nil

	case name == "profile" && typ == TypeProjectMembership:
		for _, v := range values {
			args = append(args, unescapeSearch(v))
		}
		return "r.id IN (SELECT m.id FROM memberships m WHERE m.profile IN (" +
			placeholders(len(values)) + "))", args, nil

	case name == "external-id" && typ == TypeProjectMembership:
		for _, v := range values {
			args = append(args, unescapeSearch(v))
		}
		return "r.id IN (SELECT m.id FROM memberships m WHERE m.external_id IN (" +
			placeholders(len(values)) + "))", args, nil

	case name == "active" && typ == TypeProjectMembership:
		for _, v := range values {
			b, err := strconv.ParseBool(unescapeSearch(v))
			if err != nil || (v != "true" && v != "false") {
				return "", nil, fmt.Errorf("%w: active=%q (want true or false)", ErrUnsupportedParam, v)
			}
			args = append(args, b)
		}
		return "EXISTS (SELECT 1 FROM memberships m WHERE m.id = r.id AND m.active IN (" +
			placeholders(len(values)) + "))", args, nil

	case name == "token-hash" && typ == TypeLogin:
		for _, v := range values {
			args = append(args, unescapeSearch(v))
		}
		return "r.id IN (SELECT l.id FROM logins l WHERE l.token_hash IN (" +
			placeholders(len(values)) + "))", args, nil

	case name == "revoked" && typ == TypeLogin:
		for _, v := range values {
			if v != "true" && v != "false" {
				return "", nil, fmt.Errorf("%w: revoked=%q (want true or false)", ErrUnsupportedParam, v)
			}
			args = append(args, v == "true")
		}
		return "EXISTS (SELECT 1 FROM logins l WHERE l.id = r.id AND l.revoked IN (" +
			placeholders(len(values)) + "))", args, nil

	case name == "membership" && typ == TypeLogin:
		for _, v := range values {
			args = append(args, strings.TrimPrefix(unescapeSearch(v), TypeProjectMembership+"/"))
		}
		return "r.id IN (SELECT l.id FROM logins l WHERE l.membership IN (" +
			placeholders(len(values)) + "))", args, nil
	}
	return "", nil, fmt.Errorf("%w: %q for %s", ErrUnsupportedParam, name, typ)
}

// splitParamValues splits a parameter value on unescaped commas (FHIR search
// escaping: "\," "\|" "\$" "\\") and refuses empty values.
func splitParamValues(p Param) ([]string, error) {
	values := splitUnescaped(p.Value, ',')
	if len(values) > maxParamValues {
		return nil, fmt.Errorf("%w: %s has more than %d values", ErrUnsupportedParam, p.Name, maxParamValues)
	}
	for _, v := range values {
		if v == "" {
			return nil, fmt.Errorf("%w: %s has an empty value", ErrUnsupportedParam, p.Name)
		}
	}
	return values, nil
}

// splitToken splits a token "system|value" on its first unescaped bar and
// unescapes both halves; hasBar is false for the bare "value" form.
func splitToken(v string) (system, value string, hasBar bool) {
	parts := splitUnescaped(v, '|')
	if len(parts) == 1 {
		return "", unescapeSearch(v), false
	}
	rest := strings.Join(parts[1:], "|")
	return unescapeSearch(parts[0]), unescapeSearch(rest), true
}

// splitUnescaped splits s on every sep not preceded by a backslash escape,
// keeping the escapes in the parts.
func splitUnescaped(s string, sep byte) []string {
	var parts []string
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++ // skip the escaped byte
		case sep:
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}

// escapeLike escapes the LIKE wildcards of s for use with ESCAPE '\'.
func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}

// placeholders returns n comma-separated "?" placeholders.
func placeholders(n int) string {
	if n <= 0 {
		return ""
	}
	return strings.Repeat("?, ", n-1) + "?"
}
