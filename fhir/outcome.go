package fhir

import (
	"net/http"

	"github.com/gin-gonic/gin"
	models "github.com/samply/golang-fhir-models/fhir-models/fhir"
)

// ContentType is the media type of every FHIR response body.
const ContentType = "application/fhir+json; charset=utf-8"

// Issue is one problem reported in an OperationOutcome.
type Issue struct {
	Code        models.IssueType
	Diagnostics string
	// Expression names the offending element (e.g. "firstName"), when there is one.
	Expression string
}

// NewOutcome builds an OperationOutcome with one error issue per entry.
// Severity is always set explicitly (the model's zero value is "fatal").
func NewOutcome(issues ...Issue) models.OperationOutcome {
	oo := models.OperationOutcome{Issue: make([]models.OperationOutcomeIssue, 0, len(issues))}
	for _, is := range issues {
		item := models.OperationOutcomeIssue{Severity: models.IssueSeverityError, Code: is.Code}
		if is.Diagnostics != "" {
			d := is.Diagnostics
			item.Diagnostics = &d
		}
		if is.Expression != "" {
			item.Expression = []string{is.Expression}
		}
		oo.Issue = append(oo.Issue, item)
	}
	return oo
}

// WriteOutcome aborts the gin request with status and an OperationOutcome
// holding the given issues.
func WriteOutcome(c *gin.Context, status int, issues ...Issue) {
	c.Header("Content-Type", ContentType)
	c.Abort()
	c.Status(status)
	body, err := NewOutcome(issues...).MarshalJSON()
	if err != nil {
		c.Status(http.StatusInternalServerError)
		return
	}
	_, _ = c.Writer.Write(body)
}

// WriteError aborts the gin request with status and a single-issue OperationOutcome.
func WriteError(c *gin.Context, status int, code models.IssueType, diagnostics string) {
	WriteOutcome(c, status, Issue{Code: code, Diagnostics: diagnostics})
}
