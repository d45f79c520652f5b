package fhir

import (
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	models "github.com/samply/golang-fhir-models/fhir-models/fhir"
)

// Metadata serves GET /metadata: the server's CapabilityStatement. It needs
// no authentication, so mount it outside the authenticated group.
func (h *Handler) Metadata(c *gin.Context) {
	c.Data(http.StatusOK, ContentType, h.capability)
}

// CapabilityStatement describes what the REST API of a server with the given
// FHIR base supports. ProjectMembership is not an R4 resource type, so it
// cannot be listed as a resource; the rest documentation mentions it.
func CapabilityStatement(baseURL string, date time.Time) models.CapabilityStatement {
	str := func(s string) *string { return &s }
	profileSearch := []models.CapabilityStatementRestResourceSearchParam{
		{Name: "_id", Type: models.SearchParamTypeToken, Definition: str("http://hl7.org/fhir/SearchParameter/Resource-id")},
		{Name: "identifier", Type: models.SearchParamTypeToken, Documentation: str("system|value, |value, value or system|")},
		{Name: "name", Type: models.SearchParamTypeString, Documentation: str("case-insensitive prefix of any name part")},
	}
	interactions := []models.CapabilityStatementRestResourceInteraction{
		{Code: models.TypeRestfulInteractionRead},
		{Code: models.TypeRestfulInteractionSearchType},
		{Code: models.TypeRestfulInteractionCreate},
		{Code: models.TypeRestfulInteractionUpdate},
		{Code: models.TypeRestfulInteractionDelete},
	}
	versioning := models.ResourceVersionPolicyVersionedUpdate
	no := false
	resources := make([]models.CapabilityStatementRestResource, 0, len(ProfileTypes))
	for _, rt := range []models.ResourceType{models.ResourceTypePatient, models.ResourceTypePractitioner, models.ResourceTypeRelatedPerson} {
		resources = append(resources, models.CapabilityStatementRestResource{
			Type:         rt,
			Interaction:  interactions,
			Versioning:   &versioning,
			ReadHistory:  &no,
			UpdateCreate: &no,
			SearchParam:  profileSearch,
		})
	}
	return models.CapabilityStatement{
		Url:       str(baseURL + "/metadata"),
		Name:      str("fhirgate"),
		Title:     str("fhirgate FHIR R4 server"),
		Status:    models.PublicationStatusActive,
		Date:      date.UTC().Format(time.RFC3339),
		Publisher: str("fhirgate"),
		Kind:      models.CapabilityStatementKindInstance,
		Software:  &models.CapabilityStatementSoftware{Name: "fhirgate"},
		Implementation: &models.CapabilityStatementImplementation{
			Description: "fhirgate",
			Url:         str(baseURL),
		},
		FhirVersion: models.FHIRVersion4_0_1,
		Format:      []string{"application/fhir+json", "json"},
		Rest: []models.CapabilityStatementRest{{
			Mode: models.RestfulCapabilityModeServer,
			Documentation: str("All requests except this one need Authorization: Bearer with a token of a configured " +
				"identity provider or a local access token. Every resource belongs to one project and is visible only " +
				"inside it. Project admins may also read, search (profile, external-id, active, _id), update " +
				"(active, admin, externalId) and delete ProjectMembership resources at {base}/ProjectMembership."),
			Security: &models.CapabilityStatementRestSecurity{
				Description: str("OAuth 2.0 bearer tokens; see /.well-known/openid-configuration."),
			},
			Resource: resources,
		}},
	}
}

// capabilityJSON encodes the CapabilityStatement served by Metadata.
func capabilityJSON(baseURL string) []byte {
	body, err := CapabilityStatement(baseURL, time.Now()).MarshalJSON()
	if err != nil {
		// Only fixed, valid enum values are used above; this cannot happen.
		panic("fhir: encode CapabilityStatement: " + err.Error())
	}
	return body
}
