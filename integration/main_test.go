package integration

import (
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	if AgentMain() {
		return
	}
	os.Exit(m.Run())
}
