package enqueue

import (
	"hash/fnv"
	"strconv"
	"strings"
)

// clusterSlots is the number of Redis Cluster hash slots.
const clusterSlots = 16384

// BulkQueues returns the asynq queues that bulk messages are spread over
// with shards shards (CHATQ_BULK_SHARDS), in shard order; none for one
// shard or fewer, where bulk is the single queue "bulk".
//
// asynq keeps a queue in one Redis Cluster hash slot, the slot of its name,
// so one queue is one master's worth of work. A cluster gives each master
// a range of slots (redis-cli gives each an equal range), so shard i of n
// is named to fall in the i-th of n equal parts of the slots: "bulk-<i>"
// when that name falls there already, else the first of "bulk-<i>-1",
// "bulk-<i>-2", ... that does. With as many shards as masters (or a
// multiple), each master then holds its share of the shards; names picked
// by number alone may well put two on one master and none on another.
func BulkQueues(shards int) []string {
	if shards <= 1 {
		return nil
	}
	qs := make([]string, shards)
	for i := range shards {
		lo, hi := i*clusterSlots/shards, (i+1)*clusterSlots/shards
		base := string(Bulk) + "-" + strconv.Itoa(i)
		name := base
		for k := 1; ; k++ {
			if s := hashSlot(name); s >= lo && s < hi {
				break
			}
			name = base + "-" + strconv.Itoa(k)
		}
		qs[i] = name
	}
	return qs
}

// BulkQueue returns the asynq queue of a bulk message to destination with
// shards shards: "bulk" for one shard or fewer, else one of BulkQueues
// chosen by a hash of the destination. All messages to one recipient share
// a shard, and so keep their order as far as one queue keeps it.
func BulkQueue(destination string, shards int) string {
	qs := BulkQueues(shards)
	if len(qs) == 0 {
		return string(Bulk)
	}
	return bulkQueueOf(destination, qs)
}

func bulkQueueOf(destination string, queues []string) string {
	h := fnv.New32a()
	// "+4420..." and "4420..." are the same recipient.
	h.Write([]byte(strings.TrimPrefix(destination, "+")))
	return queues[h.Sum32()%uint32(len(queues))]
}

// SendQueues returns the asynq queues that carry messages with shards bulk
// shards: transactional, bulk, and BulkQueues(shards). "bulk" stays among
// them when the bulk queue is sharded: it holds what was enqueued before.
func SendQueues(shards int) []string {
	return append([]string{string(Transactional), string(Bulk)}, BulkQueues(shards)...)
}

// IsSendQueue reports whether the asynq queue name carries messages:
// transactional, bulk, or a bulk shard of any number of shards.
func IsSendQueue(name string) bool {
	if name == string(Transactional) || name == string(Bulk) {
		return true
	}
	rest, ok := strings.CutPrefix(name, string(Bulk)+"-")
	if !ok {
		return false
	}
	shard, k, hasK := strings.Cut(rest, "-")
	return isNumber(shard) && (!hasK || isNumber(k))
}

// isNumber reports whether s is a whole number written without leading
// zeros.
func isNumber(s string) bool {
	if s == "" || (len(s) > 1 && s[0] == '0') {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// hashSlot is the Redis Cluster hash slot of a name used as a key's hash
// tag, as asynq uses a queue's name: CRC16 (XMODEM) modulo 16384.
func hashSlot(tag string) int {
	var crc uint16
	for i := 0; i < len(tag); i++ {
		crc ^= uint16(tag[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % clusterSlots
}
