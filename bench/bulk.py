"""Bulk rows for the database benchmarks, generated inside the database.

``insert_generated`` runs ``INSERT INTO <model's table> SELECT <one SQL expression per
column> FROM <a row number series>`` in batches: PostgreSQL numbers the rows with
``generate_series``, SQLite with a recursive CTE. No row passes through Python, so a
million rows load in about a minute. Every column without an expression gets its field's
default, so the loaders follow schema changes.

In the expressions, ``i`` is the row number (1-based, bigint) and ``r`` a random number in
[0, 1) drawn once per row; names given in ``derived`` are computed once per row from ``i``
and ``r`` in an inner query and can be used like columns. Parameters are pyformat
(``%(name)s``; a literal ``%`` is ``%%``). A list parameter is an array on PostgreSQL and a
JSON array on SQLite: read an element with ``pick``. The other dialect helpers (``uuid``,
``timestamp``, ``decimal``) give the same value on both databases.
"""
from __future__ import annotations

import json
import time

BATCH = 250_000


def _vendor() -> str:
    from django.db import connection

    return connection.vendor


def pick(param: str, index: str, sql_type: str = "bigint") -> str:
    """Element `index` (0-based SQL expression) of the list parameter `param`."""
    if _vendor() == "postgresql":
        return f"(%({param})s::{sql_type}[])[1 + ({index})]"
    return f"json_extract(%({param})s, '$[' || ({index}) || ']')"


def uuid() -> str:
    """A random UUID in the column's storage form."""
    if _vendor() == "postgresql":
        return "gen_random_uuid()"
    return "lower(hex(randomblob(16)))"  # Django keeps a UUIDField as 32 hex digits on SQLite


def timestamp(epoch_micros: str) -> str:
    """The aware UTC datetime `epoch_micros` (an integer SQL expression) microseconds after 1970."""
    if _vendor() == "postgresql":
        return f"(timestamptz '1970-01-01 00:00:00+00' + ({epoch_micros}) * interval '1 microsecond')"
    # Django's SQLite form, UTC text; millisecond precision (SQLite's %f).
    return f"strftime('%%Y-%%m-%%d %%H:%%M:%%f', ({epoch_micros}) / 1000000.0, 'unixepoch')"


def decimal(integer: str, places: int) -> str:
    """integer × 10^-places as a decimal column's value: exact numeric on PostgreSQL; on
    SQLite the nearest REAL, which is what Django stores there too."""
    if _vendor() == "postgresql":
        return f"(({integer})::numeric / 1{'0' * places})"
    return f"(({integer}) / 1{'0' * places}.0)"


def insert_generated(model, expressions: dict[str, str], params: dict, *, total: int, what: str, say,
                     derived: dict[str, str] | None = None, seed: float | None = None, batch: int = BATCH) -> None:
    """INSERT `total` rows of `model`, `batch` rows per statement and transaction.

    `seed` (PostgreSQL only) makes `r` repeatable: ``setseed(seed * first row / total)``
    before each batch. SQLite's random() cannot be seeded."""
    from django.db import connection, transaction
    from django.db.models import AutoField, BigAutoField

    postgres = connection.vendor == "postgresql"
    columns, values, defaults = [], [], {}
    for field in model._meta.concrete_fields:
        if isinstance(field, (AutoField, BigAutoField)):
            continue
        columns.append(connection.ops.quote_name(field.column))
        if field.column in expressions:
            values.append(expressions[field.column])
        else:
            name = f"default_{field.column}"
            defaults[name] = field.get_db_prep_save(field.get_default(), connection)
            values.append(f"%({name})s")
    unknown = set(expressions) - {f.column for f in model._meta.concrete_fields}
    if unknown:
        raise RuntimeError(f"{model.__name__} has no column(s) {sorted(unknown)}")
    if not postgres:
        params = {name: json.dumps(value) if isinstance(value, (list, tuple)) else value
                  for name, value in params.items()}
    extra = "".join(f", {sql} AS {name}" for name, sql in (derived or {}).items())
    table = f"INSERT INTO {connection.ops.quote_name(model._meta.db_table)} ({', '.join(columns)}) "
    select = f"SELECT {', '.join(values)} FROM "
    if postgres:
        sql = (table + select + "(SELECT g.*" + extra + " FROM (SELECT i, random() AS r FROM "
               "generate_series(%(first)s::bigint, %(last)s::bigint) AS i) AS g) AS g")
    else:
        # The random draw lives in the recursive CTE, so it is made once per row.
        unit = "((random() & 9007199254740991) / 9007199254740992.0)"
        sql = (f"WITH RECURSIVE s(i, r) AS (SELECT %(first)s, {unit} UNION ALL "
               f"SELECT i + 1, {unit} FROM s WHERE i < %(last)s), g AS (SELECT s.*{extra} FROM s) "
               + table + select + "g")
    started = time.monotonic()
    for first in range(1, total + 1, batch):
        last = min(first + batch - 1, total)
        with transaction.atomic(), connection.cursor() as cursor:
            if postgres and seed is not None:
                cursor.execute("SELECT setseed(%s)", [seed * first / total])
            cursor.execute(sql, {**params, **defaults, "first": first, "last": last, "total": total})
        say(f"{what}: {last:,} of {total:,} ({time.monotonic() - started:.0f} s)")
