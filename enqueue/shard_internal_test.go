package enqueue

import "testing"

// Redis Cluster's own reference value: CLUSTER KEYSLOT 123456789.
func TestHashSlot(t *testing.T) {
	if got := hashSlot("123456789"); got != 12739 {
		t.Errorf("hashSlot(123456789) = %d, want 12739", got)
	}
}

// Shard i of n falls in the i-th of n equal parts of the slots, so that
// each master of an evenly split cluster holds its share.
func TestBulkQueuesSpreadOverSlots(t *testing.T) {
	for n := 2; n <= 64; n++ {
		for i, q := range BulkQueues(n) {
			lo, hi := i*clusterSlots/n, (i+1)*clusterSlots/n
			if s := hashSlot(q); s < lo || s >= hi {
				t.Errorf("BulkQueues(%d)[%d] = %s in slot %d, want one in [%d, %d)", n, i, q, s, lo, hi)
			}
			if !IsSendQueue(q) {
				t.Errorf("IsSendQueue(%s) = false", q)
			}
		}
	}
}
