"""Rows as the ORM loads them from a statement written once, and updating a row read earlier
without bringing back one deleted meanwhile."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from django.db import DatabaseError, connection, models
from pgvector.django import VectorField

from config.common.vectors import binding_cursor, vector_binary

_M = TypeVar("_M", bound=models.Model)


@dataclass(frozen=True)
class _Shape:
    columns: str  # the model's whole row, as a SELECT lists it
    count: int
    converters: tuple[tuple[int, models.Field, Callable[..., Any]], ...]
    names: list[str] | None  # the attnames loaded, when some are left out (deferred)


_SHAPES: dict[tuple[type, tuple[str, ...]], _Shape] = {}


def _shape(model: type[models.Model], without: tuple[str, ...] = ()) -> _Shape:
    shape = _SHAPES.get((model, without))
    if shape is None:
        fields = [f for f in model._meta.concrete_fields if f.attname not in without]
        quote = connection.ops.quote_name
        table = quote(model._meta.db_table)
        shape = _SHAPES[(model, without)] = _Shape(
            columns=", ".join(f"{table}.{quote(field.column)}" for field in fields),
            count=len(fields),
            converters=tuple(  # what Field.get_db_converters gives the ORM's compiler
                (i, field, field.from_db_value)
                for i, field in enumerate(fields)
                if hasattr(field, "from_db_value")
            ),
            names=[field.attname for field in fields] if without else None,
        )
    return shape


def columns(model: type[models.Model], *, without: tuple[str, ...] = ()) -> str:
    """`model`'s whole row as a SELECT lists it (table-qualified), for `instance`; `without`:
    fields left out (attnames), deferred on the instances as `.defer()` leaves them.

    For the statements every remembered turn sends: a queryset is built and compiled again on
    each call (~20,000 interpreter opcodes a `filter(...).first()`, bench_relay_cpu.py
    --remembered's opcode profile), where the SQL text written once costs the driver's call."""
    return _shape(model, without).columns


def instance(model: type[_M], row: Sequence[Any], *, without: tuple[str, ...] = ()) -> _M:
    """The instance `row`'s leading `columns(model, without=without)` values are, as the ORM
    makes it from them (Model.from_db; each field's from_db_value: a JSONField's text parsed).
    Values after those are the caller's."""
    shape = _shape(model, without)
    values = list(row[: shape.count])
    for i, field, convert in shape.converters:
        values[i] = convert(values[i], field, connection)
    return model.from_db(connection.alias, shape.names, values)  # type: ignore[arg-type]


_UPDATES: dict[tuple[type, tuple[str, ...]], str] = {}


def update(obj: models.Model) -> None:
    """`obj`'s row written as `obj.save(force_update=True)` writes it: its loaded fields (the
    deferred ones left as they are), each as save stores it (pre_save: auto_now stamps; its
    get_db_prep_save); DatabaseError, as save's, when the row is gone. The statement is
    written once per model and set of fields, not built and compiled on each call (an
    extraction run's supersede, bench/README.md "Twenty-fifth session")."""
    model = type(obj)
    deferred = obj.get_deferred_fields()
    fields = [
        f
        for f in model._meta.concrete_fields
        if not f.primary_key and not f.generated and f.attname not in deferred
    ]
    key = (model, tuple(f.attname for f in fields))
    sql = _UPDATES.get(key)
    if sql is None:
        quote = connection.ops.quote_name
        sql = _UPDATES[key] = (
            f"UPDATE {quote(model._meta.db_table)}"
            f" SET {', '.join(f'{quote(f.column)} = {_placeholder(f)}' for f in fields)}"
            f" WHERE {quote(model._meta.pk.column)} = %s"
        )
    values = [_value(f, f.pre_save(obj, False)) for f in fields]
    with _cursor(fields) as cursor:
        cursor.execute(sql, [*values, obj.pk])
        if cursor.rowcount != 1:
            raise DatabaseError("Forced update did not affect any rows.")


def lock_if_present(obj: models.Model) -> bool:
    """Lock `obj`'s row until the transaction ends; False when it was deleted since `obj` was
    read (a deletion that finds it gone has nothing left to do)."""
    model = type(obj)
    return bool(model._default_manager.select_for_update().filter(pk=obj.pk).values_list("pk"))


def lock_existing(obj: models.Model) -> None:
    """Lock `obj`'s row until the transaction ends, or raise its model's DoesNotExist when the
    row was deleted since `obj` was read. Call inside the update's transaction, before save():
    Django's save() inserts the row its UPDATE did not find, so an update racing a delete
    brought the deleted row back — a memory its user had deleted, an issuer whose tokens then
    worked again, a collection, a tool (a probe of PATCH beside DELETE, 2026-12-04: 3 to 13
    rounds of 20)."""
    if not lock_if_present(obj):
        model = type(obj)
        missing = model.DoesNotExist  # type: ignore[attr-defined]  # each model's own class
        raise missing(f"{model._meta.verbose_name} '{obj.pk}' was deleted.")


def insert(objs: Sequence[models.Model], *, then: str = "") -> list[tuple]:
    """`objs` (of one model) inserted in one statement, each field's value as Model.save and
    bulk_create store it (its pre_save: auto_now stamps; its get_db_prep_save), and marked
    stored; `then`: SQL after the VALUES (ON CONFLICT …, RETURNING …), whose rows come back.

    For the rows every remembered turn writes: bulk_create builds and compiles its statement
    again on each call (bench/README.md, "Twenty-fourth session": with the turn's other
    statements written once, 27.6M -> 21.2M instructions on its request thread).

    A pgvector field's values are bound in binary (config.common.vectors), not written as text
    PostgreSQL parses: a new memory's insert and a superseded one's update."""
    model = type(objs[0])
    fields = [field for field in model._meta.concrete_fields if not field.generated]
    quote = connection.ops.quote_name
    row = f"({', '.join(_placeholder(field) for field in fields)})"
    values = [_value(field, field.pre_save(obj, True)) for obj in objs for field in fields]
    with _cursor(fields) as cursor:
        cursor.execute(
            f"INSERT INTO {quote(model._meta.db_table)}"
            f" ({', '.join(quote(field.column) for field in fields)})"
            f" VALUES {', '.join([row] * len(objs))}{' ' + then if then else ''}",
            values,
        )
        returned = cursor.fetchall() if then and "RETURNING" in then else []
    for obj in objs:
        obj._state.adding = False
        obj._state.db = connection.alias
    return returned


# A model with a pgvector field (a memory): its rows are written by a cursor that binds on the
# server, each vector as vector_recv reads it, where pgvector's field formatted 384 floats as
# text for PostgreSQL to parse (bench/README.md, "Twenty-fifth session"). The other models'
# rows keep Django's cursor and its client-side binding.


def _placeholder(field: models.Field) -> str:
    return "%b::vector" if isinstance(field, VectorField) else "%s"


def _value(field: models.Field, value: Any) -> Any:
    if isinstance(field, VectorField):
        return vector_binary(value)
    return field.get_db_prep_save(value, connection)


def _cursor(fields: list[models.Field]) -> Any:
    if any(isinstance(field, VectorField) for field in fields):
        return binding_cursor()
    return connection.cursor()
