package bench

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisTime is where Redis's time went during a send: the commands
// clients sent, each script as one (the commands it ran inside counted in
// its time), from Redis's SLOWLOG with every command logged.
type RedisTime struct {
	// Messages were sent while the log was kept; Entries are the log's
	// last entries, read at its end.
	Messages int `json:"messages"`
	Entries  int `json:"entries"`
	// Commands are the clients' commands in those entries, the most time
	// first.
	Commands []CommandTime `json:"commands"`
}

// CommandTime is the time Redis spent in one kind of command.
type CommandTime struct {
	// Name is the command, and for a script the pattern of its first key
	// (its hash tag's content left out), which names what the script
	// works on: "evalsha chatq:m:{…}" is a record's change.
	Name  string        `json:"name"`
	Calls int           `json:"calls"`
	Time  time.Duration `json:"time"`
	// Chatq is set for a script of chatq's (its first key is chatq's).
	Chatq bool `json:"chatq"`
}

// Share is the part of total that c took.
func (c CommandTime) Share(total time.Duration) float64 {
	if total <= 0 {
		return 0
	}
	return float64(c.Time) / float64(total)
}

// Total is the time of every command in t.
func (t RedisTime) Total() time.Duration {
	var sum time.Duration
	for _, c := range t.Commands {
		sum += c.Time
	}
	return sum
}

// slowlogSize is how many entries Redis keeps while a send's commands are
// logged: about 600 sends' worth, of a few hundred bytes each.
const slowlogSize = 20000

// redisTimePhase stops the worker, posts n text messages, and logs every
// command Redis runs while the worker, started again, sends the first
// three quarters of them; then it waits for the rest. Logging every
// command costs Redis time itself, so no other phase runs with it.
func redisTimePhase(ctx context.Context, d *deployment, rdb *redis.Client, first, n int, o DeployedOptions) (RedisTime, error) {
	res := RedisTime{Messages: n}
	if err := d.stop("worker"); err != nil {
		return res, err
	}
	if _, err := d.postBatches(ctx, textMessage, first, n, o.BatchSize, o.BatchCallers, plainPrefix, ""); err != nil {
		return res, err
	}
	was, err := rdb.ConfigGet(ctx, "slowlog-*").Result()
	if err != nil {
		return res, fmt.Errorf("read the slowlog's configuration: %w", err)
	}
	// The log as it was, whatever happens: its entries take memory.
	defer func() {
		_ = setConfig(context.WithoutCancel(ctx), rdb, "slowlog-log-slower-than", was["slowlog-log-slower-than"], "slowlog-max-len", was["slowlog-max-len"])
	}()
	if err := setConfig(ctx, rdb, "slowlog-max-len", fmt.Sprint(slowlogSize), "slowlog-log-slower-than", "0"); err != nil {
		return res, err
	}
	if err := rdb.SlowLogReset(ctx).Err(); err != nil {
		return res, fmt.Errorf("reset the slowlog: %w", err)
	}
	if err := d.startWorker(ctx); err != nil {
		return res, err
	}
	if err := d.waitSent(ctx, max(n*3/4, 1)); err != nil {
		return res, err
	}
	// Stop logging before the log is read: the read is no send's.
	if err := setConfig(ctx, rdb, "slowlog-log-slower-than", "-1"); err != nil {
		return res, err
	}
	logs, err := rdb.SlowLogGet(ctx, -1).Result()
	if err != nil {
		return res, fmt.Errorf("read the slowlog: %w", err)
	}
	if err := rdb.SlowLogReset(ctx).Err(); err != nil {
		return res, fmt.Errorf("reset the slowlog: %w", err)
	}
	if err := d.waitSent(ctx, n); err != nil {
		return res, err
	}
	res.Entries = len(logs)
	res.Commands = commandTimes(logs)
	return res, nil
}

// setConfig sets Redis's configuration parameters, given as name, value
// pairs.
func setConfig(ctx context.Context, rdb *redis.Client, kv ...string) error {
	for i := 0; i < len(kv); i += 2 {
		if err := rdb.ConfigSet(ctx, kv[i], kv[i+1]).Err(); err != nil {
			return fmt.Errorf("set %s: %w", kv[i], err)
		}
	}
	return nil
}

// commandTimes sums the log's entries by command: those of clients alone,
// a script's inner commands being in its own time (Redis logs them with
// the client "?:0").
func commandTimes(logs []redis.SlowLog) []CommandTime {
	by := map[string]*CommandTime{}
	for _, l := range logs {
		if l.ClientAddr == "?:0" || len(l.Args) == 0 {
			continue
		}
		name := strings.ToLower(l.Args[0])
		script := (name == "evalsha" || name == "eval") && len(l.Args) > 3 && l.Args[2] != "0"
		if script {
			name += " " + keyPattern(l.Args[3])
		}
		c := by[name]
		if c == nil {
			c = &CommandTime{Name: name, Chatq: script && strings.HasPrefix(l.Args[3], "chatq:")}
			by[name] = c
		}
		c.Calls++
		c.Time += l.Duration
	}
	out := make([]CommandTime, 0, len(by))
	for _, c := range by {
		out = append(out, *c)
	}
	slices.SortFunc(out, func(a, b CommandTime) int {
		return cmp.Or(cmp.Compare(b.Time, a.Time), strings.Compare(a.Name, b.Name))
	})
	return out
}

// keyPattern is a key with its hash tag's content left out:
// "chatq:m:{01J...}" is "chatq:m:{…}".
func keyPattern(key string) string {
	open := strings.IndexByte(key, '{')
	if open < 0 {
		return key
	}
	end := strings.IndexByte(key[open:], '}')
	if end < 0 {
		return key
	}
	return key[:open+1] + "…" + key[open+end:]
}
