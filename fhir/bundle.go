package fhir

import (
	"github.com/google/uuid"
	models "github.com/samply/golang-fhir-models/fhir-models/fhir"
)

// SearchLinks are the paging links of a searchset Bundle. Self is required;
// Next and Previous are set when there are more pages in that direction.
type SearchLinks struct {
	Self     string
	Next     string
	Previous string
}

// NewSearchset builds a searchset Bundle for one page of search results.
// baseURL is the FHIR base without a trailing slash ("https://host/fhir/R4");
// each entry gets fullUrl {baseURL}/{Type}/{id}, the stored resource and
// search.mode match. total is the number of matches over all pages. The
// Bundle type and the entry search mode are always set explicitly, never left
// to the models' zero values (an unset Bundle type encodes as "document").
func NewSearchset(baseURL string, recs []Record, total int, links SearchLinks) models.Bundle {
	id := uuid.NewString()
	t := total
	b := models.Bundle{
		Id:    &id,
		Type:  models.BundleTypeSearchset,
		Total: &t,
		Link:  []models.BundleLink{{Relation: "self", Url: links.Self}},
		Entry: make([]models.BundleEntry, 0, len(recs)),
	}
	if links.Next != "" {
		b.Link = append(b.Link, models.BundleLink{Relation: "next", Url: links.Next})
	}
	if links.Previous != "" {
		b.Link = append(b.Link, models.BundleLink{Relation: "previous", Url: links.Previous})
	}
	for _, rec := range recs {
		fullURL := baseURL + "/" + rec.Type + "/" + rec.ID
		mode := models.SearchEntryModeMatch
		b.Entry = append(b.Entry, models.BundleEntry{
			FullUrl:  &fullURL,
			Resource: rec.Body,
			Search:   &models.BundleEntrySearch{Mode: &mode},
		})
	}
	return b
}
