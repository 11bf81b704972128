"""Helpers for the setup and substitutions of the docs' command blocks (tests/test_docs_commands.py).

    python tests/docs_helper.py run|first-run|sweep|first-sweep [--db PATH]
        the newest (or oldest) run id or sweep id of a leaderboard ($HARNESS_DB, else leaderboard.db):
        stand-ins for RUN_ID and SWEEP_ID
    python tests/docs_helper.py unrecorded-rundir [--db PATH]
        run `harness run $TINY` while another connection holds the database's write lock (the busy
        timeout cut to 0.3 s), so the run keeps its records in its folder, and print that folder: the
        stand-in for the RUN_DIR of `harness leaderboard import RUN_DIR`
    python tests/docs_helper.py block PAGE LANGUAGE
        the first ```LANGUAGE block of PAGE, e.g. the example plan of docs/experiments/plans.md
"""

import argparse
import glob
import os
import re
import shlex
import sqlite3
import subprocess
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python tests/docs_helper.py")
    parser.add_argument("what", choices=("run", "first-run", "sweep", "first-sweep", "unrecorded-rundir", "block"))
    parser.add_argument("args", nargs="*")
    parser.add_argument("--db", default=os.environ.get("HARNESS_DB") or "leaderboard.db")
    args = parser.parse_args(argv)
    if args.what == "block":
        page, language = args.args
        with open(page, encoding="utf-8") as file:
            found = re.search(rf"^```{re.escape(language)}\n(.*?)^```", file.read(), flags=re.S | re.M)
        if found is None:
            print(f"no ```{language} block in {page}", file=sys.stderr)
            return 1
        sys.stdout.write(found.group(1))
        return 0
    if args.what == "unrecorded-rundir":
        return unrecorded_rundir(args.db)
    with sqlite3.connect(args.db) as conn:
        if args.what in ("sweep", "first-sweep"):
            order = "desc" if args.what == "sweep" else "asc"
            row = conn.execute("select sweep_id from runs where sweep_id is not null "
                               f"order by rowid {order} limit 1").fetchone()
        else:
            order = "asc" if args.what == "first-run" else "desc"
            row = conn.execute(f"select id from runs order by rowid {order} limit 1").fetchone()
    if row is None:
        print(f"no {args.what} in {args.db}", file=sys.stderr)
        return 1
    print(row[0])
    return 0


def unrecorded_rundir(db: str) -> int:
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock for the whole run
    try:
        env = dict(os.environ, HARNESS_DB_TIMEOUT="0.3")
        subprocess.run(["harness", "run", *shlex.split(os.environ.get("TINY", "")), "--db", db], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    journals = sorted(glob.glob("runs/*/unrecorded.jsonl"), key=os.path.getmtime)
    if not journals:
        print("the run left no runs/*/unrecorded.jsonl", file=sys.stderr)
        return 1
    print(os.path.dirname(journals[-1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
