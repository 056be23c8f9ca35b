package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// campaignFile is a campaign's recipients as read from its CSV file: a
// header row naming a destination column and the template's parameters,
// then one row per message.
type campaignFile struct {
	// params names the parameter columns in the order of the template's
	// {{1}}..{{n}}.
	params []string
	rows   []campaignRow
	// bad are the rows that cannot make a message at all.
	bad []rowError
	// digest is the SHA-256 of the file, for the batch id.
	digest [sha256.Size]byte
}

// campaignRow is one recipient: a message to be.
type campaignRow struct {
	// line is where the row starts in the file, for the user.
	line        int
	destination string
	params      []string
}

// rowError is what is wrong with the row on a line of the file.
type rowError struct {
	line   int
	reason string
}

func (e rowError) String() string { return fmt.Sprintf("line %d: %s", e.line, e.reason) }

// readCampaignFile reads a campaign's CSV file, or stdin for "-". The
// error is for a file that cannot be read as a whole (no header, no
// destination column, broken quoting); rows of the wrong length are in bad.
func readCampaignFile(path string, stdin io.Reader) (*campaignFile, error) {
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(stdin)
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("--csv: %w", err)
	}
	cf, err := parseCampaignCSV(data)
	if err != nil {
		return nil, fmt.Errorf("--csv %s: %w", path, err)
	}
	return cf, nil
}

func parseCampaignCSV(data []byte) (*campaignFile, error) {
	cf := &campaignFile{digest: sha256.Sum256(data)}
	r := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(data, []byte("\uFEFF"))))
	header, err := r.Read()
	if errors.Is(err, io.EOF) {
		return nil, errors.New("the file is empty: it needs a header row with a destination column")
	}
	if err != nil {
		return nil, err
	}
	dest, params, err := campaignColumns(header)
	if err != nil {
		return nil, err
	}
	for _, i := range params {
		cf.params = append(cf.params, strings.TrimSpace(header[i]))
	}
	for {
		record, err := r.Read()
		if errors.Is(err, io.EOF) {
			return cf, nil
		}
		line, _ := r.FieldPos(0)
		if errors.Is(err, csv.ErrFieldCount) {
			cf.bad = append(cf.bad, rowError{line, fmt.Sprintf("has %d fields, the header %d", len(record), len(header))})
			continue
		}
		if err != nil {
			return nil, err
		}
		row := campaignRow{line: line, destination: strings.TrimSpace(record[dest])}
		for _, i := range params {
			row.params = append(row.params, strings.TrimSpace(record[i]))
		}
		cf.rows = append(cf.rows, row)
	}
}

// campaignColumns finds the destination column and the parameter columns
// of a header, in the order of the template's placeholders: by number when
// every other column is named 1, 2, ..., in the file's order otherwise.
func campaignColumns(header []string) (dest int, params []int, err error) {
	dest = -1
	numbered := true
	for i, h := range header {
		h = strings.TrimSpace(h)
		switch {
		case h == "":
			return 0, nil, fmt.Errorf("column %d of the header has no name", i+1)
		case strings.EqualFold(h, "destination"):
			if dest >= 0 {
				return 0, nil, errors.New("the header has two destination columns")
			}
			dest = i
			continue
		}
		if n, err := strconv.Atoi(h); err != nil || n < 1 {
			numbered = false
		}
		params = append(params, i)
	}
	if dest < 0 {
		return 0, nil, fmt.Errorf("the header has no destination column (it reads %q)", strings.Join(header, ","))
	}
	if !numbered {
		return dest, params, nil
	}
	// n columns numbered 1 to n, none twice, are each number once.
	byNumber := make([]int, len(params))
	seen := make([]bool, len(params))
	for _, i := range params {
		n, _ := strconv.Atoi(strings.TrimSpace(header[i]))
		if n > len(params) {
			return 0, nil, fmt.Errorf("parameter column %d: %d numbered columns must be numbered 1 to %d", n, len(params), len(params))
		}
		if seen[n-1] {
			return 0, nil, fmt.Errorf("the header has two parameter columns %d", n)
		}
		seen[n-1] = true
		byNumber[n-1] = i
	}
	return dest, byNumber, nil
}
