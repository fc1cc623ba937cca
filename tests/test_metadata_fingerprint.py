"""MetadataMigrator's fingerprint covers everything create_all emits: a change to any of it builds a new template.

Before, only the tables' CREATE statements, indexes and enums were hashed: two branches that differ
only in a trigger (DDL attached with an event) shared one template, and branch B ran on A's trigger.
"""

import unittest

from sqlalchemy import (
    DDL,
    CheckConstraint,
    Column,
    Computed,
    Index,
    Integer,
    MetaData,
    Sequence,
    String,
    Table,
    event,
    insert,
    select,
    text,
)

from elefast import DatabaseServer, MetadataMigrator
from elefast._schema.fingerprints import identity
from tests import support

TRIGGER = """
CREATE FUNCTION label_row() RETURNS trigger AS $$
BEGIN NEW.label := '{branch}:' || NEW.label; RETURN NEW; END $$ LANGUAGE plpgsql;
CREATE TRIGGER label_row BEFORE INSERT ON items FOR EACH ROW EXECUTE FUNCTION label_row();
"""


def schema(**change):
    """A small schema; ``change`` alters one of the things create_all emits."""
    metadata = MetaData()
    items = Table(
        "items", metadata,
        Column("id", Integer, primary_key=True),
        Column("label", String, server_default=change.get("default", "x"), comment=change.get("column_comment")),
        Column("double", Integer, Computed(change.get("computed", "id * 2"), persisted=True)),
        CheckConstraint("id > 0", name=change.get("check_name", "positive_id")),
        comment=change.get("table_comment"),
    )
    Index(change.get("index_name", "items_label"), items.c.label)
    if "sequence" in change:
        Sequence(change["sequence"], metadata=metadata)
    if "trigger" in change:
        event.listen(items, "after_create", DDL(TRIGGER.format(branch=change["trigger"])))
    if "listener" in change:
        statement = change["listener"]

        def create_view(target, connection, **kw):
            connection.execute(text(statement))

        event.listen(metadata, "after_create", create_view)
    return metadata


def fingerprint(metadata):
    found, why = identity(MetadataMigrator(metadata))
    assert found is not None, why
    return found


class FingerprintTests(unittest.TestCase):
    def test_the_same_schema_gives_the_same_fingerprint(self):
        self.assertEqual(fingerprint(schema()), fingerprint(schema()))
        self.assertEqual(fingerprint(schema(trigger="A")), fingerprint(schema(trigger="A")))

    def test_the_same_schema_names_the_same_template_in_every_process(self):
        """create_all sends a table's indexes in a set's order, which string hashing changes per process:
        the fingerprint must not (it did: every process built its own template)."""
        code = (
            "import sqlalchemy as sa\n"
            "from elefast import MetadataMigrator\n"
            "from elefast._schema.fingerprints import identity\n"
            "m = sa.MetaData()\n"
            "sa.Table('t', m, sa.Column('id', sa.Integer, primary_key=True), sa.Column('a', sa.Integer, index=True),\n"
            "         sa.Column('b', sa.Integer, index=True), sa.Column('c', sa.String, index=True),\n"
            "         sa.Index('ix_t_ab', 'a', 'b'), sa.Index('ux_t_bc', 'b', 'c', unique=True))\n"
            "print(identity(MetadataMigrator(m))[0])\n"
        )
        seen = {support.run_python(code, env={"PYTHONHASHSEED": str(seed)}).stdout.strip() for seed in range(1, 7)}
        self.assertEqual(len(seen), 1, seen)
        self.assertNotIn("", seen)

    def test_each_kind_of_change_gives_a_new_fingerprint(self):
        base = fingerprint(schema())
        changes = {
            "a trigger attached with an event": dict(trigger="A"),
            "a listener function's statement": dict(listener="CREATE VIEW v AS SELECT 1"),
            "a table comment": dict(table_comment="the items"),
            "a column comment": dict(column_comment="what it is"),
            "a standalone sequence": dict(sequence="ticket_numbers"),
            "a server default": dict(default="y"),
            "a computed column": dict(computed="id * 3"),
            "a constraint name": dict(check_name="id_is_positive"),
            "an index name": dict(index_name="items_by_label"),
        }
        seen = {base}
        for kind, change in changes.items():
            with self.subTest(kind):
                found = fingerprint(schema(**change))
                self.assertNotIn(found, seen)
                seen.add(found)
        self.assertNotEqual(fingerprint(schema(trigger="A")), fingerprint(schema(trigger="B")))
        self.assertNotEqual(fingerprint(schema(listener="CREATE VIEW v AS SELECT 1")),
                            fingerprint(schema(listener="CREATE VIEW v AS SELECT 2")))

    def test_a_seed_rows_values_are_in_the_fingerprint(self):
        """A listener seeding rows: the same values give the same fingerprint, another value a new one,
        whether the values are in the statement (``.values``, ``bindparams``) or passed with it."""
        seeds = {
            "insert().values()": lambda roles, name: insert(roles).values(name=name),
            "text() with bindparams": lambda roles, name: text("INSERT INTO roles (name) VALUES (:name)")
            .bindparams(name=name),
        }

        def seeded(make, name, passed=False):
            metadata = MetaData()
            roles = Table("roles", metadata, Column("id", Integer, primary_key=True), Column("name", String))

            def seed(target, connection, **kw):
                if passed:
                    connection.execute(text("INSERT INTO roles (name) VALUES (:name)"), {"name": name})
                else:
                    connection.execute(make(roles, name))

            event.listen(roles, "after_create", seed)
            return fingerprint(metadata)

        for kind, make in seeds.items():
            with self.subTest(kind):
                self.assertEqual(seeded(make, "admin"), seeded(make, "admin"))
                self.assertNotEqual(seeded(make, "admin"), seeded(make, "auditor"))
        with self.subTest("parameters passed to execute()"):
            self.assertEqual(seeded(None, "admin", passed=True), seeded(None, "admin", passed=True))
            self.assertNotEqual(seeded(None, "admin", passed=True), seeded(None, "auditor", passed=True))

    def test_a_listener_that_needs_a_database_makes_the_template_this_process_own(self):
        metadata = schema()

        def reads(target, connection, **kw):
            connection.execute(text("SELECT 1")).scalar()  # a mock connection has no result

        event.listen(metadata, "after_create", reads)
        found, why = identity(MetadataMigrator(metadata))
        self.assertIsNone(found)
        self.assertIn("without a database", why)


class BranchesTests(unittest.TestCase):
    """Two branches of a project that differ only in a trigger, run one after the other."""

    def setUp(self):
        self.prefix = support.unique_prefix("br")
        self.addCleanup(support.drop_templates, self.prefix)

    def labelled(self, branch):
        metadata = schema(trigger=branch)
        server = DatabaseServer(support.server_url(), schema=MetadataMigrator(metadata))
        try:
            with server.create_database(prefix=self.prefix) as database, database.engine.begin() as connection:
                items = metadata.tables["items"]
                connection.execute(insert(items).values(id=1, label="x"))
                return connection.execute(select(items.c.label)).scalar()
        finally:
            server.close()

    def test_each_branch_gets_its_own_trigger(self):
        self.assertEqual(self.labelled("A"), "A:x")
        self.assertEqual(self.labelled("B"), "B:x")  # before: B reused A's template, and got 'A:x'
        self.assertEqual(self.labelled("A"), "A:x")  # and A's is still there, reused


if __name__ == "__main__":
    unittest.main()
