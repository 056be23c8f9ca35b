// Package scaleout holds chatq's tests beyond one Redis: the whole flow on
// a three-master Redis Cluster with the bulk queue sharded over the
// masters, the same flow through a Sentinel failover, and the benchmark of
// send throughput on one Redis against three masters (README, Scaling out).
//
// The package holds tests only. They run the real chatq binary (built from
// ./cmd/chatq) as the API and as two worker processes, with the
// ChatArchitect sandbox in the test process, on private redis-server
// processes that internal/redistest starts. Without redis-server (and
// redis-cli, which creates the cluster) they skip themselves; with CI=true
// they fail instead. Run the benchmark with
//
//	make bench-scaleout
package scaleout
