"""The async half of the app: an AsyncEngine made at import time."""

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from examples.legacy_shop.db import Item

engine = create_async_engine("postgresql+asyncpg://shop:s3cret@shop-db.invalid:6543/shop_dev")
Session = async_sessionmaker(engine, expire_on_commit=False)


async def add_item(name):
    async with Session() as session:
        session.add(Item(name=name))
        await session.commit()


async def count_items():
    async with engine.connect() as connection:
        return (await connection.execute(select(func.count()).select_from(Item))).scalar()


async def current_database():
    async with engine.connect() as connection:
        return (await connection.exec_driver_sql("select current_database()")).scalar()
