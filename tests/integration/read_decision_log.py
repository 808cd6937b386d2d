"""Reads a Parquet decision log the way the data team does, and checks it
against the JSON-lines log of the same requests.

    read_decision_log.py PARQUET_DIR JSONL_DIR QUERIES_JSON

* pyarrow/pandas and DuckDB each read every `decisions-*.parquet` row; each
  row's decisions (score, eligible, reasons, propensity) must equal those of
  the JSON line of the same request (same request id, same shadow flag)
  exactly, float for float; candidate ids and relevance must equal the
  logged request's (relevance within one unit in the last place: the server
  parses request bodies with serde_json's fast float parser, Python with a
  correctly rounded one).
* Each query of QUERIES_JSON (a JSON list of SQL texts: the README's) runs in
  DuckDB with PARQUET_DIR as the working directory.

Prints one JSON object: counts of rows read and matched per reader, and each
query's result rows. Exits 1 with a message on the first mismatch.
"""

import glob
import json
import math
import os
import sys

import duckdb
import pandas as pd
import pyarrow.parquet as pq


def fail(message):
    print(message, file=sys.stderr)
    sys.exit(1)


def load_jsonl(directory):
    records = {}
    for path in sorted(glob.glob(os.path.join(directory, "decisions-*.jsonl"))):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    records[(r["request_id"], r["shadow"])] = r
    return records


def same_floats(a, b):
    return len(a) == len(b) and all(
        x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b)
    )


def check(where, key, row, record):
    d = record["decisions"]
    if not same_floats(list(row["score"]), d["scores"]):
        fail(f"{where} {key}: scores differ")
    if not same_floats(list(row["propensity"]), d["propensity"]):
        fail(f"{where} {key}: propensities differ")
    if [bool(e) for e in row["eligible"]] != d["eligible"]:
        fail(f"{where} {key}: eligibility differs")
    if [int(b) for b in row["reasons"]] != d["reasons"]:
        fail(f"{where} {key}: reasons differ")
    if [bool(p) for p in row["promoted"]] != [(b & 2) != 0 for b in d["reasons"]]:
        fail(f"{where} {key}: promoted is not the reasons' promoted bit")
    request = record["request"]
    if list(row["candidate_id"]) != [c["id"] for c in request["candidates"]]:
        fail(f"{where} {key}: candidate ids differ")
    for x, c in zip(row["relevance"], request["candidates"]):
        if abs(x - c["relevance"]) > math.ulp(c["relevance"]):
            fail(f"{where} {key}: relevance {x} is not {c['relevance']}")
    for column, field in [("policy", "name"), ("digest", "digest")]:
        if row[column] != record["policy"][field]:
            fail(f"{where} {key}: {column} differs")
    if row["settings_sha256"] != record["settings_sha256"]:
        fail(f"{where} {key}: settings hash differs")


def main():
    parquet_dir, jsonl_dir, queries_path = sys.argv[1:4]
    records = load_jsonl(jsonl_dir)
    files = sorted(glob.glob(os.path.join(parquet_dir, "decisions-*.parquet")))
    if not files:
        fail(f"no decisions-*.parquet in {parquet_dir}")
    out = {"jsonl_records": len(records)}

    # pyarrow + pandas: one DataFrame of every file.
    for f in files:
        meta = pq.read_metadata(f).metadata or {}
        if meta.get(b"oasis.decision_log.schema_version") != b"2":
            fail(f"{f}: schema version {meta.get(b'oasis.decision_log.schema_version')}")
    frame = pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)
    matched = 0
    for _, row in frame.iterrows():
        key = (row["request_id"], bool(row["shadow"]))
        if key not in records:
            fail(f"pandas {key}: no JSON line for this request")
        check("pandas", key, row, records[key])
        matched += 1
    out["pandas_rows"] = len(frame)
    out["pandas_matched"] = matched

    # DuckDB over the same files.
    con = duckdb.connect()
    pattern = os.path.join(parquet_dir, "decisions-*.parquet")
    cursor = con.execute(
        "SELECT request_id, shadow, score, propensity, eligible, reasons, promoted, "
        "candidate_id, relevance, policy, digest, settings_sha256 "
        f"FROM read_parquet('{pattern}')"
    )
    names = [d[0] for d in cursor.description]
    matched = 0
    rows = cursor.fetchall()
    for values in rows:
        row = dict(zip(names, values))
        key = (row["request_id"], bool(row["shadow"]))
        if key not in records:
            fail(f"duckdb {key}: no JSON line for this request")
        check("duckdb", key, row, records[key])
        matched += 1
    out["duckdb_rows"] = len(rows)
    out["duckdb_matched"] = matched

    # The README's queries, as written there, from the log directory.
    with open(queries_path, encoding="utf-8") as f:
        queries = json.load(f)
    os.chdir(parquet_dir)
    results = []
    for sql in queries:
        cursor = con.execute(sql)
        results.append(
            {
                "columns": [d[0] for d in cursor.description],
                "rows": [[str(v) if not isinstance(v, (int, float, bool)) else v for v in r]
                         for r in cursor.fetchall()],
            }
        )
    out["queries"] = results
    print(json.dumps(out))


if __name__ == "__main__":
    main()
