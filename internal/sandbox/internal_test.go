package sandbox

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestArrange(t *testing.T) {
	t.Parallel()
	events := make([]*event, 4)
	for i := range events {
		events[i] = &event{kind: kindMessageEvent, at: time.Unix(int64(i), 0)}
	}
	index := func(order []*event) []int {
		var out []int
		for _, e := range order {
			out = append(out, int(e.at.Unix()))
		}
		return out
	}

	if got, copies := arrange(events, 0, 0); copies != 0 || !cmp.Equal(index(got), []int{0, 1, 2, 3}) {
		t.Errorf("arrange without knobs = %v (%d copies), want the same order", index(got), copies)
	}
	for range 200 {
		got, _ := arrange(events, 1, 0)
		if idx := index(got); cmp.Equal(idx, []int{0, 1, 2, 3}) || len(idx) != 4 {
			t.Fatalf("arrange with reorder 1 = %v, want another order of the same events", idx)
		}
	}
	for range 200 {
		got, copies := arrange(events, 0, 1)
		idx := index(got)
		if copies != 4 || len(idx) != 8 {
			t.Fatalf("arrange with duplicate 1 = %v (%d copies), want each event twice", idx, copies)
		}
		// The originals keep their order, and each copy comes after its original.
		seen := map[int]int{}
		next := 0
		for _, i := range idx {
			seen[i]++
			if seen[i] == 1 {
				if i != next {
					t.Fatalf("arrange with duplicate 1 = %v: originals out of order", idx)
				}
				next++
			}
		}
	}
	if !cmp.Equal(index(events), []int{0, 1, 2, 3}) {
		t.Errorf("arrange changed its argument: %v", index(events))
	}
}

func TestCountPlaceholders(t *testing.T) {
	t.Parallel()
	tests := []struct {
		content string
		want    int
		wantErr bool
	}{
		{"No params.", 0, false},
		{"Welcome {{1}}! Your discount code is {{2}}.", 2, false},
		{"{{2}} before {{1}}, and {{1}} again", 2, false},
		{"Spaces {{ 1 }}", 1, false},
		{"Gap {{1}} {{3}}", 0, true},
		{"Zero {{0}}", 0, true},
	}
	for _, tt := range tests {
		got, err := countPlaceholders(tt.content)
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("countPlaceholders(%q) = %d, %v; want %d, error %v", tt.content, got, err, tt.want, tt.wantErr)
		}
	}
}
