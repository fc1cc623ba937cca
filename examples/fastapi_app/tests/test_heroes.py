"""The FastAPI app through its TestClient: its import-time engine runs on each test's database."""

import unittest

from fastapi.testclient import TestClient
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session, SQLModel, select

from elefast import MetadataMigrator, PostgresTestCase
from examples.fastapi_app.main import Hero, app


class HeroTests(PostgresTestCase, unittest.TestCase):
    schema = MetadataMigrator(SQLModel.metadata)
    app_engines = ("examples.fastapi_app.db:engine",)
    # self.session as SQLModel's Session (it has .exec); an async class takes the same kind of callable:
    # lambda engine: async_sessionmaker(engine, class_=sqlmodel.ext.asyncio.session.AsyncSession)
    sessionmaker_factory = staticmethod(lambda engine: sessionmaker(engine, class_=Session))

    def setUp(self):
        self.client = TestClient(app)

    def test_create_and_list(self):
        self.assertEqual(self.client.post("/heroes", json={"name": "Deadpond"}).status_code, 201)
        self.assertEqual(self.client.get("/heroes").json(), ["Deadpond"])
        self.assertEqual(self.session.exec(select(Hero.name)).all(), ["Deadpond"])

    def test_each_test_starts_empty(self):
        self.assertEqual(self.client.get("/heroes").json(), [])
        self.assertEqual(self.client.post("/heroes", json={"name": "Deadpond"}).status_code, 201)
        self.assertEqual(self.client.post("/heroes", json={"name": "Deadpond"}).status_code, 409)


class HeroTransactionTests(HeroTests):
    isolation = "transaction"  # the request thread joins the test's transaction

    def test_rows_the_test_wrote_are_served(self):
        self.session.add(Hero(name="Rusty-Man"))
        self.session.commit()
        self.assertEqual(self.client.get("/heroes").json(), ["Rusty-Man"])


if __name__ == "__main__":
    unittest.main()
