"""Runs SQLAlchemy's inspector (what schema browsers and migration tools call) through
Gatehouse for test/e2e's production-tools test, with Debian's python3-sqlalchemy and
psycopg2. The connection comes from the PG* environment variables (libpq reads them);
META_TABLE names a table with a primary key and an index, META_FK_TABLE one with a foreign
key. Prints one "call=result" line per call, then "masked=<email of the first row>"; an
error is printed as "call=ERROR <sqlstate> <message>"."""

import os

import sqlalchemy
from sqlalchemy import inspect, text


def main():
    table, fk = os.environ["META_TABLE"], os.environ["META_FK_TABLE"]
    # An empty URL: psycopg2 (libpq) takes host, port, user, password and TLS from PG*.
    engine = sqlalchemy.create_engine("postgresql+psycopg2://", future=True, connect_args={"application_name": "gatehouse-e2e-sqlalchemy"})
    with engine.connect() as conn:
        insp = inspect(conn)
        calls = [
            ("get_table_names", lambda: sorted(insp.get_table_names())),
            ("get_columns", lambda: [c["name"] for c in insp.get_columns(table)]),
            ("get_pk_constraint", lambda: insp.get_pk_constraint(table)["constrained_columns"]),
            ("get_foreign_keys", lambda: [k["referred_table"] for k in insp.get_foreign_keys(fk)]),
            ("get_indexes", lambda: sorted(i["name"] for i in insp.get_indexes(table))),
        ]
        for name, call in calls:
            try:
                print(f"{name}={','.join(call())}", flush=True)
            except sqlalchemy.exc.DBAPIError as e:
                print(f"{name}=ERROR {getattr(e.orig, 'pgcode', '')} {str(e.orig).splitlines()[0]}", flush=True)
                conn.rollback()
        try:
            row = conn.execute(text(f"SELECT email FROM {table} ORDER BY id LIMIT 1")).one()
            print(f"masked={row[0]}", flush=True)
        except sqlalchemy.exc.DBAPIError as e:
            print(f"masked=ERROR {getattr(e.orig, 'pgcode', '')} {str(e.orig).splitlines()[0]}", flush=True)


if __name__ == "__main__":
    main()
