"""The application's models: users and the notes they write."""

from __future__ import annotations

from typing import List

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    """Declarative base of the application."""


class User(Base):
    """Someone who writes notes."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200), unique=True)
    notes: Mapped[List[Note]] = relationship(back_populates="author", cascade="all, delete-orphan")


class Note(Base):
    """A short text a user wrote."""

    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    text: Mapped[str] = mapped_column(String(500))
    author: Mapped[User] = relationship(back_populates="notes")
