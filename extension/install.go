package extension

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// DefaultPGConfig is the pg_config tried when none is given and none is in PATH.
const DefaultPGConfig = "/usr/lib/postgresql/15/bin/pg_config"

// ErrNoPGConfig is wrapped by the error of [Install] when no pg_config is found.
var ErrNoPGConfig = errors.New("pg_config not found")

// Install copies the control file and the install script into the extension
// directory of the PostgreSQL installation that pgConfig (the path of its
// pg_config) describes: `pg_config --sharedir`/extension. An empty pgConfig
// means pg_config from PATH, else [DefaultPGConfig]. It returns that directory.
//
// Files are replaced atomically, so a server running CREATE EXTENSION meanwhile
// reads either the old or the new file. When the directory is not writable the
// error names the fixes (and wraps fs.ErrPermission, or syscall.EROFS).
func Install(pgConfig string) (dir string, err error) {
	pgConfig, err = findPGConfig(pgConfig)
	if err != nil {
		return "", err
	}
	out, err := exec.Command(pgConfig, "--sharedir").Output()
	if err != nil {
		return "", fmt.Errorf("run %s --sharedir: %w", pgConfig, err)
	}
	share := strings.TrimSpace(string(out))
	if share == "" {
		return "", fmt.Errorf("run %s --sharedir: it printed nothing", pgConfig)
	}
	dir = filepath.Join(share, "extension")
	files := []struct{ name, content string }{
		{ControlFile, control},
		{ScriptFile, script},
	}
	for _, f := range files {
		if err := writeFileAtomic(dir, f.name, f.content); err != nil {
			if errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS) {
				return dir, fmt.Errorf("install extension files into %s: %w: run it as root (for example sudo pgactive extension install), "+
					"or let the agent create pgactive's objects itself with pgactive run --create-schema", dir, err)
			}
			return dir, fmt.Errorf("install extension files into %s: %w", dir, err)
		}
	}
	return dir, nil
}

// findPGConfig returns the pg_config to use.
func findPGConfig(pgConfig string) (string, error) {
	if pgConfig != "" {
		if _, err := os.Stat(pgConfig); err != nil {
			return "", fmt.Errorf("%w at %s: give the path of PostgreSQL's pg_config (for example %s): %w",
				ErrNoPGConfig, pgConfig, DefaultPGConfig, err)
		}
		return pgConfig, nil
	}
	if p, err := exec.LookPath("pg_config"); err == nil {
		return p, nil
	}
	if _, err := os.Stat(DefaultPGConfig); err == nil {
		return DefaultPGConfig, nil
	}
	return "", fmt.Errorf("%w in PATH nor at %s: install PostgreSQL's server development files or give the path of pg_config (--pg-config)",
		ErrNoPGConfig, DefaultPGConfig)
}

// writeFileAtomic writes name in dir through a temporary file renamed over it,
// readable by everyone (the server runs as another user).
func writeFileAtomic(dir, name, content string) error {
	tmp, err := os.CreateTemp(dir, "."+name+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // fails harmlessly after the rename
	if _, err := tmp.WriteString(content); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, name))
}
