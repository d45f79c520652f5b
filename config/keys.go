package config

import (
	"fmt"
	"reflect"
	"strings"
)

// checkKeys walks a generically decoded JSON value alongside the Go type it
// will be decoded into and refuses any object key that is not exactly a json
// tag of that type. encoding/json matches keys case-insensitively, so without
// this a misspelt "redisURL" would silently set redisUrl.
func checkKeys(v any, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		obj, ok := v.(map[string]any)
		if !ok || t == reflect.TypeOf(Duration{}) {
			return nil // type errors are reported by the decoder
		}
		fields := map[string]reflect.Type{}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name != "" && name != "-" {
				fields[name] = f.Type
			}
		}
		for k, child := range obj {
			ft, ok := fields[k]
			if !ok {
				return fmt.Errorf("unknown key %q%s (check the spelling; unknown keys are refused so a typo cannot disable a setting)", k, where(path))
			}
			if err := checkKeys(child, ft, join(path, k)); err != nil {
				return err
			}
		}
	case reflect.Slice:
		list, ok := v.([]any)
		if !ok {
			return nil
		}
		for i, child := range list {
			if err := checkKeys(child, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	}
	return nil
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func where(path string) string {
	if path == "" {
		return ""
	}
	return " in " + path
}
