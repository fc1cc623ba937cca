"""The service layer: the code under test. It commits, like real application code."""

from __future__ import annotations

from typing import List

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from examples.legacy_app.models import Note, Plan, Tag, User


class PlanLimitReached(Exception):
    """The user's plan allows no more notes."""


def sign_up(session: Session, email: str, plan: str = "free") -> User:
    """Create a user; emails are unique and stored lower-case."""
    user = User(email=email.strip().lower(), plan_code=plan)
    session.add(user)
    session.commit()
    return user


def find_user(session: Session, email: str) -> User:
    """The user with ``email`` (any case); raises ``NoResultFound`` when there is none."""
    return session.execute(select(User).where(User.email == email.strip().lower())).scalar_one()


def write_note(session: Session, user: User, text: str) -> Note:
    """Add a note by ``user``; empty notes are refused, and so is one beyond the plan's limit."""
    if not text.strip():
        raise ValueError("a note needs text")
    written = session.execute(select(func.count(Note.id)).where(Note.author_id == user.id)).scalar_one()
    if written >= user.plan.max_notes:
        raise PlanLimitReached(f"the {user.plan.name} plan allows {user.plan.max_notes} notes")
    note = Note(author=user, text=text.strip())
    session.add(note)
    session.commit()
    return note


def count_notes(session: Session, email: str) -> int:
    """How many notes the user with ``email`` wrote."""
    query = select(func.count(Note.id)).join(User).where(User.email == email.lower())
    return int(session.execute(query).scalar_one())


def change_plan(session: Session, user: User, plan: str) -> None:
    """Move ``user`` to ``plan`` (a plan code); unknown plans are refused."""
    if session.get(Plan, plan) is None:
        raise ValueError(f"no plan {plan!r}")
    user.plan_code = plan
    session.commit()
    session.refresh(user)


def tag_note(session: Session, note: Note, *names: str) -> None:
    """Put tags on ``note``, creating the tags that do not exist yet (names are lower-cased)."""
    for name in {n.strip().lower() for n in names if n.strip()}:
        tag = session.execute(select(Tag).where(Tag.name == name)).scalar_one_or_none() or Tag(name=name)
        if tag not in note.tags:
            note.tags.append(tag)
    session.commit()


def notes_tagged(session: Session, name: str) -> List[str]:
    """The texts of the notes tagged ``name``, oldest first."""
    query = select(Note.text).join(Note.tags).where(Tag.name == name.lower()).order_by(Note.id)
    return list(session.execute(query).scalars())


def search_notes(session: Session, words: str) -> List[str]:
    """The texts of the notes containing ``words`` (any case), oldest first."""
    query = select(Note.text).where(Note.text.ilike(f"%{words}%")).order_by(Note.id)
    return list(session.execute(query).scalars())


def delete_user(session: Session, user: User) -> None:
    """Remove ``user`` and every note they wrote."""
    session.delete(user)
    session.commit()


async def sign_up_async(session: AsyncSession, email: str, plan: str = "free") -> User:
    """The async twin of :func:`sign_up`."""
    user = User(email=email.strip().lower(), plan_code=plan)
    session.add(user)
    await session.commit()
    return user


async def write_note_async(session: AsyncSession, user: User, text: str) -> Note:
    """The async twin of :func:`write_note`."""
    if not text.strip():
        raise ValueError("a note needs text")
    await session.refresh(user)  # its attributes expired at the last commit; async code must load them
    written = (await session.execute(select(func.count(Note.id)).where(Note.author_id == user.id))).scalar_one()
    plan = await session.get(Plan, user.plan_code)
    assert plan is not None
    if written >= plan.max_notes:
        raise PlanLimitReached(f"the {plan.name} plan allows {plan.max_notes} notes")
    note = Note(author_id=user.id, text=text.strip())
    session.add(note)
    await session.commit()
    return note


async def count_notes_async(session: AsyncSession, email: str) -> int:
    """The async twin of :func:`count_notes`."""
    query = select(func.count(Note.id)).join(User).where(User.email == email.lower())
    return int((await session.execute(query)).scalar_one())
