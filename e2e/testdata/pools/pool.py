"""A PyMySQL connection pool that stays open: it runs each line of stdin
as a query on every one of its connections and prints one line of
results (or ERROR ...) per query. Arguments: host port user password."""
import sys

import pymysql

host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
pool = [pymysql.connect(host=host, port=port, user=user, password=password, database="app", autocommit=True)
        for _ in range(3)]
for i, conn in enumerate(pool):
    with conn.cursor() as cur:
        cur.execute("SET @who := %s", ("py%d" % i,))
print("ready", flush=True)
for line in sys.stdin:
    out = []
    for conn in pool:
        try:
            with conn.cursor() as cur:
                cur.execute(line.strip())
                out.append(str(cur.fetchone()[0]))
        except Exception as e:  # reported to the test, which counts it
            out.append("ERROR " + repr(e).replace("\n", " "))
    print(" | ".join(out), flush=True)
