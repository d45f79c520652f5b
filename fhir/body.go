package fhir

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// lastUpdatedLayout is the layout of meta.lastUpdated written by the stores:
// RFC 3339 in UTC with exactly three fractional digits. It is fixed width, so
// its text order is its time order.
const lastUpdatedLayout = "2006-01-02T15:04:05.000Z"

// stampBody returns body with resourceType, id, meta.versionId (a string) and
// meta.lastUpdated set. Every other field, including other meta fields
// (profile, security, tag, ...), is kept as it was. An empty body is treated
// as {}; a body that is not a JSON object, or whose resourceType names another
// type, is refused.
func stampBody(body json.RawMessage, typ, id string, version int64, lastUpdated time.Time) (json.RawMessage, error) {
	obj := map[string]json.RawMessage{}
	if len(bytes.TrimSpace(body)) > 0 {
		if err := json.Unmarshal(body, &obj); err != nil {
			return nil, fmt.Errorf("fhir: %s body is not a JSON object: %w", typ, err)
		}
		if obj == nil { // the body was the JSON literal null
			return nil, fmt.Errorf("fhir: %s body is not a JSON object", typ)
		}
	}
	if raw, ok := obj["resourceType"]; ok {
		var rt string
		if err := json.Unmarshal(raw, &rt); err != nil || rt != typ {
			return nil, fmt.Errorf("fhir: body resourceType %s does not match %s", raw, typ)
		}
	}

	meta := map[string]json.RawMessage{}
	if raw, ok := obj["meta"]; ok && !bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		if err := json.Unmarshal(raw, &meta); err != nil {
			return nil, fmt.Errorf("fhir: %s meta is not a JSON object: %w", typ, err)
		}
		if meta == nil {
			meta = map[string]json.RawMessage{}
		}
	}
	meta["versionId"] = stampJSON(strconv.FormatInt(version, 10))
	meta["lastUpdated"] = stampJSON(lastUpdated.UTC().Format(lastUpdatedLayout))

	obj["resourceType"] = stampJSON(typ)
	obj["id"] = stampJSON(id)
	obj["meta"] = stampJSON(meta)
	out, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("fhir: encode %s body: %w", typ, err)
	}
	return out, nil
}

// stampJSON encodes values that cannot fail to encode (strings and maps of
// already valid raw JSON).
func stampJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("fhir: encode %T: %v", v, err))
	}
	return b
}
