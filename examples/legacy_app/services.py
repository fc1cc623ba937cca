"""The service layer: the code under test. It commits, like real application code."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from examples.legacy_app.models import Note, User


def sign_up(session: Session, email: str) -> User:
    """Create a user; emails are unique and stored lower-case."""
    user = User(email=email.strip().lower())
    session.add(user)
    session.commit()
    return user


def write_note(session: Session, user: User, text: str) -> Note:
    """Add a note by ``user``; empty notes are refused."""
    if not text.strip():
        raise ValueError("a note needs text")
    note = Note(author=user, text=text.strip())
    session.add(note)
    session.commit()
    return note


def count_notes(session: Session, email: str) -> int:
    """How many notes the user with ``email`` wrote."""
    query = select(func.count(Note.id)).join(User).where(User.email == email.lower())
    return int(session.execute(query).scalar_one())


async def sign_up_async(session: AsyncSession, email: str) -> User:
    """The async twin of :func:`sign_up`."""
    user = User(email=email.strip().lower())
    session.add(user)
    await session.commit()
    return user
