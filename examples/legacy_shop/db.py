"""The app's database module: one engine and a scoped session, made when it is imported."""

import threading

from sqlalchemy import Column, Integer, String, create_engine, func, select
from sqlalchemy.orm import declarative_base, scoped_session, sessionmaker

DATABASE_URL = "postgresql+psycopg://shop:s3cret@shop-db.invalid:6543/shop_dev"

engine = create_engine(DATABASE_URL, pool_size=3)
Session = scoped_session(sessionmaker(bind=engine))
Base = declarative_base()


class Item(Base):
    __tablename__ = "items"
    id = Column(Integer, primary_key=True)
    name = Column(String(40), unique=True, nullable=False)


def add_item(name):
    """A service: adds an item and commits, on the app's own session."""
    session = Session()
    try:
        session.add(Item(name=name))
        session.commit()
    except Exception:
        session.rollback()
        raise
    finally:
        Session.remove()


def add_item_in_thread(name):
    """The same from a worker thread (as a web server's request thread would)."""
    errors = []

    def work():
        try:
            add_item(name)
        except Exception as error:  # handed back to the caller
            errors.append(error)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(30)
    if errors:
        raise errors[0]


def count_items():
    """A Core read on a connection of the engine."""
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(Item)).scalar()


def rename_in_block(old, new):
    """An ``engine.begin()`` block: committed on success."""
    with engine.begin() as connection:
        connection.execute(Item.__table__.update().where(Item.name == old).values(name=new))


def current_database():
    with engine.connect() as connection:
        return connection.exec_driver_sql("select current_database()").scalar()
