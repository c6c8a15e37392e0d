package storage

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"time"
)

// The one mapping between records and their Redis hashes: a struct field
// tagged `redis:"name"` is the hash field name; untagged fields and
// `redis:"-"` are not stored. Values by Go type:
//
//   - string kinds as they are; []byte (json.RawMessage) byte for byte;
//   - integer kinds in decimal;
//   - time.Time and *time.Time in RFC 3339 with nanoseconds;
//   - anything else (maps, slices, structs) as JSON.
//
// Zero values (empty strings, maps and slices, 0, nil, the zero time) are
// not written, and an absent or empty hash field reads as the zero value.
// go-redis's own struct scanning (MapStringStringCmd.Scan) is not used: it
// supports neither maps, times nor pointers, and skips a []string silently.

var timeType = reflect.TypeFor[time.Time]()

// hashFields returns the field/value pairs of struct v (Record, Success)
// for HSET, in struct order, leaving out zero values.
func hashFields(v any) ([]any, error) {
	sv := reflect.ValueOf(v)
	var out []any
	for i := range sv.NumField() {
		name := hashName(sv.Type().Field(i))
		if name == "" {
			continue
		}
		s, err := encodeHashValue(sv.Field(i))
		if err != nil {
			return nil, fmt.Errorf("encoding field %s: %w", name, err)
		}
		if s != "" {
			out = append(out, name, s)
		}
	}
	return out, nil
}

// scanHash sets the tagged fields of the struct dst points to from the
// hash h; fields h lacks keep their value, names dst lacks are ignored.
func scanHash(h map[string]string, dst any) error {
	dv := reflect.ValueOf(dst).Elem()
	for i := range dv.NumField() {
		name := hashName(dv.Type().Field(i))
		if s := h[name]; name != "" && s != "" {
			if err := decodeHashValue(dv.Field(i), s); err != nil {
				return fmt.Errorf("field %s: %w", name, err)
			}
		}
	}
	return nil
}

// hashName is the hash field of sf, or "" when it is not stored.
func hashName(sf reflect.StructField) string {
	if name := sf.Tag.Get("redis"); name != "-" && sf.IsExported() {
		return name
	}
	return ""
}

// encodeHashValue is v as a hash value, "" for a zero value.
func encodeHashValue(v reflect.Value) (string, error) {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return "", nil
		}
		v = v.Elem()
	}
	switch {
	case v.Type() == timeType:
		if t := v.Interface().(time.Time); !t.IsZero() {
			return t.Format(time.RFC3339Nano), nil
		}
		return "", nil
	case v.Kind() == reflect.String:
		return v.String(), nil
	case v.CanInt():
		if n := v.Int(); n != 0 {
			return strconv.FormatInt(n, 10), nil
		}
		return "", nil
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Uint8:
		return string(v.Bytes()), nil
	case (v.Kind() == reflect.Map || v.Kind() == reflect.Slice) && v.Len() == 0, v.IsZero():
		return "", nil
	}
	b, err := json.Marshal(v.Interface())
	return string(b), err
}

// decodeHashValue sets v from the hash value s, which is not empty.
func decodeHashValue(v reflect.Value, s string) error {
	if v.Kind() == reflect.Pointer {
		v.Set(reflect.New(v.Type().Elem()))
		v = v.Elem()
	}
	switch {
	case v.Type() == timeType:
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return err
		}
		v.Set(reflect.ValueOf(t))
	case v.Kind() == reflect.String:
		v.SetString(s)
	case v.CanInt():
		n, err := strconv.ParseInt(s, 10, v.Type().Bits())
		if err != nil {
			return err
		}
		v.SetInt(n)
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Uint8:
		v.SetBytes([]byte(s))
	default:
		return json.Unmarshal([]byte(s), v.Addr().Interface())
	}
	return nil
}
