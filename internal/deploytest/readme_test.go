package deploytest

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/chatq/chatq/config"
)

// defaults is every variable config.Load reads with its value in
// config.Default(), as envconfig names and prints them.
func defaults(t *testing.T) map[string]string {
	t.Helper()
	var buf bytes.Buffer
	c := config.Default()
	if err := envconfig.Usagef(config.Prefix, &c, &buf, "{{range .}}{{usage_key .}}={{.Field}}\n{{end}}"); err != nil {
		t.Fatalf("list config variables: %v", err)
	}
	out := make(map[string]string)
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		name, value, _ := strings.Cut(line, "=")
		out[name] = value
	}
	for _, name := range []string{"CHATQ_REDIS_URL", "CHATQ_CA_TIMEOUT", "CHATQ_SANDBOX_ADDR"} {
		if _, ok := out[name]; !ok {
			t.Fatalf("config variables %v lack %s", out, name)
		}
	}
	return out
}

// readmeRow is a row of README's configuration table.
type readmeRow struct {
	line         int
	variables    []string
	defaultValue string // the default column, as written
}

var (
	variableRe = regexp.MustCompile("`(" + config.Prefix + "_[A-Z0-9_]+)`")
	tokenRe    = regexp.MustCompile("`([^`]*)`")
)

// configTable reads the rows of the table in README's Configuration
// section.
func configTable(t *testing.T) []readmeRow {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(raw), "\n")
	var rows []readmeRow
	in := false
	for i, line := range lines {
		switch {
		case strings.HasPrefix(line, "## "):
			in = strings.TrimSpace(line) == "## Configuration"
			continue
		case !in || !strings.HasPrefix(line, "| `"+config.Prefix+"_"):
			continue
		}
		cells := strings.Split(strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(line), "|"), "|"), "|")
		if len(cells) < 3 {
			t.Fatalf("README.md:%d: a configuration row needs variable, default and meaning: %q", i+1, line)
		}
		row := readmeRow{line: i + 1, defaultValue: strings.TrimSpace(cells[1])}
		for _, m := range variableRe.FindAllStringSubmatch(cells[0], -1) {
			row.variables = append(row.variables, m[1])
		}
		rows = append(rows, row)
	}
	if len(rows) == 0 {
		t.Fatal("README.md has no configuration table under ## Configuration")
	}
	return rows
}

// TestReadmeDocumentsEveryVariable holds README's configuration table to
// the code: every variable chatq reads has a row, every row names a
// variable chatq reads, and a default the table states is config's.
func TestReadmeDocumentsEveryVariable(t *testing.T) {
	want := defaults(t)
	documented := make(map[string]readmeRow)
	for _, row := range configTable(t) {
		for _, v := range row.variables {
			if _, ok := want[v]; !ok {
				t.Errorf("README.md:%d documents %s, which chatq does not read", row.line, v)
			}
			documented[v] = row
		}
	}
	names := make([]string, 0, len(want))
	for name := range want {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		value := want[name]
		row, ok := documented[name]
		if !ok {
			t.Errorf("README.md's configuration table has no row for %s (default %q)", name, value)
			continue
		}
		if len(row.variables) > 1 && !isZero(value) {
			t.Errorf("README.md:%d: %s has a default of its own (%s) and needs a row of its own", row.line, name, value)
			continue
		}
		if msg := checkDefault(value, row.defaultValue); msg != "" {
			t.Errorf("README.md:%d: %s: %s", row.line, name, msg)
		}
	}
}

// checkDefault compares the default config has (as envconfig prints it)
// with the README's default column, whose first `code` span states it. A
// zero default may be written in words ("(generated in dev)") or as an
// expression of another variable; a stated value must still be right.
func checkDefault(value, cell string) string {
	m := tokenRe.FindStringSubmatch(cell)
	if m == nil {
		if isZero(value) {
			return ""
		}
		return "the default column does not state the default " + strconv.Quote(value)
	}
	token := m[1]
	if same(value, token) {
		return ""
	}
	if isZero(value) && !comparable(token) {
		return "" // words or another variable: a derived or generated default
	}
	return "the README says `" + token + "`, config's default is " + strconv.Quote(value)
}

func isZero(v string) bool {
	switch v {
	case "", "0", "0s", "false", "[]":
		return true
	}
	return false
}

// comparable reports whether a README token is a value, not words.
func comparable(token string) bool {
	if _, err := time.ParseDuration(token); err == nil {
		return true
	}
	if _, err := strconv.ParseFloat(token, 64); err == nil {
		return true
	}
	return token == "true" || token == "false"
}

// same compares a default with a README token as durations, numbers or
// text.
func same(value, token string) bool {
	if value == token {
		return true
	}
	if a, err := time.ParseDuration(value); err == nil {
		b, err := time.ParseDuration(token)
		return err == nil && a == b
	}
	if a, err := strconv.ParseFloat(value, 64); err == nil {
		b, err := strconv.ParseFloat(token, 64)
		return err == nil && a == b
	}
	return false
}

func TestCheckDefault(t *testing.T) {
	for _, tt := range []struct {
		value, cell string
		ok          bool
	}{
		{"15m0s", "`15m`", true},
		{"15m0s", "`10m`", false},
		{"0.2", "`0.2`", true},
		{"transactional=6,bulk=1", "`transactional=6,bulk=1`", true},
		{":9091", "", false},
		{":9091", "`:9090`", false},
		{"0s", "`CHATQ_CA_TIMEOUT` + 5s", true},
		{"0", "`0` (off)", true},
		{"0", "`1`", false},
		{"false", "`false` (`true` in `dev`)", true},
		{"false", "`true`", false},
		{"", "(embedded in `dev`)", true},
		{"[]", "", true},
	} {
		if msg := checkDefault(tt.value, tt.cell); (msg == "") != tt.ok {
			t.Errorf("checkDefault(%q, %q) = %q, want ok %v", tt.value, tt.cell, msg, tt.ok)
		}
	}
}
