package node

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckOwnCluster(t *testing.T) {
	members := []Member{
		{Name: "n1", SysID: 1, DBOID: 5, DBName: "app", Status: StateReady},
		{Name: "n2", SysID: 2, DBOID: 5, DBName: "app", Status: StateReady},
		{Name: "old", SysID: 3, DBOID: 5, DBName: "app", Status: StateDetached},
	}
	for _, tt := range []struct {
		name, node string
		id         Identity
		want       string // in the error; "" for none
		same       bool   // errors.Is(err, ErrSameCluster)
	}{
		{"own cluster", "n3", Identity{SysID: 4, DBOID: 5, DBName: "app"}, "", false},
		{"itself again", "n2", Identity{SysID: 2, DBOID: 5, DBName: "app"}, "", false},
		{"beside a detached member", "n3", Identity{SysID: 3, DBOID: 6, DBName: "app2"}, "", false},
		{"beside a member", "n3", Identity{SysID: 1, DBOID: 6, DBName: "app2"}, `database "app2" (system identifier 1) and member "n1" (database "app")`, true},
		{"a member under another name", "n3", Identity{SysID: 1, DBOID: 5, DBName: "app"}, `database "app" is already member "n1"`, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := checkOwnCluster(members, tt.node, "g", tt.id)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("got %v, want no error", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("got %v, want an error with %q", err, tt.want)
			case errors.Is(err, ErrSameCluster) != tt.same:
				t.Fatalf("errors.Is(%v, ErrSameCluster) = %v, want %v", err, !tt.same, tt.same)
			}
		})
	}
}
