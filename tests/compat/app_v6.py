"""The application's models at revision 0010 (notes instead of description, status instead of completed). Frozen; do not update."""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

REVISION = "0010"  # the revision this application was built against


class Base(SQLModel, registry=registry()):
    pass


class User(Base, table=True):
    __tablename__ = "users"
    id: uuid.UUID = Field(sa_column=sa.Column(pg.UUID(as_uuid=True), primary_key=True))
    email: str = Field(sa_column=sa.Column(sa.Text, nullable=False, unique=True))
    name: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    email_verified: bool = Field(default=False, sa_column=sa.Column(sa.Boolean, nullable=False))


class Task(Base, table=True):
    __tablename__ = "tasks"
    id: uuid.UUID = Field(sa_column=sa.Column(pg.UUID(as_uuid=True), primary_key=True))
    user_id: uuid.UUID = Field(
        sa_column=sa.Column(pg.UUID(as_uuid=True), sa.ForeignKey("users.id"), nullable=False)
    )
    legacy_key: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    title: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    notes: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    status: str = Field(default="todo", sa_column=sa.Column(sa.Text, nullable=False))
    tags: list[str] = Field(default_factory=list, sa_column=sa.Column(pg.ARRAY(sa.Text), nullable=False))
    priority: str = Field(default="medium", sa_column=sa.Column(sa.Text, nullable=False))
    created_at: datetime | None = Field(
        default=None, sa_column=sa.Column(sa.DateTime(timezone=True), server_default=sa.text("now()"))
    )
    updated_at: datetime | None = Field(
        default=None, sa_column=sa.Column(sa.DateTime(timezone=True), server_default=sa.text("now()"))
    )
