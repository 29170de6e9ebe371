package node

import (
	"reflect"
	"testing"
)

func TestParseKeyValues(t *testing.T) {
	tests := []struct {
		in   string
		want map[string]string
	}{
		{"user_mapping=postgres pgactive_foreign_server=pgactive_server_endpoint1",
			map[string]string{"user_mapping": "postgres", "pgactive_foreign_server": "pgactive_server_endpoint1"}},
		{`host=h password='a b\'c' port = 5432`, map[string]string{"host": "h", "password": "a b'c", "port": "5432"}},
		{"", map[string]string{}},
	}
	for _, tt := range tests {
		got, err := parseKeyValues(tt.in)
		if err != nil {
			t.Fatalf("parse %q: %v", tt.in, err)
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("parse %q: got %v, want %v", tt.in, got, tt.want)
		}
	}
	for _, bad := range []string{"novalue", "a='unterminated", "=x"} {
		if _, err := parseKeyValues(bad); err == nil {
			t.Errorf("parse %q: got no error", bad)
		}
	}
}

func TestFormatKeyValuesRoundTrip(t *testing.T) {
	in := map[string]string{"password": `it's \ odd`, "host": "127.0.0.1", "dbname": "app"}
	got, err := parseKeyValues(formatKeyValues(in))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, in) {
		t.Fatalf("round trip: got %v, want %v", got, in)
	}
}

func TestRedactDSN(t *testing.T) {
	tests := []struct{ in, want string }{
		{"host=h password=secret dbname=app", "dbname='app' host='h'"},
		{"host=h password='sec ret' dbname=app", "dbname='app' host='h'"},
		{"postgres://u:secret@h:5432/app?sslmode=disable&password=x", "postgres://u@h:5432/app?sslmode=disable"},
	}
	for _, tt := range tests {
		if got := RedactDSN(tt.in); got != tt.want {
			t.Errorf("RedactDSN(%q): got %q, want %q", tt.in, got, tt.want)
		}
	}
}
