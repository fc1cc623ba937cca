"""The application's models: plans, users, the notes they write and the tags on them."""

from __future__ import annotations

from typing import List

from sqlalchemy import Column, ForeignKey, String, Table
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    """Declarative base of the application."""


note_tags = Table(
    "note_tags",
    Base.metadata,
    Column("note_id", ForeignKey("notes.id", ondelete="CASCADE"), primary_key=True),
    Column("tag_id", ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True),
)


class Plan(Base):
    """What a user pays for; the plans are seed data written by a migration."""

    __tablename__ = "plans"
    code: Mapped[str] = mapped_column(String(20), primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    max_notes: Mapped[int]


class User(Base):
    """Someone who writes notes."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200), unique=True)
    plan_code: Mapped[str] = mapped_column(ForeignKey("plans.code"), default="free")
    plan: Mapped[Plan] = relationship()
    notes: Mapped[List[Note]] = relationship(back_populates="author", cascade="all, delete-orphan")


class Note(Base):
    """A short text a user wrote."""

    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    text: Mapped[str] = mapped_column(String(500))
    author: Mapped[User] = relationship(back_populates="notes")
    tags: Mapped[List[Tag]] = relationship(secondary=note_tags, back_populates="notes")


class Tag(Base):
    """A label on notes; names are unique and lower-case."""

    __tablename__ = "tags"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)
    notes: Mapped[List[Note]] = relationship(secondary=note_tags, back_populates="tags")
