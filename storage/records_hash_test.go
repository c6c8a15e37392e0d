package storage_test

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/r8im/r8im/storage"
)

// fillValue sets v, and everything in it, to values that are not zero and
// differ from one another; seed counts the values given so far.
func fillValue(t *testing.T, v reflect.Value, seed *int) {
	t.Helper()
	*seed++
	n := *seed
	switch v.Kind() {
	case reflect.String:
		v.SetString(fmt.Sprintf("value-%d", n))
	case reflect.Int, reflect.Int64:
		v.SetInt(int64(1000 + n))
	case reflect.Float64:
		v.SetFloat(float64(n) + 0.5)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		for range 2 {
			k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
			fillValue(t, k, seed)
			fillValue(t, e, seed)
			m.SetMapIndex(k, e)
		}
		v.Set(m)
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 2, 2)
		for i := range s.Len() {
			fillValue(t, s.Index(i), seed)
		}
		v.Set(s)
	case reflect.Struct:
		for i := range v.NumField() {
			fillValue(t, v.Field(i), seed)
		}
	default:
		t.Fatalf("fillValue: no value for a %s; add its kind", v.Type())
	}
}

// TestSucceedStoresEverySuccessField: every field of a fully populated
// Success comes back from Get in the Record field of the same hash name,
// so a field added to Success but not mapped (no tag, or no Record field
// to read it into) fails here. Fields tagged `redis:"-"` are not stored.
func TestSucceedStoresEverySuccessField(t *testing.T) {
	ctx := context.Background()
	rs, rdb, _ := newRecords(t)
	var s storage.Success
	seed := 0
	fillValue(t, reflect.ValueOf(&s).Elem(), &seed)
	first, err := rs.Succeed(ctx, "full", s)
	if err != nil || !first {
		t.Fatalf("Succeed = %v, %v", first, err)
	}
	got := reflect.ValueOf(*recGet(t, rs, "full"))
	hash := rdb.HGetAll(ctx, rs.Key("full")).Val()

	recordField := map[string]int{} // hash name → Record field index
	for i := range got.NumField() {
		recordField[got.Type().Field(i).Tag.Get("redis")] = i
	}
	sv := reflect.ValueOf(s)
	for i := range sv.NumField() {
		sf := sv.Type().Field(i)
		name := sf.Tag.Get("redis")
		switch {
		case name == "-":
			continue
		case name == "":
			t.Errorf("Success.%s has no redis tag, so Succeed does not store it: tag it with the hash name of "+
				"the Record field it is read back into, or `redis:\"-\"` to keep it out of the record", sf.Name)
			continue
		case hash[name] == "":
			t.Errorf("Success.%s: the hash has no field %q", sf.Name, name)
		}
		ri, ok := recordField[name]
		if !ok {
			t.Errorf("Success.%s is stored as %q, but no Record field has that redis tag: Get never reads it", sf.Name, name)
			continue
		}
		if want, have := sv.Field(i).Interface(), got.Field(ri).Interface(); !reflect.DeepEqual(have, want) {
			t.Errorf("Success.%s: Record.%s = %#v after Get, want %#v", sf.Name, got.Type().Field(ri).Name, have, want)
		}
	}
}

// TestRecordHashNamesAreJSONNames: the hash field of each Record field is
// its JSON name, as operators reading the hashes expect.
func TestRecordHashNamesAreJSONNames(t *testing.T) {
	rt := reflect.TypeFor[storage.Record]()
	for i := range rt.NumField() {
		f := rt.Field(i)
		jsonName, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if got := f.Tag.Get("redis"); got != jsonName {
			t.Errorf("Record.%s: redis tag %q, JSON name %q; want them equal", f.Name, got, jsonName)
		}
	}
}

// TestRecordGetRefusesABadHashValue: a hash value that does not decode is
// an error naming its field, not a silently zero field.
func TestRecordGetRefusesABadHashValue(t *testing.T) {
	for _, tc := range []struct{ field, value string }{
		{"layer_size", "many"},
		{"attempts", "1.5"},
		{"stages", `{"upload":`},
		{"layers", `"not a list"`},
		{"created_at", "yesterday"},
		{"finished_at", "2024-13-01T00:00:00Z"},
	} {
		t.Run(tc.field, func(t *testing.T) {
			ctx := context.Background()
			rs, rdb, _ := newRecords(t)
			recCreate(t, rs, storage.Record{ID: "bad", Type: "image:affix"})
			recCheck(t, rdb.HSet(ctx, rs.Key("bad"), tc.field, tc.value).Err())
			if _, err := rs.Get(ctx, "bad"); err == nil || !strings.Contains(err.Error(), "field "+tc.field) {
				t.Fatalf("Get with %s = %q: %v; want an error naming field %s", tc.field, tc.value, err, tc.field)
			}
		})
	}
}
