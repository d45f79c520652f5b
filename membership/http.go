package membership

import (
	"errors"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/fhirgate/fhirgate/caller"
	"github.com/fhirgate/fhirgate/fhir"
	"github.com/gin-gonic/gin"
	models "github.com/samply/golang-fhir-models/fhir-models/fhir"
)

// AdminHandler serves /admin/* for authenticated callers.
type AdminHandler struct {
	members *Service
	baseURL string // FHIR base, e.g. http://localhost:8080/fhir/R4
	log     *slog.Logger
}

// NewAdminHandler returns the admin endpoints; fhirBase is the absolute FHIR
// base URL used in Location headers.
func NewAdminHandler(members *Service, fhirBase string, log *slog.Logger) *AdminHandler {
	return &AdminHandler{members: members, baseURL: fhirBase, log: log}
}

// Register mounts the admin routes on r (which must run the auth chain first).
func (h *AdminHandler) Register(r gin.IRoutes) {
	r.POST("/admin/projects/:projectId/invite", h.invite)
}

func (h *AdminHandler) invite(c *gin.Context) {
	ctx := c.Request.Context()
	cl := caller.From(ctx)
	projectID := c.Param("projectId")
	if cl == nil {
		fhir.WriteError(c, http.StatusUnauthorized, models.IssueTypeLogin, "authentication required")
		return
	}
	exists, err := h.members.ProjectExists(ctx, projectID)
	if err != nil {
		h.storeError(c, err)
		return
	}
	// An unknown project is 404 for everybody; a known one is 403 unless the
	// caller administers exactly that project.
	if !exists {
		fhir.WriteError(c, http.StatusNotFound, models.IssueTypeNotFound, "project "+strconv.Quote(projectID)+" not found")
		return
	}
	if !cl.Admin || cl.Project != projectID {
		fhir.WriteError(c, http.StatusForbidden, models.IssueTypeForbidden, "only an admin of this project may invite users")
		return
	}
	body, err := fhir.ReadBody(c.Writer, c.Request)
	if err != nil {
		var re *fhir.RequestError
		if errors.As(err, &re) {
			fhir.WriteOutcome(c, re.Status, re.Issues...)
			return
		}
		h.storeError(c, err)
		return
	}
	req, err := DecodeInvite(body)
	if err != nil {
		h.inviteError(c, err)
		return
	}
	m, err := h.members.Invite(ctx, projectID, req)
	if err != nil {
		h.inviteError(c, err)
		return
	}
	c.Header("Location", h.baseURL+"/"+fhir.TypeProjectMembership+"/"+m.ID)
	c.Header("Content-Type", fhir.ContentType)
	c.JSON(http.StatusCreated, m)
}

func (h *AdminHandler) inviteError(c *gin.Context, err error) {
	var ve *ValidationError
	switch {
	case errors.As(err, &ve):
		issues := make([]fhir.Issue, len(ve.Fields))
		for i, f := range ve.Fields {
			issues[i] = fhir.Issue{Code: models.IssueTypeInvalid, Diagnostics: f.Field + ": " + f.Message, Expression: f.Field}
		}
		fhir.WriteOutcome(c, http.StatusBadRequest, issues...)
	case errors.Is(err, ErrProjectNotFound):
		fhir.WriteError(c, http.StatusNotFound, models.IssueTypeNotFound, "project not found")
	case errors.Is(err, fhir.ErrConflict):
		fhir.WriteOutcome(c, http.StatusConflict, fhir.Issue{Code: models.IssueTypeDuplicate,
			Diagnostics: "externalId is already used by a membership of this project", Expression: "externalId"})
	default:
		h.storeError(c, err)
	}
}

func (h *AdminHandler) storeError(c *gin.Context, err error) {
	if errors.Is(err, fhir.ErrUnavailable) {
		c.Header("Retry-After", "5")
		fhir.WriteError(c, http.StatusServiceUnavailable, models.IssueTypeTransient, "the database is unavailable; retry shortly")
		return
	}
	h.log.ErrorContext(c.Request.Context(), "admin request failed", "error", err.Error())
	fhir.WriteError(c, http.StatusInternalServerError, models.IssueTypeException, "internal error")
}
