"""Deleting a workspace's rows in bulk: table by table, each row before the rows it references,
in batches of bounded transactions.

Django's `workspace.delete()` collected every related row first (its cascade loads them to find
theirs): at 50,000 each of messages, memories, memory events and usage records it grew the
deleting process by 63 MB, in one transaction holding its locks throughout. Here each statement
is a `DELETE … WHERE id IN (SELECT id … LIMIT n)` that loads nothing into Python: 3 MB, in about
the same time (9 s; PostgreSQL's own work, bench/bench_deletion.py).

The models are found, not listed: every model with a foreign key to Workspace, and every model
reaching one only through such a model (a many-to-many table, Memory.sources), so a model added
later is deleted with its workspace without a line here (tests/test_workspace_deletion.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from graphlib import TopologicalSorter

from django.apps import apps
from django.db import models, transaction

from accounts.models import Workspace

# Rows per DELETE statement (and per transaction): each batch holds its row locks for a
# fraction of a second, so a turn writing to another workspace's rows never waits long.
BATCH_ROWS = 5000


@dataclass(frozen=True)
class Owned:
    """A model whose rows belong to a workspace, and the lookups from it to the workspace's id
    (`workspace_id`, or `memory__workspace_id` and `message__workspace_id` for a link table)."""

    model: type[models.Model]
    lookups: tuple[str, ...]
    references: frozenset[type[models.Model]]  # the owned models it points at


def _targets(model: type[models.Model]) -> list[tuple[str, type[models.Model]]]:
    """(name, model pointed at) of each of the model's foreign keys."""
    return [
        (f.name, f.related_model)
        for f in model._meta.concrete_fields
        if isinstance(f, models.ForeignKey) and not isinstance(f.related_model, str)
    ]


@cache
def owned_models() -> tuple[Owned, ...]:
    """Every model a workspace owns, each before the models it references (so no batch leaves
    a row pointing at a deleted one; the foreign keys are checked at each batch's commit)."""
    lookups: dict[type[models.Model], tuple[str, ...]] = {}
    for model in apps.get_models(include_auto_created=True):
        direct = [name for name, target in _targets(model) if target is Workspace]
        if direct:
            lookups[model] = tuple(f"{name}_id" for name in direct)
    grew = True
    while grew:  # models that reach a workspace through an owned model, and theirs
        grew = False
        for model in apps.get_models(include_auto_created=True):
            if model in lookups or model is Workspace:
                continue
            through = [
                f"{name}__{lookup}"
                for name, target in _targets(model)
                if target in lookups
                for lookup in lookups[target]
            ]
            if through:
                lookups[model], grew = tuple(through), True
    references = {
        model: frozenset(
            target for _, target in _targets(model) if target in lookups and target is not model
        )
        for model in lookups
    }
    order: TopologicalSorter[type[models.Model]] = TopologicalSorter()
    for model in sorted(references, key=_label):  # one order on every run
        order.add(model)
        for target in sorted(references[model], key=_label):
            order.add(target, model)  # the target after the rows that point at it
    return tuple(Owned(m, lookups[m], references[m]) for m in order.static_order())


def _label(model: type[models.Model]) -> str:
    return model._meta.label


def _delete(owned: Owned, workspace_id: str, batch: int | None) -> int:
    """Delete the workspace's rows of one model: all at once (batch None), or one batch per
    transaction until none is left."""
    manager = owned.model._base_manager
    deleted = 0
    for lookup in owned.lookups:
        rows = manager.filter(**{lookup: workspace_id})
        if batch is None:
            deleted += rows._raw_delete(manager.db)
            continue
        while True:
            with transaction.atomic():
                n = manager.filter(pk__in=rows.values("pk")[:batch])._raw_delete(manager.db)
            deleted += n
            if n < batch:
                break
    return deleted


def doors_delete(*, workspace_id: str, doors: tuple[type[models.Model], ...]) -> None:
    """Delete the workspace's rows of `doors` (its keys, its token issuers) and of the models
    pointing at them (a key's limits), at once: call inside the transaction that locks it."""
    for owned in owned_models():
        if owned.model in doors or owned.references & set(doors):
            _delete(owned, workspace_id, None)


def rows_delete(*, workspace_id: str, batch: int | None) -> int:
    """Delete every row the workspace owns (its own row stays), `batch` rows a transaction (None:
    all in the caller's); how many were deleted."""
    return sum(_delete(owned, workspace_id, batch) for owned in owned_models())


def log_entries_delete(*, workspace_id: str, only: tuple[type[models.Model], ...] = ()) -> int:
    """Delete the admin log entries (config.admin_log) of the workspace's rows (of `only`'s
    models and those pointing at them, or of every model it owns); how many. Before the rows:
    an entry is found through its row."""
    from config.admin_log import log_entries_delete as delete_entries

    deleted = 0
    for owned in owned_models():
        if only and not (owned.model in only or owned.references & set(only)):
            continue
        if owned.model._meta.auto_created:
            continue  # a link table: never edited in the admin
        for lookup in owned.lookups:
            rows = owned.model._base_manager.filter(**{lookup: workspace_id})
            deleted += delete_entries(model=owned.model, rows=rows)
    return deleted
