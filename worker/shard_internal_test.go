package worker

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestShardQueues(t *testing.T) {
	tests := []struct {
		name   string
		queues map[string]int
		shards int
		want   map[string]int
	}{
		{"one shard changes nothing", map[string]int{"transactional": 6, "bulk": 1}, 1,
			map[string]int{"transactional": 6, "bulk": 1}},
		{"zero is one", map[string]int{"transactional": 6, "bulk": 1}, 0,
			map[string]int{"transactional": 6, "bulk": 1}},
		// Bulk's share of a busy worker stays 1/7: 1 / (18 + 1).
		{"three shards", map[string]int{"transactional": 6, "bulk": 1, "callbacks": 2}, 3,
			map[string]int{"transactional": 18, "callbacks": 6, "bulk": 1, "bulk-0": 1, "bulk-1-4": 1, "bulk-2": 1}},
		{"bulk weight kept per shard", map[string]int{"transactional": 3, "bulk": 2}, 2,
			map[string]int{"transactional": 6, "bulk": 2, "bulk-0": 2, "bulk-1-1": 2}},
		{"a worker without bulk gets no shards", map[string]int{"transactional": 1}, 4,
			map[string]int{"transactional": 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, shardQueues(tc.queues, tc.shards)); diff != "" {
				t.Errorf("shardQueues(%v, %d) (-want +got):\n%s", tc.queues, tc.shards, diff)
			}
		})
	}
}
