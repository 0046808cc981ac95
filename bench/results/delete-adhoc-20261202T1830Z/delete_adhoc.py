"""Ad hoc (not part of the bench): p50 of a one-key DELETE by primary key under symmetric60,
from the leaseholder's region and from another region, single closed-loop client."""
import statistics, tempfile, time, shutil, json, sys
import raftstore
from raftstore.localcluster import Cluster
from bench import sql_bench

N = int(sys.argv[1]) if len(sys.argv) > 1 else 150
root = tempfile.mkdtemp(prefix="raftstore-del-")
out = {}
try:
    with Cluster(root, size=3, extra_args=["--latency-matrix", "symmetric60"]) as cluster:
        cluster.wait_leader(60)
        conn0 = raftstore.connect(cluster.nodes[0].sql_addr, timeout_s=30)
        sql_bench.wait_sql(conn0, 60)
        sql_bench.execute_retrying(conn0, "CREATE TABLE IF NOT EXISTS bench_kv (k INT PRIMARY KEY, v TEXT)")
        pl = sql_bench.read_placement(conn0, "bench_kv")
        print("leaseholder", pl.leaseholder, pl.leaseholder_region, "pids", [n.pid for n in cluster.nodes], flush=True)
        home = next(n for n in cluster.nodes if n.region == pl.leaseholder_region)
        away = next(n for n in cluster.nodes if n.region != pl.leaseholder_region)
        for label, node, base in (("leaseholder", home, 1_000_000), ("remote", away, 2_000_000)):
            conn = raftstore.connect(node.sql_addr, timeout_s=30)
            keys = list(range(base, base + N + 5))
            for i in range(0, len(keys), 50):
                chunk = keys[i:i + 50]
                vals = ", ".join("($%d, $%d)" % (2 * j + 1, 2 * j + 2) for j in range(len(chunk)))
                params = []
                for k in chunk:
                    params += [k, "x" * 100]
                conn.cursor().execute("INSERT INTO bench_kv (k, v) VALUES %s" % vals, params)
            lat = []
            for k in keys:
                t = time.perf_counter()
                cur = conn.cursor()
                cur.execute("DELETE FROM bench_kv WHERE k = $1", [k])
                lat.append((time.perf_counter() - t) * 1000)
            lat = lat[5:]      # warm-up
            lat.sort()
            out[label] = {"region": node.region, "n": len(lat), "p50_ms": statistics.median(lat),
                          "p99_ms": lat[int(0.99 * (len(lat) - 1))], "bound_ms": 60 if label == "leaseholder" else 120}
            print(label, out[label], flush=True)
            conn.close()
        conn0.close()
finally:
    shutil.rmtree(root, ignore_errors=True)
print(json.dumps(out))
