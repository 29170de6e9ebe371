package node

import (
	"strings"
	"testing"
)

func TestCheckNotMember(t *testing.T) {
	members := []Member{
		{Name: "n1", SysID: 1, DBOID: 5, DBName: "app", Status: StateReady},
		{Name: "n2", SysID: 1, DBOID: 6, DBName: "app2", Status: StateReady},
		{Name: "old", SysID: 3, DBOID: 5, DBName: "app", Status: StateDetached},
	}
	for _, tt := range []struct {
		name, node string
		id         Identity
		want       string // in the error; "" for none
	}{
		{"own cluster", "n3", Identity{SysID: 4, DBOID: 5, DBName: "app"}, ""},
		{"itself again", "n2", Identity{SysID: 1, DBOID: 6, DBName: "app2"}, ""},
		{"another database of a member's cluster", "n3", Identity{SysID: 1, DBOID: 7, DBName: "app3"}, ""},
		{"a detached member's database", "n3", Identity{SysID: 3, DBOID: 5, DBName: "app"}, ""},
		{"a member under another name", "n3", Identity{SysID: 1, DBOID: 5, DBName: "app"}, `database "app" is already member "n1" of group "g"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := checkNotMember(members, tt.node, "g", tt.id)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("got %v, want no error", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("got %v, want an error with %q", err, tt.want)
			}
		})
	}
}
