package store_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatq/chatq/internal/redistest"
	"github.com/chatq/chatq/internal/store"
)

func ordered(id, dest, priority, key string) *store.Record {
	return &store.Record{
		ID: id, Destination: dest, Type: "text", Priority: priority, Ordered: true, IdempotencyKey: key, Fingerprint: "f" + key,
		Status: store.Queued, History: []store.HistoryEntry{{Status: store.Queued, At: t0}},
		CreatedAt: t0, UpdatedAt: t0, Payload: []byte(`{"type":"text","message":"hi"}`), Queue: priority,
	}
}

func held(tb testing.TB, res []store.CreateResult) []bool {
	tb.Helper()
	out := make([]bool, len(res))
	for i, r := range res {
		if r.Err != nil {
			tb.Fatal(r.Err)
		}
		out[i] = r.Held
	}
	return out
}

// Only the first message of a conversation gets its task; the others wait
// for their turn, whatever their batch. Another priority is another line,
// an unordered message none, and a repeated idempotency key joins no line
// twice.
func TestOnlyTheFirstOfAConversationGoesTheOthersWaitTheirTurn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	st := store.New(rdb, store.Config{})
	unordered := ordered("u1", "+447700900001", "transactional", "")
	unordered.Ordered = false
	res, err := st.Create(ctx, []*store.Record{
		ordered("a1", "447700900001", "transactional", "k1"),
		ordered("a2", "+447700900001", "transactional", ""),
		ordered("b1", "447700900001", "bulk", ""),
		unordered,
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := held(t, res), []bool{false, true, false, false}; !equal(got, want) {
		t.Fatalf("held %v, want %v", got, want)
	}
	res, err = st.Create(ctx, []*store.Record{ordered("a3", "447700900001", "transactional", ""), ordered("a1", "447700900001", "transactional", "k1")})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := held(t, res), []bool{true, false}; !equal(got, want) || res[1].Created {
		t.Fatalf("held %v created %v, want %v and the first record again", got, res[1].Created, want)
	}
	if got := lineOf(t, rdb, "447700900001", "transactional"); strings.Join(got, " ") != "a1 a2 a3" {
		t.Errorf("the line holds %v, want [a1 a2 a3] (a replay pushes nothing)", got)
	}
	a2, err := st.Get(ctx, "a2")
	if err != nil {
		t.Fatal(err)
	}
	if a2.Waiting == nil || a2.Waiting.Reason != store.WaitConversationOrder || a2.Waiting.Until != nil || !a2.Ordered {
		t.Errorf("a2 waits %+v (ordered %v), want conversation_order without until", a2.Waiting, a2.Ordered)
	}
	if page, err := st.ListMessages(ctx, store.MessageFilter{Waiting: store.WaitConversationOrder}, "", 10); err != nil || len(page.Records) != 2 {
		t.Errorf("waiting for conversation_order: %+v %v, want a2 and a3", page, err)
	}

	// a1 sent: a2 is next, and is given its turn once.
	if _, o, err := st.Begin(ctx, "a1", t0, store.Owner{Task: "a1"}); err != nil || o != store.Changed {
		t.Fatalf("begin: %v %v", o, err)
	}
	if _, err := st.Submit(ctx, "a1", "pid-a1", t0); err != nil {
		t.Fatal(err)
	}
	a1, _ := st.Get(ctx, "a1")
	next, err := st.Release(ctx, a1)
	if err != nil || next == nil || next.ID != "a2" {
		t.Fatalf("release of a1: %+v %v, want a2", next, err)
	}
	claim := store.Waiting{Reason: store.WaitPairRate, Since: time.Now()}
	task, err := st.Turn(ctx, next, claim, time.Now())
	if err != nil || task == "" {
		t.Fatalf("turn of a2: %q %v", task, err)
	}
	again, _ := st.Get(ctx, "a2")
	if task, err := st.Turn(ctx, again, claim, time.Now()); err != nil || task != "" {
		t.Errorf("a second turn of a2: %q %v, want none", task, err)
	}
	if first, _, err := st.First(ctx, ordered("a3", "447700900001", "transactional", "")); err != nil || first {
		t.Errorf("a3 first: %v %v, want behind a2", first, err)
	}
}

// A canceled first message lets the next go through the due index; a line
// entry whose record was never written, or that ended, is skipped.
func TestCanceledOrMissingFirstMessagesLetTheNextGo(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	st := store.New(rdb, store.Config{})
	const line = "chatq:line:{default:447700900002}:transactional"
	// A producer died between its push and its record.
	rdb.RPush(ctx, line, "gone")
	res, err := st.Create(ctx, []*store.Record{
		ordered("c1", "447700900002", "transactional", ""),
		ordered("c2", "447700900002", "transactional", ""),
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := held(t, res), []bool{true, true}; !equal(got, want) {
		t.Fatalf("held %v, want %v", got, want)
	}
	c1, _ := st.Get(ctx, "c1")
	if first, _, err := st.First(ctx, c1); err != nil || !first {
		t.Errorf("c1 behind an entry without a record: first %v %v, want first", first, err)
	}
	if _, err := st.Cancel(ctx, "c1", t0); err != nil {
		t.Fatal(err)
	}
	if _, err := rdb.ZScore(ctx, "chatq:due", "c2").Result(); err != nil {
		t.Fatal(err)
	}
	due, err := st.Due(ctx, time.Now().Add(time.Second), 10)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range due {
		found = found || e.ID == "c2"
	}
	if !found {
		t.Errorf("c2 not due after c1 was canceled: %+v", due)
	}
	if ids := rdb.LRange(ctx, line, 0, -1).Val(); len(ids) != 1 || ids[0] != "c2" {
		t.Errorf("line %v, want [c2]", ids)
	}
}

// lineOf returns the ids in a conversation's line, first first: its head,
// then the list behind it.
func lineOf(t *testing.T, rdb *redis.Client, dest, priority string) []string {
	t.Helper()
	ctx := context.Background()
	tag := "{default:" + dest + "}:" + priority
	var ids []string
	if h, err := rdb.Get(ctx, "chatq:lh:"+tag).Result(); err == nil {
		ids = append(ids, strings.TrimSuffix(h, "+"))
	}
	return append(ids, rdb.LRange(ctx, "chatq:line:"+tag, 0, -1).Val()...)
}

// A conversation of one message at a time keeps only its head, a string:
// no list. Behind a head that left, the list's first is first, and a new
// message joins behind it, never ahead.
func TestALineOfOneMessageIsItsHeadAlone(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redistest.Start(t).Client(t)
	st := store.New(rdb, store.Config{})
	const dest = "447700900003"
	key, head := "chatq:line:{default:"+dest+"}:transactional", "chatq:lh:{default:"+dest+"}:transactional"
	create := func(ids ...string) []bool {
		t.Helper()
		recs := make([]*store.Record, len(ids))
		for i, id := range ids {
			recs[i] = ordered(id, dest, "transactional", "")
		}
		res, err := st.Create(ctx, recs)
		if err != nil {
			t.Fatal(err)
		}
		return held(t, res)
	}
	send := func(id string) *store.Record {
		t.Helper()
		if _, o, err := st.Begin(ctx, id, t0, store.Owner{Task: id}); err != nil || o != store.Changed {
			t.Fatalf("begin %s: %v %v", id, o, err)
		}
		rec, _ := st.Get(ctx, id)
		next, err := st.Accept(ctx, rec, "pid-"+id, t0)
		if err != nil {
			t.Fatalf("accept %s: %v", id, err)
		}
		return next
	}

	if h := create("s1"); h[0] {
		t.Fatal("the first message of a conversation waits")
	}
	if typ := rdb.Type(ctx, head).Val(); typ != "string" || rdb.Exists(ctx, key).Val() != 0 {
		t.Errorf("a line of one message: head %s, list exists %d; want a string alone", typ, rdb.Exists(ctx, key).Val())
	}
	if ttl, rec := rdb.PTTL(ctx, head).Val(), rdb.PTTL(ctx, "chatq:m:{s1}").Val(); ttl < rec-time.Minute || ttl > rec+time.Minute {
		t.Errorf("the head expires in %s, want the record's life (%s)", ttl, rec)
	}
	if next := send("s1"); next != nil {
		t.Errorf("after the only message: next %s", next.ID)
	}
	if n := rdb.Exists(ctx, key, head).Val(); n != 0 {
		t.Errorf("an empty line keeps %d keys", n)
	}

	if h := create("s2", "s3"); !equal(h, []bool{false, true}) {
		t.Fatalf("held %v, want [false true]", h)
	}
	next := send("s2")
	if next == nil || next.ID != "s3" {
		t.Fatalf("after s2: next %v, want s3", next)
	}
	// s3 is first, from the list; s4 joins behind it.
	if h := create("s4"); !h[0] {
		t.Error("s4 went ahead of s3, whose turn it is")
	}
	if got := lineOf(t, rdb, dest, "transactional"); strings.Join(got, " ") != "s3 s4" {
		t.Errorf("line %v, want [s3 s4]", got)
	}
	if first, _, err := st.First(ctx, next); err != nil || !first {
		t.Errorf("s3 first: %v %v", first, err)
	}

	// A message canceled from behind the head leaves the head as it was.
	const other = "447700900004"
	ot := "{default:" + other + "}:transactional"
	var recs []*store.Record
	for _, id := range []string{"t1", "t2", "t3"} {
		recs = append(recs, ordered(id, other, "transactional", ""))
	}
	if _, err := st.Create(ctx, recs); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Cancel(ctx, "t2", t0); err != nil {
		t.Fatal(err)
	}
	if got := lineOf(t, rdb, other, "transactional"); strings.Join(got, " ") != "t1 t3" {
		t.Errorf("line after t2's cancel %v, want [t1 t3]", got)
	}
	if ttl := rdb.PTTL(ctx, "chatq:lh:"+ot).Val(); ttl < time.Hour {
		t.Errorf("the head put back expires in %s", ttl)
	}
	if next := send("t1"); next == nil || next.ID != "t3" {
		t.Errorf("after t1: next %v, want t3", next)
	}
}

func equal(a, b []bool) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
