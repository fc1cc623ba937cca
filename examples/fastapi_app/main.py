"""The app: create and list heroes."""

from typing import Annotated, List, Optional

from fastapi import Depends, FastAPI, HTTPException
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, select

from examples.fastapi_app.db import get_db


class Hero(SQLModel, table=True):
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True)


app = FastAPI()
Db = Annotated[Session, Depends(get_db)]


@app.post("/heroes", status_code=201)
def create_hero(hero: Hero, db: Db) -> Hero:
    db.add(hero)
    try:
        db.commit()
    except IntegrityError:
        db.rollback()
        raise HTTPException(409, "taken") from None
    db.refresh(hero)
    return hero


@app.get("/heroes")
def list_heroes(db: Db) -> List[str]:
    return sorted(db.exec(select(Hero.name)).all())
