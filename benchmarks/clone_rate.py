"""The server's own clone rate: ``CREATE DATABASE ... TEMPLATE`` + ``DROP DATABASE`` pairs, by strategy
and number of clients, on the 20-table template of ``workload.py``. The physical limit of any tool that
gives each test a fresh clone: a pool that clones ahead can only gain what parallel clients gain here.

    python benchmarks/clone_rate.py [--url URL] [--pairs 12]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional, TypeVar

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workload import metadata

T = TypeVar("T")


def on_template(url: sa.URL, run: Callable[[sa.Engine, str], T], schema: Optional[sa.MetaData] = None) -> T:
    """Build a template of ``schema`` (default: the 20 tables) next to ``url``, call ``run(admin_engine,
    template)``, drop it."""
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    template = f"bench_rate_tpl_{os.getpid()}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{template}"'))
    engine = sa.create_engine(url.set(database=template), poolclass=sa.NullPool)
    (metadata if schema is None else schema).create_all(engine)
    engine.dispose()
    try:
        return run(admin, template)
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)'))
        admin.dispose()


def pair_ms(admin: sa.Engine, template: str, strategy: Optional[str], clients: int, pairs: int) -> float:
    """Milliseconds per clone + drop pair with ``clients`` clients at once (``strategy`` None: default)."""
    each = max(1, pairs // clients)
    clause = f" STRATEGY {strategy}" if strategy else ""

    def work(client: int) -> None:
        with admin.connect() as connection:
            for number in range(each):
                name = f"bench_rate_{os.getpid()}_{client}_{number}"
                connection.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"{clause}'))
                connection.execute(sa.text(f'DROP DATABASE "{name}"'))

    return run_clients(work, clients) * 1000 / (each * clients)


def run_clients(work: Callable[[int], None], clients: int) -> float:
    """Run ``work(client)`` in ``clients`` threads at once; the seconds it took."""
    threads = [threading.Thread(target=work, args=(client,)) for client in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("ELEFAST_DATABASE_URL",
                                                        "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--pairs", type=int, default=12, help="pairs per measurement (split over the clients)")
    args = parser.parse_args()
    url = sa.make_url(args.url).set(drivername="postgresql+psycopg")

    def table(admin: sa.Engine, template: str) -> None:
        print(f"# clone + drop pairs on {url.render_as_string(hide_password=True)}, 20-table template")
        print()
        print("| strategy | 1 client ms/pair | 2 clients | 3 clients | best gain over 1 client |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for strategy in ("WAL_LOG", "FILE_COPY"):
            found = [pair_ms(admin, template, strategy, count, args.pairs) for count in (1, 2, 3)]
            print(f"| {strategy} | {found[0]:.1f} | {found[1]:.1f} | {found[2]:.1f} | {found[0] / min(found):.2f}x |")

    on_template(url, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
